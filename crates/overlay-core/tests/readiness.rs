//! Truthful readiness under pressure: gates flip on real load and recover
//! when it ends, while `/healthz` stays 200.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use overlay_core::Overlay;

async fn readyz(node: &Overlay) -> (u16, serde_json::Value) {
    let (status, body) = get(node, "/readyz").await;
    (status, serde_json::from_str(&body).unwrap())
}

/// Polls `/readyz` until `pred` holds.
async fn wait_ready(node: &Overlay, what: &str, pred: impl Fn(u16, &serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (status, body) = readyz(node).await;
        if pred(status, &body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: last /readyz {status} {body}");
        assert_eq!(get(node, "/healthz").await.0, 200, "/healthz stays 200");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn stuck_subscribers_flip_queues_ok_and_it_recovers() {
    let node = node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
        c.session.max_pending_bytes = 1 << 20;
        c.readiness.sample_ms = 50;
    })
    .await;
    // One stuck subscriber alone never makes the node unready.
    let first = node.subscribe("load.>").unwrap();
    while node.publish("load.x", vec![0u8; 1024]).unwrap().dropped == 0 {}
    let body = wait_ready(&node, "one stuck subscriber sampled", |_, b| {
        b["gates"]["queues_ok"]["observed"].as_f64().unwrap_or(0.0) > 0.05
    })
    .await;
    assert_eq!(body["gates"]["queues_ok"]["ok"], true, "{body}");
    assert_eq!(body["gates"]["queues_ok"]["threshold"], 0.75);

    // Thirteen more, none reading, each on a topic of its own (a frame
    // shared by several queues is charged once): past 75 % of max_pending_bytes.
    let mut stuck = vec![first];
    for i in 0..13 {
        stuck.push(node.subscribe(&format!("load.s{i}")).unwrap());
        for _ in 0..100 {
            node.publish(&format!("load.s{i}"), vec![0u8; 1024]).unwrap();
        }
    }
    let body = wait_ready(&node, "queues_ok missing", |s, _| s == 503).await;
    assert_eq!(body["missing"], serde_json::json!(["queues_ok"]));
    wait_metric(&node, "overlay_ready_gate", &[("gate", "queues_ok")], 0.0).await;

    drop(stuck);
    wait_ready(&node, "recovered", |s, _| s == 200).await;
    wait_metric(&node, "overlay_ready_gate", &[("gate", "queues_ok")], 1.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_rejected_connections_flips_shed_rate_ok_and_it_recovers() {
    let node = node(|c| {
        c.transport.max_conns = 1;
        c.readiness.sample_ms = 100;
        c.readiness.shed_rate_max = 20;
    })
    .await;
    let _held = connect(&node).await;
    let burst = async {
        loop {
            let s = tokio::net::TcpStream::connect(node.local_addr()).await.unwrap();
            drop(s);
            tokio::task::yield_now().await;
        }
    };
    let body = tokio::select! {
        body = wait_ready(&node, "shed_rate_ok missing", |s, b| s == 503 && b["missing"] == serde_json::json!(["shed_rate_ok"])) => body,
        () = burst => unreachable!(),
    };
    assert!(body["gates"]["shed_rate_ok"]["observed"].as_f64().unwrap() > 20.0);
    wait_ready(&node, "recovered after the burst", |s, _| s == 200).await;
    node.shutdown().await;
}
