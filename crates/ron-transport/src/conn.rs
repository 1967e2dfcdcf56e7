//! [`Conn`]: one accepted connection. It owns its `max_conns` permit, so the
//! permit cannot leak, and meters every byte that crosses it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use crate::metrics::TransportMetrics;
use crate::stream::Stream;

/// An accepted connection, readable and writable as a byte stream.
///
/// Dropping it closes the stream, returns its permit and records its
/// lifetime in `transport_conn_latency_seconds`.
pub struct Conn<S = Stream> {
    io: S,
    id: u64,
    peer: SocketAddr,
    local: SocketAddr,
    opened: Instant,
    metrics: TransportMetrics,
    _permit: OwnedSemaphorePermit,
}

/// Everything a `Conn` carries besides its stream.
pub(crate) struct ConnParts {
    pub(crate) id: u64,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) metrics: TransportMetrics,
    pub(crate) permit: OwnedSemaphorePermit,
}

impl<S> Conn<S> {
    pub(crate) fn new(io: S, parts: ConnParts) -> Conn<S> {
        parts.metrics.connections.increment(1.0);
        Conn {
            io,
            id: parts.id,
            peer: parts.peer,
            local: parts.local,
            opened: Instant::now(),
            metrics: parts.metrics,
            _permit: parts.permit,
        }
    }

    /// Transport-unique id, as in [`crate::TransportEvent`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The remote address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local address the connection arrived on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// When the connection was accepted.
    pub fn opened(&self) -> Instant {
        self.opened
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }
}

#[cfg(feature = "tls")]
impl Conn<Stream> {
    /// What the TLS handshake negotiated; `None` on plain TCP.
    pub fn tls(&self) -> Option<crate::tls::TlsInfo> {
        match &self.io {
            Stream::Tls(tls) => Some(crate::tls::TlsInfo::of(tls.get_ref().1)),
            Stream::Plain(_) => None,
        }
    }

    /// The public key of the certificate the client presented (and the
    /// handshake verified); `None` on plain TCP or without one.
    pub fn peer_public_key(&self) -> Option<Vec<u8>> {
        match &self.io {
            Stream::Tls(tls) => crate::tls::peer_public_key(tls.get_ref().1),
            Stream::Plain(_) => None,
        }
    }
}

impl<S> Drop for Conn<S> {
    fn drop(&mut self) {
        self.metrics.connections.decrement(1.0);
        self.metrics.conn_latency.record(self.opened.elapsed().as_secs_f64());
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.metrics.bytes_in.increment(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.bytes_out.increment(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.metrics.bytes_out.increment(n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
