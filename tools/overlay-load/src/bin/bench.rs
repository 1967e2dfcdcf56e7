//! The load generator of `cargo xtask bench`: runs in its own process
//! against nodes xtask started, and prints a table (and JSON with `--json`).
//!
//! ```sh
//! cargo run --release -p overlay-load --bin bench -- --overlay 127.0.0.1:9500 [--secs 3]
//!     [--rss ADDR/PID] [--tls-overlay ADDR --ca ca.pem [--rss-tls ADDR/PID]] [--line A,B,C]
//!     [--redis ADDR] [--nats [NAME=]ADDR]... [--rounds N] [--json out.json]
//! cargo run --release -p overlay-load --bin bench -- --make-certs DIR   # CA + localhost cert for a TLS node
//! cargo run --release -p overlay-load --bin bench -- --nats-only ADDR    # only the NATS fanout driver
//! ... --only rtt|echo|fanout|connect|rss|tls|line                             # one group of workloads
//! ... --only fanout --case 1x1024 (or 8x64@300000, paced)                      # one fanout workload
//! ```
//!
//! Workloads: echo round trip (1 connection), pipelined echo (1 and 8
//! connections; 64 B, 1 KiB, 64 KiB), pub/sub fanout (1 -> 1 and 1 -> 8;
//! 64 B and 1 KiB), connect + hello rate (plain and TLS), RSS per idle
//! session at 10,000 sessions (plain and TLS), delivery through a 3-node line.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use oap_codec::{Caps, Frame, Hello};
use overlay_core::client::{Client, ConnectOptions, TlsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use overlay_load::{arg, args_all, encode, hello, percentile};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Round trips in the echo latency workload: enough that its p99 is not a
/// handful of scheduler hiccups on a shared 2-core machine.
const RTT_SAMPLES: usize = 30_000;
/// Frames in flight per connection in pipelined echo.
const WINDOW: u64 = 256;
/// Messages per full-speed fanout run (long enough to leave start-up effects
/// such as TCP window growth out of the rate).
const FANOUT_MESSAGES: u64 = 1_000_000;
/// Paced fanouts: (subscribers, payload bytes, publishes per second), each
/// well below what both nats-server and svc-overlay sustain here.
const PACED: [(usize, usize, u64); 4] = [(1, 64, 1_000_000), (1, 1024, 300_000), (8, 64, 300_000), (8, 1024, 60_000)];
/// Idle sessions for the RSS measurement.
const IDLE_SESSIONS: usize = 10_000;

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
    p50_us: Option<u64>,
    p99_us: Option<u64>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    if let Some(dir) = arg("--make-certs") {
        return make_certs(&dir);
    }
    if let Some(n) = arg("--nats-only") {
        // Only the NATS fanout runs (for checking the driver alone).
        for (subs, size) in [(1, 64), (8, 64)] {
            let (rate, p50, p99, lost) = nats_fanout(n.parse()?, subs, size, None).await?;
            println!("nats 1 -> {subs}, {size} B: {rate:.0} msg/s, p50 {p50} us, p99 {p99} us, lost {lost}");
        }
        return Ok(());
    }
    let overlay: SocketAddr = arg("--overlay").ok_or("--overlay ADDR is required")?.parse()?;
    let secs: u64 = arg("--secs").map(|s| s.parse()).transpose()?.unwrap_or(3);
    let run_for = Duration::from_secs(secs);
    let mut rows = Vec::new();

    let redis: Option<SocketAddr> = arg("--redis").map(|a| a.parse()).transpose()?;
    // One or more NATS servers (`--nats "nats-server 2.15.1=ADDR"`): each
    // fanout is compared with every one, and with the best of them.
    let nats: Vec<(String, SocketAddr)> = args_all("--nats")
        .iter()
        .map(|a| {
            let (name, addr) = a.rsplit_once('=').unwrap_or(("nats-server", a));
            Ok((name.to_string(), addr.parse()?))
        })
        .collect::<Result<_, BoxError>>()?;
    // `--only rtt|echo|fanout|connect|tls|line` runs one group (while tuning).
    let only = arg("--only");
    let want = |group: &str| only.as_deref().is_none_or(|o| o == group);
    // Every compared workload runs `--rounds` times (3), alternating between
    // the servers (and which goes first); the table shows each figure's median over the rounds (and
    // the most messages lost in any round). One round on this shared 2-core
    // machine swings by 10-20 %.
    let rounds: usize = arg("--rounds").map(|s| s.parse()).transpose()?.unwrap_or(3).max(1);
    if want("rtt") {
        let (mut ours, mut theirs) = (Rounds::default(), Rounds::default());
        for round in 0..rounds {
            for side in order(round) {
                match side {
                    Side::Ours => {
                        let (p50, p99) = echo_rtt(Echo::Overlay, overlay, RTT_SAMPLES).await?;
                        ours.push((0.0, p50, p99, 0));
                    }
                    Side::Theirs => {
                        if let Some(r) = redis {
                            let (p50, p99) = echo_rtt(Echo::Redis, r, RTT_SAMPLES).await?;
                            theirs.push((0.0, p50, p99, 0));
                        }
                    }
                }
            }
        }
        let (_, p50, p99, _) = ours.median();
        rows.push(latency_row("echo round trip, 1 conn, 64 B", p50, p99));
        if redis.is_some() {
            let (_, p50, p99, _) = theirs.median();
            rows.push(latency_row("  redis-server ECHO round trip", p50, p99));
        }
    }
    for conns in [1usize, 8].into_iter().filter(|_| want("echo")) {
        for size in [64usize, 1024, 65536] {
            let (mut ours, mut theirs) = (Rounds::default(), Rounds::default());
            for round in 0..rounds {
                for side in order(round) {
                    match side {
                        Side::Ours => {
                            ours.push((pipelined_echo(Echo::Overlay, overlay, conns, size, run_for).await?, 0, 0, 0));
                        }
                        Side::Theirs => {
                            if let Some(r) = redis {
                                theirs.push((pipelined_echo(Echo::Redis, r, conns, size, run_for).await?, 0, 0, 0));
                            }
                        }
                    }
                }
            }
            let rate = ours.median().0;
            rows.push(rate_row(&format!("pipelined echo, {conns} conn, {}", human(size)), rate, "echo/s"));
            if redis.is_some() {
                rows.push(ratio_row("redis-server ECHO", theirs.median().0, "echo/s", rate));
            }
        }
    }
    // Fanout: at full speed, then at a fixed publish rate every server
    // sustains (at full speed the latency is only how full the buffers on
    // the way are). Each round runs every server, in an order that rotates.
    let full = [(1usize, 64usize), (1, 1024), (8, 64), (8, 1024)].map(|(subs, size)| (subs, size, None));
    let paced = PACED.map(|(subs, size, pace)| (subs, size, Some(pace)));
    let case = arg("--case");
    let wanted = |(subs, size, pace): &(usize, usize, Option<u64>)| {
        let name = format!("{subs}x{size}{}", pace.map_or_else(String::new, |p| format!("@{p}")));
        want("fanout") && case.as_ref().is_none_or(|c| *c == name)
    };
    for (subs, size, pace) in full.into_iter().chain(paced).filter(wanted) {
        let mut ours = Rounds::default();
        let mut theirs: Vec<Rounds> = nats.iter().map(|_| Rounds::default()).collect();
        let sides: Vec<Option<usize>> = std::iter::once(None).chain((0..nats.len()).map(Some)).collect();
        for round in 0..rounds {
            for side in rotation(&sides, round) {
                match side {
                    None => ours.push(fanout(overlay, overlay, subs, size, pace).await?),
                    Some(k) => theirs[k].push(nats_fanout(nats[k].1, subs, size, pace).await?),
                }
            }
        }
        let at = pace.map_or_else(String::new, |p| format!(" at {p} pub/s"));
        let (rate, p50, p99, lost) = ours.median();
        let name = format!("fanout 1 -> {subs}, {}{at} (lost {lost})", human(size));
        rows.push(Row { name, value: rate, unit: "msg/s", p50_us: Some(p50), p99_us: Some(p99) });
        let mut best = 0.0f64;
        for ((who, _), runs) in nats.iter().zip(&theirs) {
            let (theirs, p50, p99, lost) = runs.median();
            best = best.max(theirs);
            let mut row = match pace {
                None => ratio_row(&format!("{who} (lost {lost})"), theirs, "msg/s", rate),
                Some(_) => rate_row(&format!("  {who} (lost {lost})"), theirs, "msg/s"),
            };
            (row.p50_us, row.p99_us) = (Some(p50), Some(p99));
            rows.push(row);
        }
        if pace.is_none() && nats.len() > 1 {
            rows.push(ratio_row("the best NATS", best, "msg/s", rate));
        }
    }
    if want("connect") {
        let (mut ours, mut theirs) = (Rounds::default(), Rounds::default());
        for round in 0..rounds {
            for side in order(round) {
                match side {
                    Side::Ours => {
                        ours.push((connect_rate(overlay, None, run_for).await?, 0, 0, 0));
                    }
                    Side::Theirs => {
                        if let Some(r) = redis {
                            theirs.push((redis_connect_rate(r, run_for).await?, 0, 0, 0));
                        }
                    }
                }
            }
        }
        let rate = ours.median().0;
        rows.push(rate_row("connect + hello + PING, plain", rate, "conn/s"));
        if redis.is_some() {
            rows.push(ratio_row("redis-server connect + PING", theirs.median().0, "conn/s", rate));
        }
    }
    // Idle memory is measured on fresh nodes (`ADDR/PID`): a node that ran
    // the other workloads reuses memory it freed and would under-report.
    if let Some(fresh) = arg("--rss").filter(|_| want("rss")) {
        let (addr, pid) = fresh.split_once('/').ok_or("--rss ADDR/PID")?;
        let kib = idle_rss(addr.parse()?, None, pid).await?;
        rows.push(rate_row(&format!("RSS per idle session, plain ({IDLE_SESSIONS})"), kib, "KiB"));
    }
    if let (Some(addr), Some(ca), true) = (arg("--tls-overlay"), arg("--ca"), want("tls")) {
        let addr: SocketAddr = addr.parse()?;
        let tls = ron_transport::tls::client_config(std::path::Path::new(&ca), ron_transport::tls::PqMode::Prefer)?;
        rows.push(Row {
            name: "connect + hello, TLS (X25519MLKEM768)".into(),
            value: connect_rate(addr, Some(tls.clone()), run_for).await?,
            unit: "conn/s",
            p50_us: None,
            p99_us: None,
        });
        if let Some(fresh) = arg("--rss-tls") {
            let (addr, pid) = fresh.split_once('/').ok_or("--rss-tls ADDR/PID")?;
            let kib = idle_rss(addr.parse()?, Some(tls), pid).await?;
            rows.push(rate_row(&format!("RSS per idle session, TLS ({IDLE_SESSIONS})"), kib, "KiB"));
        }
    }
    if let Some(line) = arg("--line").filter(|_| want("line")) {
        let line: Vec<SocketAddr> = line.split(',').map(str::parse).collect::<Result<_, _>>()?;
        let (first, last) = (line[0], line[line.len() - 1]);
        let (rate, p50, p99, lost) = fanout(first, last, 1, 64, None).await?;
        rows.push(Row {
            name: format!("{}-node line, 1 -> 1, 64 B (lost {lost})", line.len()),
            value: rate,
            unit: "msg/s",
            p50_us: Some(p50),
            p99_us: Some(p99),
        });
    }

    println!("{:<52} {:>14} {:>8} {:>10} {:>10}", "workload", "value", "unit", "p50", "p99");
    for r in &rows {
        let us = |v: Option<u64>| v.map_or_else(String::new, |v| format!("{:.3}ms", v as f64 / 1000.0));
        let value = if r.unit.is_empty() { String::new() } else { format!("{:.1}", r.value) };
        println!("{:<52} {:>14} {:>8} {:>10} {:>10}", r.name, value, r.unit, us(r.p50_us), us(r.p99_us));
    }
    if let Some(path) = arg("--json") {
        let items: Vec<String> = rows
            .iter()
            .map(|r| {
                format!(
                    "{{\"workload\":{:?},\"value\":{},\"unit\":{:?},\"p50_us\":{},\"p99_us\":{}}}",
                    r.name,
                    r.value,
                    r.unit,
                    r.p50_us.map_or("null".into(), |v| v.to_string()),
                    r.p99_us.map_or("null".into(), |v| v.to_string())
                )
            })
            .collect();
        std::fs::write(path, format!("[{}]\n", items.join(",\n")))?;
    }
    Ok(())
}

