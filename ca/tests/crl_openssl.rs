//! CRLs checked by OpenSSL: signature (`openssl crl -verify`), contents
//! (`openssl crl -text`), and revocation as a relying party sees it
//! (`openssl verify -crl_check`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kms_ca::{
    CaError, IssuedCertificate, Issuer, RevocationReason, RevokedEntry, approve, build_crl, issue_certificate,
    new_serial, parse_csr,
};
use rcgen::DnType;
use time::{Duration, OffsetDateTime};

fn reader_cert(pki: &Pki, serial: &str) -> IssuedCertificate {
    let profile = profile("reader-sign");
    let csr = parse_csr(&ec_csr(&p256_key(), &[(DnType::CommonName, serial)], |_| {})).unwrap();
    let mut ctx = pki.ctx();
    ctx.tenant = Some("city-3301".into());
    let approval = approve(&profile, &csr, &ctx).unwrap();
    issue_certificate(&pki.issuer(), &profile, &approval, &new_serial().unwrap(), None).unwrap()
}

fn write_crl(pki: &Pki, der: &[u8]) -> (std::path::PathBuf, std::path::PathBuf) {
    let der_path = pki.path(&format!("crl-{}.der", rand_u32()));
    std::fs::write(&der_path, der).unwrap();
    let pem_path = der_path.with_extension("pem");
    openssl(&["crl", "-inform", "DER", "-in", s(&der_path), "-out", s(&pem_path)]);
    (der_path, pem_path)
}

#[test]
fn crl_verifies_and_revokes() {
    let pki = Pki::new();
    let good = reader_cert(&pki, "RDR-GOOD");
    let revoked = reader_cert(&pki, "RDR-BAD");
    let now = OffsetDateTime::now_utc();
    let mut entries = vec![RevokedEntry {
        serial: revoked.serial.clone(),
        revoked_at: now - Duration::hours(1),
        reason: RevocationReason::KeyCompromise,
    }];
    // One entry of every other reason but removeFromCRL, and some unspecified.
    for (i, reason) in RevocationReason::ALL.into_iter().enumerate() {
        if reason != RevocationReason::RemoveFromCrl {
            entries.push(RevokedEntry { serial: vec![0x42, i as u8], revoked_at: now - Duration::days(1), reason });
        }
    }
    entries.push(RevokedEntry {
        serial: vec![0xff; 20],
        revoked_at: now - Duration::days(2),
        reason: RevocationReason::Unspecified,
    });
    let this_update = now - Duration::minutes(5);
    let next_update = now + Duration::days(7);
    let der = build_crl(&pki.issuer(), 4711, this_update, next_update, &entries).unwrap();
    let (der_path, pem_path) = write_crl(&pki, &der);

    let chain = pki.path("chain.pem");
    let out = openssl(&["crl", "-inform", "DER", "-in", s(&der_path), "-CAfile", s(&chain), "-verify", "-noout"]);
    assert!(out.contains("verify OK"), "{out}");
    let text = openssl(&["crl", "-inform", "DER", "-in", s(&der_path), "-noout", "-text"]);
    for needle in [
        "Version 2 (0x1)",
        "Issuer: C = CN, O = Test Transit, CN = Test Issuing CA",
        "X509v3 CRL Number: \n                4711",
        "X509v3 Authority Key Identifier",
        "Key Compromise",
        "CA Compromise",
        "Affiliation Changed",
        "Superseded",
        "Cessation Of Operation",
        "Certificate Hold",
        "Privilege Withdrawn",
        "AA Compromise",
        &format!("Serial Number: {}", hex(&revoked.serial)),
        "Serial Number: FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
    ] {
        assert!(text.contains(needle), "{needle:?} missing:\n{text}");
    }
    // RFC 5280 §5.3.1: no reasonCode entry extension for unspecified.
    assert_eq!(text.matches("X509v3 CRL Reason Code").count(), entries.len() - 2, "{text}");
    assert!(!text.contains("Unspecified"), "{text}");

    let crl_check = |cert: &IssuedCertificate| pki.verify(cert, &["-crl_check", "-CRLfile", s(&pem_path)]);
    let (ok, out) = crl_check(&revoked);
    assert!(!ok && out.contains("certificate revoked"), "{out}");
    let (ok, out) = crl_check(&good);
    assert!(ok, "{out}");

    // Independently parsed: entry count, dates, number.
    use x509_parser::prelude::FromDer;
    let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
    assert_eq!(crl.iter_revoked_certificates().count(), entries.len());
    assert_eq!(crl.crl_number().map(|n| n.to_string()), Some("4711".to_owned()));
    assert_eq!(crl.last_update().timestamp(), this_update.unix_timestamp());
    assert_eq!(crl.next_update().map(|t| t.timestamp()), Some(next_update.unix_timestamp()));
}

#[test]
fn empty_crl_and_rsa_issuer() {
    let rsa = SoftSigner::rsa(openssl_rsa_pkcs8(tempfile::tempdir().unwrap().path(), 2048));
    let pki = Pki::with_ca(rsa);
    let now = OffsetDateTime::now_utc();
    let der = build_crl(&pki.issuer(), 1, now, now + Duration::hours(1), &[]).unwrap();
    let (der_path, _) = write_crl(&pki, &der);
    let chain = pki.path("chain.pem");
    let out =
        openssl(&["crl", "-inform", "DER", "-in", s(&der_path), "-CAfile", s(&chain), "-verify", "-text", "-noout"]);
    assert!(
        out.contains("verify OK")
            && out.contains("No Revoked Certificates.")
            && out.contains("sha256WithRSAEncryption"),
        "{out}"
    );
    // Certificates from the RSA issuing CA chain too.
    let cert = reader_cert(&pki, "RDR-RSA");
    let (ok, out) = pki.verify(&cert, &[]);
    assert!(ok, "{out}");
}

#[test]
fn crl_refuses_bad_input() {
    let pki = Pki::new();
    let now = OffsetDateTime::now_utc();
    let entry = |serial: Vec<u8>, reason| RevokedEntry { serial, revoked_at: now, reason };
    let build = |entries: &[RevokedEntry]| build_crl(&pki.issuer(), 2, now, now + Duration::days(1), entries);
    assert!(matches!(
        build_crl(&pki.issuer(), 2, now, now, &[]),
        Err(CaError::InvalidField { field: "next_update", .. })
    ));
    let dup = [entry(vec![1, 2], RevocationReason::Superseded), entry(vec![0, 1, 2], RevocationReason::KeyCompromise)];
    assert!(matches!(build(&dup), Err(CaError::InvalidField { field: "serial", .. })));
    assert!(matches!(
        build(&[entry(vec![], RevocationReason::Superseded)]),
        Err(CaError::InvalidField { field: "serial", .. })
    ));
    assert!(matches!(
        build(&[entry(vec![1; 21], RevocationReason::Superseded)]),
        Err(CaError::InvalidField { field: "serial", .. })
    ));
    assert!(matches!(
        build(&[entry(vec![1], RevocationReason::RemoveFromCrl)]),
        Err(CaError::InvalidField { field: "reason", .. })
    ));
    let wrong_key = Issuer { signer: &pki.root, certificate_der: &pki.ca_cert.der };
    assert!(matches!(build_crl(&wrong_key, 2, now, now + Duration::days(1), &[]), Err(CaError::IssuerKeyMismatch)));
}
