//! Cuts the chaos load client's log into windows of publish time and says,
//! for each, what every subscriber expected to get it got.

use std::collections::HashMap;
use std::path::Path;

use crate::node::Failure;

/// A message: (publisher, sequence number).
type Key = (usize, u32);

/// The load client's log, read.
pub(crate) struct Log {
    /// Every acknowledged publish and its time, in time order.
    published: Vec<(Key, u128)>,
    /// Per subscriber (node index): each message's first delivery time.
    got: Vec<HashMap<Key, u128>>,
    /// Per subscriber: copies of messages it already had.
    pub(crate) duplicates: Vec<u64>,
}

/// Which subscribers a message published by `publisher` should reach.
pub(crate) type Audience<'a> = &'a dyn Fn(usize, usize) -> bool;

/// One window's result.
pub(crate) struct Window {
    /// Messages published in the window.
    pub(crate) messages: usize,
    /// Subscriber-message pairs expected, and delivered.
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// Per expected subscriber: delivered / expected.
    pub(crate) per_sub: Vec<(usize, u64, u64)>,
    /// Time from `from` to the first message after which every message of
    /// the window reached its whole audience (0: all did).
    pub(crate) full_after_ms: u128,
    /// Messages that missed someone: (publisher, seq, ms after `from`,
    /// subscribers missed), the first few.
    pub(crate) short: Vec<(usize, u32, u128, usize)>,
}

impl Log {
    pub(crate) fn read(path: &Path, subs: usize) -> Result<Log, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
        let mut log = Log { published: Vec::new(), got: vec![HashMap::new(); subs], duplicates: vec![0; subs] };
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<u128>().ok());
            match (f.first(), f.len()) {
                (Some(&"P"), 4) => {
                    if let (Some(p), Some(seq), Some(t)) = (num(1), num(2), num(3)) {
                        log.published.push(((p as usize, seq as u32), t));
                    }
                }
                (Some(&"D"), 5) => {
                    if let (Some(s), Some(p), Some(seq), Some(t)) = (num(1), num(2), num(3), num(4))
                        && let Some(got) = log.got.get_mut(s as usize)
                    {
                        // The first delivery's time is kept; later copies count.
                        match got.entry((p as usize, seq as u32)) {
                            std::collections::hash_map::Entry::Occupied(_) => log.duplicates[s as usize] += 1,
                            std::collections::hash_map::Entry::Vacant(slot) => {
                                slot.insert(t);
                            }
                        }
                    }
                }
                _ => return Err(Failure::new(format!("chaos log: bad line {line:?}"))),
            }
        }
        log.published.sort_by_key(|(_, t)| *t);
        Ok(log)
    }

    /// Messages published in `[from, to)` (wall ms) against `audience`.
    pub(crate) fn window(&self, from: u128, to: u128, audience: Audience<'_>) -> Window {
        let subs = self.got.len();
        let mut w =
            Window { messages: 0, expected: 0, delivered: 0, per_sub: Vec::new(), full_after_ms: 0, short: Vec::new() };
        let mut per: Vec<(u64, u64)> = vec![(0, 0); subs];
        let mut last_short = None;
        for &(key, t) in self.published.iter().filter(|(_, t)| (from..to).contains(t)) {
            w.messages += 1;
            let mut missed = 0;
            for (s, slot) in per.iter_mut().enumerate().filter(|(s, _)| audience(key.0, *s)) {
                slot.0 += 1;
                if self.got[s].contains_key(&key) {
                    slot.1 += 1;
                } else {
                    missed += 1;
                }
            }
            if missed > 0 {
                last_short = Some(t);
                if w.short.len() < 8 {
                    w.short.push((key.0, key.1, t - from, missed));
                }
            }
        }
        w.per_sub = per.iter().enumerate().filter(|(_, (e, _))| *e > 0).map(|(s, (e, d))| (s, *d, *e)).collect();
        w.expected = per.iter().map(|p| p.0).sum();
        w.delivered = per.iter().map(|p| p.1).sum();
        w.full_after_ms = last_short.map_or(0, |t| t + 1 - from);
        w
    }
}

impl Window {
    pub(crate) fn complete(&self) -> bool {
        self.delivered == self.expected
    }

    /// `delivered/expected` per subscriber, the short ones first.
    pub(crate) fn describe(&self) -> String {
        let mut short: Vec<String> =
            self.per_sub.iter().filter(|(_, d, e)| d < e).map(|(s, d, e)| format!("n{s} {d}/{e}")).collect();
        let whole = self.per_sub.len() - short.len();
        let each = self.per_sub.first().map_or(0, |(_, _, e)| *e);
        if whole > 0 {
            short.push(format!("{whole} subscribers complete ({each} each)"));
        }
        let first: Vec<String> =
            self.short.iter().map(|(p, seq, at, n)| format!("p{p}#{seq} at +{at} ms missed by {n}")).collect();
        let first = if first.is_empty() { String::new() } else { format!(" (first short: {})", first.join(", ")) };
        format!(
            "{} messages, delivered {}/{}: {}{first}",
            self.messages,
            self.delivered,
            self.expected,
            short.join(", ")
        )
    }
}
