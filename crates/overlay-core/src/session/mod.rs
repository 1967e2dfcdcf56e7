//! One OAP/1 session: the hello exchange under `handshake_timeout`, then a
//! reader and a writer joined by the bounded reply queue of spec section 4.
//! Both are futures of the session's one task, the writer polled right after
//! the reader: a reply costs no wake-up and no thread hop, and an idle session
//! is one task (see `established`).
//!
//! The reader never waits on anything unbounded: every read has a deadline
//! (idle or `read_timeout`), every reply waits on a bounded queue, and the
//! node's drain and kill tokens end it.

mod join;
mod reader;
mod replies;
mod state;
mod writer;

pub(crate) use replies::ReplyQueue;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use oap_codec::{Caps, ErrorCode, Frame, HELLO_LEN, Hello, HelloError, Negotiated};
use overlay_gossip::Registry;
use ron_transport::DisconnectReason;
use ron_transport::tls::TlsInfo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::auth::AuthPolicy;
use crate::events::OverlayEvent;
use crate::handler::{DataHandler, SessionInfo};
use crate::metrics::{HandshakeFail, OverlayMetrics};
use crate::swarm::{LinkIo, SwarmDriver};
use state::{Env, SessionState};

/// Longest a node-closed session keeps reading (and discarding) so its last
/// frame is not lost to a TCP reset.
const LINGER: Duration = Duration::from_secs(1);
/// Bytes a lingering session discards at most before it closes anyway.
const LINGER_MAX_BYTES: usize = 1 << 20;
/// Longest the writer gets to flush a close the reader decided (idle, read
/// timeout, a fatal error) before the session is reset: such a peer has
/// stopped talking, and a writer blocked on it has stopped being read.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// A stream the node can abort with a TCP reset (`SO_LINGER` 0, then close):
/// for a session it gives up on because its peer does not read, so no
/// unread send buffer stays behind in the kernel. Streams without a kernel
/// buffer (in-memory ones) do nothing.
pub trait Reset {
    /// Makes the coming close a reset.
    fn reset_on_close(&self);
}

impl Reset for tokio::io::DuplexStream {
    fn reset_on_close(&self) {}
}

impl Reset for Box<ron_transport::Conn> {
    fn reset_on_close(&self) {
        self.get_ref().reset_on_close();
    }
}

impl Reset for tokio::net::TcpStream {
    fn reset_on_close(&self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0");
        }
    }
}

impl Reset for tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    fn reset_on_close(&self) {
        self.get_ref().0.reset_on_close();
    }
}

/// Session limits, fixed at node start.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub(crate) caps: Caps,
    pub(crate) max_frame: u32,
    pub(crate) handshake_timeout: Duration,
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) tx_queue: usize,
    pub(crate) tx_watermark: usize,
    pub(crate) drain_window_ms: u32,
    pub(crate) publish_stall: Duration,
    /// Inbound relay links must present the dialing node's certificate
    /// (TLS with a CA): their `NODE` id is checked against it.
    pub(crate) node_certs: bool,
}

/// What every session of a node shares.
pub(crate) struct SessionCtx {
    pub(crate) limits: Limits,
    pub(crate) metrics: OverlayMetrics,
    pub(crate) handler: Arc<dyn DataHandler>,
    /// Fires at shutdown step 2: each session sends `GOAWAY 503` and flushes.
    pub(crate) drain: CancellationToken,
    /// Fires when the drain deadline passes: every session stops at once.
    pub(crate) kill: CancellationToken,
    /// Session writers (and other node tasks), awaited by shutdown.
    pub(crate) tasks: TaskTracker,
    /// Dialers and the relay sessions they open; drained like accepted ones.
    pub(crate) links: TaskTracker,
    /// Subscriptions, relay links and fanout.
    pub(crate) registry: Arc<Registry>,
    /// Node events (`PeerUp`/`PeerDown` come from here).
    pub(crate) events: broadcast::Sender<OverlayEvent>,
    /// Token checking, when the node has a root key.
    pub(crate) auth: Option<AuthPolicy>,
    /// The node's swarm.
    pub(crate) swarm: Arc<SwarmDriver>,
    /// The seeds it joins through, with what a dial to each presents.
    pub(crate) seeds: Arc<crate::seeds::Seeds>,
}

