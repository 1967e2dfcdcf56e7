//! [`Swarm`]: membership and broadcast behind one `handle(event, now)`.

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use oap_codec::{Msg, MsgId, NodeAddr, NodeId, Pattern, SwarmFrame};

use crate::broadcast::Broadcast;
use crate::config::Config;
use crate::membership::Membership;
use crate::rng::Rng;

/// Actions whose storage a swarm keeps between two events.
const KEEP_ACTIONS: usize = 32;

/// What happens to a swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InEvent {
    /// Join through the node at this address (a seed). Seeds are kept: a
    /// node whose active view empties joins through them again.
    Join(SocketAddr),
    /// Forget a seed given by `Join`: no rejoin through it; it leaves the
    /// passive view, and the active view (told `DISCONNECT`, its link
    /// closed, not probed as lost).
    Forget(SocketAddr),
    /// A link to `node` is up: the identity exchange is done, and the link
    /// won the simultaneous-dial rule ([`keeps_dial_of`]). `dialed` is the
    /// address this node dialed, when it dialed the link.
    LinkUp {
        /// The peer, as its `NODE` frame said.
        node: NodeAddr,
        /// The address dialed, if this node dialed.
        dialed: Option<SocketAddr>,
    },
    /// The link to this peer is down.
    LinkDown(NodeId),
    /// The link to this peer may carry only these topics (its relay grant
    /// names them; empty: every topic, the default). Such a link stays out
    /// of every broadcast tree: it is sent `IHAVE`s for the messages it may
    /// carry, and answered `GRAFT`s for those only, so the tree is built
    /// over links that carry everything and a restriction never cuts the
    /// nodes behind a link off from the topics it does not carry.
    Restrict {
        /// The peer.
        peer: NodeId,
        /// What the link may carry.
        topics: Vec<Pattern>,
    },
    /// A dial to this address failed (refused, timed out, wrong identity).
    DialFailed(SocketAddr),
    /// A swarm frame arrived from a linked peer.
    Recv {
        /// The sender.
        from: NodeId,
        /// The frame.
        frame: SwarmFrame,
    },
    /// A `MSG` arrived from a linked peer.
    Message {
        /// The sender.
        from: NodeId,
        /// The message, with the hops it took to get here.
        msg: Msg,
    },
    /// A peer sent back a message this node published (checked by the
    /// driver against what it issued, so neither delivered nor relayed):
    /// a duplicate, whose link leaves this node's own tree.
    Echo {
        /// The sender.
        from: NodeId,
        /// The message's id.
        id: MsgId,
    },
    /// A message was published on this node (its local subscribers have it).
    Publish(Msg),
    /// A timer the swarm scheduled is due.
    Timer(Timer),
    /// This node's own subscriptions now (local subscribers and in-process
    /// ones; `None`: every topic, the default). The swarm tells its tree
    /// neighbours what is reachable through it, and sends a payload or an
    /// `IHAVE` only to neighbours whose summary matches the topic.
    Interest(Option<Vec<Pattern>>),
    /// Leave the swarm: every active peer is told (`DISCONNECT`).
    Leave,
}

/// What the swarm asks of its driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutEvent {
    /// Send a swarm frame to a linked peer.
    Send {
        /// The peer.
        to: NodeId,
        /// The frame.
        frame: SwarmFrame,
    },
    /// Send a message as a `MSG` frame (its hops already counted).
    SendMsg {
        /// The peer.
        to: NodeId,
        /// The message.
        msg: Msg,
        /// Sent because the peer's interest summary is not known or says
        /// every topic (a node that wants every topic, a new link), not
        /// because a summary matched or the peer asked for it.
        flood: bool,
    },
    /// Deliver a message that arrived from the swarm to local subscribers.
    Deliver(Msg),
    /// Open a link to this address (then report `LinkUp` or `DialFailed`).
    Dial(SocketAddr),
    /// Close the link to this peer once what was sent to it is written.
    Disconnect(NodeId),
    /// Fire `timer` after this long.
    ScheduleTimer {
        /// The delay.
        after: Duration,
        /// The timer.
        timer: Timer,
    },
    /// Something an operator or the node wants to know.
    Event(SwarmEvent),
}

