//! Fuzz target: attribute templates and mechanism parameters through the
//! C ABI (see `src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hsm_sim_fuzz::run(data);
});
