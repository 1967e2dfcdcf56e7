//! cargo-fuzz target `hello`: see `overlay_fuzz::hello`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| overlay_fuzz::hello(data));
