//! The registry's contract: wildcard matching, one delivery per subscriber
//! per message, bounded queues with LAGGED accounting, relay dedup and hops.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use oap_codec::{Frame, OapCodec};
use overlay_gossip::{Charged, GossipConfig, MsgIdGen, PublishBatch, PublishError, Registry, SubscribeError};
use tokio_util::codec::Decoder;

fn decode(frame: &Charged) -> Frame {
    OapCodec::new().decode(&mut BytesMut::from(&frame.frame()[..])).unwrap().unwrap()
}

#[test]
fn wildcard_table_through_the_registry() {
    let reg = Registry::new(GossipConfig::default(), "t");
    let table: &[(&str, &[&str], &[&str])] = &[
        ("a.b", &["a.b"], &["a.c", "a.b.c", "a"]),
        ("a.*", &["a.b", "a.x"], &["a", "a.b.c", "b.a"]),
        ("*.b", &["a.b", "x.b"], &["b", "a.b.c"]),
        ("a.>", &["a.b", "a.b.c.d"], &["a", "b.a"]),
        (">", &["a", "a.b.c"], &[]),
        ("a.*.c.>", &["a.x.c.d", "a.y.c.d.e"], &["a.x.c", "a.x.d.e"]),
    ];
    for (pattern, yes, no) in table {
        let q = reg.queue();
        let id = reg.attach(q);
        reg.subscribe(id, &pattern.parse().unwrap()).unwrap();
        for t in *yes {
            assert_eq!(reg.interested(&t.parse().unwrap()), 1, "{pattern} should match {t}");
        }
        for t in *no {
            assert_eq!(reg.interested(&t.parse().unwrap()), 0, "{pattern} should not match {t}");
        }
        reg.detach(id);
    }
}

#[test]
fn overlapping_patterns_deliver_once_and_unsubscribe_is_exact() {
    let reg = Registry::new(GossipConfig::default(), "t");
    let q = reg.queue();
    let id = reg.attach(q.clone());
    for p in ["a.>", "a.*", "a.b", ">"] {
        assert!(reg.subscribe(id, &p.parse().unwrap()).unwrap());
    }
    assert!(!reg.subscribe(id, &"a.b".parse().unwrap()).unwrap(), "same pattern twice is one subscription");
    let f = reg
        .publish(&"a.b".parse().unwrap(), Bytes::from_static(b"x"), Instant::now(), &mut PublishBatch::default())
        .unwrap();
    assert_eq!((f.queued, f.dropped), (1, 0));
    let mut out = Vec::new();
    q.take(usize::MAX, &mut out);
    assert_eq!(out.len(), 1);
    let Frame::Msg(msg) = decode(&out[0]) else { panic!("MSG") };
    assert_eq!((msg.topic.as_str(), msg.hops, &msg.payload[..]), ("a.b", 0, &b"x"[..]));
    assert_eq!(msg.msg_id, f.msg_id);

    for p in ["a.>", "a.*", "a.b"] {
        assert!(reg.unsubscribe(id, &p.parse().unwrap()));
    }
    assert!(!reg.unsubscribe(id, &"a.b".parse().unwrap()));
    assert_eq!(reg.interested(&"a.b".parse().unwrap()), 1, "'>' still held");
}

#[test]
fn max_subscriptions_is_enforced() {
    let reg = Registry::new(GossipConfig { max_subscriptions: 2, ..GossipConfig::default() }, "t");
    let id = reg.attach(reg.queue());
    reg.subscribe(id, &"a".parse().unwrap()).unwrap();
    reg.subscribe(id, &"b".parse().unwrap()).unwrap();
    assert_eq!(reg.subscribe(id, &"c".parse().unwrap()), Err(SubscribeError::TooMany(2)));
}

#[test]
fn a_full_queue_drops_newest_and_reports_the_count_once() {
    let cfg = GossipConfig { delivery_queue_bytes: 1000, ..GossipConfig::default() };
    let reg = Registry::new(cfg, "t");
    let slow = reg.queue();
    let fast = reg.queue();
    let s = reg.attach(slow.clone());
    let f = reg.attach(fast.clone());
    reg.subscribe(s, &"t".parse().unwrap()).unwrap();
    reg.subscribe(f, &"t".parse().unwrap()).unwrap();
    let now = Instant::now();
    let mut dropped = 0;
    let mut fast_got = 0;
    let mut out = Vec::new();
    for i in 0..100u32 {
        let report = reg
            .publish(&"t".parse().unwrap(), Bytes::from(i.to_be_bytes().to_vec()), now, &mut PublishBatch::default())
            .unwrap();
        dropped += report.dropped;
        out.clear();
        fast.take(usize::MAX, &mut out);
        fast_got += out.len();
    }
    assert_eq!(fast_got, 100, "the subscriber that keeps up loses nothing");
    out.clear();
    let taken = slow.take(usize::MAX, &mut out);
    assert_eq!(out.len() as u32 + dropped, 100);
    assert_eq!(taken.lagged, Some(u64::from(dropped)));
    let Frame::Msg(first) = decode(&out[0]) else { panic!("MSG") };
    assert_eq!(&first.payload[..], &0u32.to_be_bytes(), "oldest kept, newest dropped");
}

