//! A `svc-overlay` process under test: start it on free ports, talk to its
//! admin plane over plain HTTP/1.1, run client subcommands, stop it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longest wait for anything a node should do promptly.
const PATIENCE: Duration = Duration::from_secs(30);
/// Log lines kept for a failure report.
const LOG_TAIL: usize = 40;

/// What went wrong, with the node's last log lines.
pub(crate) struct Failure {
    pub(crate) what: String,
    pub(crate) log_tail: String,
    /// The exit code (1 unless a command says otherwise).
    pub(crate) code: u8,
}

impl Failure {
    pub(crate) fn new(what: impl Into<String>) -> Failure {
        Failure { what: what.into(), log_tail: String::new(), code: 1 }
    }

    /// A failure with its own exit code (77: a prerequisite is missing).
    pub(crate) fn with_code(what: impl Into<String>, code: u8) -> Failure {
        Failure { code, ..Failure::new(what) }
    }
}

/// A running `svc-overlay sub`.
pub(crate) struct Subscriber {
    child: Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

/// How a node shut down.
pub(crate) struct Drain {
    pub(crate) saw_draining: bool,
    pub(crate) exit_code: Option<i32>,
}

pub(crate) struct Node {
    bin: PathBuf,
    child: Option<Child>,
    addr: String,
    admin: String,
    log: Arc<Mutex<Vec<String>>>,
    /// Lines logged at WARN or above so far.
    warnings: Arc<AtomicU64>,
}

/// Builds the binary (debug, sharing the workspace's target) and returns its path.
pub(crate) fn build() -> Result<PathBuf, Failure> {
    cargo_build(&["-p", "svc-overlay"])?;
    Ok(target_dir().join("debug").join("svc-overlay"))
}

/// Builds the release binary and returns its path.
pub(crate) fn build_release() -> Result<PathBuf, Failure> {
    cargo_build(&["--release", "-p", "svc-overlay"])?;
    Ok(target_dir().join("release").join("svc-overlay"))
}

/// The workspace's target directory.
pub(crate) fn target() -> PathBuf {
    target_dir()
}

/// Builds a binary of the load tools (`tools/overlay-load`) in `profile`
/// and returns its path.
pub(crate) fn build_tool(name: &str, release: bool) -> Result<PathBuf, Failure> {
    build_bin("overlay-load", name, release)
}

/// Builds binary `name` of `package`; returns its path.
pub(crate) fn build_bin(package: &str, name: &str, release: bool) -> Result<PathBuf, Failure> {
    let mut args = vec!["-p", package, "--bin", name];
    if release {
        args.push("--release");
    }
    cargo_build(&args)?;
    Ok(target_dir().join(if release { "release" } else { "debug" }).join(name))
}

fn cargo_build(args: &[&str]) -> Result<(), Failure> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let ok = Command::new(&cargo).args(["build", "--quiet"]).args(args).status().is_ok_and(|s| s.success());
    if ok { Ok(()) } else { Err(Failure::new(format!("cargo build {} failed", args.join(" ")))) }
}

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| workspace().join("target"))
}

pub(crate) fn workspace() -> PathBuf {
    // `cargo run` sets CARGO_MANIFEST_DIR for the running xtask: prefer it to
    // the path baked in at build time (a binary built from another checkout
    // into a shared target directory would point there).
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), PathBuf::from);
    manifest.parent().map(Path::to_path_buf).unwrap_or_default()
}

impl Node {
    /// Starts the binary on free loopback ports and reads its addresses
    /// from the start-up log line.
    pub(crate) fn start(bin: &Path, name: &str, extra: &[&str]) -> Result<Node, Failure> {
        Node::start_via(&[], bin, name, extra)
    }

    /// [`Node::start`] on a given data-plane address (a restart where
    /// others knew the node).
    pub(crate) fn start_at(bin: &Path, name: &str, addr: &str, extra: &[&str]) -> Result<Node, Failure> {
        Node::spawn(&[], bin, name, addr, "127.0.0.1:0", extra)
    }

