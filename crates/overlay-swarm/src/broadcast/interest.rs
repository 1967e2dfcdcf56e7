//! Interest routing along each origin's tree (OAP-1 section 5.2): a node
//! tells the peers of a tree that are not its children there (its parent,
//! the link its latest first copy came over, and its lazy peers) which
//! patterns are reachable through it: its own subscriptions and what its
//! children told it, aggregated (a pattern another covers is dropped; past
//! [`MAX_PATTERNS`] or [`MAX_BYTES`] it says every topic). A payload goes
//! to a child, and an `IHAVE` to a lazy peer, only when that peer's summary
//! matches the topic; a peer whose summary is not known (a new link, a
//! graft, a tree just made or forgotten on either side) is sent everything,
//! so delivery stays exactly once while summaries settle.
//!
//! Summaries are full state, not deltas, on an ordered link: the last one
//! sent is the one in force, a new link starts unknown, and a link's end
//! forgets what was heard and told over it. What this node was told stays
//! right by itself: a payload that arrives from a peer although the summary
//! this node last told it does not match the topic (the peer forgot it, or
//! never got it) makes the summary be sent again. A forgotten tree is
//! withdrawn (every topic) from the peers it was told to.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oap_codec::{MsgId, NodeId, ORIGIN_LEN, Pattern, SwarmFrame, Topic};

use super::{Broadcast, Origin, Tree};
use crate::swarm::{OutEvent, Timer};

/// Patterns a summary holds at most; a larger one says every topic.
pub(crate) const MAX_PATTERNS: usize = 64;
/// Bytes a summary's patterns take on the wire at most (each with its
/// length byte); a larger one says every topic.
pub(crate) const MAX_BYTES: usize = 2048;
/// How long changes are gathered before summaries go out: one frame per
/// peer carries every tree's change, and a subscription's change reaches
/// the origin in a few of these per hop.
const BATCH: Duration = Duration::from_millis(10);
/// How long a new link's summary is waited for before this node's own
/// summaries count it as wanting every topic. A new link is sent
/// everything at once; only the widening upstream waits, so a link that is
/// refused a moment later (a `NEIGHBOR` answered `DISCONNECT`) or that
/// tells its summary within a few round trips costs the tree above nothing.
const GRACE: Duration = Duration::from_millis(250);
/// How long a node with no parent in a tree waits for a first copy after
/// asking its peers to take it in, before it asks again.
const ADOPT_RETRY: Duration = Duration::from_secs(3);

/// The topics reachable through a link in one origin's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Summary {
    /// Every topic: not known yet, too large, or withdrawn.
    All,
    /// These patterns: none covers another, sorted.
    Only(Arc<[Pattern]>),
}

impl Summary {
    /// `patterns`, aggregated and bounded.
    pub(crate) fn of(mut patterns: Vec<Pattern>) -> Summary {
        // Bounds the covering pass below (quadratic) before it runs.
        if patterns.len() > MAX_PATTERNS * 16 {
            return Summary::All;
        }
        patterns.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        patterns.dedup();
        // `>` matches every topic (a topic has one token at least).
        if patterns.iter().any(|p| p.as_bytes() == b">") {
            return Summary::All;
        }
        let kept: Vec<Pattern> = patterns
            .iter()
            .enumerate()
            .filter(|(i, p)| !patterns.iter().enumerate().any(|(j, q)| j != *i && q.covers(p)))
            .map(|(_, p)| p.clone())
            .collect();
        let bytes: usize = kept.iter().map(|p| 1 + p.as_bytes().len()).sum();
        if kept.len() > MAX_PATTERNS || bytes > MAX_BYTES {
            return Summary::All;
        }
        Summary::Only(kept.into())
    }

    /// Whether a message on `topic` is wanted through the link.
    pub(crate) fn matches(&self, topic: &Topic) -> bool {
        match self {
            Summary::All => true,
            Summary::Only(patterns) => patterns.iter().any(|p| p.matches(topic)),
        }
    }

    /// Nothing reachable.
    pub(crate) fn is_empty(&self) -> bool {
        matches!(self, Summary::Only(patterns) if patterns.is_empty())
    }

    /// Its patterns' bytes on the wire.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Summary::All => 0,
            Summary::Only(patterns) => patterns.iter().map(|p| 1 + p.as_bytes().len()).sum(),
        }
    }

    fn patterns(&self) -> Option<Vec<Pattern>> {
        match self {
            Summary::All => None,
            Summary::Only(patterns) => Some(patterns.to_vec()),
        }
    }
}

/// A slot's entry in a tree's per-link list (absent: every topic).
fn get(list: &[(u8, Summary)], slot: u8) -> &Summary {
    list.iter().find(|(s, _)| *s == slot).map_or(&Summary::All, |(_, summary)| summary)
}

