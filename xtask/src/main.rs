//! Project automation, std-only so it compiles in a second.
//!
//! `cargo xtask ci` runs exactly what `.ci/run` runs: format check, clippy
//! with warnings denied, and the README's test command.

use std::process::{Command, ExitCode};
use std::time::Instant;

/// The CI steps, in order; each is a cargo invocation.
const CI_STEPS: &[(&str, &[&str])] = &[
    ("format", &["fmt", "--all", "--check"]),
    ("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    ("test", &["test", "--workspace"]),
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\ncommands:\n  ci    fmt --check, clippy -D warnings, test --workspace (what .ci/run runs)"
            );
            ExitCode::from(2)
        }
    }
}

fn ci() -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for (name, args) in CI_STEPS {
        let started = Instant::now();
        eprintln!("==> {name}: cargo {}", args.join(" "));
        let status = Command::new(&cargo).args(*args).status();
        match status {
            Ok(s) if s.success() => eprintln!("==> {name}: ok in {:.0?}", started.elapsed()),
            Ok(s) => {
                eprintln!("==> {name}: FAILED ({s})");
                return ExitCode::from(1);
            }
            Err(e) => {
                eprintln!("==> {name}: cannot run cargo: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
