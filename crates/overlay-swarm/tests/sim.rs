//! The swarm in the simulator: joins from one seed, broadcast exactly once,
//! repair after crashes, and determinism. Small networks, so `cargo test`
//! stays quick; `cargo xtask sim` runs the large ones.

use std::time::{Duration, Instant};

use overlay_swarm::Config;
use overlay_swarm::sim::Sim;

/// `n` nodes joining through node 0, one every 20 ms, then `settle` of quiet.
fn joined(n: usize, seed: u64, settle: Duration) -> Sim {
    let mut sim = Sim::new(n, &Config::default(), seed, Instant::now());
    for i in 1..n {
        sim.join(i, 0);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(settle);
    sim
}

/// Publishes `count` messages from random live nodes, 500 ms apart, and
/// waits 10 s past the last.
fn broadcast(sim: &mut Sim, count: usize) {
    for _ in 0..count {
        let from = sim.random_alive();
        sim.publish(from);
        sim.run_for(Duration::from_millis(500));
    }
    sim.run_for(Duration::from_secs(10));
}

#[test]
fn a_hundred_nodes_join_through_one_seed_into_one_component() {
    let sim = joined(100, 1, Duration::from_secs(30));
    assert_eq!(sim.components(), (1, 0), "components and isolated nodes");
    let cap = Config::default().active_view;
    for i in sim.alive() {
        let active = sim.swarm(i).active().len();
        assert!((1..=cap).contains(&active), "node {i} has {active} active peers");
    }
    assert_eq!(sim.decode_errors, 0);
}

#[test]
fn every_message_reaches_every_node_exactly_once_over_a_tree() {
    let mut sim = joined(100, 2, Duration::from_secs(30));
    let publisher = sim.random_alive();
    let send = |sim: &mut Sim, count: usize| {
        for _ in 0..count {
            sim.publish(publisher);
            sim.run_for(Duration::from_millis(500));
        }
        sim.run_for(Duration::from_secs(10));
    };
    send(&mut sim, 21);
    let r = sim.report(0);
    assert_eq!((r.delivered, r.duplicates), (r.expected, 0), "{r:?}");
    // The first message floods and prunes the flood down to a tree; after
    // it, a message costs one payload per node reached (PlumTree's RMR).
    assert!(r.rmr_steady <= 0.05, "{r:?}");
    assert!(r.rmr_first <= Config::default().active_view as f64, "{r:?}");
}

#[test]
fn random_publishers_reach_everyone_at_a_bounded_cost() {
    let mut sim = joined(100, 5, Duration::from_secs(30));
    broadcast(&mut sim, 30);
    let r = sim.report(0);
    assert_eq!((r.delivered, r.duplicates), (r.expected, 0), "{r:?}");
    assert!(r.rmr <= 0.5, "{r:?}");
}

#[test]
fn a_small_cluster_is_a_full_mesh() {
    let n = Config::default().active_view + 1;
    let sim = joined(n, 3, Duration::from_secs(10));
    for i in sim.alive() {
        assert_eq!(sim.swarm(i).active().len(), n - 1, "node {i} is not linked to every other");
    }
}

#[test]
fn after_a_third_crash_the_rest_repair_and_deliver_everything() {
    let mut sim = joined(90, 4, Duration::from_secs(30));
    for i in (0..90).step_by(3) {
        sim.kill(i);
    }
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.components(), (1, 0), "the survivors did not repair into one component");
    broadcast(&mut sim, 10);
    let r = sim.report(0);
    assert_eq!((r.delivered, r.duplicates), (r.expected, 0), "{r:?}");
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let run = |seed| {
        let mut sim = joined(40, seed, Duration::from_secs(5));
        broadcast(&mut sim, 5);
        (sim.trace_hash(), sim.report(0).payload_sent)
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9).0, run(10).0);
}
