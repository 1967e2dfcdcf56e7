//! `cargo xtask stress <scenario> [--full]`: starts the release binary set
//! up for the scenario and runs the `stress` tool's driver against it;
//! prints the driver's `pass`/`FAIL` line with its figures. Without `--full`
//! each scenario runs a short version (what `.ci/run` runs); `--full` runs
//! the sizes issue #9 asks for (by hand: minutes each).

use std::process::Command;

use crate::node::{self, Failure, Node};

/// The scenarios, in the order `all` runs them.
pub(crate) const SCENARIOS: [&str; 6] = ["wide-fanout", "tls-garbage", "idle-tls", "slowloris", "emfile", "cgroup"];
/// The memory limit of the `cgroup` scenario.
const CGROUP_LIMIT: u64 = 384 << 20;
/// Where cgroup v1's memory controller is mounted (this machine).
const MEMORY_CONTROLLER: &str = "/sys/fs/cgroup/memory";
/// cgroup v2's unified hierarchy (current distributions, GitHub's runners).
const UNIFIED: &str = "/sys/fs/cgroup";

pub(crate) fn stress(args: &[String]) -> Result<(), Failure> {
    let full = args.iter().any(|a| a == "--full");
    let which: Vec<&str> = match args.first().map(String::as_str) {
        Some("all") | None => SCENARIOS.to_vec(),
        Some(s) if SCENARIOS.contains(&s) => vec![s],
        Some(other) => {
            let names = SCENARIOS.join(", ");
            return Err(Failure::new(format!("unknown scenario {other:?}; one of {names} or all")));
        }
    };
    let bin = node::build_release()?;
    let driver = node::build_tool("stress", true)?;
    for scenario in which {
        run(scenario, full, &bin, &driver)?;
    }
    Ok(())
}

fn run(scenario: &str, full: bool, bin: &std::path::Path, driver: &std::path::Path) -> Result<(), Failure> {
    let size = |short: &'static str, long: &'static str| if full { long } else { short };
    // Outlives the node: a cgroup is removed once no process is in it.
    let mut group = None;
    let (node, args): (Node, Vec<String>) = match scenario {
        "wide-fanout" => {
            let node = Node::start(bin, "stress", &["--set", "transport.max_conns=20000"])?;
            // 10,000 in both: a smaller run leaves the allocator's fixed costs
            // (a new arena) less room under the per-subscriber bound.
            (node, vec!["--subs".into(), "10000".into()])
        }
        "tls-garbage" => {
            let node = Node::start(bin, "stress", &tls_flags()?.0.iter().map(String::as_str).collect::<Vec<_>>())?;
            let admin = node.admin().to_string();
            (node, vec!["--admin".into(), admin, "--clients".into(), size("20", "100").into()])
        }
        "idle-tls" => {
            let (mut flags, ca) = tls_flags()?;
            // Keepalive PINGs come at half the idle timeout: several rounds in
            // the short version too.
            flags.extend(["--set".into(), "transport.max_conns=20000".into()]);
            if !full {
                flags.extend(["--set".into(), "transport.idle_timeout_ms=4000".into()]);
            }
            let node = Node::start(bin, "stress", &flags.iter().map(String::as_str).collect::<Vec<_>>())?;
            let mut args = vec!["--ca".into(), ca];
            for (flag, short, long) in [("--sessions", "2000", "10000"), ("--secs", "10", "600")] {
                args.extend([flag.to_string(), size(short, long).to_string()]);
            }
            (node, args)
        }
        "slowloris" => {
            let timeout = size("1000", "5000");
            let node = Node::start(bin, "stress", &["--set", &format!("transport.read_timeout_ms={timeout}")])?;
            (node, vec!["--clients".into(), size("200", "1000").into(), "--read-timeout-ms".into(), timeout.into()])
        }
        "emfile" => {
            let node = Node::start_via(&["prlimit", "--nofile=256:"], bin, "stress", &[])?;
            // A flooding client holds what its own descriptor limit allows:
            // 2,000 in the short version, this machine's 20,000 in the full.
            (node, vec!["--secs".into(), size("10", "60").into(), "--max-held".into(), size("2000", "20000").into()])
        }
        "cgroup" => {
            let made = group.insert(MemoryCgroup::create(CGROUP_LIMIT)?);
            // The shell moves itself into the group, then becomes the node.
            let enter = format!("echo $$ > {}/cgroup.procs && exec \"$0\" \"$@\"", made.dir.display());
            let node = Node::start_via(&["sh", "-c", &enter], bin, "stress", &[])?;
            let mut args = vec!["--admin".into(), node.admin().to_string(), "--cgroup".into()];
            args.push(made.dir.to_string_lossy().into_owned());
            for (flag, short, long) in
                [("--subs", "200", "1000"), ("--secs", "15", "120"), ("--settle-secs", "10", "30")]
            {
                args.extend([flag.to_string(), size(short, long).to_string()]);
            }
            (node, args)
        }
        other => return Err(Failure::new(format!("unknown scenario {other}"))),
    };
    node.wait_ready()?;
    let pid = node.pid().ok_or_else(|| Failure::new("no pid"))?.to_string();
    let warnings_before = node.warnings();
    let out = Command::new(driver)
        .arg(scenario)
        .args(["--addr", node.addr(), "--pid", &pid])
        .args(&args)
        .output()
        .map_err(|e| Failure::new(format!("cannot run the stress driver: {e}")))?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let warnings = node.warnings() - warnings_before;
    println!("{line} [node logged {warnings} WARN/ERROR lines]");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(node.fail(format!("stress {scenario} failed")));
    }
    drop(node);
    drop(group);
    Ok(())
}

