//! CSR parsing against requests made by OpenSSL and rcgen: what is
//! extracted, and every refusal (`CsrError`) with its reason.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;

use common::*;
use kms_ca::{
    CsrError, DnAttribute, ExtendedKeyUsage, KeyType, KeyUsage, MAX_CSR_SIZE, PublicKey, RequestedValue, San, parse_csr,
};

fn ec_key_pem(dir: &std::path::Path, curve: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{curve}-{}.key", rand_u32()));
    openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", &format!("ec_paramgen_curve:{curve}"), "-out", s(&path)]);
    path
}

fn rsa_key_pem(dir: &std::path::Path, bits: u32) -> std::path::PathBuf {
    let path = dir.join(format!("rsa{bits}-{}.key", rand_u32()));
    openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}"), "-out", s(&path)]);
    path
}

#[test]
fn openssl_request_is_read_completely() {
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key_pem(dir.path(), "P-384");
    let der = openssl_csr(
        dir.path(),
        &key,
        "/C=CN/ST=Zhejiang/L=Hangzhou/O=Transit/OU=Readers/CN=RDR-1/serialNumber=RDR-1",
        &[
            "-addext",
            "subjectAltName=DNS:a.transit.example,IP:10.1.2.3,IP:::1,URI:https://x.example/a,email:ops@transit.example",
            "-addext",
            "keyUsage=critical,digitalSignature,keyAgreement",
            "-addext",
            "extendedKeyUsage=clientAuth,1.2.3.4.5",
            "-addext",
            "basicConstraints=critical,CA:TRUE,pathlen:3",
            "-addext",
            "1.2.3.4=ASN1:NULL",
        ],
    );
    let csr = parse_csr(&der).unwrap();
    assert_eq!(csr.public_key().key_type(), KeyType::EcP384);
    assert_eq!(csr.public_key().raw().len(), 97);
    assert_eq!(csr.subject_value(DnAttribute::CommonName), Some("RDR-1"));
    assert_eq!(csr.subject_value(DnAttribute::SerialNumber), Some("RDR-1"));
    assert_eq!(csr.subject_value(DnAttribute::StateOrProvince), Some("Zhejiang"));
    assert_eq!(csr.subject_string(), "serialNumber=RDR-1,CN=RDR-1,OU=Readers,O=Transit,L=Hangzhou,ST=Zhejiang,C=CN");
    assert_eq!(
        csr.sans(),
        &[
            San::Dns("a.transit.example".into()),
            San::Ip("10.1.2.3".parse::<IpAddr>().unwrap()),
            San::Ip("::1".parse::<IpAddr>().unwrap()),
            San::Uri("https://x.example/a".into()),
            San::Email("ops@transit.example".into()),
        ]
    );
    let ext = |oid: &str| csr.extensions().iter().find(|e| e.oid == oid).unwrap_or_else(|| panic!("{oid} missing"));
    assert!(ext("2.5.29.15").critical);
    assert_eq!(
        ext("2.5.29.15").value,
        RequestedValue::KeyUsage(vec![KeyUsage::DigitalSignature, KeyUsage::KeyAgreement])
    );
    assert_eq!(
        ext("2.5.29.37").value,
        RequestedValue::ExtendedKeyUsage(vec![
            ExtendedKeyUsage::ClientAuth,
            ExtendedKeyUsage::Other("1.2.3.4.5".into())
        ])
    );
    assert_eq!(ext("2.5.29.19").value, RequestedValue::BasicConstraints { ca: true, path_len: Some(3) });
    assert!(ext("2.5.29.19").critical);
    assert_eq!(ext("1.2.3.4").value, RequestedValue::Other);
    assert!(!ext("1.2.3.4").critical);
    assert!(csr.requests_ca());
    assert_eq!(csr.signature_algorithm(), "1.2.840.10045.4.3.2");

    // The same request as PEM, with text around it (RFC 7468 allows it).
    let pem_path = dir.path().join("req.pem");
    let der_path = dir.path().join("req.der");
    std::fs::write(&der_path, &der).unwrap();
    openssl(&["req", "-inform", "DER", "-in", s(&der_path), "-out", s(&pem_path)]);
    let pem = format!("Reader RDR-1 request:\n{}", std::fs::read_to_string(&pem_path).unwrap());
    let from_pem = parse_csr(pem.as_bytes()).unwrap();
    assert_eq!(from_pem.der(), der.as_slice());
}

