//! Node lifecycle over real sockets: readiness through start and drain, the
//! shutdown choreography, and the admin routes a node serves.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use oap_codec::{Ctrl, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn shutdown_sends_goaway_503_to_every_session_within_drain_timeout() {
    let drain = Duration::from_millis(5000);
    let node = node(|c| c.drain_timeout_ms = 5000).await;
    let mut sessions = Vec::new();
    for _ in 0..50 {
        sessions.push(connect(&node).await);
    }
    wait_metric(&node, "overlay_sessions_active", &[], 50.0).await;

    let clients = sessions.into_iter().map(|mut s| {
        tokio::spawn(async move {
            let frame = read_frame(&mut s).await;
            assert_closed(&mut s).await;
            frame
        })
    });
    let clients: Vec<_> = clients.collect();
    let stopping = node.clone();
    let shutdown = tokio::spawn(async move { tokio::time::timeout(drain, stopping.shutdown()).await });

    let mut waits = Vec::new();
    for client in clients {
        match client.await.unwrap() {
            Frame::Ctrl(Ctrl::Goaway { code, reconnect_after_ms, .. }) => {
                assert_eq!(code, 503);
                assert!(
                    reconnect_after_ms < 5000,
                    "reconnect_after_ms {reconnect_after_ms} is outside the drain window"
                );
                waits.push(reconnect_after_ms);
            }
            other => panic!("expected GOAWAY 503, got {other:?}"),
        }
    }
    assert!(shutdown.await.unwrap().is_ok(), "shutdown did not complete within drain_timeout");
    // Spread over the window, not all at once.
    waits.sort();
    waits.dedup();
    assert!(waits.len() >= 45, "only {} distinct reconnect delays", waits.len());
    assert!(tokio::net::TcpStream::connect(node.local_addr()).await.is_err(), "listener closed");
}

#[tokio::test]
async fn readyz_is_200_after_start_and_503_draining_during_shutdown() {
    // write_timeout above drain_timeout: a client that never reads holds the
    // drain open until its deadline, so "during shutdown" lasts >= 2 s.
    let node = node(|c| {
        c.drain_timeout_ms = 2000;
        c.transport.write_timeout_ms = 60_000;
    })
    .await;
    let (status, body) = get(&node, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["missing"], serde_json::json!([]));
    for gate in ["listeners_bound", "metrics_bound", "cfg_loaded", "draining"] {
        assert_eq!(ready["gates"][gate]["ok"], true, "{gate}");
        assert!(ready["gates"][gate]["since"].as_u64().unwrap() > 0);
    }

    // A client that sends and never reads: echoes fill the socket buffers.
    let stuck = connect(&node).await;
    let (_rd, mut wr) = stuck.into_split();
    let flood = tokio::spawn(async move {
        let frame = encode(&Frame::Data(payload(1024 * 1024 - 1, 1)));
        for _ in 0..64 {
            if wr.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    // The reader pauses once two echoes wait in the reply queue (its byte
    // watermark, 2 x max_frame): from then on the session cannot finish
    // without the client, which reads nothing, so the drain must wait for it.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(&node, "overlay_queue_depth", &[("queue", "reply")]).await < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "the reply queue never reached its byte watermark");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let stopping = node.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let draining = loop {
        let (status, body) = get(&node, "/readyz").await;
        if status == 503 {
            break body;
        }
        tokio::task::yield_now().await;
    };
    let ready: serde_json::Value = serde_json::from_str(&draining).unwrap();
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["missing"], serde_json::json!(["draining"]));
    assert_eq!((get(&node, "/healthz").await).0, 200, "alive while draining");
    within(shutdown).await.unwrap();
    flood.abort();
}

#[tokio::test]
async fn admin_routes_answer_with_their_json_shapes() {
    let node = node(|c| c.transport.max_conns = 77).await;

    let (status, body) = get(&node, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"alive":true}"#));

    let (status, body) = get(&node, "/version").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for key in ["name", "version", "git", "built", "rustc"] {
        assert!(v[key].as_str().is_some_and(|s| !s.is_empty()), "/version.{key} in {body}");
    }
    assert!(v["rustc"].as_str().unwrap().starts_with("rustc "));

    let (status, body) = get(&node, "/configz").await;
    assert_eq!(status, 200);
    let z: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(z["config"]["transport.max_conns"]["value"], 77);
    assert_eq!(z["config"]["session.tx_queue"], serde_json::json!({ "value": 128, "source": "default" }));

    let (status, body) = get(&node, "/metrics").await;
    assert_eq!(status, 200);
    let service = &node.config().transport.name;
    assert!(body.contains(&format!("overlay_build_info{{service=\"{service}\"")), "build info present");

    let (status, _) = get(&node, "/nope").await;
    assert_eq!(status, 404);
    let mut s = tokio::net::TcpStream::connect(node.admin_addr().unwrap()).await.unwrap();
    s.write_all(b"POST /readyz HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut raw = String::new();
    within(s.read_to_string(&mut raw)).await.unwrap();
    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("allow: get, head"));

    wait_metric(&node, "http_requests_total", &[("route", "/healthz"), ("status", "200")], 1.0).await;
    wait_metric(&node, "http_requests_total", &[("route", "other"), ("status", "404")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn start_fails_cleanly_when_the_address_is_taken() {
    let first = node(|_| {}).await;
    let mut cfg = overlay_core::OverlayConfig::default();
    cfg.transport.addr = first.local_addr();
    cfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    let err = overlay_core::Overlay::start(cfg).await.err().unwrap();
    assert!(err.to_string().contains(&first.local_addr().to_string()), "{err}");
    first.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_shutdown_still_completes_and_later_calls_return() {
    let node = node(|_| {}).await;
    let _s = connect(&node).await;
    // Dropped almost at once: the choreography goes on by itself.
    let _ = tokio::time::timeout(Duration::from_millis(1), node.shutdown()).await;
    within(node.shutdown()).await;
    within(node.stopped()).await;
    assert!(tokio::net::TcpStream::connect(node.local_addr()).await.is_err());
}

#[tokio::test]
async fn remove_peer_stops_the_dialer_and_the_peer_can_be_added_again() {
    // A peer that accepts the dial: removed, it is not dialed again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let peer = listener.local_addr().unwrap();
    let node = node(|c| c.admin.enabled = false).await;
    node.add_peer(peer).unwrap();
    node.add_peer(peer).unwrap();
    assert_eq!(node.peers(), vec![peer], "added once");
    let (first, _) = within(listener.accept()).await.unwrap();
    assert!(node.remove_peer(peer));
    assert!(!node.remove_peer(peer), "removed once");
    assert!(node.peers().is_empty());
    drop(first);
    let redial = tokio::time::timeout(std::time::Duration::from_secs(1), listener.accept()).await;
    assert!(redial.is_err(), "a removed peer is not redialed");
    node.add_peer(peer).unwrap();
    within(listener.accept()).await.unwrap();
    node.shutdown().await;
}
