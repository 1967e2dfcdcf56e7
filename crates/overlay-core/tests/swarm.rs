//! The swarm over real sockets: nodes join from one seed, a pair keeps one
//! link, a publish travels a tree (about N - 1 payload sends, not (N-1)^2),
//! and the overlay outlives its seed.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{PATIENCE, peer_node, within};
use overlay_core::{Delivery, Overlay};

/// Waits until every node's active view holds `want` peers or more and the
/// active links connect them all (each node reaches every other).
async fn wait_joined(nodes: &[&Overlay], want: usize) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let views: Vec<_> = nodes.iter().map(|n| n.swarm()).collect();
        let ids: Vec<_> = views.iter().map(|v| v.node_id[..16].to_string()).collect();
        let full = views.iter().all(|v| v.active.len() >= want);
        // One component: a walk from the first node over active links.
        let mut seen = HashSet::from([0usize]);
        let mut stack = vec![0usize];
        while let Some(i) = stack.pop() {
            for p in &views[i].active {
                if let Some(j) = ids.iter().position(|id| *id == p.node_id)
                    && seen.insert(j)
                {
                    stack.push(j);
                }
            }
        }
        if full && seen.len() == nodes.len() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "swarm did not form: {views:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every node subscribes to `t.>`; `from` publishes `n` messages then an end
/// marker; every subscription gets each message once, in order.
async fn deliver_in_order(nodes: &[&Overlay], from: usize, n: u32) {
    deliver_from_each(nodes, &[from], n).await;
}

/// Every node subscribes to `t.>`; each of `publishers` in turn publishes on
/// its own topic, `n` messages each, then an end marker; every subscription
/// gets each message once, in each publisher's order.
async fn deliver_from_each(nodes: &[&Overlay], publishers: &[usize], n: u32) {
    let mut subs: Vec<_> = nodes.iter().map(|node| node.subscribe("t.>").unwrap()).collect();
    for i in 0..n {
        for p in publishers {
            nodes[*p].publish(&format!("t.p{p}"), i.to_be_bytes().to_vec()).unwrap();
        }
    }
    for p in publishers {
        nodes[*p].publish(&format!("t.p{p}"), "end").unwrap();
    }
    for (k, sub) in subs.iter_mut().enumerate() {
        let mut got: std::collections::BTreeMap<String, Vec<u32>> = Default::default();
        let mut ended = 0;
        while ended < publishers.len() {
            match within(sub.recv()).await {
                Some(Delivery::Message(m)) if &m.payload[..] == b"end" => ended += 1,
                Some(Delivery::Message(m)) => got
                    .entry(m.topic.as_str().to_string())
                    .or_default()
                    .push(u32::from_be_bytes(m.payload[..].try_into().unwrap())),
                other => panic!("node {k}: unexpected {other:?}"),
            }
        }
        for p in publishers {
            let seqs = got.remove(&format!("t.p{p}")).unwrap_or_default();
            assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "node {k}: publisher {p}'s messages not once each, in order");
        }
    }
}

fn payload_sent(nodes: &[&Overlay]) -> u64 {
    nodes.iter().map(|n| n.swarm().payload_sent).sum()
}