/// What identifies a connection, whichever side opened it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) opened: Instant,
    /// What the TLS handshake negotiated; `None` on plain TCP.
    pub(crate) tls: Option<TlsInfo>,
    /// This node dialed the connection (a relay link to a configured peer).
    pub(crate) dialed: bool,
}

impl SessionCtx {
    /// What each session core works with.
    fn env(&self) -> Env<'_> {
        Env {
            limits: &self.limits,
            registry: &self.registry,
            metrics: &self.metrics,
            handler: &*self.handler,
            auth: self.auth.as_ref(),
            swarm: &self.swarm,
        }
    }
}

/// What a session knows of its peer before the hello: on a dialed relay
/// link the `op = relay` token it presents first; on any link the node id
/// the peer must say it has (the one its TLS certificate proves, a server
/// certificate when dialed, a client certificate when accepted). Boxed: accepted sessions, the many, carry a null
/// pointer for it through every step of their futures.
#[derive(Debug, Default)]
pub(crate) struct Dialed {
    pub(crate) token: Option<bytes::Bytes>,
    pub(crate) expect: Option<oap_codec::NodeId>,
}

/// See [`Dialed`].
pub(crate) type Credential = Option<Box<Dialed>>;

/// How a session ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outcome {
    pub(crate) reason: DisconnectReason,
    /// The link was offered to the swarm (a dial that opened it was
    /// reported to the swarm, whatever it answered).
    pub(crate) offered: bool,
}

/// Announces a relay link the swarm took; the peer's id goes on the
/// session's log lines from here on.
pub(crate) fn peer_up(ctx: &SessionCtx, peer: SocketAddr, node: oap_codec::NodeId) {
    ctx.metrics.peers_connected.increment(1.0);
    let _ = ctx.events.send(OverlayEvent::PeerUp { peer });
    tracing::Span::current().record("node", tracing::field::display(node));
    tracing::info!("relay link up");
}

/// Announces a relay link that ended.
pub(crate) fn peer_down(ctx: &SessionCtx, peer: SocketAddr) {
    ctx.metrics.peers_connected.decrement(1.0);
    let _ = ctx.events.send(OverlayEvent::PeerDown { peer });
    tracing::info!("relay link down");
}

/// Serves one connection until it ends, and says why.
pub(crate) async fn run<S>(io: S, meta: Meta, ctx: Arc<SessionCtx>, credential: Credential) -> Outcome
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    let kx_group = meta.tls.map(|t| t.kx_group);
    let span = tracing::info_span!("session", peer = %meta.peer, id = meta.id, kx_group, node = tracing::field::Empty);
    serve(io, meta, ctx, credential).instrument(span).await
}

async fn serve<S>(mut io: S, meta: Meta, ctx: Arc<SessionCtx>, credential: Credential) -> Outcome
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    let m = &ctx.metrics;
    m.connections_total.increment(1);
    if let Some(tls) = meta.tls {
        m.tls_session(tls.kx_group);
    }
    let _active = Active::new(m, meta.opened);
    let info = SessionInfo { id: meta.id, peer: meta.peer, caps: Caps::empty() };
    let shaken = tokio::select! {
        biased;
        () = ctx.kill.cancelled() => Err(None),
        // Boxed, like the other once-per-session steps (linger): their state
        // would otherwise sit in the session's future for its whole life.
        r = Box::pin(handshake(&mut io, &ctx, credential.as_ref().is_some_and(|d| d.token.is_some()), meta.tls.is_some_and(|t| t.hybrid))) => r.map_err(Some),
    };
    let outcome = match shaken {
        Err(None) => Outcome { reason: DisconnectReason::Shutdown, offered: false },
        Ok(negotiated) => {
            m.accept_latency.record(meta.opened.elapsed().as_secs_f64());
            tracing::debug!(caps = ?negotiated.caps, "session open");
            let info = SessionInfo { caps: negotiated.caps, ..info };
            let (reason, offered) = established(io, info, &ctx, credential, meta.dialed).await;
            Outcome { reason, offered }
        }
        Err(Some(fail)) => {
            m.handshake_fail(fail);
            tracing::debug!(reason = fail.label(), "handshake failed");
            Outcome { reason: DisconnectReason::Handshake, offered: false }
        }
    };
    m.session_closed(outcome.reason);
    tracing::debug!(reason = outcome.reason.label(), "session closed");
    outcome
}

