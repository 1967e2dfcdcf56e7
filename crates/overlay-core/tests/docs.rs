//! The alert rules and the dashboard in docs/ use only series the node
//! really exports: every metric name they name appears on a live `/metrics`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use oap_codec::Frame;
use tokio::io::AsyncWriteExt;

/// Metric names mentioned in `text` (families, without histogram suffixes).
fn names(text: &str) -> BTreeSet<String> {
    let prefixes = ["overlay_", "transport_", "gossip_", "oap_", "request_latency_seconds", "http_requests_total"];
    let mut out = BTreeSet::new();
    for (i, _) in text.char_indices() {
        let rest = &text[i..];
        if i > 0 && text[..i].chars().last().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        if prefixes.iter().any(|p| rest.starts_with(p)) {
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_string).unwrap_or(n));
            out.insert(family);
        }
    }
    out
}

#[tokio::test]
async fn alerts_and_dashboard_name_only_exported_metrics() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let mut wanted = names(&std::fs::read_to_string(root.join("alerts.yml")).unwrap());
    wanted.extend(names(&std::fs::read_to_string(root.join("grafana-dashboard.json")).unwrap()));
    assert!(wanted.len() >= 10, "{wanted:?}");

    // Exercise the lazily registered series: a reject and a dropped delivery.
    let node = node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
    })
    .await;
    let mut s = connect(&node).await;
    s.write_all(&[0, 0, 0, 2, 0x7f, 0]).await.unwrap();
    let Frame::Error(_) = read_frame(&mut s).await else { panic!() };
    let _stuck = node.subscribe(">").unwrap();
    while node.publish("x", vec![0u8; 1024]).unwrap().dropped == 0 {}
    get(&node, "/healthz").await;

    let (_, body) = get(&node, "/metrics").await;
    let exported: BTreeSet<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    let missing: Vec<_> = wanted.difference(&exported).collect();
    assert!(missing.is_empty(), "docs name series the node does not export: {missing:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn every_family_has_help_text_and_labelled_counters_are_there_from_the_start() {
    let node = node(|c| c.transport.read_timeout_ms = 100).await;
    let (_, body) = get(&node, "/metrics").await;
    let family = |prefix: &str| -> BTreeSet<String> {
        body.lines().filter_map(|l| l.strip_prefix(prefix)?.split_whitespace().next().map(String::from)).collect()
    };
    let (typed, helped) = (family("# TYPE "), family("# HELP "));
    let bare: Vec<_> = typed.difference(&helped).collect();
    assert!(bare.is_empty(), "families without # HELP: {bare:?}");
    let present = |name: &str, label: &str| {
        body.lines().any(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("{label}\"}} 0")))
    };
    for reason in ["too_large", "bad_topic", "auth_missing", "forbidden_topic", "revoked", "slow_consumer"] {
        assert!(present("overlay_oap_rejects_total", &format!("reason=\"{reason}")), "rejects {reason}\n{body}");
    }
    for reason in overlay_core::DisconnectReason::ALL {
        assert!(present("overlay_sessions_closed_total", &format!("reason=\"{}", reason.label())), "closed {reason:?}");
    }
    for (queue, reason) in [("delivery", "full"), ("relay", "budget"), ("relay", "closed")] {
        assert!(present("overlay_queue_dropped_total", &format!("queue=\"{queue}\",reason=\"{reason}")), "{queue}");
    }
    assert!(present("transport_rejected_total", "reason=\"fd_limit"));

    // A session closed for a frame that never finished is counted as such.
    let mut s = connect(&node).await;
    s.write_all(&[0, 0, 0, 9, 0x01]).await.unwrap();
    let Frame::Ctrl(oap_codec::Ctrl::Goaway { code: 408, .. }) = read_frame(&mut s).await else { panic!() };
    wait_metric(&node, "overlay_sessions_closed_total", &[("reason", "read_timeout")], 1.0).await;
    node.shutdown().await;
}
