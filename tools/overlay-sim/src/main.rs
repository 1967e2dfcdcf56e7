//! `sim --scenario NAME [--nodes N] [--seed S]`: runs one scenario of the
//! swarm simulator (overlay-swarm's `sim`, the real state machine over
//! encoded frames) and prints one JSON line. Built with optimisations by
//! `cargo xtask sim`, which also checks the targets.
//!
//! Every scenario starts with empty views: node 0, 1 and 2 are the seeds,
//! and every other node joins through them (as a node configured with the
//! three as `peers`), one every `JOIN_SPACING`, then the network settles for
//! `SETTLE`.

mod interest;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use overlay_swarm::Config;
use overlay_swarm::sim::{DEADLINE, Report, Sim};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// Virtual time between two joins.
const JOIN_SPACING: Duration = Duration::from_millis(10);
/// Quiet virtual time after the last join, before the first message.
const SETTLE: Duration = Duration::from_secs(30);
/// How often recovery is checked after a fault.
const PROBE: Duration = Duration::from_millis(100);
/// Longest wait for recovery after a fault.
const MAX_RECOVERY: Duration = Duration::from_secs(60);

/// Counts every allocation, so the run can report the heap the swarms hold.
#[global_allocator]
static HEAP: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

/// Bytes live on the heap now. (stats_alloc counts a realloc in the
/// allocated and deallocated bytes too; `bytes_reallocated` is only its net.)
fn live_heap() -> usize {
    let s = HEAP.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated)
}

/// Every scenario, by name.
const SCENARIOS: [&str; 10] = [
    "stable-single",
    "stable-random",
    "burst",
    "kill-50",
    "kill-50-silent",
    "kill-80",
    "partition-heal",
    "churn",
    "cost",
    "interest",
];

struct Args {
    scenario: String,
    nodes: Option<usize>,
    seed: u64,
    /// churn: simulated seconds of churn.
    secs: u64,
}

fn parse() -> Result<Args, String> {
    let mut args = Args { scenario: String::new(), nodes: None, seed: 1, secs: 600 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--scenario" => args.scenario = value()?,
            "--nodes" => args.nodes = Some(value()?.parse().map_err(|e| format!("--nodes: {e}"))?),
            "--seed" => args.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--secs" => args.secs = value()?.parse().map_err(|e| format!("--secs: {e}"))?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.scenario.is_empty() {
        return Err(format!("--scenario NAME is required ({})", SCENARIOS.join(", ")));
    }
    Ok(args)
}

/// What a scenario adds to the delivery report.
#[derive(Default)]
struct Outcome {
    report: Report,
    recovery_ms: Option<u64>,
    /// partition-heal: deliveries missed inside the publisher's half while
    /// split, of how many expected.
    split: Option<(u64, u64)>,
    /// interest: its own fields, appended to the line.
    extra: String,
}

