//! PlumTree (Leitao, Pereira, Rodrigues, SRDS 2007): a message is pushed
//! eagerly along a spanning tree of the active links and announced lazily
//! (`IHAVE`, batched) over the rest. A node missing an announced message
//! asks for it (`GRAFT`), which adds the link to the tree; a link that
//! brings a duplicate leaves the tree (`PRUNE`).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use oap_codec::{IHave, Msg, MsgId, NodeId, SwarmFrame};

use crate::config::Config;
use crate::swarm::{CacheUsage, OutEvent, Stats, Timer};

/// A map with a fixed hasher: lookups only, never iterated, so a
/// simulation does not depend on a per-process random seed.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// `IHAVE` entries queued per lazy peer at most (older ones are dropped;
/// the peer still gets the message through the tree or a later `IHAVE`).
const MAX_QUEUED_IHAVES: usize = 4 * 1024;

pub(crate) struct Broadcast {
    eager: BTreeSet<NodeId>,
    lazy: BTreeSet<NodeId>,
    /// Ids already received (or published here).
    seen: Map<MsgId, ()>,
    seen_order: VecDeque<(Instant, MsgId)>,
    seen_cap: usize,
    seen_ttl: Duration,
    /// Payloads kept to answer `GRAFT`s, bounded in bytes and time.
    cache: Map<MsgId, Msg>,
    cache_order: VecDeque<(Instant, MsgId)>,
    cache_bytes: usize,
    cache_cap: usize,
    cache_ttl: Duration,
    /// Announced but not received: who announced it, first to last.
    missing: Map<MsgId, VecDeque<(NodeId, u8)>>,
    max_missing: usize,
    /// `IHAVE`s waiting for the next batch, per lazy peer.
    ihaves: BTreeMap<NodeId, Vec<IHave>>,
    ihave_armed: bool,
    ihave_interval: Duration,
    graft_timeout: Duration,
    graft_retry: Duration,
    max_hops: u8,
    pub(crate) stats: Stats,
}

impl Broadcast {
    pub(crate) fn new(c: &Config) -> Broadcast {
        Broadcast {
            eager: BTreeSet::new(),
            lazy: BTreeSet::new(),
            seen: Map::default(),
            seen_order: VecDeque::new(),
            seen_cap: c.seen_cache,
            seen_ttl: c.seen_ttl,
            cache: Map::default(),
            cache_order: VecDeque::new(),
            cache_bytes: 0,
            cache_cap: c.cache_bytes,
            cache_ttl: c.cache_ttl,
            missing: Map::default(),
            max_missing: c.max_missing,
            ihaves: BTreeMap::new(),
            ihave_armed: false,
            ihave_interval: c.ihave_interval,
            graft_timeout: c.graft_timeout,
            graft_retry: c.graft_retry,
            max_hops: c.max_hops,
            stats: Stats::default(),
        }
    }

    /// What the GRAFT cache holds.
    pub(crate) fn cache_usage(&self) -> CacheUsage {
        let entries = self.cache.capacity() * (std::mem::size_of::<(MsgId, Msg)>() + 1)
            + self.cache_order.capacity() * std::mem::size_of::<(Instant, MsgId)>();
        CacheUsage { payload: self.cache_bytes, entries }
    }

    pub(crate) fn eager(&self) -> impl Iterator<Item = &NodeId> {
        self.eager.iter()
    }

    pub(crate) fn neighbor_up(&mut self, peer: NodeId) {
        self.lazy.remove(&peer);
        self.eager.insert(peer);
    }

    pub(crate) fn neighbor_down(&mut self, peer: NodeId) {
        self.eager.remove(&peer);
        self.lazy.remove(&peer);
        self.ihaves.remove(&peer);
    }

    fn is_active(&self, peer: &NodeId) -> bool {
        self.eager.contains(peer) || self.lazy.contains(peer)
    }

    /// A message from a peer (`from`), or published here (`None`).
    pub(crate) fn on_message(&mut self, from: Option<NodeId>, msg: Msg, now: Instant, out: &mut VecDeque<OutEvent>) {
        if self.seen.contains_key(&msg.msg_id) {
            if let Some(peer) = from {
                self.stats.duplicates += 1;
                // A second path to us: this link leaves the tree.
                if self.eager.remove(&peer) {
                    self.lazy.insert(peer);
                    self.stats.prunes += 1;
                    out.push_back(OutEvent::Send { to: peer, frame: SwarmFrame::Prune });
                }
            }
            return;
        }
        self.remember(msg.msg_id, now);
        if let Some(peer) = from {
            self.stats.delivered += 1;
            out.push_back(OutEvent::Deliver(msg.clone()));
            // The link the first copy came over is a tree edge.
            if self.lazy.remove(&peer) {
                self.eager.insert(peer);
            }
            // Announcements of it need no GRAFT any more. (PlumTree's
            // optimisation, re-rooting the tree through an announcer with
            // fewer hops, is left out: with one shared tree and publishers
            // anywhere, "fewer hops" depends on the publisher, and in the
            // simulator it raised RMR with random publishers from 0.41 to
            // 0.64 at 1,000 nodes.)
            self.missing.remove(&msg.msg_id);
        }
        // The seen-cache stops loops; `max_hops` bounds how deep a payload is
        // pushed. At the bound the message is still announced to every other
        // active peer, so a node behind it asks for it (GRAFT) instead of
        // missing it: delivery stays exactly once at any depth.
        let at_bound = msg.hops >= self.max_hops;
        if at_bound {
            self.stats.hop_limited += 1;
        } else {
            let next = Msg { hops: msg.hops + 1, ..msg.clone() };
            for &peer in self.eager.iter().filter(|p| Some(**p) != from) {
                self.stats.payload_sent += 1;
                out.push_back(OutEvent::SendMsg { to: peer, msg: next.clone() });
            }
        }
        let announce = if at_bound { &self.eager | &self.lazy } else { self.lazy.clone() };
        for peer in announce.into_iter().filter(|p| Some(*p) != from) {
            self.queue_ihave(peer, IHave { msg_id: msg.msg_id, hops: msg.hops }, out);
        }
        self.keep(msg, now);
    }

