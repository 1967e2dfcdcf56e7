//! `cargo xtask fuzz`: every cargo-fuzz target in turn on the nightly
//! toolchain, from its committed corpus (`fuzz/corpus/<target>`), with a cap
//! on any single allocation so "no allocation above max_frame plus a
//! constant" is checked by libFuzzer itself. Not part of `ci` (minutes per
//! target); `cargo test` replays the corpus on stable instead.

use std::process::Command;
use std::time::Instant;

use crate::node::{Failure, workspace};

/// The targets, in the order they run.
pub(crate) const TARGETS: [&str; 6] = ["frame", "hello", "topic", "macaroon", "config", "session"];
/// Largest single allocation allowed: one `max_frame` (1 MiB) plus a read
/// buffer's worth and change. libFuzzer reports a bigger one as a crash.
const MALLOC_LIMIT_MB: &str = "2";

/// Runs each target (or `--only T`) for `--secs S` (60); `--cmin` then
/// minimizes each corpus in place. Fails on the first target that finds a
/// crash, naming its artifact.
pub(crate) fn fuzz(args: &[String]) -> Result<(), Failure> {
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let secs: u64 = match flag("--secs") {
        Some(s) => s.parse().map_err(|_| Failure::new(format!("--secs {s}: not a number")))?,
        None => 60,
    };
    let only = flag("--only");
    let cmin = args.iter().any(|a| a == "--cmin");
    let root = workspace();
    let installed =
        Command::new("cargo").args(["+nightly", "fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        return Err(Failure::new("cargo-fuzz on the nightly toolchain is missing: cargo install cargo-fuzz"));
    }
    let mut summary = Vec::new();
    for target in TARGETS.iter().filter(|t| only.as_deref().is_none_or(|o| o == **t)) {
        let started = Instant::now();
        eprintln!("==> fuzz {target}: {secs} s");
        let artifacts = root.join("fuzz/artifacts").join(target);
        let before = artifact_count(&artifacts);
        let status = Command::new("cargo")
            .current_dir(&root)
            .args(["+nightly", "fuzz", "run", "-O", target, "--"])
            .arg(format!("-max_total_time={secs}"))
            .arg(format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"))
            .args(["-rss_limit_mb=4096", "-print_final_stats=1"])
            .status()
            .map_err(|e| Failure::new(format!("cargo +nightly fuzz: {e} (cargo install cargo-fuzz)")))?;
        if !status.success() {
            return Err(Failure::new(if artifact_count(&artifacts) > before {
                format!("fuzz {target} found a crash: see {}", artifacts.display())
            } else {
                format!("cargo fuzz run {target} failed without a crash artifact (a build error? see above)")
            }));
        }
        if cmin {
            let ok = Command::new("cargo")
                .current_dir(&root)
                .args(["+nightly", "fuzz", "cmin", "-O", target])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(Failure::new(format!("cargo fuzz cmin {target} failed")));
            }
        }
        summary.push(format!("{target}: {:.0?}, 0 crashes", started.elapsed()));
    }
    println!("fuzz ok: {}", summary.join("; "));
    Ok(())
}

/// Files in a target's artifact directory (0 when it does not exist yet).
fn artifact_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.count())
}
