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
