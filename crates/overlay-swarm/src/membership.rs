//! HyParView (Leitao, Pereira, Rodrigues, DSN 2007): a small active view of
//! linked peers, kept symmetric, and a larger passive view of addresses to
//! replace them from. A node joins through any member (`JOIN`); the join
//! spreads by random walks (`FORWARD_JOIN`); periodic shuffles keep the
//! passive views fresh and mixed.

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use oap_codec::{NodeAddr, NodeId, Priority, SwarmFrame};

use crate::config::Config;
use crate::rng::Rng;
use crate::swarm::{OutEvent, SwarmEvent, Timer};

/// Largest active view accepted from a config (each active peer is a link
/// and a fanout target).
pub(crate) const MAX_ACTIVE: usize = 64;
/// Seeds remembered at most.
const MAX_SEEDS: usize = 64;
/// Dials in flight at most; further ones wait for a later repair.
const MAX_DIALING: usize = 16;
/// Lost active peers remembered for probing at most.
const MAX_LOST: usize = 16;
/// Times one peer may be taken into the active view (by its `JOIN` or
/// `NEIGHBOR`) per `ADMIT_WINDOW`: a peer that joins, leaves and joins in a
/// loop would otherwise evict a random active peer and start the join's
/// walks each time.
const ADMIT_BURST: u8 = 4;
/// See `ADMIT_BURST`.
const ADMIT_WINDOW: Duration = Duration::from_secs(10);
/// Peers whose admissions are counted at once; past it (more distinct
/// peers asking within one window) requests are refused, which also bounds
/// admissions in total.
const ADMIT_SOURCES: usize = 1024;
/// A dial not reported back (`LinkUp` or `DialFailed`) within this long
/// after a repair first saw it is given up, so its slot is not held forever.
const DIAL_EXPIRY: Duration = Duration::from_secs(30);

/// A dial in flight.
struct Dialing {
    purposes: Vec<Purpose>,
    seen: Option<Instant>,
}

/// Why a dial was made: what to do once its link is up.
#[derive(Debug, Clone)]
enum Purpose {
    /// Join the swarm through this seed.
    Join,
    /// Take the peer into the active view, asking it to do the same.
    Neighbor(Priority),
    /// Answer a shuffle that ended here.
    ShuffleReply(Vec<NodeAddr>),
    /// Reconnect to an active peer lost to a failure (which may have been
    /// a partition that healed since).
    Probe,
}

/// A link the driver reported up.
struct Link {
    node: NodeAddr,
    since: Instant,
}

pub(crate) struct Membership {
    me: NodeAddr,
    active: Vec<NodeAddr>,
    passive: Vec<NodeAddr>,
    active_cap: usize,
    passive_cap: usize,
    active_walk: u8,
    passive_walk: u8,
    shuffle_active: usize,
    shuffle_passive: usize,
    shuffle_period: Duration,
    repair_period: Duration,
    link_grace: Duration,
    links: BTreeMap<NodeId, Link>,
    /// Dials in flight and what they are for, with when a repair first saw
    /// them (a dial the driver never reports back expires).
    dialing: BTreeMap<SocketAddr, Dialing>,
    /// The node left: it answers nothing and repairs nothing any more.
    left: bool,
    seeds: Vec<SocketAddr>,
    /// What this node sent in its last shuffle: replaced first when the
    /// reply's nodes need room in the passive view.
    shuffled: Vec<NodeAddr>,
    /// Active peers lost to a failure, until when they are probed.
    lost: Vec<(NodeAddr, Instant)>,
    lost_ttl: Duration,
    probe_period: Duration,
    /// Peers that dropped or refused us while up (their active view is
    /// full): not asked again until the next periodic shuffle, so a node
    /// whose view cannot fill does not churn the tree trying.
    full: Vec<NodeId>,
    /// Peers asked to take this node in with low priority, not answered
    /// yet (with when a repair first saw the request, as for dials): such
    /// a peer enters the active view when it accepts (its `NEIGHBOR`), not
    /// before, so a refusal costs no link in the view for a round trip
    /// (every broadcast tree would push to it meanwhile).
    asking: Vec<(NodeId, Option<Instant>)>,
    /// Admissions per asking peer in the current window (`ADMIT_BURST`).
    admitted: BTreeMap<NodeId, (Instant, u8)>,
    /// Requests to enter the active view refused by that bound.
    pub(crate) refused: u64,
}

