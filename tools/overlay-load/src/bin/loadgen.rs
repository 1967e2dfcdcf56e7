//! Pub/sub load over loopback: fanout 1 -> 1 and 1 -> 8 with 64 B and 1 KiB
//! messages, and delivery across a 3-node line. Nodes run in this process;
//! every client speaks OAP/1 over a real TCP socket.
//!
//! ```sh
//! cargo run --release -p overlay-load --bin loadgen -- [MESSAGES]
//! ```
//!
//! Reports messages/s delivered (all subscribers together), messages lost
//! (must be 0: every subscriber reads as fast as it can) and p50/p99
//! publish-to-delivery latency.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use oap_codec::{Caps, Ctrl, Frame};
use overlay_core::client::{Client, ConnectOptions};
use overlay_core::{Overlay, OverlayConfig};

use overlay_load::percentile;

/// Publishes between flushes.
const BATCH: usize = 64;

struct Report {
    name: String,
    delivered: u64,
    lost: u64,
    elapsed: Duration,
    latencies: Vec<u64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(200_000);
    let mut reports = Vec::new();
    for (subs, size) in [(1, 64), (1, 1024), (8, 64), (8, 1024)] {
        let node = start(vec![]).await?;
        let name = format!("fanout 1 -> {subs}, {size} B");
        reports.push(run(&name, &node, &node, subs, size, messages).await?);
        node.shutdown().await;
    }
    let c = start(vec![]).await?;
    let b = start(vec![c.local_addr()]).await?;
    let a = start(vec![b.local_addr()]).await?;
    while a.peers_connected() < 1 || b.peers_connected() < 2 || c.peers_connected() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reports.push(run("3-node line, 1 -> 1, 64 B", &a, &c, 1, 64, messages).await?);
    for n in [a, b, c] {
        n.shutdown().await;
    }

    println!("{:<28} {:>14} {:>8} {:>10} {:>10}", "scenario", "delivered/s", "lost", "p50", "p99");
    for r in &mut reports {
        let (p50, p99) = (percentile(&mut r.latencies, 0.5), percentile(&mut r.latencies, 0.99));
        println!(
            "{:<28} {:>14.0} {:>8} {:>8.3}ms {:>8.3}ms",
            r.name,
            r.delivered as f64 / r.elapsed.as_secs_f64(),
            r.lost,
            p50 as f64 / 1e6,
            p99 as f64 / 1e6,
        );
    }
    Ok(())
}

async fn start(peers: Vec<std::net::SocketAddr>) -> Result<Overlay, Box<dyn std::error::Error>> {
    let mut config = OverlayConfig::default();
    config.transport.addr = "127.0.0.1:0".parse()?;
    config.admin.enabled = false;
    config.peers = peers.into_iter().map(overlay_core::Peer::from).collect();
    Ok(Overlay::start(config).await?)
}

async fn run(
    name: &str,
    publish_on: &Overlay,
    subscribe_on: &Overlay,
    subs: usize,
    size: usize,
    messages: u64,
) -> Result<Report, Box<dyn std::error::Error>> {
    let epoch = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..subs {
        let mut c =
            Client::connect(&ConnectOptions::new(subscribe_on.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1))
                .await?;
        c.send(&Frame::Sub { req_id: 1, pattern: "bench.>".parse()? }).await?;
        let Frame::Ack(_) = c.recv().await? else { return Err("no ACK for SUB".into()) };
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(messages as usize);
            let (mut got, mut lagged) = (0u64, 0u64);
            while got + lagged < messages {
                match c.recv().await {
                    Ok(Frame::Msg(m)) => {
                        let sent = u64::from_be_bytes(m.payload[..8].try_into().unwrap_or_default());
                        latencies.push((epoch.elapsed().as_nanos() as u64).saturating_sub(sent));
                        got += 1;
                    }
                    Ok(Frame::Lagged { dropped }) => lagged += dropped,
                    Ok(Frame::Ctrl(Ctrl::Ping { nonce })) => {
                        let _ = c.send(&Frame::pong(nonce)).await;
                    }
                    _ => break,
                }
            }
            (got, lagged, epoch.elapsed(), latencies)
        }));
    }
    // Give the subscriptions a moment to reach the far end of a line.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut p =
        Client::connect(&ConnectOptions::new(publish_on.local_addr()).caps(Caps::GOSSIP_V1 | Caps::PUBSUB_V1)).await?;
    let topic: oap_codec::Topic = "bench.load".parse()?;
    let started = epoch.elapsed();
    let mut body = BytesMut::with_capacity(size);
    for i in 0..messages {
        body.clear();
        body.put_u64(epoch.elapsed().as_nanos() as u64);
        body.resize(size.max(8), 0);
        let payload: Bytes = body.split().freeze();
        p.feed(&Frame::Pub { req_id: 0, topic: topic.clone(), payload })?;
        if i as usize % BATCH == BATCH - 1 {
            p.flush().await?;
        }
    }
    p.flush().await?;
    let mut report =
        Report { name: name.into(), delivered: 0, lost: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for r in readers {
        let (got, lagged, done, latencies) = r.await?;
        report.delivered += got;
        report.lost += lagged + (messages - got - lagged);
        report.elapsed = report.elapsed.max(done - started);
        report.latencies.extend(latencies);
    }
    Ok(report)
}