/// Sets a slot's entry; returns whether it changed.
fn set(list: &mut Vec<(u8, Summary)>, slot: u8, summary: Summary) -> bool {
    let at = list.iter().position(|(s, _)| *s == slot);
    match (at, summary) {
        (None, Summary::All) => false,
        (Some(i), Summary::All) => {
            list.swap_remove(i);
            true
        }
        (Some(i), summary) if list[i].1 == summary => false,
        (Some(i), summary) => {
            list[i].1 = summary;
            true
        }
        (None, summary) => {
            list.push((slot, summary));
            true
        }
    }
}

/// How a payload or an `IHAVE` goes to a peer, if it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Its summary matches the topic.
    Interest,
    /// Its summary is not known, or says every topic.
    Flood,
}

impl Tree {
    /// Whether a message on `topic` goes to the peer in `slot`, and why.
    pub(super) fn route(&self, slot: u8, topic: &Topic) -> Option<Route> {
        match get(&self.heard, slot) {
            Summary::All => Some(Route::Flood),
            summary if summary.matches(topic) => Some(Route::Interest),
            Summary::Only(_) => None,
        }
    }

    /// Forgets what was heard and told over the link in `slot`.
    pub(super) fn forget(&mut self, slot: u8) {
        set(&mut self.heard, slot, Summary::All);
        set(&mut self.told, slot, Summary::All);
        self.resend &= !(1 << slot);
        if self.up == Some(slot) {
            self.up = None;
            self.asked = None;
        }
        if self.told_up == Some(slot) {
            self.told_up = None;
        }
        self.dirty = true;
    }
}

impl Broadcast {
    /// This node's own subscriptions (`None`: every topic).
    pub(crate) fn set_local(&mut self, patterns: Option<Vec<Pattern>>) {
        let local = patterns.map_or(Summary::All, Summary::of);
        if local != self.local {
            self.local = local;
            self.all_dirty();
        }
    }

    /// Every tree's summary may have changed.
    pub(super) fn all_dirty(&mut self) {
        self.trees.values_mut().for_each(|t| t.dirty = true);
        self.interest_due = true;
    }

    /// Slots that are `tree`'s children here: in it, not its parent.
    fn children(&self, tree: &Tree) -> u64 {
        let up = tree.up.map_or(0, |s| 1u64 << s);
        self.slots & !(tree.pruned | self.lazy_only | up)
    }

    /// What is reachable through this node in `tree` for a peer other
    /// than the child in slot `except`: its own subscriptions and its other
    /// children's summaries.
    fn summary(&self, tree: &Tree, except: Option<u8>) -> Summary {
        if self.local == Summary::All {
            return Summary::All;
        }
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut add = |s: &Summary| match s {
            Summary::All => false,
            Summary::Only(p) => {
                patterns.extend(p.iter().cloned());
                true
            }
        };
        add(&self.local);
        let children = self.children(tree) & !except.map_or(0, |s| 1u64 << s);
        for slot in (0..64u8).filter(|s| children & (1 << s) != 0) {
            let young = || self.young.iter().any(|(s, _)| *s == slot);
            match tree.heard.iter().find(|(s, _)| *s == slot) {
                Some((_, summary)) if add(summary) => {}
                // Not heard yet from a link in its grace: counted once it ends.
                None if young() => {}
                _ => return Summary::All,
            }
        }
        Summary::of(patterns)
    }

    /// A peer's summary for some origins' trees (trees not held here are
    /// not made for it).
    ///
    /// A peer that names this node its parent there is kept in the tree
    /// (a `PRUNE` it did not see, or crossed, must not cut it off); one
    /// that does while this node names it its own parent is a loop with
    /// no way to the origin, so this node's parent is given up (and the
    /// peer's, on its side), and both ask their lazy peers.
    pub(crate) fn on_interest(&mut self, from: NodeId, origins: Vec<[u8; ORIGIN_LEN]>, patterns: Option<Vec<Pattern>>, parent: bool) {
        let Some(&slot) = self.active.get(&from) else { return };
        let summary = patterns.map_or(Summary::All, Summary::of);
        let bit = 1u64 << slot;
        for origin in origins {
            let Some(tree) = self.trees.get_mut(&origin) else { continue };
            let mut changed = set(&mut tree.heard, slot, summary.clone());
            if parent && tree.up == Some(slot) {
                tree.up = None;
                tree.asked = None;
                changed = true;
            }
            if parent && tree.pruned & bit != 0 {
                tree.pruned &= !bit;
                changed = true;
            }
            if changed {
                tree.dirty = true;
                self.interest_due = true;
            }
        }
    }

