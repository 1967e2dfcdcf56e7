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
//! ```

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use oap_codec::{Caps, Frame, OapCodec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder;

mod common;
use common::{arg, encode, hello as session, percentile, proc_kib};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> ExitCode {
    let scenario = std::env::args().nth(1).unwrap_or_default();
    let result = match scenario.as_str() {
        "wide-fanout" => wide_fanout().await,
        "tls-garbage" => tls_garbage().await,
        "slowloris" => slowloris().await,
        "emfile" => emfile().await,
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
    let admin: SocketAddr = arg("--admin").ok_or("--admin missing")?.parse()?;
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