/// How long a cut link goes unnoticed: the node's default idle timeout
/// (its keepalive closes a link that stopped answering).
const KEEPALIVE: Duration = Duration::from_secs(30);
/// churn: how long a node has been in the network before it publishes.
const SETTLED: Duration = Duration::from_secs(2);
/// How long partition-heal keeps the halves apart.
const SPLIT_FOR: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let default_nodes = match args.scenario.as_str() {
        "stable-single" | "stable-random" | "kill-50" | "kill-50-silent" | "kill-80" | "cost" | "interest" => 10_000,
        "burst" | "partition-heal" | "churn" => 1_000,
        other => {
            eprintln!("sim: unknown scenario {other}");
            return ExitCode::from(2);
        }
    };
    let n = args.nodes.unwrap_or(default_nodes).max(4);
    let heap_before = live_heap();
    let mut sim = joined(n, args.seed);
    let outcome = match args.scenario.as_str() {
        "stable-single" => stable(&mut sim, 100, Duration::from_millis(500), false),
        // The issue's cost bar: 30 broadcast rounds, then the state measured.
        "cost" => stable(&mut sim, 30, Duration::from_millis(500), false),
        "stable-random" => stable(&mut sim, 200, Duration::from_millis(100), true),
        "burst" => burst(&mut sim),
        "kill-50" => kill(&mut sim, 50, None),
        "kill-50-silent" => kill(&mut sim, 50, Some(KEEPALIVE)),
        "churn" => churn(&mut sim, args.secs),
        "partition-heal" => partition_heal(&mut sim),
        "interest" => {
            let f = interest::interest(&mut sim, args.seed);
            let extra = format!(
                r#","sends_over_oracle":{:.3},"wasted_sends_pct":{:.3},"flood_sends_pct":{:.3},"max_summary_bytes":{},"interest_frames":{}"#,
                f.sends_over_oracle, f.wasted_sends_pct, f.flood_sends_pct, f.max_summary_bytes, f.interest_frames
            );
            Outcome { report: f.report, extra, ..Outcome::default() }
        }
        _ => kill(&mut sim, 80, None),
    };
    let (components, isolated) = sim.components();
    let r = &outcome.report;
    let control_per_payload = sim.control_sent as f64 / sim.payload_sent.max(1) as f64;
    let (decode_errors, trace_hash) = (sim.decode_errors, sim.trace_hash());
    // What the live swarms hold once the simulation's own bookkeeping is
    // gone, measured by the counting allocator: views, tree, seen-cache and
    // the rest, less the GRAFT cache, which is reported on its own (payloads
    // and entries, by its own accounting: in the simulator one payload
    // buffer is shared by every node, so the allocator sees it once).
    let swarms = sim.into_swarms();
    let live = swarms.len().max(1);
    let (payload, entries) =
        swarms.iter().map(|s| s.cache_usage()).fold((0, 0), |(p, e), c| (p + c.payload, e + c.entries));
    let state_bytes_per_node = live_heap().saturating_sub(heap_before).saturating_sub(entries) / live;
    let cache_bytes_per_node = (payload + entries) / live;
    println!(
        concat!(
            r#"{{"scenario":"{}","nodes":{},"seed":{},"messages":{},"expected":{},"delivered":{},"missed":{},"missed_pct":{:.4},"#,
            r#""duplicates":{},"rmr":{:.4},"rmr_first":{:.4},"rmr_steady":{:.4},"ldh_max":{},"#,
            r#""latency_ms":{{"p50":{},"p99":{},"max":{}}},"control_per_payload":{:.3},"components":{},"#,
            r#""isolated":{},"recovery_ms":{},"split_missed":{},"split_expected":{},"decode_errors":{},"#,
            r#""state_bytes_per_node":{},"cache_bytes_per_node":{},"wall_s":{:.1},"#,
            r#""trace_hash":"{:016x}"{}}}"#
        ),
        args.scenario,
        n,
        args.seed,
        r.messages,
        r.expected,
        r.delivered,
        r.expected - r.delivered,
        (r.expected - r.delivered) as f64 * 100.0 / r.expected.max(1) as f64,
        r.duplicates,
        r.rmr,
        r.rmr_first,
        r.rmr_steady,
        r.ldh_max,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.latency_max_ms,
        control_per_payload,
        components,
        isolated,
        outcome.recovery_ms.map_or("null".to_string(), |ms| ms.to_string()),
        outcome.split.map_or("null".to_string(), |(missed, _)| missed.to_string()),
        outcome.split.map_or("null".to_string(), |(_, expected)| expected.to_string()),
        decode_errors,
        state_bytes_per_node,
        cache_bytes_per_node,
        started.elapsed().as_secs_f64(),
        trace_hash,
        outcome.extra,
    );
    ExitCode::SUCCESS
}

/// `n` nodes joined through three seeds, settled.
fn joined(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, &Config::default(), seed, Instant::now());
    for i in 1..n {
        // Like a node whose `peers` are the three seeds: it joins through
        // each (one reachable seed is enough), and keeps them to rejoin.
        for seed in (0..3).filter(|&s| s != i) {
            sim.join(i, seed);
        }
        sim.run_for(JOIN_SPACING);
    }
    sim.run_for(SETTLE);
    sim
}

/// `count` messages `every` apart, from one node or random ones; the report
/// is taken `DEADLINE` after the last.
fn stable(sim: &mut Sim, count: usize, every: Duration, random: bool) -> Outcome {
    let from = sim.published();
    let publisher = sim.random_alive();
    for _ in 0..count {
        let p = if random { sim.random_alive() } else { publisher };
        sim.publish(p);
        sim.run_for(every);
    }
    sim.run_for(DEADLINE);
    Outcome { report: sim.report(from), ..Outcome::default() }
}