#[test]
fn rsa_requests_and_key_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let key = rsa_key_pem(dir.path(), 2048);
    let csr = parse_csr(&openssl_csr(dir.path(), &key, "/CN=rsa", &[])).unwrap();
    assert_eq!(csr.public_key().key_type(), KeyType::Rsa2048);
    // RSA-PSS signed request (RSA key): accepted.
    let pss = openssl_csr(
        dir.path(),
        &key,
        "/CN=rsa",
        &["-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest", "-sha384"],
    );
    assert_eq!(parse_csr(&pss).unwrap().signature_algorithm(), "1.2.840.113549.1.1.10");
    // OpenSSL's default PSS salt (the longest) cannot be checked: said so.
    let pss_max = openssl_csr(dir.path(), &key, "/CN=rsa", &["-sigopt", "rsa_padding_mode:pss", "-sha256"]);
    let err = parse_csr(&pss_max).unwrap_err();
    assert!(matches!(&err, CsrError::UnsupportedSignatureAlgorithm(m) if m.contains("salt length")), "{err}");

    let weak = rsa_key_pem(dir.path(), 1024);
    let err = parse_csr(&openssl_csr(dir.path(), &weak, "/CN=weak", &[])).unwrap_err();
    assert!(matches!(&err, CsrError::WeakKey(m) if m.contains("RSA-1024")), "{err}");
    assert_eq!(err.code(), "weak_key");

    let odd = rsa_key_pem(dir.path(), 2304);
    let err = parse_csr(&openssl_csr(dir.path(), &odd, "/CN=odd", &[])).unwrap_err();
    assert!(matches!(&err, CsrError::UnsupportedKey(m) if m.contains("RSA-2304")), "{err}");
}

#[test]
fn unsupported_keys_and_algorithms() {
    let dir = tempfile::tempdir().unwrap();
    for (curve, expect) in [("secp256k1", "1.3.132.0.10"), ("SM2", "sm2")] {
        let key = ec_key_pem(dir.path(), curve);
        let extra: &[&str] = if curve == "SM2" { &["-sm3"] } else { &[] };
        let err = parse_csr(&openssl_csr(dir.path(), &key, "/CN=x", extra)).unwrap_err();
        assert!(matches!(&err, CsrError::UnsupportedKey(m) if m.contains(expect)), "{curve}: {err}");
        assert_eq!(err.code(), "unsupported_key");
    }
    let ed = dir.path().join("ed.key");
    openssl(&["genpkey", "-algorithm", "ED25519", "-out", s(&ed)]);
    let err = parse_csr(&openssl_csr(dir.path(), &ed, "/CN=x", &[])).unwrap_err();
    assert!(matches!(&err, CsrError::UnsupportedSignatureAlgorithm(_) | CsrError::UnsupportedKey(_)), "{err}");

    let p256 = ec_key_pem(dir.path(), "P-256");
    let err = parse_csr(&openssl_csr(dir.path(), &p256, "/CN=x", &["-sha1"])).unwrap_err();
    assert!(matches!(&err, CsrError::UnsupportedSignatureAlgorithm(m) if m.contains("SHA-1")), "{err}");
    assert_eq!(err.code(), "csr_unsupported_signature");
}

