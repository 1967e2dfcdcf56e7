//! `interest`: 1 % of the nodes subscribe (literal and wildcard patterns
//! mixed), 8 publishers send on a few topics, and subscribers come and go
//! throughout. Every node's swarm is told its own subscriptions, so
//! payloads and `IHAVE`s travel only toward interest.
//!
//! Measured by the harness, not the swarm: a subscriber is expected to get
//! a message when it subscribed at least [`SUB_AGE`] before the publish and
//! kept the subscription [`KEPT`] past it; the oracle is the number of
//! edges of the smallest subtree of the origin's eager tree (as the nodes'
//! swarms hold it at the publish) spanning the publisher and the nodes
//! interested then; a send is wasted when nothing behind its receiver (the
//! receiver, and whatever it sent the message on to) was interested.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use overlay_swarm::sim::{DEADLINE, Report, Sim};
use overlay_swarm::{MsgId, Pattern, Rng, Topic};

/// The patterns subscribers pick from (all under `rare.`).
const PATTERNS: [&str; 6] = ["rare.a.x", "rare.a.*", "rare.>", "rare.*.x", "rare.b.>", "rare.c.z"];
/// The topics published.
const TOPICS: [&str; 4] = ["rare.a.x", "rare.b.x", "rare.a.y", "rare.c.z"];
/// Nodes that publish (each warmed up first: a new origin's first message
/// goes everywhere, since no summary exists for its tree yet).
const PUBLISHERS: usize = 8;
/// Messages measured, one every [`EVERY`].
const MESSAGES: usize = 300;
const EVERY: Duration = Duration::from_millis(100);
/// A subscriber leaves and another node subscribes this often.
const CHURN_EVERY: Duration = Duration::from_secs(1);
/// How long before a publish a subscription must exist to be owed it.
const SUB_AGE: Duration = Duration::from_secs(1);
/// How long after a publish a subscription must last to be owed it.
const KEPT: Duration = Duration::from_secs(2);

/// What the scenario adds to the JSON line.
pub(crate) struct Figures {
    pub(crate) report: Report,
    pub(crate) sends_over_oracle: f64,
    pub(crate) wasted_sends_pct: f64,
    pub(crate) flood_sends_pct: f64,
    pub(crate) max_summary_bytes: u64,
    pub(crate) interest_frames: u64,
}

/// A subscription's life.
struct Sub {
    node: usize,
    pattern: Pattern,
    since: Duration,
    until: Option<Duration>,
}

pub(crate) fn interest(sim: &mut Sim, seed: u64) -> Figures {
    let mut rng = Rng::new(seed ^ 0x1e7e_2e57);
    let patterns: Vec<Pattern> = PATTERNS.iter().filter_map(|p| p.parse().ok()).collect();
    let topics: Vec<Topic> = TOPICS.iter().filter_map(|t| t.parse().ok()).collect();
    let nodes: Vec<usize> = sim.alive().collect();
    for &i in &nodes {
        sim.set_interest(i, Some(Vec::new()));
    }
    let mut subs: Vec<Sub> = Vec::new();
    let wanted = (nodes.len() / 100).max(2);
    for i in rng.sample(&nodes, wanted) {
        let pattern = patterns[rng.below(patterns.len())].clone();
        subs.push(Sub { node: i, pattern, since: sim.now(), until: None });
        sim.set_interest(i, Some(current(&subs, i)));
    }
    let publishers = rng.sample(&nodes, PUBLISHERS);
    for &p in &publishers {
        sim.publish_on(p, topics[0].clone());
        sim.run_for(Duration::from_millis(200));
    }
    sim.run_for(Duration::from_secs(5));

    let before = totals(sim);
    sim.log_sends();
    let mut measured: Vec<(MsgId, usize, Topic, Duration, Oracle)> = Vec::new();
    let mut next_churn = sim.now() + CHURN_EVERY;
    for _ in 0..MESSAGES {
        let p = publishers[rng.below(publishers.len())];
        let topic = topics[rng.below(topics.len())].clone();
        let at = sim.now();
        let interested: HashSet<usize> =
            subs.iter().filter(|s| s.until.is_none() && s.pattern.matches(&topic)).map(|s| s.node).collect();
        let id = sim.publish_on(p, topic.clone());
        let oracle = oracle(sim, p, &id, &interested);
        measured.push((id, p, topic, at, oracle));
        sim.run_for(EVERY);
        if sim.now() >= next_churn {
            next_churn += CHURN_EVERY;
            let live: Vec<usize> = (0..subs.len()).filter(|&k| subs[k].until.is_none()).collect();
            let gone = live[rng.below(live.len())];
            subs[gone].until = Some(sim.now());
            let node = subs[gone].node;
            sim.set_interest(node, Some(current(&subs, node)));
            let newcomer = nodes[rng.below(nodes.len())];
            let pattern = patterns[rng.below(patterns.len())].clone();
            subs.push(Sub { node: newcomer, pattern, since: sim.now(), until: None });
            sim.set_interest(newcomer, Some(current(&subs, newcomer)));
        }
    }
    sim.run_for(DEADLINE);
    let after = totals(sim);
    let sends = sim.take_sends();

    let mut by_msg: HashMap<MsgId, Vec<(usize, usize)>> = HashMap::new();
    for (id, from, to) in sends {
        by_msg.entry(id).or_default().push((from, to));
    }
    let mut report = Report { messages: measured.len() as u64, ..Report::default() };
    let (mut sent, mut oracle_edges, mut wasted) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::new();
    for (id, publisher, topic, at, oracle) in &measured {
        let owed: HashSet<usize> = subs
            .iter()
            .filter(|s| {
                s.node != *publisher
                    && s.pattern.matches(topic)
                    && s.since + SUB_AGE <= *at
                    && s.until.is_none_or(|u| u >= *at + KEPT)
            })
            .map(|s| s.node)
            .collect();
        report.expected += owed.len() as u64;
        for &i in &owed {
            if let Some(got) = sim.got(i, id).filter(|&g| g <= *at + DEADLINE) {
                report.delivered += 1;
                latencies.push((got - *at).as_millis() as u64);
            }
        }
        let edges = by_msg.remove(id).unwrap_or_default();
        sent += edges.len() as u64;
        oracle_edges += oracle.edges;
        wasted += wasted_sends(&edges, &oracle.interested);
    }
    report.payload_sent = sent;
    // Copies delivered twice to one node (must be 0), as every scenario
    // reports it.
    report.duplicates = sim.report(0).duplicates;
    latencies.sort_unstable();
    let pct = |p: usize| latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1))).copied();
    report.latency_p50_ms = pct(50).unwrap_or(0);
    report.latency_p99_ms = pct(99).unwrap_or(0);
    report.latency_max_ms = latencies.last().copied().unwrap_or(0);
    let flood = after.flood - before.flood;
    let payload = (after.payload - before.payload).max(1);
    Figures {
        report,
        sends_over_oracle: sent as f64 / oracle_edges.max(1) as f64,
        wasted_sends_pct: wasted as f64 * 100.0 / sent.max(1) as f64,
        flood_sends_pct: flood as f64 * 100.0 / payload as f64,
        max_summary_bytes: after.max_summary_bytes,
        interest_frames: after.interest - before.interest,
    }
}