#[test]
fn delivered_messages_keep_their_hops_and_this_nodes_own_are_dropped() {
    let reg = Registry::new(GossipConfig::default(), "t");
    let local = reg.queue();
    let id = reg.attach(local.clone());
    reg.subscribe(id, &">".parse().unwrap()).unwrap();
    let now = Instant::now();
    let topic: oap_codec::Topic = "x".parse().unwrap();

    // Another node's message, as the swarm hands it over.
    let msg_id = MsgIdGen::with_prefix([9; 6]).next_id(&topic, b"p");
    let foreign = oap_codec::Msg { topic: topic.clone(), msg_id, hops: 2, payload: Bytes::from_static(b"p") };
    assert_eq!(reg.deliver(&foreign, now, &mut PublishBatch::default()).unwrap().queued, 1);
    let mut out = Vec::new();
    local.take(usize::MAX, &mut out);
    let Frame::Msg(here) = decode(&out[0]) else { panic!("MSG") };
    assert_eq!((here.hops, here.msg_id), (2, msg_id), "local delivery keeps the hops it arrived with");

    // This node's own message coming back is never delivered twice.
    let f = reg.publish(&topic, Bytes::new(), now, &mut PublishBatch::default()).unwrap();
    let own = oap_codec::Msg { topic, msg_id: f.msg_id, hops: 3, payload: Bytes::new() };
    assert!(reg.deliver(&own, now, &mut PublishBatch::default()).is_none());
}

#[test]
fn ids_bind_their_content_while_the_node_has_swarm_peers() {
    let reg = Registry::new(GossipConfig::default(), "t");
    let topic: oap_codec::Topic = "x".parse().unwrap();
    let now = Instant::now();
    let alone = reg.publish(&topic, Bytes::from_static(b"p"), now, &mut PublishBatch::default()).unwrap();
    assert!(!alone.relay, "alone, nothing leaves the node");
    reg.set_relaying(true);
    let linked = reg.publish(&topic, Bytes::from_static(b"p"), now, &mut PublishBatch::default()).unwrap();
    assert!(linked.relay);
    assert!(overlay_gossip::binds(&linked.msg_id, &topic, b"p"), "an id that leaves the node binds its content");
}

#[test]
fn oversize_messages_are_refused_before_fanout() {
    let reg = Registry::new(GossipConfig { max_frame: 1024, ..GossipConfig::default() }, "t");
    let topic = "abc".parse().unwrap();
    let max = 1024 - (1 + 1 + 3 + 16 + 1);
    assert!(reg.publish(&topic, Bytes::from(vec![0; max]), Instant::now(), &mut PublishBatch::default()).is_ok());
    assert_eq!(
        reg.publish(&topic, Bytes::from(vec![0; max + 1]), Instant::now(), &mut PublishBatch::default()).unwrap_err(),
        PublishError::TooLarge { payload: max + 1, max }
    );
}

#[test]
fn congestion_gathers_each_queue_once_and_turns_urgent_past_three_quarters() {
    let reg = Registry::new(GossipConfig { delivery_queue_bytes: 1000, ..GossipConfig::default() }, "t");
    let sub = reg.attach(reg.queue());
    reg.subscribe(sub, &"t".parse().unwrap()).unwrap();
    let mut congestion = PublishBatch::default();
    let now = Instant::now();
    // Each MSG on "t" with a 100 B payload is 4 + 1 + 1 + 1 + 16 + 1 + 100 = 124 bytes.
    for _ in 0..5 {
        reg.publish(&"t".parse().unwrap(), Bytes::from(vec![0; 100]), now, &mut congestion).unwrap();
    }
    assert!(!congestion.is_empty() && !congestion.is_urgent(), "620 of 1000 bytes: congested, not urgent");
    for _ in 0..2 {
        reg.publish(&"t".parse().unwrap(), Bytes::from(vec![0; 100]), now, &mut congestion).unwrap();
    }
    assert!(congestion.is_urgent(), "868 of 1000 bytes: stall before the next message");
    assert_eq!(congestion.queues().len(), 1, "one queue, gathered once");
    congestion.clear();
    assert!(congestion.is_empty() && !congestion.is_urgent());
}
