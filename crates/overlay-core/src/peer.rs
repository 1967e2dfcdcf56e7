//! Relay-link dialers: one task per peer, reconnecting with exponential
//! back-off and jitter (capped at 30 s) for as long as the node runs.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ron_transport::tls::TlsInfo;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Peer;
use crate::session::{self, Meta, SessionCtx};

/// First pause after a failed or ended link.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between dials.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Time a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A link that stayed up this long resets the back-off; one that ends
/// sooner (a refused token, a GOAWAY right after the hello) counts as a
/// failed dial, so such a peer is not redialed ten times a second.
const LINK_STABLE: Duration = Duration::from_secs(10);

/// Keeps a relay link to `peer` up until `stop` fires (a child of the
/// node's drain token, also fired by `remove_peer`).
pub(crate) fn spawn_dialer(
    peer: Peer,
    ctx: Arc<SessionCtx>,
    ids: Arc<AtomicU64>,
    tls: Option<Arc<ClientConfig>>,
    stop: CancellationToken,
) {
    let addr = peer.addr();
    let tls_name = peer.tls_name();
    let token = peer.token().map(|t| Bytes::copy_from_slice(t.trim().as_bytes()));
    let links = ctx.links.clone();
    links.spawn(async move {
        let mut backoff = BACKOFF_MIN;
        let mut jitter = Jitter::new();
        loop {
            let connected = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => r,
            };
            match connected {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let opened = Instant::now();
                    let meta =
                        Meta { id: ids.fetch_add(1, Ordering::Relaxed), peer: addr, opened, tls: None, dialed: true };
                    let outcome = match &tls {
                        None => Some(session::run(stream, meta, ctx.clone(), token.clone()).await),
                        Some(config) => match secure(stream, config, &tls_name, ctx.limits.handshake_timeout).await {
                            Ok((stream, info)) => {
                                let meta = Meta { tls: Some(info), ..meta };
                                Some(session::run(stream, meta, ctx.clone(), token.clone()).await)
                            }
                            Err(e) => {
                                tracing::warn!(%addr, name = %tls_name, error = %e, "TLS to peer failed");
                                None
                            }
                        },
                    };
                    if let Some(outcome) = outcome {
                        if outcome.established && opened.elapsed() >= LINK_STABLE {
                            backoff = BACKOFF_MIN;
                        }
                        tracing::info!(%addr, reason = outcome.reason.label(), "relay link to peer ended");
                    }
                }
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "dial failed"),
                Err(_) => tracing::debug!(%addr, "dial timed out"),
            }
            let pause = jitter.spread(backoff);
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    });
}

/// The TLS client handshake to a peer, checking its certificate for `name`.
async fn secure(
    tcp: TcpStream,
    config: &Arc<ClientConfig>,
    name: &str,
    timeout: Duration,
) -> Result<(tokio_rustls::client::TlsStream<TcpStream>, TlsInfo), String> {
    tokio::time::timeout(timeout, ron_transport::tls::connect(tcp, config.clone(), name))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| e.to_string())
}

/// Uniform jitter in `[d/2, d]` from a xorshift generator seeded by std's
/// per-process random keys, so restarted peers do not dial in lockstep.
struct Jitter(u64);

impl Jitter {
    fn new() -> Jitter {
        // A hasher with fresh random keys: its empty hash is a random seed.
        Jitter(RandomState::new().build_hasher().finish() | 1)
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
