//! Approval: a CSR can ask, the profile decides. One test per rejection
//! reason, plus what an approval contains when it succeeds.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::*;
use kms_ca::{
    Approval, CertProfile, CertProfiles, Csr, DnAttribute, ExtendedKeyUsage, IssueContext, KeyUsage, PublicKey,
    RejectReason, Rejection, San, approve, approve_generated, parse_csr,
};
use rcgen::{CustomExtension, DnType, SanType};
use time::{Duration, OffsetDateTime};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ctx() -> IssueContext {
    IssueContext::new(now(), now() + Duration::days(3650))
}

fn reader_ctx() -> IssueContext {
    let mut c = ctx();
    c.tenant = Some("city-3301".into());
    c
}

fn csr(subject: &[(DnType, &str)], edit: impl FnOnce(&mut rcgen::CertificateParams)) -> Csr {
    parse_csr(&ec_csr(&p256_key(), subject, edit)).unwrap()
}

fn reader() -> Csr {
    csr(&[(DnType::CommonName, "RDR-1")], |_| {})
}

#[track_caller]
fn rejected(result: Result<Approval, Rejection>, reason: RejectReason, mentions: &str) -> Rejection {
    let r = match result {
        Ok(a) => panic!("approved, expected {reason}: {a:?}"),
        Err(r) => r,
    };
    assert_eq!(r.reason, reason, "{r}");
    assert!(r.message.contains(mentions), "{r:?} should mention {mentions:?}");
    assert!(r.to_string().starts_with(reason.code()), "{r}");
    r
}

fn custom(text: &str) -> CertProfile {
    CertProfiles::parse_str("custom", text).unwrap()
}

#[test]
fn approval_is_what_the_profile_says() {
    let profile = profile("reader-sign");
    // The CSR asks for a subset of the usages; the certificate gets the profile's.
    let csr = csr(&[(DnType::CommonName, "RDR-1"), (DnType::CountryName, "CN")], |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.is_ca = rcgen::IsCa::ExplicitNoCa;
    });
    let mut ctx = reader_ctx();
    ctx.bound_subject = Some("RDR-1".into());
    let a = approve(&profile, &csr, &ctx).unwrap();
    assert_eq!(a.profile(), "reader-sign");
    assert_eq!(a.subject().to_string(), "CN=RDR-1,C=CN");
    assert_eq!(a.role(), Some("reader"));
    assert_eq!(a.tenant(), Some("city-3301"));
    assert_eq!(a.sans(), &[San::Uri("urn:kms:role:reader".into()), San::Uri("urn:kms:tenant:city-3301".into())]);
    assert_eq!(a.key_usage(), &[KeyUsage::DigitalSignature]);
    assert_eq!(a.extended_key_usage(), &[ExtendedKeyUsage::ClientAuth]);
    assert_eq!(a.public_key(), csr.public_key());
    let now = ctx.now.replace_nanosecond(0).unwrap();
    assert_eq!(a.not_before(), now - kms_ca::CLOCK_SKEW);
    assert_eq!(a.not_after(), now + profile.default_validity);
}

#[test]
fn ca_requested() {
    let asks_ca =
        csr(&[(DnType::CommonName, "RDR-1")], |p| p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained));
    rejected(approve(&profile("reader-sign"), &asks_ca, &reader_ctx()), RejectReason::CaRequested, "CA:TRUE");
    // Even a CSR that also asks for a forbidden extension is reported as asking to be a CA.
    let both = csr(&[(DnType::CommonName, "RDR-1")], |p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])];
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    });
    rejected(approve(&profile("reader-sign"), &both, &reader_ctx()), RejectReason::CaRequested, "reader-sign");
    // A sub-CA profile takes it.
    let sub = csr(&[(DnType::CommonName, "Partner CA"), (DnType::OrganizationName, "Partner")], |p| {
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(5));
    });
    approve(&profile("sub-ca"), &sub, &ctx()).unwrap();
}