#[tokio::test]
async fn ten_nodes_join_through_one_seed_and_a_publish_travels_a_tree() {
    let seed = peer_node(vec![], |_| {}).await;
    let mut others = Vec::new();
    for _ in 1..10 {
        others.push(peer_node(vec![seed.local_addr()], |_| {}).await);
    }
    let nodes: Vec<&Overlay> = std::iter::once(&seed).chain(others.iter()).collect();
    wait_joined(&nodes, 2).await;
    for n in &nodes {
        let v = n.swarm();
        assert!(v.active.len() <= 5, "active view over its size: {v:?}");
    }
    // Warm-up: the first messages prune the tree down to one path per node.
    deliver_in_order(&nodes, 3, 20).await;
    let before = payload_sent(&nodes);
    deliver_in_order(&nodes, 3, 100).await;
    let sends = payload_sent(&nodes) - before;
    // 101 messages over a tree of 10 nodes: 9 sends each. A flood over
    // active views of up to 5 would be about 4 x 9 each.
    let per_publish = sends as f64 / 101.0;
    assert!(per_publish < 1.5 * 9.0, "{per_publish:.1} payload sends per publish over 10 nodes");
    assert!(per_publish >= 9.0, "{per_publish:.1} payload sends per publish cannot reach 9 nodes");

    // Three publishers at once: each origin has its own tree, so they do
    // not prune each other's paths (one shared tree kept about 15 sends per
    // publish here).
    deliver_from_each(&nodes, &[0, 5, 9], 20).await;
    let before = payload_sent(&nodes);
    deliver_from_each(&nodes, &[0, 5, 9], 50).await;
    let per_publish = (payload_sent(&nodes) - before) as f64 / 153.0;
    assert!(per_publish < 1.5 * 9.0, "{per_publish:.1} payload sends per publish, three publishers");
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn two_nodes_that_dial_each_other_keep_one_link() {
    let a = peer_node(vec![], |_| {}).await;
    let b = peer_node(vec![], |_| {}).await;
    a.add_peer(b.local_addr()).unwrap();
    b.add_peer(a.local_addr()).unwrap();
    wait_joined(&[&a, &b], 1).await;
    // Let a second link, if one were kept, come up and settle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!((a.peers_connected(), b.peers_connected()), (1, 1));
    assert_eq!((a.swarm().active.len(), b.swarm().active.len()), (1, 1));
    deliver_in_order(&[&a, &b], 0, 10).await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn the_overlay_outlives_its_seed() {
    let seed = peer_node(vec![], |_| {}).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(peer_node(vec![seed.local_addr()], |_| {}).await);
    }
    let all: Vec<&Overlay> = std::iter::once(&seed).chain(others.iter()).collect();
    wait_joined(&all, 2).await;
    seed.shutdown().await;
    let rest: Vec<&Overlay> = others.iter().collect();
    // The seed said it was leaving: nobody keeps it, and the rest stay joined.
    wait_joined(&rest, 1).await;
    for n in &rest {
        assert!(n.swarm().active.iter().all(|p| p.addr != seed.local_addr()), "the seed is still active");
    }
    deliver_in_order(&rest, 4, 20).await;
    for n in rest {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_with_a_configured_id_reports_it_and_refuses_a_link_to_itself() {
    let id = "ab".repeat(32);
    let a = peer_node(vec![], |c| c.node.id = Some(id.clone())).await;
    assert_eq!(a.swarm().node_id, id);
    // A seed list naming the node itself: the dial reaches the node, which
    // sees its own id and drops the link.
    a.add_peer(a.local_addr()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.peers_connected(), 0);
    assert!(a.swarm().active.is_empty());
    a.shutdown().await;
}

#[tokio::test]
async fn six_nodes_end_up_a_full_mesh_one_hop_apart() {
    // At most active_view (5) + 1 nodes: every node links every other, as
    // NATS routes do, and every message takes one hop.
    let seed = peer_node(vec![], |_| {}).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(peer_node(vec![seed.local_addr()], |_| {}).await);
    }
    let nodes: Vec<&Overlay> = std::iter::once(&seed).chain(others.iter()).collect();
    wait_joined(&nodes, 5).await;
    let mut sub = others[4].subscribe("mesh.>").unwrap();
    seed.publish("mesh.x", "one hop").unwrap();
    let Some(Delivery::Message(m)) = within(sub.recv()).await else { panic!("no delivery") };
    assert_eq!(m.hops, 1);
    for n in nodes {
        n.shutdown().await;
    }
}

/// A `dns:NAME:PORT` seed (a Kubernetes headless Service's name): every
/// address it resolves to is a seed. `localhost` resolves from /etc/hosts.
#[tokio::test]
async fn a_node_joins_through_a_dns_seed() {
    let seed = peer_node(vec![], |_| {}).await;
    let dns: overlay_core::PeerAddr = format!("dns:localhost:{}", seed.local_addr().port()).parse().unwrap();
    let joiner = peer_node(vec![], |c| c.peers = vec![overlay_core::Peer::Addr(dns)]).await;
    wait_joined(&[&seed, &joiner], 1).await;
    assert!(joiner.peers().contains(&seed.local_addr()), "resolved seeds: {:?}", joiner.peers());
    let mut sub = seed.subscribe("dns.>").unwrap();
    joiner.publish("dns.x", "through a name").unwrap();
    let Some(Delivery::Message(m)) = within(sub.recv()).await else { panic!("no delivery") };
    assert_eq!(&m.payload[..], b"through a name");
    for n in [seed, joiner] {
        n.shutdown().await;
    }
}

/// A cluster of one (a StatefulSet of one replica, whose seed name resolves
/// to the pod alone) is joined: readiness does not wait for a peer that
/// cannot come. A node whose seed is another node that is down is not.
#[tokio::test]
async fn a_node_whose_only_seed_is_itself_is_ready_and_one_with_a_dead_seed_is_not() {
    use common::{get, node};
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let alone = node(|c| {
        c.transport.addr = addr;
        c.readiness.sample_ms = 50;
        c.peers = vec![addr.into()];
    })
    .await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while get(&alone, "/readyz").await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "{}", get(&alone, "/readyz").await.1);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let dead: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
    let cut_off = node(|c| {
        c.readiness.sample_ms = 50;
        c.peers = vec![dead.into()];
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = get(&cut_off, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("joined"), "{body}");
    for n in [alone, cut_off] {
        n.shutdown().await;
    }
}

/// `swarm.interest`: a node tells its peers what its subscribers hold, and
/// a message travels only toward them. Ten nodes, one subscriber: a topic
/// nobody holds costs no relay send at all, one the subscriber holds a
/// path's worth, and the subscriber gets every message once.
#[tokio::test]
async fn with_interest_routing_a_message_goes_only_toward_its_subscribers() {
    let seed = peer_node(vec![], |c| c.swarm.interest = true).await;
    let mut others = Vec::new();
    for _ in 1..10 {
        others.push(peer_node(vec![seed.local_addr()], |c| c.swarm.interest = true).await);
    }
    let nodes: Vec<&Overlay> = std::iter::once(&seed).chain(others.iter()).collect();
    wait_joined(&nodes, 2).await;
    let mut sub = others[8].subscribe("rare.>").unwrap();
    let publisher = nodes[2];
    // The origin's first messages go everywhere (no summary is known for
    // its tree yet); once summaries settle, only the path is taken.
    for _ in 0..5 {
        publisher.publish("rare.x", "warm").unwrap();
        expect(&mut sub, b"warm").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = payload_sent(&nodes);
    for _ in 0..20 {
        publisher.publish("nobody.x", "lost to no one").unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(payload_sent(&nodes), before, "relay sends for a topic no node subscribes to");
    let before = payload_sent(&nodes);
    for _ in 0..20 {
        publisher.publish("rare.x", "found").unwrap();
        expect(&mut sub, b"found").await;
    }
    // A path between two of ten nodes: fewer hops than the 9 of a tree.
    let per_publish = (payload_sent(&nodes) - before) as f64 / 20.0;
    assert!(per_publish <= 5.0, "{per_publish} relay sends per publish toward one subscriber among 10");
    for n in nodes {
        n.shutdown().await;
    }
}

/// The next delivery is a message carrying `want`.
async fn expect(sub: &mut overlay_core::Subscription, want: &[u8]) {
    match within(sub.recv()).await {
        Some(Delivery::Message(m)) => assert_eq!(&m.payload[..], want),
        other => panic!("unexpected {other:?}"),
    }
}
