//! Certificate-authority logic for the transit-card key service.
//!
//! This crate knows X.509 but not PKCS#11 or gRPC: it signs through the
//! [`Signer`] trait, which the service implements with a key held in the HSM.
//! Profiles, CSR checks, revocation and CRLs grow here; for now it holds what
//! the service needs to stand up its own TLS: a root for development, and
//! server and client certificates whose role and tenant the CA sets.

#![forbid(unsafe_code)]

mod ecdsa;
mod error;
mod keytype;
mod signer;
mod tls;

pub use ecdsa::ecdsa_raw_to_der;
pub use error::CaError;
pub use keytype::{KeyType, UnknownKeyType};
pub use signer::{KeyAlgorithm, Signer};
pub use tls::{
    ClientIdentity, IssuedCertificate, ROLE_URI_PREFIX, TENANT_URI_PREFIX, check_identifier, dev_root,
    issue_client_tls, issue_server_tls,
};
