//! The delivering node's reorder window (OAP-1 section 4): a message id
//! carries its origin (a 6-byte prefix, random per node start) and the
//! origin's sequence number (5 bytes), so a node can hand each origin's
//! messages to its subscribers in publish order even when the broadcast
//! tree repairs itself under them (a message fetched by `GRAFT` arrives
//! after later ones that took the tree). A message that arrives ahead of a
//! gap is held until the gap fills or the window passes; then the gap is
//! given up, the held messages are delivered, and the gap is counted. A
//! message older than what was delivered already is delivered at once (and
//! counted). Bounded: origins and held messages per origin.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use oap_codec::Msg;

/// Origins tracked at most; the one quiet longest is forgotten first.
const MAX_ORIGINS: usize = 4096;
/// Messages held per origin at most: past it, the oldest gap is given up.
const MAX_HELD: usize = 1024;
/// Bytes of a message id naming its origin.
const ORIGIN_LEN: usize = 6;
/// Bytes of the origin's sequence number after it.
const SEQ_LEN: usize = 5;

type Origin = [u8; ORIGIN_LEN];

struct Stream {
    /// The sequence number delivered next.
    next: u64,
    /// Held messages by sequence number, with when each arrived.
    held: BTreeMap<u64, (Instant, Msg)>,
    last: Instant,
}

/// Per-origin reorder buffers.
pub struct Reorder {
    window: Duration,
    streams: HashMap<Origin, Stream>,
    /// Origins in the order they were last heard from (may hold stale
    /// entries; `streams[o].last` is the truth).
    lru: VecDeque<(Instant, Origin)>,
    /// Gaps given up and messages delivered after later ones.
    reordered: u64,
}

impl Reorder {
    /// Buffers that hold a message at most `window` (zero: never).
    pub fn new(window: Duration) -> Reorder {
        Reorder { window, streams: HashMap::new(), lru: VecDeque::new(), reordered: 0 }
    }

    /// Gaps given up, and messages delivered after later ones, so far.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Messages held now.
    pub fn held(&self) -> usize {
        self.streams.values().map(|s| s.held.len()).sum()
    }

    /// Takes a message that arrived at `now`; what may be delivered now
    /// goes to `out`, in order.
    pub fn push(&mut self, msg: Msg, now: Instant, out: &mut Vec<Msg>) {
        let (origin, seq) = split(&msg);
        if self.window.is_zero() {
            return out.push(msg);
        }
        let stream = match self.streams.get_mut(&origin) {
            Some(s) => s,
            None => {
                self.forget_quiet(now);
                self.lru.push_back((now, origin));
                // The first message heard from an origin sets where it is.
                self.streams.entry(origin).or_insert(Stream { next: seq, held: BTreeMap::new(), last: now })
            }
        };
        if stream.last != now {
            stream.last = now;
            self.lru.push_back((now, origin));
        }
        if seq < stream.next {
            // Behind what was delivered: a gap given up earlier, filled late.
            self.reordered += 1;
            return out.push(msg);
        }
        if seq > stream.next {
            stream.held.insert(seq, (now, msg));
            if stream.held.len() > MAX_HELD {
                self.reordered += skip(stream, out);
            }
            return;
        }
        out.push(msg);
        stream.next = seq + 1;
        release(stream, out);
    }

    /// Gives up the gaps whose next message has waited the window by `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Msg>) {
        for stream in self.streams.values_mut() {
            while stream.held.first_key_value().is_some_and(|(_, (at, _))| *at + self.window <= now) {
                self.reordered += skip(stream, out);
            }
        }
    }

    /// When [`Reorder::expire`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.held.first_key_value().map(|(_, (at, _))| *at + self.window)).min()
    }

    /// Forgets the origin quiet longest when the table is full (what it
    /// held is not lost: a full table only forms with many origins, and the
    /// stream forgotten is the quietest, whose holds have expired).
    fn forget_quiet(&mut self, now: Instant) {
        while self.streams.len() >= MAX_ORIGINS {
            let Some((at, origin)) = self.lru.pop_front() else { return };
            if self.streams.get(&origin).is_some_and(|s| s.last == at && s.held.is_empty()) {
                self.streams.remove(&origin);
            } else if self.streams.get(&origin).is_some_and(|s| s.last == at) {
                // Still holding: keep it, heard of again now.
                self.lru.push_back((now, origin));
                if let Some(s) = self.streams.get_mut(&origin) {
                    s.last = now;
                }
            }
        }
        // Stale entries (origins heard of since) are dropped as they come up.
        if self.lru.len() > 4 * MAX_ORIGINS {
            let streams = &self.streams;
            self.lru.retain(|(at, o)| streams.get(o).is_some_and(|s| s.last == *at));
        }
    }
}

