//! Fuzz target: certificate profile loading (see `src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_ca_fuzz::profile(data);
});
