//! A short smoke run of the fuzz harness (`fuzz/src/lib.rs`) in every
//! `cargo test`: deterministic pseudo-random bytes, and mutations of valid
//! CSRs (`fuzz/seeds/csr`) and of the shipped profiles, and signed CSRs
//! built from random choices. The real fuzzing: `cargo +nightly fuzz run
//! csr` / `request` / `profile` in `ca/fuzz`.
//! `KMS_CA_FUZZ_SMOKE=<iterations>` and `KMS_CA_FUZZ_SEED=<n>` change the run.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 24) as u8).collect()
    }
}

/// One structural or byte-level mutation of `input`.
fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        let at = rng.below(v.len());
        match rng.below(7) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = (rng.next() >> 8) as u8,
            2 => v.truncate(at),
            3 => {
                let len = 1 + rng.below(8);
                let extra = rng.bytes(len);
                v.splice(at..at, extra);
            }
            4 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            // Interesting DER bytes: lengths, tags, 0x80 / 0xff.
            5 if !v.is_empty() => v[at] = [0x00, 0x01, 0x30, 0x7f, 0x80, 0x81, 0x82, 0xff][rng.below(8)],
            _ => {
                // Splice a chunk of itself elsewhere (duplicated fields, lines).
                if v.len() > 2 {
                    let from = rng.below(v.len() - 1);
                    let len = 1 + rng.below((v.len() - from).min(64));
                    let chunk = v[from..from + len].to_vec();
                    v.splice(at..at, chunk);
                }
            }
        }
    }
    v
}

/// A `harness::request` input that the reader and client profiles approve:
/// one attribute (CN, 5 bytes "RDR-1", PrintableString), no SANs, not a
/// CA, no usages asked, no extra extension.
const REQUEST_SEED: &[u8] = &[1, 0, 5, b'R', b'D', b'R', b'-', b'1', 0, 0, 2, 0, 0, 1];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn fuzz_harness_smoke() {
    let iterations = env_u64("KMS_CA_FUZZ_SMOKE", 2000);
    let seed = env_u64("KMS_CA_FUZZ_SEED", 0);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93) | 1);

    let seeds_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/csr");
    let mut csr_seeds: Vec<Vec<u8>> =
        std::fs::read_dir(&seeds_dir).unwrap().map(|e| std::fs::read(e.unwrap().path()).unwrap()).collect();
    csr_seeds.sort();
    assert!(csr_seeds.len() >= 4);
    let profile_seeds: Vec<&[u8]> = harness::SHIPPED_PROFILES.iter().map(|(_, t)| t.as_bytes()).collect();

    for seed in &csr_seeds {
        harness::csr(seed);
    }
    for seed in &profile_seeds {
        harness::profile(seed);
    }
    harness::request(REQUEST_SEED);
    for n in 0..iterations {
        let random = rng.bytes((n % 300) as usize);
        harness::csr(&random);
        harness::profile(&random);
        if n % 4 == 0 {
            harness::request(&random);
            harness::request(&mutate(&mut rng, REQUEST_SEED));
        }
        let csr_seed = &csr_seeds[rng.below(csr_seeds.len())];
        harness::csr(&mutate(&mut rng, csr_seed));
        let profile_seed = profile_seeds[rng.below(profile_seeds.len())];
        harness::profile(&mutate(&mut rng, profile_seed));
    }

    let stats = harness::stats();
    let named: Vec<String> = harness::STAT_NAMES.iter().zip(stats).map(|(n, c)| format!("{n}={c}")).collect();
    eprintln!("fuzz smoke: {}", named.join(" "));
    let get = |name: &str| stats[harness::STAT_NAMES.iter().position(|n| *n == name).unwrap()];
    // The mutations reach every outcome: parsed, malformed, bad signature,
    // approved, rejected, issued; profiles both load and fail.
    for name in [
        "csr_ok",
        "csr_malformed",
        "csr_bad_signature",
        "approved",
        "rejected",
        "issued",
        "profile_ok",
        "profile_error",
    ] {
        assert!(get(name) > 0, "no {name}: {named:?}");
    }
}