/// Which server a round runs first.
#[derive(Clone, Copy)]
enum Side {
    Ours,
    Theirs,
}

/// Rounds alternate which server goes first, so neither always meets a
/// machine warmed (or tired) by the other.
fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) { [Side::Ours, Side::Theirs] } else { [Side::Theirs, Side::Ours] }
}

/// `sides` rotated by `round`: with several servers, each goes first in
/// turn.
fn rotation<T: Copy>(sides: &[T], round: usize) -> Vec<T> {
    let k = round % sides.len().max(1);
    sides[k..].iter().chain(&sides[..k]).copied().collect()
}

/// One workload's results over several rounds: (rate, p50 µs, p99 µs, lost).
#[derive(Default)]
struct Rounds(Vec<(f64, u64, u64, u64)>);

impl Rounds {
    fn push(&mut self, round: (f64, u64, u64, u64)) {
        self.0.push(round);
    }

    /// The median of each figure, and the most lost in any round.
    fn median(&self) -> (f64, u64, u64, u64) {
        let mid = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        };
        let rate = mid(self.0.iter().map(|r| r.0).collect());
        let p50 = mid(self.0.iter().map(|r| r.1 as f64).collect()) as u64;
        let p99 = mid(self.0.iter().map(|r| r.2 as f64).collect()) as u64;
        (rate, p50, p99, self.0.iter().map(|r| r.3).max().unwrap_or(0))
    }
}

