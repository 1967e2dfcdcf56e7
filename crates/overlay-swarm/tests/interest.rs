//! Interest routing in the simulator: payloads go only toward subscribers,
//! a new subscriber and a node that joins late are reached, an
//! unsubscribed node stops getting messages, and a node that wants every
//! topic (no subscriptions told) behaves as plain PlumTree.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use overlay_swarm::sim::Sim;
use overlay_swarm::{Config, MsgId, Pattern, Topic};

/// `n` nodes joining through node 0, every one told it subscribes to
/// nothing yet.
fn joined(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, &Config::default(), seed, Instant::now());
    for i in 1..n {
        sim.join(i, 0);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(30));
    for i in 0..n {
        sim.set_interest(i, Some(Vec::new()));
    }
    sim
}

fn patterns(p: &[&str]) -> Option<Vec<Pattern>> {
    Some(p.iter().map(|p| p.parse().unwrap()).collect())
}

fn topic(t: &str) -> Topic {
    t.parse().unwrap()
}

/// Publishes `count` messages on `t` from `publisher`, 200 ms apart, and
/// waits 5 s past the last; returns their ids.
fn publish(sim: &mut Sim, publisher: usize, t: &str, count: usize) -> Vec<MsgId> {
    let mut ids = Vec::new();
    for _ in 0..count {
        ids.push(sim.publish_on(publisher, topic(t)));
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(5));
    ids
}

/// Node `i` got every one of `ids`.
fn got_all(sim: &Sim, i: usize, ids: &[MsgId], who: &str) {
    for id in ids {
        assert!(sim.got(i, id).is_some(), "{who} (node {i}) missed {id:?}");
    }
}

#[test]
fn payloads_go_only_toward_subscribers() {
    let n = 200;
    let mut sim = joined(n, 3);
    let subscribers = [17, 88, 150];
    for &s in &subscribers {
        sim.set_interest(s, patterns(&["rare.>"]));
    }
    let publisher = 42;
    // The origin's first message goes everywhere (no summary exists for
    // its tree yet) and builds the tree; the summaries follow it up.
    publish(&mut sim, publisher, "rare.x", 1);
    let sent_before = sim.payload_sent;
    let ids = publish(&mut sim, publisher, "rare.x", 20);
    for &s in &subscribers {
        got_all(&sim, s, &ids, "a subscriber");
    }
    // Reaching 3 nodes among 200 takes a path to each (about 5 hops here),
    // not a tree over all of them.
    let per_publish = (sim.payload_sent - sent_before) as f64 / ids.len() as f64;
    assert!(per_publish <= 25.0, "{per_publish} payload sends per publish for 3 subscribers among {n}");
    // A topic no one subscribes to goes nowhere.
    let sent_before = sim.payload_sent;
    publish(&mut sim, publisher, "other.x", 5);
    assert_eq!(sim.payload_sent, sent_before, "payloads sent for a topic with no subscriber");
    assert_eq!(sim.report(0).duplicates, 0);
    assert_eq!(sim.decode_errors, 0);
}

#[test]
fn a_new_subscriber_gets_messages_published_a_second_later() {
    let mut sim = joined(200, 4);
    let publisher = 9;
    sim.set_interest(120, patterns(&["rare.a.*"]));
    publish(&mut sim, publisher, "rare.a.b", 2);
    // Subscribes now; what is published from a second on reaches it.
    sim.set_interest(77, patterns(&["rare.*.b"]));
    sim.run_for(Duration::from_secs(1));
    let ids = publish(&mut sim, publisher, "rare.a.b", 5);
    got_all(&sim, 77, &ids, "the new subscriber");
    got_all(&sim, 120, &ids, "the old subscriber");
}

#[test]
fn an_unsubscribed_node_stops_getting_messages() {
    let mut sim = joined(200, 5);
    let publisher = 3;
    sim.set_interest(150, patterns(&["rare.>"]));
    sim.set_interest(60, patterns(&["rare.>"]));
    let ids = publish(&mut sim, publisher, "rare.x", 3);
    assert!(ids.iter().all(|id| sim.got(150, id).is_some()));
    sim.set_interest(150, Some(Vec::new()));
    sim.run_for(Duration::from_secs(2));
    let ids = publish(&mut sim, publisher, "rare.x", 5);
    for id in &ids {
        assert!(sim.got(150, id).is_none(), "the node that unsubscribed still got {id:?}");
    }
    got_all(&sim, 60, &ids, "the remaining subscriber");
}

#[test]
fn a_node_that_joins_later_hears_an_existing_origin() {
    let mut sim = joined(100, 6);
    let publisher = 11;
    sim.set_interest(50, patterns(&["rare.>"]));
    publish(&mut sim, publisher, "rare.x", 3);
    // The origin's tree exists; a new node joins and subscribes. It never
    // saw the origin's first message, so it has no tree for it: its
    // neighbours count it by its own subscriptions (its default summary).
    let late = sim.add_node();
    sim.join(late, 0);
    sim.set_interest(late, patterns(&["rare.>"]));
    sim.run_for(Duration::from_secs(5));
    let ids = publish(&mut sim, publisher, "rare.x", 5);
    got_all(&sim, late, &ids, "the node that joined late");
    got_all(&sim, 50, &ids, "the subscriber");
}

#[test]
fn a_node_that_wants_everything_sends_no_summary() {
    // Nodes never told their subscriptions want every topic: PlumTree as
    // it was, and not one INTEREST frame.
    let mut sim = Sim::new(50, &Config::default(), 7, Instant::now());
    for i in 1..50 {
        sim.join(i, 0);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(30));
    let first = sim.published();
    publish(&mut sim, 5, "any.topic", 10);
    for k in first..sim.published() {
        assert!(sim.missed_by(k).is_empty(), "message {k} missed by {:?}", sim.missed_by(k));
    }
    let frames: u64 = (0..50).map(|i| sim.swarm(i).stats().interest_sent).sum();
    let flood: u64 = (0..50).map(|i| sim.swarm(i).flood_edges() as u64).sum();
    assert_eq!((frames, flood), (0, 0));
}
