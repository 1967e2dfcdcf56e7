//! Stress drivers for `cargo xtask stress <scenario>`: each runs one attack
//! or overload against a node that xtask started, measures the node from
//! outside (its `/proc` entries, `/metrics`, what clients see), and prints
//! one line `stress <scenario>: pass|FAIL: <figures>`; the exit code says
//! which.
//!
//! ```text
//! stress wide-fanout --addr A --pid P [--subs N] [--size BYTES]
//! stress tls-garbage --addr A --admin H --pid P [--clients N] [--bytes BYTES]
//! stress slowloris   --addr A --pid P [--clients N] [--read-timeout-ms T] [--secs S]
//! stress emfile      --addr A --pid P [--secs S] [--max-held N]
//! stress cgroup      --addr A --admin H --pid P --cgroup DIR [--subs N] [--secs S] [--size BYTES] [--settle-secs S]
//! stress idle-tls    --addr A --pid P --ca PEM [--sessions N] [--secs S]
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use oap_codec::{Caps, Ctrl, Frame, OapCodec};
use overlay_core::client::{Client, ConnectOptions, TlsOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use overlay_load::{arg, encode, hello as session, percentile, proc_kib};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let result = match scenario.as_str() {
        "wide-fanout" => wide_fanout().await,
        "tls-garbage" => tls_garbage().await,
        "slowloris" => slowloris().await,
        "emfile" => emfile().await,
        "cgroup" => cgroup().await,
        "idle-tls" => idle_tls().await,
        other => Err(format!("unknown scenario {other:?}").into()),
    };
    match result {
        Ok((true, figures)) => {
            println!("stress {scenario}: pass: {figures}");
            ExitCode::SUCCESS
        }
        Ok((false, figures)) => {
            println!("stress {scenario}: FAIL: {figures}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("stress {scenario}: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}

type Verdict = Result<(bool, String), BoxError>;

fn addr() -> Result<SocketAddr, BoxError> {
    Ok(arg("--addr").ok_or("--addr missing")?.parse()?)
}

fn pid() -> Result<String, BoxError> {
    arg("--pid").ok_or_else(|| "--pid missing".into())
}

fn admin() -> Result<SocketAddr, BoxError> {
    Ok(arg("--admin").ok_or("--admin missing")?.parse()?)
}

fn num(name: &str, default: u64) -> Result<u64, BoxError> {
    arg(name).map_or(Ok(default), |v| v.parse().map_err(|_| format!("{name} {v}: not a number").into()))
}

/// Reads until one whole frame is decoded.
async fn next_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Result<Frame, BoxError> {
    let mut codec = OapCodec::new();
    loop {
        if let Some(f) = codec.decode(buf)? {
            return Ok(f);
        }
        if s.read_buf(buf).await? == 0 {
            return Err("closed".into());
        }
    }
}

/// One message of `--size` (48 KiB) to `--subs` (10,000) subscribers that
/// all read: every one receives it, and the node's peak RSS grows by at most
/// two frames plus 256 B per subscriber (the frame is shared, charged once).
async fn wide_fanout() -> Verdict {
    let (addr, pid) = (addr()?, pid()?);
    let (subs, size) = (num("--subs", 10_000)? as usize, num("--size", 48 << 10)? as usize);
    let mut tasks = Vec::with_capacity(subs);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<()>(subs);
    for _ in 0..subs {
        let mut s = session(addr, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
        s.write_all(&encode(&Frame::Sub { req_id: 1, pattern: "wide.x".parse()? })).await?;
        let ready = ready_tx.clone();
        tasks.push(tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let Frame::Ack(_) = next_frame(&mut s, &mut buf).await? else {
                return Err::<usize, BoxError>("no ACK".into());
            };
            let _ = ready.send(()).await;
            match next_frame(&mut s, &mut buf).await? {
                Frame::Msg(m) => Ok(m.payload.len()),
                other => Err(format!("expected MSG, got {other:?}").into()),
            }
        }));
    }
    for _ in 0..subs {
        ready_rx.recv().await.ok_or("a subscriber ended early")?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The peak from here on is the fanout's: reset the high-water mark.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let before = proc_kib(&pid, "VmRSS:")?;
    let mut publisher = session(addr, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
    publisher
        .write_all(&encode(&Frame::Pub { req_id: 1, topic: "wide.x".parse()?, payload: vec![7u8; size].into() }))
        .await?;
    let mut received = 0;
    for t in tasks {
        if t.await?? == size {
            received += 1;
        }
    }
    let peak = proc_kib(&pid, "VmHWM:")?;
    let growth = peak.saturating_sub(before);
    let bound = (2 * size as u64 + 256 * subs as u64) / 1024;
    let ok = received == subs && growth <= bound;
    Ok((ok, format!("{received} of {subs} received {size} B; peak RSS +{growth} KiB (bound {bound} KiB)")))
}

/// `--clients` (100) clients each send `--bytes` (1 MiB) of random bytes to
/// the TLS port: all are closed and counted (`reason="tls"`), and the node's
/// RSS grows by less than 10 MiB.
async fn tls_garbage() -> Verdict {
    let (addr, pid) = (addr()?, pid()?);
    let admin = admin()?;
    let (clients, bytes) = (num("--clients", 100)? as usize, num("--bytes", 1 << 20)? as usize);
    let counted_before = metric(admin, "transport_rejected_total{service=\"stress\",reason=\"tls\"}").await?;
    let before = proc_kib(&pid, "VmRSS:")?;
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for seed in 0..clients as u64 {
        let closed = closed.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await?;
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let garbage: Vec<u8> = (0..bytes)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            // The node may close before it has read everything: that is the point.
            let _ = s.write_all(&garbage).await;
            let mut sink = [0u8; 4096];
            let end = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match s.read(&mut sink).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            })
            .await;
            if end.is_ok() {
                closed.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<(), BoxError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let peak = proc_kib(&pid, "VmHWM:")?;
    let after = proc_kib(&pid, "VmRSS:")?;
    let counted = metric(admin, "transport_rejected_total{service=\"stress\",reason=\"tls\"}").await? - counted_before;
    let closed = closed.load(Ordering::Relaxed);
    let growth = peak.saturating_sub(before).max(after.saturating_sub(before));
    let ok = closed == clients as u64 && counted >= clients as f64 && growth < 10 << 10;
    Ok((ok, format!("{closed} of {clients} closed, {counted} counted as tls; RSS +{growth} KiB (bound 10240 KiB)")))
}

/// `--clients` (1,000) clients start a frame and send one more byte a
/// second: each is closed within [read_timeout, read_timeout + 250 ms] of its
/// frame's start, while a well-behaved client's echo p99 rises by less than
/// 100 ms.
async fn slowloris() -> Verdict {
    let addr = addr()?;
    let clients = num("--clients", 1000)? as usize;
    let read_timeout = Duration::from_millis(num("--read-timeout-ms", 5000)?);
    let quiet_p99 = echo_p99(addr, Duration::from_secs(2)).await?;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut s = session(addr, Caps::GOSSIP_V1).await?;
        tasks.push(tokio::spawn(async move {
            // A DATA frame of 100 bytes, of which the header and a byte come
            // now. The clock starts before the write: the node's cannot start
            // earlier, so a close seen early is the node's, never ours.
            let started = Instant::now();
            s.write_all(&[0, 0, 0, 101, 1, 0]).await?;
            let mut buf = BytesMut::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = s.read_buf(&mut buf) => {
                        if r? == 0 {
                            return Ok::<Duration, BoxError>(started.elapsed());
                        }
                    }
                    _ = tick.tick() => { let _ = s.write_all(&[0]).await; }
                }
            }
        }));
    }
    let busy_p99 = echo_p99(addr, read_timeout.saturating_sub(Duration::from_millis(500))).await?;
    let (mut early, mut late, mut worst) = (0, 0, Duration::ZERO);
    for t in tasks {
        let took = t.await??;
        worst = worst.max(took);
        if took < read_timeout {
            early += 1;
        } else if took > read_timeout + Duration::from_millis(250) {
            late += 1;
        }
    }
    let rise = busy_p99.saturating_sub(quiet_p99);
    let ok = early == 0 && late == 0 && rise < 100_000;
    Ok((
        ok,
        format!(
            "{clients} stalled clients closed {} early / {late} late (latest {worst:?} for read_timeout {read_timeout:?}); echo p99 {quiet_p99} -> {busy_p99} us",
            early
        ),
    ))
}

/// Echo round trips for `for_how_long`; their p99 in µs.
async fn echo_p99(addr: SocketAddr, for_how_long: Duration) -> Result<u64, BoxError> {
    let mut s = session(addr, Caps::GOSSIP_V1).await?;
    let frame = encode(&Frame::Data(vec![1u8; 64].into()));
    let mut buf = BytesMut::new();
    let mut rtts = Vec::new();
    let until = Instant::now() + for_how_long;
    while Instant::now() < until {
        let t = Instant::now();
        s.write_all(&frame).await?;
        next_frame(&mut s, &mut buf).await?;
        rtts.push(t.elapsed().as_micros() as u64);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(percentile(&mut rtts, 0.99))
}

/// A client opens connections and holds them for `--secs` (60), past the
/// node's descriptor cap, until its own limit (or `--max-held`) stops it,
/// then keeps trying: the node logs few accept failures (xtask counts
/// them), spends under 5 % of a core, and serves a new client within 1.1 s
/// once the flood stops.
async fn emfile() -> Verdict {
    let (addr, pid) = (addr()?, pid()?);
    let secs = num("--secs", 60)?;
    let max_held = num("--max-held", u64::MAX)? as usize;
    let cpu_before = cpu_ticks(&pid)?;
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0u64;
    while started.elapsed() < Duration::from_secs(secs) {
        if held.len() >= max_held {
            // As if out of descriptors: the attempts fail on the client's side.
            refused += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            // Our own descriptors are gone, or the backlog is full: wait a little.
            Ok(Err(_)) | Err(_) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let flooded = started.elapsed();
    let opened = held.len();
    // Dropped before reading /proc: the flood may have used every descriptor.
    drop(held);
    let cpu = (cpu_ticks(&pid)? - cpu_before) as f64 / ticks_per_sec() / flooded.as_secs_f64();
    let t = Instant::now();
    let mut served = None;
    while t.elapsed() < Duration::from_secs(5) {
        if let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_millis(500), session(addr, Caps::GOSSIP_V1)).await {
            s.write_all(&encode(&Frame::ping(1))).await?;
            let mut buf = BytesMut::new();
            if let Ok(Ok(Frame::Ctrl(_))) =
                tokio::time::timeout(Duration::from_secs(1), next_frame(&mut s, &mut buf)).await
            {
                served = Some(t.elapsed());
                break;
            }
        }
    }
    let ok = cpu < 0.05 && served.is_some_and(|d| d <= Duration::from_millis(1100));
    Ok((
        ok,
        format!(
            "{opened} connections held, {refused} attempts refused in {secs} s; node CPU {:.1} % of a core; a new client served after {served:?}",
            cpu * 100.0
        ),
    ))
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: &str) -> Result<u64, BoxError> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Ok(fields.get(11).ok_or("no utime")?.parse::<u64>()? + fields.get(12).ok_or("no stime")?.parse::<u64>()?)
}

/// Clock ticks per second: 100 on Linux unless the kernel says otherwise.
fn ticks_per_sec() -> f64 {
    100.0
}

/// One series' value from the node's `/metrics`.
async fn metric(admin: SocketAddr, series: &str) -> Result<f64, BoxError> {
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n").await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    Ok(body.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit_once(' ')?.1.parse().ok()).unwrap_or(0.0))
}

/// The node in a memory cgroup (`--cgroup DIR`, which xtask made with a
/// limit), `--subs` (1,000) subscribers that never read (one the node closes
/// comes back at once) and a publisher at full speed for `--secs` (120): no
/// OOM kill, `/readyz` 503 while the node sheds, 200 within 5 s after they
/// leave. Also reports the RSS the node gives back `--settle-secs` (30)
/// after they left.
async fn cgroup() -> Verdict {
    let (addr, pid, admin) = (addr()?, pid()?, admin()?);
    let group = std::path::PathBuf::from(arg("--cgroup").ok_or("--cgroup missing")?);
    let (subs, secs) = (num("--subs", 1000)?, num("--secs", 120)?);
    let (size, settle) = (num("--size", 16 << 10)? as usize, num("--settle-secs", 30)?);
    let files = CgroupFiles::of(&group);
    let limit_mib = cgroup_value(&group, files.limit)? >> 20;
    let baseline = proc_kib(&pid, "VmRSS:")?;
    let stop = CancellationToken::new();
    let closed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for topic in 0..subs {
        tasks.push(tokio::spawn(stuck_subscriber(addr, topic, stop.clone(), closed.clone())));
    }
    let published = Arc::new(AtomicU64::new(0));
    tasks.push(tokio::spawn(flood(addr, subs, size, stop.clone(), published.clone())));
    let (mut probes, mut unready) = (0u64, 0u64);
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        probes += 1;
        if http_status(admin, "/readyz").await != Some(200) {
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop.cancel();
    for t in tasks {
        t.await??;
    }
    let left = Instant::now();
    let mut ready_after = None;
    while left.elapsed() < Duration::from_secs(10) {
        if http_status(admin, "/readyz").await == Some(200) {
            ready_after = Some(left.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(settle).saturating_sub(left.elapsed())).await;
    let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
    let (peak, after) = if alive { (proc_kib(&pid, "VmHWM:")?, proc_kib(&pid, "VmRSS:")?) } else { (0, 0) };
    let oom_kills = cgroup_field(&group, files.events, "oom_kill")?;
    let max_usage_mib = cgroup_value(&group, files.peak)? >> 20;
    let ok = alive && oom_kills == 0 && unready > 0 && ready_after.is_some_and(|d| d <= Duration::from_secs(5));
    Ok((
        ok,
        format!(
            "{}{subs} stuck subscribers ({} closed by the node and back), {} x {size} B published in {secs} s; {oom_kills} OOM kills, cgroup peak {max_usage_mib} of {limit_mib} MiB; /readyz not 200 in {unready} of {probes} probes, 200 again {ready_after:?} after they left; RSS {} MiB before, peak {} MiB, {} MiB {settle} s after",
            if alive { "" } else { "THE NODE DIED; " },
            closed.load(Ordering::Relaxed),
            published.load(Ordering::Relaxed),
            baseline >> 10,
            peak >> 10,
            after >> 10,
        ),
    ))
}

/// A subscriber to `cg.<topic>` that never reads until `stop`; when the
/// node closes it (seen as the read side's end, without reading), it
/// subscribes again.
async fn stuck_subscriber(
    addr: SocketAddr,
    topic: u64,
    stop: CancellationToken,
    closed: Arc<AtomicU64>,
) -> Result<(), BoxError> {
    let sub = encode(&Frame::Sub { req_id: 1, pattern: format!("cg.{topic}").parse()? });
    while !stop.is_cancelled() {
        let Ok(mut s) = session(addr, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if s.write_all(&sub).await.is_err() {
            continue;
        }
        loop {
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            // Readiness is kept until a read clears it, so a close that came
            // after the data that fills the buffer still shows here.
            let ready = tokio::time::timeout(Duration::from_millis(1), s.ready(Interest::READABLE)).await;
            if ready.is_ok_and(|r| r.is_ok_and(|r| r.is_read_closed() || r.is_error())) {
                closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
    Ok(())
}

/// Publishes `size`-byte messages (no receipt asked) to `cg.0` ..
/// `cg.<topics - 1>` in turn, as fast as the node takes them, until `stop`,
/// discarding whatever the node sends back. Every subscriber's queue holds
/// frames of its own: the most memory the delivery budget must bound.
async fn flood(
    addr: SocketAddr,
    topics: u64,
    size: usize,
    stop: CancellationToken,
    published: Arc<AtomicU64>,
) -> Result<(), BoxError> {
    const BATCH: u64 = 16;
    let (mut rd, mut wr) = session(addr, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?.into_split();
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 64 << 10];
        while rd.read(&mut sink).await.is_ok_and(|n| n > 0) {}
    });
    let payload = bytes::Bytes::from(vec![5u8; size]);
    let mut batches = Vec::new();
    for first in (0..topics).step_by(BATCH as usize) {
        let mut batch = Vec::with_capacity(BATCH as usize * (size + 64));
        for topic in first..first + BATCH {
            let topic = format!("cg.{}", topic % topics).parse()?;
            batch.extend_from_slice(&encode(&Frame::Pub { req_id: 0, topic, payload: payload.clone() }));
        }
        batches.push(batch);
    }
    for batch in batches.iter().cycle() {
        tokio::select! {
            () = stop.cancelled() => break,
            written = wr.write_all(batch) => {
                // The node closed the publisher, or is gone: the verdict
                // (alive? OOM kills?) tells which.
                if written.is_err() {
                    break;
                }
                published.fetch_add(BATCH, Ordering::Relaxed);
            }
        }
    }
    drop(wr);
    drain.abort();
    Ok(())
}

/// Where a memory cgroup keeps its limit, its OOM-kill count and its peak
/// usage: cgroup v1's memory controller, or v2's unified hierarchy.
struct CgroupFiles {
    limit: &'static str,
    events: &'static str,
    peak: &'static str,
}

impl CgroupFiles {
    fn of(group: &std::path::Path) -> CgroupFiles {
        if group.join("memory.limit_in_bytes").exists() {
            CgroupFiles {
                limit: "memory.limit_in_bytes",
                events: "memory.oom_control",
                peak: "memory.max_usage_in_bytes",
            }
        } else {
            CgroupFiles { limit: "memory.max", events: "memory.events", peak: "memory.peak" }
        }
    }
}

/// A cgroup file holding one number.
fn cgroup_value(group: &std::path::Path, file: &str) -> Result<u64, BoxError> {
    Ok(std::fs::read_to_string(group.join(file))?.trim().parse()?)
}

/// The number after `name` in a cgroup file of `name value` lines.
fn cgroup_field(group: &std::path::Path, file: &str, name: &str) -> Result<u64, BoxError> {
    let text = std::fs::read_to_string(group.join(file))?;
    let value = text.lines().find_map(|l| l.split_once(' ').filter(|(n, _)| *n == name)).map(|(_, v)| v);
    Ok(value.ok_or_else(|| format!("no {name} in {file}"))?.trim().parse()?)
}

/// The status code of a GET on the admin plane; `None` when it does not
/// answer within a second.
async fn http_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let get = async {
        let mut s = TcpStream::connect(admin).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: s\r\nConnection: close\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(1), get).await.ok().flatten()
}

/// `--sessions` (10,000) idle TLS sessions (the hybrid X25519MLKEM768 group
/// first, as the node prefers) held for `--secs` (600), each answering the
/// node's keepalive PINGs: at most 16 KiB of node RSS per session, measured
/// at the end (after keepalive rounds), and every session alive then.
async fn idle_tls() -> Verdict {
    let (addr, pid) = (addr()?, pid()?);
    let ca = arg("--ca").ok_or("--ca missing")?;
    let (sessions, secs) = (num("--sessions", 10_000)? as usize, num("--secs", 600)?);
    let tls = TlsOptions::from_ca(std::path::Path::new(&ca), overlay_core::PqMode::Prefer)?.name("localhost");
    let opts = ConnectOptions::new(addr).caps(Caps::GOSSIP_V1).tls(tls);
    let before = proc_kib(&pid, "VmRSS:")?;
    let stop = CancellationToken::new();
    let pongs = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        let mut c = Client::connect(&opts).await?;
        let (stop, pongs) = (stop.clone(), pongs.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    () = stop.cancelled() => return Ok::<(), BoxError>(()),
                    frame = c.recv() => frame?,
                };
                if let Frame::Ctrl(Ctrl::Ping { nonce }) = frame {
                    c.send(&Frame::pong(nonce)).await?;
                    pongs.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let established = proc_kib(&pid, "VmRSS:")?;
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let after = proc_kib(&pid, "VmRSS:")?;
    let early = tasks.iter().filter(|t| t.is_finished()).count();
    stop.cancel();
    let mut lost = 0;
    for t in tasks {
        if !matches!(t.await, Ok(Ok(()))) {
            lost += 1;
        }
    }
    let kib = |rss: u64| rss.saturating_sub(before) as f64 / sessions as f64;
    let pongs = pongs.load(Ordering::Relaxed);
    let ok = early == 0 && lost == 0 && pongs >= sessions as u64 && kib(after) <= 16.0;
    Ok((
        ok,
        format!(
            "{sessions} TLS sessions for {secs} s, {pongs} keepalive PONGs, {lost} lost; node RSS per session {:.2} KiB established, {:.2} KiB at the end (bound 16)",
            kib(established),
            kib(after)
        ),
    ))
}
