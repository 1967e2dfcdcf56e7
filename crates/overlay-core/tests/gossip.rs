//! Pub/sub and relay links over real sockets: OAP-1 sections 3 to 5.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use oap_codec::{Ack, Caps, Ctrl, Frame, PubAck};
use overlay_core::{Delivery, Overlay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn sub_pub_ack_msg_and_unsub() {
    let node = node(|_| {}).await;
    let mut s = pubsub(&node).await;
    assert!(s.negotiated().caps.contains(Caps::PUBSUB_V1));
    sub(&mut s, 1, "a.>").await;
    let mut p = pubsub(&node).await;
    p.send(&pub_frame(7, "a.b", "hello")).await.unwrap();
    let Frame::Ack(Ack { req_id: 7, publish: Some(PubAck { msg_id, queued: 1, dropped: 0 }) }) =
        p.recv().await.unwrap()
    else {
        panic!("expected ACK 7 with queued 1")
    };
    let Frame::Msg(m) = within(s.recv()).await.unwrap() else { panic!("expected MSG") };
    assert_eq!((m.topic.as_str(), m.hops, &m.payload[..], m.msg_id), ("a.b", 0, &b"hello"[..], msg_id));

    s.send(&Frame::Unsub { req_id: 2, pattern: "a.>".parse().unwrap() }).await.unwrap();
    assert!(matches!(s.recv().await.unwrap(), Frame::Ack(Ack { req_id: 2, .. })));
    p.send(&pub_frame(8, "a.b", "nobody")).await.unwrap();
    let Frame::Ack(Ack { publish: Some(PubAck { queued: 0, .. }), .. }) = p.recv().await.unwrap() else { panic!() };
    s.send(&Frame::Unsub { req_id: 3, pattern: "a.>".parse().unwrap() }).await.unwrap();
    let Frame::Error(e) = s.recv().await.unwrap() else { panic!("UNSUB of nothing is an ERROR") };
    assert_eq!((e.code, e.req_id), (400, 3));
    wait_metric(&node, "gossip_ingress_total", &[], 2.0).await;
    node.shutdown().await;
}

#[tokio::test]
async fn bad_topics_and_limits_get_errors_with_req_ids() {
    let node = node(|c| c.session.max_subscriptions = 2).await;
    let mut c = pubsub(&node).await;
    sub(&mut c, 1, "x").await;
    sub(&mut c, 2, "y.*").await;
    c.send(&Frame::Sub { req_id: 3, pattern: "z".parse().unwrap() }).await.unwrap();
    let Frame::Error(e) = c.recv().await.unwrap() else { panic!("expected ERROR") };
    assert_eq!((e.code, e.req_id), (429, 3));
    // PUB to a wildcard topic: 400 with the req_id, session stays.
    c.send_raw(&[0, 0, 0, 0x0a, 0x05, 0, 0, 0, 9, 3, b'a', b'.', b'*', b'x']).await.unwrap();
    let Frame::Error(e) = c.recv().await.unwrap() else { panic!("expected ERROR") };
    assert_eq!((e.code, e.req_id), (400, 9));
    // MSG from a client (no PEER_V1): 415.
    c.send(&Frame::Msg(oap_codec::Msg {
        topic: "x".parse().unwrap(),
        msg_id: Default::default(),
        hops: 0,
        payload: Bytes::new(),
    }))
    .await
    .unwrap();
    let Frame::Error(e) = c.recv().await.unwrap() else { panic!("expected ERROR") };
    assert_eq!(e.code, 415);
    node.shutdown().await;
}

#[tokio::test]
async fn overlapping_patterns_on_one_session_deliver_once() {
    let node = node(|_| {}).await;
    let mut s = pubsub(&node).await;
    for (i, p) in ["a.>", "a.*", "a.b", ">"].into_iter().enumerate() {
        sub(&mut s, i as u32 + 1, p).await;
    }
    node.publish("a.b", "one").unwrap();
    node.publish("a.b", "two").unwrap();
    let Frame::Msg(first) = within(s.recv()).await.unwrap() else { panic!() };
    let Frame::Msg(second) = within(s.recv()).await.unwrap() else { panic!() };
    assert_eq!((&first.payload[..], &second.payload[..]), (&b"one"[..], &b"two"[..]));
    node.shutdown().await;
}

/// Reads `MSGS` messages numbered 0.. (big-endian u32 payload prefix) and
/// checks their order; answers PINGs. Returns how many arrived.
async fn read_in_order(mut s: overlay_core::client::Client, msgs: u32) -> u32 {
    let mut next = 0u32;
    while next < msgs {
        match within(s.recv()).await.unwrap() {
            Frame::Msg(m) => {
                assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), next, "out of order");
                next += 1;
            }
            Frame::Ctrl(Ctrl::Ping { nonce }) => s.send(&Frame::pong(nonce)).await.unwrap(),
            other => panic!("subscriber got {other:?}"),
        }
    }
    next
}

