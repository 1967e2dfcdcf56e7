//! A deterministic discrete-event network that runs the real [`Swarm`]:
//! seeded randomness, virtual time, per-link latency, links that go up and
//! down like connections (a dial to a dead node fails after one round
//! trip; a crash takes its links down), and every frame encoded and
//! decoded by oap-codec on its way. The same seed gives the same run.

use core::net::{Ipv4Addr, SocketAddr};
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use oap_codec::{Frame, Msg, MsgId, NodeAddr, NodeId, Topic};

use crate::{Config, InEvent, OutEvent, Rng, Swarm, SwarmEvent};

type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// Shortest one-way latency of a simulated link.
const MIN_LATENCY_MS: u64 = 10;
/// Longest one-way latency of a simulated link.
const MAX_LATENCY_MS: u64 = 50;
/// How long a dial into a black hole (a partition drops its packets) takes
/// to fail: a connect timeout.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// A message not delivered this long after its publication is missed.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Something the network does at a point of virtual time.
#[derive(Debug)]
enum Ev {
    /// An event for node `to`'s swarm.
    In { to: usize, event: InEvent },
    /// A frame in flight from `from` to `to`, as bytes on the wire.
    Wire { from: usize, to: usize, bytes: Bytes },
    /// A link closed by one end: after what was sent on it has arrived.
    Close { a: usize, b: usize },
}

/// One node's life in a run, event by event: what another driver must be
/// fed to be compared with the simulator ([`Sim::record`]).
#[derive(Debug, Clone)]
pub struct Recording {
    /// The node.
    pub node: NodeAddr,
    /// The seed its swarm was made with.
    pub seed: u64,
    /// Every event it handled, with the time, in order.
    pub events: Vec<(Instant, InEvent)>,
    /// Every action its swarm asked for, in order.
    pub out: Vec<OutEvent>,
}

/// One simulated node.
struct Node {
    swarm: Swarm,
    seed: u64,
    alive: bool,
    /// When it was added, and when it failed.
    born: Duration,
    died: Option<Duration>,
    /// It failed silently (a black hole): dials to it time out.
    silent: bool,
    /// Messages delivered here (first copies), with the virtual time.
    got: Map<MsgId, Duration>,
    duplicates: u64,
}

/// What a run measured, for a range of the messages published with
/// [`Sim::publish`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Messages in the range.
    pub messages: u64,
    /// Node-message pairs that should have been delivered (nodes alive now,
    /// other than the publisher).
    pub expected: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// Copies delivered twice to one node (must be 0), over the whole run.
    pub duplicates: u64,
    /// Payload frames sent for these messages (tree pushes, grafts, and
    /// sends lost on links that went down).
    pub payload_sent: u64,
    /// Relative message redundancy: payloads / (nodes reached - 1) - 1.
    pub rmr: f64,
    /// The same for the range's first message alone.
    pub rmr_first: f64,
    /// The same for the rest.
    pub rmr_steady: f64,
    /// Largest hop count at which one of these was first delivered.
    pub ldh_max: u8,
    /// Delivery latency in virtual ms: median, 99th percentile, largest.
    pub latency_p50_ms: u64,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: u64,
    /// See `latency_p50_ms`.
    pub latency_max_ms: u64,
}

/// A simulated network of swarm nodes.
pub struct Sim {
    nodes: Vec<Node>,
    by_addr: Map<SocketAddr, usize>,
    by_id: Map<NodeId, usize>,
    links: BTreeSet<(usize, usize)>,
    queue: BinaryHeap<Reverse<(Duration, u64, usize)>>,
    events: Map<usize, Ev>,
    seq: u64,
    epoch: Instant,
    now: Duration,
    rng: Rng,
    seed: u64,
    published: Vec<(MsgId, usize, Duration)>,
    /// Payload frames sent per message.
    sends: Map<MsgId, u64>,
    /// Every payload frame sent (message, from, to), while kept.
    send_log: Option<Vec<(MsgId, usize, usize)>>,
    /// Hops of each message's deepest first delivery.
    depth: Map<MsgId, u8>,
    /// Swarm (control) frames sent.
    pub control_sent: u64,
    /// Payload frames sent, counted on the wire.
    pub payload_sent: u64,
    /// Frames the codec would refuse to encode (over `max_frame`) or could
    /// not read back (a bug either way; must stay 0).
    pub decode_errors: u64,
    /// Peers that entered or left an active view.
    pub membership_changes: u64,
    /// Frames sent on a link that was already down (lost in flight).
    pub lost: u64,
    /// A hash of every frame delivered, in order: equal for equal seeds.
    trace: DefaultHasher,
    /// While partitioned: each node's side.
    sides: Option<Vec<u8>>,
    /// What every node is made with.
    config: Config,
    /// The node whose events and actions are recorded.
    recording: Option<(usize, Recording)>,
}

