//! Interest routing in the simulator: payloads go only toward subscribers,
//! a new subscriber is reached within a second, and nothing is lost while
//! summaries settle.

use std::time::{Duration, Instant};

use overlay_swarm::sim::Sim;
use overlay_swarm::{Config, Pattern, Topic};

fn joined(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, &Config::default(), seed, Instant::now());
    for i in 1..n {
        sim.join(i, 0);
        sim.run_for(Duration::from_millis(20));
    }
    sim.run_for(Duration::from_secs(30));
    sim
}

fn pattern(p: &str) -> Pattern {
    p.parse().unwrap()
}

fn topic(t: &str) -> Topic {
    t.parse().unwrap()
}

#[test]
fn payloads_go_only_toward_subscribers() {
    let n = 200;
    let mut sim = joined(n, 3);
    for i in 0..n {
        sim.set_interest(i, Some(Vec::new()));
    }
    let subscribers = [17, 88, 150];
    for &s in &subscribers {
        sim.set_interest(s, Some(vec![pattern("rare.>")]));
    }
    let publisher = 42;
    // The origin's first message goes everywhere (no summary exists for
    // its tree yet) and builds the tree; the summaries follow it up.
    sim.publish_on(publisher, topic("rare.x"));
    sim.run_for(Duration::from_secs(3));
    let sent_before = sim.payload_sent;
    let before: Vec<_> = (0..n).map(|i| sim.swarm(i).stats()).collect();
    let fb: u64 = before.iter().map(|s| s.interest_sent).sum();
    let flb: u64 = before.iter().map(|s| s.payload_flood).sum();
    eprintln!("warm-up: interest frames {fb}, flood {flb}, membership {}", sim.membership_changes);
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(sim.publish_on(publisher, topic("rare.x")));
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(5));
    for id in &ids {
        for &s in &subscribers {
            assert!(sim.got(s, id).is_some(), "subscriber {s} missed {id:?}");
        }
    }
    let per_publish = (sim.payload_sent - sent_before) as f64 / ids.len() as f64;
    let stats: Vec<_> = (0..n).map(|i| sim.swarm(i).stats()).collect();
    let frames: u64 = stats.iter().map(|s| s.interest_sent).sum();
    let flood: u64 = stats.iter().map(|s| s.payload_flood).sum();
    let grafts: u64 = stats.iter().map(|s| s.grafts).sum::<u64>() - before.iter().map(|s| s.grafts).sum::<u64>();
    let prunes: u64 = stats.iter().map(|s| s.prunes).sum::<u64>() - before.iter().map(|s| s.prunes).sum::<u64>();
    eprintln!("membership {}", sim.membership_changes);
    eprintln!("per publish {per_publish}, interest frames {frames}, flood {flood}, grafts {grafts}, prunes {prunes}");
    assert!(per_publish <= 30.0, "{per_publish} payload sends per publish for 3 subscribers among {n}");
}

