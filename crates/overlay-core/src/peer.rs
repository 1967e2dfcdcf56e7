//! Relay-link dialers: one task per peer, reconnecting with exponential
//! back-off and jitter (capped at 30 s) for as long as the node runs.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::config::Peer;
use crate::session::{self, Meta, SessionCtx};

/// First pause after a failed or ended link.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between dials.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Time a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps a relay link to `peer` up until the node drains.
pub(crate) fn spawn_dialer(peer: Peer, ctx: Arc<SessionCtx>, ids: Arc<AtomicU64>) {
    let addr = peer.addr();
    let token = peer.token().map(|t| Bytes::copy_from_slice(t.trim().as_bytes()));
    let links = ctx.links.clone();
    links.spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut jitter = Jitter::new();
        loop {
            let connected = tokio::select! {
                biased;
                () = ctx.drain.cancelled() => return,
                r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => r,
            };
            match connected {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let meta = Meta { id: ids.fetch_add(1, Ordering::Relaxed), peer: addr, opened: Instant::now() };
                    let outcome = session::run(stream, meta, ctx.clone(), token.clone()).await;
                    if outcome.established {
                        backoff = BACKOFF_MIN;
                    }
                    tracing::info!(%addr, reason = outcome.reason.label(), "relay link to peer ended");
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "dial failed"),
                Err(_) => tracing::debug!(%addr, "dial timed out"),
            }
            let pause = jitter.spread(backoff);
            tokio::select! {
                biased;
                () = ctx.drain.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

/// Uniform jitter in `[d/2, d]` from a xorshift generator seeded by std's
/// per-process random keys, so restarted peers do not dial in lockstep.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(Instant::now().elapsed().as_nanos() as u64);
        Jitter(h.finish() | 1)
    }

    fn spread(&mut self, d: Duration) -> Duration {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        let half = d / 2;
        half + Duration::from_nanos(self.0 % (half.as_nanos() as u64 + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_half_to_full() {
        let mut j = Jitter::new();
        for _ in 0..1000 {
            let d = j.spread(Duration::from_secs(30));
            assert!(d >= Duration::from_secs(15) && d <= Duration::from_secs(30), "{d:?}");
        }
    }
}
