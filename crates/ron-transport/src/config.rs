//! Transport settings: where to listen, how many connections, TLS. Read,
//! write and idle deadlines belong to the protocol on top, which knows where
//! its messages begin and end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Default cap on concurrent connections.
pub const DEFAULT_MAX_CONNS: usize = 1024;
/// Default time a TLS handshake may take.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
/// Default number of descriptors the data plane leaves to the rest of the
/// process (admin plane, relay dials, TLS files, `/proc` reads).
pub const DEFAULT_FD_RESERVE: usize = 64;
/// Pending connections the kernel queues before `accept`.
pub const LISTEN_BACKLOG: u32 = 1024;

/// What the transport binds and how it bounds connections.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Address to listen on; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The `service` label on every metric this transport emits.
    pub name: Arc<str>,
    /// Connections served at once; one more is closed at accept. The
    /// effective cap is lower when the descriptor limit leaves less room
    /// (see [`crate::fd::ConnCap`]).
    pub max_conns: usize,
    /// Descriptors never used for connections: the cap is at most
    /// `RLIMIT_NOFILE - fd_reserve`.
    pub fd_reserve: usize,
    /// Time a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// Serve TLS 1.3 with this config instead of plain TCP.
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl TransportConfig {
    /// A config with the default limits.
    pub fn new(addr: SocketAddr, name: impl Into<Arc<str>>) -> TransportConfig {
        TransportConfig {
            addr,
            name: name.into(),
            max_conns: DEFAULT_MAX_CONNS,
            fd_reserve: DEFAULT_FD_RESERVE,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// True when connections are served with TLS.
    pub fn tls_enabled(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        false
    }
}
