//! Protocol-agnostic TCP transport: bind, a bounded accept loop, connection
//! permits, byte metering, lifecycle events and cancel.
//!
//! It knows nothing of OAP: a handler gets each accepted [`Conn`] and returns
//! why it ended. It never holds a lock across `.await` and never spins on a
//! failing `accept`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ron_transport::BindError> {
//! use ron_transport::{DisconnectReason, TransportConfig, spawn_transport_with_cancel};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! let cfg = TransportConfig::new("127.0.0.1:0".parse().unwrap(), "echo");
//! let handle = spawn_transport_with_cancel(cfg, |mut conn| async move {
//!     let mut buf = [0u8; 1024];
//!     while let Ok(n @ 1..) = conn.read(&mut buf).await {
//!         if conn.write_all(&buf[..n]).await.is_err() {
//!             return DisconnectReason::Io;
//!         }
//!     }
//!     DisconnectReason::PeerClosed
//! })
//! .await?;
//! handle.cancel.cancel();
//! handle.task.await.ok();
//! # Ok(())
//! # }
//! ```

mod accept;
mod config;
mod conn;
pub mod fd;
mod log;
mod metrics;
mod stream;
#[cfg(feature = "tls")]
pub mod tls;

pub use accept::{BindError, ConnLoad, TransportHandle, spawn_transport_with_cancel};
pub use config::{DEFAULT_FD_RESERVE, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNS, LISTEN_BACKLOG, TransportConfig};
pub use conn::Conn;
pub use log::LogLimit;
pub use stream::Stream;

use std::net::SocketAddr;

/// Connection lifecycle, broadcast to every subscriber of
/// [`TransportHandle::events`]. A receiver that falls behind loses the oldest
/// events (and learns it from `RecvError::Lagged`); it never slows the accept
/// loop.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A connection was accepted and handed to the handler.
    Connected {
        /// Transport-unique connection id.
        id: u64,
        /// The remote address.
        peer: SocketAddr,
    },
    /// The handler returned.
    Disconnected {
        /// Transport-unique connection id.
        id: u64,
        /// The remote address.
        peer: SocketAddr,
        /// Why it ended, as reported by the handler.
        reason: DisconnectReason,
    },
}

/// Why a connection ended. A closed set, so it can label metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// The peer closed the stream.
    PeerClosed,
    /// The protocol handshake failed or timed out.
    Handshake,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// A started message did not finish within the read timeout.
    ReadTimeout,
    /// A write made no progress within the write timeout.
    WriteTimeout,
    /// The peer broke the protocol.
    Protocol,
    /// The peer did not read fast enough.
    SlowConsumer,
    /// The stream failed.
    Io,
    /// The node is shutting down.
    Shutdown,
    /// The overlay closed a relay link (a peer that left the active view,
    /// the losing link of a simultaneous dial).
    Overlay,
}

impl DisconnectReason {
    /// Every reason, for metrics registered at 0 from the start.
    pub const ALL: [DisconnectReason; 10] = [
        DisconnectReason::PeerClosed,
        DisconnectReason::Handshake,
        DisconnectReason::IdleTimeout,
        DisconnectReason::ReadTimeout,
        DisconnectReason::WriteTimeout,
        DisconnectReason::Protocol,
        DisconnectReason::SlowConsumer,
        DisconnectReason::Io,
        DisconnectReason::Shutdown,
        DisconnectReason::Overlay,
    ];

    /// Closed label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            DisconnectReason::PeerClosed => "peer_closed",
            DisconnectReason::Handshake => "handshake",
            DisconnectReason::IdleTimeout => "idle_timeout",
            DisconnectReason::ReadTimeout => "read_timeout",
            DisconnectReason::WriteTimeout => "write_timeout",
            DisconnectReason::Protocol => "protocol",
            DisconnectReason::SlowConsumer => "slow_consumer",
            DisconnectReason::Io => "io",
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::Overlay => "overlay",
        }
    }
}