#[tokio::test]
async fn one_publisher_to_100_subscribers_10_000_messages_each_in_order() {
    const SUBS: usize = 100;
    const MSGS: u32 = 10_000;
    let node = node(|_| {}).await;
    let mut readers = Vec::new();
    for _ in 0..SUBS {
        let mut s = pubsub(&node).await;
        sub(&mut s, 1, "load.*").await;
        readers.push(tokio::spawn(read_in_order(s, MSGS)));
    }
    let mut p = pubsub(&node).await;
    for seq in 0..MSGS {
        p.feed(&pub_frame(0, "load.x", seq.to_be_bytes().to_vec())).unwrap();
        if seq % 256 == 255 {
            p.flush().await.unwrap();
        }
    }
    p.flush().await.unwrap();
    for r in readers {
        assert_eq!(r.await.unwrap(), MSGS);
    }
    assert_eq!(metric(&node, "overlay_queue_dropped_total", &[("queue", "delivery"), ("reason", "full")]).await, 0.0);
    wait_metric(&node, "gossip_fanout_total", &[], (SUBS as u32 * MSGS) as f64).await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_reading_subscriber_on_the_smallest_queue_loses_nothing_to_a_pipelining_publisher() {
    // 64 KiB queue; each read of the publisher's stream holds far more than
    // that in tiny PUBs, so the publisher must be held back mid-batch.
    const MSGS: u32 = 50_000;
    let node = node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
    })
    .await;
    let mut s = pubsub(&node).await;
    sub(&mut s, 1, "tiny").await;
    let reader = tokio::spawn(read_in_order(s, MSGS));
    let mut p = pubsub(&node).await;
    for seq in 0..MSGS {
        p.feed(&pub_frame(0, "tiny", seq.to_be_bytes().to_vec())).unwrap();
        if seq % 8192 == 8191 {
            p.flush().await.unwrap();
        }
    }
    p.flush().await.unwrap();
    assert_eq!(reader.await.unwrap(), MSGS);
    assert_eq!(metric(&node, "overlay_queue_dropped_total", &[("queue", "delivery"), ("reason", "full")]).await, 0.0);
    node.shutdown().await;
}

/// A node with 64 KiB delivery queues, writes that may wait for minutes
/// (so a stuck reader meets the slow-consumer rule, not the write timeout),
/// and the given slow-consumer timeout.
async fn small_queue_node(slow_consumer_timeout_ms: u64) -> Overlay {
    node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
        c.session.slow_consumer_timeout_ms = slow_consumer_timeout_ms;
        c.transport.write_timeout_ms = 300_000;
    })
    .await
}

/// Reads what a stuck subscriber was sent until its `GOAWAY 429`, then the close.
async fn read_to_goaway_429(stuck: &mut tokio::net::TcpStream) {
    loop {
        match read_frame(stuck).await {
            Frame::Ctrl(Ctrl::Goaway { code, .. }) => {
                assert_eq!(code, 429);
                break;
            }
            Frame::Msg(_) | Frame::Lagged { .. } | Frame::Ctrl(Ctrl::Ping { .. }) => {}
            other => panic!("got {other:?}"),
        }
    }
    assert_closed(stuck).await;
}

