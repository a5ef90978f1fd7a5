//! Certificates for the service's own TLS in development mode: a
//! development root, server certificates, and client certificates that
//! carry the caller's role and tenant. (Production issuance goes through
//! profiles: [`approve`](crate::approve) and
//! [`issue_certificate`](crate::issue_certificate) with the `server-tls`
//! and `client-tls` profiles.)
//!
//! The role and tenant are URI subject alternative names
//! (`urn:kms:role:<role>`, `urn:kms:tenant:<tenant>`). They are always set
//! here, by the CA, from the profile's input: never copied from a CSR.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::issue::{IssuedCertificate, new_serial};
use crate::signer::RcgenSigner;
use crate::{CaError, Signer};

/// Prefix of the URI SAN that carries a principal's role.
pub const ROLE_URI_PREFIX: &str = "urn:kms:role:";
/// Prefix of the URI SAN that carries a principal's tenant.
pub const TENANT_URI_PREFIX: &str = "urn:kms:tenant:";

/// Who a client certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject common name: the principal's name.
    pub name: String,
    /// Role read by the service's authorization (e.g. `operator`).
    pub role: String,
    /// Tenant read by the service's authorization (e.g. a city or partner id).
    pub tenant: String,
}

/// Checks a role or tenant identifier: 1 to 64 characters of lower-case
/// ASCII letters, digits, `_`, `-` or `.`, starting with a letter or digit.
pub fn check_identifier(field: &'static str, value: &str) -> Result<(), CaError> {
    let ok_len = (1..=64).contains(&value.len());
    let ok_first = value.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_chars = value.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'));
    if ok_len && ok_first && ok_chars {
        Ok(())
    } else {
        Err(CaError::InvalidField {
            field,
            reason: format!("{value:?} must be 1-64 of [a-z0-9_.-], starting with a letter or digit"),
        })
    }
}

fn base_params(common_name: &str, validity: Duration) -> Result<CertificateParams, CaError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // why: tolerate modest clock skew between the CA and relying parties.
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + validity;
    params.serial_number = Some(SerialNumber::from_slice(&new_serial()?));
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

fn finish(cert: rcgen::Certificate) -> Result<IssuedCertificate, CaError> {
    IssuedCertificate::from_der(cert.der().to_vec())
}

/// Makes a self-signed root for a development instance, signed by `signer`.
pub fn dev_root(signer: &dyn Signer, common_name: &str, validity: Duration) -> Result<IssuedCertificate, CaError> {
    let mut params = base_params(common_name, validity)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = false;
    finish(params.self_signed(&RcgenSigner(signer))?)
}

fn issue(
    mut params: CertificateParams,
    subject_key: &impl PublicKeyData,
    issuer_der: &[u8],
    signer: &dyn Signer,
) -> Result<IssuedCertificate, CaError> {
    params.is_ca = IsCa::ExplicitNoCa;
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(issuer_der), RcgenSigner(signer))
        .map_err(|e| CaError::Issuer(e.to_string()))?;
    finish(params.signed_by(subject_key, &issuer)?)
}

/// Issues a TLS server certificate for `names` (DNS names or IP addresses).
pub fn issue_server_tls(
    names: &[String],
    subject_key: &impl PublicKeyData,
    issuer_der: &[u8],
    signer: &dyn Signer,
    validity: Duration,
) -> Result<IssuedCertificate, CaError> {
    let first = names
        .first()
        .ok_or(CaError::InvalidField { field: "names", reason: "at least one name is required".into() })?;
    let mut params = base_params(first, validity)?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(params, subject_key, issuer_der, signer)
}

/// Issues a TLS client certificate carrying `identity`'s role and tenant.
pub fn issue_client_tls(
    identity: &ClientIdentity,
    subject_key: &impl PublicKeyData,
    issuer_der: &[u8],
    signer: &dyn Signer,
    validity: Duration,
) -> Result<IssuedCertificate, CaError> {
    check_identifier("role", &identity.role)?;
    check_identifier("tenant", &identity.tenant)?;
    if identity.name.is_empty() || identity.name.len() > 64 {
        return Err(CaError::InvalidField { field: "name", reason: "must be 1-64 characters".into() });
    }
    let mut params = base_params(&identity.name, validity)?;
    params.subject_alt_names = vec![
        SanType::URI(format!("{ROLE_URI_PREFIX}{}", identity.role).try_into()?),
        SanType::URI(format!("{TENANT_URI_PREFIX}{}", identity.tenant).try_into()?),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    issue(params, subject_key, issuer_der, signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_checked() {
        assert!(check_identifier("role", "security_officer").is_ok());
        assert!(check_identifier("role", "city-3301").is_ok());
        assert!(check_identifier("role", "").is_err());
        assert!(check_identifier("role", "Admin").is_err());
        assert!(check_identifier("role", "a:b").is_err());
        assert!(check_identifier("role", "_x").is_err());
        assert!(check_identifier("role", &"a".repeat(65)).is_err());
    }
}