/// One message builds the tree; then every node publishes at once.
fn burst(sim: &mut Sim) -> Outcome {
    let first = sim.random_alive();
    sim.publish(first);
    sim.run_for(DEADLINE);
    let from = sim.published();
    let all: Vec<usize> = sim.alive().collect();
    for i in all {
        sim.publish(i);
    }
    sim.run_for(DEADLINE);
    Outcome { report: sim.report(from), ..Outcome::default() }
}

/// Splits the nodes in two halves for `SPLIT_FOR`: each half must keep
/// delivering inside itself (once the cut links are noticed), and after the
/// heal the halves must merge into one component and deliver everything.
fn partition_heal(sim: &mut Sim) -> Outcome {
    sim.partition(|i| (i % 2) as u8, KEEPALIVE);
    let split_at = sim.now();
    sim.run_for(KEEPALIVE + Duration::from_secs(5));
    let from = sim.published();
    for _ in 0..10 {
        let p = sim.random_alive();
        sim.publish(p);
        sim.run_for(Duration::from_millis(500));
    }
    sim.run_for(DEADLINE);
    let (mut missed, mut expected) = (0, 0);
    for k in from..sim.published() {
        let side = sim.side(sim.publisher(k));
        expected += sim.alive().filter(|&i| sim.side(i) == side).count() as u64 - 1;
        missed += sim.missed_by(k).into_iter().filter(|&i| sim.side(i) == side).count() as u64;
    }
    sim.run_until(split_at + SPLIT_FOR);
    sim.heal();
    let recovery_ms = recover(sim);
    let mut outcome = stable(sim, 20, Duration::from_millis(500), true);
    outcome.recovery_ms = recovery_ms;
    outcome.split = Some((missed, expected));
    outcome
}

/// 1 % of the nodes crash and 1 % join (through 3 random live nodes) every
/// second, for `secs`, while random live nodes publish 10 messages a second
/// (nodes in the network for `SETTLED` at least: one that has not linked to
/// anyone yet publishes to no one).
fn churn(sim: &mut Sim, secs: u64) -> Outcome {
    let from = sim.published();
    let per_sec = (sim.alive().count() / 100).max(1);
    for _ in 0..secs {
        for _ in 0..per_sec {
            let gone = sim.random_alive();
            sim.kill(gone);
        }
        for _ in 0..per_sec {
            let seeds = [sim.random_alive(), sim.random_alive(), sim.random_alive()];
            let node = sim.add_node();
            for seed in seeds {
                sim.join(node, seed);
            }
        }
        for _ in 0..10 {
            let p = sim.random_settled(SETTLED);
            sim.publish(p);
            sim.run_for(Duration::from_millis(100));
        }
    }
    sim.run_for(DEADLINE);
    Outcome { report: sim.report(from), ..Outcome::default() }
}

/// Kills `pct` % of the nodes at once (silently when `noticed_after`: a
/// black hole that only keepalive reveals); measures the time to one
/// component with no isolated live node, then delivery of 20 messages sent
/// after it.
fn kill(sim: &mut Sim, pct: usize, noticed_after: Option<Duration>) -> Outcome {
    let n = sim.alive().count();
    // `pct` % of the nodes, spread evenly over them, seeds included.
    let victims: Vec<usize> = (0..n).filter(|i| (i * pct / 100) != ((i + 1) * pct / 100)).collect();
    for &v in &victims {
        match noticed_after {
            Some(after) => sim.kill_silently(v, after),
            None => sim.kill(v),
        }
    }
    let recovery_ms = recover(sim);
    let mut outcome = stable(sim, 20, Duration::from_millis(500), true);
    outcome.recovery_ms = recovery_ms;
    outcome
}

/// Runs until the live nodes form one component with none isolated (checked
/// every `PROBE`); the virtual ms that took, or `None` past `MAX_RECOVERY`.
fn recover(sim: &mut Sim) -> Option<u64> {
    let fault = sim.now();
    while sim.now() - fault < MAX_RECOVERY {
        sim.run_for(PROBE);
        if sim.components() == (1, 0) {
            return Some((sim.now() - fault).as_millis() as u64);
        }
    }
    None
}