/// A subscriber socket with a tiny receive window that never reads.
async fn stuck_subscriber(node: &Overlay, pattern: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut s = socket.connect(node.local_addr()).await.unwrap();
    s.write_all(&oap_codec::Hello::new(Caps::GOSSIP_V1 | Caps::PUBSUB_V1).encode()).await.unwrap();
    let mut hello = [0u8; 9];
    within(s.read_exact(&mut hello)).await.unwrap();
    s.write_all(&encode(&Frame::Sub { req_id: 1, pattern: pattern.parse().unwrap() })).await.unwrap();
    assert!(matches!(read_frame(&mut s).await, Frame::Ack(_)));
    s
}

/// Publishes `n` 1 KiB messages with ACKs; returns (queued, dropped) sums.
async fn publish_acked(p: &mut overlay_core::client::Client, topic: &str, n: u32, first: u32) -> (u64, u64) {
    for seq in first..first + n {
        let mut payload = vec![0u8; 1024];
        payload[..4].copy_from_slice(&seq.to_be_bytes());
        p.feed(&pub_frame(seq + 1, topic, payload)).unwrap();
    }
    p.flush().await.unwrap();
    let (mut queued, mut dropped) = (0, 0);
    for seq in first..first + n {
        match within(p.recv()).await.unwrap() {
            Frame::Ack(Ack { req_id, publish: Some(a) }) => {
                assert_eq!(req_id, seq + 1);
                queued += u64::from(a.queued);
                dropped += u64::from(a.dropped);
            }
            other => panic!("publisher got {other:?}"),
        }
    }
    (queued, dropped)
}

#[tokio::test]
async fn a_stuck_subscriber_never_holds_back_others_and_learns_its_loss_from_lagged() {
    const MSGS: u32 = 20_000;
    let node = small_queue_node(600_000).await;
    let mut stuck = stuck_subscriber(&node, "t").await;
    let mut good = pubsub(&node).await;
    sub(&mut good, 1, "t").await;
    let good_reader = tokio::spawn(async move {
        for want in 0..MSGS {
            let Frame::Msg(m) = within(good.recv()).await.unwrap() else { panic!("good subscriber: not MSG") };
            assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), want);
        }
    });
    let mut p = pubsub(&node).await;
    let (_, dropped) = publish_acked(&mut p, "t", MSGS, 0).await;
    good_reader.await.unwrap();
    assert!(dropped > 0, "the stuck subscriber's queue never filled");

    // The stuck subscriber resumes: every message is either delivered or
    // counted in a LAGGED.
    let (mut delivered, mut lagged, mut last) = (0u64, 0u64, None);
    while delivered + lagged < u64::from(MSGS) {
        match read_frame(&mut stuck).await {
            Frame::Msg(m) => {
                let seq = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                assert!(last.is_none_or(|l| seq > l), "order kept");
                last = Some(seq);
                delivered += 1;
            }
            Frame::Lagged { dropped } => lagged += dropped,
            Frame::Ctrl(Ctrl::Ping { .. }) => {}
            other => panic!("stuck subscriber got {other:?}"),
        }
    }
    assert_eq!(lagged, dropped, "LAGGED counts exactly what the ACKs reported dropped");
    // Caught up, it gets the next message again.
    assert_eq!(publish_acked(&mut p, "t", 1, MSGS).await, (1, 0), "queued for the (only) stuck subscriber");
    let Frame::Msg(m) = read_frame(&mut stuck).await else { panic!("expected MSG") };
    assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), MSGS);
    assert!(last.is_some_and(|l| l < MSGS));
    assert_eq!(
        metric(&node, "overlay_queue_dropped_total", &[("queue", "delivery"), ("reason", "full")]).await,
        dropped as f64
    );
    node.shutdown().await;
}

