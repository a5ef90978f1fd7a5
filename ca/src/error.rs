//! The crate's one error type.

/// Everything that can go wrong while building or signing a certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The signer (for the service: the HSM) failed to produce a signature.
    #[error("signing failed: {0}")]
    Signing(String),
    /// A signature returned by the signer is not of the form its algorithm needs.
    #[error("malformed signature from signer: {0}")]
    MalformedSignature(&'static str),
    /// A name, role or tenant does not meet the profile's rules.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field, e.g. `role`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The issuer certificate could not be parsed.
    #[error("issuer certificate: {0}")]
    Issuer(String),
    /// rcgen refused the certificate parameters.
    #[error("certificate encoding: {0}")]
    Encoding(#[from] rcgen::Error),
}