#[test]
fn signature_must_verify() {
    let key = p256_key();
    let good = ec_csr(&key, &[(rcgen::DnType::CommonName, "RDR-1")], |_| {});
    parse_csr(&good).unwrap();
    // A different subject under the original signature.
    let at = good.windows(5).position(|w| w == b"RDR-1").unwrap();
    let mut changed = good.clone();
    changed[at + 4] = b'2';
    let err = parse_csr(&changed).unwrap_err();
    assert_eq!(err, CsrError::BadSignature);
    assert_eq!(err.code(), "csr_bad_signature");
    // A corrupted signature value (the last byte is inside s).
    let mut corrupted = good.clone();
    let last = corrupted.len() - 1;
    corrupted[last] ^= 1;
    assert_eq!(parse_csr(&corrupted).unwrap_err(), CsrError::BadSignature);
    // Someone else's valid signature (over their own request) under ours.
    let other = ec_csr(&p256_key(), &[(rcgen::DnType::CommonName, "RDR-1")], |_| {});
    use x509_parser::prelude::FromDer;
    let (_, mine) = x509_parser::certification_request::X509CertificationRequest::from_der(&good).unwrap();
    let (_, theirs) = x509_parser::certification_request::X509CertificationRequest::from_der(&other).unwrap();
    let spliced = yasna::construct_der(|w| {
        w.write_sequence(|w| {
            w.next().write_der(mine.certification_request_info.raw);
            w.next().write_sequence(|w| {
                w.next().write_oid(&yasna::models::ObjectIdentifier::from_slice(&[1, 2, 840, 10045, 4, 3, 2]))
            });
            let sig: &[u8] = &theirs.signature_value.data;
            w.next().write_bitvec_bytes(sig, sig.len() * 8);
        })
    });
    assert_eq!(parse_csr(&spliced).unwrap_err(), CsrError::BadSignature);
}

#[test]
fn malformed_inputs() {
    let good = ec_csr(&p256_key(), &[(rcgen::DnType::CommonName, "x")], |_| {});
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("garbage", b"hello, CA".to_vec()),
        ("truncated", good[..good.len() - 10].to_vec()),
        ("trailing", [good.clone(), vec![0]].concat()),
        ("pem label", b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n".to_vec()),
        ("pem base64", b"-----BEGIN CERTIFICATE REQUEST-----\n!!!!\n-----END CERTIFICATE REQUEST-----\n".to_vec()),
    ];
    // A known extension whose value does not parse.
    let bad_nc = ec_csr(&p256_key(), &[(rcgen::DnType::CommonName, "x")], |p| {
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 30], vec![5, 0])];
    });
    assert!(matches!(parse_csr(&bad_nc), Err(CsrError::Malformed(m)) if m.contains("2.5.29.30")));
    for (name, input) in cases {
        let err = parse_csr(&input).unwrap_err();
        assert!(matches!(err, CsrError::Malformed(_)), "{name}: {err}");
        assert_eq!(err.code(), "csr_malformed");
    }
}

#[test]
fn size_limit() {
    let big = vec![0x30; MAX_CSR_SIZE + 1];
    let err = parse_csr(&big).unwrap_err();
    assert_eq!(err, CsrError::TooLarge { size: MAX_CSR_SIZE + 1, max: MAX_CSR_SIZE });
    assert_eq!(err.code(), "csr_too_large");
    // A request with a huge (but legal) extension is refused on size alone.
    let huge = ec_csr(&p256_key(), &[(rcgen::DnType::CommonName, "x")], |p| {
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&[1, 2, 3], vec![0x04; MAX_CSR_SIZE])];
    });
    assert!(matches!(parse_csr(&huge), Err(CsrError::TooLarge { .. })));
}

#[test]
fn public_keys_from_spki() {
    let dir = tempfile::tempdir().unwrap();
    let key = ec_key_pem(dir.path(), "P-256");
    let spki = dir.path().join("p256.spki");
    openssl(&["pkey", "-in", s(&key), "-pubout", "-outform", "DER", "-out", s(&spki)]);
    let der = std::fs::read(&spki).unwrap();
    let pk = PublicKey::from_spki_der(&der).unwrap();
    assert_eq!(pk.key_type(), KeyType::EcP256);
    assert_eq!(pk.spki_der(), der.as_slice(), "canonical SPKI is what OpenSSL writes");
    // The compressed form of the same key is refused.
    let compressed = dir.path().join("p256c.spki");
    openssl(&[
        "pkey",
        "-in",
        s(&key),
        "-pubout",
        "-outform",
        "DER",
        "-ec_conv_form",
        "compressed",
        "-out",
        s(&compressed),
    ]);
    let err = PublicKey::from_spki_der(&std::fs::read(&compressed).unwrap()).unwrap_err();
    assert!(matches!(&err, CsrError::UnsupportedKey(m) if m.contains("uncompressed")), "{err}");
    assert!(matches!(PublicKey::from_spki_der(&der[..der.len() - 1]), Err(CsrError::Malformed(_))));
    assert!(matches!(PublicKey::from_spki_der(&[der.clone(), vec![0]].concat()), Err(CsrError::Malformed(_))));
}