#[tokio::test]
async fn a_subscriber_stuck_past_slow_consumer_timeout_gets_goaway_429() {
    let node = small_queue_node(300).await;
    let mut stuck = stuck_subscriber(&node, "t").await;
    let mut p = pubsub(&node).await;
    // Publish until the node gives up on the subscriber.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seq = 0;
    while metric(&node, "gossip_dropped_total", &[("reason", "closed")]).await == 0.0 {
        publish_acked(&mut p, "t", 200, seq).await;
        seq += 200;
        assert!(tokio::time::Instant::now() < deadline, "never evicted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    read_to_goaway_429(&mut stuck).await;
    // The publisher was never blocked and still works.
    let (queued, _) = publish_acked(&mut p, "t", 1, seq).await;
    assert_eq!(queued, 0, "the evicted subscriber is gone");
    node.shutdown().await;
}

#[tokio::test]
async fn in_process_subscriptions_get_messages_and_lag_reports() {
    let node = node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
    })
    .await;
    let mut all = node.subscribe("dht.>").unwrap();
    let receipt = node.publish("dht.put", Bytes::from_static(b"v")).unwrap();
    assert_eq!((receipt.queued, receipt.dropped), (1, 0));
    let Some(Delivery::Message(m)) = within(all.recv()).await else { panic!("expected a message") };
    assert_eq!((m.topic.as_str(), &m.payload[..], m.msg_id, m.hops), ("dht.put", &b"v"[..], receipt.msg_id, 0));

    // Same bounds as a session: 64 KiB of 1 KiB messages, then drops.
    let mut dropped = 0;
    for _ in 0..200 {
        dropped += node.publish("dht.put", vec![0u8; 1024]).unwrap().dropped;
    }
    assert!(dropped > 0);
    let mut got = 0;
    let mut lagged = 0;
    while got + lagged < 200 {
        match within(all.recv()).await.unwrap() {
            Delivery::Message(_) => got += 1,
            Delivery::Lagged(n) => lagged += n,
        }
    }
    assert_eq!(lagged, u64::from(dropped));
    assert!(node.subscribe("bad..pattern").is_err());
    assert!(node.publish("dht.*", "x").is_err());
    node.shutdown().await;
    assert_eq!(within(all.recv()).await, None, "subscriptions end with the node");
}

async fn collect_until(subscription: &mut overlay_core::Subscription, end: &[u8]) -> Vec<Bytes> {
    let mut got = Vec::new();
    loop {
        match within(subscription.recv()).await {
            Some(Delivery::Message(m)) if &m.payload[..] == end => return got,
            Some(Delivery::Message(m)) => got.push(m.payload),
            other => panic!("unexpected {other:?}"),
        }
    }
}

async fn exactly_once(nodes: &[Overlay]) {
    let mut subs: Vec<_> = nodes.iter().map(|n| n.subscribe("mesh.>").unwrap()).collect();
    for i in 0..20u32 {
        nodes[0].publish("mesh.msg", i.to_be_bytes().to_vec()).unwrap();
    }
    nodes[0].publish("mesh.msg", "end").unwrap();
    for (i, s) in subs.iter_mut().enumerate() {
        let got = collect_until(s, b"end").await;
        let distinct: HashSet<_> = got.iter().collect();
        assert_eq!((got.len(), distinct.len()), (20, 20), "node {i} did not get each message exactly once");
    }
}

#[tokio::test]
async fn five_nodes_in_a_line_deliver_exactly_once() {
    let mut nodes = vec![peer_node(vec![], |_| {}).await];
    for _ in 1..5 {
        let prev = nodes.last().unwrap().local_addr();
        nodes.push(peer_node(vec![prev], |_| {}).await);
    }
    for (i, n) in nodes.iter().enumerate() {
        wait_links(n, if i == 0 || i == 4 { 1 } else { 2 }).await;
    }
    exactly_once(&nodes).await;
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn five_nodes_in_a_ring_deliver_exactly_once() {
    // Bind all five first so each can name the next.
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(peer_node(vec![], |_| {}).await);
    }
    for i in 0..5 {
        nodes[i].add_peer(nodes[(i + 1) % 5].local_addr()).unwrap();
    }
    for n in &nodes {
        wait_links(n, 2).await;
    }
    exactly_once(&nodes).await;
    // Five nodes end up a full mesh whose links all start in the broadcast
    // tree: the first messages meet on the way, and the swarm drops (and
    // prunes) the second copies.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while nodes.iter().map(|n| n.swarm().duplicates).sum::<u64>() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no duplicate was ever dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in &nodes {
        n.shutdown().await;
    }
}

