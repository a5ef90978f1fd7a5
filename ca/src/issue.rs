//! Issuance: turning an [`Approval`] into a signed certificate, and the
//! life of the issuing CA itself (its CSR to the offline root, and the
//! check of the certificate the root returns).
//!
//! Every issued certificate carries: the profile's keyUsage (critical),
//! extendedKeyUsage, basicConstraints (critical; CA:FALSE for end
//! entities, CA:TRUE with the profile's path length for sub-CAs),
//! subjectKeyIdentifier (SHA-256 of the SubjectPublicKeyInfo, truncated to
//! 160 bits), authorityKeyIdentifier (the issuer's own subjectKeyIdentifier),
//! the approved SANs, a CRL distribution point when a URL is given, and
//! name constraints for sub-CAs. Signing goes through [`Signer`], so the
//! issuing key stays in the HSM.

use rcgen::{
    BasicConstraints, CertificateParams, CrlDistributionPoint, GeneralSubtree, IsCa, KeyUsagePurpose, NameConstraints,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use crate::approve::{Approval, CLOCK_SKEW};
use crate::csr::parse_csr;
use crate::der::{hex, pem, sha256};
use crate::names::{DistinguishedNameSpec, rfc4514_string};
use crate::profile::{CertProfile, NameConstraintRules, ProfileKind};
use crate::signer::RcgenSigner;
use crate::{CaError, Signer};

/// The CA that signs: its key (through a [`Signer`]) and its certificate.
#[derive(Clone, Copy)]
pub struct Issuer<'a> {
    /// Signs with the issuing CA's private key.
    pub signer: &'a dyn Signer,
    /// The issuing CA's certificate, DER.
    pub certificate_der: &'a [u8],
}

/// A certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    /// DER encoding.
    pub der: Vec<u8>,
    /// PEM encoding.
    pub pem: String,
    /// The serial number's magnitude, big-endian.
    pub serial: Vec<u8>,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// The subject as an RFC 4514 string.
    pub subject: String,
    /// SHA-256 of the DER encoding.
    pub sha256_fingerprint: [u8; 32],
}

impl IssuedCertificate {
    /// Describes a certificate from its DER encoding.
    pub fn from_der(der: Vec<u8>) -> Result<IssuedCertificate, CaError> {
        let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| CaError::Certificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::Certificate("trailing bytes after the certificate".into()));
        }
        let serial = strip_sign_byte(cert.raw_serial()).to_vec();
        let not_before = cert.validity().not_before.to_datetime();
        let not_after = cert.validity().not_after.to_datetime();
        let subject = rfc4514_string(cert.subject());
        let pem = pem("CERTIFICATE", &der);
        let sha256_fingerprint = sha256(&der);
        Ok(IssuedCertificate { der, pem, serial, not_before, not_after, subject, sha256_fingerprint })
    }

    /// The serial number as lower-case hex.
    pub fn serial_hex(&self) -> String {
        hex(&self.serial)
    }
}

fn strip_sign_byte(bytes: &[u8]) -> &[u8] {
    match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    }
}

/// A fresh serial number: 16 random bytes, positive, with a non-zero first
/// byte so its DER encoding is always 16 bytes long (RFC 5280 §4.1.2.2
/// allows up to 20; CA/B BR §7.1 asks for at least 64 random bits).
pub fn new_serial() -> Result<Vec<u8>, CaError> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).map_err(|e| CaError::Random(e.to_string()))?;
    // why: clear the sign bit (serials are positive) and keep the top byte
    // non-zero (a leading zero byte would be dropped by DER).
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(bytes.to_vec())
}

fn check_serial(serial: &[u8]) -> Result<(), CaError> {
    let reason = match serial {
        [] => "must not be empty",
        s if s.len() > 20 => "at most 20 bytes (RFC 5280 §4.1.2.2)",
        [first, ..] if first & 0x80 != 0 => "must be positive (top bit clear)",
        [0, ..] => "must not start with a zero byte",
        _ => return Ok(()),
    };
    Err(CaError::InvalidField { field: "serial", reason: reason.into() })
}

/// What the CA reads from an issuer certificate.
pub(crate) struct IssuerCert {
    pub(crate) subject_raw: Vec<u8>,
    pub(crate) subject: String,
    pub(crate) subject_key_id: Option<Vec<u8>>,
    pub(crate) public_key: Vec<u8>,
    pub(crate) not_before: OffsetDateTime,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) ca: Option<Option<u32>>,
    pub(crate) key_usage: Option<u16>,
    pub(crate) serial: Vec<u8>,
}

