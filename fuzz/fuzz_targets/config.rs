//! cargo-fuzz target `config`: see `overlay_fuzz::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::config(data));
