//! cargo-fuzz target `session`: see `overlay_fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::session(data));
