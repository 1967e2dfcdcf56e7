//! The client side of `cargo xtask chaos`: a subscriber on `chaos.>` on
//! every node and a publisher on some, for the whole run, each connecting
//! again (and subscribing again) when its node goes away. Every publish the
//! node acknowledged and every delivery is written to `--out` with its
//! wall-clock time in ms, for xtask to cut into phases. It runs until its
//! stdin closes (or `--secs` passes): publishers stop at once, subscribers
//! take what is still in flight for 3 s more.
//!
//!
//! ```text
//! P <publisher> <seq> <ms>            a publish the node acknowledged
//! D <subscriber> <publisher> <seq> <ms>  a delivery (copies included)
//! ```
//!
//! ```sh
//! chaos --subs 10.77.0.1:9500,10.77.0.2:9500 --pubs 10.77.0.2:9500 --gap-ms 20 --secs 600 --out log
//! ```

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use overlay_core::client::{Client, ConnectOptions};
use overlay_core::{Delivery, Pattern, Topic};
use overlay_load::arg;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Time between two attempts to reach a node that is away.
const RETRY: Duration = Duration::from_millis(200);
/// Time a connect, a subscribe or a publish may take before the session is
/// given up (a black-holed node answers nothing).
const ANSWER: Duration = Duration::from_secs(2);
/// Log lines in flight to the writer at most (publishers and subscribers
/// wait when the writer lags).
const LOG_QUEUE: usize = 65_536;
/// Subscribers keep taking deliveries this long after the publishers stop.
const DRAIN: Duration = Duration::from_secs(3);

fn addrs(name: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error>> {
    let list = arg(name).ok_or_else(|| format!("{name} A,B,... is required"))?;
    Ok(list.split(',').map(str::parse).collect::<Result<_, _>>()?)
}

fn wall_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let subs = addrs("--subs")?;
    let pubs = addrs("--pubs")?;
    let gap = Duration::from_millis(arg("--gap-ms").map(|s| s.parse()).transpose()?.unwrap_or(20));
    let secs: u64 = arg("--secs").map(|s| s.parse()).transpose()?.unwrap_or(600);
    let out = arg("--out").ok_or("--out FILE is required")?;
    // Publishers stop when stdin closes (or at --secs); subscribers DRAIN later.
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop_tx.send(true);
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let pubs_until = {
        let mut stop = stop.clone();
        async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    };
    let (log, mut lines) = mpsc::channel::<String>(LOG_QUEUE);

    let (end_tx, end) = tokio::sync::watch::channel(Instant::now() + Duration::from_secs(secs) + DRAIN);
    let mut tasks = Vec::new();
    for (s, addr) in subs.into_iter().enumerate() {
        tasks.push(tokio::spawn(subscriber(s, addr, end.clone(), log.clone())));
    }
    // Publishers start once the subscribers had a moment to subscribe.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (pub_tx, pub_end) = tokio::sync::watch::channel(deadline);
    for (p, addr) in pubs.into_iter().enumerate() {
        tasks.push(tokio::spawn(publisher(p, addr, gap, pub_end.clone(), log.clone())));
    }
    drop(log);
    tokio::spawn(async move {
        pubs_until.await;
        let _ = pub_tx.send(Instant::now());
        let _ = end_tx.send(Instant::now() + DRAIN);
    });
    let mut file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    while let Some(line) = lines.recv().await {
        file.write_all(line.as_bytes())?;
    }
    file.flush()?;
    for t in tasks {
        t.await?;
    }
    Ok(())
}

/// Subscribes on `addr` until `until`, again after every loss of the node.
async fn subscriber(s: usize, addr: SocketAddr, end: watch::Receiver<Instant>, log: mpsc::Sender<String>) {
    let until = || *end.borrow();
    let pattern: Pattern = match "chaos.>".parse() {
        Ok(p) => p,
        Err(_) => return,
    };
    while Instant::now() < until() {
        let session = async {
            let mut c = Client::connect(&ConnectOptions::new(addr)).await?;
            tokio::time::timeout(ANSWER, c.subscribe(&pattern)).await.map_err(|_| "SUB not answered")??;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(c)
        };
        let mut c = match tokio::time::timeout(ANSWER, session).await {
            Ok(Ok(c)) => c,
            _ => {
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout_at(until().min(Instant::now() + RETRY), c.next_delivery()).await;
            if Instant::now() >= until() {
                break;
            }
            // A timeout only looks at the end again (taking the next frame
            // is cancel-safe: it reads into the client's buffer).
            let delivery = match next {
                Err(_) => continue,
                Ok(Err(_)) => break,
                Ok(Ok(delivery)) => delivery,
            };
            let Delivery::Message(m) = delivery else { continue };
            let (Some(p), Ok(seq)) = (publisher_of(m.topic.as_str()), <[u8; 4]>::try_from(&m.payload[..])) else {
                continue;
            };
            let line = format!("D {s} {p} {} {}\n", u32::from_be_bytes(seq), wall_ms());
            if log.send(line).await.is_err() {
                return;
            }
        }
        if Instant::now() < until() {
            tokio::time::sleep(RETRY).await;
        }
    }
}

/// `chaos.p7` -> 7.
fn publisher_of(topic: &str) -> Option<usize> {
    topic.strip_prefix("chaos.p")?.parse().ok()
}

/// Publishes one numbered message every `gap` on `addr` until `until`; a
/// publish the node did not acknowledge is not logged (its number is
/// skipped), and the session is opened again.
async fn publisher(
    p: usize,
    addr: SocketAddr,
    gap: Duration,
    end: watch::Receiver<Instant>,
    log: mpsc::Sender<String>,
) {
    let until = || *end.borrow();
    let Ok(topic) = format!("chaos.p{p}").parse::<Topic>() else { return };
    let mut seq: u32 = 0;
    let mut next = Instant::now();
    while Instant::now() < until() {
        let Ok(Ok(mut c)) = tokio::time::timeout(ANSWER, Client::connect(&ConnectOptions::new(addr))).await else {
            tokio::time::sleep(RETRY).await;
            continue;
        };
        while Instant::now() < until() {
            tokio::time::sleep_until(next).await;
            next += gap;
            let sent = tokio::time::timeout(ANSWER, c.publish(&topic, Bytes::copy_from_slice(&seq.to_be_bytes())));
            let acked = matches!(sent.await, Ok(Ok(_)));
            if acked && log.send(format!("P {p} {seq} {}\n", wall_ms())).await.is_err() {
                return;
            }
            seq += 1;
            if !acked {
                break;
            }
        }
    }
}
