//! Message ids: 8 bytes chosen at random when the node starts, then an
//! 8-byte counter, so ids are unique per node and across restarts.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oap_codec::MsgId;

/// Hands out [`MsgId`]s.
#[derive(Debug)]
pub struct MsgIdGen {
    prefix: [u8; 8],
    next: AtomicU64,
}

impl MsgIdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> MsgIdGen {
        MsgIdGen::with_prefix(random_u64().to_be_bytes())
    }

    /// A generator with a given prefix (tests).
    pub fn with_prefix(prefix: [u8; 8]) -> MsgIdGen {
        MsgIdGen { prefix, next: AtomicU64::new(0) }
    }

    /// The next id.
    pub fn next_id(&self) -> MsgId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.prefix);
        id[8..].copy_from_slice(&n.to_be_bytes());
        MsgId(id)
    }

    /// True when `id` is one this generator handed out already: a message
    /// this node published itself, coming back around a loop. Exact, so it
    /// replaces a seen-cache entry for every local publish.
    pub fn issued(&self, id: &MsgId) -> bool {
        let (prefix, counter) = id.0.split_at(8);
        let n = counter.try_into().map_or(u64::MAX, u64::from_be_bytes);
        prefix == self.prefix && n < self.next.load(Ordering::Relaxed)
    }
}

impl Default for MsgIdGen {
    fn default() -> MsgIdGen {
        MsgIdGen::new()
    }
}

/// 64 random bits: std's `RandomState` keys come from the OS's randomness;
/// the time and process id make two states in one process differ too.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_within_and_across_generators() {
        let a = MsgIdGen::new();
        let b = MsgIdGen::new();
        let ids: std::collections::HashSet<MsgId> = (0..1000).flat_map(|_| [a.next_id(), b.next_id()]).collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn issued_knows_exactly_the_ids_handed_out() {
        let a = MsgIdGen::with_prefix([7; 8]);
        let first = a.next_id();
        let second = a.next_id();
        assert!(a.issued(&first) && a.issued(&second));
        let mut future = second;
        future.0[15] += 1;
        assert!(!a.issued(&future), "a forged id past the counter is not ours yet");
        assert!(!a.issued(&MsgIdGen::with_prefix([8; 8]).next_id()), "another node's id");
    }
}