/// A throughput row.
fn rate_row(name: &str, value: f64, unit: &'static str) -> Row {
    Row { name: name.into(), value, unit, p50_us: None, p99_us: None }
}

/// A latency-only row.
fn latency_row(name: &str, p50: u64, p99: u64) -> Row {
    Row { name: name.into(), value: 0.0, unit: "", p50_us: Some(p50), p99_us: Some(p99) }
}

/// A competitor's row: its value, with ours as a ratio of it in the name.
fn ratio_row(who: &str, theirs: f64, unit: &'static str, ours: f64) -> Row {
    rate_row(&format!("  {who}: svc-overlay = {:.2}x", ours / theirs.max(1e-9)), theirs, unit)
}

fn human(size: usize) -> String {
    if size >= 1024 { format!("{} KiB", size / 1024) } else { format!("{size} B") }
}

/// Reads whole frames; calls `each` with every frame's bytes.
async fn read_frames(
    rd: &mut (impl AsyncReadExt + Unpin),
    buf: &mut BytesMut,
    mut each: impl FnMut(&[u8]) -> bool,
) -> Result<(), BoxError> {
    loop {
        while buf.len() >= 4 {
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                break;
            }
            let frame = buf.split_to(4 + len);
            if !each(&frame) {
                return Ok(());
            }
        }
        buf.reserve(64 * 1024);
        if rd.read_buf(buf).await? == 0 {
            return Err("node closed the connection".into());
        }
    }
}

