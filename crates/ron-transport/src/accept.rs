//! Bind and the accept loop: a `biased` select over cancel and accept, a
//! permit per connection (the cap of [`ConnCap`]), and, when `accept` itself
//! runs out of descriptors, a reserved one to close the waiting connection
//! before backing off, so no client is left waiting in the backlog.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{LISTEN_BACKLOG, TransportConfig};
use crate::conn::{Conn, ConnParts};
use crate::fd::{ConnCap, NoFdsLeft};
use crate::log::LogLimit;
use crate::metrics::TransportMetrics;
use crate::stream::Stream;
use crate::{DisconnectReason, TransportEvent};

/// First pause after `accept` fails for lack of fds or memory.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause between `accept` retries under resource exhaustion.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Waiting connections closed with the reserved descriptor per `accept`
/// failure, so one round stays short when clients keep coming.
const MAX_SHED_PER_ROUND: usize = 1024;
/// `accept` failures logged per second at most (each line says how many
/// were left out).
const ACCEPT_FAILURE_LOGS_PER_SEC: u32 = 5;
/// Lifecycle events buffered for slow subscribers before they lag.
const EVENT_CAPACITY: usize = 1024;
/// TLS handshakes in progress at once; more wait (within their timeout), so
/// a connection storm cannot take every core.
#[cfg(feature = "tls")]
const MAX_TLS_HANDSHAKES: usize = 64;

/// Why the listener could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// Creating, binding or listening on the socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The descriptor limit leaves no room for a single connection.
    #[error("cannot serve on {addr}: {source}")]
    NoFds {
        /// The address asked for.
        addr: SocketAddr,
        /// The limit and the reserve.
        source: NoFdsLeft,
    },
}

impl BindError {
    /// Closed label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            BindError::Listen { .. } => "listen",
            BindError::NoFds { .. } => "fd_limit",
        }
    }
}

/// A running transport.
#[derive(Debug)]
pub struct TransportHandle {
    /// The accept loop. It ends after `cancel` fires and every connection
    /// handler has returned.
    pub task: JoinHandle<()>,
    /// The bound address (the real port when port 0 was asked for).
    pub addr: SocketAddr,
    /// Stops accepting; live connections go on until their handlers return.
    pub cancel: CancellationToken,
    /// Lifecycle events; call `subscribe()` for a receiver.
    pub events: broadcast::Sender<TransportEvent>,
    tracker: TaskTracker,
    rejected: Arc<AtomicU64>,
    load: ConnLoad,
}

/// Connections held against the cap, readable from any thread.
#[derive(Debug, Clone)]
pub struct ConnLoad {
    permits: Arc<Semaphore>,
    cap: ConnCap,
}

impl ConnLoad {
    /// Connections holding a permit now.
    pub fn in_use(&self) -> usize {
        self.cap.cap.saturating_sub(self.permits.available_permits())
    }

    /// The cap and what set it.
    pub fn cap(&self) -> ConnCap {
        self.cap
    }
}

impl TransportHandle {
    /// Connection handlers still running.
    pub fn live_connections(&self) -> usize {
        self.tracker.len()
    }

    /// A live count of every connection rejected so far (any reason).
    pub fn rejected(&self) -> Arc<AtomicU64> {
        self.rejected.clone()
    }

    /// Connections held against the effective cap.
    pub fn load(&self) -> ConnLoad {
        self.load.clone()
    }
}