#[tokio::test]
async fn a_restarted_peer_is_redialed_and_receives_new_messages() {
    let b = peer_node(vec![], |_| {}).await;
    let b_addr = b.local_addr();
    let a = peer_node(vec![b_addr], |_| {}).await;
    wait_links(&a, 1).await;
    let mut events = a.events();
    b.shutdown().await;
    loop {
        if let overlay_core::OverlayEvent::PeerDown { peer } = within(events.recv()).await.unwrap() {
            assert_eq!(peer, b_addr);
            break;
        }
    }
    let b2 = peer_node(vec![], |c| c.transport.addr = b_addr).await;
    let mut sub = b2.subscribe(">").unwrap();
    wait_links(&b2, 1).await;
    wait_links(&a, 1).await;
    a.publish("after.restart", "hi").unwrap();
    let Some(Delivery::Message(m)) = within(sub.recv()).await else { panic!() };
    assert_eq!((&m.payload[..], m.hops), (&b"hi"[..], 1));
    a.shutdown().await;
    b2.shutdown().await;
}

/// The `libapi_embed` example's flow: an embedding program subscribes
/// in-process and a remote client publishes over OAP/1.
#[tokio::test]
async fn embedded_subscriber_receives_what_a_remote_client_publishes() {
    let node = peer_node(vec![], |_| {}).await;
    let mut subscription = node.subscribe("demo.>").unwrap();
    let mut remote = pubsub(&node).await;
    remote.send(&pub_frame(1, "demo.hello", "hi there")).await.unwrap();
    let Frame::Ack(Ack { publish: Some(receipt), .. }) = within(remote.recv()).await.unwrap() else { panic!() };
    assert_eq!(receipt.queued, 1);
    let Some(Delivery::Message(m)) = within(subscription.recv()).await else { panic!("expected the message") };
    assert_eq!((m.topic.as_str(), &m.payload[..], m.msg_id), ("demo.hello", &b"hi there"[..], receipt.msg_id));
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_flushes_queued_deliveries_before_the_goaway() {
    let node = node(|_| {}).await;
    let mut s = pubsub(&node).await;
    sub(&mut s, 1, "drain.>").await;
    for i in 0..100u32 {
        node.publish("drain.x", i.to_be_bytes().to_vec()).unwrap();
    }
    let stopping = node.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    for want in 0..100u32 {
        match within(s.recv()).await.unwrap() {
            Frame::Msg(m) => assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), want),
            other => panic!("message {want}: got {other:?} before all queued deliveries"),
        }
    }
    let Frame::Ctrl(Ctrl::Goaway { code: 503, .. }) = within(s.recv()).await.unwrap() else { panic!("GOAWAY last") };
    assert!(matches!(within(s.recv()).await, Err(overlay_core::client::ClientError::Closed)), "nothing after GOAWAY");
    within(shutdown).await.unwrap();
}

#[tokio::test]
async fn a_drain_flushes_a_backlog_larger_than_one_write_in_order_before_the_goaway() {
    // A subscriber that has not been reading has ~6.7 MiB waiting, more
    // than its socket takes: the drain's last batch is many writes (1 KiB
    // frames copied, 20 KiB ones sent from their own buffers), all before
    // the GOAWAY.
    let node = node(|_| {}).await;
    let mut s = stuck_subscriber(&node, "drain.>").await;
    let sizes = |i: u32| if i % 50 == 49 { 20 << 10 } else { 1 << 10 };
    const MSGS: u32 = 5_000;
    for i in 0..MSGS {
        let mut payload = vec![0u8; sizes(i)];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        node.publish("drain.x", payload).unwrap();
    }
    let stopping = node.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    for want in 0..MSGS {
        match read_frame(&mut s).await {
            Frame::Msg(m) => {
                assert_eq!(u32::from_be_bytes(m.payload[..4].try_into().unwrap()), want, "out of order");
                assert_eq!(m.payload.len(), sizes(want));
            }
            other => panic!("message {want}: got {other:?} before all queued deliveries"),
        }
    }
    assert!(matches!(read_frame(&mut s).await, Frame::Ctrl(Ctrl::Goaway { code: 503, .. })), "GOAWAY last");
    assert_closed(&mut s).await;
    within(shutdown).await.unwrap();
}

