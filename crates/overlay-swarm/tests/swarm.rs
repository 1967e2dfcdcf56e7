//! One swarm, driven by hand: each rule of HyParView and PlumTree as the
//! frames and actions it produces.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use oap_codec::{Msg, MsgId, Topic};
use overlay_swarm::{
    Config, IHave, InEvent, NodeAddr, NodeId, OutEvent, Priority, Swarm, SwarmEvent, SwarmFrame, Timer,
};

fn node(n: u8) -> NodeAddr {
    NodeAddr { id: NodeId([n; 32]), addr: SocketAddr::from(([10, 0, 0, n], 9500)) }
}

fn msg(n: u8, hops: u8) -> Msg {
    Msg {
        topic: Topic::new(Bytes::from_static(b"t")).unwrap(),
        msg_id: MsgId([n; 16]),
        hops,
        payload: Bytes::from_static(b"x"),
    }
}

struct One {
    swarm: Swarm,
    now: Instant,
}

impl One {
    fn new(config: Config) -> One {
        let mut one = One { swarm: Swarm::new(node(1), config, 7), now: Instant::now() };
        // The first event also schedules the periodic timers.
        let started = one.on(InEvent::Timer(Timer::IHave));
        assert!(started.iter().any(|o| matches!(o, OutEvent::ScheduleTimer { timer: Timer::Repair, .. })));
        one
    }

    fn on(&mut self, event: InEvent) -> Vec<OutEvent> {
        self.swarm.handle(event, self.now).collect()
    }

    /// Links `peer` (it dialed us) and makes it an active peer.
    fn neighbor(&mut self, peer: NodeAddr) -> Vec<OutEvent> {
        self.on(InEvent::LinkUp { node: peer, dialed: None });
        self.on(InEvent::Recv { from: peer.id, frame: SwarmFrame::Neighbor { priority: Priority::High } })
    }
}

fn sent(out: &[OutEvent], to: NodeId) -> Vec<&SwarmFrame> {
    out.iter()
        .filter_map(|o| match o {
            OutEvent::Send { to: t, frame } if *t == to => Some(frame),
            _ => None,
        })
        .collect()
}

#[test]
fn a_join_is_taken_into_the_active_view_and_walks_on_from_every_other_peer() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::LinkUp { node: node(9), dialed: None });
    let out = one.on(InEvent::Recv { from: node(9).id, frame: SwarmFrame::Join });
    assert!(out.contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(9)))));
    assert_eq!(sent(&out, node(9).id), [&SwarmFrame::Neighbor { priority: Priority::High }]);
    let walk = SwarmFrame::ForwardJoin { ttl: Config::default().active_walk, node: node(9) };
    assert_eq!(sent(&out, node(2).id), [&walk]);
    assert_eq!(sent(&out, node(3).id), [&walk]);
}

#[test]
fn a_full_active_view_refuses_a_low_priority_neighbor_but_not_a_high_one() {
    let mut one = One::new(Config { active_view: 2, ..Config::default() });
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::LinkUp { node: node(4), dialed: None });
    let out = one.on(InEvent::Recv { from: node(4).id, frame: SwarmFrame::Neighbor { priority: Priority::Low } });
    assert_eq!(sent(&out, node(4).id), [&SwarmFrame::Disconnect { alive: true }]);
    assert_eq!(one.swarm.active().len(), 2);
    assert!(one.swarm.passive().contains(&node(4)), "a refused peer is kept as a passive one");

    // High priority (its view is empty) cannot be refused: a random active
    // peer makes room, told with DISCONNECT alive=1.
    one.on(InEvent::LinkUp { node: node(5), dialed: None });
    let out = one.on(InEvent::Recv { from: node(5).id, frame: SwarmFrame::Neighbor { priority: Priority::High } });
    assert!(one.swarm.active().contains(&node(5)));
    let evicted: Vec<_> = [node(2), node(3)].into_iter().filter(|n| !one.swarm.active().contains(n)).collect();
    assert_eq!(evicted.len(), 1);
    assert_eq!(sent(&out, evicted[0].id), [&SwarmFrame::Disconnect { alive: true }]);
}

