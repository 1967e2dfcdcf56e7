//! The process-global `metrics` recorder belongs to whoever embeds the node:
//! a node without its admin plane leaves it alone. Its own test binary,
//! because the global recorder can be set once per process.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;

#[tokio::test]
async fn a_node_without_its_admin_plane_leaves_the_global_recorder_to_the_embedder() {
    let node = node(|c| c.admin.enabled = false).await;
    node.publish("any.topic", "x").unwrap();
    metrics::set_global_recorder(metrics::NoopRecorder).expect("the embedder can still install its recorder");
    node.shutdown().await;
}