#[tokio::test]
async fn a_peer_that_drops_every_link_after_the_hello_is_not_redialed_in_a_tight_loop() {
    // Each link completes the hello and ends at once (a node without the
    // swarm, refused with 415): a failed dial, so the address's back-off
    // keeps doubling from 100 ms (each pause jittered within [d/2, d]),
    // however often the swarm's repairs (here every 100 ms) rejoin through
    // the seed. The gaps between dials are bounded below exactly; a loaded
    // machine only makes them longer.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let node = node(|c| {
        c.peers = vec![overlay_core::Peer::from(addr)];
        c.swarm.repair_ms = 100;
    })
    .await;
    let mut dialed = Vec::new();
    while dialed.len() < 5 {
        let (mut s, _) = within(listener.accept()).await.unwrap();
        dialed.push(tokio::time::Instant::now());
        s.write_all(&oap_codec::Hello::new(Caps::GOSSIP_V1 | Caps::PEER_V1).encode()).await.unwrap();
        let mut theirs = [0u8; 9];
        let _ = s.read_exact(&mut theirs).await;
    }
    for (k, pair) in dialed.windows(2).enumerate() {
        let least = Duration::from_millis(100 << k) / 2;
        let gap = pair[1] - pair[0];
        assert!(gap >= least, "dial {} came {gap:?} after the one before, under {least:?}", k + 2);
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_wide_fanout_charges_the_shared_frame_once_and_reaches_every_subscriber() {
    // 10,000 x 48 KiB is past the default 256 MiB budget if each queue is
    // charged the frame; it is one frame, charged once.
    let node = node(|c| c.admin.enabled = false).await;
    let mut subs: Vec<_> = (0..10_000).map(|_| node.subscribe("wide.>").unwrap()).collect();
    let receipt = node.publish("wide.x", vec![7u8; 48 << 10]).unwrap();
    assert_eq!((receipt.queued, receipt.dropped), (10_000, 0));
    for sub in &mut subs {
        let Some(Delivery::Message(m)) = within(sub.recv()).await else { panic!("a subscriber missed it") };
        assert_eq!(m.payload.len(), 48 << 10);
    }
    node.shutdown().await;
}

/// Publishes until the stuck subscriber's queue refuses a message (it lags).
async fn publish_until_lagging(node: &Overlay, p: &mut overlay_core::client::Client) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut seq = 0;
    while publish_acked(p, "t", 100, seq).await.1 == 0 {
        seq += 100;
        assert!(tokio::time::Instant::now() < deadline, "the subscriber's queue never filled");
    }
    assert!(metric(node, "gossip_dropped_total", &[("reason", "full")]).await > 0.0);
}

#[tokio::test]
async fn a_lagging_subscriber_is_evicted_at_its_deadline_without_more_messages() {
    // OAP-1 section 4: the slow-consumer timeout is a deadline, not a check
    // made when the next message is offered.
    let node = small_queue_node(300).await;
    let mut stuck = stuck_subscriber(&node, "t").await;
    let mut p = pubsub(&node).await;
    publish_until_lagging(&node, &mut p).await;
    // Nothing more is published. Past the deadline and a sampler period
    // (500 ms) with room to spare, the subscriber reads again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    read_to_goaway_429(&mut stuck).await;
    node.shutdown().await;
}

/// A node with 64 KiB delivery queues (and `tweak`), a subscriber that never
/// reads, and its queue published full (it lags).
async fn lagging_subscriber(tweak: impl FnOnce(&mut overlay_core::OverlayConfig)) -> (Overlay, tokio::net::TcpStream) {
    let node = node(|c| {
        c.oap.max_frame = 4096;
        c.session.delivery_queue_bytes = 64 << 10;
        tweak(c);
    })
    .await;
    let stuck = stuck_subscriber(&node, "t").await;
    publish_until_lagging(&node, &mut pubsub(&node).await).await;
    (node, stuck)
}