#[test]
fn a_lost_active_peer_is_replaced_from_the_passive_view_and_a_dead_address_forgotten() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    // Node 7 is learned through a shuffle reply.
    one.on(InEvent::Recv { from: node(2).id, frame: SwarmFrame::ShuffleReply { nodes: vec![node(7)] } });
    assert_eq!(one.swarm.passive(), [node(7)]);
    let out = one.on(InEvent::LinkDown(node(2).id));
    assert!(out.contains(&OutEvent::Event(SwarmEvent::NeighborDown(node(2).id))));
    assert!(out.contains(&OutEvent::Dial(node(7).addr)), "{out:?}");
    // The dial fails: the address leaves the passive view.
    one.on(InEvent::DialFailed(node(7).addr));
    assert!(one.swarm.passive().is_empty());
}

#[test]
fn a_promotion_that_links_asks_with_high_priority_when_alone() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.on(InEvent::Recv { from: node(2).id, frame: SwarmFrame::ShuffleReply { nodes: vec![node(7)] } });
    one.on(InEvent::LinkDown(node(2).id));
    let out = one.on(InEvent::LinkUp { node: node(7), dialed: Some(node(7).addr) });
    assert_eq!(sent(&out, node(7).id), [&SwarmFrame::Neighbor { priority: Priority::High }]);
    assert_eq!(one.swarm.active(), [node(7)]);
}

#[test]
fn a_low_priority_ask_enters_the_view_only_when_the_peer_accepts() {
    let mut one = One::new(Config { active_view: 3, ..Config::default() });
    one.neighbor(node(2));
    one.neighbor(node(3));
    // Two passive peers; the view has room for one: one of them is asked.
    one.on(InEvent::Recv { from: node(2).id, frame: SwarmFrame::ShuffleReply { nodes: vec![node(7), node(8)] } });
    let out = one.on(InEvent::Timer(Timer::Repair));
    let dialed: Vec<NodeAddr> =
        [node(7), node(8)].into_iter().filter(|n| out.contains(&OutEvent::Dial(n.addr))).collect();
    assert_eq!(dialed.len(), 1, "{out:?}");
    let (asked, other) = (dialed[0], if dialed[0] == node(7) { node(8) } else { node(7) });
    let out = one.on(InEvent::LinkUp { node: asked, dialed: Some(asked.addr) });
    assert_eq!(sent(&out, asked.id), [&SwarmFrame::Neighbor { priority: Priority::Low }]);
    assert!(!out.iter().any(|o| matches!(o, OutEvent::Event(SwarmEvent::NeighborUp(_)))), "not before it accepts");
    assert_eq!(one.swarm.active().len(), 2);

    // It refuses (its view is full): it never entered ours, and the other
    // passive peer is asked instead.
    let out = one.on(InEvent::Recv { from: asked.id, frame: SwarmFrame::Disconnect { alive: true } });
    assert!(!out.iter().any(|o| matches!(o, OutEvent::Event(SwarmEvent::NeighborDown(_)))), "{out:?}");
    let out = one.on(InEvent::Timer(Timer::Repair));
    assert!(out.contains(&OutEvent::Dial(other.addr)), "{out:?}");
    one.on(InEvent::LinkUp { node: other, dialed: Some(other.addr) });
    assert_eq!(one.swarm.active().len(), 2);

    // It accepts: in the view now, with no second NEIGHBOR sent back.
    let out = one.on(InEvent::Recv { from: other.id, frame: SwarmFrame::Neighbor { priority: Priority::Low } });
    assert!(out.contains(&OutEvent::Event(SwarmEvent::NeighborUp(other))));
    assert!(sent(&out, other.id).is_empty(), "{out:?}");
    assert!(one.swarm.active().contains(&other));
}