/// Who answers the echo workloads: an overlay node (`DATA`) or Redis (`ECHO`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Echo {
    Overlay,
    Redis,
}

impl Echo {
    async fn open(self, addr: SocketAddr) -> Result<TcpStream, BoxError> {
        match self {
            Echo::Overlay => hello(addr, Caps::GOSSIP_V1).await,
            Echo::Redis => {
                let s = TcpStream::connect(addr).await?;
                s.set_nodelay(true)?;
                Ok(s)
            }
        }
    }

    fn request(self, size: usize) -> Bytes {
        let payload = vec![7u8; size];
        match self {
            Echo::Overlay => encode(&Frame::Data(Bytes::from(payload))),
            Echo::Redis => {
                let mut b = BytesMut::new();
                b.extend_from_slice(format!("*2\r\n$4\r\nECHO\r\n${size}\r\n").as_bytes());
                b.extend_from_slice(&payload);
                b.extend_from_slice(b"\r\n");
                b.freeze()
            }
        }
    }

    /// Consumes the complete replies at the front of `buf`; how many.
    fn take(self, buf: &mut BytesMut) -> u64 {
        let mut n = 0;
        loop {
            let whole = match self {
                Echo::Overlay => (buf.len() >= 4)
                    .then(|| 4 + u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize)
                    .filter(|len| buf.len() >= *len),
                Echo::Redis => resp_len(buf),
            };
            let Some(len) = whole else { return n };
            let _ = buf.split_to(len);
            n += 1;
        }
    }
}

