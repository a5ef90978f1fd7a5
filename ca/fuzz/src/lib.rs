//! Fuzz harness for kms-ca's parsers: CSRs (PEM or DER, then approval
//! against every shipped profile, then issuance of what was approved) and
//! certificate profiles (TOML). Any `Ok` or `Err` is fine; a panic, or an
//! `Ok` that breaks an invariant the rest of the CA relies on, is a bug.
//! Shared with `ca/tests/fuzz_smoke.rs`, which runs it briefly in every
//! `cargo test`. The real fuzzing: `cargo +nightly fuzz run csr` (or
//! `profile`) in `ca/fuzz`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use kms_ca::{
    CaError, CertProfile, CertProfiles, IssueContext, IssuedCertificate, Issuer, KeyAlgorithm, KeyUsage, ProfileKind,
    San, Signer,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use time::{Duration, OffsetDateTime};

/// The shipped profiles, as text.
pub const SHIPPED_PROFILES: [(&str, &str); 5] = [
    ("reader-sign", include_str!("../../../policies/certificates/reader-sign.toml")),
    ("reader-encrypt", include_str!("../../../policies/certificates/reader-encrypt.toml")),
    ("server-tls", include_str!("../../../policies/certificates/server-tls.toml")),
    ("client-tls", include_str!("../../../policies/certificates/client-tls.toml")),
    ("sub-ca", include_str!("../../../policies/certificates/sub-ca.toml")),
];

/// Outcome counters, in the order of [`STAT_NAMES`].
static STATS: [AtomicU64; 9] = [const { AtomicU64::new(0) }; 9];
pub const STAT_NAMES: [&str; 9] = [
    "csr_ok",
    "csr_malformed",
    "csr_bad_signature",
    "csr_other_error",
    "approved",
    "rejected",
    "issued",
    "profile_ok",
    "profile_error",
];

fn count(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
}

/// The counters so far.
pub fn stats() -> [u64; 9] {
    std::array::from_fn(|i| STATS[i].load(Ordering::Relaxed))
}

struct SoftSigner {
    key: EcdsaKeyPair,
}

impl Signer for SoftSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256Sha256
    }

    fn public_key(&self) -> &[u8] {
        self.key.public_key().as_ref()
    }

    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        self.key
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| CaError::Signing(e.to_string()))
    }
}

struct Env {
    profiles: Vec<CertProfile>,
    signer: SoftSigner,
    ca: IssuedCertificate,
    now: OffsetDateTime,
    requester: rcgen::KeyPair,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let profiles =
            SHIPPED_PROFILES.iter().map(|(name, text)| CertProfiles::parse_str(name, text).unwrap()).collect();
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let signer = SoftSigner { key };
        let dn = kms_ca::DistinguishedNameSpec::new().with(kms_ca::DnAttribute::CommonName, "fuzz CA");
        let ca = kms_ca::make_root(&signer, &dn, Duration::days(3650)).unwrap();
        let requester = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        Env { profiles, signer, ca, now: OffsetDateTime::now_utc(), requester }
    })
}

/// Parses `data` as a CSR; if it parses, approves it against every shipped
/// profile (with a context each profile accepts) and issues what was approved.
pub fn csr(data: &[u8]) {
    let env = env();
    let csr = match kms_ca::parse_csr(data) {
        Ok(csr) => csr,
        Err(e) => {
            assert!(!e.to_string().is_empty() && !e.code().is_empty());
            count(match e {
                kms_ca::CsrError::Malformed(_) => 1,
                kms_ca::CsrError::BadSignature => 2,
                _ => 3,
            });
            return;
        }
    };
    count(0);
    // A parsed request re-parses from its own DER to the same thing, and its
    // key round-trips through its SubjectPublicKeyInfo.
    let again = kms_ca::parse_csr(csr.der()).expect("a parsed CSR re-parses");
    assert_eq!(again.public_key(), csr.public_key());
    assert_eq!(kms_ca::PublicKey::from_spki_der(csr.public_key().spki_der()).as_ref(), Ok(csr.public_key()));

    for profile in &env.profiles {
        let mut ctx = IssueContext::new(env.now, env.ca.not_after);
        ctx.role = profile.identity.roles.first().cloned();
        ctx.tenant = (profile.identity.tenant != kms_ca::TenantRule::Forbidden).then(|| "city-3301".to_owned());
        let approval = match kms_ca::approve(profile, &csr, &ctx) {
            Ok(a) => a,
            Err(r) => {
                assert!(!r.reason.code().is_empty() && !r.message.is_empty());
                count(5);
                continue;
            }
        };
        count(4);
        // What the profile decides, whatever the CSR asked.
        assert!(profile.key_types.contains(&approval.public_key().key_type()));
        assert_eq!(approval.key_usage(), profile.key_usage_for(approval.public_key().key_type()).as_slice());
        if profile.kind == ProfileKind::EndEntity {
            assert!(!approval.key_usage().contains(&KeyUsage::KeyCertSign));
        }
        let identity = approval.sans().iter().filter(|s| matches!(s, San::Uri(u) if u.starts_with("urn:kms:")));
        assert_eq!(identity.count(), usize::from(ctx.role.is_some()) + usize::from(ctx.tenant.is_some()));
        assert!(approval.sans().len() <= profile.san.max + 2);
        assert!(approval.not_after() - approval.not_before() <= profile.max_validity + kms_ca::CLOCK_SKEW);

        let issuer = Issuer { signer: &env.signer, certificate_der: &env.ca.der };
        match kms_ca::issue_certificate(&issuer, profile, &approval, &[0x42; 16], Some("http://crl.example/ca.crl")) {
            Ok(cert) => {
                count(6);
                assert_eq!(cert.serial, vec![0x42; 16]);
                assert_eq!(cert.not_after, approval.not_after());
            }
            // rcgen may refuse a name it cannot encode; that is a clean refusal.
            Err(CaError::Encoding(_) | CaError::InvalidField { .. }) => {}
            Err(e) => panic!("issuing an approved request failed: {e}"),
        }
    }
}