    /// A payload of `tree`'s origin on `topic` came from the peer in
    /// `slot`: when the summary told it does not match, the peer does not
    /// hold it (forgot, or never got it), so it is sent again.
    pub(super) fn check_told(tree: &mut Tree, slot: u8, topic: &Topic, due: &mut bool) {
        if !get(&tree.told, slot).matches(topic) {
            tree.resend |= 1 << slot;
            tree.dirty = true;
            *due = true;
        }
    }

    /// A tree about to be forgotten: the peers told a summary for it are
    /// told every topic, since no later change could reach them.
    pub(super) fn withdraw(&mut self, origin: Origin, tree: &Tree) {
        for (slot, _) in &tree.told {
            if let Some((peer, _)) = self.active.iter().find(|(_, s)| *s == slot) {
                self.withdrawn.push((*peer, origin));
            }
        }
        self.interest_due |= !tree.told.is_empty();
    }

    /// A link entered the active view in `slot`: it is told every tree's
    /// summary in the next batch; its own is waited for [`GRACE`].
    pub(super) fn linked(&mut self, slot: u8, now: Instant, out: &mut VecDeque<OutEvent>) {
        self.young.retain(|(s, _)| *s != slot);
        self.young.push((slot, now + GRACE));
        out.push_back(OutEvent::ScheduleTimer { after: GRACE, timer: Timer::Interest });
        self.all_dirty();
    }

    /// A tree in which this node has no parent (the link to it went, or
    /// the tree was made by a duplicate) but wants something: it asks
    /// every active peer there to take it in (`GRAFT` with an id of the
    /// origin). With interest routing its lazy peers may not get the
    /// tree's messages themselves, so waiting for their `IHAVE`s, as
    /// PlumTree repairs, could wait for good. A child so asked by its
    /// parent has no parent either ([`Broadcast::asked_by`]) and asks its
    /// own peers in turn, so an orphaned subtree reattaches through
    /// whichever of its nodes has a link outside it; the first copies then
    /// rebuild it and duplicates prune it down. (A node that wants every
    /// topic, the default, repairs as PlumTree does.)
    fn adopt(&mut self, origin: Origin, now: Instant, out: &mut VecDeque<OutEvent>) {
        let Some(tree) = self.trees.get_mut(&origin) else { return };
        tree.asked = Some(now);
        // Asked again while nothing comes (the peers asked may have been
        // below it, or orphans too).
        out.push_back(OutEvent::ScheduleTimer { after: ADOPT_RETRY, timer: Timer::Interest });
        // Its lazy peers, or when it has none, its children (which then
        // look for a parent of their own).
        let usable = self.slots & !self.lazy_only;
        let lazy = if tree.pruned & usable != 0 { tree.pruned & usable } else { usable };
        tree.pruned &= !lazy;
        // An id of the origin that names no message (the sequence number
        // and digest all ones): the GRAFT moves the link into the tree and
        // asks for nothing.
        let mut id = [0xff; 16];
        id[..ORIGIN_LEN].copy_from_slice(&origin);
        for (peer, _) in self.active.iter().filter(|(_, s)| lazy & (1 << **s) != 0) {
            self.stats.grafts += 1;
            out.push_back(OutEvent::Send { to: *peer, frame: SwarmFrame::Graft(Some(MsgId(id))) });
        }
    }

    /// `peer` asked to be taken into the tree of `id`'s origin (`GRAFT`).
    /// When it is this node's parent there, it gets nothing to pass on:
    /// this node is an orphan now.
    pub(super) fn asked_by(&mut self, peer: NodeId, id: &MsgId) {
        let Some(&slot) = self.active.get(&peer) else { return };
        let Some(tree) = self.trees.get_mut(&super::origin(id)) else { return };
        if tree.up == Some(slot) {
            tree.up = None;
            tree.asked = None;
            tree.dirty = true;
            self.interest_due = true;
        }
    }

    /// A copy of a message this node has came from `peer`. Where the
    /// node has no parent in the message's tree (it asked to be taken in,
    /// or its first copy came over a link outside the active view), the
    /// link is its parent now rather than pruned: pruning every link that
    /// answers would leave it without one.
    pub(super) fn adopted_by(&mut self, peer: NodeId, id: &MsgId) -> bool {
        let Some(&slot) = self.active.get(&peer) else { return false };
        let Some(tree) = self.trees.get_mut(&super::origin(id)) else { return false };
        if tree.up.is_some() || tree.own || self.local == Summary::All {
            return false;
        }
        tree.up = Some(slot);
        tree.pruned &= !(1 << slot);
        tree.asked = None;
        tree.dirty = true;
        self.interest_due = true;
        true
    }

