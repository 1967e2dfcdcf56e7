//! The driver against the bare swarm and the simulator, and frames fitted to `max_frame`.

use oap_codec::{Frame, HEADER_LEN};
use overlay_gossip::DeliveryQueue;

use super::*;

#[test]
fn ihave_batches_are_split_to_fit_a_small_max_frame() {
    let ids: Vec<_> = (0..4096u32)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            oap_codec::IHave { msg_id: MsgId(id), hops: 1 }
        })
        .collect();
    let parts = fit(SwarmFrame::IHave(ids), 1024);
    assert!(parts.len() > 64, "{}", parts.len());
    let mut total = 0;
    for p in &parts {
        assert!(p.encoded_len() - HEADER_LEN <= 1024);
        let Frame::Swarm(SwarmFrame::IHave(ids)) = p else { panic!("not an IHAVE") };
        total += ids.len();
    }
    assert_eq!(total, 4096);
}

#[test]
fn interest_frames_are_split_to_fit_a_small_max_frame() {
    let origins: Vec<[u8; 6]> =
        (0..4096u32).map(|i| [0, 0, (i >> 24) as u8, (i >> 16) as u8, (i >> 8) as u8, i as u8]).collect();
    let pattern: Pattern = "a.>".parse().unwrap();
    let frame = SwarmFrame::Interest { origins: origins.clone(), patterns: Some(vec![pattern]), parent: true };
    let parts = fit(frame, 1024);
    assert!(parts.len() > 16, "{}", parts.len());
    let mut seen = Vec::new();
    for p in &parts {
        assert!(p.encoded_len() - HEADER_LEN <= 1024);
        let Frame::Swarm(SwarmFrame::Interest { origins, patterns: Some(_), parent: true }) = p else {
            panic!("not the same summary: {p:?}")
        };
        seen.extend_from_slice(origins);
    }
    assert_eq!(seen, origins);
    // One origin with a summary larger than the frame: "every topic", which
    // a peer assumes anyway without one.
    let long: Vec<Pattern> = (0..8).map(|i| format!("{i}.{}", "x".repeat(200)).parse().unwrap()).collect();
    let parts = fit(SwarmFrame::Interest { origins: vec![[7; 6]], patterns: Some(long), parent: false }, 1024);
    assert_eq!(
        parts,
        vec![Frame::Swarm(SwarmFrame::Interest { origins: vec![[7; 6]], patterns: None, parent: false })]
    );
}

/// A link whose queues nobody drains (they hold what a trace sends).
fn test_link(session: u64, remote: SocketAddr, dialed: bool) -> LinkHandle {
    LinkHandle {
        session,
        remote,
        dialed,
        payload: Arc::new(DeliveryQueue::new(16 << 20, Duration::from_secs(3600))),
        control: Arc::new(DeliveryQueue::new(16 << 20, Duration::from_secs(3600))),
        close: CancellationToken::new(),
        filter: Vec::new(),
    }
}

