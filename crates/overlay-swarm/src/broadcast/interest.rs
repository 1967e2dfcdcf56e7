//! Interest routing along each origin's tree (OAP-1 section 5.2).
//!
//! In each origin's tree a node's parent is the link its latest first copy
//! came over, and the node says so: it tells every active peer which
//! patterns are reachable through it there (`INTEREST`), and tells its
//! parent that it is one (the frame's parent flag). A node's children are
//! the peers that said so (or asked to be taken in, `GRAFT`), so the
//! relation is one the two ends agree on, and it has no cycles for a
//! summary to go round. What is reachable through a node is its own
//! subscriptions and its children's summaries, aggregated (a pattern
//! another covers is dropped; past [`MAX_PATTERNS`] or [`MAX_BYTES`] it
//! says every topic). A peer that has no place in an origin's tree yet (a
//! new node, or one no copy has reached) is counted by its default
//! summary, its own subscriptions, which every node tells each peer
//! (`INTEREST` with no origin), and tells nothing of that tree until a copy
//! reaches it or a peer names it its parent. What a peer tells of a tree
//! this node has not had a copy of yet is kept (the tree is made for it):
//! the peer heard of the origin first, and does not tell it again.
//!
//! A payload goes to a tree peer, and an `IHAVE` to a lazy peer, only when
//! that peer's summary (or default) matches the topic; a peer whose summary
//! is not known (a new link) is sent everything, so delivery stays exactly
//! once while summaries settle.
//!
//! Summaries are full state, not deltas, on an ordered link: the last one
//! sent is the one in force, a new link starts unknown, and a link's end
//! forgets what was heard and told over it. A payload that arrives from a
//! peer although the summary this node told it does not match makes the
//! summary be sent again (the peer forgot it or never got it). A forgotten
//! tree is withdrawn (every topic) from the peers it was told to.
//!
//! A node left with no parent in a tree it wants something of (its parent
//! went, pruned it, or asked it for a message) asks its lazy peers there to
//! take it in, or when it has none, its children, which then look for a
//! parent of their own: with interest routing its lazy peers may not get
//! the tree's messages, so PlumTree's repair by `IHAVE` cannot be relied
//! on. A node that wants every topic (the default, before a driver tells it
//! its subscriptions) sends no summary and repairs as PlumTree does.

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
/// peer carries every tree's change.
const BATCH: Duration = Duration::from_millis(10);
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
        patterns.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        patterns.dedup();
        // Bounds the covering pass below (quadratic: at most 65,536 pattern
        // comparisons, whatever a peer sends) before it runs.
        if patterns.len() > MAX_PATTERNS * 4 {
            return Summary::All;
        }
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

    /// Whether every topic `other` matches, this matches too.
    pub(crate) fn covers(&self, other: &Summary) -> bool {
        match (self, other) {
            (Summary::All, _) => true,
            (Summary::Only(_), Summary::All) => false,
            (Summary::Only(ours), Summary::Only(theirs)) => theirs.iter().all(|p| ours.iter().any(|q| q.covers(p))),
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

/// A slot's entry in a per-link list.
fn find(list: &[(u8, Summary)], slot: u8) -> Option<&Summary> {
    list.iter().find(|(s, _)| *s == slot).map(|(_, summary)| summary)
}

/// Sets a slot's entry (`None` removes it); returns whether it changed.
fn set(list: &mut Vec<(u8, Summary)>, slot: u8, summary: Option<Summary>) -> bool {
    let at = list.iter().position(|(s, _)| *s == slot);
    match (at, summary) {
        (None, None) => false,
        (Some(i), None) => {
            list.swap_remove(i);
            true
        }
        (Some(i), Some(summary)) if list[i].1 == summary => false,
        (Some(i), Some(summary)) => {
            list[i].1 = summary;
            true
        }
        (None, Some(summary)) => {
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
    /// Whether this node has a place in the tree: a copy came here, it is
    /// the origin, or a peer named it its parent. A tree made for a peer's
    /// summary has none until then, and tells nothing of it: its peers
    /// count this node's default (its own subscriptions) there, so what it
    /// wants is pulled toward it and its first copy comes.
    fn placed(&self) -> bool {
        self.reached || self.own || self.kids != 0
    }

    /// Forgets what was heard and told over the link in `slot`.
    pub(super) fn forget(&mut self, slot: u8) {
        set(&mut self.heard, slot, None);
        set(&mut self.told, slot, None);
        self.resend &= !(1 << slot);
        self.kids &= !(1 << slot);
        if self.up == Some(slot) {
            self.up = None;
            self.asked = None;
        }
        self.told_parent &= !(1 << slot);
        self.asking &= !(1 << slot);
        self.dirty = true;
    }

    /// The peer in `slot` is this node's parent now.
    pub(super) fn set_up(&mut self, slot: Option<u8>) -> bool {
        if self.up == slot {
            return false;
        }
        self.up = slot;
        self.asked = None;
        self.asking = 0;
        if let Some(slot) = slot {
            // A child that became the parent is a child no more.
            self.kids &= !(1 << slot);
        }
        self.dirty = true;
        true
    }
}

impl Broadcast {
    /// Whether a message on `topic` goes to the peer in `slot` in `tree`,
    /// why, and whether as an announcement only (a peer that told its
    /// summary without naming this node its parent gets its copies from
    /// its parent: at most an `IHAVE` from here). A peer's default only
    /// pulls its own topics toward it: where it has said nothing of the
    /// tree, everything goes to it, which is how a node new to an origin
    /// hears of it at all.
    pub(super) fn route(tree: &Tree, slot: u8, topic: &Topic) -> Option<(bool, Route)> {
        let lazy = tree.kids & (1 << slot) == 0;
        match find(&tree.heard, slot) {
            None => Some((false, Route::Flood)),
            Some(Summary::All) => Some((lazy, Route::Flood)),
            Some(summary) if summary.matches(topic) => Some((lazy, Route::Interest)),
            Some(_) => None,
        }
    }

    /// This node's own subscriptions (`None`: every topic).
    pub(crate) fn set_local(&mut self, patterns: Option<Vec<Pattern>>) {
        let local = patterns.map_or(Summary::All, Summary::of);
        if local != self.local {
            self.widened |= !self.local.covers(&local);
            self.local = local;
            self.default_due = self.slots;
            self.all_dirty();
        }
    }

    /// Every tree's summary may have changed.
    pub(super) fn all_dirty(&mut self) {
        self.trees.values_mut().for_each(|t| t.dirty = true);
        self.interest_due = true;
    }

    /// A link entered the active view in `slot`: it is told this node's
    /// default and every tree's summary in the next batch.
    pub(super) fn linked(&mut self, slot: u8) {
        self.default_due |= 1 << slot;
        self.all_dirty();
    }

    /// The link in `slot` left the active view.
    pub(super) fn unlinked(&mut self, slot: u8) {
        self.defaults.remove(&slot);
        self.default_due &= !(1 << slot);
        for tree in self.trees.values_mut() {
            tree.forget(slot);
        }
        self.interest_due = true;
    }

    /// What is reachable through this node in `tree` for the peer in
    /// `to`: its own subscriptions, its children's summaries other than
    /// that peer's, and the defaults of peers with no tree for the origin.
    fn summary(&self, tree: &Tree, to: Option<u8>) -> Summary {
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
        let others = !to.map_or(0, |s| 1u64 << s) & !tree.up.map_or(0, |s| 1u64 << s);
        for slot in (0..64u8).filter(|s| self.slots & others & (1 << s) != 0) {
            // A link a relay grant restricts is never a child: what it
            // says is reachable through it pulls nothing toward this node.
            let kid = tree.kids & !self.lazy_only & (1 << slot) != 0;
            let counted = match find(&tree.heard, slot) {
                Some(summary) if kid => Some(summary),
                // A peer with no tree for the origin: its own subscriptions.
                None if (tree.pruned | self.lazy_only) & (1 << slot) == 0 => self.defaults.get(&slot),
                _ => None,
            };
            if let Some(summary) = counted
                && !add(summary)
            {
                return Summary::All;
            }
        }
        Summary::of(patterns)
    }

    /// A peer's summary for some origins' trees (none: its default), and
    /// whether it names this node its parent there. A tree not held here
    /// is made for it when it says something (a summary, or that this node
    /// is its parent): a peer can hear of an origin first, and what it
    /// tells before this node's first copy arrives must not be lost (it is
    /// not told again while it does not change, and a parent that never
    /// heard its child's summary pulls nothing toward it).
    pub(crate) fn on_interest(
        &mut self,
        from: NodeId,
        origins: Vec<[u8; ORIGIN_LEN]>,
        patterns: Option<Vec<Pattern>>,
        parent: bool,
        now: Instant,
    ) {
        let Some(&slot) = self.active.get(&from) else { return };
        let summary = patterns.map_or(Summary::All, Summary::of);
        if origins.is_empty() {
            if self.defaults.insert(slot, summary.clone()) != Some(summary) {
                self.all_dirty();
            }
            return;
        }
        let bit = 1u64 << slot;
        for origin in origins {
            if !self.trees.contains_key(&origin) && (parent || summary != Summary::All) {
                self.tree(origin, now);
            }
            let Some(tree) = self.trees.get_mut(&origin) else { continue };
            let widens =
                parent && (tree.kids & bit == 0 || !find(&tree.heard, slot).is_some_and(|h| h.covers(&summary)));
            self.widened |= widens;
            let mut changed = set(&mut tree.heard, slot, Some(summary.clone()));
            let kids = if parent { tree.kids | bit } else { tree.kids & !bit };
            changed |= kids != tree.kids;
            tree.kids = kids;
            if parent {
                // Named the parent by its own parent: a loop with no way
                // to the origin; both give their parent up.
                if tree.up == Some(slot) {
                    tree.set_up(None);
                }
                // Kept in the tree (a PRUNE it did not see, or crossed).
                tree.pruned &= !bit;
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
        if find(&tree.told, slot).is_some_and(|s| !s.matches(topic)) {
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

    /// Asks the peers of a tree in which this node has no parent to take
    /// it in (`GRAFT` with an id of the origin that names no message): its
    /// lazy peers, or its children when it has none.
    fn adopt(&mut self, origin: Origin, now: Instant, out: &mut VecDeque<OutEvent>) {
        let Some(tree) = self.trees.get_mut(&origin) else { return };
        tree.asked = Some(now);
        out.push_back(OutEvent::ScheduleTimer { after: ADOPT_RETRY, timer: Timer::Interest });
        let usable = self.slots & !self.lazy_only;
        let asked = if tree.pruned & usable != 0 { tree.pruned & usable } else { usable };
        tree.pruned &= !asked;
        // Told they are its parent (a GRAFT makes it their child; its
        // summary must not take that back) until a first copy picks one.
        tree.asking = asked;
        tree.dirty = true;
        let mut id = [0xff; 16];
        id[..ORIGIN_LEN].copy_from_slice(&origin);
        for (peer, _) in self.active.iter().filter(|(_, s)| asked & (1 << **s) != 0) {
            self.stats.grafts += 1;
            out.push_back(OutEvent::Send { to: *peer, frame: SwarmFrame::Graft(Some(MsgId(id))) });
        }
    }

    /// `peer` asked to be taken into the tree of `id`'s origin (`GRAFT`):
    /// it is a child there until it names another parent. When it was this
    /// node's parent, it gets nothing to pass on: this node is an orphan.
    pub(super) fn asked_by(&mut self, peer: NodeId, id: &MsgId) {
        let Some(&slot) = self.active.get(&peer) else { return };
        let Some(tree) = self.trees.get_mut(&super::origin(id)) else { return };
        tree.set_up(if tree.up == Some(slot) { None } else { tree.up });
        tree.kids |= 1 << slot;
        tree.dirty = true;
        self.interest_due = true;
    }

    /// `peer` pruned this node from the tree of `id`'s origin (or every
    /// tree): this node is not its parent.
    pub(super) fn pruned_by(&mut self, peer: NodeId, id: Option<MsgId>) {
        let Some(&slot) = self.active.get(&peer) else { return };
        let unkid = |tree: &mut Tree| {
            if tree.kids & (1 << slot) != 0 {
                tree.kids &= !(1 << slot);
                tree.dirty = true;
            }
        };
        match id {
            Some(id) => self.trees.get_mut(&super::origin(&id)).into_iter().for_each(unkid),
            None => self.trees.values_mut().for_each(unkid),
        }
        self.interest_due = true;
    }

    /// A copy of a message this node has came from `peer`. Where the
    /// node has no parent in the message's tree, the link is its parent
    /// now rather than pruned: pruning every link that answers its
    /// `GRAFT`s would leave it without one.
    pub(super) fn adopted_by(&mut self, peer: NodeId, id: &MsgId) -> bool {
        let Some(&slot) = self.active.get(&peer) else { return false };
        let Some(tree) = self.trees.get_mut(&super::origin(id)) else { return false };
        if tree.up.is_some() || tree.own || self.local == Summary::All {
            return false;
        }
        tree.set_up(Some(slot));
        tree.pruned &= !(1 << slot);
        self.interest_due = true;
        true
    }

    /// Schedules the next batch of summaries when something changed.
    pub(crate) fn arm_interest(&mut self, now: Instant, out: &mut VecDeque<OutEvent>) {
        if std::mem::take(&mut self.widened) && self.interest_due {
            self.flush_interest(now, out);
        } else if self.interest_due && !self.interest_armed {
            self.interest_armed = true;
            out.push_back(OutEvent::ScheduleTimer { after: BATCH, timer: Timer::Interest });
        }
    }

    /// Sends the summaries that changed: per peer, one frame per distinct
    /// summary and parent flag, naming every origin it is for; and asks to
    /// be taken in where this node has no parent.
    pub(crate) fn flush_interest(&mut self, now: Instant, out: &mut VecDeque<OutEvent>) {
        self.interest_armed = false;
        self.interest_due = false;
        if self.local == Summary::All && self.withdrawn.is_empty() && self.trees.values().all(|t| t.told.is_empty()) {
            // Wants every topic and never said otherwise: nothing to tell.
            self.trees.values_mut().for_each(|t| t.dirty = false);
            self.default_due = 0;
            return;
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
        let defaults = std::mem::take(&mut self.default_due);
        for (peer, _) in self.active.iter().filter(|(_, s)| defaults & (1 << **s) != 0) {
            self.stats.interest_sent += 1;
            let frame = SwarmFrame::Interest { origins: Vec::new(), patterns: self.local.patterns(), parent: false };
            out.push_back(OutEvent::Send { to: *peer, frame });
        }
        let dirty: Vec<Origin> = self.trees.iter().filter(|(_, t)| t.dirty).map(|(o, _)| *o).collect();
        for origin in dirty {
            let Some(tree) = self.trees.get(&origin) else { continue };
            if !tree.placed() && tree.told.is_empty() {
                // Nothing to say yet: its peers count its default.
                if let Some(tree) = self.trees.get_mut(&origin) {
                    tree.dirty = false;
                }
                continue;
            }
            let whole = self.summary(tree, None);
            let targets: Vec<(NodeId, u8, Summary)> =
                self.active.iter().map(|(p, &s)| (*p, s, self.summary(tree, Some(s)))).collect();
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
                let bit = 1u64 << slot;
                let parent = tree.up == Some(slot) || (tree.up.is_none() && tree.asking & bit != 0);
                let flag_changed = parent != (tree.told_parent & bit != 0);
                let told = find(&tree.told, slot).cloned().unwrap_or(Summary::All);
                if told != summary || resend || flag_changed {
                    tree.told_parent = if parent { tree.told_parent | bit } else { tree.told_parent & !bit };
                    set(&mut tree.told, slot, Some(summary.clone()));
                    add(peer, (summary, parent), origin);
                }
            }
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

    /// Links in some tree with no summary from them yet (nor a default):
    /// everything goes over them.
    pub(crate) fn flood_edges(&self) -> usize {
        if self.local == Summary::All {
            return 0;
        }
        let mut unknown = 0u64;
        for tree in self.trees.values() {
            let mut eager = self.slots & !(tree.pruned | self.lazy_only);
            for (slot, _) in &tree.heard {
                eager &= !(1 << slot);
            }
            unknown |= eager;
        }
        for slot in self.defaults.keys() {
            unknown &= !(1 << slot);
        }
        unknown.count_ones() as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(p: &[&str]) -> Summary {
        Summary::of(p.iter().map(|p| p.parse().unwrap()).collect())
    }

    #[test]
    fn a_summary_drops_what_another_pattern_covers() {
        assert_eq!(of(&["a.b", "a.*", "a.>", "b.c", "a.b"]), of(&["a.>", "b.c"]));
        assert_eq!(of(&["a.*.c", "a.b.c", "a.*.d"]), of(&["a.*.c", "a.*.d"]));
        assert!(of(&["a.>"]).matches(&"a.b.c".parse().unwrap()));
        assert!(!of(&["a.>"]).matches(&"b".parse().unwrap()));
        assert!(of(&[]).is_empty());
    }

    #[test]
    fn a_summary_past_its_bounds_says_every_topic() {
        assert_eq!(of(&["x", ">"]), Summary::All);
        let many: Vec<String> = (0..=MAX_PATTERNS).map(|i| format!("t.{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(of(&many), Summary::All);
        assert_ne!(of(&many[..MAX_PATTERNS]), Summary::All);
        let long: Vec<String> = (0..16).map(|i| format!("{i}.{}", "x".repeat(200))).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(of(&long), Summary::All, "over {MAX_BYTES} bytes");
    }
}
