//! PlumTree (Leitao, Pereira, Rodrigues, SRDS 2007): a message is pushed
//! eagerly along a spanning tree of the active links and announced lazily
//! (`IHAVE`, batched) over the rest. A node missing an announced message
//! asks for it (`GRAFT`), which adds the link to the tree; a link that
//! brings a duplicate leaves the tree (`PRUNE`).
//!
//! One tree per origin (the paper's per-sender variant), not one shared by
//! every publisher: with a shared tree, copies of different publishers'
//! messages cross in flight, each side prunes the link it saw a duplicate
//! on, and a node can be pruned by every neighbour at once and then hear of
//! everything a GRAFT timeout late (in the simulator, 3 publishers 20 ms
//! apart on 10 nodes kept 1.3-1.6 payload sends per delivery and 2-3
//! GRAFTs per message, against 1.00 and none with one publisher). Each
//! origin's tree is the first-arrival tree of its own messages, so it
//! settles whatever the others do. A new origin's tree starts as a copy of
//! a shared one, which every prune and graft also shapes (so a publisher
//! heard from once costs no more than with one shared tree: 0.45 payload
//! sends per delivery beyond one with 200 random publishers on 1,000 nodes,
//! where starting from a flood cost 2.6). A tree costs a 64-bit mask of
//! pruned links (a slot per active peer) and its last use; the least
//! recently used is forgotten past a bound (its next message starts again
//! from the shared tree).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::time::{Duration, Instant};

use oap_codec::{IHave, Msg, MsgId, NodeId, ORIGIN_LEN, Pattern, SwarmFrame, Topic};

use crate::config::Config;
use crate::swarm::{CacheUsage, OutEvent, Stats, Timer};

mod interest;

use interest::{Route, Summary};

/// A map with a fixed hasher: lookups only, never iterated, so a
/// simulation does not depend on a per-process random seed.
type Map<K, V> = HashMap<K, V, BuildHasherDefault<DefaultHasher>>;

/// `IHAVE` entries queued per lazy peer at most (older ones are dropped;
/// the peer still gets the message through the tree or a later `IHAVE`).
const MAX_QUEUED_IHAVES: usize = 4 * 1024;
/// Origins whose tree is kept at most.
const MAX_TREES: usize = 1024;
/// Cached messages sent per second to one peer in answer to its GRAFTs at
/// most: a 17-byte GRAFT can ask for a message of up to 1 MiB, so a peer
/// must not turn the cache into a firehose. Trees repair with a few per
/// message; past the bound the peer still hears of the message by IHAVE.
const GRAFT_REPLIES_PER_SEC: u32 = 4096;
/// Peers whose GRAFT replies are counted at most (past it, the windows
/// that ended are forgotten).
const MAX_GRAFTERS: usize = 128;
type Origin = [u8; ORIGIN_LEN];

/// One origin's broadcast tree here: which active links are out of it,
/// and what is reachable through each (the `interest` module).
struct Tree {
    /// Bit `s` set: the active peer in slot `s` is lazy for this origin.
    pruned: u64,
    last: Instant,
    /// The slot the latest first copy came over: this node's parent.
    up: Option<u8>,
    /// Summaries heard, per slot (a slot absent: not known, so every
    /// topic goes to it).
    heard: Vec<(u8, Summary)>,
    /// Summaries told, per slot (absent: none, or every topic).
    told: Vec<(u8, Summary)>,
    /// Slots last told they are this node's parent here (its parent, or
    /// while it has none, the peers it asked to take it in).
    told_parent: u64,
    /// With no parent: the peers asked to take it in.
    asking: u64,
    /// Slots that named this node their parent here (or asked to be taken
    /// in): its children, whose summaries its own includes.
    kids: u64,
    /// Slots whose summary goes out again even if unchanged.
    resend: u64,
    /// Its summary may have changed since the last batch.
    dirty: bool,
    /// The origin is this node (it has no parent here).
    own: bool,
    /// A copy of the origin's came here from a peer (a tree made for a
    /// peer's summary has not had one yet: nothing to look for a parent
    /// for).
    reached: bool,
    /// With no parent, when its peers were last asked to take this node in.
    asked: Option<Instant>,
}

impl Tree {
    fn new(pruned: u64, now: Instant) -> Tree {
        Tree {
            pruned,
            last: now,
            up: None,
            heard: Vec::new(),
            told: Vec::new(),
            told_parent: 0,
            asking: 0,
            kids: 0,
            resend: 0,
            dirty: false,
            own: false,
            reached: false,
            asked: None,
        }
    }
}

fn origin(id: &MsgId) -> Origin {
    let mut o = [0u8; ORIGIN_LEN];
    o.copy_from_slice(&id.0[..ORIGIN_LEN]);
    o
}

