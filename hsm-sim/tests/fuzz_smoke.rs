//! A short smoke run of the fuzz harness (`fuzz/src/lib.rs`) on
//! pseudo-random inputs, so the harness compiles and the module survives it
//! in every `cargo test`. The real fuzzing: `cargo +nightly fuzz run ffi_templates`.
#![allow(unsafe_code, missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../fuzz/src/lib.rs"]
mod harness;

#[test]
fn fuzz_harness_smoke() {
    let iterations: u64 = std::env::var("HSM_SIM_FUZZ_SMOKE").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let seed: u64 = std::env::var("HSM_SIM_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ seed.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    for n in 0..iterations {
        let len = (n % 200) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        harness::run(&data);
    }
    let stats = harness::stats();
    eprintln!("successful calls per operation kind: {stats:?}");
    // Random bytes must reach past argument checking for most operations.
    assert!(stats.iter().filter(|n| **n > 0).count() >= 6, "{stats:?}");
}
