//! The crate's one error type for building and signing (CSR and profile
//! problems have their own: [`CsrError`](crate::CsrError),
//! [`ProfileError`](crate::ProfileError), and refusals are
//! [`Rejection`](crate::Rejection)s).

use time::OffsetDateTime;

use crate::CsrError;

/// Everything that can go wrong while building or signing a certificate,
/// CSR, CRL or CMS structure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The signer (for the service: the HSM) failed to produce a signature.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A signature returned by the signer is not of the form its algorithm needs.
    #[error("malformed signature from signer: {0}")]
    MalformedSignature(&'static str),
    /// A name, role, tenant, serial or other input does not meet the rules.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, e.g. `role`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The issuer certificate could not be parsed or lacks something required.
    #[error("issuer certificate: {0}")]
    Issuer(String),
    /// The issuer certificate is not a CA certificate (basicConstraints CA:TRUE).
    #[error("issuer certificate is not a CA certificate")]
    IssuerNotCa,
    /// The issuer certificate's keyUsage lacks a bit the operation needs.
    #[error("issuer certificate's keyUsage lacks {0}")]
    IssuerKeyUsage(&'static str),
    /// The issuer certificate is not valid now.
    #[error("issuer certificate is valid from {not_before} to {not_after}, not now")]
    IssuerNotValid {
        /// Its notBefore.
        not_before: OffsetDateTime,
        /// Its notAfter.
        not_after: OffsetDateTime,
    },
    /// The issuer certificate certifies a different key than the signer holds.
    #[error("issuer certificate does not certify the signer's public key")]
    IssuerKeyMismatch,
    /// The certificate would outlive its issuer.
    #[error("notAfter {not_after} is later than the issuer's notAfter {issuer_not_after}")]
    ValidityBeyondIssuer {
        /// The approved notAfter.
        not_after: OffsetDateTime,
        /// The issuer's notAfter.
        issuer_not_after: OffsetDateTime,
    },
    /// An approval was made under a different profile than the one given.
    #[error("approval is for profile {approval}, not {profile}")]
    ProfileMismatch {
        /// The approval's profile.
        approval: String,
        /// The profile passed in.
        profile: String,
    },
    /// A CSR given to the CA itself (e.g. an issuing CA's) was refused.
    #[error(transparent)]
    Csr(#[from] CsrError),
    /// A certificate the CA just built (or was given) could not be read back.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The system random number generator failed.
    #[error("random number generator: {0}")]
    Random(String),
    /// rcgen refused the certificate parameters.
    #[error("certificate encoding: {0}")]
    Encoding(#[from] rcgen::Error),
}