/// Bytes of the RESP reply at the front of `buf` (`$n\r\n...\r\n` or `+...\r\n`), once whole.
fn resp_len(buf: &[u8]) -> Option<usize> {
    let eol = buf.windows(2).position(|w| w == b"\r\n")?;
    if buf.first() == Some(&b'$') {
        let n: usize = std::str::from_utf8(&buf[1..eol]).ok()?.parse().ok()?;
        let total = eol + 2 + n + 2;
        (buf.len() >= total).then_some(total)
    } else {
        Some(eol + 2)
    }
}

async fn echo_rtt(proto: Echo, addr: SocketAddr, n: usize) -> Result<(u64, u64), BoxError> {
    let mut s = proto.open(addr).await?;
    let request = proto.request(64);
    let mut rtts = Vec::with_capacity(n);
    let mut buf = BytesMut::new();
    for _ in 0..n {
        let started = Instant::now();
        s.write_all(&request).await?;
        while proto.take(&mut buf) == 0 {
            buf.reserve(4096);
            if s.read_buf(&mut buf).await? == 0 {
                return Err("closed".into());
            }
        }
        rtts.push(started.elapsed().as_micros() as u64);
    }
    Ok((percentile(&mut rtts, 0.5), percentile(&mut rtts, 0.99)))
}