pub(crate) struct Broadcast {
    /// Active peers and their slots (bit positions in the trees' masks).
    active: BTreeMap<NodeId, u8>,
    /// GRAFT replies per peer in the current second: its start and count.
    served: Map<NodeId, (Instant, u32)>,
    /// Slots in use.
    slots: u64,
    /// Links that may carry only some topics (a relay grant's), linked or
    /// active: never in a tree, announced only what they may carry.
    restricted: BTreeMap<NodeId, Vec<Pattern>>,
    /// The active slots of restricted links.
    lazy_only: u64,
    trees: Map<Origin, Tree>,
    /// The shared tree a new origin's starts from: every prune and graft
    /// of any origin's tree applies here too, so an origin heard from once
    /// (a random publisher) costs what one shared tree costs.
    shared: u64,
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
    /// This node's own subscriptions.
    local: Summary,
    /// Trees forgotten whose summary a peer holds: it is told every topic.
    withdrawn: Vec<(NodeId, Origin)>,
    /// Summaries to send: a batch is due.
    interest_due: bool,
    /// Each active peer's default summary: its own subscriptions, which
    /// count for the trees it holds none of (a new node).
    defaults: BTreeMap<u8, Summary>,
    /// Slots this node's default is due to.
    default_due: u64,
    interest_armed: bool,
    /// Something this node wants, or a child wants, is new: its summaries
    /// go out at once rather than with the next batch (a subscription
    /// should take effect across the overlay as soon as it can; a
    /// narrowing waits, so summaries cannot chase each other round).
    widened: bool,
    pub(crate) stats: Stats,
}

impl Broadcast {
    pub(crate) fn new(c: &Config) -> Broadcast {
        Broadcast {
            active: BTreeMap::new(),
            served: Map::default(),
            slots: 0,
            restricted: BTreeMap::new(),
            lazy_only: 0,
            trees: Map::default(),
            shared: 0,
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
            local: Summary::All,
            withdrawn: Vec::new(),
            interest_due: false,
            defaults: BTreeMap::new(),
            default_due: 0,
            interest_armed: false,
            widened: false,
            stats: Stats::default(),
        }
    }

    /// What the GRAFT cache holds.
    pub(crate) fn cache_usage(&self) -> CacheUsage {
        let entries = self.cache.capacity() * (std::mem::size_of::<(MsgId, Msg)>() + 1)
            + self.cache_order.capacity() * std::mem::size_of::<(Instant, MsgId)>();
        CacheUsage { payload: self.cache_bytes, entries }
    }

    /// Peers a message of `id`'s origin is pushed to.
    pub(crate) fn eager(&self, id: &MsgId) -> Vec<NodeId> {
        let pruned = self.trees.get(&origin(id)).map_or(0, |t| t.pruned) | self.lazy_only;
        self.active.iter().filter(|(_, s)| pruned & (1 << **s) == 0).map(|(p, _)| *p).collect()
    }

    pub(crate) fn neighbor_up(&mut self, peer: NodeId) {
        if self.active.contains_key(&peer) || self.slots == u64::MAX {
            return; // (64 slots: more than any active view holds)
        }
        let slot = self.slots.trailing_ones() as u8;
        self.slots |= 1 << slot;
        // A new link is in every origin's tree until a duplicate prunes it
        // (the slot's bits were cleared when it was freed), unless it is
        // restricted.
        self.active.insert(peer, slot);
        if self.restricted.contains_key(&peer) {
            self.lazy_only |= 1 << slot;
        }
        // Sent everything until its summaries come (the `interest` module).
        self.linked(slot);
    }

    /// The link to `peer` may carry only `topics` (empty: every topic).
    pub(crate) fn restrict(&mut self, peer: NodeId, topics: Vec<Pattern>) {
        let slot = self.active.get(&peer).map_or(0, |s| 1 << s);
        let before = self.lazy_only;
        if topics.is_empty() {
            self.restricted.remove(&peer);
            self.lazy_only &= !slot;
        } else {
            self.restricted.insert(peer, topics);
            self.lazy_only |= slot;
        }
        if self.lazy_only != before {
            self.all_dirty();
        }
    }

    /// Whether the link to `peer` may carry `topic`: a grant's topic
    /// caveats narrow each other, so every one must match.
    fn carries(&self, peer: &NodeId, topic: &Topic) -> bool {
        self.restricted.get(peer).is_none_or(|topics| topics.iter().all(|p| p.matches(topic)))
    }

    pub(crate) fn neighbor_down(&mut self, peer: NodeId) {
        if let Some(slot) = self.active.remove(&peer) {
            self.slots &= !(1 << slot);
            self.lazy_only &= !(1 << slot);
            for tree in self.trees.values_mut() {
                tree.pruned &= !(1 << slot);
            }
            self.unlinked(slot);
            self.shared &= !(1 << slot);
        }
        self.ihaves.remove(&peer);
        self.withdrawn.retain(|(p, _)| *p != peer);
    }