    fn queue_ihave(&mut self, peer: NodeId, ihave: IHave, out: &mut VecDeque<OutEvent>) {
        let queued = self.ihaves.entry(peer).or_default();
        if queued.len() >= MAX_QUEUED_IHAVES {
            queued.remove(0);
        }
        queued.push(ihave);
        if !self.ihave_armed {
            self.ihave_armed = true;
            out.push_back(OutEvent::ScheduleTimer { after: self.ihave_interval, timer: Timer::IHave });
        }
    }

    /// Sends the queued `IHAVE`s, one batch per lazy peer.
    pub(crate) fn flush_ihaves(&mut self, out: &mut VecDeque<OutEvent>) {
        self.ihave_armed = false;
        for (peer, ids) in std::mem::take(&mut self.ihaves) {
            for chunk in ids.chunks(SwarmFrame::MAX_IHAVE) {
                out.push_back(OutEvent::Send { to: peer, frame: SwarmFrame::IHave(chunk.to_vec()) });
            }
        }
    }

    pub(crate) fn on_ihave(&mut self, from: NodeId, ids: Vec<IHave>, out: &mut VecDeque<OutEvent>) {
        if !self.is_active(&from) {
            return;
        }
        for IHave { msg_id, hops } in ids {
            if self.seen.contains_key(&msg_id) {
                continue;
            }
            let room = self.missing.len() < self.max_missing;
            match self.missing.get_mut(&msg_id) {
                Some(announcers)
                    if announcers.len() < 2 * crate::membership::MAX_ACTIVE
                        && !announcers.iter().any(|(p, _)| *p == from) =>
                {
                    announcers.push_back((from, hops));
                }
                Some(_) => {}
                None if room => {
                    self.missing.insert(msg_id, VecDeque::from([(from, hops)]));
                    out.push_back(OutEvent::ScheduleTimer { after: self.graft_timeout, timer: Timer::Graft(msg_id) });
                }
                None => {}
            }
        }
    }

    /// An announced message did not arrive in time: ask the next announcer.
    pub(crate) fn on_graft_timer(&mut self, id: MsgId, out: &mut VecDeque<OutEvent>) {
        if self.seen.contains_key(&id) {
            self.missing.remove(&id);
            return;
        }
        let Some(announcers) = self.missing.get_mut(&id) else { return };
        let next = std::iter::from_fn(|| announcers.pop_front())
            .find(|(p, _)| self.eager.contains(p) || self.lazy.contains(p));
        let more = !announcers.is_empty();
        if !more {
            self.missing.remove(&id);
        }
        if let Some((peer, _)) = next {
            self.neighbor_up(peer);
            self.stats.grafts += 1;
            out.push_back(OutEvent::Send { to: peer, frame: SwarmFrame::Graft(Some(id)) });
            if more {
                out.push_back(OutEvent::ScheduleTimer { after: self.graft_retry, timer: Timer::Graft(id) });
            }
        }
    }

    pub(crate) fn on_graft(&mut self, from: NodeId, id: Option<MsgId>, out: &mut VecDeque<OutEvent>) {
        // A peer that just left our active view (its view and ours can
        // differ for a round trip) still gets what we announced to it; only
        // an active one joins the tree.
        if self.is_active(&from) {
            self.neighbor_up(from);
        }
        if let Some(msg) = id.and_then(|id| self.cache.get(&id)) {
            self.stats.payload_sent += 1;
            out.push_back(OutEvent::SendMsg { to: from, msg: Msg { hops: msg.hops.saturating_add(1), ..msg.clone() } });
        }
    }

    pub(crate) fn on_prune(&mut self, from: NodeId) {
        if self.eager.remove(&from) {
            self.lazy.insert(from);
        }
    }

    fn remember(&mut self, id: MsgId, now: Instant) {
        while let Some(&(at, old)) = self.seen_order.front()
            && (at <= now || self.seen_order.len() >= self.seen_cap)
        {
            self.seen_order.pop_front();
            self.seen.remove(&old);
        }
        self.seen.insert(id, ());
        self.seen_order.push_back((now + self.seen_ttl, id));
    }

    fn keep(&mut self, msg: Msg, now: Instant) {
        let len = msg.payload.len();
        if len > self.cache_cap || self.cache.contains_key(&msg.msg_id) {
            return;
        }
        // Bounded in bytes, and in entries too (empty payloads cost no bytes).
        while let Some(&(at, old)) = self.cache_order.front()
            && (at <= now || self.cache_bytes + len > self.cache_cap || self.cache_order.len() >= self.seen_cap)
        {
            self.cache_order.pop_front();
            if let Some(gone) = self.cache.remove(&old) {
                self.cache_bytes -= gone.payload.len();
            }
        }
        self.cache_bytes += len;
        self.cache_order.push_back((now + self.cache_ttl, msg.msg_id));
        self.cache.insert(msg.msg_id, msg);
    }
}
