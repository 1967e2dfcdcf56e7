//! Replays every committed corpus file (fuzz/corpus/<target>/) through its
//! target on stable, so `cargo test` keeps every input the fuzzer kept,
//! and every crash it found once, as a regression test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Stack for the replay: the fuzzer runs on a process's main thread (8 MiB)
/// in release; a debug build's frames are several times larger, and a
/// nested TOML array the fuzzer kept recurses deeply in the parser.
const REPLAY_STACK: usize = 256 << 20;

fn replay(target: &'static str, run: fn(&[u8])) {
    std::thread::Builder::new()
        .stack_size(REPLAY_STACK)
        .spawn(move || replay_here(target, run))
        .unwrap()
        .join()
        .unwrap();
}

fn replay_here(target: &str, run: fn(&[u8])) {
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