#[test]
fn a_duplicate_prunes_its_link_and_an_announced_message_is_grafted_after_the_timeout() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    // First copy from 2: delivered and pushed on to 3 (eager), hops + 1.
    let out = one.on(InEvent::Message { from: node(2).id, msg: msg(1, 1) });
    assert!(out.contains(&OutEvent::Deliver(msg(1, 1))));
    assert!(out.contains(&OutEvent::SendMsg { to: node(3).id, msg: msg(1, 2), flood: true }));
    // The same message from 3: a duplicate, so the 3 link leaves the tree.
    let out = one.on(InEvent::Message { from: node(3).id, msg: msg(1, 2) });
    assert_eq!(sent(&out, node(3).id), [&SwarmFrame::Prune(Some(msg(1, 1).msg_id))]);
    assert!(!out.iter().any(|o| matches!(o, OutEvent::Deliver(_))));
    assert_eq!(one.swarm.stats().duplicates, 1);

    // 3 announces a message we do not have; the timer asks for it.
    let out = one.on(InEvent::Recv {
        from: node(3).id,
        frame: SwarmFrame::IHave(vec![IHave { msg_id: MsgId([5; 16]), hops: 2 }]),
    });
    let graft = Timer::Graft(MsgId([5; 16]));
    assert!(out.contains(&OutEvent::ScheduleTimer { after: Config::default().graft_timeout, timer: graft }));
    let out = one.on(InEvent::Timer(graft));
    assert_eq!(sent(&out, node(3).id), [&SwarmFrame::Graft(Some(MsgId([5; 16])))]);
    assert!(one.swarm.eager(&MsgId([5; 16])).contains(&node(3).id), "a graft puts the link back in the tree");
}

#[test]
fn a_message_arrived_before_its_graft_timer_is_not_asked_for() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::Recv {
        from: node(3).id,
        frame: SwarmFrame::IHave(vec![IHave { msg_id: MsgId([6; 16]), hops: 1 }]),
    });
    one.on(InEvent::Message { from: node(2).id, msg: msg(6, 1) });
    let out = one.on(InEvent::Timer(Timer::Graft(MsgId([6; 16]))));
    assert!(sent(&out, node(3).id).is_empty(), "{out:?}");
}

#[test]
fn a_graft_is_answered_from_the_cache_and_messages_at_max_hops_are_relayed_no_further() {
    let mut one = One::new(Config { max_hops: 4, ..Config::default() });
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::Message { from: node(2).id, msg: msg(1, 1) });
    let out = one.on(InEvent::Recv { from: node(3).id, frame: SwarmFrame::Graft(Some(MsgId([1; 16]))) });
    assert!(out.contains(&OutEvent::SendMsg { to: node(3).id, msg: msg(1, 2), flood: false }));

    for (n, hops) in [(2, 4), (3, 9)] {
        let out = one.on(InEvent::Message { from: node(2).id, msg: msg(n, hops) });
        assert!(out.contains(&OutEvent::Deliver(msg(n, hops))), "a first copy is delivered at any depth");
        assert!(!out.iter().any(|o| matches!(o, OutEvent::SendMsg { .. })), "but not relayed past max_hops");
        // Announced instead, so a node behind it can still ask for it.
        let out = one.on(InEvent::Timer(Timer::IHave));
        assert!(
            sent(&out, node(3).id)
                .iter()
                .any(|f| matches!(f, SwarmFrame::IHave(ids) if ids[0].msg_id == MsgId([n; 16])))
        );
    }
    assert_eq!(one.swarm.stats().hop_limited, 2);
}

#[test]
fn leaving_tells_every_active_peer_and_stays_out() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    let out = one.on(InEvent::Leave);
    for peer in [node(2), node(3)] {
        assert_eq!(sent(&out, peer.id), [&SwarmFrame::Disconnect { alive: false }]);
        assert!(out.contains(&OutEvent::Disconnect(peer.id)));
    }
    assert!(one.swarm.active().is_empty());
    // And it stays out: no repair, no rejoin, no neighbour accepted.
    assert!(one.on(InEvent::Timer(Timer::Repair)).is_empty());
    assert!(one.on(InEvent::Timer(Timer::Probe)).is_empty());
    one.on(InEvent::LinkUp { node: node(4), dialed: None });
    one.on(InEvent::Recv { from: node(4).id, frame: SwarmFrame::Neighbor { priority: Priority::High } });
    assert!(one.swarm.active().is_empty());
}

#[test]
fn a_seed_that_turns_out_to_be_this_node_frees_its_dial() {
    let mut one = One::new(Config::default());
    let alias: SocketAddr = "192.0.2.1:9500".parse().unwrap();
    assert!(one.on(InEvent::Join(alias)).contains(&OutEvent::Dial(alias)));
    let out = one.on(InEvent::LinkUp { node: node(1), dialed: Some(alias) });
    assert!(out.contains(&OutEvent::Disconnect(node(1).id)));
    // The dial is over: joining through the address dials again.
    assert!(one.on(InEvent::Join(alias)).contains(&OutEvent::Dial(alias)));
}