/// Binds `cfg.addr` and spawns the accept loop; each accepted connection is
/// handed to `handler` on its own task, which returns why it ended.
///
/// At most `min(max_conns, RLIMIT_NOFILE - fd_reserve)` connections are
/// served at once ([`ConnCap`]); one more is accepted and closed at once,
/// counted in `transport_rejected_total{reason="max_conns"}` (or
/// `reason="fd_limit"` when the descriptor limit set the cap). When `accept`
/// fails with `EMFILE` or `ENFILE` all the same (descriptors taken elsewhere
/// in the process), a reserved descriptor is given up to accept and close
/// the waiting connections (`reason="fd_limit"`), then taken back; `ENOMEM`
/// and `ENOBUFS` count under `reason="resource"`. Either way the loop backs
/// off, doubling from 10 ms to 1 s; these are never fatal. Must be called
/// within a tokio runtime.
pub async fn spawn_transport_with_cancel<F, Fut>(cfg: TransportConfig, handler: F) -> Result<TransportHandle, BindError>
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = DisconnectReason> + Send + 'static,
{
    let cap =
        ConnCap::new(cfg.max_conns, cfg.fd_reserve).map_err(|source| BindError::NoFds { addr: cfg.addr, source })?;
    let listener = bind(cfg.addr).map_err(|source| BindError::Listen { addr: cfg.addr, source })?;
    let addr = listener.local_addr().map_err(|source| BindError::Listen { addr: cfg.addr, source })?;
    let cancel = CancellationToken::new();
    let (events, _) = broadcast::channel(EVENT_CAPACITY);
    let tracker = TaskTracker::new();
    let metrics = TransportMetrics::new(&cfg.name);
    metrics.max_conns.set(cap.cap as f64);
    let rejected = metrics.rejected.clone();
    let load = ConnLoad { permits: Arc::new(Semaphore::new(cap.cap)), cap };
    let accept = AcceptLoop {
        listener,
        #[cfg(feature = "tls")]
        handshakes: Arc::new(Semaphore::new(MAX_TLS_HANDSHAKES)),
        local: addr,
        permits: load.permits.clone(),
        cap,
        reserve: open_reserve(),
        metrics,
        next_id: AtomicU64::new(1),
        cfg,
        events: events.clone(),
        tracker: tracker.clone(),
        cancel: cancel.clone(),
    };
    let task = tokio::spawn(accept.run(handler));
    Ok(TransportHandle { task, addr, cancel, events, tracker, rejected, load })
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

struct AcceptLoop {
    listener: TcpListener,
    #[cfg(feature = "tls")]
    handshakes: Arc<Semaphore>,
    local: SocketAddr,
    permits: Arc<Semaphore>,
    cap: ConnCap,
    /// A descriptor held for the moment `accept` runs out of them: given up
    /// to accept (and close) a waiting connection, then taken back.
    reserve: Option<std::fs::File>,
    metrics: TransportMetrics,
    next_id: AtomicU64,
    cfg: TransportConfig,
    events: broadcast::Sender<TransportEvent>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl AcceptLoop {
    async fn run<F, Fut>(mut self, handler: F)
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = DisconnectReason> + Send + 'static,
    {
        let handler = Arc::new(handler);
        tracing::info!(
            service = %self.cfg.name,
            addr = %self.local,
            tls = self.cfg.tls_enabled(),
            max_conns = self.cap.max_conns,
            effective_max_conns = self.cap.cap,
            fd_reserve = self.cap.fd_reserve,
            rlimit_nofile = self.cap.nofile,
            "transport listening"
        );
        let mut backoff = ACCEPT_BACKOFF_MIN;
        let mut failures = LogLimit::new(ACCEPT_FAILURE_LOGS_PER_SEC);
        loop {
            let accepted = tokio::select! {
                biased;
                () = self.cancel.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    // A reserve lost to another thread at the last shedding
                    // is taken back as soon as descriptors are free again.
                    if self.reserve.is_none() {
                        self.reserve = open_reserve();
                    }
                    let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                        let over = if self.cap.fd_bound() {
                            &self.metrics.rejected_fd_limit
                        } else {
                            &self.metrics.rejected_max_conns
                        };
                        self.metrics.reject(over);
                        tracing::debug!(%peer, cap = self.cap.cap, "over the connection cap, closing");
                        drop(stream);
                        continue;
                    };
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %e, "set_nodelay failed");
                    }
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let parts = ConnParts { id, peer, local: self.local, metrics: self.metrics.clone(), permit };
                    // Boxed: the task would otherwise carry this step's state
                    // (a few hundred bytes) for the connection's whole life.
                    let secure = Box::pin(self.secure(stream, peer));
                    let events = self.events.clone();
                    let handler = handler.clone();
                    self.tracker.spawn(async move {
                        // The TLS handshake (if any) runs here, off the accept loop.
                        let Some(stream) = secure.await else { return };
                        // No receiver is fine: events are for whoever listens.
                        let _ = events.send(TransportEvent::Connected { id, peer });
                        let mut report = Disconnect { events, id, peer, reason: DisconnectReason::Io };
                        // No `Conn` local: it would keep a slot in this task.
                        report.reason = handler(Conn::new(stream, parts)).await;
                    });
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    let shed = if is_fd_exhaustion(&e) {
                        self.shed_waiting().await
                    } else {
                        self.metrics.reject(&self.metrics.rejected_resource);
                        0
                    };
                    if let Some(suppressed) = failures.allow(Instant::now()) {
                        let backoff_ms = backoff.as_millis() as u64;
                        tracing::warn!(error = %e, shed, suppressed, backoff_ms, "accept out of resources, backing off");
                    }
                    tokio::select! {
                        biased;
                        () = self.cancel.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
                // Errors that concern one connection (ECONNABORTED, EPERM from
                // a firewall, ...): that connection is gone, the loop goes on.
                Err(e) => tracing::debug!(error = %e, "accept failed for one connection"),
            }
        }
        drop(self.listener);
        tracing::info!(service = %self.cfg.name, live = self.tracker.len(), "transport stopped accepting");
        self.tracker.close();
        self.tracker.wait().await;
    }
}

