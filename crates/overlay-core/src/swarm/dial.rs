//! Dial pacing: a back-off per address and a rate for all dials together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use overlay_swarm::Rng;

/// Dials started per second at most, to any addresses: what a forged
/// `SHUFFLE` full of third parties' addresses could make this node do.
const DIALS_PER_SEC: u32 = 32;
/// First pause before an address whose dial failed is dialed again; it
/// doubles with each failure in a row, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two dials of one address.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Addresses whose back-off is remembered at most (the soonest due is
/// forgotten first).
const MAX_BACKOFFS: usize = 1024;

/// Paces dials: an address waits out a back-off after each failed dial
/// (jittered within `[d/2, d]`, so restarted peers do not dial in
/// lockstep; a link that comes up clears it), and all dials together stay
/// under [`DIALS_PER_SEC`].
pub(crate) struct DialLimiter {
    /// Per address: not before when, and the next back-off.
    backoff: HashMap<SocketAddr, (Instant, Duration)>,
    /// The current second's start and the dials started in it.
    second: Option<(Instant, u32)>,
    jitter: Rng,
}

impl DialLimiter {
    /// A limiter whose jitter is seeded with `seed`.
    pub(crate) fn new(seed: u64) -> DialLimiter {
        DialLimiter { backoff: HashMap::new(), second: None, jitter: Rng::new(seed) }
    }

    /// Whether `addr` may be dialed at `now` (counting the dial if so).
    pub(crate) fn allow(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.backoff.get(&addr).is_some_and(|(not_before, _)| now < *not_before) {
            return false;
        }
        let (start, started) = self.second.get_or_insert((now, 0));
        if now >= *start + Duration::from_secs(1) {
            (*start, *started) = (now, 0);
        }
        if *started >= DIALS_PER_SEC {
            return false;
        }
        *started += 1;
        true
    }

    /// A dial of `addr` failed at `now`: its back-off grows.
    pub(crate) fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let pause = self.backoff.get(&addr).map_or(BACKOFF_MIN, |(_, next)| *next);
        if self.backoff.len() >= MAX_BACKOFFS
            && !self.backoff.contains_key(&addr)
            && let Some(soonest) = self.backoff.iter().min_by_key(|(_, (at, _))| *at).map(|(a, _)| *a)
        {
            self.backoff.remove(&soonest);
        }
        let at = now + self.spread(pause);
        self.backoff.insert(addr, (at, (pause * 2).min(BACKOFF_MAX)));
    }

    /// `addr` asked not to be dialed before `until` (a `GOAWAY`'s
    /// `reconnect_after_ms`).
    pub(crate) fn hold(&mut self, addr: SocketAddr, until: Instant) {
        let next = self.backoff.get(&addr).map_or(BACKOFF_MIN, |(_, next)| *next);
        let at = self.backoff.get(&addr).map_or(until, |(at, _)| (*at).max(until));
        if self.backoff.len() < MAX_BACKOFFS || self.backoff.contains_key(&addr) {
            self.backoff.insert(addr, (at, next));
        }
    }

    /// A link to `addr` came up: it is dialed freely again.
    pub(crate) fn succeeded(&mut self, addr: SocketAddr) {
        self.backoff.remove(&addr);
    }

    /// Uniform in `[d/2, d]`.
    fn spread(&mut self, d: Duration) -> Duration {
        let half = d / 2;
        half + Duration::from_nanos(self.jitter.next_u64() % (half.as_nanos() as u64 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_address_waits_a_doubling_jittered_back_off_and_all_dials_a_rate() {
        let mut limiter = DialLimiter::new(7);
        let a: SocketAddr = "192.0.2.1:9500".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.allow(a, t0));
        let mut now = t0;
        for k in 0..8u32 {
            limiter.failed(a, now);
            let (at, _) = limiter.backoff[&a];
            let pause = (BACKOFF_MIN * 2u32.pow(k)).min(BACKOFF_MAX);
            assert!(at - now >= pause / 2 && at - now <= pause, "failure {k}: {:?}", at - now);
            assert!(!limiter.allow(a, at - Duration::from_millis(1)));
            now = at + Duration::from_secs(1);
            assert!(limiter.allow(a, now));
        }
        limiter.succeeded(a);
        assert!(limiter.allow(a, now));
        // All addresses together: DIALS_PER_SEC a second.
        let later = now + Duration::from_secs(5);
        let allowed =
            (0..100u16).filter(|i| limiter.allow(SocketAddr::from(([198, 51, 100, 1], 1000 + i)), later)).count();
        assert_eq!(allowed, DIALS_PER_SEC as usize);
        assert!(limiter.allow(SocketAddr::from(([198, 51, 100, 2], 1)), later + Duration::from_secs(1)));
        // A GOAWAY's reconnect_after_ms is waited out.
        let b: SocketAddr = "192.0.2.2:9500".parse().unwrap();
        let t = later + Duration::from_secs(10);
        limiter.hold(b, t + Duration::from_secs(3));
        assert!(!limiter.allow(b, t + Duration::from_secs(2)));
        assert!(limiter.allow(b, t + Duration::from_secs(3)));
    }
}