impl IssuerCert {
    pub(crate) fn parse(der: &[u8]) -> Result<IssuerCert, CaError> {
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| CaError::Issuer(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CaError::Issuer("trailing bytes after the certificate".into()));
        }
        // why: rcgen re-encodes the issuer's name for every certificate, and
        // its writer panics on `?` in a PrintableString (see
        // `names::is_encodable_printable`): refuse such an issuer up front.
        let unencodable = cert.subject().iter_attributes().any(|a| {
            a.attr_value().tag().0 == 19 && std::str::from_utf8(a.attr_value().data).is_ok_and(|s| s.contains('?'))
        });
        if unencodable {
            return Err(CaError::Issuer(
                "its subject has '?' in a PrintableString, which the CA cannot re-encode".into(),
            ));
        }
        let mut subject_key_id = None;
        let mut ca = None;
        let mut key_usage = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => subject_key_id = Some(id.0.to_vec()),
                ParsedExtension::BasicConstraints(bc) if bc.ca => ca = Some(bc.path_len_constraint),
                ParsedExtension::KeyUsage(ku) => key_usage = Some(ku.flags),
                _ => {}
            }
        }
        Ok(IssuerCert {
            subject_raw: cert.subject().as_raw().to_vec(),
            subject: rfc4514_string(cert.subject()),
            subject_key_id,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            ca,
            key_usage,
            serial: strip_sign_byte(cert.raw_serial()).to_vec(),
        })
    }

    /// Checks that `signer` holds this certificate's key and that the
    /// certificate may sign certificates (or CRLs, with `crl`).
    pub(crate) fn check_signer(&self, signer: &dyn Signer, crl: bool) -> Result<(), CaError> {
        if self.public_key != signer.public_key() {
            return Err(CaError::IssuerKeyMismatch);
        }
        if self.ca.is_none() {
            return Err(CaError::IssuerNotCa);
        }
        let (bit, name) = if crl { (6, "cRLSign") } else { (5, "keyCertSign") };
        if self.key_usage.is_some_and(|flags| flags & (1 << bit) == 0) {
            return Err(CaError::IssuerKeyUsage(name));
        }
        Ok(())
    }

    /// The key identifier for authorityKeyIdentifier: the issuer's
    /// subjectKeyIdentifier, or (if it has none) one computed the way this
    /// CA computes them.
    pub(crate) fn authority_key_id(&self, signer: &dyn Signer) -> Vec<u8> {
        self.subject_key_id.clone().unwrap_or_else(|| {
            let spki = rcgen::PublicKeyData::subject_public_key_info(&RcgenSigner(signer));
            sha256(&spki)[..20].to_vec()
        })
    }
}

/// Issues the certificate `approval` describes, signed by `issuer`.
///
/// `serial` must be 1 to 20 bytes, positive, without a leading zero byte
/// (see [`new_serial`]); `crl_url` becomes a CRL distribution point.
pub fn issue_certificate(
    issuer: &Issuer<'_>,
    profile: &CertProfile,
    approval: &Approval,
    serial: &[u8],
    crl_url: Option<&str>,
) -> Result<IssuedCertificate, CaError> {
    if approval.profile() != profile.name {
        return Err(CaError::ProfileMismatch {
            approval: approval.profile().to_owned(),
            profile: profile.name.clone(),
        });
    }
    check_serial(serial)?;
    let issuer_cert = IssuerCert::parse(issuer.certificate_der)?;
    issuer_cert.check_signer(issuer.signer, false)?;
    if approval.not_after() > issuer_cert.not_after {
        return Err(CaError::ValidityBeyondIssuer {
            not_after: approval.not_after(),
            issuer_not_after: issuer_cert.not_after,
        });
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = approval.subject().to_rcgen()?;
    params.not_before = approval.not_before();
    params.not_after = approval.not_after();
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.subject_alt_names = approval.sans().iter().map(|s| s.to_rcgen()).collect::<Result<_, _>>()?;
    params.key_usages = approval.key_usage().iter().map(|u| u.to_rcgen()).collect();
    params.extended_key_usages = approval.extended_key_usage().iter().map(|e| e.to_rcgen()).collect();
    params.use_authority_key_identifier_extension = true;
    params.is_ca = match profile.kind {
        ProfileKind::EndEntity => IsCa::ExplicitNoCa,
        ProfileKind::SubCa { path_len } => IsCa::Ca(BasicConstraints::Constrained(path_len)),
    };
    set_crl_url(&mut params, crl_url)?;
    if profile.kind.is_ca() {
        set_name_constraints(&mut params, &profile.name_constraints);
    }
    sign(params, approval.public_key(), issuer)
}

fn sign(
    params: CertificateParams,
    subject_key: &impl rcgen::PublicKeyData,
    issuer: &Issuer<'_>,
) -> Result<IssuedCertificate, CaError> {
    let rcgen_issuer =
        rcgen::Issuer::from_ca_cert_der(&CertificateDer::from(issuer.certificate_der), RcgenSigner(issuer.signer))
            .map_err(|e| CaError::Issuer(e.to_string()))?;
    let cert = params.signed_by(subject_key, &rcgen_issuer)?;
    IssuedCertificate::from_der(cert.der().to_vec())
}

/// What the CA knows about its own (issuing) certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerInfo {
    /// Subject, RFC 4514.
    pub subject: String,
    /// notBefore.
    pub not_before: OffsetDateTime,
    /// notAfter.
    pub not_after: OffsetDateTime,
    /// subjectKeyIdentifier (what issued certificates' AKI will carry).
    pub subject_key_id: Vec<u8>,
    /// Serial number magnitude, big-endian.
    pub serial: Vec<u8>,
    /// pathLenConstraint, if any.
    pub path_len: Option<u32>,
    /// SHA-256 of the certificate's DER.
    pub sha256_fingerprint: [u8; 32],
}

