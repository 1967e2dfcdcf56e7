//! The seen-cache: message ids a node has already handled, bounded by count
//! and by age, so relayed duplicates are dropped.
//!
//! Each source (a relay link) has its own share of the capacity: a link
//! that floods ids (a forger, a loop) evicts its own entries, never the ids
//! other links brought.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use oap_codec::MsgId;

/// Ids whose space is allocated when the cache is made; larger caches grow.
pub const PREALLOCATE_MAX: usize = 1 << 20;
/// The source key of ids whose link went away.
const DEPARTED: u64 = u64::MAX;

/// Where and when an id was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    at: Instant,
    source: u64,
}

/// Recently seen ids, oldest of the fullest source evicted first.
#[derive(Debug)]
pub struct SeenCache {
    seen: HashMap<MsgId, Seen>,
    /// Each source's ids, oldest first.
    sources: HashMap<u64, VecDeque<(MsgId, Instant)>>,
    capacity: usize,
    ttl: Duration,
}

impl SeenCache {
    /// Remembers at most `capacity` ids, each for at most `ttl`.
    ///
    /// Space for the bound (up to [`PREALLOCATE_MAX`] ids) is taken up front:
    /// a cache that fills under load never reallocates its index.
    pub fn new(capacity: usize, ttl: Duration) -> SeenCache {
        let upfront = capacity.min(PREALLOCATE_MAX);
        SeenCache { seen: HashMap::with_capacity(upfront), sources: HashMap::new(), capacity: capacity.max(1), ttl }
    }

    /// Records `id`, brought by `source`; false when it was seen within the
    /// bounds already (from any source).
    pub fn insert(&mut self, id: MsgId, source: u64, now: Instant) -> bool {
        if self.seen.get(&id).is_some_and(|s| now.saturating_duration_since(s.at) < self.ttl) {
            return false;
        }
        let sources = self.sources.len() + usize::from(!self.sources.contains_key(&source));
        let share = (self.capacity / sources).max(1);
        let order = self.sources.entry(source).or_default();
        // This source's own expired ids, and its ids past its share.
        while let Some(&(old, at)) = order.front() {
            if now.saturating_duration_since(at) < self.ttl && order.len() < share {
                break;
            }
            order.pop_front();
            remove_if(&mut self.seen, old, Seen { at, source });
        }
        order.push_back((id, now));
        self.seen.insert(id, Seen { at: now, source });
        // Over the whole bound (shares shrink as sources join): the fullest
        // source gives up its oldest ids until one live entry is gone.
        while self.seen.len() > self.capacity {
            let Some((&fullest, order)) = self.sources.iter_mut().max_by_key(|(_, o)| o.len()) else { break };
            let Some((old, at)) = order.pop_front() else { break };
            remove_if(&mut self.seen, old, Seen { at, source: fullest });
        }
        true
    }

    /// A source went away (a link went down, or was attached again under a
    /// new id): its ids are still remembered until they age out or are
    /// evicted, so the same messages arriving over other links stay
    /// duplicates, but they no longer hold a share of their own: they join
    /// the departed sources' common share.
    pub fn forget(&mut self, source: u64) {
        if source == DEPARTED {
            return;
        }
        let Some(order) = self.sources.remove(&source) else { return };
        let departed = self.sources.entry(DEPARTED).or_default();
        for (id, at) in order {
            if let Some(seen) = self.seen.get_mut(&id).filter(|s| **s == Seen { at, source }) {
                seen.source = DEPARTED;
                departed.push_back((id, at));
            }
        }
    }

    /// Ids remembered now.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// Removes `id` if it is still the entry `entry` (a later sighting of the
/// same id from another source is kept).
fn remove_if(seen: &mut HashMap<MsgId, Seen>, id: MsgId, entry: Seen) {
    if seen.get(&id) == Some(&entry) {
        seen.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> MsgId {
        let mut id = [0u8; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        MsgId(id)
    }

    #[test]
    fn duplicates_are_refused_until_evicted_by_count_or_age() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(2, Duration::from_secs(10));
        assert!(c.insert(id(1), 0, t0));
        assert!(!c.insert(id(1), 0, t0));
        assert!(!c.insert(id(1), 7, t0), "seen from any source");
        assert!(c.insert(id(2), 0, t0));
        assert!(c.insert(id(3), 0, t0), "evicts id 1 by count");
        assert_eq!(c.len(), 2);
        assert!(c.insert(id(1), 0, t0));
        let later = t0 + Duration::from_secs(11);
        assert!(c.insert(id(3), 0, later), "id 3 aged out");
        assert!(c.len() <= 2);
    }

    #[test]
    fn a_flooding_source_evicts_only_its_own_ids() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(100, Duration::from_secs(60));
        for n in 0..40 {
            assert!(c.insert(id(n), 1, t0));
        }
        for n in 1000..11_000 {
            assert!(c.insert(id(n), 2, t0));
        }
        assert!(c.len() <= 100);
        for n in 0..40 {
            assert!(!c.insert(id(n), 3, t0), "the honest link's id {n} is still known");
        }
        c.forget(1);
        assert!(!c.insert(id(0), 3, t0), "a departed link's ids are still duplicates");
        for n in 20_000..40_000 {
            c.insert(id(n), 4, t0);
        }
        assert!(c.len() <= 100, "departed ids are evicted like any others");
    }
}
