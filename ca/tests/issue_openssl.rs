//! Issuance checked by OpenSSL: every shipped profile's certificate chains
//! to the root (`openssl verify -x509_strict`), and `openssl x509 -text`
//! shows the profile's extensions. Also the issuing CA's life: its CSR,
//! an externally (OpenSSL-)signed issuing certificate, and the checks on it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::*;
use kms_ca::{
    CaError, DistinguishedNameSpec, DnAttribute, IssueContext, IssuedCertificate, Issuer, PublicKey, San, approve,
    approve_generated, check_issuer_certificate, check_issuer_certificate_at, issue_certificate, new_serial, parse_csr,
};
use rcgen::DnType;
use time::{Duration, OffsetDateTime};

const CRL_URL: &str = "http://crl.transit.example/issuing.crl";

fn reader_csr(key: &rcgen::KeyPair, serial: &str) -> Vec<u8> {
    ec_csr(
        key,
        &[(DnType::CommonName, serial), (DnType::OrganizationName, "杭州公交读卡器"), (DnType::CountryName, "CN")],
        |_| {},
    )
}

fn reader_ctx(pki: &Pki, serial: &str) -> IssueContext {
    let mut ctx = pki.ctx();
    ctx.tenant = Some("city-3301".into());
    ctx.bound_subject = Some(serial.into());
    ctx
}

fn expect_ok(pki: &Pki, cert: &IssuedCertificate, extra: &[&str]) {
    let (ok, out) = pki.verify(cert, extra);
    assert!(ok && out.contains(": OK"), "openssl verify failed:\n{out}\n{}", pki.text(cert));
}

fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "missing {n:?} in:\n{text}");
    }
}

#[test]
fn reader_sign_chain_and_extensions() {
    let pki = Pki::new();
    let profile = profile("reader-sign");
    let key = p256_key();
    let csr = parse_csr(&reader_csr(&key, "RDR-3301-000123")).unwrap();
    let approval = approve(&profile, &csr, &reader_ctx(&pki, "RDR-3301-000123")).unwrap();
    let serial = new_serial().unwrap();
    let cert = issue_certificate(&pki.issuer(), &profile, &approval, &serial, Some(CRL_URL)).unwrap();
    expect_ok(&pki, &cert, &["-purpose", "sslclient"]);
    let text = pki.text(&cert);
    assert_contains(
        &text,
        &[
            "X509v3 Key Usage: critical\n                Digital Signature\n",
            "X509v3 Extended Key Usage: \n                TLS Web Client Authentication",
            "X509v3 Basic Constraints: critical\n                CA:FALSE",
            "URI:urn:kms:role:reader",
            "URI:urn:kms:tenant:city-3301",
            "X509v3 CRL Distribution Points",
            "URI:http://crl.transit.example/issuing.crl",
            "X509v3 Subject Key Identifier",
            "X509v3 Authority Key Identifier",
            "Issuer: C = CN, O = Test Transit, CN = Test Issuing CA",
        ],
    );
    assert_eq!(cert.serial, serial);
    assert_eq!(cert.not_before, approval.not_before());
    assert_eq!(cert.not_after, approval.not_after());
    assert_eq!(cert.subject, "CN=RDR-3301-000123,O=杭州公交读卡器,C=CN");
    let fp = openssl(&["x509", "-noout", "-fingerprint", "-sha256", "-in", s(&write(&pki, &cert))]);
    assert!(fp.replace(':', "").contains(&hex(&cert.sha256_fingerprint)), "{fp}");
    // AKI = the issuing CA's SKI, read back independently.
    let ca_info = check_issuer_certificate(&pki.ca_cert.der, kms_ca::Signer::public_key(&pki.ca)).unwrap();
    let aki_hex: String = ca_info.subject_key_id.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
    assert!(text.contains(&aki_hex), "AKI {aki_hex} not in\n{text}");
}

fn write(pki: &Pki, cert: &IssuedCertificate) -> std::path::PathBuf {
    let p = pki.path(&format!("c-{}.pem", rand_u32()));
    std::fs::write(&p, &cert.pem).unwrap();
    p
}