    /// [`Node::start`] through a wrapper command, on given addresses (a
    /// node in a network namespace: `ip netns exec NS`).
    pub(crate) fn start_in(
        wrapper: &[&str],
        bin: &Path,
        name: &str,
        (addr, admin): (&str, &str),
        extra: &[&str],
    ) -> Result<Node, Failure> {
        Node::spawn(wrapper, bin, name, addr, admin, extra)
    }

    /// [`Node::start`] through a wrapper command (`prlimit --nofile=256`).
    pub(crate) fn start_via(wrapper: &[&str], bin: &Path, name: &str, extra: &[&str]) -> Result<Node, Failure> {
        Node::spawn(wrapper, bin, name, "127.0.0.1:0", "127.0.0.1:0", extra)
    }

    fn spawn(
        wrapper: &[&str],
        bin: &Path,
        name: &str,
        addr: &str,
        admin: &str,
        extra: &[&str],
    ) -> Result<Node, Failure> {
        let mut command = match wrapper {
            [program, rest @ ..] => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin);
                c
            }
            [] => Command::new(bin),
        };
        let mut child = command
            .args(["--addr", addr, "--admin-addr", admin, "--name", name])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new(format!("cannot start {}: {e}", bin.display())))?;
        let stderr = child.stderr.take().ok_or_else(|| Failure::new("no stderr"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        let warnings = Arc::new(AtomicU64::new(0));
        let warned = warnings.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
                    warned.fetch_add(1, Ordering::Relaxed);
                }
                if line.contains("overlay node started") {
                    let _ = tx.send(line.clone());
                }
                if let Ok(mut l) = sink.lock() {
                    l.push(line);
                    let extra = l.len().saturating_sub(LOG_TAIL * 4);
                    l.drain(..extra);
                }
            }
        });
        let mut node = Node {
            bin: bin.to_path_buf(),
            child: Some(child),
            addr: String::new(),
            admin: String::new(),
            log,
            warnings,
        };
        let started =
            rx.recv_timeout(PATIENCE).map_err(|_| node.fail("the node never logged \"overlay node started\""))?;
        node.addr = field(&started, "addr").ok_or_else(|| node.fail("no addr in the start-up line"))?;
        node.admin = field(&started, "admin_addr").ok_or_else(|| node.fail("no admin_addr in the start-up line"))?;
        Ok(node)
    }

    /// A node someone else runs.
    pub(crate) fn existing(bin: &Path, addr: &str, admin: &str) -> Result<Node, Failure> {
        Ok(Node {
            bin: bin.to_path_buf(),
            child: None,
            addr: addr.into(),
            admin: admin.into(),
            log: Arc::default(),
            warnings: Arc::default(),
        })
    }

    /// Lines the node has logged at WARN or ERROR so far.
    pub(crate) fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }

    /// The admin plane's address.
    pub(crate) fn admin(&self) -> &str {
        &self.admin
    }

    /// The node's process id.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data-plane address.
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Resident memory in KiB and open fds of the node process.
    pub(crate) fn resources(&self) -> Option<(u64, usize)> {
        let pid = self.child.as_ref()?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss = status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
        Some((rss, fds))
    }

    /// True when this process started the node.
    pub(crate) fn owned(&self) -> bool {
        self.child.is_some()
    }

    pub(crate) fn fail(&self, what: impl Into<String>) -> Failure {
        let tail = self.log.lock().map(|l| l[l.len().saturating_sub(LOG_TAIL)..].join("\n")).unwrap_or_default();
        Failure { what: what.into(), log_tail: tail, code: 1 }
    }

    pub(crate) fn expect(&self, ok: bool, what: &str) -> Result<(), Failure> {
        if ok { Ok(()) } else { Err(self.fail(what)) }
    }

    pub(crate) fn wait_ready(&self) -> Result<(), Failure> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some((200, _)) = http_get(&self.admin, "/readyz") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.fail("/readyz never answered 200"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn metrics(&self) -> Result<String, Failure> {
        match http_get(&self.admin, "/metrics") {
            Some((200, body)) if body.contains("overlay_build_info") => Ok(body),
            other => Err(self.fail(format!("/metrics answered {:?}", other.map(|(s, _)| s)))),
        }
    }

    /// Runs a client subcommand against this node; its stdout.
    pub(crate) fn client(&self, args: &[&str]) -> Result<String, Failure> {
        let child = self.spawn_client(args)?;
        self.finish_client(child)
    }

    /// Starts `sub` and returns once it has printed that it is subscribed.
    pub(crate) fn subscriber(&self, pattern: &str, count: u32) -> Result<Subscriber, Failure> {
        let mut child = self.spawn_client(&["sub", pattern, "--count", &count.to_string()])?;
        let stdout = child.stdout.take().ok_or_else(|| self.fail("no stdout from sub"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("subscribed to") {
                    let _ = tx.send(());
                }
                lines.push(line);
            }
            lines
        });
        if rx.recv_timeout(PATIENCE).is_err() {
            let _ = child.kill();
            return Err(self.fail("sub never confirmed its subscription"));
        }
        Ok(Subscriber { child, reader })
    }

    /// Waits for a subscriber to exit; the lines it printed.
    pub(crate) fn finish_subscriber(&self, sub: Subscriber) -> Result<Vec<String>, Failure> {
        let Subscriber { child, reader } = sub;
        self.finish_client(child)?;
        reader.join().map_err(|_| self.fail("sub output reader panicked"))
    }

    pub(crate) fn spawn_client(&self, args: &[&str]) -> Result<Child, Failure> {
        Command::new(&self.bin)
            .args(args)
            .args(["--addr", &self.addr])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.fail(format!("cannot run client {args:?}: {e}")))
    }

    pub(crate) fn finish_client(&self, mut child: Child) -> Result<String, Failure> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    let mut out = String::new();
                    let mut err = String::new();
                    if let Some(mut s) = child.stdout.take() {
                        let _ = s.read_to_string(&mut out);
                    }
                    if let Some(mut s) = child.stderr.take() {
                        let _ = s.read_to_string(&mut err);
                    }
                    return if status.success() {
                        Ok(out)
                    } else {
                        Err(self.fail(format!("client failed ({status}): {err}")))
                    };
                }
                Ok(None) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(self.fail("client did not finish"));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(e) => return Err(self.fail(format!("waiting for client: {e}"))),
            }
        }
    }

    /// SIGTERM with one session held open, so the drain lasts long enough to
    /// see `/readyz` answer 503 `draining`; waits for the exit.
    pub(crate) fn terminate(&mut self) -> Result<Drain, Failure> {
        let mut holder =
            TcpStream::connect(&self.addr).map_err(|e| self.fail(format!("cannot hold a session: {e}")))?;
        let _ = holder.write_all(b"OAP1\x01\x00\x00\x00\x01");
        let pid = self.child.as_ref().map(Child::id).ok_or_else(|| self.fail("not our node"))?;
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().is_ok_and(|s| s.success());
        if !sent {
            return Err(self.fail("kill -TERM failed"));
        }
        let mut saw_draining = false;
        let deadline = Instant::now() + PATIENCE;
        let exit_code = loop {
            if let Some((503, body)) = http_get(&self.admin, "/readyz") {
                saw_draining |= body.contains("\"missing\":[\"draining\"]");
            }
            match self.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => break status.code(),
                _ if Instant::now() > deadline => return Err(self.fail("node did not exit after SIGTERM")),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        self.child = None;
        drop(holder);
        Ok(Drain { saw_draining, exit_code })
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `"name":"value"` from a JSON log line (no JSON parser in xtask).
fn field(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = line.find(&key)? + key.len();
    let len = line[start..].find('"')?;
    Some(line[start..start + len].to_string())
}

/// The value of one exact series line in Prometheus text, 0 when absent.
pub(crate) fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The sum of every series of metric family `name` (any labels).
pub(crate) fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// GET over HTTP/1.1 with `Connection: close`: (status, body).
pub(crate) fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let to = std::net::ToSocketAddrs::to_socket_addrs(addr).ok()?.next()?;
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.split_whitespace().nth(1)?.parse().ok()?, body.to_string()))
}