impl AcceptLoop {
    /// `accept` ran out of descriptors: gives up the reserved one, accepts
    /// and closes the connections waiting (each counted as `fd_limit`), and
    /// takes the reserve back. Returns how many were closed.
    async fn shed_waiting(&mut self) -> usize {
        // Closing it frees one descriptor for the accepts below.
        drop(self.reserve.take());
        let mut shed = 0;
        while shed < MAX_SHED_PER_ROUND {
            // One non-blocking attempt: a connection is waiting or not.
            let attempt = std::future::poll_fn(|cx| std::task::Poll::Ready(self.listener.poll_accept(cx))).await;
            match attempt {
                std::task::Poll::Ready(Ok((stream, _))) => {
                    // Counted before the close, so whoever sees the close
                    // also sees the count.
                    self.metrics.reject(&self.metrics.rejected_fd_limit);
                    drop(stream);
                    shed += 1;
                }
                std::task::Poll::Ready(Err(_)) | std::task::Poll::Pending => break,
            }
        }
        self.reserve = open_reserve();
        shed
    }
}

/// The reserved descriptor; `None` when none can be had now (retried after
/// the next shedding).
fn open_reserve() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// Sends `Disconnected` when the handler's task ends, also by a panic
/// (reported as `Io`), so subscribers never miss a departure.
struct Disconnect {
    events: broadcast::Sender<TransportEvent>,
    id: u64,
    peer: SocketAddr,
    reason: DisconnectReason,
}

impl Drop for Disconnect {
    fn drop(&mut self) {
        let _ = self.events.send(TransportEvent::Disconnected { id: self.id, peer: self.peer, reason: self.reason });
    }
}

impl AcceptLoop {
    /// The stream a connection's handler gets: plain at once, or TLS after
    /// a handshake bounded by `handshake_timeout` and by the cap on
    /// concurrent handshakes. `None` when the handshake failed (counted).
    fn secure(&self, tcp: TcpStream, peer: SocketAddr) -> impl Future<Output = Option<Stream>> + Send + 'static {
        #[cfg(feature = "tls")]
        let tls = self.cfg.tls.clone().map(|config| (config, self.handshakes.clone(), self.metrics.clone()));
        let timeout = self.cfg.handshake_timeout;
        async move {
            #[cfg(feature = "tls")]
            if let Some((config, handshakes, metrics)) = tls {
                let handshake = async {
                    // Read the ClientHello before taking a handshake slot, so
                    // idle connections cannot hold the slots.
                    let hello = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
                    let start =
                        hello.await.map_err(|e| tracing::debug!(%peer, error = %e, "no TLS ClientHello")).ok()?;
                    let _permit = handshakes.acquire_owned().await.ok()?;
                    start
                        .into_stream(config)
                        .await
                        .map_err(|e| tracing::debug!(%peer, error = %e, "TLS handshake failed"))
                        .ok()
                };
                // Boxed: the handshake's state (about 2 KiB) would otherwise
                // stay in every connection task for the connection's life.
                return match Box::pin(tokio::time::timeout(timeout, handshake)).await {
                    Ok(Some(tls)) => Some(Stream::Tls(Box::new(tls))),
                    Ok(None) | Err(_) => {
                        metrics.reject(&metrics.rejected_tls);
                        None
                    }
                };
            }
            let _ = (peer, timeout);
            Some(Stream::Plain(tcp))
        }
    }
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS))
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}