#[test]
fn reader_encrypt_for_ec_and_rsa_keys() {
    let pki = Pki::new();
    let sign_profile = profile("reader-sign");
    let enc_profile = profile("reader-encrypt");
    let csr = parse_csr(&reader_csr(&p256_key(), "RDR-1")).unwrap();
    let sign_approval = approve(&sign_profile, &csr, &reader_ctx(&pki, "RDR-1")).unwrap();

    // An EC key pair "generated in the HSM".
    let generated = p256_key();
    let key = PublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&generated)).unwrap();
    let approval = approve_generated(&enc_profile, &sign_approval, key, &reader_ctx(&pki, "RDR-1")).unwrap();
    assert_eq!(approval.subject(), sign_approval.subject());
    let cert = issue_certificate(&pki.issuer(), &enc_profile, &approval, &new_serial().unwrap(), None).unwrap();
    expect_ok(&pki, &cert, &[]);
    let text = pki.text(&cert);
    assert_contains(&text, &["X509v3 Key Usage: critical\n                Key Agreement\n", "urn:kms:role:reader"]);
    assert!(!text.contains("Key Encipherment") && !text.contains("Extended Key Usage"), "{text}");

    // An RSA key pair.
    let rsa = openssl_rsa_pkcs8(pki.dir.path(), 2048);
    let p8 = pki.path("rsa-enc.der");
    std::fs::write(&p8, &rsa).unwrap();
    let spki = pki.path("rsa-enc.pub.der");
    openssl(&["pkey", "-inform", "DER", "-in", s(&p8), "-pubout", "-outform", "DER", "-out", s(&spki)]);
    let key = PublicKey::from_spki_der(&std::fs::read(&spki).unwrap()).unwrap();
    assert_eq!(key.key_type(), kms_ca::KeyType::Rsa2048);
    let approval = approve_generated(&enc_profile, &sign_approval, key, &reader_ctx(&pki, "RDR-1")).unwrap();
    let cert = issue_certificate(&pki.issuer(), &enc_profile, &approval, &new_serial().unwrap(), None).unwrap();
    expect_ok(&pki, &cert, &[]);
    assert_contains(&pki.text(&cert), &["X509v3 Key Usage: critical\n                Key Encipherment\n"]);
}

#[test]
fn server_tls_chain_with_operator_names() {
    let pki = Pki::new();
    let profile = profile("server-tls");
    let csr = parse_csr(&ec_csr(&p256_key(), &[(DnType::CommonName, "kms.transit.example")], |p| {
        p.subject_alt_names = vec![rcgen::SanType::DnsName("kms.transit.example".try_into().unwrap())];
    }))
    .unwrap();
    let mut ctx = pki.ctx();
    ctx.extra_sans = vec![San::Ip("10.0.0.1".parse::<IpAddr>().unwrap()), San::Dns("KMS.transit.example".into())];
    ctx.requested_validity = Some(Duration::days(90));
    let approval = approve(&profile, &csr, &ctx).unwrap();
    assert_eq!(approval.sans().len(), 2, "{:?}", approval.sans());
    let cert = issue_certificate(&pki.issuer(), &profile, &approval, &new_serial().unwrap(), Some(CRL_URL)).unwrap();
    expect_ok(&pki, &cert, &["-purpose", "sslserver", "-verify_hostname", "kms.transit.example"]);
    expect_ok(&pki, &cert, &["-purpose", "sslserver", "-verify_ip", "10.0.0.1"]);
    assert_contains(
        &pki.text(&cert),
        &[
            "X509v3 Key Usage: critical\n                Digital Signature\n",
            "TLS Web Server Authentication",
            "DNS:kms.transit.example, IP Address:10.0.0.1",
        ],
    );
    assert!((cert.not_after - cert.not_before - Duration::days(90) - kms_ca::CLOCK_SKEW).is_zero());
}

#[test]
fn client_tls_chain_with_rsa_key_and_role() {
    let pki = Pki::new();
    let profile = profile("client-tls");
    let key = pki.path("client.key");
    SoftSigner::rsa(openssl_rsa_pkcs8(pki.dir.path(), 2048)).write_key(&key);
    let csr = parse_csr(&openssl_csr(pki.dir.path(), &key, "/CN=alice/O=Partner 7", &[])).unwrap();
    let mut ctx = pki.ctx();
    ctx.role = Some("issuance_partner".into());
    ctx.tenant = Some("partner-7".into());
    let approval = approve(&profile, &csr, &ctx).unwrap();
    let cert = issue_certificate(&pki.issuer(), &profile, &approval, &new_serial().unwrap(), None).unwrap();
    expect_ok(&pki, &cert, &["-purpose", "sslclient"]);
    assert_contains(
        &pki.text(&cert),
        &[
            "Public-Key: (2048 bit)",
            "URI:urn:kms:role:issuance_partner, URI:urn:kms:tenant:partner-7",
            "TLS Web Client Authentication",
            "Subject: O = Partner 7, CN = alice",
        ],
    );
}

