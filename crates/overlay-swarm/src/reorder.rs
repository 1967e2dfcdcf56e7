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

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use oap_codec::Msg;

/// Origins tracked at most; past it, the one quiet longest that holds
/// nothing is forgotten, and when all hold something a new origin's
/// messages are delivered as they come (untracked).
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
    /// Messages held in all streams.
    held: usize,
    /// Gaps given up and messages delivered after later ones.
    reordered: u64,
}

impl Reorder {
    /// Buffers that hold a message at most `window` (zero: never).
    pub fn new(window: Duration) -> Reorder {
        Reorder { window, streams: HashMap::new(), held: 0, reordered: 0 }
    }

    /// Gaps given up, and messages delivered after later ones, so far.
    pub fn reordered(&self) -> u64 {
        self.reordered
    }

    /// Messages held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Takes a message that arrived at `now`; what may be delivered now
    /// goes to `out`, in order.
    pub fn push(&mut self, msg: Msg, now: Instant, out: &mut Vec<Msg>) {
        let (origin, seq) = split(&msg);
        if self.window.is_zero() {
            return out.push(msg);
        }
        if !self.streams.contains_key(&origin) && !self.make_room() {
            // Every tracked origin holds something: this one goes untracked.
            return out.push(msg);
        }
        // The first message heard from an origin sets where it is.
        let stream = self.streams.entry(origin).or_insert(Stream { next: seq, held: BTreeMap::new(), last: now });
        stream.last = now;
        if seq < stream.next {
            // Behind what was delivered: a gap given up earlier, filled late.
            self.reordered += 1;
            return out.push(msg);
        }
        if seq > stream.next {
            if stream.held.contains_key(&seq) {
                // Another message with this number (the digest differs):
                // delivered as it comes, the one held keeps its place.
                self.reordered += 1;
                return out.push(msg);
            }
            stream.held.insert(seq, (now, msg));
            self.held += 1;
            if stream.held.len() > MAX_HELD {
                let before = stream.held.len();
                self.reordered += skip(stream, out);
                self.held -= before - stream.held.len();
            }
            return;
        }
        out.push(msg);
        stream.next = seq + 1;
        let before = stream.held.len();
        release(stream, out);
        self.held -= before - stream.held.len();
    }

    /// Gives up the gaps whose next message has waited the window by `now`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Msg>) {
        if self.held == 0 {
            return;
        }
        for stream in self.streams.values_mut() {
            let before = stream.held.len();
            while stream.held.first_key_value().is_some_and(|(_, (at, _))| *at + self.window <= now) {
                self.reordered += skip(stream, out);
            }
            self.held -= before - stream.held.len();
        }
    }

    /// When [`Reorder::expire`] next has something to do.
    pub fn deadline(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        self.streams.values().filter_map(|s| s.held.first_key_value().map(|(_, (at, _))| *at + self.window)).min()
    }

    /// Room for one more origin: true when there is, or when the origin
    /// quiet longest among those holding nothing could be forgotten (one
    /// pass over the table, only when it is full).
    fn make_room(&mut self) -> bool {
        if self.streams.len() < MAX_ORIGINS {
            return true;
        }
        let quietest = self.streams.iter().filter(|(_, s)| s.held.is_empty()).min_by_key(|(_, s)| s.last);
        match quietest.map(|(o, _)| *o) {
            Some(origin) => {
                self.streams.remove(&origin);
                true
            }
            None => false,
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
    fn a_full_table_forgets_a_quiet_origin_or_leaves_a_new_one_untracked() {
        let mut r = Reorder::new(Duration::from_secs(60));
        let t = t0();
        let mut out = Vec::new();
        let at = |i: u32| {
            let mut m = msg(0, 0);
            m.msg_id.0[..4].copy_from_slice(&i.to_be_bytes());
            m
        };
        // Every origin holds a message (its number 1 waits for 0's successor).
        for i in 0..MAX_ORIGINS as u32 {
            let mut first = at(i);
            first.msg_id.0[ORIGIN_LEN + SEQ_LEN - 1] = 0;
            r.push(first, t, &mut out);
            let mut ahead = at(i);
            ahead.msg_id.0[ORIGIN_LEN + SEQ_LEN - 1] = 2;
            r.push(ahead, t, &mut out);
        }
        assert_eq!(r.held(), MAX_ORIGINS);
        // A new origin: delivered at once, untracked (and no endless search).
        out.clear();
        r.push(at(u32::MAX), t, &mut out);
        assert_eq!(out.len(), 1);
        // Once a gap is given up, a quiet origin makes room again.
        r.expire(t + Duration::from_secs(60), &mut out);
        assert_eq!(r.held(), 0);
        out.clear();
        let mut newer = at(u32::MAX - 1);
        newer.msg_id.0[ORIGIN_LEN + SEQ_LEN - 1] = 5;
        r.push(newer, t + Duration::from_secs(61), &mut out);
        let mut gap = at(u32::MAX - 1);
        gap.msg_id.0[ORIGIN_LEN + SEQ_LEN - 1] = 7;
        r.push(gap, t + Duration::from_secs(61), &mut out);
        assert_eq!((out.len(), r.held()), (1, 1), "tracked: the message past the gap is held");
    }

    #[test]
    fn a_second_message_with_a_held_number_does_not_replace_it() {
        let mut r = Reorder::new(Duration::from_millis(500));
        let t = t0();
        let mut out = Vec::new();
        r.push(msg(1, 0), t, &mut out);
        r.push(msg(1, 2), t, &mut out);
        let mut other = msg(1, 2);
        other.msg_id.0[15] ^= 0xff;
        r.push(other.clone(), t, &mut out);
        assert_eq!(out.last(), Some(&other), "delivered as it came");
        r.push(msg(1, 1), t, &mut out);
        assert_eq!(seqs(&mut out), [0, 2, 1, 2]);
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