#[test]
fn validity_rules() {
    let profile = profile("reader-sign");
    let mut c = reader_ctx();
    c.requested_validity = Some(Duration::days(1096));
    rejected(approve(&profile, &reader(), &c), RejectReason::ValidityTooLong, "1096 days");
    c.requested_validity = Some(Duration::days(1095));
    approve(&profile, &reader(), &c).unwrap();
    c.requested_validity = Some(Duration::ZERO);
    rejected(approve(&profile, &reader(), &c), RejectReason::ValidityInvalid, "not positive");
    // Clamped (not rejected) to the issuer's notAfter.
    c.requested_validity = Some(Duration::days(365));
    c.issuer_not_after = c.now + Duration::days(10);
    let a = approve(&profile, &reader(), &c).unwrap();
    assert_eq!(a.not_after(), c.issuer_not_after.replace_nanosecond(0).unwrap());
    c.issuer_not_after = c.now - Duration::seconds(1);
    rejected(approve(&profile, &reader(), &c), RejectReason::IssuerExpired, "expired");
}

#[test]
fn forbidden_extension_named_by_oid() {
    let with_content = |oid: &[u64], content: Vec<u8>| {
        csr(&[(DnType::CommonName, "RDR-1")], |p| {
            p.custom_extensions = vec![CustomExtension::from_oid_content(oid, content)];
        })
    };
    let with = |oid: &[u64]| with_content(oid, vec![5, 0]);
    rejected(
        approve(&profile("reader-sign"), &with(&[1, 2, 3, 4]), &reader_ctx()),
        RejectReason::ForbiddenExtension,
        "1.2.3.4",
    );
    // nameConstraints { permittedSubtrees { dNSName "x.example" } }
    let nc =
        with_content(&[2, 5, 29, 30], [&[0x30, 0x0f, 0xa0, 0x0d, 0x30, 0x0b, 0x82, 0x09][..], b"x.example"].concat());
    rejected(
        approve(&profile("reader-sign"), &nc, &reader_ctx()),
        RejectReason::ForbiddenExtension,
        "2.5.29.30 (nameConstraints)",
    );
    // A profile can tolerate (and drop) an extension.
    let tolerant = custom(
        &std::fs::read_to_string(shipped_dir().join("reader-sign.toml"))
            .unwrap()
            .replace("enrollment = true", "enrollment = true\ntolerated_extensions = [\"1.2.3.4\"]"),
    );
    approve(&tolerant, &with(&[1, 2, 3, 4]), &reader_ctx()).unwrap();
}

#[test]
fn usages_only_as_a_subset() {
    let ku = csr(&[(DnType::CommonName, "RDR-1")], |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature, rcgen::KeyUsagePurpose::KeyCertSign];
    });
    rejected(approve(&profile("reader-sign"), &ku, &reader_ctx()), RejectReason::KeyUsageNotAllowed, "keyCertSign");
    // keyEncipherment is not issued for an EC key even where the profile lists it.
    let ke = csr(&[(DnType::CommonName, "kms.transit.example")], |p| {
        p.key_usages = vec![rcgen::KeyUsagePurpose::KeyEncipherment];
        p.subject_alt_names = vec![SanType::DnsName("kms.transit.example".try_into().unwrap())];
    });
    rejected(approve(&profile("server-tls"), &ke, &ctx()), RejectReason::KeyUsageNotAllowed, "ec-p256");
    let eku = csr(&[(DnType::CommonName, "RDR-1")], |p| {
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    });
    rejected(
        approve(&profile("reader-sign"), &eku, &reader_ctx()),
        RejectReason::ExtendedKeyUsageNotAllowed,
        "serverAuth",
    );
}

