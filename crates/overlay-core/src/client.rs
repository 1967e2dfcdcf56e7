//! A small OAP/1 client over TCP: hello exchange, then frames in and out.
//! The CLI's `ping` and the integration tests use it; it is also a reference
//! for services that speak OAP/1 to a node.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use oap_codec::{Caps, DecodeError, EncodeError, Frame, HELLO_LEN, Hello, HelloError, Negotiated, OapCodec};
use ron_transport::tls::{PqMode, TlsError, TlsInfo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::codec::{Decoder, Encoder};

/// Time allowed for connect plus the hello exchange.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// TCP connect failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// Connect plus hello, or a close, took longer than [`CONNECT_TIMEOUT`].
    #[error("{0} did not answer within 5 s")]
    Timeout(SocketAddr),
    /// The node's hello was refused.
    #[error("bad hello from node: {0}")]
    Hello(#[from] HelloError),
    /// The stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    /// The node sent bytes that are not a valid frame.
    #[error("bad frame from node: {0}")]
    Decode(#[from] DecodeError),
    /// A frame could not be encoded (too large).
    #[error("cannot send: {0}")]
    Encode(#[from] EncodeError),
    /// The node closed the connection.
    #[error("connection closed by node")]
    Closed,
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The node refused the token.
    #[error("node refused the token: ERROR {code} {reason}")]
    Refused {
        /// The spec's error code (401: missing or invalid token).
        code: u16,
        /// The node's reason.
        reason: String,
    },
    /// The node ended the session while we waited for its answer.
    #[error("node sent GOAWAY {code}: {reason}")]
    GoAway {
        /// The spec's error code.
        code: u16,
        /// The node's reason.
        reason: String,
    },
}

/// A byte stream a client can run over: TCP or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A connected, negotiated session.
pub struct Client {
    stream: Box<dyn Io>,
    addr: SocketAddr,
    codec: OapCodec,
    rx: BytesMut,
    tx: BytesMut,
    negotiated: Negotiated,
    tls: Option<TlsInfo>,
}

impl Client {
    /// Connects over TCP, sends our hello with `caps`, and checks the node's.
    pub async fn connect(addr: SocketAddr, caps: Caps) -> Result<Client, ClientError> {
        let setup = async {
            let stream = tcp(addr).await?;
            Client::hello(Box::new(stream), addr, caps, None).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup).await.map_err(|_| ClientError::Timeout(addr))?
    }

    /// Connects over TLS 1.3, checking the node's certificate for `name`;
    /// sets `PQ_HYBRID` in our hello when the key exchange was hybrid.
    pub async fn connect_tls(
        addr: SocketAddr,
        caps: Caps,
        tls: Arc<ClientConfig>,
        name: &str,
    ) -> Result<Client, ClientError> {
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| ClientError::Tls(format!("bad TLS name {name:?}: {e}")))?;
        let setup = async {
            let stream = tcp(addr).await?;
            let stream = TlsConnector::from(tls)
                .connect(server_name, stream)
                .await
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            let info = TlsInfo::from_group(stream.get_ref().1.negotiated_key_exchange_group().map(|g| g.name()));
            let caps = if info.hybrid { caps | Caps::PQ_HYBRID } else { caps };
            Client::hello(Box::new(stream), addr, caps, Some(info)).await
        };
        tokio::time::timeout(CONNECT_TIMEOUT, setup).await.map_err(|_| ClientError::Timeout(addr))?
    }

    async fn hello(
        mut stream: Box<dyn Io>,
        addr: SocketAddr,
        caps: Caps,
        tls: Option<TlsInfo>,
    ) -> Result<Client, ClientError> {
        stream.write_all(&Hello::new(caps).encode()).await?;
        let mut theirs = [0u8; HELLO_LEN];
        stream.read_exact(&mut theirs).await?;
        let hello = Hello::decode(&theirs)?;
        let mut negotiated = Hello::negotiate(caps, &hello)?;
        // PQ_HYBRID describes each side's own TLS session: keep the node's bit.
        negotiated.caps = negotiated.caps | (hello.caps & Caps::PQ_HYBRID);
        Ok(Client {
            stream,
            addr,
            codec: OapCodec::new(),
            rx: BytesMut::with_capacity(8192),
            tx: BytesMut::new(),
            negotiated,
            tls,
        })
    }

    /// What the TLS handshake negotiated; `None` over plain TCP.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.tls
    }

    /// Presents a capability token (`AUTH`) and waits, at most
    /// [`CONNECT_TIMEOUT`], for the node's answer. Connect with
    /// `Caps::AUTH_V1` to use it.
    pub async fn authenticate(&mut self, token: &str) -> Result<(), ClientError> {
        const AUTH_REQ: u32 = u32::MAX;
        self.send(&Frame::Auth { req_id: AUTH_REQ, token: bytes::Bytes::copy_from_slice(token.trim().as_bytes()) })
            .await?;
        let addr = self.addr;
        let answer = async {
            loop {
                match self.recv().await? {
                    Frame::Ack(a) if a.req_id == AUTH_REQ => return Ok(()),
                    Frame::Error(e) if e.req_id == AUTH_REQ => {
                        return Err(ClientError::Refused { code: e.code, reason: e.reason });
                    }
                    Frame::Ctrl(oap_codec::Ctrl::Goaway { code, reason, .. }) => {
                        return Err(ClientError::GoAway { code, reason });
                    }
                    Frame::Ctrl(oap_codec::Ctrl::Ping { nonce }) => self.send(&Frame::pong(nonce)).await?,
                    _ => {}
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, answer).await.unwrap_or(Err(ClientError::Timeout(addr)))
    }

    /// Version and caps agreed with the node.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Buffers a frame without writing it; [`Client::flush`] sends the lot.
    pub fn feed(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.codec.encode(frame, &mut self.tx)?;
        Ok(())
    }

    /// Writes everything fed so far.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all(&self.tx).await?;
        self.tx.clear();
        Ok(())
    }

    /// Writes raw bytes (for tests and tools that send malformed frames).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(())
    }

    /// Sends one frame now.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.feed(frame)?;
        self.flush().await
    }

    /// The next frame from the node.
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read so far stay buffered for the next call.
    pub async fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.rx)? {
                return Ok(frame);
            }
            if self.stream.read_buf(&mut self.rx).await? == 0 {
                return Err(ClientError::Closed);
            }
        }
    }

    /// Closes our side and waits (at most [`CONNECT_TIMEOUT`]) for the node
    /// to close its own, discarding what it still sends.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let addr = self.addr;
        let closing = async {
            self.stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while self.stream.read(&mut sink).await? > 0 {}
            Ok::<_, ClientError>(())
        };
        tokio::time::timeout(CONNECT_TIMEOUT, closing).await.map_err(|_| ClientError::Timeout(addr))?
    }
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr, source })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The TLS client config for [`Client::connect_tls`]: trusts the PEM
/// certificates in `ca`, offers the hybrid post-quantum group first.
pub fn tls_config(ca: &std::path::Path) -> Result<Arc<ClientConfig>, TlsError> {
    ron_transport::tls::client_config(ca, PqMode::Prefer)
}