#[test]
fn a_dial_never_reported_back_is_given_up() {
    let mut one = One::new(Config::default());
    let seed: SocketAddr = "192.0.2.7:9500".parse().unwrap();
    assert!(one.on(InEvent::Join(seed)).contains(&OutEvent::Dial(seed)));
    // While the dial is in flight, joining again does not dial twice.
    assert!(!one.on(InEvent::Join(seed)).contains(&OutEvent::Dial(seed)));
    // Neither LinkUp nor DialFailed ever comes: a repair sees the dial and
    // keeps waiting (no new dial), one 30 s later gives it up, and the
    // node, still alone, dials its seed afresh.
    assert!(!one.on(InEvent::Timer(Timer::Repair)).contains(&OutEvent::Dial(seed)));
    one.now += std::time::Duration::from_secs(29);
    assert!(!one.on(InEvent::Timer(Timer::Repair)).contains(&OutEvent::Dial(seed)));
    one.now += std::time::Duration::from_secs(1);
    assert!(one.on(InEvent::Timer(Timer::Repair)).contains(&OutEvent::Dial(seed)));
}

#[test]
fn a_forgotten_seed_is_not_rejoined_through() {
    let mut one = One::new(Config::default());
    let seed: SocketAddr = "192.0.2.9:9500".parse().unwrap();
    assert!(one.on(InEvent::Join(seed)).contains(&OutEvent::Dial(seed)));
    one.on(InEvent::DialFailed(seed));
    // Alone: each repair rejoins through the seeds...
    assert!(one.on(InEvent::Timer(Timer::Repair)).contains(&OutEvent::Dial(seed)));
    one.on(InEvent::DialFailed(seed));
    // ...until the seed is forgotten.
    one.on(InEvent::Forget(seed));
    assert!(!one.on(InEvent::Timer(Timer::Repair)).contains(&OutEvent::Dial(seed)));
}

#[test]
fn graft_replies_to_one_peer_are_bounded_per_second() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    // 4,200 messages published here, all in the GRAFT cache.
    for n in 0..4200u16 {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        one.on(InEvent::Publish(Msg { msg_id: MsgId(id), ..msg(0, 0) }));
    }
    let mut answered = 0;
    for n in 0..4200u16 {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        let out = one.on(InEvent::Recv { from: node(2).id, frame: SwarmFrame::Graft(Some(MsgId(id))) });
        answered += out.iter().filter(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(2).id)).count();
    }
    assert_eq!(answered, 4096);
    assert_eq!(one.swarm.stats().grafts_refused, 104);
    // Another peer has its own budget; a second later, so has this one.
    let out = one.on(InEvent::Recv { from: node(3).id, frame: SwarmFrame::Graft(Some(MsgId([0; 16]))) });
    assert!(out.iter().any(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(3).id)));
    one.now += std::time::Duration::from_secs(1);
    let out = one.on(InEvent::Recv { from: node(2).id, frame: SwarmFrame::Graft(Some(MsgId([0; 16]))) });
    assert!(out.iter().any(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(2).id)));
}

#[test]
fn a_forgotten_seed_that_is_an_active_peer_leaves_the_view_and_is_not_probed() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    let out = one.on(InEvent::Forget(node(2).addr));
    assert_eq!(sent(&out, node(2).id), [&SwarmFrame::Disconnect { alive: true }]);
    assert!(out.contains(&OutEvent::Disconnect(node(2).id)));
    assert!(one.swarm.active().iter().all(|n| n.id != node(2).id));
    // Its link going down afterwards does not make it a lost peer to probe.
    one.on(InEvent::LinkDown(node(2).id));
    one.now += std::time::Duration::from_secs(10);
    assert!(!one.on(InEvent::Timer(Timer::Probe)).contains(&OutEvent::Dial(node(2).addr)));
}

