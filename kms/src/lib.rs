//! The transit-card key service: configuration, the HSM layer, storage,
//! authorization, audit, the gRPC server and the operator CLI.
//!
//! Data flows one way: a gRPC handler resolves the caller's [`identity`],
//! turns the message into a typed command, asks [`authz`] (which returns a
//! proof the core requires), calls the core, which uses [`hsm`] and
//! [`store`], and writes an [`audit`] record.

#![deny(unsafe_code)]

pub mod audit;
pub mod authz;
pub mod card;
pub mod certs;
pub mod cli;
pub mod config;
pub mod core;
pub mod dev;
pub mod error;
pub mod grpc;
pub mod hsm;
pub mod identity;
pub mod keys;
pub mod metrics;
pub mod plans;
pub mod profiles;
pub mod server;
pub mod store;
