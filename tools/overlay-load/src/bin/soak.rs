//! The client side of `cargo xtask soak`: concurrent OAP/1 clients against
//! running nodes for a fixed time, doing handshakes, echoes, cross-node
//! pub/sub, subscribers that stall and resume, and clean and abrupt
//! disconnects. Prints one `key=value` line of totals for xtask to check.
//!
//! ```sh
//! cargo run -p overlay-load --bin soak -- --nodes 127.0.0.1:9501,127.0.0.1:9502 --secs 30 --conc 16
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use oap_codec::{Ack, Caps, Ctrl, Frame, PubAck};
use overlay_core::client::{Client, ConnectOptions};

use overlay_load::{arg, percentile};

/// Echoes per echo round.
const ECHOES: u32 = 20;
/// Messages per pub/sub round.
const MESSAGES: u32 = 50;
/// Longest wait for any single answer.
const PATIENCE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Totals {
    sessions: AtomicU64,
    frames: AtomicU64,
    published: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    failures: AtomicU64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let nodes: Vec<SocketAddr> =
        arg("--nodes").ok_or("--nodes A,B,... is required")?.split(',').map(str::parse).collect::<Result<_, _>>()?;
    let secs: u64 = arg("--secs").map(|s| s.parse()).transpose()?.unwrap_or(30);
    let conc: usize = arg("--conc").map(|s| s.parse()).transpose()?.unwrap_or(16);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let totals = Arc::new(Totals::default());
    let epoch = Instant::now();
    let mut workers = Vec::new();
    for w in 0..conc {
        let (nodes, totals) = (nodes.clone(), totals.clone());
        workers.push(tokio::spawn(async move {
            let mut echo_rtts = Vec::new();
            let mut delivery = Vec::new();
            let mut round = 0u64;
            while Instant::now() < deadline {
                round += 1;
                let here = nodes[(w + round as usize) % nodes.len()];
                let there = nodes[(w + round as usize + 1) % nodes.len()];
                let outcome = match round % 4 {
                    0 => echo(here, &totals, &mut echo_rtts).await,
                    1 => pubsub(here, there, w, round, false, &totals, &mut delivery, epoch).await,
                    2 => pubsub(there, here, w, round, true, &totals, &mut delivery, epoch).await,
                    _ => churn(here, &totals).await,
                };
                if let Err(e) = outcome {
                    totals.failures.fetch_add(1, Ordering::Relaxed);
                    eprintln!("worker {w} round {round}: {e}");
                }
            }
            (echo_rtts, delivery)
        }));
    }
    let (mut echo_rtts, mut delivery) = (Vec::new(), Vec::new());
    for w in workers {
        let (e, d) = w.await?;
        echo_rtts.extend(e);
        delivery.extend(d);
    }
    let t = &totals;
    println!(
        "sessions={} frames={} published={} delivered={} dropped={} failures={} echo_p50_us={} echo_p99_us={} delivery_p50_us={} delivery_p99_us={}",
        t.sessions.load(Ordering::Relaxed),
        t.frames.load(Ordering::Relaxed),
        t.published.load(Ordering::Relaxed),
        t.delivered.load(Ordering::Relaxed),
        t.dropped.load(Ordering::Relaxed),
        t.failures.load(Ordering::Relaxed),
        percentile(&mut echo_rtts, 0.5),
        percentile(&mut echo_rtts, 0.99),
        percentile(&mut delivery, 0.5),
        percentile(&mut delivery, 0.99),
    );
    Ok(())
}

async fn connect(addr: SocketAddr, totals: &Totals) -> Result<Client, String> {
    let c = Client::connect(&ConnectOptions::new(addr).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1))
        .await
        .map_err(|e| e.to_string())?;
    totals.sessions.fetch_add(1, Ordering::Relaxed);
    Ok(c)
}

