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

/// A session of `node` over a duplex stream, our hello offering `caps`:
/// our client end, and the node's task (its result says why the session
/// ended).
async fn session_with(node: &Overlay, caps: Caps) -> (Client, JoinHandle<DisconnectReason>) {
    let (ours, theirs) = tokio::io::duplex(64 << 10);
    let served = node.clone();
    let task = tokio::spawn(async move { served.serve(theirs, PEER).await });
    (Client::over(ours, PEER, caps).await.unwrap(), task)
}

/// A pub/sub session (see [`session_with`]).
async fn session(node: &Overlay) -> (Client, JoinHandle<DisconnectReason>) {
    session_with(node, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await
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

/// A node that requires tokens, with no keepalive in these tests' spans of
/// virtual time.
async fn token_node() -> Overlay {
    secured(|c| {
        c.admin.enabled = false;
        c.transport.idle_timeout_ms = 3_600_000;
    })
    .await
}

/// A subscribe-only token for `a.>` that expires `secs` from now.
fn sub_token(secs: u64) -> String {
    token(&[overlay_core::auth::Op::Subscribe], &["a.>"], Some(unix_now() + secs))
}

/// A session that presented `token` and subscribed to `a.>` (req_id 7) and
/// `a.b.*` (req_id 9).
async fn authed_session(node: &Overlay, token: &str) -> Client {
    let (mut c, _) = session_with(node, Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1).await;
    c.authenticate(token).await.unwrap();
    for (req_id, pattern) in [(7, "a.>"), (9, "a.b.*")] {
        c.send(&Frame::Sub { req_id, pattern: pattern.parse().unwrap() }).await.unwrap();
        let answer = c.recv().await.unwrap();
        assert!(matches!(answer, Frame::Ack(a) if a.req_id == req_id), "SUB {req_id}: {answer:?}");
    }
    c
}

#[tokio::test(start_paused = true)]
async fn token_expiry_revokes_subscriptions_with_403_and_their_req_ids() {
    let node = token_node().await;
    let mut c = authed_session(&node, &sub_token(60)).await;
    let subscribed = Instant::now();
    let mut revoked = Vec::new();
    while revoked.len() < 2 {
        match c.recv().await.unwrap() {
            Frame::Error(e) => revoked.push((e.code, e.req_id)),
            other => panic!("expected the revocations, got {other:?}"),
        }
    }
    let after = subscribed.elapsed();
    revoked.sort_unstable();
    assert_eq!(revoked, [(403, 7), (403, 9)]);
    // Tokens count whole seconds: expiry comes within the 60th.
    assert!((Duration::from_secs(59)..Duration::from_secs(61)).contains(&after), "revoked after {after:?}");
    // The session stays open: nothing is delivered, a ping is answered.
    assert_eq!(node.publish("a.x", &b"late"[..]).unwrap().queued, 0);
    c.ping().await.unwrap();
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn an_in_band_refresh_keeps_the_subscriptions_past_the_first_expiry() {
    let node = token_node().await;
    let mut c = authed_session(&node, &sub_token(60)).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    c.authenticate(&sub_token(3600)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    // Past the first token's expiry, both subscriptions still deliver.
    assert_eq!(node.publish("a.x", &b"one"[..]).unwrap().queued, 1);
    assert_eq!(node.publish("a.b.c", &b"two"[..]).unwrap().queued, 1);
    for want in [&b"one"[..], b"two"] {
        match c.recv().await.unwrap() {
            Frame::Msg(m) => assert_eq!(&m.payload[..], want),
            other => panic!("expected a delivery, got {other:?}"),
        }
    }
    node.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_revocation_read_while_waiting_for_another_answer_reaches_the_subscriber() {
    let node = token_node().await;
    let (mut c, _) = session_with(&node, Caps::GOSSIP_V1 | Caps::PUBSUB_V1 | Caps::AUTH_V1).await;
    c.authenticate(&sub_token(60)).await.unwrap();
    c.subscribe(&"a.>".parse().unwrap()).await.unwrap();
    // The token expires; the node's ERROR 403 for the SUB waits in the
    // stream, and the client reads it while waiting for its PONG.
    tokio::time::sleep(Duration::from_secs(61)).await;
    c.ping().await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), c.next_delivery()).await {
        Ok(Err(overlay_core::client::ClientError::Refused { code, .. })) => assert_eq!(code, 403),
        other => panic!("expected the revocation, got {other:?}"),
    }
    node.shutdown().await;
}
