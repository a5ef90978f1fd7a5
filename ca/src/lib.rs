//! Certificate-authority logic for the transit-card key service.
//!
//! This crate knows X.509 and CMS but not PKCS#11 or gRPC: it signs through
//! the [`Signer`] trait, which the service implements with a key held in
//! the HSM. The flow of an issuance:
//!
//! 1. [`CertProfiles::load_dir`] reads the certificate profiles
//!    (`policies/certificates/*.toml`): what each kind of certificate may
//!    contain.
//! 2. [`parse_csr`] parses a request and checks its proof of possession.
//! 3. [`approve`] (or [`approve_generated`] for a key pair the service
//!    generated) decides, against a profile and the request context (role,
//!    tenant, enrollment binding, validity), exactly what will be issued,
//!    or returns a [`Rejection`] with a stable reason code.
//! 4. [`issue_certificate`] signs it with the issuing CA ([`Issuer`]).
//!
//! Around that: the issuing CA's own CSR and certificate check
//! ([`issuer_csr`], [`check_issuer_certificate`]), CRLs ([`build_crl`]),
//! and CMS EnvelopedData for returning a generated private key to a reader
//! ([`enveloped_data`]). [`dev_root`], [`issue_server_tls`] and
//! [`issue_client_tls`] serve the service's development mode.

#![forbid(unsafe_code)]

mod approve;
mod cms;
mod crl;
mod csr;
mod der;
mod ecdsa;
mod error;
mod external;
mod issue;
mod keytype;
mod names;
mod profile;
mod signer;
mod tls;
mod usage;

pub use approve::{Approval, CLOCK_SKEW, IssueContext, RejectReason, Rejection, approve, approve_generated};
pub use cms::{AesWrap, ContentEncryption, KeyEncryption, RecipientId, ecc_cms_shared_info, enveloped_data};
pub use crl::{RevocationReason, RevokedEntry, UnknownRevocationReason, build_crl};
pub use csr::{Csr, CsrError, MAX_CSR_SIZE, NameEntry, PublicKey, RequestedExtension, RequestedValue, parse_csr};
pub use der::pem;
pub use ecdsa::ecdsa_raw_to_der;
pub use error::CaError;
pub use external::{ExternalIdentity, MAX_EXTERNAL_CHAIN, verify_external};
pub use issue::{
    IssuedCertificate, Issuer, IssuerInfo, SubordinateSpec, check_issuer_certificate, check_issuer_certificate_at,
    issue_certificate, issuer_csr, make_root, new_serial, sign_subordinate,
};
pub use keytype::{KeyType, UnknownKeyType};
pub use names::{DistinguishedNameSpec, DnAttribute, San, SanKind, is_printable_string};
pub use profile::{
    CertProfile, CertProfiles, Charset, IdentityRules, KeyGeneration, NameConstraintRules, ProfileError, ProfileKind,
    SanRules, SubjectRules, TenantRule,
};
pub use signer::{KeyAlgorithm, Signer};
pub use tls::{
    ClientIdentity, ROLE_URI_PREFIX, TENANT_URI_PREFIX, check_identifier, dev_root, issue_client_tls, issue_server_tls,
};
pub use usage::{ExtendedKeyUsage, KeyUsage};
