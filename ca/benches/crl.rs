//! CRL build time at 10,000 and 100,000 entries, signed with an ECDSA P-256
//! software key (ring), against rcgen's CRL builder on the same entries.
//!
//! Run: `cargo bench -p kms-ca --bench crl` (optionally `-- <entries>...`).
//! Prints, per size: the median build time of `build_crl` (DER writing plus
//! one signature), the CRL size, the process's peak resident memory right
//! after those runs (the input entries included), then rcgen's median for
//! the same entries and the peak after it (and after parsing the CRL back).
//! `--only-ours` or `--only-rcgen` runs one builder, for its peak alone.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration as StdDuration, Instant};

use kms_ca::{
    CaError, DistinguishedNameSpec, DnAttribute, Issuer, KeyAlgorithm, RevocationReason, RevokedEntry, Signer,
};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use time::{Duration, OffsetDateTime};

struct SoftSigner(EcdsaKeyPair);

impl Signer for SoftSigner {
    fn algorithm(&self) -> KeyAlgorithm {
        KeyAlgorithm::EcdsaP256Sha256
    }

    fn public_key(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        self.0
            .sign(&SystemRandom::new(), message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| CaError::Signing(e.to_string()))
    }
}

/// `n` entries with random 16-byte serials, distinct times and a mix of reasons.
fn entries(n: usize, now: OffsetDateTime) -> Vec<RevokedEntry> {
    let reasons = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::AffiliationChanged,
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|i| {
            let mut serial = [0u8; 16];
            for chunk in serial.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_be_bytes());
            }
            serial[0] = (serial[0] & 0x7f) | 1;
            RevokedEntry {
                serial: serial.to_vec(),
                revoked_at: now - Duration::seconds(i as i64 * 37),
                reason: reasons[i % reasons.len()],
            }
        })
        .collect()
}

fn rcgen_reason(reason: RevocationReason) -> Option<rcgen::RevocationReason> {
    match reason {
        RevocationReason::KeyCompromise => Some(rcgen::RevocationReason::KeyCompromise),
        RevocationReason::Superseded => Some(rcgen::RevocationReason::Superseded),
        RevocationReason::CessationOfOperation => Some(rcgen::RevocationReason::CessationOfOperation),
        RevocationReason::AffiliationChanged => Some(rcgen::RevocationReason::AffiliationChanged),
        _ => None,
    }
}

fn median(mut times: Vec<StdDuration>) -> String {
    if times.is_empty() {
        return "-".into();
    }
    times.sort();
    format!("{:.1} ms", times[times.len() / 2].as_secs_f64() * 1e3)
}

fn peak_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| format!("{:.0} MiB", kb / 1024.0))
        .unwrap_or_else(|| "n/a".into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let do_ours = !args.iter().any(|a| a == "--only-rcgen");
    let do_rcgen = !args.iter().any(|a| a == "--only-ours");
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![10_000, 100_000] } else { sizes };

    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let signer = SoftSigner(EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap());
    let dn = DistinguishedNameSpec::new()
        .with(DnAttribute::Country, "CN")
        .with(DnAttribute::Organization, "Bench Transit")
        .with(DnAttribute::CommonName, "Bench Issuing CA");
    let ca = kms_ca::make_root(&signer, &dn, Duration::days(3650)).unwrap();
    let issuer = Issuer { signer: &signer, certificate_der: &ca.der };

    // rcgen's builder with its own software key and CA certificate.
    let rcgen_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut rcgen_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    rcgen_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    let rcgen_ca = rcgen_params.self_signed(&rcgen_key).unwrap();
    let rcgen_issuer = rcgen::Issuer::from_ca_cert_der(rcgen_ca.der(), &rcgen_key).unwrap();

    println!(
        "CRL build, ECDSA P-256 software signer, {} logical CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:>9}  {:>12}  {:>11}  {:>15}  {:>14}  {:>10}",
        "entries", "build_crl", "size", "peak RSS after", "rcgen builder", "peak RSS"
    );
    let now = OffsetDateTime::now_utc();
    for n in sizes {
        let revoked = entries(n, now);
        let runs = if n <= 10_000 { 11 } else { 5 };

        let mut ours = Vec::new();
        let mut der = Vec::new();
        for _ in 0..if do_ours { runs } else { 0 } {
            drop(std::mem::take(&mut der)); // one CRL alive at a time
            let start = Instant::now();
            der = kms_ca::build_crl(&issuer, 7, now, now + Duration::days(7), &revoked).unwrap();
            ours.push(start.elapsed());
        }
        let rss_after_ours = peak_rss();

        let mut theirs = Vec::new();
        for _ in 0..if do_rcgen { runs } else { 0 } {
            let start = Instant::now();
            let params = rcgen::CertificateRevocationListParams {
                this_update: now,
                next_update: now + Duration::days(7),
                crl_number: rcgen::SerialNumber::from(7u64),
                issuing_distribution_point: None,
                revoked_certs: revoked
                    .iter()
                    .map(|e| rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(&e.serial),
                        revocation_time: e.revoked_at,
                        reason_code: rcgen_reason(e.reason),
                        invalidity_date: None,
                    })
                    .collect(),
                key_identifier_method: rcgen::KeyIdMethod::Sha256,
            };
            let crl = params.signed_by(&rcgen_issuer).unwrap();
            std::hint::black_box(crl.der().len());
            theirs.push(start.elapsed());
        }

        if do_ours {
            // Sanity: every entry is in the CRL.
            use x509_parser::prelude::FromDer;
            let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der).unwrap();
            assert_eq!(parsed.iter_revoked_certificates().count(), n);
        }
        println!(
            "{n:>9}  {:>12}  {:>7} KiB  {:>15}  {:>14}  {:>10}",
            median(ours),
            der.len() / 1024,
            rss_after_ours,
            median(theirs),
            peak_rss()
        );
    }
}