/// Node `i`'s patterns now.
fn current(subs: &[Sub], i: usize) -> Vec<Pattern> {
    subs.iter().filter(|s| s.node == i && s.until.is_none()).map(|s| s.pattern.clone()).collect()
}

/// Counters summed over every node's swarm.
#[derive(Default, Clone, Copy)]
struct Totals {
    payload: u64,
    flood: u64,
    interest: u64,
    max_summary_bytes: u64,
}

fn totals(sim: &Sim) -> Totals {
    sim.alive().map(|i| sim.swarm(i).stats()).fold(Totals::default(), |t, s| Totals {
        payload: t.payload + s.payload_sent,
        flood: t.flood + s.payload_flood,
        interest: t.interest + s.interest_sent,
        max_summary_bytes: t.max_summary_bytes.max(s.max_summary_bytes),
    })
}

/// One message's oracle: the interested nodes at its publish, and the
/// edges of the eager tree's smallest subtree spanning them and the
/// publisher.
struct Oracle {
    interested: HashSet<usize>,
    edges: u64,
}

fn oracle(sim: &Sim, publisher: usize, id: &MsgId, interested: &HashSet<usize>) -> Oracle {
    // The eager tree as the swarms hold it: breadth first from the
    // publisher over each node's eager peers for this origin.
    let mut parent: HashMap<usize, usize> = HashMap::from([(publisher, publisher)]);
    let mut queue = VecDeque::from([publisher]);
    while let Some(i) = queue.pop_front() {
        for peer in sim.swarm(i).eager(id) {
            if let Some(j) = sim.index_of(&peer)
                && !parent.contains_key(&j)
            {
                parent.insert(j, i);
                queue.push_back(j);
            }
        }
    }
    let mut on_tree: HashSet<usize> = HashSet::new();
    for &i in interested {
        let mut at = i;
        while at != publisher && parent.contains_key(&at) && on_tree.insert(at) {
            at = parent[&at];
        }
    }
    Oracle { interested: interested.clone(), edges: on_tree.len() as u64 }
}

/// Sends of one message whose receiver led to no interested node.
fn wasted_sends(edges: &[(usize, usize)], interested: &HashSet<usize>) -> u64 {
    let mut out: HashMap<usize, Vec<usize>> = HashMap::new();
    for &(from, to) in edges {
        out.entry(from).or_default().push(to);
    }
    let mut useful: HashMap<usize, bool> = HashMap::new();
    edges.iter().filter(|(_, to)| !leads_to_interest(*to, &out, interested, &mut useful)).count() as u64
}

/// Whether `i` or a node it sent the message on to (transitively) was
/// interested. Iterative (trees can be deep); a node on the stack counts as
/// not useful for the cycle that reaches it again.
fn leads_to_interest(
    start: usize,
    out: &HashMap<usize, Vec<usize>>,
    interested: &HashSet<usize>,
    useful: &mut HashMap<usize, bool>,
) -> bool {
    if let Some(&u) = useful.get(&start) {
        return u;
    }
    let mut stack = vec![(start, 0usize)];
    useful.insert(start, interested.contains(&start));
    while let Some((i, next)) = stack.pop() {
        let children = out.get(&i).map_or(&[][..], |v| &v[..]);
        if let Some(&c) = children.get(next) {
            stack.push((i, next + 1));
            if let std::collections::hash_map::Entry::Vacant(e) = useful.entry(c) {
                e.insert(interested.contains(&c));
                stack.push((c, 0));
            }
        } else if useful[&i] {
            continue;
        } else if children.iter().any(|c| useful[c]) {
            useful.insert(i, true);
        }
    }
    useful[&start]
}