/// Counts a session in `overlay_sessions_active` for as long as it lives,
/// also when its task unwinds.
struct Active<'a> {
    metrics: &'a OverlayMetrics,
    opened: Instant,
}

impl<'a> Active<'a> {
    fn new(metrics: &'a OverlayMetrics, opened: Instant) -> Active<'a> {
        metrics.sessions_active.increment(1.0);
        Active { metrics, opened }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.metrics.sessions_active.decrement(1.0);
        self.metrics.conn_lifetime.record(self.opened.elapsed().as_secs_f64());
    }
}

/// Spec section 1: send our hello at once, read theirs within the timeout,
/// check magic, version and caps in that order.
async fn handshake<S>(
    io: &mut S,
    ctx: &SessionCtx,
    presents_token: bool,
    hybrid_tls: bool,
) -> Result<Negotiated, HandshakeFail>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &ctx.limits;
    let mut caps = limits.caps;
    // A dialer with a token speaks AUTH even when this node checks none.
    if presents_token {
        caps = caps | Caps::AUTH_V1;
    }
    // Section 7: PQ_HYBRID exactly when this connection's TLS is hybrid.
    if hybrid_tls {
        caps = caps | Caps::PQ_HYBRID;
    }
    let ours = Hello::new(caps).encode();
    let exchange = async {
        io.write_all(&ours).await?;
        let mut theirs = [0u8; HELLO_LEN];
        io.read_exact(&mut theirs).await?;
        Ok::<_, io::Error>(theirs)
    };
    let theirs = match tokio::time::timeout(limits.handshake_timeout, exchange).await {
        Err(_) => return Err(HandshakeFail::Timeout),
        Ok(Err(_)) => return Err(HandshakeFail::Io),
        Ok(Ok(bytes)) => bytes,
    };
    let refused = match Hello::decode(&theirs).and_then(|hello| Hello::negotiate(caps, &hello)) {
        Ok(negotiated) => return Ok(negotiated),
        Err(e) => e,
    };
    if refused.sends_error() {
        let mut out = BytesMut::new();
        Frame::error(ErrorCode::BadRequest, 0, refused.to_string()).encode_into(&mut out);
        let send = async {
            io.write_all(&out).await?;
            io.shutdown().await
        };
        if let Ok(Ok(())) = tokio::time::timeout(limits.write_timeout, send).await {
            // Frames sent right behind the hello must not turn our close into
            // a reset that destroys the ERROR.
            linger(io, LINGER, &ctx.kill).await;
        }
    }
    Err(match refused {
        HelloError::Preamble(_) => HandshakeFail::Preamble,
        HelloError::Version(_) => HandshakeFail::Version,
        _ => HandshakeFail::Caps,
    })
}