#[test]
fn sub_ca_chain_path_length_and_name_constraints() {
    let pki = Pki::new();
    let profile = profile("sub-ca");
    let sub = SoftSigner::p384();
    let sub_dn = DistinguishedNameSpec::new()
        .with(DnAttribute::Organization, "Partner 7")
        .with(DnAttribute::CommonName, "Partner 7 CA");
    let csr = parse_csr(&kms_ca::issuer_csr(&sub, &sub_dn).unwrap()).unwrap();
    let approval = approve(&profile, &csr, &pki.ctx()).unwrap();
    let sub_cert =
        issue_certificate(&pki.issuer(), &profile, &approval, &new_serial().unwrap(), Some(CRL_URL)).unwrap();
    expect_ok(&pki, &sub_cert, &[]);
    assert_contains(
        &pki.text(&sub_cert),
        &[
            "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0",
            "Certificate Sign, CRL Sign",
            "X509v3 Name Constraints: critical\n                Permitted:\n                  DNS:transit.example",
        ],
    );
    // The sub-CA can be an issuer; its name constraints bind what it signs.
    check_issuer_certificate(&sub_cert.der, kms_ca::Signer::public_key(&sub)).unwrap();
    let sub_issuer = Issuer { signer: &sub, certificate_der: &sub_cert.der };
    let server = common::profile("server-tls");
    let untrusted = pki.path("sub-untrusted.pem");
    std::fs::write(&untrusted, format!("{}{}", sub_cert.pem, pki.ca_cert.pem)).unwrap();
    let leaf_for = |name: &str| {
        let csr = parse_csr(&ec_csr(&p256_key(), &[(DnType::OrganizationName, "Partner 7")], |p| {
            p.subject_alt_names = vec![rcgen::SanType::DnsName(name.try_into().unwrap())];
        }))
        .unwrap();
        let ctx = IssueContext::new(OffsetDateTime::now_utc(), sub_cert.not_after);
        let approval = approve(&server, &csr, &ctx).unwrap();
        let cert = issue_certificate(&sub_issuer, &server, &approval, &new_serial().unwrap(), None).unwrap();
        let path = write(&pki, &cert);
        let root = pki.path("root.pem");
        openssl_status(&["verify", "-x509_strict", "-CAfile", s(&root), "-untrusted", s(&untrusted), s(&path)])
    };
    let (ok, out) = leaf_for("gate.transit.example");
    assert!(ok, "{out}");
    let (ok, out) = leaf_for("gate.elsewhere.example");
    assert!(!ok && out.contains("permitted subtree violation"), "{out}");
    // pathlen 0: a certificate below a CA below the sub-CA is refused.
    let deeper = SoftSigner::p256();
    let deeper_csr =
        kms_ca::issuer_csr(&deeper, &DistinguishedNameSpec::new().with(DnAttribute::CommonName, "Too deep")).unwrap();
    let deeper_cert = kms_ca::sign_subordinate(
        &sub_issuer,
        &deeper_csr,
        &kms_ca::SubordinateSpec { validity: Duration::days(30), ..Default::default() },
    )
    .unwrap();
    let deeper_issuer = Issuer { signer: &deeper, certificate_der: &deeper_cert.der };
    let csr = parse_csr(&ec_csr(&p256_key(), &[(DnType::OrganizationName, "Partner 7")], |p| {
        p.subject_alt_names = vec![rcgen::SanType::DnsName("deep.transit.example".try_into().unwrap())];
    }))
    .unwrap();
    let approval =
        approve(&server, &csr, &IssueContext::new(OffsetDateTime::now_utc(), deeper_cert.not_after)).unwrap();
    let leaf = issue_certificate(&deeper_issuer, &server, &approval, &new_serial().unwrap(), None).unwrap();
    std::fs::write(&untrusted, format!("{}{}{}", deeper_cert.pem, sub_cert.pem, pki.ca_cert.pem)).unwrap();
    let path = write(&pki, &leaf);
    let root = pki.path("root.pem");
    let (ok, out) =
        openssl_status(&["verify", "-x509_strict", "-CAfile", s(&root), "-untrusted", s(&untrusted), s(&path)]);
    assert!(!ok && out.contains("path length constraint exceeded"), "{out}");
}

