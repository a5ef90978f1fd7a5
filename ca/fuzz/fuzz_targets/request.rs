//! Fuzz target: signed CSRs built from the input, through approval and
//! issuance (see `src/lib.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    kms_ca_fuzz::request(data);
});