#[test]
fn subject_rules() {
    let client = profile("client-tls");
    let mut c = ctx();
    c.role = Some("operator".into());
    c.tenant = Some("city-3301".into());
    approve(&client, &csr(&[(DnType::CommonName, "alice"), (DnType::OrganizationName, "杭州")], |_| {}), &c).unwrap();
    let long = "a".repeat(65);
    let cases: Vec<(Vec<(DnType, &str)>, &str)> = vec![
        (vec![(DnType::CommonName, "alice"), (DnType::LocalityName, "Hangzhou")], "subject attribute L is not allowed"),
        (vec![(DnType::OrganizationName, "Transit")], "CN is required"),
        (vec![(DnType::CommonName, &long)], "65 characters"),
        (vec![(DnType::CommonName, "bell\u{7}")], "outside the allowed set"),
        (
            vec![
                (DnType::CommonName, "alice"),
                (DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]), "a@b.example"),
            ],
            "1.2.840.113549.1.9.1",
        ),
    ];
    for (subject, mention) in cases {
        rejected(approve(&client, &csr(&subject, |_| {}), &c), RejectReason::SubjectNotAllowed, mention);
    }
    let reader_profile = profile("reader-sign");
    let mut rc = reader_ctx();
    rc.role = None;
    for (subject, mention) in [
        (vec![(DnType::CommonName, "RDR-1"), (DnType::CountryName, "China")], "two-letter"),
        (vec![(DnType::CommonName, "RDR-1"), (DnType::CustomDnType(vec![2, 5, 4, 5]), "RDR_1")], "serialNumber"),
    ] {
        rejected(approve(&reader_profile, &csr(&subject, |_| {}), &rc), RejectReason::SubjectNotAllowed, mention);
    }
    // A printable-only profile.
    let printable = custom(
        &std::fs::read_to_string(shipped_dir().join("reader-sign.toml"))
            .unwrap()
            .replace("charset = \"utf8\"", "charset = \"printable\""),
    );
    rejected(
        approve(&printable, &csr(&[(DnType::CommonName, "读卡器")], |_| {}), &rc),
        RejectReason::SubjectNotAllowed,
        "CN",
    );
}

#[test]
fn san_rules() {
    // Readers get no requested names at all.
    let dns = csr(&[(DnType::CommonName, "RDR-1")], |p| {
        p.subject_alt_names = vec![SanType::DnsName("rdr-1.transit.example".try_into().unwrap())];
    });
    rejected(
        approve(&profile("reader-sign"), &dns, &reader_ctx()),
        RejectReason::SanNotAllowed,
        "dns names are not allowed",
    );

    let server = profile("server-tls");
    let names = |list: &[&str]| {
        csr(&[(DnType::CommonName, "x")], |p| {
            p.subject_alt_names = list.iter().map(|n| SanType::DnsName((*n).try_into().unwrap())).collect();
        })
    };
    rejected(approve(&server, &names(&[]), &ctx()), RejectReason::SanNotAllowed, "at least 1");
    let many: Vec<String> = (0..17).map(|i| format!("h{i}.transit.example")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    rejected(approve(&server, &names(&many), &ctx()), RejectReason::SanNotAllowed, "at most 16");
    rejected(approve(&server, &names(&["*.transit.example"]), &ctx()), RejectReason::SanNotAllowed, "wildcard");
    rejected(approve(&server, &names(&["bad_name.example"]), &ctx()), RejectReason::SanNotAllowed, "bad_name.example");
    // Operator names are checked like requested ones.
    let mut c = ctx();
    c.extra_sans = vec![San::Uri("https://kms.transit.example".into())];
    rejected(approve(&server, &names(&["kms.transit.example"]), &c), RejectReason::SanNotAllowed, "uri names");

    // A profile restricted to a suffix, allowing URIs and e-mail.
    let text = std::fs::read_to_string(shipped_dir().join("server-tls.toml"))
        .unwrap()
        .replace("types = [\"dns\", \"ip\"]", "types = [\"dns\", \"ip\", \"uri\", \"email\"]")
        .replace("dns_suffixes = []", "dns_suffixes = [\"transit.example\"]");
    let restricted = custom(&text);
    approve(&restricted, &names(&["transit.example", "a.b.transit.example"]), &ctx()).unwrap();
    rejected(
        approve(&restricted, &names(&["transit.example.evil.com"]), &ctx()),
        RejectReason::SanNotAllowed,
        "suffix",
    );
    rejected(approve(&restricted, &names(&["eviltransit.example"]), &ctx()), RejectReason::SanNotAllowed, "suffix");
    // The CA's own identity URIs can never be requested.
    let role = csr(&[(DnType::CommonName, "x")], |p| {
        p.subject_alt_names = vec![SanType::URI("urn:kms:role:security_officer".try_into().unwrap())];
    });
    rejected(approve(&restricted, &role, &ctx()), RejectReason::SanNotAllowed, "set by the CA");
    let mut c = ctx();
    c.extra_sans = vec![San::Uri("URN:KMS:tenant:other".into())];
    rejected(approve(&restricted, &names(&["transit.example"]), &c), RejectReason::SanNotAllowed, "set by the CA");
    let odd = csr(&[(DnType::CommonName, "x")], |p| {
        p.subject_alt_names = vec![SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], "upn@x".into()))];
    });
    rejected(approve(&restricted, &odd, &ctx()), RejectReason::SanNotAllowed, "never issued");
    let mail = csr(&[(DnType::CommonName, "x")], |p| {
        p.subject_alt_names = vec![SanType::Rfc822Name("not-an-address".try_into().unwrap())];
    });
    rejected(approve(&restricted, &mail, &ctx()), RejectReason::SanNotAllowed, "e-mail");
}

