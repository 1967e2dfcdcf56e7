//! `cargo xtask chaos [--nodes N] [--secs S]`: faults rehearsed on real
//! hosts. Each node runs in its own network namespace (net.rs); the harness
//! runs itself again inside the hub namespace, starts the nodes there with
//! `ip netns exec`, and puts a subscriber on every node and three
//! publishers under load (`overlay-load`'s `chaos`) for the whole run while
//! it injects, in turn: SIGKILL and restart of 20 % of the nodes, a
//! partition in two halves and its heal, a black-holed node, and slow
//! links. Then it cuts the load client's log into the phases: delivered /
//! expected for every live subscriber, duplicates, the time to full
//! delivery after each fault and the relink time after each heal, and one
//! summary line. S is the whole run.

mod net;
mod report;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::node::{self, Failure, Node};
use net::Net;
use report::{Audience, Log};

/// The nodes' `transport.idle_timeout_ms`: a black hole is noticed within it.
const IDLE_MS: u128 = 4000;
/// Seeds every node joins through (nodes 0..3).
const SEEDS: usize = 3;
/// Messages published this long after a SIGKILL must reach every live
/// subscriber (after a black hole: IDLE_MS more).
const GRACE_MS: u128 = 2000;
/// A quiet window ends this long before the next fault: a message
/// published just before a cut may be cut off with it.
const EDGE_MS: u128 = 500;
/// A heal must leave one component within this.
const RELINK: Duration = Duration::from_secs(30);
/// Time between two messages of one publisher.
const GAP_MS: &str = "20";
/// The port every node listens on, and its admin port.
const PORT: u16 = 9500;
const ADMIN_PORT: u16 = 9600;

pub(crate) fn chaos(args: &[String]) -> Result<(), Failure> {
    if args.first().is_some_and(|a| a == "--inner") {
        return inner(args);
    }
    let n = crate::flag(args, "--nodes", 10)?.clamp(6, 250) as usize;
    let secs = crate::flag(args, "--secs", 60)?.max(45);
    let bin = node::build_release()?;
    let load = node::build_tool("chaos", true)?;
    let net = Net::create(n)?;
    let exe = std::env::current_exe().map_err(|e| Failure::new(format!("the xtask binary: {e}")))?;
    let status = Command::new("ip")
        .args(["netns", "exec", &net.hub()])
        .arg(exe)
        .args(["chaos", "--inner", net.tag(), &n.to_string(), &secs.to_string()])
        .arg(&bin)
        .arg(&load)
        .status()
        .map_err(|e| Failure::new(format!("cannot run the harness in {}: {e}", net.hub())))?;
    drop(net);
    if status.success() { Ok(()) } else { Err(Failure::new("chaos: a target was missed (see above)")) }
}

/// The wall clock in ms (the load client stamps its log with it too).
fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

struct Harness {
    net: Net,
    bin: PathBuf,
    nodes: Vec<Option<Node>>,
}

impl Harness {
    fn addr(i: usize) -> String {
        format!("{}:{PORT}", net::ip(i))
    }

