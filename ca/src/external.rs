//! Enrollment authorized by a certificate of a trusted external CA (the
//! dual-authority model: a reader already holds a certificate from the
//! ministry's CA and proves it by signing its CSR for the city's CA with
//! that certificate's key).
//!
//! What is checked: the chain (leaf first) is 1-4 certificates, each valid
//! at `now`, each signed by the next, the last signed by one of the
//! configured anchors; every certificate above the leaf is a CA; the leaf is
//! not; and the signature over the CSR's exact bytes verifies with the
//! leaf's key. Revocation of the external certificate is not checked here
//! (no CRL of the external CA is configured); the token path stays the
//! recommended one where that matters.

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::CaError;

/// Longest external chain accepted (leaf and intermediates).
pub const MAX_EXTERNAL_CHAIN: usize = 4;

/// Who an external certificate speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalIdentity {
    /// The reader serial: the leaf's subject serialNumber, else its CN.
    pub reader_serial: String,
    /// The leaf's subject (RFC 4514 as x509-parser prints it).
    pub subject: String,
    /// The leaf's serial number, upper-case hex.
    pub serial_hex: String,
}

fn bad(reason: impl Into<String>) -> CaError {
    CaError::InvalidField { field: "external", reason: reason.into() }
}

fn parse<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, CaError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(bad(format!("{what}: trailing bytes after the certificate"))),
        Err(e) => Err(bad(format!("{what}: not an X.509 certificate: {e}"))),
    }
}

fn check_time(cert: &X509Certificate<'_>, what: &str, now: OffsetDateTime) -> Result<(), CaError> {
    let v = cert.validity();
    if now < v.not_before.to_datetime() {
        return Err(bad(format!("{what} is not valid before {}", v.not_before)));
    }
    if now > v.not_after.to_datetime() {
        return Err(bad(format!("{what} expired at {}", v.not_after)));
    }
    Ok(())
}

fn is_ca(cert: &X509Certificate<'_>) -> bool {
    let ca = cert.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca);
    let signs = cert.key_usage().ok().flatten().is_none_or(|k| k.value.key_cert_sign());
    ca && signs
}

/// Checks an external credential; see the module documentation.
pub fn verify_external(
    anchors: &[Vec<u8>],
    chain: &[Vec<u8>],
    csr: &[u8],
    csr_signature: &[u8],
    now: OffsetDateTime,
) -> Result<ExternalIdentity, CaError> {
    if anchors.is_empty() {
        return Err(bad("no external trust anchors are configured (ca.external_trust_anchors)"));
    }
    if chain.is_empty() || chain.len() > MAX_EXTERNAL_CHAIN {
        return Err(bad(format!("give 1-{MAX_EXTERNAL_CHAIN} certificates, leaf first")));
    }
    let certs: Vec<X509Certificate<'_>> = chain
        .iter()
        .enumerate()
        .map(|(i, der)| parse(der, &format!("certificate {}", i + 1)))
        .collect::<Result<_, _>>()?;
    for (i, cert) in certs.iter().enumerate() {
        check_time(cert, &format!("certificate {}", i + 1), now)?;
        if i > 0 && !is_ca(cert) {
            return Err(bad(format!("certificate {} is not a CA", i + 1)));
        }
    }
    for pair in certs.windows(2) {
        pair[0]
            .verify_signature(Some(pair[1].public_key()))
            .map_err(|_| bad(format!("{} is not signed by {}", pair[0].subject(), pair[1].subject())))?;
    }
    let top = certs.last().ok_or_else(|| bad("empty chain"))?;
    let mut anchored = false;
    for der in anchors {
        let anchor = parse(der, "trust anchor")?;
        if anchor.subject().as_raw() == top.issuer().as_raw()
            && top.verify_signature(Some(anchor.public_key())).is_ok()
            && check_time(&anchor, "trust anchor", now).is_ok()
        {
            anchored = true;
            break;
        }
    }
    if !anchored {
        return Err(bad(format!("{} does not chain to a trusted external CA", top.issuer())));
    }
    let leaf = &certs[0];
    if leaf.basic_constraints().ok().flatten().is_some_and(|b| b.value.ca) {
        return Err(bad("the external certificate is a CA certificate, not a reader's"));
    }
    verify_detached(leaf, csr, csr_signature)?;
    let serial_number = leaf.subject().iter_by_oid(&x509_parser::oid_registry::OID_X509_SERIALNUMBER).next();
    let cn = leaf.subject().iter_common_name().next();
    let reader_serial = serial_number
        .or(cn)
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| bad("the external certificate names no serialNumber or CN"))?;
    Ok(ExternalIdentity {
        reader_serial,
        subject: leaf.subject().to_string(),
        serial_hex: leaf.raw_serial().iter().map(|b| format!("{b:02X}")).collect(),
    })
}