    fn is_active(&self, peer: &NodeId) -> bool {
        self.active.contains_key(peer)
    }

    /// Takes `peer`'s link out of (`pruned`) or back into the tree of `id`'s
    /// origin, or of every origin (`None`); false for a peer not active.
    /// With `make`, an origin not heard from yet gets its tree (a message
    /// arrived); a peer's PRUNE or GRAFT only changes trees that exist, so
    /// made-up ids cannot push real trees out.
    fn set_pruned(&mut self, peer: NodeId, id: Option<MsgId>, pruned: bool, make: bool, now: Instant) -> bool {
        let Some(&slot) = self.active.get(&peer) else { return false };
        let bit = 1u64 << slot;
        // A link that changes sides changes the tree's summary.
        let mut changed = false;
        let mut set = |tree: &mut Tree| {
            let before = tree.pruned;
            if pruned {
                tree.pruned |= bit;
            } else {
                tree.pruned &= !bit;
            }
            if tree.pruned != before {
                // A parent pruned from the tree is a parent no more.
                if pruned && tree.up == Some(slot) {
                    tree.set_up(None);
                }
                tree.dirty = true;
                changed = true;
            }
        };
        match id {
            Some(id) if make => set(self.tree(origin(&id), now)),
            Some(id) => {
                if let Some(tree) = self.trees.get_mut(&origin(&id)) {
                    set(tree);
                }
            }
            None => self.trees.values_mut().for_each(set),
        }
        self.interest_due |= changed;
        if pruned {
            self.shared |= bit;
        } else {
            self.shared &= !bit;
        }
        true
    }

    /// The tree of `origin`, made (all links in) when new; the one used
    /// longest ago is forgotten past [`MAX_TREES`].
    fn tree(&mut self, origin: Origin, now: Instant) -> &mut Tree {
        if !self.trees.contains_key(&origin) && self.trees.len() >= MAX_TREES {
            let oldest = self.trees.iter().min_by_key(|(o, t)| (t.last, **o)).map(|(o, _)| *o);
            if let Some(gone) = oldest.and_then(|o| self.trees.remove(&o).map(|t| (o, t))) {
                self.withdraw(gone.0, &gone.1);
            }
        }
        let tree = self.trees.entry(origin).or_insert_with(|| Tree::new(self.shared, now));
        tree.last = now;
        tree
    }

    /// A message from a peer (`from`), or published here (`None`).
    pub(crate) fn on_message(&mut self, from: Option<NodeId>, msg: Msg, now: Instant, out: &mut VecDeque<OutEvent>) {
        if self.seen.contains_key(&msg.msg_id) {
            if let Some(peer) = from {
                self.duplicate(peer, msg.msg_id, now, out);
            }
            return;
        }
        self.remember(msg.msg_id, now);
        if let Some(peer) = from {
            self.stats.delivered += 1;
            out.push_back(OutEvent::Deliver(msg.clone()));
            // The link the first copy came over is a tree edge for its
            // origin. (PlumTree's optimisation, re-rooting the tree through
            // an announcer with fewer hops, is left out: in the simulator
            // it raised RMR with random publishers from 0.41 to 0.64 at
            // 1,000 nodes.)
            self.set_pruned(peer, Some(msg.msg_id), false, true, now);
            // Announcements of it need no GRAFT any more.
            self.missing.remove(&msg.msg_id);
            // It is this node's parent in the tree now: the one told what
            // is reachable through here.
            // (A copy over a link outside the active view leaves it with no
            // parent: a parent kept from before could be below it now.)
            let slot = self.active.get(&peer).copied();
            let tree = self.tree(origin(&msg.msg_id), now);
            tree.reached = true;
            let mut due = tree.set_up(slot);
            if let Some(slot) = slot {
                Broadcast::check_told(tree, slot, &msg.topic, &mut due);
            }
            self.interest_due |= due;
        }
        // The publisher's own tree starts with every link in it: its first
        // hop reaches every active peer (their duplicates prune it down). A
        // shared tree pruned by other origins' duplicates may have no link
        // left at all, and then every peer would hear of the message only by
        // IHAVE, a GRAFT timeout late. (Its tree may exist already, made
        // for a peer's summary.)
        if from.is_none() {
            let tree = self.tree(origin(&msg.msg_id), now);
            if !tree.own {
                tree.pruned = 0;
                tree.own = true;
            }
        }
        let pruned = self.tree(origin(&msg.msg_id), now).pruned | self.lazy_only;
        let tree = &self.trees[&origin(&msg.msg_id)];
        // The seen-cache stops loops; `max_hops` bounds how deep a payload is
        // pushed. At the bound the message is still announced to every other
        // active peer, so a node behind it asks for it (GRAFT) instead of
        // missing it: delivery stays exactly once at any depth.
        let at_bound = msg.hops >= self.max_hops;
        if at_bound {
            self.stats.hop_limited += 1;
        }
        let next = Msg { hops: msg.hops.saturating_add(1), ..msg.clone() };
        let ihave = IHave { msg_id: msg.msg_id, hops: msg.hops };
        // Only peers whose summary matches the topic, or is not known, get
        // the payload or the announcement (the `interest` module).
        let peers: Vec<(NodeId, bool, Route)> = self
            .active
            .iter()
            .filter(|(p, _)| Some(**p) != from && self.carries(p, &msg.topic))
            .filter_map(|(p, s)| {
                let (lazy, route) = Broadcast::route(tree, *s, &msg.topic)?;
                Some((*p, at_bound || lazy || pruned & (1 << *s) != 0, route))
            })
            .collect();
        for (peer, lazy, route) in peers {
            if lazy {
                self.queue_ihave(peer, ihave, out);
            } else {
                let flood = route == Route::Flood;
                self.stats.payload_sent += 1;
                self.stats.payload_flood += u64::from(flood);
                out.push_back(OutEvent::SendMsg { to: peer, msg: next.clone(), flood });
            }
        }
        self.keep(msg, now);
    }