impl Sim {
    /// `n` nodes, none joined yet, on a network seeded by `seed`. Virtual
    /// time starts at `epoch` (any instant: only offsets from it matter, so
    /// the simulation reads no clock).
    pub fn new(n: usize, config: &Config, seed: u64, epoch: Instant) -> Sim {
        let mut sim = Sim {
            nodes: Vec::with_capacity(n),
            by_addr: Map::default(),
            by_id: Map::default(),
            config: config.clone(),
            links: BTreeSet::new(),
            queue: BinaryHeap::new(),
            events: Map::default(),
            seq: 0,
            epoch,
            now: Duration::ZERO,
            rng: Rng::new(seed),
            seed,
            published: Vec::new(),
            sends: Map::default(),
            send_log: None,
            depth: Map::default(),
            control_sent: 0,
            payload_sent: 0,
            decode_errors: 0,
            membership_changes: 0,
            lost: 0,
            trace: DefaultHasher::new(),
            sides: None,
            recording: None,
        };
        for _ in 0..n {
            sim.add_node();
        }
        sim
    }

    /// Adds a node that knows no one (join it with [`Sim::join`]); returns
    /// its index.
    pub fn add_node(&mut self) -> usize {
        let i = self.nodes.len();
        let mut id = [0u8; 32];
        for chunk in id.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        let addr = SocketAddr::new(Ipv4Addr::from(0x0A00_0000 + i as u32 + 1).into(), 9500);
        let me = NodeAddr { id: NodeId(id), addr };
        self.by_addr.insert(addr, i);
        self.by_id.insert(me.id, i);
        let seed = self.rng.next_u64();
        let swarm = Swarm::new(me, self.config.clone(), seed);
        self.nodes.push(Node {
            swarm,
            seed,
            alive: true,
            born: self.now,
            died: None,
            silent: false,
            got: Map::default(),
            duplicates: 0,
        });
        i
    }

