//! Project automation, std-only so it compiles in a second.
//!
//! - `cargo xtask ci`: what `.ci/run` runs (fmt, clippy, tests, smoke).
//! - `cargo xtask smoke`: the real binary end to end on free loopback ports.
//! - `cargo xtask roundtrip N [--addr A --admin A]`: N ping/pub/sub round trips.

mod node;

use std::process::{Command, ExitCode};
use std::time::Instant;

use node::{Failure, Node};

/// The cargo steps of `ci`, in order; `smoke` follows them.
const CI_STEPS: &[(&str, &[&str])] = &[
    ("format", &["fmt", "--all", "--check"]),
    ("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]),
    ("test", &["test", "--workspace"]),
];

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                 fmt --check, clippy -D warnings, test --workspace, smoke (what .ci/run runs)
  smoke              start the binary, check readiness, ping/pub/sub, metrics and a clean SIGTERM
  roundtrip N        N ping/pub/sub round trips against a fresh node
                     (or a running one: --addr HOST:PORT --admin HOST:PORT)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("smoke") => smoke(),
        Some("roundtrip") => roundtrip(&args[1..]),
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("xtask: FAILED: {}", f.what);
            if !f.log_tail.is_empty() {
                eprintln!("--- node log (last lines) ---\n{}", f.log_tail);
            }
            ExitCode::from(1)
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ci() -> Result<(), Failure> {
    for (name, args) in CI_STEPS {
        let started = Instant::now();
        eprintln!("==> {name}: cargo {}", args.join(" "));
        let ok = Command::new(cargo()).args(*args).status().is_ok_and(|s| s.success());
        if !ok {
            return Err(Failure::new(format!("{name} failed")));
        }
        eprintln!("==> {name}: ok in {:.0?}", started.elapsed());
    }
    let started = Instant::now();
    eprintln!("==> smoke");
    smoke()?;
    eprintln!("==> smoke: ok in {:.0?}", started.elapsed());
    Ok(())
}

fn smoke() -> Result<(), Failure> {
    let bin = node::build()?;
    let mut node = Node::start(&bin, &[])?;
    node.wait_ready()?;
    let before = node.metrics()?;

    let ping = node.client(&["ping", "--count", "5", "--size", "256"])?;
    node.expect(ping.contains("5 pings, 0 lost"), &format!("ping output:\n{ping}"))?;
    let sub = node.subscriber("smoke.>", 3)?;
    let receipts = node.client(&["pub", "smoke.topic", "hello smoke", "--count", "3"])?;
    node.expect(
        receipts.lines().filter(|l| l.contains("queued=1 dropped=0")).count() == 3,
        &format!("pub output:\n{receipts}"),
    )?;
    let delivered = node.finish_subscriber(sub)?;
    node.expect(
        delivered.iter().filter(|l| *l == "smoke.topic hops=0 hello smoke").count() == 3,
        &format!("sub output:\n{}", delivered.join("\n")),
    )?;

    let after = node.metrics()?;
    let moved = |name: &str| node::value(&after, name) - node::value(&before, name);
    let expected = [
        ("overlay_frames_in_total{service=\"smoke\",kind=\"data\"}", 5.0),
        ("overlay_frames_out_total{service=\"smoke\",kind=\"data\"}", 5.0),
        ("overlay_frames_in_total{service=\"smoke\",kind=\"pub\"}", 3.0),
        ("overlay_frames_out_total{service=\"smoke\",kind=\"msg\"}", 3.0),
        ("gossip_ingress_total{service=\"smoke\"}", 3.0),
        ("gossip_fanout_total{service=\"smoke\"}", 3.0),
        ("overlay_connections_total{service=\"smoke\"}", 3.0),
    ];
    for (series, want) in expected {
        node.expect(moved(series) == want, &format!("{series} moved by {}, expected {want}", moved(series)))?;
    }

    let drain = node.terminate()?;
    node.expect(drain.saw_draining, "/readyz never answered 503 draining during shutdown")?;
    node.expect(drain.exit_code == Some(0), &format!("exit code {:?}, expected 0", drain.exit_code))?;
    println!(
        "smoke ok: ready, ping x5, pub x3 -> sub x3, {} counters moved as expected, /readyz 503 draining on SIGTERM, exit 0",
        expected.len()
    );
    Ok(())
}

fn roundtrip(args: &[String]) -> Result<(), Failure> {
    let n: u32 = args.first().and_then(|a| a.parse().ok()).ok_or_else(|| Failure::new(USAGE))?;
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let bin = node::build()?;
    let mut node = match (flag("--addr"), flag("--admin")) {
        (Some(addr), Some(admin)) => Node::existing(&bin, &addr, &admin)?,
        _ => Node::start(&bin, &[])?,
    };
    node.wait_ready()?;
    let started = Instant::now();
    for i in 1..=n {
        let ping = node.client(&["ping", "--count", "1"])?;
        node.expect(ping.contains("1 pings, 0 lost"), &format!("round {i}: ping output:\n{ping}"))?;
        let topic = format!("roundtrip.r{i}");
        let sub = node.subscriber(&topic, 1)?;
        node.client(&["pub", &topic, "rt"])?;
        let got = node.finish_subscriber(sub)?;
        node.expect(
            got.contains(&format!("{topic} hops=0 rt")),
            &format!("round {i}: sub output:\n{}", got.join("\n")),
        )?;
    }
    println!("roundtrip ok: {n} x (ping, sub, pub) in {:.2?}", started.elapsed());
    if node.owned() {
        node.terminate()?;
    }
    Ok(())
}