/// Reads until the stream ends: `Ok` for a graceful close, else the error.
async fn read_to_close(s: &mut tokio::net::TcpStream) -> Result<(), std::io::ErrorKind> {
    let mut sink = vec![0u8; 64 << 10];
    loop {
        match within(s.read(&mut sink)).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.kind()),
        }
    }
}

#[tokio::test]
async fn an_idle_subscriber_whose_writer_is_blocked_is_closed_and_reset() {
    // idle_timeout holds even while the session's writer waits on a peer
    // that does not read (write_timeout is 5 minutes here); such a peer is
    // reset, so its unread bytes do not stay in the kernel.
    let (node, mut stuck) = lagging_subscriber(|c| {
        c.transport.write_timeout_ms = 300_000;
        c.transport.idle_timeout_ms = 1000;
    })
    .await;
    wait_metric(&node, "overlay_sessions_closed_total", &[("reason", "idle_timeout")], 1.0).await;
    assert_eq!(read_to_close(&mut stuck).await, Err(std::io::ErrorKind::ConnectionReset), "reset, not a close");
    node.shutdown().await;
}

#[tokio::test]
async fn an_evicted_subscriber_that_never_reads_its_goaway_is_reset() {
    let (node, mut stuck) = lagging_subscriber(|c| {
        c.session.slow_consumer_timeout_ms = 300;
        c.transport.write_timeout_ms = 1000;
    })
    .await;
    // Evicted at its deadline; its GOAWAY 429 cannot be written within
    // write_timeout, so the connection is reset instead of closed.
    wait_metric(&node, "overlay_sessions_closed_total", &[("reason", "write_timeout")], 1.0).await;
    assert_eq!(read_to_close(&mut stuck).await, Err(std::io::ErrorKind::ConnectionReset));
    node.shutdown().await;
}

#[tokio::test]
async fn a_peer_v1_client_cannot_shadow_another_nodes_messages_with_predicted_ids() {
    // An open node (no auth.required) takes any swarm peer. The forger joins
    // B, learns A's ids from what B pushes to it, predicts A's next ones,
    // and sends them first with other content.
    let b = peer_node(vec![], |_| {}).await;
    let a = peer_node(vec![b.local_addr()], |_| {}).await;
    wait_links(&b, 1).await;
    let mut at_b = b.subscribe("t.>").unwrap();
    let mut forger = common::fake_peer(&b, 7, Caps::empty(), true).await;
    wait_links(&b, 2).await;
    a.publish("t.x", "seen by the forger").unwrap();
    let Some(Delivery::Message(first)) = within(at_b.recv()).await else { panic!() };
    let observed = loop {
        if let Frame::Msg(m) = within(forger.recv()).await.unwrap() {
            break m;
        }
    };
    assert_eq!(observed.msg_id, first.msg_id);
    for ahead in 1..=199u8 {
        let mut id = observed.msg_id;
        id.0[10] = id.0[10].wrapping_add(ahead);
        let forged = oap_codec::Msg { topic: "t.x".parse().unwrap(), msg_id: id, hops: 1, payload: "forged".into() };
        forger.feed(&Frame::Msg(forged)).unwrap();
    }
    forger.flush().await.unwrap();
    // Every forged frame is refused (ERROR 400), in order, before B reads on.
    let mut refused = 0;
    while refused < 199 {
        match within(forger.recv()).await.unwrap() {
            Frame::Error(e) => {
                assert_eq!(e.code, 400, "{}", e.reason);
                refused += 1;
            }
            Frame::Msg(_) | Frame::Ctrl(_) | Frame::Swarm(_) => {}
            other => panic!("forger got {other:?}"),
        }
    }
    for i in 0..10u8 {
        a.publish("t.x", vec![i]).unwrap();
        let Some(Delivery::Message(m)) = within(at_b.recv()).await else { panic!("real message {i} lost") };
        assert_eq!(&m.payload[..], &[i]);
    }
    for n in [a, b] {
        n.shutdown().await;
    }
}