/// Gives up the gap before the first held message; returns 1 (one gap).
fn skip(stream: &mut Stream, out: &mut Vec<Msg>) -> u64 {
    let Some((&first, _)) = stream.held.first_key_value() else { return 0 };
    stream.next = first;
    release(stream, out);
    1
}

/// Delivers the held messages that follow on from `next`.
fn release(stream: &mut Stream, out: &mut Vec<Msg>) {
    while let Some(entry) = stream.held.first_entry() {
        if *entry.key() != stream.next {
            return;
        }
        let (_, msg) = entry.remove();
        out.push(msg);
        stream.next += 1;
    }
}

/// A message's origin and sequence number.
fn split(msg: &Msg) -> (Origin, u64) {
    let id = &msg.msg_id.0;
    let mut origin = [0u8; ORIGIN_LEN];
    origin.copy_from_slice(&id[..ORIGIN_LEN]);
    let seq = id[ORIGIN_LEN..ORIGIN_LEN + SEQ_LEN].iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
    (origin, seq)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use oap_codec::{MsgId, Topic};

    use super::*;

    fn msg(origin: u8, seq: u64) -> Msg {
        let mut id = [origin; 16];
        id[ORIGIN_LEN..ORIGIN_LEN + SEQ_LEN].copy_from_slice(&seq.to_be_bytes()[3..]);
        Msg { topic: Topic::new(Bytes::from_static(b"t")).unwrap(), msg_id: MsgId(id), hops: 1, payload: Bytes::new() }
    }

    /// The tests' one clock read; every other time is an offset of it.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    fn seqs(out: &mut Vec<Msg>) -> Vec<u64> {
        out.drain(..).map(|m| split(&m).1).collect()
    }

    #[test]
    fn a_message_ahead_of_a_gap_waits_for_it_and_both_go_in_order() {
        let mut r = Reorder::new(Duration::from_millis(500));
        let t = t0();
        let mut out = Vec::new();
        r.push(msg(1, 10), t, &mut out);
        r.push(msg(1, 12), t, &mut out);
        r.push(msg(1, 13), t, &mut out);
        assert_eq!(seqs(&mut out), [10]);
        assert_eq!(r.held(), 2);
        r.push(msg(1, 11), t + Duration::from_millis(100), &mut out);
        assert_eq!(seqs(&mut out), [11, 12, 13]);
        assert_eq!((r.held(), r.reordered()), (0, 0));
        // Origins are independent.
        r.push(msg(2, 5), t, &mut out);
        assert_eq!(seqs(&mut out), [5]);
    }

    #[test]
    fn a_gap_is_given_up_after_the_window_and_a_late_fill_is_delivered_at_once() {
        let mut r = Reorder::new(Duration::from_millis(500));
        let t = t0();
        let mut out = Vec::new();
        r.push(msg(1, 0), t, &mut out);
        r.push(msg(1, 2), t, &mut out);
        assert_eq!(r.deadline(), Some(t + Duration::from_millis(500)));
        r.expire(t + Duration::from_millis(499), &mut out);
        assert_eq!(seqs(&mut out), [0]);
        r.expire(t + Duration::from_millis(500), &mut out);
        assert_eq!(seqs(&mut out), [2]);
        assert_eq!(r.reordered(), 1);
        r.push(msg(1, 1), t + Duration::from_secs(1), &mut out);
        assert_eq!(seqs(&mut out), [1], "late, but not lost");
        assert_eq!(r.reordered(), 2);
        assert_eq!(r.deadline(), None);
    }

    #[test]
    fn holding_is_bounded_per_origin() {
        let mut r = Reorder::new(Duration::from_secs(60));
        let t = t0();
        let mut out = Vec::new();
        r.push(msg(1, 0), t, &mut out);
        for seq in 2..=(MAX_HELD as u64 + 2) {
            r.push(msg(1, seq), t, &mut out);
        }
        assert!(r.held() <= MAX_HELD);
        assert_eq!(out.len(), 1 + MAX_HELD + 1, "the gap was given up: everything after it delivered");
        assert_eq!(r.reordered(), 1);
    }

    #[test]
    fn a_zero_window_delivers_as_messages_come() {
        let mut r = Reorder::new(Duration::ZERO);
        let mut out = Vec::new();
        r.push(msg(1, 3), t0(), &mut out);
        r.push(msg(1, 1), t0(), &mut out);
        assert_eq!(seqs(&mut out), [3, 1]);
    }
}