/// Membership changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmEvent {
    /// A peer entered the active view.
    NeighborUp(NodeAddr),
    /// A peer left the active view.
    NeighborDown(NodeId),
    /// The node knows no one (both views empty) and rejoins through its
    /// seeds; a driver whose seeds are names resolves them again now.
    Alone,
}

/// The swarm's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Shuffle the passive view with a random walk's end.
    Shuffle,
    /// Top the active view up, rejoin through the seeds when it is empty,
    /// close links outside it.
    Repair,
    /// Dial an active peer lost to a failure (partition healing).
    Probe,
    /// Send the queued `IHAVE`s.
    IHave,
    /// Ask for a message announced but not received.
    Graft(MsgId),
    /// Send the interest summaries that changed.
    Interest,
}

/// Bytes the `GRAFT` cache holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUsage {
    /// Payload bytes (what `cache_bytes` bounds).
    pub payload: usize,
    /// The storage of its entries, from their capacity.
    pub entries: usize,
}

/// Counts since the swarm started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered from the swarm (first copies).
    pub delivered: u64,
    /// Copies of messages already seen.
    pub duplicates: u64,
    /// `MSG` frames sent.
    pub payload_sent: u64,
    /// Of those, sent to a peer whose summary is not known or says every
    /// topic (the rest went where a summary matched, or answered a
    /// `GRAFT`).
    pub payload_flood: u64,
    /// `INTEREST` frames sent.
    pub interest_sent: u64,
    /// The largest summary computed, in bytes of patterns on the wire.
    pub max_summary_bytes: u64,
    /// Swarm frames sent.
    pub control_sent: u64,
    /// `GRAFT`s sent.
    pub grafts: u64,
    /// `PRUNE`s sent.
    pub prunes: u64,
    /// Messages not relayed further because they reached `max_hops`.
    pub hop_limited: u64,
    /// GRAFTs not answered: the peer asked for more than 4,096 a second.
    pub grafts_refused: u64,
    /// `JOIN`s and `NEIGHBOR`s refused: the peer asked to enter the active
    /// view more than 4 times in 10 s, or more than 1,024 peers asked
    /// within 10 s.
    pub admissions_refused: u64,
}

/// Which node's dial survives when two nodes dial each other at once: the
/// one with the smaller id. Both sides compute it alike, so they close the
/// same connection.
pub fn keeps_dial_of(a: NodeId, b: NodeId) -> NodeId {
    a.min(b)
}

/// One node's view of the swarm.
pub struct Swarm {
    membership: Membership,
    broadcast: Broadcast,
    rng: Rng,
    out: VecDeque<OutEvent>,
    started: bool,
    config: Config,
}

impl Swarm {
    /// A node `me` that knows no one yet; `seed` fixes its random choices.
    pub fn new(me: NodeAddr, config: Config, seed: u64) -> Swarm {
        Swarm {
            membership: Membership::new(me, &config),
            broadcast: Broadcast::new(&config),
            rng: Rng::new(seed),
            out: VecDeque::new(),
            started: false,
            config,
        }
    }

    /// This node.
    pub fn me(&self) -> &NodeAddr {
        self.membership.me()
    }

    /// The active view: linked peers that carry the broadcast.
    pub fn active(&self) -> &[NodeAddr] {
        self.membership.active()
    }

    /// The seeds it joins through (given by `Join`, not forgotten).
    pub fn seeds(&self) -> &[SocketAddr] {
        self.membership.seeds()
    }

    /// The passive view: known addresses to replace lost active peers.
    pub fn passive(&self) -> &[NodeAddr] {
        self.membership.passive()
    }

    /// Peers a message with this id is pushed to: its origin's tree edges
    /// here (every active peer for an origin not heard from yet).
    pub fn eager(&self, id: &MsgId) -> Vec<NodeId> {
        self.broadcast.eager(id)
    }

    /// Active links that are a tree child here with no summary from them
    /// yet (everything is sent over them).
    pub fn flood_edges(&self) -> usize {
        self.broadcast.flood_edges()
    }