/// A PKCS#10 request (DER) for an issuing CA whose key is in the HSM,
/// signed by that key, for the offline root to sign. It asks for
/// basicConstraints CA:TRUE and keyCertSign, cRLSign, digitalSignature; the
/// root decides what it grants.
pub fn issuer_csr(signer: &dyn Signer, subject: &DistinguishedNameSpec) -> Result<Vec<u8>, CaError> {
    if subject.is_empty() {
        return Err(CaError::InvalidField { field: "subject", reason: "an issuing CA needs a subject".into() });
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_rcgen()?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let der = params.serialize_request(&RcgenSigner(signer))?.der().to_vec();
    // why: a signer that returns a wrong signature (wrong key, wrong
    // mechanism) is found here rather than by the root's operator.
    parse_csr(&der).map_err(|e| CaError::Signing(format!("the issuing CA's own CSR does not verify: {e}")))?;
    Ok(der)
}

/// Accepts the issuing CA's certificate (signed by the offline root) only
/// if it is CA:TRUE with keyCertSign and cRLSign, valid now, has a
/// subjectKeyIdentifier, and certifies exactly `signer_public_key` (the
/// BIT STRING content, as [`Signer::public_key`] returns it).
pub fn check_issuer_certificate(cert_der: &[u8], signer_public_key: &[u8]) -> Result<IssuerInfo, CaError> {
    check_issuer_certificate_at(cert_der, signer_public_key, OffsetDateTime::now_utc())
}

/// [`check_issuer_certificate`] at a given time.
pub fn check_issuer_certificate_at(
    cert_der: &[u8],
    signer_public_key: &[u8],
    now: OffsetDateTime,
) -> Result<IssuerInfo, CaError> {
    let cert = IssuerCert::parse(cert_der)?;
    let Some(path_len) = cert.ca else { return Err(CaError::IssuerNotCa) };
    match cert.key_usage {
        None => return Err(CaError::IssuerKeyUsage("keyCertSign")),
        Some(flags) if flags & (1 << 5) == 0 => return Err(CaError::IssuerKeyUsage("keyCertSign")),
        Some(flags) if flags & (1 << 6) == 0 => return Err(CaError::IssuerKeyUsage("cRLSign")),
        Some(_) => {}
    }
    if now < cert.not_before || now > cert.not_after {
        return Err(CaError::IssuerNotValid { not_before: cert.not_before, not_after: cert.not_after });
    }
    if cert.public_key != signer_public_key {
        return Err(CaError::IssuerKeyMismatch);
    }
    let subject_key_id = cert.subject_key_id.clone().ok_or_else(|| {
        CaError::Issuer("no subjectKeyIdentifier (RFC 5280 §4.2.1.2 requires one in CA certificates)".into())
    })?;
    Ok(IssuerInfo {
        subject: cert.subject,
        not_before: cert.not_before,
        not_after: cert.not_after,
        subject_key_id,
        serial: cert.serial,
        path_len,
        sha256_fingerprint: sha256(cert_der),
    })
}

/// Makes a self-signed root CA certificate (for development instances and
/// tests; production roots are made offline, e.g. by the ceremony tool).
pub fn make_root(
    signer: &dyn Signer,
    subject: &DistinguishedNameSpec,
    validity: Duration,
) -> Result<IssuedCertificate, CaError> {
    let mut params = ca_params(subject, validity, None)?;
    params.use_authority_key_identifier_extension = false;
    let cert = params.self_signed(&RcgenSigner(signer))?;
    IssuedCertificate::from_der(cert.der().to_vec())
}

/// How a subordinate CA certificate is limited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubordinateSpec {
    /// Validity from now (cut to the issuer's notAfter).
    pub validity: Duration,
    /// pathLenConstraint: how many CAs may follow it (`None`: no limit).
    pub path_len: Option<u8>,
    /// dNSName subtrees permitted and excluded below it (none: no extension).
    pub name_constraints: NameConstraintRules,
    /// CRL distribution point of the issuer's CRL.
    pub crl_url: Option<String>,
}