    /// Virtual time since the start.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].swarm.me().addr
    }

    /// Node `i`'s swarm.
    pub fn swarm(&self, i: usize) -> &Swarm {
        &self.nodes[i].swarm
    }

    /// Records node `i`'s events and actions from now on (one node at a
    /// time; recording another starts over).
    pub fn record(&mut self, i: usize) {
        let node = &self.nodes[i];
        let recording = Recording { node: *node.swarm.me(), seed: node.seed, events: Vec::new(), out: Vec::new() };
        self.recording = Some((i, recording));
    }

    /// What was recorded since [`Sim::record`].
    pub fn recording(&self) -> Option<&Recording> {
        self.recording.as_ref().map(|(_, r)| r)
    }

    /// Nodes alive.
    pub fn alive(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].alive)
    }

    /// A hash of every frame delivered so far, in order.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    fn push(&mut self, after: Duration, ev: Ev) {
        self.seq += 1;
        self.events.insert(self.seq as usize, ev);
        self.queue.push(Reverse((self.now + after, self.seq, self.seq as usize)));
    }

    /// One-way latency of the link between `a` and `b` (fixed per pair).
    fn latency(&self, a: usize, b: usize) -> Duration {
        let mut h = DefaultHasher::new();
        (a.min(b), a.max(b), self.seed).hash(&mut h);
        Duration::from_millis(MIN_LATENCY_MS + h.finish() % (MAX_LATENCY_MS - MIN_LATENCY_MS + 1))
    }

    /// Node `i` joins through node `seed`.
    pub fn join(&mut self, i: usize, seed: usize) {
        let addr = self.nodes[seed].swarm.me().addr;
        self.push(Duration::ZERO, Ev::In { to: i, event: InEvent::Join(addr) });
    }

    /// Node `i` publishes a message on topic `sim` now; returns its id.
    pub fn publish(&mut self, i: usize) -> MsgId {
        self.publish_on(i, Topic::new(Bytes::from_static(b"sim")).unwrap_or_else(|_| unreachable!("a valid topic")))
    }

    /// Node `i` publishes a message on `topic` now; returns its id.
    pub fn publish_on(&mut self, i: usize, topic: Topic) -> MsgId {
        let n = self.published.len() as u64;
        // Laid out as the node's ids are: the origin (6 bytes, here the
        // node's index), a sequence number rising per origin (5 bytes, here
        // the overall count), and a digest (left zero).
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&(i as u64).to_be_bytes()[2..]);
        id[6..11].copy_from_slice(&n.to_be_bytes()[3..]);
        let msg = Msg { topic, msg_id: MsgId(id), hops: 0, payload: Bytes::from(vec![0u8; 64]) };
        self.published.push((msg.msg_id, i, self.now));
        self.push(Duration::ZERO, Ev::In { to: i, event: InEvent::Publish(msg) });
        MsgId(id)
    }

    /// Node `i`'s own subscriptions are now `patterns` (`None`: every
    /// topic, what a node starts with here).
    pub fn set_interest(&mut self, i: usize, patterns: Option<Vec<oap_codec::Pattern>>) {
        self.push(Duration::ZERO, Ev::In { to: i, event: InEvent::Interest(patterns) });
    }

    /// Keeps every payload frame sent from now on, as (message, from, to).
    pub fn log_sends(&mut self) {
        self.send_log = Some(Vec::new());
    }

    /// The payload frames logged since [`Sim::log_sends`] (the log goes on).
    pub fn take_sends(&mut self) -> Vec<(MsgId, usize, usize)> {
        self.send_log.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The node with this id.
    pub fn index_of(&self, id: &NodeId) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    /// When node `i` got message `id` (its first copy), if it did.
    pub fn got(&self, i: usize, id: &MsgId) -> Option<Duration> {
        self.nodes[i].got.get(id).copied()
    }

    /// Crashes node `i`: its links go down (the far ends notice after one
    /// latency), and dials to it fail.
    pub fn kill(&mut self, i: usize) {
        self.fail(i, None);
    }

    /// Black-holes node `i`: all its traffic vanishes, so its peers notice
    /// only after `noticed_after` (keepalive), and dials to it time out.
    pub fn kill_silently(&mut self, i: usize, noticed_after: Duration) {
        self.fail(i, Some(noticed_after));
    }

    fn fail(&mut self, i: usize, silent: Option<Duration>) {
        let node = &mut self.nodes[i];
        node.alive = false;
        node.died = Some(self.now);
        node.silent = silent.is_some();
        let linked: Vec<(usize, usize)> = self.links.iter().filter(|(a, b)| *a == i || *b == i).copied().collect();
        for (a, b) in linked {
            self.links.remove(&(a, b));
            let other = if a == i { b } else { a };
            let id = self.nodes[i].swarm.me().id;
            let after = silent.unwrap_or_else(|| self.latency(a, b));
            self.push(after, Ev::In { to: other, event: InEvent::LinkDown(id) });
        }
    }

    /// Splits the network: nodes on different sides (`side(i)`) can no
    /// longer reach each other. Packets across vanish, so each end notices
    /// a link only after `noticed_after` (keepalive), and dials across time
    /// out.
    pub fn partition(&mut self, side: impl Fn(usize) -> u8, noticed_after: Duration) {
        let sides: Vec<u8> = (0..self.nodes.len()).map(side).collect();
        let cut: Vec<(usize, usize)> = self.links.iter().filter(|(a, b)| sides[*a] != sides[*b]).copied().collect();
        for (a, b) in cut {
            self.links.remove(&(a, b));
            let (ida, idb) = (self.nodes[a].swarm.me().id, self.nodes[b].swarm.me().id);
            self.push(noticed_after, Ev::In { to: a, event: InEvent::LinkDown(idb) });
            self.push(noticed_after, Ev::In { to: b, event: InEvent::LinkDown(ida) });
        }
        self.sides = Some(sides);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.sides = None;
    }

    /// Whether nodes `a` and `b` are linked.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        self.links.contains(&(a.min(b), a.max(b)))
    }

    /// Node `i`'s side while partitioned.
    pub fn side(&self, i: usize) -> Option<u8> {
        self.sides.as_ref().map(|s| s[i])
    }

    fn cut(&self, a: usize, b: usize) -> bool {
        self.sides.as_ref().is_some_and(|s| s[a] != s[b])
    }

    /// Runs until virtual time `until` (from the start).
    pub fn run_until(&mut self, until: Duration) {
        while let Some(Reverse((at, _, key))) = self.queue.peek().copied() {
            if at > until {
                break;
            }
            self.queue.pop();
            self.now = at;
            if let Some(ev) = self.events.remove(&key) {
                self.step(ev);
            }
        }
        self.now = until;
    }

    /// Runs for `d` more virtual time.
    pub fn run_for(&mut self, d: Duration) {
        self.run_until(self.now + d);
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Wire { from, to, bytes } => {
                if !self.nodes[to].alive || !self.links.contains(&(from.min(to), from.max(to))) {
                    self.lost += 1;
                    return;
                }
                bytes.hash(&mut self.trace);
                // What the encoder wrote, the decoder must read back.
                let Ok(frame) = Frame::decode(bytes[oap_codec::HEADER_LEN], bytes.slice(oap_codec::HEADER_LEN + 1..))
                else {
                    self.decode_errors += 1;
                    return;
                };
                let from_id = self.nodes[from].swarm.me().id;
                let event = match frame {
                    Frame::Msg(msg) => InEvent::Message { from: from_id, msg },
                    Frame::Swarm(frame) => InEvent::Recv { from: from_id, frame },
                    _ => return,
                };
                self.handle(to, event);
            }
            Ev::Close { a, b } => {
                if self.links.remove(&(a.min(b), a.max(b))) {
                    let (ida, idb) = (self.nodes[a].swarm.me().id, self.nodes[b].swarm.me().id);
                    if self.nodes[a].alive {
                        self.handle(a, InEvent::LinkDown(idb));
                    }
                    if self.nodes[b].alive {
                        self.handle(b, InEvent::LinkDown(ida));
                    }
                }
            }
            Ev::In { to, event } => {
                if !self.nodes[to].alive {
                    return;
                }
                // A link closed (or cut) while its set-up was in flight never
                // comes up: the dialer sees its dial fail, the other side
                // nothing, as with a real connection.
                if let InEvent::LinkUp { node, dialed } = &event
                    && let Some(&j) = self.by_id.get(&node.id)
                    && !self.links.contains(&(to.min(j), to.max(j)))
                {
                    if let Some(addr) = dialed {
                        self.handle(to, InEvent::DialFailed(*addr));
                    }
                    return;
                }
                self.handle(to, event);
            }
        }
    }

    fn handle(&mut self, i: usize, event: InEvent) {
        let now = self.epoch + self.now;
        let recorded = match &mut self.recording {
            Some((r, recording)) if *r == i => {
                recording.events.push((now, event.clone()));
                Some(recording)
            }
            _ => None,
        };
        let out: Vec<OutEvent> = self.nodes[i].swarm.handle(event, now).collect();
        if let Some(recording) = recorded {
            recording.out.extend(out.iter().cloned());
        }
        for o in out {
            self.act(i, o);
        }
    }

    fn act(&mut self, i: usize, o: OutEvent) {
        match o {
            OutEvent::Send { to, frame } => {
                self.control_sent += 1;
                self.send(i, to, Frame::Swarm(frame));
            }
            OutEvent::SendMsg { to, msg, .. } => {
                self.payload_sent += 1;
                *self.sends.entry(msg.msg_id).or_default() += 1;
                if let (Some(log), Some(&j)) = (&mut self.send_log, self.by_id.get(&to)) {
                    log.push((msg.msg_id, i, j));
                }
                self.send(i, to, Frame::Msg(msg));
            }
            OutEvent::Deliver(msg) => {
                let node = &mut self.nodes[i];
                match node.got.entry(msg.msg_id) {
                    std::collections::hash_map::Entry::Occupied(_) => node.duplicates += 1,
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(self.now);
                        let depth = self.depth.entry(msg.msg_id).or_default();
                        *depth = (*depth).max(msg.hops);
                    }
                }
            }
            OutEvent::Dial(addr) => self.dial(i, addr),
            OutEvent::Disconnect(peer) => {
                // Closed once flushed: the frames already sent arrive first.
                let Some(&j) = self.by_id.get(&peer) else { return };
                if self.links.contains(&(i.min(j), i.max(j))) {
                    let after = self.latency(i, j);
                    self.push(after, Ev::Close { a: i, b: j });
                }
            }
            OutEvent::ScheduleTimer { after, timer } => {
                self.push(after, Ev::In { to: i, event: InEvent::Timer(timer) })
            }
            OutEvent::Event(SwarmEvent::NeighborUp(_) | SwarmEvent::NeighborDown(_)) => self.membership_changes += 1,
            OutEvent::Event(SwarmEvent::Alone) => {}
        }
    }

    fn send(&mut self, from: usize, to: NodeId, frame: Frame) {
        let Some(&j) = self.by_id.get(&to) else { return };
        if !self.links.contains(&(from.min(j), from.max(j))) {
            self.lost += 1;
            return;
        }
        // What the node's codec would refuse to encode (over `max_frame`) is
        // never sent, and counted as a codec error.
        if frame.encoded_len() > oap_codec::HEADER_LEN + oap_codec::MAX_FRAME as usize {
            self.decode_errors += 1;
            return;
        }
        let mut wire = BytesMut::new();
        frame.encode_into(&mut wire);
        let after = self.latency(from, j);
        self.push(after, Ev::Wire { from, to: j, bytes: wire.freeze() });
    }

    /// A dial: connect, the identity exchange, then both sides report the
    /// link (one round trip); a dead or unknown address fails after one.
    fn dial(&mut self, i: usize, addr: SocketAddr) {
        let rtt_unknown = Duration::from_millis(2 * MAX_LATENCY_MS);
        let Some(&j) = self.by_addr.get(&addr) else {
            return self.push(rtt_unknown, Ev::In { to: i, event: InEvent::DialFailed(addr) });
        };
        if self.cut(i, j) || self.nodes[j].silent {
            return self.push(DIAL_TIMEOUT, Ev::In { to: i, event: InEvent::DialFailed(addr) });
        }
        let rtt = 2 * self.latency(i, j);
        if !self.nodes[j].alive || i == j {
            return self.push(rtt, Ev::In { to: i, event: InEvent::DialFailed(addr) });
        }
        let (me, them) = (*self.nodes[i].swarm.me(), *self.nodes[j].swarm.me());
        // An existing link (either side dialed it) serves this dial too:
        // one link per pair.
        let fresh = self.links.insert((i.min(j), i.max(j)));
        self.push(rtt, Ev::In { to: i, event: InEvent::LinkUp { node: them, dialed: Some(addr) } });
        if fresh {
            let half = self.latency(i, j);
            self.push(half, Ev::In { to: j, event: InEvent::LinkUp { node: me, dialed: None } });
        }
    }

    /// Live nodes that never got the `k`-th published message.
    pub fn missed_by(&self, k: usize) -> Vec<usize> {
        let (id, publisher, _) = self.published[k];
        self.alive().filter(|&i| i != publisher && !self.nodes[i].got.contains_key(&id)).collect()
    }

    /// How long node `i` had been in the network when the `k`-th message
    /// was published (zero if it came later).
    pub fn age_at(&self, i: usize, k: usize) -> Duration {
        self.published[k].2.saturating_sub(self.nodes[i].born)
    }

    /// Who published the `k`-th message.
    pub fn publisher(&self, k: usize) -> usize {
        self.published[k].1
    }

    /// Messages published so far.
    pub fn published(&self) -> usize {
        self.published.len()
    }

    /// Delivery of the messages published from the `from`-th on, over the
    /// nodes alive through each message's window (added before it was
    /// published, not failed within `DEADLINE` of it).
    pub fn report(&self, from: usize) -> Report {
        let range = &self.published[from.min(self.published.len())..];
        let mut r = Report { messages: range.len() as u64, ..Report::default() };
        let mut latencies = Vec::new();
        let (mut first, mut steady) = ((0u64, 0u64), (0u64, 0u64));
        for (k, &(id, publisher, at)) in range.iter().enumerate() {
            let mut reached = 0u64;
            for (i, node) in self.nodes.iter().enumerate() {
                let through = node.born <= at && node.died.is_none_or(|d| d > at + DEADLINE);
                if i == publisher || !through {
                    continue;
                }
                r.expected += 1;
                if let Some(&got) = node.got.get(&id)
                    && got <= at + DEADLINE
                {
                    reached += 1;
                    latencies.push((got - at).as_millis() as u64);
                }
            }
            r.delivered += reached;
            let sent = self.sends.get(&id).copied().unwrap_or(0);
            let part = if k == 0 { &mut first } else { &mut steady };
            part.0 += sent;
            part.1 += reached;
            r.ldh_max = r.ldh_max.max(self.depth.get(&id).copied().unwrap_or(0));
        }
        let rmr = |(sent, reached): (u64, u64)| if reached > 0 { sent as f64 / reached as f64 - 1.0 } else { 0.0 };
        r.payload_sent = first.0 + steady.0;
        r.rmr = rmr((first.0 + steady.0, first.1 + steady.1));
        r.rmr_first = rmr(first);
        r.rmr_steady = rmr(steady);
        r.duplicates = self.nodes.iter().map(|n| n.duplicates).sum();
        latencies.sort_unstable();
        let pct = |p: usize| latencies.get((latencies.len() * p / 100).min(latencies.len().saturating_sub(1))).copied();
        r.latency_p50_ms = pct(50).unwrap_or(0);
        r.latency_p99_ms = pct(99).unwrap_or(0);
        r.latency_max_ms = latencies.last().copied().unwrap_or(0);
        r
    }

    /// Connected components among live nodes over the active views, and
    /// live nodes with an empty active view.
    pub fn components(&self) -> (usize, usize) {
        let n = self.nodes.len();
        let mut seen = vec![false; n];
        let (mut components, mut isolated) = (0, 0);
        for start in self.alive() {
            if self.nodes[start].swarm.active().is_empty() {
                isolated += 1;
            }
            if seen[start] {
                continue;
            }
            components += 1;
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                for peer in self.nodes[i].swarm.active() {
                    if let Some(&j) = self.by_id.get(&peer.id)
                        && self.nodes[j].alive
                        && !seen[j]
                    {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        (components, isolated)
    }

    /// Hops from node `from` to the farthest live node over the active
    /// views (its eccentricity), and how many live nodes it reaches.
    pub fn eccentricity(&self, from: usize) -> (usize, usize) {
        let mut dist = vec![usize::MAX; self.nodes.len()];
        let mut queue = std::collections::VecDeque::from([from]);
        dist[from] = 0;
        let (mut far, mut reached) = (0, 1);
        while let Some(i) = queue.pop_front() {
            for peer in self.nodes[i].swarm.active() {
                if let Some(&j) = self.by_id.get(&peer.id)
                    && self.nodes[j].alive
                    && dist[j] == usize::MAX
                {
                    dist[j] = dist[i] + 1;
                    far = far.max(dist[j]);
                    reached += 1;
                    queue.push_back(j);
                }
            }
        }
        (far, reached)
    }

    /// The live nodes' swarms, everything else of the simulation dropped
    /// (what a memory measurement should see).
    pub fn into_swarms(self) -> Vec<Swarm> {
        self.nodes.into_iter().filter(|n| n.alive).map(|n| n.swarm).collect()
    }

    /// A random live node that has been in the network for at least `age`
    /// (a node that has not linked to anyone yet publishes to no one).
    pub fn random_settled(&mut self, age: Duration) -> usize {
        let now = self.now;
        let settled: Vec<usize> = self.alive().filter(|&i| now.saturating_sub(self.nodes[i].born) >= age).collect();
        settled[self.rng.below(settled.len())]
    }

    /// A random live node.
    pub fn random_alive(&mut self) -> usize {
        let alive: Vec<usize> = self.alive().collect();
        alive[self.rng.below(alive.len())]
    }
}