#[test]
fn a_peer_that_keeps_rejoining_is_refused_past_four_admissions_in_ten_seconds() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::LinkUp { node: node(9), dialed: None });
    let join = || InEvent::Recv { from: node(9).id, frame: SwarmFrame::Join };
    let leave = || InEvent::Recv { from: node(9).id, frame: SwarmFrame::Disconnect { alive: true } };
    // Four rounds of join and leave: each taken in, each walked on.
    for _ in 0..4 {
        let out = one.on(join());
        assert!(out.contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(9)))));
        assert!(!sent(&out, node(2).id).is_empty());
        one.on(leave());
        one.on(InEvent::LinkUp { node: node(9), dialed: None });
    }
    // The fifth JOIN starts nothing; a NEIGHBOR is answered with a refusal.
    let out = one.on(join());
    assert!(!out.contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(9)))));
    assert!(sent(&out, node(2).id).is_empty() && sent(&out, node(3).id).is_empty());
    let out = one.on(InEvent::Recv { from: node(9).id, frame: SwarmFrame::Neighbor { priority: Priority::High } });
    assert_eq!(sent(&out, node(9).id), [&SwarmFrame::Disconnect { alive: true }]);
    assert_eq!(one.swarm.stats().admissions_refused, 2);
    // Other peers are not held to its budget, and ten seconds later it has
    // one again.
    one.on(InEvent::LinkUp { node: node(8), dialed: None });
    let out = one.on(InEvent::Recv { from: node(8).id, frame: SwarmFrame::Join });
    assert!(out.contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(8)))));
    one.now += std::time::Duration::from_secs(10);
    assert!(one.on(join()).contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(9)))));
}

#[test]
fn a_link_restricted_to_some_topics_is_never_in_a_tree_and_hears_only_of_those() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    let only_a = vec![oap_codec::Pattern::new(Bytes::from_static(b"a.>")).unwrap()];
    one.on(InEvent::Restrict { peer: node(2).id, topics: only_a });
    let on = |topic: &'static [u8], n: u8| Msg { topic: Topic::new(Bytes::from_static(topic)).unwrap(), ..msg(n, 0) };
    let pushed_to = |out: &[OutEvent], peer: NodeId| {
        out.iter().filter(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == peer)).count()
    };
    // Published here: the unrestricted link gets both messages pushed, the
    // restricted one neither, and an IHAVE for the topic it may carry only.
    let out_a = one.on(InEvent::Publish(on(b"a.x", 10)));
    let out_b = one.on(InEvent::Publish(on(b"b", 11)));
    assert_eq!((pushed_to(&out_a, node(3).id), pushed_to(&out_b, node(3).id)), (1, 1));
    assert_eq!((pushed_to(&out_a, node(2).id), pushed_to(&out_b, node(2).id)), (0, 0));
    assert_eq!(one.swarm.eager(&MsgId([10; 16])), [node(3).id]);
    let flushed = one.on(InEvent::Timer(Timer::IHave));
    assert_eq!(sent(&flushed, node(2).id), [&SwarmFrame::IHave(vec![IHave { msg_id: MsgId([10; 16]), hops: 0 }])]);
    // Its GRAFTs are answered for what it may carry, and do not put it in
    // the tree.
    let graft = |n: u8| InEvent::Recv { from: node(2).id, frame: SwarmFrame::Graft(Some(MsgId([n; 16]))) };
    assert_eq!(pushed_to(&one.on(graft(11)), node(2).id), 0);
    assert_eq!(pushed_to(&one.on(graft(10)), node(2).id), 1);
    assert_eq!(one.swarm.eager(&MsgId([10; 16])), [node(3).id]);
    // A message relayed in from the unrestricted peer: the same.
    let out = one.on(InEvent::Message { from: node(3).id, msg: Msg { msg_id: MsgId([12; 16]), ..on(b"b", 12) } });
    assert_eq!(pushed_to(&out, node(2).id), 0);
    // Lifted (a refreshed grant for every topic): the link is in the trees again.
    one.on(InEvent::Restrict { peer: node(2).id, topics: Vec::new() });
    let out = one.on(InEvent::Publish(on(b"b", 13)));
    assert_eq!(pushed_to(&out, node(2).id), 1);
}

#[test]
fn requests_refused_for_a_full_view_do_not_use_up_a_peers_admissions() {
    let mut one = One::new(Config { active_view: 2, ..Config::default() });
    one.neighbor(node(2));
    one.neighbor(node(3));
    one.on(InEvent::LinkUp { node: node(9), dialed: None });
    let low = || InEvent::Recv { from: node(9).id, frame: SwarmFrame::Neighbor { priority: Priority::Low } };
    for _ in 0..6 {
        assert_eq!(sent(&one.on(low()), node(9).id), [&SwarmFrame::Disconnect { alive: true }]);
    }
    // Alone now, it asks with high priority: taken in, not refused by a bound.
    let high = InEvent::Recv { from: node(9).id, frame: SwarmFrame::Neighbor { priority: Priority::High } };
    assert!(one.on(high).contains(&OutEvent::Event(SwarmEvent::NeighborUp(node(9)))));
    assert_eq!(one.swarm.stats().admissions_refused, 0);
}