    fn start(&mut self, i: usize) -> Result<(), Failure> {
        let seeds: Vec<String> = (0..SEEDS).filter(|&s| s != i).map(Harness::addr).collect();
        let ns = self.net.ns(i);
        let admin = format!("{}:{ADMIN_PORT}", net::ip(i));
        let idle = format!("transport.idle_timeout_ms={IDLE_MS}");
        let extra = ["--peers", &seeds.join(","), "--set", &idle, "--set", "readiness.sample_ms=100"];
        let node = Node::start_in(
            &["ip", "netns", "exec", &ns],
            &self.bin,
            &format!("chaos-{i}"),
            (&Harness::addr(i), &admin),
            &extra,
        )?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Waits until the nodes not in `out` form one component over their
    /// active views, with no isolated node; returns how long that took.
    fn wait_one_component(&self, out: &HashSet<usize>, patience: Duration) -> Result<Duration, Failure> {
        let started = Instant::now();
        loop {
            let live: Vec<usize> =
                (0..self.nodes.len()).filter(|i| !out.contains(i) && self.nodes[*i].is_some()).collect();
            if one_component(&live) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > patience {
                return Err(Failure::new(format!("not one component {patience:?} after the fault ended")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether `live` nodes are one component over their active views (from
/// `/peersz`), none alone.
fn one_component(live: &[usize]) -> bool {
    let mut edges: Vec<(usize, Vec<usize>)> = Vec::new();
    for &i in live {
        let Some((200, body)) = node::http_get(&format!("{}:{ADMIN_PORT}", net::ip(i)), "/peersz") else {
            return false;
        };
        let active = body.split("\"active\":[").nth(1).and_then(|r| r.split("],\"advertised\"").next()).unwrap_or("");
        let peers: Vec<usize> = active
            .split("\"addr\":\"")
            .skip(1)
            .filter_map(|r| r.split('"').next())
            .filter_map(|a| live.iter().copied().find(|&j| Harness::addr(j) == a))
            .collect();
        if peers.is_empty() {
            return false;
        }
        edges.push((i, peers));
    }
    let Some(&first) = live.first() else { return true };
    let mut seen = HashSet::from([first]);
    let mut stack = vec![first];
    while let Some(i) = stack.pop() {
        for (_, peers) in edges.iter().filter(|(j, _)| *j == i) {
            for &p in peers {
                if seen.insert(p) {
                    stack.push(p);
                }
            }
        }
    }
    seen.len() == live.len()
}

/// What a phase checks: messages published in `[from, to)` against the
/// subscribers `audience` names; `must`: a shortfall fails the run.
struct Check {
    phase: String,
    what: String,
    /// When the fault began (`None`: a quiet window after one), for the
    /// time to full delivery after it.
    fault: Option<u128>,
    from: u128,
    to: u128,
    audience: Box<dyn Fn(usize, usize) -> bool>,
    must: bool,
}

impl Check {
    /// A window after a fault is over: every subscriber must get every
    /// message published in it.
    fn quiet(phase: impl Into<String>, what: impl Into<String>, from: u128, to: u128) -> Check {
        let (phase, what) = (phase.into(), what.into());
        Check { phase, what, fault: None, from, to, audience: Box::new(|_, _| true), must: true }
    }
}

/// The harness inside the hub namespace: `--inner TAG N SECS BIN LOAD`.
fn inner(args: &[String]) -> Result<(), Failure> {
    let [_, tag, n, secs, bin, load] = args else { return Err(Failure::new("chaos --inner: bad arguments")) };
    let n: usize = n.parse().map_err(|_| Failure::new("chaos --inner: N"))?;
    let secs: u64 = secs.parse().map_err(|_| Failure::new("chaos --inner: SECS"))?;
    let run_started = Instant::now();
    let mut h = Harness { net: Net::attach(tag, n), bin: PathBuf::from(bin), nodes: (0..n).map(|_| None).collect() };
    for i in 0..n {
        h.start(i)?;
    }
    let joined = h.wait_one_component(&HashSet::new(), Duration::from_secs(60))?;
    println!("chaos: {n} nodes in their own namespaces, one component in {joined:.1?}");

    // Publishers on three nodes no fault touches; the faults take the rest.
    let pubs = [n - 1, n - 2, n / 2];
    let spare: Vec<usize> = (0..n).filter(|i| !pubs.contains(i)).collect();
    let kills = (n / 5).max(1);
    let victims: Vec<usize> = (0..kills).map(|k| spare[k * spare.len() / kills]).collect();
    let hole = spare[spare.len() / 3 + 1];
    let slow: Vec<usize> = (0..n).step_by(3).collect();
    // Spare seconds beyond the shortest run go to the faults' holds.
    let extra = Duration::from_secs(secs.saturating_sub(45) / 4);
    let log_path = node::target().join(format!("chaos-{tag}.log"));
    // A cap only: the client stops when its stdin closes, after the last fault.
    let mut client = start_client(Path::new(load), n, &pubs, 3 * secs + 60, &log_path)?;
    std::thread::sleep(Duration::from_secs(2));
    let mut checks: Vec<Check> = Vec::new();

    // 1. SIGKILL 20 % (seed 0 among them), restart them where they were.
    let f = now_ms();
    for &v in &victims {
        drop(h.nodes[v].take());
    }
    std::thread::sleep(Duration::from_secs(4) + extra);
    let restart = now_ms();
    for &v in &victims {
        h.start(v)?;
    }
    let rejoin = h.wait_one_component(&HashSet::new(), RELINK)?;
    let dead: HashSet<usize> = victims.iter().copied().collect();
    checks.push(Check {
        phase: format!("SIGKILL of {kills} ({victims:?})"),
        what: format!("published {GRACE_MS} ms after the kill until the restart, at every live subscriber"),
        fault: Some(f),
        from: f + GRACE_MS,
        to: restart,
        audience: Box::new(move |_, s| !dead.contains(&s)),
        must: true,
    });
    std::thread::sleep(Duration::from_secs(1));
    let back = now_ms();
    println!("  restarted nodes rejoined: one component {rejoin:.1?} after the restart");
    std::thread::sleep(Duration::from_secs(2));

    // 2. Two halves (even and odd nodes) for a while, then healed.
    let f = now_ms();
    checks.push(Check::quiet(
        "after the restart",
        "published 1 s after one component, at every subscriber",
        back,
        f - EDGE_MS,
    ));
    h.net.partition(|i| i % 2 == 0)?;
    std::thread::sleep(Duration::from_secs(6) + extra);
    h.net.heal()?;
    let healed = now_ms();
    let relink = h.wait_one_component(&HashSet::new(), RELINK)?;
    let relinked = now_ms();
    println!("  partition healed: one component {relink:.1?} after the heal");
    checks.push(Check {
        phase: "partition (halves)".into(),
        what: format!("while split, from {GRACE_MS} ms in, inside each half (reported)"),
        fault: Some(f),
        from: f + GRACE_MS,
        to: healed,
        audience: Box::new(move |p, s| pubs[p] % 2 == s % 2),
        must: false,
    });
    std::thread::sleep(Duration::from_secs(3));

    // 3. A black hole: only keepalive can tell.
    let f = now_ms();
    checks.push(Check::quiet(
        "partition healed",
        "published once one component, at every subscriber",
        relinked,
        f - EDGE_MS,
    ));
    h.net.black_hole(hole)?;
    std::thread::sleep(Duration::from_millis(IDLE_MS as u64 + 4000) + extra);
    let lifted = now_ms();
    h.net.heal()?;
    checks.push(Check {
        phase: format!("black hole (n{hole})"),
        what: format!("published idle_timeout + {GRACE_MS} ms after, at every other subscriber"),
        fault: Some(f),
        from: f + IDLE_MS + GRACE_MS,
        to: lifted,
        audience: Box::new(move |_, s| s != hole),
        must: true,
    });
    let relink = h.wait_one_component(&HashSet::new(), RELINK)?;
    let relinked = now_ms();
    println!("  black hole lifted: one component {relink:.1?} after");
    std::thread::sleep(Duration::from_secs(3));

    // 4. Slow links: a third of the nodes at 1 Mbit/s both ways.
    let f = now_ms();
    checks.push(Check::quiet(
        "black hole lifted",
        "published once one component, at every subscriber",
        relinked,
        f - EDGE_MS,
    ));
    for &i in &slow {
        h.net.slow(i, "1mbit")?;
    }
    std::thread::sleep(Duration::from_secs(6) + extra);
    for &i in &slow {
        h.net.fast(i)?;
    }
    checks.push(Check {
        phase: format!("slow links ({} nodes at 1 Mbit/s)", slow.len()),
        what: format!("published {GRACE_MS} ms after, at every subscriber"),
        fault: Some(f),
        from: f + GRACE_MS,
        to: now_ms(),
        audience: Box::new(|_, _| true),
        must: true,
    });

    // Publishers stop; subscribers take what is in flight; the log is complete.
    drop(client.stdin.take());
    let waited = client.wait().map_err(|e| Failure::new(format!("chaos load client: {e}")))?;
    if !waited.success() {
        return Err(Failure::new("the chaos load client failed"));
    }
    judge(&log_path, n, &checks, run_started)
}

fn start_client(load: &Path, n: usize, pubs: &[usize], secs: u64, out: &Path) -> Result<Child, Failure> {
    let list = |idx: &mut dyn Iterator<Item = usize>| idx.map(Harness::addr).collect::<Vec<_>>().join(",");
    Command::new(load)
        .args(["--subs", &list(&mut (0..n)), "--pubs", &list(&mut pubs.iter().copied())])
        .args(["--gap-ms", GAP_MS, "--secs", &secs.to_string()])
        .arg("--out")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot start the chaos load client: {e}")))
}

/// Prints each check and the summary; fails on a missed target.
fn judge(log_path: &Path, n: usize, checks: &[Check], started: Instant) -> Result<(), Failure> {
    let log = Log::read(log_path, n)?;
    let mut missed = Vec::new();
    for c in checks {
        let audience: Audience<'_> = &*c.audience;
        let w = log.window(c.from, c.to, audience);
        let verdict = match (w.complete(), c.must) {
            (true, _) => "ok",
            (false, true) => "MISSED",
            (false, false) => "short (reported)",
        };
        let after = match c.fault {
            Some(f) => {
                format!("; full delivery from {} ms after the fault", log.window(f, c.to, audience).full_after_ms)
            }
            None => String::new(),
        };
        println!("  {}: {} -- {}{after} [{verdict}]", c.phase, c.what, w.describe());
        if c.must && (!w.complete() || w.messages == 0) {
            missed.push(c.phase.clone());
        }
    }
    let duplicates: u64 = log.duplicates.iter().sum();
    if duplicates > 0 {
        missed.push(format!("{duplicates} duplicates"));
    }
    println!(
        "chaos {}: {n} nodes, {:.0?}, {} phases, duplicates {duplicates}{}",
        if missed.is_empty() { "ok" } else { "FAILED" },
        started.elapsed(),
        checks.len(),
        if missed.is_empty() { String::new() } else { format!(", missed: {}", missed.join("; ")) }
    );
    if missed.is_empty() { Ok(()) } else { Err(Failure::new(format!("chaos: missed {}", missed.join("; ")))) }
}
