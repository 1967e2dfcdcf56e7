//! cargo-fuzz target `macaroon`: see `overlay_fuzz::macaroon`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::macaroon(data));