/// Reads fuzz input as a stream of small choices.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> usize {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                usize::from(*b)
            }
            None => 0,
        }
    }

    fn string(&mut self) -> String {
        let len = self.byte() % 48;
        let (head, rest) = self.0.split_at(len.min(self.0.len()));
        self.0 = rest;
        String::from_utf8_lossy(head).into_owned()
    }
}

/// Builds a correctly signed CSR whose subject, names and extensions come
/// from `data`, then runs it through [`csr`]: mutated CSRs rarely keep a
/// valid signature, so this is how the fuzzer reaches approval and issuance.
pub fn request(data: &[u8]) {
    use rcgen::{DnType, DnValue, SanType};
    let env = env();
    let mut c = Choices(data);
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    for _ in 0..c.byte() % 6 {
        let ty = match c.byte() % 8 {
            0 => DnType::CommonName,
            1 => DnType::OrganizationName,
            2 => DnType::OrganizationalUnitName,
            3 => DnType::CountryName,
            4 => DnType::LocalityName,
            5 => DnType::StateOrProvinceName,
            6 => DnType::CustomDnType(vec![2, 5, 4, 5]),
            _ => DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
        };
        let text = c.string();
        // (No `?` in a PrintableString: rcgen's writer panics on it when
        // building the request; the CA itself refuses it.)
        let value = match (c.byte() % 2, rcgen::string::PrintableString::try_from(text.as_str())) {
            (0, Ok(p)) if !text.contains('?') => DnValue::PrintableString(p),
            _ => DnValue::Utf8String(text),
        };
        dn.push(ty, value);
    }
    params.distinguished_name = dn;
    for _ in 0..c.byte() % 5 {
        let kind = c.byte() % 5;
        let text = c.string();
        let san = match kind {
            0 => text.try_into().ok().map(SanType::DnsName),
            1 => Some(SanType::IpAddress(std::net::IpAddr::from([c.byte() as u8, c.byte() as u8, 0, 1]))),
            2 => text.try_into().ok().map(SanType::URI),
            3 => text.try_into().ok().map(SanType::Rfc822Name),
            _ => Some(SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 311, 20, 2, 3], text.into()))),
        };
        params.subject_alt_names.extend(san);
    }
    params.is_ca = match c.byte() % 4 {
        0 => rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(c.byte() as u8)),
        1 => rcgen::IsCa::ExplicitNoCa,
        _ => rcgen::IsCa::NoCa,
    };
    let usages = [
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::ContentCommitment,
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::KeyAgreement,
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let bits = c.byte();
    params.key_usages = usages.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, u)| *u).collect();
    let purposes = [
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::Any,
    ];
    let bits = c.byte();
    params.extended_key_usages =
        purposes.iter().enumerate().filter(|(i, _)| bits & (1 << i) != 0).map(|(_, p)| p.clone()).collect();
    if c.byte() % 3 == 0 {
        let arc = c.byte() as u64;
        params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(&[1, 2, 3, arc], vec![5, 0])];
    }
    if let Ok(request) = params.serialize_request(&env.requester) {
        csr(request.der());
    }
}

/// Parses `data` (lossily as UTF-8) as a certificate profile.
pub fn profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match CertProfiles::parse_str("fuzz", &text) {
        Ok(p) => {
            count(7);
            assert!(p.default_validity <= p.max_validity && p.default_validity > Duration::ZERO);
            assert!(!p.key_types.is_empty());
            for k in &p.key_types {
                assert!(!p.key_usage_for(*k).is_empty(), "{k} gets no key usage");
            }
            assert_eq!(p.kind.is_ca(), p.key_usage.contains(&KeyUsage::KeyCertSign));
            assert!(p.subject.required.iter().all(|a| p.subject.allowed.contains(a)));
        }
        Err(e) => {
            count(8);
            assert!(e.line <= text.lines().count() + 1, "{e}\n{text}");
            assert!(e.to_string().starts_with("fuzz.toml"), "{e}\n{text}");
            assert!(!e.field.is_empty() && !e.reason.is_empty(), "{e:?}\n{text:?}");
        }
    }
}