/// The driver is the swarm and nothing else: the same scripted events,
/// fed to the driver through its entry points and to a bare `Swarm` (as
/// the simulator drives it) with the same seed and times, ask for the
/// same actions in the same order.
#[test]
fn the_driver_asks_for_what_the_bare_swarm_asks_for() {
    use bytes::Bytes;
    use oap_codec::{IHave, Priority, Topic};

    let node = |n: u8| NodeAddr { id: NodeId([n; 32]), addr: SocketAddr::from(([10, 0, 0, n], 9500)) };
    let registry = Arc::new(Registry::new(overlay_gossip::GossipConfig::default(), "trace"));
    let config = overlay_swarm::Config::default();
    let (driver, _dials) =
        SwarmDriver::new(node(1), config.clone(), registry, oap_codec::MAX_FRAME, Duration::ZERO, "trace");
    driver.reset(node(1).addr, 7);
    let mut bare = Swarm::new(node(1), config, 7);
    let handle = test_link;
    let msg = |n: u8, hops: u8| Msg {
        topic: Topic::new(Bytes::from_static(b"t")).unwrap(),
        msg_id: MsgId([n; 16]),
        hops,
        payload: Bytes::from_static(b"x"),
    };
    let t0 = tokio_now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut batch = PublishBatch::default();
    let mut expected = Vec::new();
    let mut bare_on = |event: InEvent, now: Instant| expected.extend(bare.handle(event, now));

    // A seed dialed and linked; a peer links in and joins; a neighbour
    // request; a publish; a message relayed in; an announcement that
    // is asked for after its timer; a peer lost.
    driver.join(node(2).addr, at(0));
    bare_on(InEvent::Join(node(2).addr), at(0));
    assert!(driver.link_up(node(2), handle(1, node(2).addr, true), at(1)).is_ok());
    bare_on(InEvent::LinkUp { node: node(2), dialed: Some(node(2).addr) }, at(1));
    assert!(driver.link_up(node(3), handle(2, node(3).addr, false), at(2)).is_ok());
    bare_on(InEvent::LinkUp { node: node(3), dialed: None }, at(2));
    driver.recv(node(3).id, 2, SwarmFrame::Join, at(3), &mut batch);
    bare_on(InEvent::Recv { from: node(3).id, frame: SwarmFrame::Join }, at(3));
    let neighbor = SwarmFrame::Neighbor { priority: Priority::High };
    driver.recv(node(2).id, 1, neighbor.clone(), at(4), &mut batch);
    bare_on(InEvent::Recv { from: node(2).id, frame: neighbor }, at(4));
    driver.publish(msg(9, 0), at(5));
    bare_on(InEvent::Publish(msg(9, 0)), at(5));
    driver.message(node(2).id, 1, msg(8, 1), at(6), &mut batch);
    bare_on(InEvent::Message { from: node(2).id, msg: msg(8, 1) }, at(6));
    let ihave = SwarmFrame::IHave(vec![IHave { msg_id: MsgId([7; 16]), hops: 2 }]);
    driver.recv(node(3).id, 2, ihave.clone(), at(7), &mut batch);
    bare_on(InEvent::Recv { from: node(3).id, frame: ihave }, at(7));
    // Due by 300 ms: the interest batch (12 ms; a node that wants every
    // topic sends none), the IHAVE batch (55 ms), then the GRAFT (207 ms).
    driver.fire(at(300));
    bare_on(InEvent::Timer(Timer::Interest), at(300));
    bare_on(InEvent::Timer(Timer::IHave), at(300));
    bare_on(InEvent::Timer(Timer::Graft(MsgId([7; 16]))), at(300));
    driver.link_down(node(3).id, 2, at(301));
    bare_on(InEvent::LinkDown(node(3).id), at(301));

    let traced = std::mem::take(&mut driver.lock().trace);
    assert!(expected.len() > 10, "a trace worth comparing: {expected:?}");
    assert_eq!(traced, expected);
}