/// The offline root is OpenSSL here: it signs the issuing CA's CSR with its
/// own SHA-1 subjectKeyIdentifier method; our AKIs must follow it.
#[test]
fn externally_signed_issuing_ca() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        s(&d("root.key")),
        "-subj",
        "/C=CN/O=Offline Root/CN=OpenSSL Root",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-days",
        "3650",
        "-out",
        s(&d("root.pem")),
    ]);
    let ca = SoftSigner::p256();
    let dn = DistinguishedNameSpec::new()
        .with(DnAttribute::Country, "CN")
        .with(DnAttribute::Organization, "Hangzhou Transit")
        .with(DnAttribute::CommonName, "Hangzhou Issuing CA 2026");
    let csr = kms_ca::issuer_csr(&ca, &dn).unwrap();
    std::fs::write(d("ca.csr.der"), &csr).unwrap();
    openssl(&["req", "-inform", "DER", "-in", s(&d("ca.csr.der")), "-verify", "-noout"]);
    openssl(&["req", "-inform", "DER", "-in", s(&d("ca.csr.der")), "-out", s(&d("ca.csr"))]);
    std::fs::write(
        d("ext.cnf"),
        "[v3_ca]\nbasicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n\
         subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n\
         [no_crl]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign\nsubjectKeyIdentifier=hash\n",
    )
    .unwrap();
    let sign = |ext: &str, out: &str| {
        openssl(&[
            "x509",
            "-req",
            "-in",
            s(&d("ca.csr")),
            "-CA",
            s(&d("root.pem")),
            "-CAkey",
            s(&d("root.key")),
            "-days",
            "1000",
            "-extfile",
            s(&d("ext.cnf")),
            "-extensions",
            ext,
            "-outform",
            "DER",
            "-out",
            s(&d(out)),
        ]);
        std::fs::read(d(out)).unwrap()
    };
    let ca_der = sign("v3_ca", "ca.der");
    let info = check_issuer_certificate(&ca_der, kms_ca::Signer::public_key(&ca)).unwrap();
    assert_eq!(info.subject, "CN=Hangzhou Issuing CA 2026,O=Hangzhou Transit,C=CN");
    assert_eq!(info.path_len, Some(0));
    assert_eq!(info.subject_key_id.len(), 20);

    // Issue under it and let OpenSSL check the chain and the CRL.
    let issuer = Issuer { signer: &ca, certificate_der: &ca_der };
    let profile = profile("reader-sign");
    let csr = parse_csr(&reader_csr(&p256_key(), "RDR-9")).unwrap();
    let mut ctx = IssueContext::new(OffsetDateTime::now_utc(), info.not_after);
    ctx.tenant = Some("city-3301".into());
    let approval = approve(&profile, &csr, &ctx).unwrap();
    let cert = issue_certificate(&issuer, &profile, &approval, &new_serial().unwrap(), None).unwrap();
    std::fs::write(d("leaf.pem"), &cert.pem).unwrap();
    openssl(&["x509", "-inform", "DER", "-in", s(&d("ca.der")), "-out", s(&d("ca.pem"))]);
    let (root_pem, ca_pem, leaf_pem) = (d("root.pem"), d("ca.pem"), d("leaf.pem"));
    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "-x509_strict", "-CAfile", s(&root_pem), "-untrusted", s(&ca_pem)];
        args.extend_from_slice(extra);
        args.push(s(&leaf_pem));
        openssl_status(&args)
    };
    let (ok, out) = verify(&[]);
    assert!(ok, "{out}");
    let crl = kms_ca::build_crl(
        &issuer,
        1,
        OffsetDateTime::now_utc() - Duration::minutes(1),
        OffsetDateTime::now_utc() + Duration::days(7),
        &[kms_ca::RevokedEntry {
            serial: cert.serial.clone(),
            revoked_at: OffsetDateTime::now_utc() - Duration::minutes(1),
            reason: kms_ca::RevocationReason::KeyCompromise,
        }],
    )
    .unwrap();
    std::fs::write(d("crl.der"), &crl).unwrap();
    openssl(&["crl", "-inform", "DER", "-in", s(&d("crl.der")), "-out", s(&d("crl.pem"))]);
    let (ok, out) = verify(&["-crl_check", "-CRLfile", s(&d("crl.pem"))]);
    assert!(!ok && out.contains("certificate revoked"), "{out}");

    // A CA certificate without cRLSign is refused.
    let no_crl = sign("no_crl", "no-crl.der");
    match check_issuer_certificate(&no_crl, kms_ca::Signer::public_key(&ca)) {
        Err(CaError::IssuerKeyUsage("cRLSign")) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn issuer_certificate_checks() {
    let pki = Pki::new();
    let key = kms_ca::Signer::public_key(&pki.ca);
    let info = check_issuer_certificate(&pki.ca_cert.der, key).unwrap();
    assert_eq!(info.subject, "CN=Test Issuing CA,O=Test Transit,C=CN");
    assert_eq!(info.serial, pki.ca_cert.serial);
    assert_eq!(info.path_len, Some(1));
    assert!(matches!(
        check_issuer_certificate(&pki.ca_cert.der, kms_ca::Signer::public_key(&SoftSigner::p384())),
        Err(CaError::IssuerKeyMismatch)
    ));
    assert!(matches!(
        check_issuer_certificate_at(&pki.ca_cert.der, key, pki.ca_cert.not_after + Duration::seconds(1)),
        Err(CaError::IssuerNotValid { .. })
    ));
    assert!(matches!(
        check_issuer_certificate_at(&pki.ca_cert.der, key, pki.ca_cert.not_before - Duration::seconds(1)),
        Err(CaError::IssuerNotValid { .. })
    ));
    assert!(matches!(check_issuer_certificate(b"not a certificate", key), Err(CaError::Issuer(_))));
    // An end-entity certificate is not an issuer.
    let profile = profile("reader-sign");
    let key_pair = p256_key();
    let csr = parse_csr(&reader_csr(&key_pair, "RDR-2")).unwrap();
    let approval = approve(&profile, &csr, &reader_ctx(&pki, "RDR-2")).unwrap();
    let leaf = issue_certificate(&pki.issuer(), &profile, &approval, &new_serial().unwrap(), None).unwrap();
    assert!(matches!(
        check_issuer_certificate(&leaf.der, rcgen::PublicKeyData::der_bytes(&key_pair)),
        Err(CaError::IssuerNotCa)
    ));
}

#[test]
fn issuance_refuses_inconsistent_inputs() {
    let pki = Pki::new();
    let reader = profile("reader-sign");
    let csr = parse_csr(&reader_csr(&p256_key(), "RDR-3")).unwrap();
    let approval = approve(&reader, &csr, &reader_ctx(&pki, "RDR-3")).unwrap();
    let serial = new_serial().unwrap();
    let err = issue_certificate(&pki.issuer(), &profile("client-tls"), &approval, &serial, None).unwrap_err();
    assert!(matches!(err, CaError::ProfileMismatch { .. }), "{err}");
    for bad in [&[][..], &[0x80, 1][..], &[0, 1][..], &[7; 21][..]] {
        let err = issue_certificate(&pki.issuer(), &reader, &approval, bad, None).unwrap_err();
        assert!(matches!(err, CaError::InvalidField { field: "serial", .. }), "{err}");
    }
    let wrong_key = Issuer { signer: &pki.root, certificate_der: &pki.ca_cert.der };
    let err = issue_certificate(&wrong_key, &reader, &approval, &serial, None).unwrap_err();
    assert!(matches!(err, CaError::IssuerKeyMismatch), "{err}");
    let err = issue_certificate(&pki.issuer(), &reader, &approval, &serial, Some("not a url")).unwrap_err();
    assert!(matches!(err, CaError::InvalidField { field: "crl_url", .. }), "{err}");
    // An approval whose validity outlives the issuer (a wrong issuer_not_after).
    let mut ctx = reader_ctx(&pki, "RDR-3");
    ctx.issuer_not_after = pki.ca_cert.not_after + Duration::days(3650);
    ctx.requested_validity = Some(Duration::days(1095));
    ctx.now = pki.ca_cert.not_after - Duration::days(1);
    let late = approve(&reader, &csr, &ctx).unwrap();
    let err = issue_certificate(&pki.issuer(), &reader, &late, &serial, None).unwrap_err();
    assert!(matches!(err, CaError::ValidityBeyondIssuer { .. }), "{err}");
}

#[test]
fn development_tls_helpers_still_chain() {
    let dir = tempfile::tempdir().unwrap();
    let signer = SoftSigner::p256();
    let root = kms_ca::dev_root(&signer, "kms development CA", Duration::days(3650)).unwrap();
    let key = p256_key();
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    let server = kms_ca::issue_server_tls(&names, &key, &root.der, &signer, Duration::days(825)).unwrap();
    let identity = kms_ca::ClientIdentity { name: "admin".into(), role: "operator".into(), tenant: "dev".into() };
    let client = kms_ca::issue_client_tls(&identity, &key, &root.der, &signer, Duration::days(825)).unwrap();
    std::fs::write(dir.path().join("root.pem"), &root.pem).unwrap();
    for (name, cert, purpose) in [("server", &server, "sslserver"), ("client", &client, "sslclient")] {
        let path = dir.path().join(format!("{name}.pem"));
        std::fs::write(&path, &cert.pem).unwrap();
        let root_path = dir.path().join("root.pem");
        openssl(&["verify", "-CAfile", s(&root_path), "-purpose", purpose, s(&path)]);
        assert_eq!(cert.serial.len(), 16);
    }
    assert_eq!(client.subject, "CN=admin");
}

/// `?` is in X.680's PrintableString, but rcgen's DER writer panics on it;
/// the CA refuses such names (found by fuzzing) instead of panicking.
#[test]
fn question_marks_in_printable_strings_are_refused_not_panicked_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = |n: &str| dir.path().join(n);
    // An issuer whose own name has C=A? (OpenSSL writes countryName as PrintableString).
    let p8 = d("root.p8");
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-outform", "DER", "-out", s(&p8)]);
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-inform",
        "DER",
        "-in",
        s(&p8),
        "-outform",
        "DER",
        "-out",
        s(&d("root.pk8")),
    ]);
    let signer = SoftSigner::ec_from_pkcs8(std::fs::read(d("root.pk8")).unwrap());
    signer.write_key(&d("root.key"));
    openssl(&[
        "req",
        "-x509",
        "-key",
        s(&d("root.key")),
        "-subj",
        "/C=A?/CN=Odd Root",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-outform",
        "DER",
        "-out",
        s(&d("root.der")),
    ]);
    let root_der = std::fs::read(d("root.der")).unwrap();
    let err = check_issuer_certificate(&root_der, kms_ca::Signer::public_key(&signer)).unwrap_err();
    assert!(matches!(&err, CaError::Issuer(m) if m.contains('?')), "{err}");
    let profile = profile("reader-sign");
    let csr = parse_csr(&reader_csr(&p256_key(), "RDR-5")).unwrap();
    let mut ctx = IssueContext::new(OffsetDateTime::now_utc(), OffsetDateTime::now_utc() + Duration::days(30));
    ctx.tenant = Some("city-3301".into());
    let approval = approve(&profile, &csr, &ctx).unwrap();
    let issuer = Issuer { signer: &signer, certificate_der: &root_der };
    let err = issue_certificate(&issuer, &profile, &approval, &new_serial().unwrap(), None).unwrap_err();
    assert!(matches!(err, CaError::Issuer(_)), "{err}");

    // A request whose serialNumber (PrintableString, from OpenSSL) has `?`.
    let key = d("reader.key");
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", s(&key)]);
    let csr = parse_csr(&openssl_csr(dir.path(), &key, "/CN=RDR-6/serialNumber=RDR?6", &[])).unwrap();
    let rejection = approve(&profile, &csr, &ctx).unwrap_err();
    assert_eq!(rejection.reason, kms_ca::RejectReason::SubjectNotAllowed, "{rejection}");
    // And the issuing CA's own name is checked before rcgen sees it.
    let dn = DistinguishedNameSpec::new().with(DnAttribute::SerialNumber, "CA?1");
    assert!(matches!(kms_ca::issuer_csr(&signer, &dn), Err(CaError::InvalidField { .. })));
}
