//! Relay-link dials: the swarm asks for one address at a time (a seed, a
//! peer to take into its views, a lost peer to probe); each dial is one
//! connection attempt, and its outcome goes back to the swarm, which paces
//! its own retries (repairs, probes).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ron_transport::tls::TlsInfo;
use rustls::ClientConfig;
use tokio::net::TcpStream;

use crate::config::Peer;
use crate::session::{self, Meta, SessionCtx};

/// Time a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Dials `peer` once and serves the link until it ends. A dial that never
/// brought a link to the swarm (refused, timed out, TLS or hello failed, a
/// peer without the swarm) is reported to it as failed.
pub(crate) async fn dial(
    addr: SocketAddr,
    peer: Peer,
    ctx: Arc<SessionCtx>,
    ids: Arc<AtomicU64>,
    tls: Option<Arc<ClientConfig>>,
) {
    // The session follows the node's drain itself (GOAWAY, flush).
    if !connect_and_serve(addr, &peer, &ctx, &ids, tls.as_ref()).await {
        ctx.swarm.dial_failed(addr, crate::swarm::tokio_now());
    }
}

async fn connect_and_serve(
    addr: SocketAddr,
    peer: &Peer,
    ctx: &Arc<SessionCtx>,
    ids: &AtomicU64,
    tls: Option<&Arc<ClientConfig>>,
) -> bool {
    let token = peer.token().map(|t| Bytes::copy_from_slice(t.trim().as_bytes()));
    let connected = tokio::select! {
        biased;
        () = ctx.drain.cancelled() => return false,
        r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => r,
    };
    let stream = match connected {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%addr, error = %e, "dial failed");
            return false;
        }
        Err(_) => {
            tracing::debug!(%addr, "dial timed out");
            return false;
        }
    };
    let _ = stream.set_nodelay(true);
    let meta =
        Meta { id: ids.fetch_add(1, Ordering::Relaxed), peer: addr, opened: Instant::now(), tls: None, dialed: true };
    let outcome = match tls {
        None => session::run(stream, meta, ctx.clone(), dialed(token, None)).await,
        Some(config) => match secure(stream, config, &peer.tls_name(), ctx.limits.handshake_timeout).await {
            Ok((stream, info)) => {
                // The peer's id must be the one its certificate proves.
                let expect = ron_transport::tls::peer_public_key(stream.get_ref().1).map(|k| crate::swarm::key_id(&k));
                session::run(stream, Meta { tls: Some(info), ..meta }, ctx.clone(), dialed(token, expect)).await
            }
            Err(e) => {
                tracing::warn!(%addr, name = %peer.tls_name(), error = %e, "TLS to peer failed");
                return false;
            }
        },
    };
    if outcome.offered {
        tracing::info!(%addr, reason = outcome.reason.label(), "relay link to peer ended");
    }
    outcome.offered
}

/// What a dialed session brings, when it brings anything.
fn dialed(token: Option<Bytes>, expect: Option<oap_codec::NodeId>) -> session::Credential {
    (token.is_some() || expect.is_some()).then(|| Box::new(session::Dialed { token, expect }))
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