/// What the simulator proves is what the node runs: one node's whole life
/// in a simulated run (joins, a tree built, messages relayed, a neighbour
/// crashed and replaced), fed event by event to the driver's entry points,
/// asks the driver's swarm for the same actions in the same order.
#[test]
fn the_driver_asks_for_what_the_simulator_asked_of_the_same_node() {
    use std::collections::HashMap;

    let config = overlay_swarm::Config::default();
    let epoch = tokio_now();
    let mut sim = overlay_swarm::sim::Sim::new(24, &config, 5, epoch);
    let watched = 7;
    sim.record(watched);
    for i in 1..24 {
        sim.join(i, i % 3);
    }
    sim.run_for(Duration::from_secs(10));
    for k in 0..30 {
        sim.publish(k % 24);
        sim.run_for(Duration::from_millis(500));
    }
    // One of its neighbours crashes: the link goes down, a passive peer
    // is promoted, the trees repair.
    let peer = sim.swarm(watched).active()[0].id;
    let crashed = (0..24).find(|&i| sim.swarm(i).me().id == peer).unwrap();
    sim.kill(crashed);
    sim.run_for(Duration::from_secs(5));
    for k in 0..10 {
        sim.publish((k * 5) % 24);
        sim.run_for(Duration::from_millis(500));
    }
    let recorded = sim.recording().unwrap().clone();
    assert!(recorded.events.len() > 100, "a life worth comparing: {} events", recorded.events.len());
    assert!(recorded.events.iter().any(|(_, e)| matches!(e, InEvent::LinkDown(id) if *id == peer)));
    assert!(recorded.out.iter().any(|o| matches!(o, OutEvent::SendMsg { .. })));
    assert!(recorded.out.iter().any(|o| matches!(o, OutEvent::Dial(_))));

    let registry = Arc::new(Registry::new(overlay_gossip::GossipConfig::default(), "trace"));
    let (driver, _dials) =
        SwarmDriver::new(recorded.node, config, registry, oap_codec::MAX_FRAME, Duration::ZERO, "trace");
    driver.reset(recorded.node.addr, recorded.seed);
    let mut sessions: HashMap<NodeId, u64> = HashMap::new();
    let mut batch = PublishBatch::default();
    for (n, (now, event)) in recorded.events.into_iter().enumerate() {
        let session = |id: &NodeId| sessions.get(id).copied().unwrap_or(u64::MAX);
        match event {
            InEvent::Join(seed) => driver.join(seed, now),
            InEvent::LinkUp { node, dialed } => {
                let id = n as u64;
                if driver.link_up(node, test_link(id, dialed.unwrap_or(node.addr), dialed.is_some()), now).is_ok() {
                    sessions.insert(node.id, id);
                }
            }
            InEvent::LinkDown(peer) => driver.link_down(peer, session(&peer), now),
            InEvent::DialFailed(addr) => driver.dial_failed(addr, now),
            InEvent::Recv { from, frame } => driver.recv(from, session(&from), frame, now, &mut batch),
            InEvent::Message { from, msg } => driver.message(from, session(&from), msg, now, &mut batch),
            InEvent::Publish(msg) => {
                driver.publish(msg, now);
            }
            InEvent::Timer(timer) => assert_eq!(driver.fire_one(now), Some(timer), "event {n}"),
            other => panic!("the simulator does not make {other:?}"),
        }
    }
    let traced = std::mem::take(&mut driver.lock().trace);
    let same = traced.iter().zip(&recorded.out).take_while(|(a, b)| a == b).count();
    assert_eq!(
        (traced.len(), same),
        (recorded.out.len(), recorded.out.len()),
        "first difference: driver {:?}, simulator {:?}",
        traced.get(same),
        recorded.out.get(same)
    );
}

/// A pair that keeps a newer link (a redial before the old link's end was
/// noticed) may still be sent to on the old one: messages and the tree's
/// frames there count, membership frames do not.
#[test]
fn a_replaced_link_still_brings_messages_but_not_membership() {
    use bytes::Bytes;
    use oap_codec::{Priority, Topic};

    let node = |n: u8| NodeAddr { id: NodeId([n; 32]), addr: SocketAddr::from(([10, 0, 0, n], 9500)) };
    let registry = Arc::new(Registry::new(overlay_gossip::GossipConfig::default(), "replaced"));
    let (driver, _dials) = SwarmDriver::new(
        node(1),
        overlay_swarm::Config::default(),
        registry,
        oap_codec::MAX_FRAME,
        Duration::ZERO,
        "replaced",
    );
    let t0 = tokio_now();
    let mut batch = PublishBatch::default();
    assert!(driver.link_up(node(2), test_link(1, node(2).addr, false), t0).is_ok());
    let neighbor = SwarmFrame::Neighbor { priority: Priority::High };
    driver.recv(node(2).id, 1, neighbor.clone(), t0, &mut batch);
    // Well past the dial race: the new link replaces the old.
    let later = t0 + DIAL_RACE * 2;
    assert!(driver.link_up(node(2), test_link(2, node(2).addr, false), later).is_ok());
    driver.recv(node(2).id, 2, neighbor, later, &mut batch);
    assert_eq!(driver.lock().swarm.active().len(), 1);

    let msg = Msg {
        topic: Topic::new(Bytes::from_static(b"t")).unwrap(),
        msg_id: MsgId([8; 16]),
        hops: 1,
        payload: Bytes::from_static(b"x"),
    };
    driver.message(node(2).id, 1, msg, later, &mut batch);
    assert_eq!(driver.lock().swarm.stats().delivered, 1, "the old link's message is delivered");
    driver.recv(node(2).id, 1, SwarmFrame::Disconnect { alive: true }, later, &mut batch);
    assert_eq!(driver.lock().swarm.active().len(), 1, "the old link's DISCONNECT does not end the new one");
    driver.recv(node(2).id, 2, SwarmFrame::Disconnect { alive: true }, later, &mut batch);
    assert_eq!(driver.lock().swarm.active().len(), 0);
}
