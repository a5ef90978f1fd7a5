//! Who is calling: the principal resolved from the client certificate.
//!
//! The TLS handshake already proved the certificate chains to the client CA
//! and that the peer holds its key. Here its fields become a [`Principal`]:
//! the subject common name is the name, and the role and tenant come from
//! the `urn:kms:role:` and `urn:kms:tenant:` URI SANs that the CA's profile
//! sets (never the CSR). A certificate without both is refused.

use kms_ca::{ROLE_URI_PREFIX, TENANT_URI_PREFIX, check_identifier};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Subject common name.
    pub name: String,
    /// Role (from the certificate).
    pub role: String,
    /// Tenant (from the certificate).
    pub tenant: String,
    /// Certificate serial number, upper-case hex.
    pub certificate_serial: String,
}

/// Why a client certificate does not identify a principal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No client certificate on the connection.
    #[error("no client certificate")]
    NoCertificate,
    /// The certificate could not be parsed.
    #[error("client certificate is not valid X.509: {0}")]
    Malformed(String),
    /// A required field is missing.
    #[error("client certificate has no {0}")]
    Missing(&'static str),
    /// A field appears more than once or has a bad value.
    #[error("client certificate {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The certificate was issued by this service and has been revoked.
    #[error("client certificate {0} is revoked")]
    Revoked(String),
    /// An enrollment token or external credential was not accepted.
    #[error("{0}")]
    Token(String),
}

impl Principal {
    /// Resolves a principal from a DER certificate.
    pub fn from_certificate(der: &[u8]) -> Result<Principal, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| IdentityError::Malformed(e.to_string()))?;
        let name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .ok_or(IdentityError::Missing("subject common name"))?;
        let mut role = None;
        let mut tenant = None;
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for general_name in &san.value.general_names {
                if let GeneralName::URI(uri) = general_name {
                    if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                        set_once(&mut role, "role URI", r)?;
                    } else if let Some(t) = uri.strip_prefix(TENANT_URI_PREFIX) {
                        set_once(&mut tenant, "tenant URI", t)?;
                    }
                }
            }
        }
        let role = role.ok_or(IdentityError::Missing("role (urn:kms:role: URI SAN)"))?;
        let tenant = tenant.ok_or(IdentityError::Missing("tenant (urn:kms:tenant: URI SAN)"))?;
        check_identifier("role", &role).map_err(|e| IdentityError::Invalid { field: "role", reason: e.to_string() })?;
        check_identifier("tenant", &tenant)
            .map_err(|e| IdentityError::Invalid { field: "tenant", reason: e.to_string() })?;
        Ok(Principal { name, role, tenant, certificate_serial: hex::encode_upper(cert.raw_serial()) })
    }
}

fn set_once(slot: &mut Option<String>, field: &'static str, value: &str) -> Result<(), IdentityError> {
    if slot.is_some() {
        return Err(IdentityError::Invalid { field, reason: "appears more than once".into() });
    }
    *slot = Some(value.to_owned());
    Ok(())
}
