//! The client side of `cargo xtask cluster`: one subscriber per node on
//! `PREFIX.>` (`--prefix`, default `bench`), publishers on some of the
//! nodes on `PREFIX.pN`, each message paced; then every subscriber must
//! hold every message exactly once, in each publisher's order. Prints one
//! `key=value` line for xtask to check.
//!
//! ```sh
//! cargo run -p overlay-load --bin cluster -- --subs 127.0.0.1:9501,127.0.0.1:9502 \
//!     --pubs 127.0.0.1:9501 --messages 100 --gap-ms 10
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use overlay_core::client::{Client, ConnectOptions};
use overlay_core::{Delivery, Pattern, Topic};

use overlay_load::arg;

/// Time the last message has to reach every subscriber.
const SETTLE: Duration = Duration::from_secs(10);

/// What one subscriber got.
#[derive(Default)]
struct Got {
    /// Messages received, copies included.
    received: u64,
    /// Distinct messages.
    distinct: u64,
    /// Messages that arrived before one published earlier by the same publisher.
    out_of_order: u64,
    /// Deliveries the node reported lost (`LAGGED`).
    lagged: u64,
}

fn addrs(name: &str) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error>> {
    let list = arg(name).ok_or_else(|| format!("{name} A,B,... is required"))?;
    Ok(list.split(',').map(str::parse).collect::<Result<_, _>>()?)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let subs = addrs("--subs")?;
    let pubs = addrs("--pubs")?;
    let messages: u32 = arg("--messages").map(|s| s.parse()).transpose()?.unwrap_or(100);
    let gap = Duration::from_millis(arg("--gap-ms").map(|s| s.parse()).transpose()?.unwrap_or(10));
    // With interest routing, a subscription reaches other nodes' publishers
    // within the link delays after its ACK: wait this long before publishing.
    let settle = Duration::from_millis(arg("--settle-ms").map(|s| s.parse()).transpose()?.unwrap_or(0));
    let prefix = arg("--prefix").unwrap_or_else(|| "bench".to_string());
    let pattern: Pattern = format!("{prefix}.>").parse()?;
    let expected = u64::from(messages) * pubs.len() as u64;

    // Subscribed everywhere before the first publish.
    let mut subscribers = Vec::new();
    for addr in &subs {
        let mut c = Client::connect(&ConnectOptions::new(*addr)).await?;
        c.subscribe(&pattern).await?;
        subscribers.push(tokio::spawn(collect(c, pubs.len(), expected)));
    }
    tokio::time::sleep(settle).await;
    let mut publishers = Vec::new();
    for (p, addr) in pubs.iter().enumerate() {
        let addr = *addr;
        let topic: Topic = format!("{prefix}.p{p}").parse()?;
        publishers.push(tokio::spawn(async move {
            let mut c = Client::connect(&ConnectOptions::new(addr)).await?;
            for seq in 0..messages {
                c.publish(&topic, Bytes::from(seq.to_be_bytes().to_vec())).await?;
                tokio::time::sleep(gap).await;
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        }));
    }
    let mut failures = 0;
    for p in publishers {
        if let Err(e) = p.await? {
            eprintln!("publisher: {e}");
            failures += 1;
        }
    }
    let mut totals = Got::default();
    let mut complete = 0;
    let mut least = u64::MAX;
    for s in subscribers {
        let got = s.await?;
        complete += u64::from(got.distinct == expected);
        least = least.min(got.distinct);
        totals.received += got.received;
        totals.distinct += got.distinct;
        totals.out_of_order += got.out_of_order;
        totals.lagged += got.lagged;
    }
    println!(
        "subscribers={} complete={complete} expected_each={expected} least={} delivered={} duplicates={} out_of_order={} lagged={} publisher_failures={failures}",
        subs.len(),
        if least == u64::MAX { 0 } else { least },
        totals.distinct,
        totals.received - totals.distinct,
        totals.out_of_order,
        totals.lagged,
    );
    Ok(())
}

/// Takes deliveries until `expected` distinct messages arrived, or
/// [`SETTLE`] passes without one.
async fn collect(mut c: Client, publishers: usize, expected: u64) -> Got {
    let mut got = Got::default();
    // Per publisher topic: every sequence number seen, and the highest.
    let mut seen: HashMap<String, (Vec<bool>, Option<u32>)> = HashMap::with_capacity(publishers);
    while got.distinct < expected {
        let delivery = match tokio::time::timeout(SETTLE, c.next_delivery()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                eprintln!("subscriber: {e}");
                break;
            }
            Err(_) => break,
        };
        let m = match delivery {
            Delivery::Message(m) => m,
            Delivery::Lagged(n) => {
                got.lagged += n;
                continue;
            }
        };
        got.received += 1;
        let Ok(bytes) = <[u8; 4]>::try_from(&m.payload[..]) else { continue };
        let seq = u32::from_be_bytes(bytes);
        let (marks, highest) = seen.entry(m.topic.as_str().to_string()).or_default();
        let at = seq as usize;
        if marks.len() <= at {
            marks.resize(at + 1, false);
        }
        if !std::mem::replace(&mut marks[at], true) {
            got.distinct += 1;
            if highest.is_some_and(|h| seq < h) {
                got.out_of_order += 1;
            }
            *highest = Some(highest.map_or(seq, |h| h.max(seq)));
        }
    }
    got
}
