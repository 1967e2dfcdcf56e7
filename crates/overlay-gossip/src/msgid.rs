//! Message ids that bind their content, so a third party can neither
//! predict a future id nor use a real one for other content.
//!
//! ```text
//! msg_id (16 bytes) = prefix (6, random per node start) | sequence (5) | digest (5)
//! digest = first 5 bytes of rapidhash(payload, seed = rapidhash(topic, seed = prefix | sequence))
//! ```
//!
//! A node checks the digest of every `MSG` it receives on a relay link
//! ([`binds`]) before the id enters its seen-cache: a frame that carries a
//! predicted id (of another node's next message) with other content fails
//! the check and cannot shadow the real message. A forger who wants its id
//! to collide with a real message's must guess a 40-bit digest of content it
//! has not seen. A message published while the node has no relay link
//! never reaches another node, so its digest is left zero (no hashing).
//! The digest is a fast, non-cryptographic hash: it stops
//! shadowing, not a relay that sends content of its own under a fresh id
//! (that takes relay tokens, OAP-1 section 6).

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use oap_codec::{MsgId, Topic};
use rapidhash::v3::{RapidSecrets, rapidhash_v3_seeded};

/// Bytes of a [`MsgId`] naming the node that made it.
pub const PREFIX_LEN: usize = 6;
/// Bytes of the per-node sequence number that follow the prefix.
const SEQ_LEN: usize = 5;
/// Where the digest starts: prefix and sequence come before it.
const DIGEST_AT: usize = PREFIX_LEN + SEQ_LEN;

/// Hands out [`MsgId`]s.
#[derive(Debug)]
pub struct MsgIdGen {
    prefix: [u8; PREFIX_LEN],
    next: AtomicU64,
}

impl MsgIdGen {
    /// A generator with a fresh random prefix.
    pub fn new() -> MsgIdGen {
        let random = random_u64().to_be_bytes();
        let mut prefix = [0u8; PREFIX_LEN];
        prefix.copy_from_slice(&random[..PREFIX_LEN]);
        MsgIdGen::with_prefix(prefix)
    }

    /// A generator with a given prefix (tests, simulations).
    pub fn with_prefix(prefix: [u8; PREFIX_LEN]) -> MsgIdGen {
        MsgIdGen { prefix, next: AtomicU64::new(0) }
    }

    /// The id of the next message this node publishes on `topic`. The
    /// sequence wraps after 2^40 messages; ids stay distinct while the
    /// content differs, which is all a seen-cache window needs.
    pub fn next_id(&self, topic: &Topic, payload: &[u8]) -> MsgId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..PREFIX_LEN].copy_from_slice(&self.prefix);
        id[PREFIX_LEN..DIGEST_AT].copy_from_slice(&n.to_be_bytes()[8 - SEQ_LEN..]);
        let digest = digest(&id, topic, payload);
        id[DIGEST_AT..].copy_from_slice(&digest);
        MsgId(id)
    }

    /// The id of a message that will not leave this node (no relay link
    /// is attached): unique like [`MsgIdGen::next_id`], with a zero digest,
    /// since no other node will check it.
    pub fn next_local_id(&self) -> MsgId {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 16];
        id[..PREFIX_LEN].copy_from_slice(&self.prefix);
        id[PREFIX_LEN..DIGEST_AT].copy_from_slice(&n.to_be_bytes()[8 - SEQ_LEN..]);
        MsgId(id)
    }

    /// True when `id` carries this node's prefix: a message of ours that
    /// came back around a loop, or a forgery of one. Neither is relayed, and
    /// neither takes a seen-cache entry.
    pub fn issued(&self, id: &MsgId) -> bool {
        id.0[..PREFIX_LEN] == self.prefix
    }
}

impl Default for MsgIdGen {
    fn default() -> MsgIdGen {
        MsgIdGen::new()
    }
}

/// True when `id`'s digest is the one its topic and payload give: checked on
/// every relayed `MSG` before its id is remembered.
pub fn binds(id: &MsgId, topic: &Topic, payload: &[u8]) -> bool {
    id.0[DIGEST_AT..] == digest(&id.0, topic, payload)
}

/// The digest of `(prefix, sequence, topic, payload)`; only the first
/// [`DIGEST_AT`] bytes of `id` are read.
fn digest(id: &[u8; 16], topic: &Topic, payload: &[u8]) -> [u8; 16 - DIGEST_AT] {
    let mut head = [0u8; 16];
    head[..DIGEST_AT].copy_from_slice(&id[..DIGEST_AT]);
    let key = u128::from_be_bytes(head);
    let seed = (key >> 64) as u64 ^ (key as u64).rotate_left(29);
    let over_topic = rapidhash_v3_seeded(topic.as_bytes(), &RapidSecrets::seed_cpp(seed));
    let over_payload = rapidhash_v3_seeded(payload, &RapidSecrets::seed_cpp(over_topic));
    let mut out = [0u8; 16 - DIGEST_AT];
    out.copy_from_slice(&over_payload.to_be_bytes()[..16 - DIGEST_AT]);
    out
}

/// 64 random bits: std's `RandomState` keys come from the OS's randomness;
/// the time and process id make two states in one process differ too.
pub(crate) fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)); // clock-ok: entropy for the id prefix, never a time the logic uses
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic() -> Topic {
        "a.b".parse().unwrap()
    }

    #[test]
    fn ids_are_unique_within_and_across_generators() {
        let (a, b) = (MsgIdGen::new(), MsgIdGen::new());
        let ids: std::collections::HashSet<MsgId> =
            (0..1000).flat_map(|_| [a.next_id(&topic(), b"same"), b.next_id(&topic(), b"same")]).collect();
        assert_eq!(ids.len(), 2000);
    }

    #[test]
    fn an_id_binds_its_topic_and_payload() {
        let g = MsgIdGen::with_prefix([7; PREFIX_LEN]);
        let id = g.next_id(&topic(), b"payload");
        assert!(binds(&id, &topic(), b"payload"));
        assert!(!binds(&id, &topic(), b"payloaD"), "other content");
        assert!(!binds(&id, &"a.c".parse().unwrap(), b"payload"), "other topic");
        let mut predicted = id;
        predicted.0[DIGEST_AT - 1] += 1;
        assert!(!binds(&predicted, &topic(), b"payload"), "the next sequence with this content needs its own digest");
    }

    #[test]
    fn issued_knows_its_own_prefix() {
        let a = MsgIdGen::with_prefix([7; PREFIX_LEN]);
        assert!(a.issued(&a.next_id(&topic(), b"")));
        assert!(!a.issued(&MsgIdGen::with_prefix([8; PREFIX_LEN]).next_id(&topic(), b"")), "another node's id");
    }
}