async fn established<S>(
    io: S,
    info: SessionInfo,
    ctx: &Arc<SessionCtx>,
    credential: Credential,
    dialed: bool,
) -> (DisconnectReason, bool)
where
    S: AsyncRead + AsyncWrite + Reset + Unpin + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let swarm = info.caps.contains(Caps::PEER_V1 | Caps::SWARM_V1);
    let Dialed { token, expect } = credential.map(|d| *d).unwrap_or_default();
    let link_io = swarm.then(|| LinkIo::new(ctx.registry.config().slow_consumer_timeout, expect));
    let control = link_io.as_ref().map(|io| io.control.clone());
    let close = link_io.as_ref().map(|io| io.close.clone());
    let queue = ReplyQueue::new(ctx.limits.tx_queue, ctx.limits.max_frame);
    let state = SessionState::new(ctx.env(), info, dialed, token, ctx.registry.queue(), link_io, reader::now());
    let deliveries = state.deliveries().clone();
    let link = state.is_link();
    let mut session = Detach { ctx, state, peer: info.peer };
    let write_timeout = ctx.limits.write_timeout;
    let ended = {
        // Both pinned where they are made: a future moved into a pin would keep
        // a second slot of its size in this function's state.
        let writer =
            std::pin::pin!(writer::run(&mut wr, &queue, &deliveries, control.as_deref(), close.as_ref(), ctx, link));
        let reader = std::pin::pin!(async {
            let reason = reader::run(&mut rd, &queue, &mut session.state, ctx, info.peer, close.as_ref()).await;
            // The reply sender is gone with the reader: the writer flushes what
            // is queued, shuts the stream down and returns.
            queue.close_reader();
            reason
        });
        join::join(reader, writer, &queue, CLOSE_GRACE.min(write_timeout)).await
    };
    let reason = ended.write.unwrap_or(ended.read);
    let offered = session.state.offered_to_swarm();
    drop(session);
    let mut io = rd.unsplit(wr);
    // A peer that does not read is not closed gracefully: the unsent
    // bytes would stay in the kernel (up to its send buffer, per socket).
    let gave_up = ended.grace_expired || reason == DisconnectReason::WriteTimeout;
    if gave_up {
        tracing::debug!(reason = reason.label(), "peer does not read; resetting");
        io.reset_on_close();
    } else if reason == DisconnectReason::SlowConsumer {
        // Its GOAWAY 429 is written: it has write_timeout to read it and
        // close, or it is reset.
        if !Box::pin(linger(&mut io, write_timeout, &ctx.kill)).await {
            io.reset_on_close();
        }
    } else if node_initiated(reason) {
        Box::pin(linger(&mut io, LINGER, &ctx.kill)).await;
    }
    (reason, offered)
}

/// The reader ended the session for a reason of the node's own (not the
/// peer's close, a stream error or the drain, which `kill` bounds).
fn closes_on_its_own(reason: DisconnectReason) -> bool {
    node_initiated(reason) && reason != DisconnectReason::Shutdown
}

/// Takes a session's subscriber or link out of the registry and closes its
/// delivery queue when dropped: when the session ends, and also when its
/// task unwinds, so a panic leaves no subscriber or link attached.
struct Detach<'a> {
    ctx: &'a SessionCtx,
    state: SessionState<'a>,
    peer: SocketAddr,
}

impl Drop for Detach<'_> {
    fn drop(&mut self) {
        if self.state.detach(reader::now()) {
            peer_down(self.ctx, self.peer);
        }
    }
}

fn node_initiated(reason: DisconnectReason) -> bool {
    !matches!(reason, DisconnectReason::PeerClosed | DisconnectReason::Io | DisconnectReason::WriteTimeout)
}

/// After the node closed its side, discards what the peer still sends for
/// at most `limit`, so our last frame is not destroyed by a reset. True when
/// the peer closed its side (or the stream failed) within it.
async fn linger<R: AsyncRead + Unpin>(rd: &mut R, limit: Duration, kill: &CancellationToken) -> bool {
    let deadline = Instant::now() + limit;
    // On the heap: a 4 KiB array here would sit in every session's future
    // for its whole life, not only while it lingers.
    let mut sink = vec![0u8; 4096];
    let mut discarded = 0;
    while discarded < LINGER_MAX_BYTES {
        let read = tokio::select! {
            biased;
            () = kill.cancelled() => return false,
            r = tokio::time::timeout_at(deadline.into(), rd.read(&mut sink)) => r,
        };
        match read {
            Ok(Ok(n @ 1..)) => discarded += n,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
    false
}

/// `reconnect_after_ms` for a session's shutdown `GOAWAY`: a Weyl sequence
/// over session ids, which spreads sessions evenly over the drain window
/// without any shared state.
pub(crate) fn reconnect_after(session_id: u64, window_ms: u32) -> u32 {
    const PHI_FRAC: u64 = 0x9E37_79B9_7F4A_7C15;
    let frac = session_id.wrapping_mul(PHI_FRAC);
    ((u128::from(frac) * u128::from(window_ms)) >> 64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_after_spreads_over_the_window() {
        let window = 5000;
        let mut buckets = [0u32; 10];
        for id in 1..=50 {
            let ms = reconnect_after(id, window);
            assert!(ms < window);
            buckets[(ms / 500) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (3..=7).contains(&n)), "uneven spread {buckets:?}");
    }
}
