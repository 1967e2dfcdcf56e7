//! Session behaviour on tokio's paused clock: an in-memory stream
//! (`tokio::io::duplex`) served by the node, so every deadline is reached
//! by the clock jumping to it, not by waiting.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use oap_codec::{Caps, Ctrl, Frame};
use overlay_core::client::Client;
use overlay_core::{DisconnectReason, Overlay};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const PEER: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 1);

/// A session of `node` over a duplex stream: our client end, and the
/// node's task (its result says why the session ended).
async fn session(node: &Overlay) -> (Client, JoinHandle<DisconnectReason>) {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let served = node.clone();
    let task = tokio::spawn(async move { served.serve(theirs, PEER).await });
    (Client::over(ours, PEER, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await.unwrap(), task)
}

fn goaway_code(frame: &Frame) -> Option<u16> {
    match frame {
        Frame::Ctrl(Ctrl::Goaway { code, .. }) => Some(*code),
        _ => None,
    }
}

#[tokio::test(start_paused = true)]
async fn keepalive_pings_at_half_idle_and_goaway_408_at_full() {
    let node = node(|c| {
        c.admin.enabled = false;
        c.transport.idle_timeout_ms = 10_000;
    })
    .await;
    let (mut c, task) = session(&node).await;
    let opened = Instant::now();

    let ping = c.recv().await.unwrap();
    let at_ping = opened.elapsed();
    assert!(matches!(ping, Frame::Ctrl(Ctrl::Ping { .. })), "{ping:?}");
    assert!((Duration::from_secs(5)..Duration::from_millis(5100)).contains(&at_ping), "PING after {at_ping:?}");

    // Not answered: the node gives up at the full idle timeout.
    let goaway = c.recv().await.unwrap();
    let at_goaway = opened.elapsed();
    assert_eq!(goaway_code(&goaway), Some(408), "{goaway:?}");
    assert!(
        (Duration::from_secs(10)..Duration::from_millis(10_100)).contains(&at_goaway),
        "GOAWAY after {at_goaway:?}"
    );
    assert_eq!(task.await.unwrap(), DisconnectReason::IdleTimeout);
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_frame_left_unfinished_gets_goaway_408_at_read_timeout() {
    let node = node(|c| {
        c.admin.enabled = false;
        c.transport.read_timeout_ms = 2000;
    })
    .await;
    let (mut c, task) = session(&node).await;
    // The start of a 16-byte frame, and nothing more.
    c.send_raw(&[0, 0, 0, 16, 0x01, b'x']).await.unwrap();
    let sent = Instant::now();
    let goaway = c.recv().await.unwrap();
    let after = sent.elapsed();
    assert_eq!(goaway_code(&goaway), Some(408), "{goaway:?}");
    assert!((Duration::from_secs(2)..Duration::from_millis(2100)).contains(&after), "GOAWAY after {after:?}");
    assert_eq!(task.await.unwrap(), DisconnectReason::ReadTimeout);
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn drain_sends_goaway_503_after_the_queued_deliveries() {
    let node = node(|c| c.admin.enabled = false).await;
    let (mut c, task) = session(&node).await;
    c.send(&Frame::Sub { req_id: 1, pattern: "d.>".parse().unwrap() }).await.unwrap();
    assert!(matches!(c.recv().await.unwrap(), Frame::Ack(_)));
    for i in 0..100u8 {
        node.publish("d.x", vec![i]).unwrap();
    }
    // The drain starts with 100 deliveries queued (the client has read
    // none): all of them come first, then the GOAWAY.
    let draining = node.clone();
    let shutdown = tokio::spawn(async move { draining.shutdown().await });
    for i in 0..100u8 {
        match c.recv().await.unwrap() {
            Frame::Msg(m) => assert_eq!(&m.payload[..], [i]),
            other => panic!("delivery {i}: got {other:?}"),
        }
    }
    let goaway = c.recv().await.unwrap();
    assert_eq!(goaway_code(&goaway), Some(503), "{goaway:?}");
    assert_eq!(task.await.unwrap(), DisconnectReason::Shutdown);
    shutdown.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn lagged_comes_ahead_of_the_next_delivery() {
    let node = node(|c| {
        c.admin.enabled = false;
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
        c.session.slow_consumer_timeout_ms = 600_000;
    })
    .await;
    let (mut c, _task) = session(&node).await;
    c.send(&Frame::Sub { req_id: 1, pattern: "lag.>".parse().unwrap() }).await.unwrap();
    assert!(matches!(c.recv().await.unwrap(), Frame::Ack(_)));
    // Published while the client reads nothing: the queue (and the stream's
    // buffer) fill, and the rest is dropped.
    let mut dropped = 0;
    for i in 0..1000u32 {
        let mut payload = vec![0u8; 1024];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        dropped += node.publish("lag.x", payload).unwrap().dropped;
    }
    assert!(dropped > 0, "nothing was dropped");
    // The session's next delivery comes after the drops: the loss is
    // announced ahead of it (OAP-1, `LAGGED`), then what was queued
    // arrives in order, with no gap.
    assert_eq!(c.recv().await.unwrap(), Frame::Lagged { dropped: u64::from(dropped) });
    for next in 0..1000 - dropped {
        match c.recv().await.unwrap() {
            Frame::Msg(m) => assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), next),
            other => panic!("delivery {next}: got {other:?}"),
        }
    }
    // Nothing lost since: the next delivery comes without a LAGGED.
    node.publish("lag.x", &b"after"[..]).unwrap();
    match c.recv().await.unwrap() {
        Frame::Msg(m) => assert_eq!(&m.payload[..], b"after"),
        other => panic!("expected the next delivery, got {other:?}"),
    }
    node.shutdown().await;
}