fn verify_detached(leaf: &X509Certificate<'_>, message: &[u8], signature: &[u8]) -> Result<(), CaError> {
    use ring::signature::{self, UnparsedPublicKey};
    let spki = leaf.public_key();
    let key = spki.subject_public_key.data.as_ref();
    let algorithm = spki.algorithm.algorithm.to_id_string();
    let params = spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o| o.to_id_string());
    let alg: &dyn signature::VerificationAlgorithm = match (algorithm.as_str(), params.as_deref()) {
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => &signature::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.113549.1.1.1", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        _ => return Err(bad(format!("unsupported external key algorithm {algorithm}"))),
    };
    UnparsedPublicKey::new(alg, key)
        .verify(message, signature)
        .map_err(|_| bad("the signature over the CSR does not verify with the external certificate's key"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

    struct Pki {
        anchor: Vec<u8>,
        leaf: Vec<u8>,
        leaf_key: KeyPair,
        expired: Vec<u8>,
    }

    fn pki() -> Pki {
        let root_key = KeyPair::generate().unwrap();
        let mut root = CertificateParams::new(Vec::<String>::new()).unwrap();
        root.distinguished_name.push(DnType::CommonName, "Ministry Reader CA");
        root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let anchor = root.self_signed(&root_key).unwrap().der().to_vec();
        let issuer = Issuer::new(root, root_key);
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.distinguished_name.push(DnType::CommonName, "R3301000777");
        let mut expired = leaf.clone();
        let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
        expired.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(30);
        expired.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let expired = expired.signed_by(&leaf_key, &issuer).unwrap().der().to_vec();
        Pki { anchor, leaf, leaf_key, expired }
    }

    fn sign(key: &KeyPair, msg: &[u8]) -> Vec<u8> {
        let pkcs8 = key.serialize_der();
        let rng = ring::rand::SystemRandom::new();
        let k =
            ring::signature::EcdsaKeyPair::from_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &pkcs8, &rng)
                .unwrap();
        k.sign(&rng, msg).unwrap().as_ref().to_vec()
    }

    #[test]
    fn a_signed_csr_with_a_trusted_certificate_is_accepted() {
        let p = pki();
        let csr = b"the CSR bytes";
        let sig = sign(&p.leaf_key, csr);
        let id = verify_external(
            std::slice::from_ref(&p.anchor),
            std::slice::from_ref(&p.leaf),
            csr,
            &sig,
            OffsetDateTime::now_utc(),
        )
        .unwrap();
        assert_eq!(id.reader_serial, "R3301000777");
    }

    #[test]
    fn forged_foreign_and_expired_credentials_are_refused() {
        let p = pki();
        let other = pki();
        let csr = b"the CSR bytes";
        let sig = sign(&p.leaf_key, csr);
        let now = OffsetDateTime::now_utc();
        let err = |r: Result<ExternalIdentity, CaError>| r.unwrap_err().to_string();
        assert!(
            err(verify_external(
                std::slice::from_ref(&p.anchor),
                std::slice::from_ref(&p.leaf),
                b"other bytes",
                &sig,
                now
            ))
            .contains("does not verify")
        );
        assert!(
            err(verify_external(std::slice::from_ref(&other.anchor), std::slice::from_ref(&p.leaf), csr, &sig, now))
                .contains("trusted")
        );
        assert!(
            err(verify_external(std::slice::from_ref(&p.anchor), std::slice::from_ref(&p.expired), csr, &sig, now))
                .contains("expired")
        );
        assert!(err(verify_external(&[], std::slice::from_ref(&p.leaf), csr, &sig, now)).contains("anchors"));
        assert!(err(verify_external(std::slice::from_ref(&p.anchor), &[], csr, &sig, now)).contains("leaf first"));
        assert!(
            err(verify_external(std::slice::from_ref(&p.anchor), &[b"junk".to_vec()], csr, &sig, now))
                .contains("X.509")
        );
    }
}