/// Signs an issuing CA's CSR (e.g. from [`issuer_csr`]) with `root`: the
/// offline root's act in a key ceremony (and the test stand-in for it).
/// The subject is the CSR's; the rest comes from `spec`.
pub fn sign_subordinate(root: &Issuer<'_>, csr: &[u8], spec: &SubordinateSpec) -> Result<IssuedCertificate, CaError> {
    let csr = parse_csr(csr)?;
    let mut subject = DistinguishedNameSpec::new();
    for entry in csr.subject() {
        let attribute = entry.attribute.ok_or_else(|| CaError::InvalidField {
            field: "subject",
            reason: format!("attribute {} is not one the CA writes", entry.oid),
        })?;
        subject.set(attribute, entry.value.clone());
    }
    let root_cert = IssuerCert::parse(root.certificate_der)?;
    root_cert.check_signer(root.signer, false)?;
    let mut params = ca_params(&subject, spec.validity, spec.path_len)?;
    params.not_after = params.not_after.min(root_cert.not_after);
    params.use_authority_key_identifier_extension = true;
    set_name_constraints(&mut params, &spec.name_constraints);
    set_crl_url(&mut params, spec.crl_url.as_deref())?;
    sign(params, csr.public_key(), root)
}

fn set_name_constraints(params: &mut CertificateParams, nc: &NameConstraintRules) {
    if !nc.permitted_dns.is_empty() || !nc.excluded_dns.is_empty() {
        params.name_constraints = Some(NameConstraints {
            permitted_subtrees: nc.permitted_dns.iter().map(|d| GeneralSubtree::DnsName(d.clone())).collect(),
            excluded_subtrees: nc.excluded_dns.iter().map(|d| GeneralSubtree::DnsName(d.clone())).collect(),
        });
    }
}

fn set_crl_url(params: &mut CertificateParams, crl_url: Option<&str>) -> Result<(), CaError> {
    if let Some(url) = crl_url {
        if url.is_empty() || !url.bytes().all(|b| b.is_ascii_graphic()) || !url.contains("://") {
            return Err(CaError::InvalidField { field: "crl_url", reason: format!("{url:?} is not an absolute URL") });
        }
        params.crl_distribution_points = vec![CrlDistributionPoint { uris: vec![url.to_owned()] }];
    }
    Ok(())
}

fn ca_params(
    subject: &DistinguishedNameSpec,
    validity: Duration,
    path_len: Option<u8>,
) -> Result<CertificateParams, CaError> {
    if validity <= Duration::ZERO {
        return Err(CaError::InvalidField { field: "validity", reason: "must be positive".into() });
    }
    let now = OffsetDateTime::now_utc();
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut params = CertificateParams::default();
    params.distinguished_name = subject.to_rcgen()?;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + validity;
    params.serial_number = Some(SerialNumber::from_slice(&new_serial()?));
    params.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_are_positive_and_sixteen_bytes() -> Result<(), CaError> {
        for _ in 0..64 {
            let s = new_serial()?;
            assert_eq!(s.len(), 16);
            assert!(s[0] != 0 && s[0] & 0x80 == 0);
            check_serial(&s)?;
        }
        assert!(check_serial(&[]).is_err());
        assert!(check_serial(&[0x80]).is_err());
        assert!(check_serial(&[0, 1]).is_err());
        assert!(check_serial(&[1; 21]).is_err());
        Ok(())
    }
}