impl Membership {
    pub(crate) fn new(me: NodeAddr, c: &Config) -> Membership {
        Membership {
            me,
            active: Vec::new(),
            passive: Vec::new(),
            active_cap: c.active_view.clamp(1, MAX_ACTIVE),
            passive_cap: c.passive_view.min(SwarmFrame::MAX_NODES),
            active_walk: c.active_walk,
            passive_walk: c.passive_walk,
            shuffle_active: c.shuffle_active,
            shuffle_passive: c.shuffle_passive,
            shuffle_period: c.shuffle_period,
            repair_period: c.repair_period,
            link_grace: c.link_grace,
            links: BTreeMap::new(),
            dialing: BTreeMap::new(),
            left: false,
            seeds: Vec::new(),
            shuffled: Vec::new(),
            full: Vec::new(),
            lost: Vec::new(),
            lost_ttl: c.lost_ttl,
            probe_period: c.probe_period,
            asking: Vec::new(),
            admitted: BTreeMap::new(),
            refused: 0,
        }
    }

    pub(crate) fn me(&self) -> &NodeAddr {
        &self.me
    }

    pub(crate) fn active(&self) -> &[NodeAddr] {
        &self.active
    }

    pub(crate) fn seeds(&self) -> &[SocketAddr] {
        &self.seeds
    }

    pub(crate) fn passive(&self) -> &[NodeAddr] {
        &self.passive
    }

    pub(crate) fn is_linked(&self, id: &NodeId) -> bool {
        self.links.contains_key(id)
    }

    fn is_active(&self, id: &NodeId) -> bool {
        self.active.iter().any(|n| n.id == *id)
    }

    /// Joins through `seed`, which is remembered for rejoining.
    pub(crate) fn join(&mut self, seed: SocketAddr, out: &mut VecDeque<OutEvent>) {
        if seed == self.me.addr || self.left {
            return;
        }
        if !self.seeds.contains(&seed) && self.seeds.len() < MAX_SEEDS {
            self.seeds.push(seed);
        }
        self.dial(seed, Purpose::Join, out);
    }

