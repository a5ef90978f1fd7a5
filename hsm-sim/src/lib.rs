//! `hsm-sim`: a PKCS#11 v2.40 module in Rust, with SM2/SM3/SM4,
//! payment-HSM derivations and fault injection.
//!
//! The C ABI lives in [`ffi`], the only module allowed `unsafe`: it turns raw
//! pointers into owned Rust values and calls the safe core (`module`), whose
//! functions return `Result<_, CK_RV>`. See README.md for configuration,
//! vendor numbers, persistence and fault injection.

#[forbid(unsafe_code)]
mod asym;
#[forbid(unsafe_code)]
mod attrs;
#[forbid(unsafe_code)]
pub mod config;
#[forbid(unsafe_code)]
mod error;
#[forbid(unsafe_code)]
mod faults;
pub mod ffi;
#[forbid(unsafe_code)]
mod mech;
#[forbid(unsafe_code)]
mod module;
#[forbid(unsafe_code)]
mod object;
#[forbid(unsafe_code)]
mod ops;
#[forbid(unsafe_code)]
mod store;
#[forbid(unsafe_code)]
mod stream;
#[forbid(unsafe_code)]
mod sym;
#[forbid(unsafe_code)]
pub mod vendor;
