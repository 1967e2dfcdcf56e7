//! Replays every committed corpus file (fuzz/corpus/<target>/) through its
//! target on stable, so `cargo test` keeps every input the fuzzer kept,
//! and every crash it found once, as a regression test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus for {target} in {}", dir.display());
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{target}: {} breaks an invariant", file.display());
    }
}

#[test]
fn frame() {
    replay("frame", overlay_fuzz::frame);
}

#[test]
fn hello() {
    replay("hello", overlay_fuzz::hello);
}

#[test]
fn topic() {
    replay("topic", overlay_fuzz::topic);
}

#[test]
fn macaroon() {
    replay("macaroon", overlay_fuzz::macaroon);
}

#[test]
fn config() {
    replay("config", overlay_fuzz::config);
}

#[test]
fn session() {
    replay("session", overlay_fuzz::session);
}
