//! cargo-fuzz target `frame`: see `overlay_fuzz::frame`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::frame(data));
