//! The shipped certificate profiles, and the loader's errors as an
//! operator sees them (file, line, field).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use kms_ca::{
    CertProfiles, DnAttribute, ExtendedKeyUsage, KeyGeneration, KeyType, KeyUsage, ProfileKind, SanKind, TenantRule,
};
use time::Duration;

#[test]
fn shipped_profiles_load() {
    let all = shipped_profiles();
    assert_eq!(
        all.names().collect::<Vec<_>>(),
        vec!["client-tls", "reader-encrypt", "reader-sign", "server-tls", "sub-ca"]
    );
    assert_eq!(all.iter().count(), 5);

    let reader = all.get("reader-sign").unwrap();
    assert_eq!(reader.kind, ProfileKind::EndEntity);
    assert!(reader.enrollment);
    assert_eq!(reader.key_generation, KeyGeneration::Requester);
    assert_eq!(reader.identity.roles, vec!["reader".to_owned()]);
    assert_eq!(reader.identity.default_role.as_deref(), Some("reader"));
    assert_eq!(reader.identity.tenant, TenantRule::Required);
    assert_eq!(reader.extended_key_usage, vec![ExtendedKeyUsage::ClientAuth]);
    assert!(reader.san.types.is_empty());

    let enc = all.get("reader-encrypt").unwrap();
    assert_eq!(enc.key_generation, KeyGeneration::Service);
    assert_eq!(enc.key_usage_for(KeyType::EcP384), vec![KeyUsage::KeyAgreement]);
    assert_eq!(enc.key_usage_for(KeyType::Rsa3072), vec![KeyUsage::KeyEncipherment]);

    let client = all.get("client-tls").unwrap();
    assert_eq!(client.identity.roles, ["operator", "auditor", "security_officer", "issuance_partner"]);
    assert_eq!(client.identity.default_role, None);
    assert!(!client.enrollment);

    let server = all.get("server-tls").unwrap();
    assert_eq!(server.san.types, vec![SanKind::Dns, SanKind::Ip]);
    assert_eq!((server.san.min, server.san.max), (1, 16));
    assert_eq!(server.max_validity, Duration::days(397));
    assert_eq!(server.identity.tenant, TenantRule::Forbidden);

    let sub = all.get("sub-ca").unwrap();
    assert_eq!(sub.kind, ProfileKind::SubCa { path_len: 0 });
    assert!(sub.key_usage.contains(&KeyUsage::KeyCertSign) && sub.key_usage.contains(&KeyUsage::CrlSign));
    assert_eq!(sub.name_constraints.permitted_dns, vec!["transit.example".to_owned()]);
    assert_eq!(sub.subject.required, vec![DnAttribute::CommonName, DnAttribute::Organization]);

    // No shipped profile allows RSA below 2048 (the type does not even exist) or SM2 yet.
    for p in all.iter() {
        assert!(p.key_types.iter().all(|k| !k.is_rsa() || k.bits() >= 2048));
        assert!(!p.key_types.contains(&KeyType::Sm2));
        assert!(p.default_validity <= p.max_validity);
    }
}

#[test]
fn load_dir_reports_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["client-tls", "server-tls"] {
        std::fs::copy(shipped_dir().join(format!("{name}.toml")), dir.path().join(format!("{name}.toml"))).unwrap();
    }
    std::fs::write(dir.path().join("README.md"), "not a profile").unwrap();
    assert_eq!(CertProfiles::load_dir(dir.path()).unwrap().len(), 2);

    let text = std::fs::read_to_string(shipped_dir().join("client-tls.toml")).unwrap();
    let bad = dir.path().join("ops-tls.toml");
    let cases = [
        ("\"security_officer\"", "\"Security Officer\"", "identity.roles", "Security Officer"),
        (
            "key_usage = [\"digitalSignature\"]",
            "key_usage = [\"digitalSignature\", \"keyCertSign\"]",
            "key_usage",
            "only for CA",
        ),
        ("[\"clientAuth\"]", "[\"clientAuthentication\"]", "extended_key_usage", "clientAuthentication"),
        ("\"rsa-3072\"", "\"rsa-1024\"", "key_types", "rsa-1024"),
        ("max_length = 64", "max_length = 64\nmax_len = 3", "subject.max_len", "unknown field"),
        ("enrollment = false", "enrollment = \"no\"", "enrollment", "invalid type"),
    ];
    for (from, to, field, reason) in cases {
        assert!(text.contains(from), "{from}");
        let edited = text.replacen(from, to, 1);
        std::fs::write(&bad, &edited).unwrap();
        let err = CertProfiles::load_dir(dir.path()).unwrap_err();
        let line = edited[..edited.find(to.lines().last().unwrap()).unwrap()].matches('\n').count() + 1;
        assert_eq!(err.file, bad);
        assert_eq!(err.field, field, "{err}");
        assert_eq!(err.line, line, "{err}");
        assert!(err.reason.contains(reason), "{err}");
        assert_eq!(err.to_string(), format!("{}:{line}: {field}: {}", bad.display(), err.reason));
    }
    std::fs::write(&bad, "kind = [").unwrap();
    let err = CertProfiles::load_dir(dir.path()).unwrap_err();
    assert_eq!((err.file.as_path(), err.line), (bad.as_path(), 1), "{err}");

    let missing = dir.path().join("nowhere");
    let err = CertProfiles::load_dir(&missing).unwrap_err();
    assert_eq!((err.line, err.field.as_str()), (0, "file"), "{err}");
    assert!(err.to_string().starts_with(&format!("{}: file: ", missing.display())), "{err}");
}