#[test]
fn key_type_not_allowed() {
    let p384_only = custom(
        &std::fs::read_to_string(shipped_dir().join("reader-sign.toml"))
            .unwrap()
            .replace("key_types = [\"ec-p256\", \"ec-p384\", \"rsa-2048\", \"rsa-3072\"]", "key_types = [\"ec-p384\"]"),
    );
    rejected(approve(&p384_only, &reader(), &reader_ctx()), RejectReason::KeyTypeNotAllowed, "ec-p256");
}

#[test]
fn enrollment_binding() {
    let profile = profile("reader-sign");
    let mut c = reader_ctx();
    c.bound_subject = Some("RDR-2".into());
    rejected(approve(&profile, &reader(), &c), RejectReason::SubjectMismatch, "RDR-2");
    // serialNumber may carry the binding instead of CN.
    let by_serial = csr(&[(DnType::CommonName, "Gate 4"), (DnType::CustomDnType(vec![2, 5, 4, 5]), "RDR-2")], |_| {});
    approve(&profile, &by_serial, &c).unwrap();
    // Operator profiles cannot be reached with an enrollment token.
    let mut op = c.clone();
    op.role = Some("operator".into());
    let alice = csr(&[(DnType::CommonName, "RDR-2")], |_| {});
    rejected(approve(&common::profile("client-tls"), &alice, &op), RejectReason::EnrollmentNotAllowed, "client-tls");
}