    /// Schedules the next batch of summaries when something changed.
    pub(crate) fn arm_interest(&mut self, out: &mut VecDeque<OutEvent>) {
        if self.interest_due && !self.interest_armed {
            self.interest_armed = true;
            out.push_back(OutEvent::ScheduleTimer { after: BATCH, timer: Timer::Interest });
        }
    }

    /// Sends the summaries that changed: per peer, one frame per distinct
    /// summary, naming every origin it is for.
    pub(crate) fn flush_interest(&mut self, now: Instant, out: &mut VecDeque<OutEvent>) {
        self.interest_armed = false;
        self.interest_due = false;
        if self.young.iter().any(|(_, until)| *until <= now) {
            self.young.retain(|(_, until)| *until > now);
            self.all_dirty();
            self.interest_due = false;
        }
        for tree in self.trees.values_mut() {
            if tree.up.is_none() && tree.asked.is_some_and(|at| at + ADOPT_RETRY <= now) {
                tree.dirty = true;
            }
        }
        type Groups = Vec<((Summary, bool), Vec<Origin>)>;
        let mut frames: BTreeMap<NodeId, Groups> = BTreeMap::new();
        let mut add = |peer, key: (Summary, bool), origin| {
            let groups = frames.entry(peer).or_default();
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, origins)) => origins.push(origin),
                None => groups.push((key, vec![origin])),
            }
        };
        for (peer, origin) in std::mem::take(&mut self.withdrawn) {
            add(peer, (Summary::All, false), origin);
        }
        let origins: Vec<Origin> = self.trees.iter().filter(|(_, t)| t.dirty).map(|(o, _)| *o).collect();
        for origin in origins {
            let Some(tree) = self.trees.get(&origin) else { continue };
            // Every active peer is told, children too (what is reachable
            // here without them: split horizon), so a link that changes
            // sides later already holds the summary it needs.
            let whole = self.summary(tree, None);
            let children = self.children(tree);
            let targets: Vec<(NodeId, u8, Summary)> = self
                .active
                .iter()
                .map(|(p, &s)| {
                    let summary = if children & (1 << s) != 0 { self.summary(tree, Some(s)) } else { whole.clone() };
                    (*p, s, summary)
                })
                .collect();
            self.stats.max_summary_bytes = self.stats.max_summary_bytes.max(whole.bytes() as u64);
            let retry = tree.asked.is_none_or(|at| at + ADOPT_RETRY <= now);
            if tree.up.is_none() && !tree.own && retry && self.local != Summary::All && !whole.is_empty() {
                self.adopt(origin, now, out);
            }
            let Some(tree) = self.trees.get_mut(&origin) else { continue };
            tree.dirty = false;
            for (peer, slot, summary) in targets {
                let resend = tree.resend & (1 << slot) != 0;
                // The parent is told it is one, once per parent.
                let parent = tree.up == Some(slot);
                let new_parent = parent && tree.told_up != Some(slot);
                if set(&mut tree.told, slot, summary.clone()) || resend || new_parent {
                    add(peer, (summary.clone(), parent), origin);
                }
            }
            tree.told_up = tree.up;
            tree.resend = 0;
        }
        for (peer, groups) in frames {
            for ((summary, parent), origins) in groups {
                let patterns = summary.patterns();
                for chunk in origins.chunks(SwarmFrame::MAX_ORIGINS) {
                    self.stats.interest_sent += 1;
                    let frame = SwarmFrame::Interest { origins: chunk.to_vec(), patterns: patterns.clone(), parent };
                    out.push_back(OutEvent::Send { to: peer, frame });
                }
            }
        }
    }

    /// Links that are a child in some tree with no summary from them yet:
    /// everything goes over them.
    pub(crate) fn flood_edges(&self) -> usize {
        let mut unknown = 0u64;
        for tree in self.trees.values() {
            let mut children = self.children(tree);
            for (slot, _) in &tree.heard {
                children &= !(1 << slot);
            }
            unknown |= children;
        }
        unknown.count_ones() as usize
    }
}

impl Broadcast {
    /// TEMP debug.
    pub(crate) fn debug_tree(&self, id: &MsgId) -> String {
        let Some(tree) = self.trees.get(&super::origin(id)) else { return "no tree".into() };
        let slots: Vec<(String, u8)> = self.active.iter().map(|(p, s)| (p.to_string()[..6].to_string(), *s)).collect();
        format!("local {:?} up {:?} pruned {:b} slots {:?} heard {:?} told {:?} young {:?}", self.local, tree.up, tree.pruned, slots, tree.heard, tree.told, self.young)
    }
}

impl Broadcast {
    /// TEMP debug.
    pub(crate) fn debug_up(&self, id: &MsgId) -> Option<NodeId> {
        let up = self.trees.get(&super::origin(id))?.up?;
        self.active.iter().find(|(_, s)| **s == up).map(|(p, _)| *p)
    }
}