async fn recv(c: &mut Client) -> Result<Frame, String> {
    loop {
        match tokio::time::timeout(PATIENCE, c.recv()).await.map_err(|_| "no answer within 10 s".to_string())? {
            Ok(Frame::Ctrl(Ctrl::Ping { nonce })) => c.send(&Frame::pong(nonce)).await.map_err(|e| e.to_string())?,
            Ok(frame) => return Ok(frame),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Echo round trips, verified, closed cleanly.
async fn echo(addr: SocketAddr, totals: &Totals, rtts: &mut Vec<u64>) -> Result<(), String> {
    let mut c = connect(addr, totals).await?;
    for i in 0..ECHOES {
        let payload = format!("soak echo {i}");
        let started = Instant::now();
        c.send(&Frame::data(payload.clone())).await.map_err(|e| e.to_string())?;
        match recv(&mut c).await? {
            Frame::Data(p) if p == payload.as_bytes() => rtts.push(started.elapsed().as_micros() as u64),
            other => return Err(format!("echo mismatch: {:?}", other.kind())),
        }
        totals.frames.fetch_add(2, Ordering::Relaxed);
    }
    c.close().await.map_err(|e| e.to_string())
}

/// A subscriber on `sub_at`, a publisher on `pub_at`; every published
/// message must be delivered or reported in a LAGGED. A stalling subscriber
/// stops reading for a while in the middle.
#[allow(clippy::too_many_arguments)]
async fn pubsub(
    sub_at: SocketAddr,
    pub_at: SocketAddr,
    worker: usize,
    round: u64,
    stall: bool,
    totals: &Totals,
    latencies: &mut Vec<u64>,
    epoch: Instant,
) -> Result<(), String> {
    let topic = format!("soak.w{worker}.r{round}");
    let mut s = connect(sub_at, totals).await?;
    s.send(&Frame::Sub { req_id: 1, pattern: topic.parse().map_err(|e| format!("{e}"))? })
        .await
        .map_err(|e| e.to_string())?;
    let Frame::Ack(_) = recv(&mut s).await? else { return Err("SUB not acknowledged".into()) };
    let mut p = connect(pub_at, totals).await?;
    for i in 0..MESSAGES {
        let mut body = BytesMut::with_capacity(16);
        body.put_u64(epoch.elapsed().as_micros() as u64);
        body.put_u32(i);
        p.feed(&Frame::Pub {
            req_id: i + 1,
            topic: topic.parse().map_err(|e| format!("{e}"))?,
            payload: body.freeze(),
        })
        .map_err(|e| e.to_string())?;
    }
    p.flush().await.map_err(|e| e.to_string())?;
    for _ in 0..MESSAGES {
        let Frame::Ack(Ack { publish: Some(PubAck { .. }), .. }) = recv(&mut p).await? else {
            return Err("PUB not acknowledged".into());
        };
    }
    totals.published.fetch_add(u64::from(MESSAGES), Ordering::Relaxed);
    if stall {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut got, mut lagged) = (0u64, 0u64);
    while got + lagged < u64::from(MESSAGES) {
        match recv(&mut s).await? {
            Frame::Msg(m) => {
                let sent = u64::from_be_bytes(m.payload[..8].try_into().map_err(|_| "short payload")?);
                latencies.push((epoch.elapsed().as_micros() as u64).saturating_sub(sent));
                got += 1;
            }
            Frame::Lagged { dropped } => lagged += dropped,
            other => return Err(format!("subscriber got {:?}", other.kind())),
        }
    }
    totals.delivered.fetch_add(got, Ordering::Relaxed);
    totals.dropped.fetch_add(lagged, Ordering::Relaxed);
    totals.frames.fetch_add(u64::from(MESSAGES) * 3 + 2, Ordering::Relaxed);
    p.close().await.map_err(|e| e.to_string())?;
    // The subscriber leaves abruptly: dropped without a close.
    drop(s);
    Ok(())
}

/// Reconnects: a handshake and a PING, then an abrupt drop.
async fn churn(addr: SocketAddr, totals: &Totals) -> Result<(), String> {
    for n in 0..5 {
        let mut c = connect(addr, totals).await?;
        c.send(&Frame::ping(n)).await.map_err(|e| e.to_string())?;
        match recv(&mut c).await? {
            Frame::Ctrl(Ctrl::Pong { nonce }) if nonce == n => {}
            other => return Err(format!("PING answered with {:?}", other.kind())),
        }
        totals.frames.fetch_add(2, Ordering::Relaxed);
    }
    Ok(())
}