    /// A copy of `id` came from `peer` again (or this node's own message
    /// came back): a second path to us, so this link leaves the origin's
    /// tree. The PRUNE goes out whether or not we held the link in the tree
    /// (the paper's rule): a peer whose view of the link lags ours would
    /// otherwise push duplicates for good.
    pub(crate) fn duplicate(&mut self, peer: NodeId, id: MsgId, now: Instant, out: &mut VecDeque<OutEvent>) {
        self.stats.duplicates += 1;
        if self.adopted_by(peer, &id) {
            return;
        }
        if self.set_pruned(peer, Some(id), true, true, now) {
            self.stats.prunes += 1;
            out.push_back(OutEvent::Send { to: peer, frame: SwarmFrame::Prune(Some(id)) });
        }
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
    pub(crate) fn on_graft_timer(&mut self, id: MsgId, now: Instant, out: &mut VecDeque<OutEvent>) {
        if self.seen.contains_key(&id) {
            self.missing.remove(&id);
            return;
        }
        let Some(announcers) = self.missing.get_mut(&id) else { return };
        let active = &self.active;
        let next = std::iter::from_fn(|| announcers.pop_front()).find(|(p, _)| active.contains_key(p));
        let more = !announcers.is_empty();
        if !more {
            self.missing.remove(&id);
        }
        if let Some((peer, _)) = next {
            // (A tree for an origin not heard from is made when the message
            // comes: its first copy puts the link it came over in the tree.)
            self.set_pruned(peer, Some(id), false, false, now);
            self.stats.grafts += 1;
            out.push_back(OutEvent::Send { to: peer, frame: SwarmFrame::Graft(Some(id)) });
            if more {
                out.push_back(OutEvent::ScheduleTimer { after: self.graft_retry, timer: Timer::Graft(id) });
            }
        }
    }

    pub(crate) fn on_graft(&mut self, from: NodeId, id: Option<MsgId>, now: Instant, out: &mut VecDeque<OutEvent>) {
        // A peer that just left our active view (its view and ours can
        // differ for a round trip) still gets what we announced to it; only
        // an active one joins the tree.
        self.set_pruned(from, id, false, false, now);
        if let Some(id) = &id {
            self.asked_by(from, id);
        }
        let Some(msg) = id.and_then(|id| self.cache.get(&id)) else { return };
        if !self.carries(&from, &msg.topic) {
            return;
        }
        if self.served.len() >= MAX_GRAFTERS {
            self.served.retain(|_, (start, _)| now < *start + Duration::from_secs(1));
        }
        // Past the bound on peers counted (all within their second), a new
        // one is not answered either.
        if self.served.len() >= MAX_GRAFTERS && !self.served.contains_key(&from) {
            self.stats.grafts_refused += 1;
            return;
        }
        let (start, count) = self.served.entry(from).or_insert((now, 0));
        if now >= *start + Duration::from_secs(1) {
            (*start, *count) = (now, 0);
        }
        if *count >= GRAFT_REPLIES_PER_SEC {
            self.stats.grafts_refused += 1;
            return;
        }
        *count += 1;
        self.stats.payload_sent += 1;
        let msg = Msg { hops: msg.hops.saturating_add(1), ..msg.clone() };
        out.push_back(OutEvent::SendMsg { to: from, msg, flood: false });
    }

    pub(crate) fn on_prune(&mut self, from: NodeId, id: Option<MsgId>, now: Instant) {
        self.set_pruned(from, id, true, false, now);
        self.pruned_by(from, id);
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