#[test]
fn roles_and_tenants() {
    let client = profile("client-tls");
    let alice = csr(&[(DnType::CommonName, "alice")], |_| {});
    let mut c = ctx();
    c.tenant = Some("city-3301".into());
    rejected(approve(&client, &alice, &c), RejectReason::RoleRequired, "operator");
    c.role = Some("reader".into());
    rejected(approve(&client, &alice, &c), RejectReason::RoleNotAllowed, "\"reader\"");
    for role in ["operator", "auditor", "security_officer", "issuance_partner"] {
        c.role = Some(role.into());
        let a = approve(&client, &alice, &c).unwrap();
        assert!(a.sans().contains(&San::Uri(format!("urn:kms:role:{role}"))));
    }
    c.tenant = None;
    rejected(approve(&client, &alice, &c), RejectReason::TenantRequired, "tenant");
    c.tenant = Some("City 3301".into());
    rejected(approve(&client, &alice, &c), RejectReason::TenantInvalid, "City 3301");

    // Readers cannot be given another role.
    let mut rc = reader_ctx();
    rc.role = Some("operator".into());
    rejected(approve(&profile("reader-sign"), &reader(), &rc), RejectReason::RoleNotAllowed, "operator");

    // Server certificates carry neither.
    let server = profile("server-tls");
    let host = csr(&[(DnType::CommonName, "h")], |p| {
        p.subject_alt_names = vec![SanType::DnsName("h.transit.example".try_into().unwrap())];
    });
    let mut sc = ctx();
    sc.role = Some("operator".into());
    rejected(approve(&server, &host, &sc), RejectReason::RoleNotAllowed, "sets no role");
    sc.role = None;
    sc.tenant = Some("city-3301".into());
    rejected(approve(&server, &host, &sc), RejectReason::TenantNotAllowed, "sets no tenant");
}

#[test]
fn key_source_and_generated_keys() {
    let sign = profile("reader-sign");
    let enc = profile("reader-encrypt");
    rejected(approve(&enc, &reader(), &reader_ctx()), RejectReason::KeySourceMismatch, "service generates");
    let signing = approve(&sign, &reader(), &reader_ctx()).unwrap();
    let generated = p256_key();
    let key = PublicKey::from_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&generated)).unwrap();
    rejected(approve_generated(&sign, &signing, key.clone(), &reader_ctx()), RejectReason::KeySourceMismatch, "CSR");
    let a = approve_generated(&enc, &signing, key.clone(), &reader_ctx()).unwrap();
    assert_eq!(a.subject(), signing.subject());
    assert_eq!(a.public_key(), &key);
    assert_eq!(a.key_usage(), &[KeyUsage::KeyAgreement]);
    assert_eq!(a.sans(), signing.sans(), "identity URIs are written once, from the context");
    // The encryption certificate's binding is checked again.
    let mut other = reader_ctx();
    other.bound_subject = Some("RDR-9".into());
    rejected(approve_generated(&enc, &signing, key, &other), RejectReason::SubjectMismatch, "RDR-9");
    assert_eq!(signing.subject().get(DnAttribute::CommonName), Some("RDR-1"));
}

#[test]
fn reason_codes_are_stable_and_distinct() {
    let all = [
        (RejectReason::CaRequested, "ca_requested"),
        (RejectReason::ValidityTooLong, "validity_too_long"),
        (RejectReason::ValidityInvalid, "validity_invalid"),
        (RejectReason::IssuerExpired, "issuer_expired"),
        (RejectReason::ForbiddenExtension, "forbidden_extension"),
        (RejectReason::KeyUsageNotAllowed, "key_usage_not_allowed"),
        (RejectReason::ExtendedKeyUsageNotAllowed, "extended_key_usage_not_allowed"),
        (RejectReason::SubjectNotAllowed, "subject_not_allowed"),
        (RejectReason::SanNotAllowed, "san_not_allowed"),
        (RejectReason::KeyTypeNotAllowed, "key_type_not_allowed"),
        (RejectReason::SubjectMismatch, "subject_mismatch"),
        (RejectReason::EnrollmentNotAllowed, "enrollment_not_allowed"),
        (RejectReason::RoleNotAllowed, "role_not_allowed"),
        (RejectReason::RoleRequired, "role_required"),
        (RejectReason::TenantRequired, "tenant_required"),
        (RejectReason::TenantNotAllowed, "tenant_not_allowed"),
        (RejectReason::TenantInvalid, "tenant_invalid"),
        (RejectReason::KeySourceMismatch, "key_source_mismatch"),
    ];
    let mut seen = HashSet::new();
    for (reason, code) in all {
        assert_eq!(reason.code(), code);
        assert!(seen.insert(code));
    }
}
