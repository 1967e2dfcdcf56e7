//! The seen-cache: message ids a node has already handled, bounded by count
//! and by age, so relayed duplicates are dropped.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use oap_codec::MsgId;

/// Ids whose space is allocated when the cache is made; larger caches grow.
pub const PREALLOCATE_MAX: usize = 1 << 20;

/// Recently seen ids, oldest evicted first.
#[derive(Debug)]
pub struct SeenCache {
    seen: HashMap<MsgId, Instant>,
    order: VecDeque<(MsgId, Instant)>,
    capacity: usize,
    ttl: Duration,
}

impl SeenCache {
    /// Remembers at most `capacity` ids, each for at most `ttl`.
    ///
    /// Space for the bound (up to [`PREALLOCATE_MAX`] ids) is taken up front:
    /// a cache that fills under load never reallocates, so memory stays flat.
    pub fn new(capacity: usize, ttl: Duration) -> SeenCache {
        let upfront = capacity.min(PREALLOCATE_MAX);
        SeenCache { seen: HashMap::with_capacity(upfront), order: VecDeque::with_capacity(upfront), capacity, ttl }
    }

    /// Records `id`; false when it was seen within the bounds already.
    pub fn insert(&mut self, id: MsgId, now: Instant) -> bool {
        while let Some(&(old, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl && self.order.len() < self.capacity.max(1) {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&old) == Some(&at) {
                self.seen.remove(&old);
            }
        }
        if self.seen.contains_key(&id) {
            return false;
        }
        self.seen.insert(id, now);
        self.order.push_back((id, now));
        true
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

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> MsgId {
        MsgId([n; 16])
    }

    #[test]
    fn duplicates_are_refused_until_evicted_by_count_or_age() {
        let t0 = Instant::now();
        let mut c = SeenCache::new(2, Duration::from_secs(10));
        assert!(c.insert(id(1), t0));
        assert!(!c.insert(id(1), t0));
        assert!(c.insert(id(2), t0));
        assert!(c.insert(id(3), t0), "evicts id 1 by count");
        assert_eq!(c.len(), 2);
        assert!(c.insert(id(1), t0));
        let later = t0 + Duration::from_secs(11);
        assert!(c.insert(id(3), later), "id 3 aged out");
        assert_eq!(c.len(), 1);
    }
}