async fn pipelined_echo(
    proto: Echo,
    addr: SocketAddr,
    conns: usize,
    size: usize,
    run_for: Duration,
) -> Result<f64, BoxError> {
    let total = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + run_for;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let s = proto.open(addr).await?;
        let total = total.clone();
        tasks.push(tokio::spawn(async move {
            let (mut rd, mut wr) = s.into_split();
            let frame = proto.request(size);
            let received = Arc::new(AtomicU64::new(0));
            let room = Arc::new(Notify::new());
            let writer = {
                let (received, room) = (received.clone(), room.clone());
                tokio::spawn(async move {
                    let mut sent = 0u64;
                    let mut batch = BytesMut::new();
                    while Instant::now() < deadline {
                        let credit = WINDOW - (sent - received.load(Ordering::Acquire)).min(WINDOW);
                        if credit == 0 {
                            room.notified().await;
                            continue;
                        }
                        batch.clear();
                        for _ in 0..credit.min(64) {
                            batch.extend_from_slice(&frame);
                        }
                        sent += credit.min(64);
                        if wr.write_all(&batch).await.is_err() {
                            break;
                        }
                    }
                    sent
                })
            };
            let mut buf = BytesMut::new();
            let mut got = 0u64;
            let reading = async {
                loop {
                    buf.reserve(64 * 1024);
                    if rd.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        return;
                    }
                    got += proto.take(&mut buf);
                    received.store(got, Ordering::Release);
                    room.notify_one();
                }
            };
            let _ = tokio::time::timeout_at(deadline.into(), reading).await;
            writer.abort();
            total.fetch_add(got, Ordering::Relaxed);
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await?;
    }
    Ok(total.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64().max(run_for.as_secs_f64()))
}

/// 1 publisher on `pub_at`, `subs` subscribers on `sub_at`; (delivered/s, p50 µs, p99 µs, lost).
async fn fanout(
    pub_at: SocketAddr,
    sub_at: SocketAddr,
    subs: usize,
    size: usize,
    pace: Option<u64>,
) -> Result<(f64, u64, u64, u64), BoxError> {
    let n = messages(pace);
    let epoch = Instant::now();
    let topic: oap_codec::Topic = "bench.fanout".parse()?;
    let mut readers = Vec::new();
    for _ in 0..subs {
        let mut s = hello(sub_at, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
        s.write_all(&encode(&Frame::Sub { req_id: 1, pattern: "bench.>".parse()? })).await?;
        let mut buf = BytesMut::new();
        read_frames(&mut s, &mut buf, |_| false).await?;
        // MSG: len(4) kind(1) topic_len(1) topic msg_id(16) hops(1) payload
        let at = 4 + 1 + 1 + topic.as_bytes().len() + 16 + 1;
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            let (mut got, mut lost) = (0u64, 0u64);
            let r = tokio::time::timeout(
                Duration::from_secs(120),
                read_frames(&mut s, &mut buf, |f| {
                    match f[4] {
                        0x06 => {
                            let sent = u64::from_be_bytes(f[at..at + 8].try_into().unwrap_or_default());
                            lat.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
                            got += 1;
                        }
                        0x0A => lost += u64::from_be_bytes(f[5..13].try_into().unwrap_or_default()),
                        _ => {}
                    }
                    got + lost < n
                }),
            )
            .await;
            (got, lost + n.saturating_sub(got + lost) * u64::from(r.is_err()), epoch.elapsed(), lat)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut p = hello(pub_at, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
    let started = epoch.elapsed();
    publish_all(&mut p, epoch, size, pace, |batch, payload| {
        Frame::Pub { req_id: 0, topic: topic.clone(), payload }.encode_into(batch);
    })
    .await?;
    summarize(readers, started).await
}

/// Connect + hello, as fast as 4 clients can, for `run_for`. A plain
/// connection also makes one `PING`/`PONG` round trip, as the redis workload
/// does (the node sends its hello on accept, before it has read the
/// client's: the round trip proves it was read and accepted), and closes
/// with a reset (zero linger), as the redis workload's do: otherwise both
/// measure only the kernel's search for a free port among the load
/// generator's TIME_WAIT sockets (both came out at ~14.4 k/s).
async fn connect_rate(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    run_for: Duration,
) -> Result<f64, BoxError> {
    let deadline = Instant::now() + run_for;
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let tls = tls.map(|cfg| session_options(addr, Some(cfg)));
    for _ in 0..4 {
        let (count, tls) = (count.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let ok = match &tls {
                    None => connect_ping(addr).await.is_ok(),
                    Some(opts) => Client::connect(opts).await.is_ok(),
                };
                if ok {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / run_for.as_secs_f64())
}

fn rss_kib(pid: &str) -> Result<u64, BoxError> {
    overlay_load::proc_kib(pid, "VmRSS:")
}

async fn idle_rss(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>, pid: &str) -> Result<f64, BoxError> {
    let opts = session_options(addr, tls);
    let before = rss_kib(pid)?;
    let mut held = Vec::with_capacity(IDLE_SESSIONS);
    for _ in 0..IDLE_SESSIONS {
        held.push(Client::connect(&opts).await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    drop(held);
    Ok(after.saturating_sub(before) as f64 / IDLE_SESSIONS as f64)
}

/// A gossip-only session to `addr`, over TLS (checked for `localhost`) when
/// `tls` is given.
fn session_options(addr: SocketAddr, tls: Option<Arc<rustls::ClientConfig>>) -> ConnectOptions {
    let opts = ConnectOptions::new(addr).caps(Caps::GOSSIP_V1);
    match tls {
        Some(cfg) => opts.tls(TlsOptions::from_config(cfg).name("localhost")),
        None => opts,
    }
}

fn make_certs(dir: &str) -> Result<(), BoxError> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(dir.join("cert.pem"), cert.pem())?;
    std::fs::write(dir.join("key.pem"), key.serialize_pem())?;
    Ok(())
}

/// Reads from `s` into `buf` until `line` has been seen; drops up to it.
async fn until_line(s: &mut TcpStream, buf: &mut BytesMut, line: &[u8]) -> Result<(), BoxError> {
    loop {
        if let Some(at) = buf.windows(line.len()).position(|w| w == line) {
            let _ = buf.split_to(at + line.len());
            return Ok(());
        }
        buf.reserve(4096);
        if s.read_buf(buf).await? == 0 {
            return Err("closed".into());
        }
    }
}

/// A NATS connection: INFO read, CONNECT (and `extra`) sent, PONG seen.
async fn nats_open(addr: SocketAddr, extra: &str) -> Result<(TcpStream, BytesMut), BoxError> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut buf = BytesMut::new();
    until_line(&mut s, &mut buf, b"\r\n").await?;
    s.write_all(format!("CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\n{extra}PING\r\n").as_bytes()).await?;
    until_line(&mut s, &mut buf, b"PONG\r\n").await?;
    Ok((s, buf))
}

/// NATS fanout as `fanout` does it: (delivered/s, p50 µs, p99 µs, lost).
async fn nats_fanout(
    addr: SocketAddr,
    subs: usize,
    size: usize,
    pace: Option<u64>,
) -> Result<(f64, u64, u64, u64), BoxError> {
    let n = messages(pace);
    let epoch = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..subs {
        let (mut s, mut buf) = nats_open(addr, "SUB bench.fanout 1\r\n").await?;
        readers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n as usize);
            let mut got = 0u64;
            let reading = async {
                while got < n {
                    // MSG <subject> <sid> <#bytes>\r\n<payload>\r\n
                    while let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") {
                        if buf.starts_with(b"MSG ") {
                            let n: usize = std::str::from_utf8(&buf[..eol])
                                .ok()
                                .and_then(|h| h.rsplit(' ').next()?.parse().ok())
                                .unwrap_or(0);
                            if buf.len() < eol + 2 + n + 2 {
                                break;
                            }
                            let body = &buf[eol + 2..eol + 2 + n];
                            let sent = u64::from_be_bytes(body[..8].try_into().unwrap_or_default());
                            lat.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
                            got += 1;
                            let _ = buf.split_to(eol + 2 + n + 2);
                        } else {
                            let ping = &buf[..eol] == b"PING";
                            let _ = buf.split_to(eol + 2);
                            if ping {
                                let _ = s.write_all(b"PONG\r\n").await;
                            }
                        }
                    }
                    if got >= n {
                        break;
                    }
                    buf.reserve(64 * 1024);
                    if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(120), reading).await;
            (got, n - got.min(n), epoch.elapsed(), lat)
        }));
    }
    let (mut p, _) = nats_open(addr, "").await?;
    let started = epoch.elapsed();
    publish_all(&mut p, epoch, size, pace, |batch, payload| {
        // Written in place: a `format!` per message would slow this publisher
        // (and so NATS's figures) with an allocation the overlay's does not pay.
        let _ = write!(batch, "PUB bench.fanout {}\r\n", payload.len());
        batch.extend_from_slice(&payload);
        batch.extend_from_slice(b"\r\n");
    })
    .await?;
    summarize(readers, started).await
}

/// svc-overlay: connect, our hello with a `PING` right behind it (one
/// write, as a client may), the node's hello, `PONG`, close with a reset.
async fn connect_ping(addr: SocketAddr) -> Result<(), BoxError> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let mut first = BytesMut::from(&Hello::new(Caps::GOSSIP_V1).encode()[..]);
    Frame::ping(1).encode_into(&mut first);
    s.write_all(&first).await?;
    let mut theirs = [0u8; 9];
    s.read_exact(&mut theirs).await?;
    let mut buf = BytesMut::new();
    // Until a CTRL (kind 0x02) PONG (op 0x02).
    read_frames(&mut s, &mut buf, |f| !(f[4] == 0x02 && f.get(5) == Some(&0x02))).await?;
    Ok(s.set_zero_linger()?)
}

/// Redis: connect, `PING`, `+PONG`, as fast as 4 clients can.
async fn redis_connect_rate(addr: SocketAddr, run_for: Duration) -> Result<f64, BoxError> {
    let deadline = Instant::now() + run_for;
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let count = count.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let once = async {
                    let mut s = TcpStream::connect(addr).await?;
                    s.set_nodelay(true)?;
                    s.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
                    let mut buf = BytesMut::new();
                    until_line(&mut s, &mut buf, b"+PONG\r\n").await?;
                    // As for svc-overlay: closed with a reset, so the load
                    // generator's ports do not pile up in TIME_WAIT.
                    Ok::<_, BoxError>(s.set_zero_linger()?)
                };
                if once.await.is_ok() {
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    Ok(count.load(Ordering::Relaxed) as f64 / run_for.as_secs_f64())
}

/// What one subscriber saw: (delivered, lost, when it finished, latencies in µs).
type Seen = (u64, u64, Duration, Vec<u64>);

/// (delivered/s over all subscribers, p50 µs, p99 µs, lost) since `started`.
async fn summarize(
    readers: Vec<tokio::task::JoinHandle<Seen>>,
    started: Duration,
) -> Result<(f64, u64, u64, u64), BoxError> {
    let (mut delivered, mut lost, mut last, mut lat) = (0, 0, Duration::ZERO, Vec::new());
    for r in readers {
        let (g, l, done, mut v) = r.await?;
        delivered += g;
        lost += l;
        last = last.max(done);
        lat.append(&mut v);
    }
    let rate = delivered as f64 / (last - started).as_secs_f64();
    Ok((rate, percentile(&mut lat, 0.5), percentile(&mut lat, 0.99), lost))
}

/// How many messages a fanout run publishes: [`FANOUT_MESSAGES`] at full
/// speed, one second's worth when paced.
fn messages(pace: Option<u64>) -> u64 {
    pace.unwrap_or(FANOUT_MESSAGES)
}

/// Publishes [`messages`] payloads of `size` bytes (a send timestamp
/// first), encoded by `put`, written 64 at a time: as fast as possible, or
/// at `pace` messages per second.
async fn publish_all(
    p: &mut TcpStream,
    epoch: Instant,
    size: usize,
    pace: Option<u64>,
    mut put: impl FnMut(&mut BytesMut, Bytes),
) -> Result<(), BoxError> {
    let mut batch = BytesMut::new();
    let mut body = BytesMut::new();
    let start = tokio::time::Instant::now();
    for i in 0..messages(pace) {
        if let Some(rate) = pace.filter(|_| i % 64 == 0) {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate as f64)).await;
        }
        body.clear();
        body.put_u64(epoch.elapsed().as_micros() as u64);
        body.resize(size.max(8), 0);
        put(&mut batch, body.split().freeze());
        if i % 64 == 63 {
            p.write_all(&batch).await?;
            batch.clear();
        }
    }
    p.write_all(&batch).await?;
    Ok(())
}