#[test]
fn a_published_message_sent_back_prunes_the_link_from_this_nodes_tree() {
    let mut one = One::new(Config::default());
    one.neighbor(node(2));
    one.neighbor(node(3));
    let own = |seq: u8| {
        let mut id = [7u8; 16];
        id[6] = seq;
        Msg { msg_id: MsgId(id), ..msg(0, 0) }
    };
    let out = one.on(InEvent::Publish(own(1)));
    assert_eq!(out.iter().filter(|o| matches!(o, OutEvent::SendMsg { .. })).count(), 2, "its own tree starts whole");
    let out = one.on(InEvent::Echo { from: node(2).id, id: own(1).msg_id });
    assert_eq!(sent(&out, node(2).id), [&SwarmFrame::Prune(Some(own(1).msg_id))]);
    let out = one.on(InEvent::Publish(own(2)));
    assert!(!out.iter().any(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(2).id)));
    assert!(out.iter().any(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(3).id)));
}

#[test]
fn a_childs_summary_told_before_this_nodes_first_copy_is_kept() {
    let mut one = One::new(Config::default());
    one.on(InEvent::Interest(Some(Vec::new())));
    for n in 2..=4 {
        one.neighbor(node(n));
    }
    let on = |topic: &'static [u8], seq: u8| {
        let mut id = [5u8; 16];
        id[6] = seq;
        Msg { topic: Topic::new(Bytes::from_static(topic)).unwrap(), msg_id: MsgId(id), ..msg(0, 1) }
    };
    let origin = [5u8; 6];
    let wants_a = Some(vec![oap_codec::Pattern::new(Bytes::from_static(b"a")).unwrap()]);
    // Node 3 heard of the origin first, over another path, and names this
    // node its parent there before this node has had a copy.
    let mut out = one.on(InEvent::Recv {
        from: node(3).id,
        frame: SwarmFrame::Interest { origins: vec![origin], patterns: wants_a.clone(), parent: true },
    });
    out.extend(one.on(InEvent::Message { from: node(2).id, msg: on(b"a", 1) }));
    out.extend(one.on(InEvent::Timer(Timer::Interest)));
    // Its parent (node 2) is told that "a" is wanted through here.
    let told = SwarmFrame::Interest { origins: vec![origin], patterns: wants_a, parent: true };
    assert!(sent(&out, node(2).id).contains(&&told), "{out:?}");
    // And node 3 gets only what it wants.
    let pushed_to_3 = |out: &[OutEvent]| {
        out.iter().filter(|o| matches!(o, OutEvent::SendMsg { to, .. } if *to == node(3).id)).count()
    };
    assert_eq!(pushed_to_3(&out), 1);
    assert_eq!(pushed_to_3(&one.on(InEvent::Message { from: node(2).id, msg: on(b"b", 2) })), 0);
}

#[test]
fn a_tree_known_only_from_peers_summaries_is_not_told_of() {
    let mut one = One::new(Config::default());
    one.on(InEvent::Interest(Some(vec![oap_codec::Pattern::new(Bytes::from_static(b"a")).unwrap()])));
    one.neighbor(node(2));
    one.neighbor(node(3));
    // Node 3 has the origin's tree and says nothing is wanted through it;
    // this node has had no copy: its peers must go on counting its own
    // subscriptions (its default) there, so its first copy comes.
    let frame = SwarmFrame::Interest { origins: vec![[5u8; 6]], patterns: Some(Vec::new()), parent: false };
    let mut out = one.on(InEvent::Recv { from: node(3).id, frame });
    out.extend(one.on(InEvent::Timer(Timer::Interest)));
    let per_tree = |f: &&SwarmFrame| matches!(f, SwarmFrame::Interest { origins, .. } if !origins.is_empty());
    for peer in [node(2), node(3)] {
        assert!(!sent(&out, peer.id).iter().any(per_tree), "{out:?}");
    }
}