    /// What the `GRAFT` cache holds.
    pub fn cache_usage(&self) -> CacheUsage {
        self.broadcast.cache_usage()
    }

    /// Counts since the swarm started.
    pub fn stats(&self) -> Stats {
        Stats { admissions_refused: self.membership.refused, ..self.broadcast.stats }
    }

    /// Handles one event at `now`; returns what to do, in order.
    pub fn handle(&mut self, event: InEvent, now: Instant) -> impl Iterator<Item = OutEvent> + '_ {
        // A burst (a join answered, a flush of IHAVEs) may have grown the
        // action queue: its storage is not kept past it.
        if self.out.capacity() > KEEP_ACTIONS {
            self.out = VecDeque::new();
        }
        if !self.started {
            self.started = true;
            let c = &self.config;
            self.out.push_back(OutEvent::ScheduleTimer { after: c.repair_period, timer: Timer::Repair });
            self.out.push_back(OutEvent::ScheduleTimer { after: c.shuffle_period, timer: Timer::Shuffle });
            self.out.push_back(OutEvent::ScheduleTimer { after: c.probe_period, timer: Timer::Probe });
        }
        let from = self.out.len();
        let (m, b, rng, out) = (&mut self.membership, &mut self.broadcast, &mut self.rng, &mut self.out);
        match event {
            InEvent::Join(seed) => m.join(seed, out),
            InEvent::Forget(seed) => m.forget(seed, rng, out),
            InEvent::LinkUp { node, dialed } => m.link_up(node, dialed, now, rng, out),
            InEvent::LinkDown(peer) => {
                b.restrict(peer, Vec::new());
                m.link_down(peer, now, rng, out)
            }
            InEvent::Restrict { peer, topics } if m.is_linked(&peer) => b.restrict(peer, topics),
            InEvent::Restrict { .. } => {}
            InEvent::DialFailed(addr) => m.dial_failed(addr, rng, out),
            InEvent::Recv { from, frame } => match frame {
                SwarmFrame::IHave(ids) => b.on_ihave(from, ids, out),
                SwarmFrame::Graft(id) => b.on_graft(from, id, now, out),
                SwarmFrame::Prune(id) => b.on_prune(from, id, now),
                SwarmFrame::Interest { origins, patterns, parent } => {
                    b.on_interest(from, origins, patterns, parent, now)
                }
                frame => m.on_frame(from, frame, now, rng, out),
            },
            InEvent::Message { from, msg } => b.on_message(Some(from), msg, now, out),
            InEvent::Publish(msg) => b.on_message(None, msg, now, out),
            InEvent::Echo { from, id } => b.duplicate(from, id, now, out),
            InEvent::Timer(Timer::Shuffle) => m.shuffle(rng, out),
            InEvent::Timer(Timer::Repair) => m.repair(now, rng, out),
            InEvent::Timer(Timer::Probe) => m.probe(now, rng, out),
            InEvent::Timer(Timer::IHave) => b.flush_ihaves(out),
            InEvent::Timer(Timer::Graft(id)) => b.on_graft_timer(id, now, out),
            InEvent::Timer(Timer::Interest) => b.flush_interest(now, out),
            InEvent::Interest(patterns) => b.set_local(patterns),
            InEvent::Leave => m.leave(out),
        }
        // Membership changes shape the tree: a new active peer is eager
        // until a duplicate prunes it, a lost one leaves both sets.
        let changes: Vec<(NodeId, bool)> = self
            .out
            .range(from..)
            .filter_map(|o| match o {
                OutEvent::Event(SwarmEvent::NeighborUp(n)) => Some((n.id, true)),
                OutEvent::Event(SwarmEvent::NeighborDown(id)) => Some((*id, false)),
                _ => None,
            })
            .collect();
        for (peer, up) in changes {
            if up {
                self.broadcast.neighbor_up(peer);
            } else {
                self.broadcast.neighbor_down(peer);
            }
        }
        self.broadcast.arm_interest(now, &mut self.out);
        let sent = self.out.range(from..).filter(|o| matches!(o, OutEvent::Send { .. })).count();
        self.broadcast.stats.control_sent += sent as u64;
        self.out.drain(..)
    }
}
