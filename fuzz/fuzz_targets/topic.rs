//! cargo-fuzz target `topic`: see `overlay_fuzz::topic`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::topic(data));