/// The node flags that serve TLS with the bench certificates (made once),
/// and the CA file that verifies them.
pub(crate) fn tls_flags() -> Result<(Vec<String>, String), Failure> {
    let pki = node::target().join("bench-pki");
    let made = Command::new(node::build_tool("bench", true)?)
        .args(["--make-certs", &pki.to_string_lossy()])
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        return Err(Failure::new("cannot make the TLS certificates"));
    }
    let pem = |f: &str| pki.join(f).to_string_lossy().into_owned();
    let flags = [
        "tls.enabled=true".to_string(),
        format!("tls.cert={}", pem("cert.pem")),
        format!("tls.key={}", pem("key.pem")),
    ]
    .into_iter()
    .flat_map(|kv| ["--set".to_string(), kv])
    .collect();
    Ok((flags, pem("ca.pem")))
}

/// A memory cgroup of its own (cgroup v1's memory controller where it is
/// mounted, else v2's unified hierarchy), removed on drop (once the node in
/// it has exited). Creating it fails, with the reason, where neither is
/// there or writable (it needs root): the scenario then fails, it never
/// passes.
struct MemoryCgroup {
    dir: std::path::PathBuf,
}

impl MemoryCgroup {
    fn create(limit: u64) -> Result<MemoryCgroup, Failure> {
        let v1 = std::path::Path::new(MEMORY_CONTROLLER).is_dir();
        let parent = if v1 { MEMORY_CONTROLLER } else { UNIFIED };
        let dir = std::path::Path::new(parent).join(format!("svc-overlay-stress-{}", std::process::id()));
        let cannot = |what: &str, e: std::io::Error| {
            Failure::new(format!(
                "stress cgroup cannot run here: {what}: {e} (needs root, and cgroup v1's memory controller at {MEMORY_CONTROLLER} or v2's at {UNIFIED})"
            ))
        };
        // v2: the memory controller must be on for the root's children.
        let subtree = std::path::Path::new(UNIFIED).join("cgroup.subtree_control");
        if !v1 && !std::fs::read_to_string(&subtree).is_ok_and(|s| s.split_whitespace().any(|c| c == "memory")) {
            std::fs::write(&subtree, "+memory").map_err(|e| cannot(&format!("+memory in {}", subtree.display()), e))?;
        }
        std::fs::create_dir(&dir).map_err(|e| cannot(&format!("mkdir {}", dir.display()), e))?;
        let group = MemoryCgroup { dir };
        let limit = limit.to_string();
        // Swap too, where it is accounted: the limit is on memory, not on
        // what can be paged out.
        let (limit_file, swap) = if v1 {
            ("memory.limit_in_bytes", ("memory.memsw.limit_in_bytes", limit.as_str()))
        } else {
            ("memory.max", ("memory.swap.max", "0"))
        };
        std::fs::write(group.dir.join(limit_file), &limit).map_err(|e| cannot(limit_file, e))?;
        if group.dir.join(swap.0).exists() {
            std::fs::write(group.dir.join(swap.0), swap.1).map_err(|e| cannot(swap.0, e))?;
        }
        Ok(group)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.dir) {
            eprintln!("xtask: cannot remove {}: {e}", self.dir.display());
        }
    }
}