    /// Forgets a seed: it is no longer rejoined through, nor kept as a
    /// passive peer. A link to it stays until membership drops it.
    pub(crate) fn forget(&mut self, addr: SocketAddr, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        self.seeds.retain(|s| *s != addr);
        self.passive.retain(|n| n.addr != addr);
        self.lost.retain(|(n, _)| n.addr != addr);
        // An active peer at the address leaves the view as one that is still
        // up (not lost: it is not probed), and the view is topped up.
        let gone: Vec<NodeId> = self.active.iter().filter(|n| n.addr == addr).map(|n| n.id).collect();
        for id in gone {
            if self.remove_active(id, out) {
                Self::send(id, SwarmFrame::Disconnect { alive: true }, out);
                out.push_back(OutEvent::Disconnect(id));
                self.fill(rng, out);
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr, purpose: Purpose, out: &mut VecDeque<OutEvent>) {
        if let Some(waiting) = self.dialing.get_mut(&addr) {
            if waiting.purposes.len() < 4 {
                waiting.purposes.push(purpose);
            }
            return;
        }
        if self.dialing.len() >= MAX_DIALING {
            return;
        }
        self.dialing.insert(addr, Dialing { purposes: vec![purpose], seen: None });
        out.push_back(OutEvent::Dial(addr));
    }

    fn send(to: NodeId, frame: SwarmFrame, out: &mut VecDeque<OutEvent>) {
        out.push_back(OutEvent::Send { to, frame });
    }

    pub(crate) fn link_up(
        &mut self,
        node: NodeAddr,
        dialed: Option<SocketAddr>,
        now: Instant,
        rng: &mut Rng,
        out: &mut VecDeque<OutEvent>,
    ) {
        let purposes = dialed.and_then(|a| self.dialing.remove(&a)).map(|d| d.purposes).unwrap_or_default();
        if node.id == self.me.id || self.left {
            // We dialed ourselves (a seed list that names this node), or we
            // are leaving.
            out.push_back(OutEvent::Disconnect(node.id));
            return;
        }
        self.links.insert(node.id, Link { node, since: now });
        for purpose in purposes {
            match purpose {
                Purpose::Join => Self::send(node.id, SwarmFrame::Join, out),
                Purpose::Neighbor(priority) => self.neighbor(node, priority, rng, out),
                Purpose::ShuffleReply(nodes) => Self::send(node.id, SwarmFrame::ShuffleReply { nodes }, out),
                Purpose::Probe => {
                    // Back: a link across what was cut. High priority, so
                    // the two sides of a healed partition link up again even
                    // though both refilled their views meanwhile.
                    self.lost.retain(|(n, _)| n.id != node.id);
                    self.add_active(node, Priority::High, rng, out);
                }
            }
        }
    }

    pub(crate) fn link_down(&mut self, peer: NodeId, now: Instant, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        let node = self.links.remove(&peer).map(|l| l.node);
        self.asking.retain(|(id, _)| *id != peer);
        if let Some(node) = node.filter(|_| self.is_active(&peer)) {
            if self.lost.len() >= MAX_LOST {
                self.lost.remove(0);
            }
            self.lost.push((node, now + self.lost_ttl));
        }
        if self.remove_active(peer, out) {
            // Lost, not left: it is not kept as a passive peer either. A
            // failure frees room elsewhere too: peers that were full may
            // take us now.
            self.passive.retain(|n| n.id != peer);
            self.full.clear();
            self.fill(rng, out);
        }
    }

    pub(crate) fn dial_failed(&mut self, addr: SocketAddr, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        let purposes = self.dialing.remove(&addr).map(|d| d.purposes).unwrap_or_default();
        self.passive.retain(|n| n.addr != addr);
        if purposes.iter().any(|p| matches!(p, Purpose::Neighbor(_))) {
            self.fill(rng, out);
        }
    }

    pub(crate) fn on_frame(
        &mut self,
        from: NodeId,
        frame: SwarmFrame,
        now: Instant,
        rng: &mut Rng,
        out: &mut VecDeque<OutEvent>,
    ) {
        if self.left {
            return;
        }
        match frame {
            SwarmFrame::Join | SwarmFrame::Neighbor { .. } if !self.is_active(&from) && !self.admissible(from, now) => {
                // Refused: a NEIGHBOR's sender counts us active or waits
                // for an answer, so it is told; a JOIN's sender is not
                // active anywhere yet.
                self.refused += 1;
                self.asking.retain(|(id, _)| *id != from);
                if matches!(frame, SwarmFrame::Neighbor { .. }) {
                    Self::send(from, SwarmFrame::Disconnect { alive: true }, out);
                }
            }
            SwarmFrame::Join => {
                let before = self.is_active(&from);
                self.on_join(from, rng, out);
                if !before {
                    self.admitted_now(from, now);
                }
            }
            SwarmFrame::ForwardJoin { ttl, node } => self.on_forward_join(from, ttl, node, rng, out),
            SwarmFrame::Neighbor { priority } => {
                let before = self.is_active(&from);
                self.on_neighbor(from, priority, rng, out);
                if !before {
                    self.admitted_now(from, now);
                }
            }
            SwarmFrame::Disconnect { alive } => self.on_disconnect(from, alive, rng, out),
            SwarmFrame::Shuffle { ttl, origin, nodes } => self.on_shuffle(from, ttl, origin, nodes, rng, out),
            SwarmFrame::ShuffleReply { nodes } => self.integrate(nodes, rng),
            // Identity is the driver's (before `LinkUp`); tree frames are the
            // broadcast's.
            SwarmFrame::Node(_)
            | SwarmFrame::IHave(_)
            | SwarmFrame::Graft(_)
            | SwarmFrame::Prune(_)
            | SwarmFrame::Interest { .. } => {}
        }
    }

    /// Whether `from` may enter the active view now (`ADMIT_BURST`).
    fn admissible(&mut self, from: NodeId, now: Instant) -> bool {
        let fresh = |since: Instant| now.saturating_duration_since(since) < ADMIT_WINDOW;
        if self.admitted.len() >= ADMIT_SOURCES && !self.admitted.contains_key(&from) {
            self.admitted.retain(|_, (since, _)| fresh(*since));
            if self.admitted.len() >= ADMIT_SOURCES {
                return false;
            }
        }
        self.admitted.get(&from).is_none_or(|(since, count)| !fresh(*since) || *count < ADMIT_BURST)
    }

    /// Counts an admission of `from` when it did enter the active view (a
    /// request refused for a full view costs the asker nothing).
    fn admitted_now(&mut self, from: NodeId, now: Instant) {
        if !self.is_active(&from) {
            return;
        }
        let (since, count) = self.admitted.entry(from).or_insert((now, 0));
        if now.saturating_duration_since(*since) >= ADMIT_WINDOW {
            (*since, *count) = (now, 0);
        }
        *count += 1;
    }

    /// A linked peer, with the address its `NODE` frame gave.
    fn node_of(&self, id: NodeId) -> Option<NodeAddr> {
        self.links.get(&id).map(|l| l.node)
    }

    fn on_join(&mut self, from: NodeId, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        // A repeated JOIN would start the walks again: one per link.
        if self.is_active(&from) {
            return;
        }
        let Some(node) = self.node_of(from) else { return };
        self.add_active(node, Priority::High, rng, out);
        for peer in self.active.iter().filter(|n| n.id != from) {
            Self::send(peer.id, SwarmFrame::ForwardJoin { ttl: self.active_walk, node }, out);
        }
    }

    fn on_forward_join(&mut self, from: NodeId, ttl: u8, node: NodeAddr, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        // Walks travel along active links only.
        if node.id == self.me.id || !valid_addr(&node.addr) {
            return;
        }
        let ttl = ttl.min(self.active_walk);
        if ttl == 0 || self.active.len() <= 1 {
            return self.neighbor(node, Priority::High, rng, out);
        }
        if ttl == self.passive_walk {
            self.add_passive(node, rng);
        }
        let next: Vec<NodeId> = self.active.iter().map(|n| n.id).filter(|id| *id != from && *id != node.id).collect();
        match rng.pick(&next) {
            Some(&to) => Self::send(to, SwarmFrame::ForwardJoin { ttl: ttl - 1, node }, out),
            None => self.neighbor(node, Priority::High, rng, out),
        }
    }

    fn on_neighbor(&mut self, from: NodeId, priority: Priority, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if self.is_active(&from) {
            return;
        }
        let Some(node) = self.node_of(from) else { return };
        // A peer this node asked: its answer, taken in while there is room
        // (it counts this node active already).
        let answer = self.asking.iter().any(|(id, _)| *id == from);
        self.asking.retain(|(id, _)| *id != from);
        if priority == Priority::High || self.active.len() < self.active_cap {
            if answer {
                self.take_in(node, out);
                return;
            }
            self.add_active(node, priority, rng, out);
        } else {
            Self::send(from, SwarmFrame::Disconnect { alive: true }, out);
            self.add_passive(node, rng);
        }
    }

    fn on_disconnect(&mut self, from: NodeId, alive: bool, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        // A peer asked with low priority refused: full.
        if let Some(at) = self.asking.iter().position(|(id, _)| *id == from) {
            self.asking.swap_remove(at);
            if alive && self.full.len() < self.passive_cap {
                self.full.push(from);
            }
        }
        let node = self.active.iter().find(|n| n.id == from).copied();
        if self.remove_active(from, out) {
            out.push_back(OutEvent::Disconnect(from));
        }
        match (alive, node) {
            (true, Some(node)) => {
                self.add_passive(node, rng);
                if self.full.len() < self.passive_cap {
                    self.full.push(from);
                }
            }
            (false, _) => self.passive.retain(|n| n.id != from),
            _ => {}
        }
        // The gap is filled at the next repair, not at once: a refusal
        // answered by an immediate retry would churn.
    }

    fn on_shuffle(
        &mut self,
        from: NodeId,
        ttl: u8,
        origin: NodeAddr,
        nodes: Vec<NodeAddr>,
        rng: &mut Rng,
        out: &mut VecDeque<OutEvent>,
    ) {
        if origin.id == self.me.id || !valid_addr(&origin.addr) {
            return;
        }
        let ttl = ttl.min(self.active_walk);
        if ttl > 0 && self.active.len() > 1 {
            let next: Vec<NodeId> =
                self.active.iter().map(|n| n.id).filter(|id| *id != from && *id != origin.id).collect();
            if let Some(&to) = rng.pick(&next) {
                return Self::send(to, SwarmFrame::Shuffle { ttl: ttl - 1, origin, nodes }, out);
            }
        }
        let reply = rng.sample(&self.passive, nodes.len());
        if self.links.contains_key(&origin.id) {
            Self::send(origin.id, SwarmFrame::ShuffleReply { nodes: reply.clone() }, out);
        } else {
            self.dial(origin.addr, Purpose::ShuffleReply(reply.clone()), out);
        }
        self.shuffled = reply;
        self.integrate(nodes, rng);
    }

    /// Sends a sample of both views on a random walk (the shuffle timer).
    pub(crate) fn shuffle(&mut self, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if self.left {
            return;
        }
        out.push_back(OutEvent::ScheduleTimer { after: self.shuffle_period, timer: Timer::Shuffle });
        self.full.clear();
        self.send_shuffle(rng, out);
    }

    fn send_shuffle(&mut self, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        let Some(&to) = rng.pick(&self.active) else { return };
        let others: Vec<NodeAddr> = self.active.iter().filter(|n| n.id != to.id).copied().collect();
        let mut nodes = rng.sample(&others, self.shuffle_active);
        nodes.extend(rng.sample(&self.passive, self.shuffle_passive));
        self.shuffled = nodes.clone();
        nodes.push(self.me);
        Self::send(to.id, SwarmFrame::Shuffle { ttl: self.active_walk, origin: self.me, nodes }, out);
    }

    /// The repair timer: rejoin through the seeds when alone, top the active
    /// view up, and close links that outlived their purpose.
    pub(crate) fn repair(&mut self, now: Instant, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if self.left {
            return;
        }
        out.push_back(OutEvent::ScheduleTimer { after: self.repair_period, timer: Timer::Repair });
        for d in self.dialing.values_mut() {
            d.seen.get_or_insert(now);
        }
        for (_, seen) in &mut self.asking {
            seen.get_or_insert(now);
        }
        self.asking.retain(|(_, seen)| seen.is_none_or(|t| now.saturating_duration_since(t) < DIAL_EXPIRY));
        if self.asking.is_empty() {
            // Asks are rare once the view is full: their storage is not
            // kept past them (a node's state is counted in bytes).
            self.asking = Vec::new();
        }
        self.admitted.retain(|_, (since, _)| now.saturating_duration_since(*since) < ADMIT_WINDOW);
        let expired: Vec<SocketAddr> = self
            .dialing
            .iter()
            .filter(|(_, d)| d.seen.is_some_and(|t| now.saturating_duration_since(t) >= DIAL_EXPIRY))
            .map(|(a, _)| *a)
            .collect();
        for addr in expired {
            self.dial_failed(addr, rng, out);
        }
        if self.active.is_empty() && self.passive.is_empty() {
            out.push_back(OutEvent::Event(SwarmEvent::Alone));
            for seed in self.seeds.clone() {
                self.dial(seed, Purpose::Join, out);
            }
        } else if self.active.len() < self.active_cap && self.passive.is_empty() {
            // Room, and no one known to fill it with: learn some now rather
            // than at the next periodic shuffle (a small cluster becomes a
            // full mesh within a few repairs).
            self.send_shuffle(rng, out);
        } else {
            self.fill(rng, out);
        }
        let idle: Vec<NodeId> = self
            .links
            .iter()
            .filter(|(id, link)| !self.is_active(id) && now.saturating_duration_since(link.since) >= self.link_grace)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.links.remove(&id);
            out.push_back(OutEvent::Disconnect(id));
        }
    }

    /// The probe timer: dials one lost active peer. A crashed one fails the
    /// dial; one behind a partition that healed links again, which is how
    /// two halves of a split overlay merge (HyParView alone keeps each half
    /// to itself: failed dials purge the far half from the passive views).
    pub(crate) fn probe(&mut self, now: Instant, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if self.left {
            return;
        }
        out.push_back(OutEvent::ScheduleTimer { after: self.probe_period, timer: Timer::Probe });
        self.lost.retain(|(n, until)| *until > now && !self.links.contains_key(&n.id));
        if let Some(&(node, _)) = rng.pick(&self.lost) {
            self.dial(node.addr, Purpose::Probe, out);
        }
    }

    /// Tells every active peer this node leaves, closes every link, and
    /// stops: no repair, probe, shuffle or join after it.
    pub(crate) fn leave(&mut self, out: &mut VecDeque<OutEvent>) {
        self.left = true;
        for peer in std::mem::take(&mut self.active) {
            Self::send(peer.id, SwarmFrame::Disconnect { alive: false }, out);
            out.push_back(OutEvent::Event(SwarmEvent::NeighborDown(peer.id)));
        }
        for id in std::mem::take(&mut self.links).into_keys() {
            out.push_back(OutEvent::Disconnect(id));
        }
        self.seeds.clear();
        self.passive.clear();
        self.lost.clear();
        self.dialing.clear();
    }

    /// Promotes a random passive peer when the active view has room and no
    /// promotion is in flight.
    fn fill(&mut self, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        let room = self.active_cap.saturating_sub(self.active.len());
        // Alone, we ask with high priority, which no one may refuse (peers
        // that were full are asked too). Below half the view, as many at
        // once as there is room: some may be dead or behind a partition,
        // and each of those costs a dial timeout. Otherwise one at a time,
        // which keeps the churn of refusals low.
        let alone = self.active.is_empty();
        let in_flight = self.asking.len()
            + self.dialing.values().flat_map(|d| &d.purposes).filter(|p| matches!(p, Purpose::Neighbor(_))).count();
        let short = self.active.len() * 2 < self.active_cap;
        let wanted = if short { room } else { room.min(1) }.saturating_sub(in_flight);
        let candidates: Vec<NodeAddr> = self
            .passive
            .iter()
            .filter(|n| {
                (alone || !self.full.contains(&n.id))
                    && !self.dialing.contains_key(&n.addr)
                    && !self.asking.iter().any(|(id, _)| *id == n.id)
            })
            .copied()
            .collect();
        let priority = if alone { Priority::High } else { Priority::Low };
        for node in rng.sample(&candidates, wanted) {
            self.neighbor(node, priority, rng, out);
        }
    }

    /// Takes `node` into the active view (high priority), or asks it to
    /// take this node in (low: it enters the view when it accepts),
    /// dialing it first if not linked.
    fn neighbor(&mut self, node: NodeAddr, priority: Priority, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if !self.links.contains_key(&node.id) {
            self.dial(node.addr, Purpose::Neighbor(priority), out);
        } else if priority == Priority::High {
            self.add_active(node, priority, rng, out);
        } else if !self.is_active(&node.id) && !self.asking.iter().any(|(id, _)| *id == node.id) {
            self.asking.push((node.id, None));
            Self::send(node.id, SwarmFrame::Neighbor { priority }, out);
        }
    }

    /// Adds a linked peer to the active view (evicting a random one when
    /// full) and asks it to do the same.
    fn add_active(&mut self, node: NodeAddr, priority: Priority, rng: &mut Rng, out: &mut VecDeque<OutEvent>) {
        if node.id == self.me.id || self.is_active(&node.id) {
            return;
        }
        if self.active.len() >= self.active_cap {
            let evicted = self.active.remove(rng.below(self.active.len()));
            Self::send(evicted.id, SwarmFrame::Disconnect { alive: true }, out);
            out.push_back(OutEvent::Disconnect(evicted.id));
            out.push_back(OutEvent::Event(SwarmEvent::NeighborDown(evicted.id)));
            self.add_passive(evicted, rng);
        }
        self.take_in(node, out);
        Self::send(node.id, SwarmFrame::Neighbor { priority }, out);
    }

    /// Puts `node` in the active view (there is room).
    fn take_in(&mut self, node: NodeAddr, out: &mut VecDeque<OutEvent>) {
        self.passive.retain(|n| n.id != node.id);
        self.active.push(node);
        out.push_back(OutEvent::Event(SwarmEvent::NeighborUp(node)));
    }

    fn remove_active(&mut self, peer: NodeId, out: &mut VecDeque<OutEvent>) -> bool {
        let before = self.active.len();
        self.active.retain(|n| n.id != peer);
        let removed = self.active.len() < before;
        if removed {
            out.push_back(OutEvent::Event(SwarmEvent::NeighborDown(peer)));
        }
        removed
    }

    fn add_passive(&mut self, node: NodeAddr, rng: &mut Rng) {
        if node.id == self.me.id
            || !valid_addr(&node.addr)
            || self.is_active(&node.id)
            || self.passive.iter().any(|n| n.id == node.id)
            || self.passive_cap == 0
        {
            return;
        }
        if self.passive.len() >= self.passive_cap {
            // Room is made from what we sent in the last shuffle first.
            let at = self
                .passive
                .iter()
                .position(|n| self.shuffled.iter().any(|s| s.id == n.id))
                .unwrap_or_else(|| rng.below(self.passive.len()));
            self.passive.swap_remove(at);
        }
        self.passive.push(node);
    }

    fn integrate(&mut self, nodes: Vec<NodeAddr>, rng: &mut Rng) {
        for node in nodes.into_iter().take(SwarmFrame::MAX_NODES) {
            self.add_passive(node, rng);
        }
    }
}

/// An address a learned node may be dialed at: not unspecified, not
/// multicast or broadcast, port not 0. (A forged address can still name a
/// third party; dials are bounded by `MAX_DIALING` and the repair period.)
fn valid_addr(addr: &SocketAddr) -> bool {
    let ip = addr.ip();
    addr.port() != 0
        && !ip.is_unspecified()
        && !ip.is_multicast()
        && !matches!(ip, core::net::IpAddr::V4(v4) if v4.is_broadcast())
}
