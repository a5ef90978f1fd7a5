//! Key ceremonies for security officers: a plan file run step by step
//! against a PKCS#11 module, under dual control, with key components,
//! M-of-N backups, the offline root CA, and a signed, hash-chained
//! transcript. See `docs/ceremony.md` for the runbook.
#![forbid(unsafe_code)]

pub mod backup;
pub mod credential;
pub mod error;
pub mod handover;
pub mod interrupt;
pub mod io;
pub mod pdf;
pub mod plan;
pub mod shamir;
pub mod steps;
pub mod token;
pub mod transcript;

pub use error::CeremonyError;
