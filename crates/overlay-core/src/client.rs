//! The OAP/1 client: connect (TCP or TLS 1.3, a token presented first), then
//! typed requests (`ping`, `echo`, `publish`, `subscribe`) over one receive
//! path that answers the node's keepalive `PING`s and turns a `GOAWAY` or an
//! `ERROR` into a typed error. The CLI's `ping`, `pub` and `sub` are this
//! client and a printer.
//!
//! ```no_run
//! use overlay_core::client::{Client, ConnectOptions};
//! use overlay_core::Delivery;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = Client::connect(&ConnectOptions::new("127.0.0.1:9500".parse()?)).await?;
//! let receipt = client.publish(&"demo.hello".parse()?, "hi".into()).await?;
//! println!("{} queued for {} subscribers", receipt.msg_id, receipt.queued);
//! let mut deliveries = client.subscribe(&"demo.>".parse()?).await?;
//! while let Delivery::Message(m) = deliveries.next().await? {
//!     println!("{}: {:?}", m.topic, m.payload);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The frame-level calls (`send`, `feed`, `flush`, `recv`, `send_raw`) stay
//! for tests and tools that speak the wire directly.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use oap_codec::{
    Ack, Caps, Ctrl, DecodeError, EncodeError, Frame, HELLO_LEN, Hello, HelloError, Kind, Negotiated, OapCodec,
    Pattern, PubAck, Topic,
};
use ron_transport::tls::{PqMode, TlsError, TlsInfo};
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

use crate::subscription::{Delivery, Message};

/// Time allowed for connect plus the hello exchange (and for a close).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for the node's answer to a request (`PONG`, an echo, a
/// receipt, a subscription's `ACK`).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// `PUB`s in flight before [`Client::publish_all`] waits for a receipt.
pub const PUB_WINDOW: usize = 256;
/// Deliveries kept while the client waits for an answer, and their payload
/// bytes; past either they are counted and reported as [`Delivery::Lagged`],
/// never lost silently.
const MAX_STASHED: usize = 4096;
const MAX_STASHED_BYTES: usize = 16 << 20;

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
    #[error("{0} did not answer within {secs} s", secs = CONNECT_TIMEOUT.as_secs())]
    Timeout(SocketAddr),
    /// A request had no answer within [`ANSWER_TIMEOUT`].
    #[error("no answer to {0} within {secs} s", secs = ANSWER_TIMEOUT.as_secs())]
    NoAnswer(&'static str),
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
    /// The TLS setup or handshake failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The node refused a request (or the token): an `ERROR` frame.
    #[error("node answered ERROR {code}: {reason}")]
    Refused {
        /// The spec's error code (401: missing or invalid token, 403: not
        /// allowed, ...).
        code: u16,
        /// The node's reason.
        reason: String,
    },
    /// The node ended the session.
    #[error("node sent GOAWAY {code}: {reason}")]
    GoAway {
        /// The spec's error code.
        code: u16,
        /// The node's reason.
        reason: String,
    },
    /// Something other than the expected answer arrived.
    #[error("unexpected {0} from node")]
    Unexpected(Kind),
}

/// Where and how to connect.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectOptions {
    /// The node's address.
    pub addr: SocketAddr,
    /// TLS 1.3 (`None`: plain TCP).
    pub tls: Option<TlsOptions>,
    /// A capability token presented (`AUTH`) before anything else.
    pub token: Option<String>,
    /// The capabilities our hello offers (`AUTH_V1` is added with a token,
    /// `PQ_HYBRID` after a hybrid handshake). Default: gossip and pub/sub.
    pub caps: Caps,
}

impl ConnectOptions {
    /// Plain TCP to `addr`, no token, gossip and pub/sub caps.
    pub fn new(addr: SocketAddr) -> ConnectOptions {
        ConnectOptions { addr, tls: None, token: None, caps: Caps::GOSSIP_V1 | Caps::PUBSUB_V1 }
    }

    /// Over TLS 1.3.
    pub fn tls(mut self, tls: TlsOptions) -> ConnectOptions {
        self.tls = Some(tls);
        self
    }

    /// Presents `token` first.
    pub fn token(mut self, token: impl Into<String>) -> ConnectOptions {
        self.token = Some(token.into());
        self
    }

    /// Offers `caps` in the hello.
    pub fn caps(mut self, caps: Caps) -> ConnectOptions {
        self.caps = caps;
        self
    }
}

/// The TLS side of [`ConnectOptions`].
#[derive(Clone)]
pub struct TlsOptions {
    config: Arc<ClientConfig>,
    name: Option<String>,
}

impl TlsOptions {
    /// Trusts the PEM certificates in `ca`; `pq` says which key exchanges
    /// to offer ([`PqMode::Prefer`]: the hybrid group first).
    pub fn from_ca(ca: &std::path::Path, pq: PqMode) -> Result<TlsOptions, TlsError> {
        Ok(TlsOptions::from_config(ron_transport::tls::client_config(ca, pq)?))
    }

    /// A rustls config of the embedder's own.
    pub fn from_config(config: Arc<ClientConfig>) -> TlsOptions {
        TlsOptions { config, name: None }
    }

    /// The name the node's certificate must carry (default: the address's IP).
    pub fn name(mut self, name: impl Into<String>) -> TlsOptions {
        self.name = Some(name.into());
        self
    }
}

/// The answer to one `PUB` of [`Client::publish_all`]: its receipt, or the
/// node's refusal.
pub type Receipt = Result<PubAck, Refusal>;

/// An `ERROR` answering a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The spec's error code.
    pub code: u16,
    /// The node's reason.
    pub reason: String,
}

impl From<Refusal> for ClientError {
    fn from(r: Refusal) -> ClientError {
        ClientError::Refused { code: r.code, reason: r.reason }
    }
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
    /// The last request id used (ids start at 1).
    req_id: u32,
    /// The last `PING` nonce used.
    nonce: u64,
    /// What arrived for the subscriptions while waiting for an answer.
    stashed: VecDeque<Stashed>,
    /// Payload bytes in `stashed`.
    stashed_bytes: usize,
    /// Deliveries dropped past [`MAX_STASHED`], not yet reported.
    stash_lost: u64,
    /// The request ids of the subscriptions made (their `ERROR` is a
    /// revocation, not a late answer).
    subscriptions: Vec<u32>,
}

/// A delivery, or a subscription's end, kept for [`Client::next_delivery`].
enum Stashed {
    Delivery(Delivery),
    Revoked(Refusal),
}

impl Client {
    /// Connects (over TLS when `opts.tls` says so), exchanges hellos and,
    /// given a token, presents it; all of it within [`CONNECT_TIMEOUT`].
    pub async fn connect(opts: &ConnectOptions) -> Result<Client, ClientError> {
        let addr = opts.addr;
        let caps = if opts.token.is_some() { opts.caps | Caps::AUTH_V1 } else { opts.caps };
        let setup = async {
            let stream = tcp(addr).await?;
            let Some(tls) = &opts.tls else {
                return Client::hello(Box::new(stream), addr, caps, None).await;
            };
            let name = tls.name.clone().unwrap_or_else(|| addr.ip().to_string());
            let (stream, info) = ron_transport::tls::connect(stream, tls.config.clone(), &name)
                .await
                .map_err(|e| ClientError::Tls(e.to_string()))?;
            // PQ_HYBRID describes our own TLS session.
            let caps = if info.hybrid { caps | Caps::PQ_HYBRID } else { caps };
            Client::hello(Box::new(stream), addr, caps, Some(info)).await
        };
        let mut client =
            tokio::time::timeout(CONNECT_TIMEOUT, setup).await.map_err(|_| ClientError::Timeout(addr))??;
        if let Some(token) = &opts.token {
            client.authenticate(token).await?;
        }
        Ok(client)
    }

    /// A client over a stream connected by other means (an in-memory
    /// `tokio::io::duplex` served by [`crate::Overlay::serve`], a socket the
    /// embedder dialled): exchanges hellos offering `caps`, within
    /// [`CONNECT_TIMEOUT`]. `addr` names the node in errors.
    pub async fn over<S>(stream: S, addr: SocketAddr, caps: Caps) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let setup = Client::hello(Box::new(stream), addr, caps, None);
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
            req_id: 0,
            nonce: 0,
            stashed: VecDeque::new(),
            stashed_bytes: 0,
            stash_lost: 0,
            subscriptions: Vec::new(),
        })
    }

    /// What the TLS handshake negotiated; `None` over plain TCP.
    pub fn tls(&self) -> Option<TlsInfo> {
        self.tls
    }

    /// Version and caps agreed with the node.
    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Presents a capability token (`AUTH`): at connect (see
    /// [`ConnectOptions::token`]) or later, to refresh it in band. The
    /// session must have been opened with `AUTH_V1`.
    pub async fn authenticate(&mut self, token: &str) -> Result<(), ClientError> {
        let req_id = self.next_req();
        self.send(&Frame::Auth { req_id, token: Bytes::copy_from_slice(token.trim().as_bytes()) }).await?;
        self.answer(req_id, "AUTH").await?.map_err(ClientError::from)?;
        Ok(())
    }

    /// A `PING`/`PONG` round trip.
    pub async fn ping(&mut self) -> Result<Duration, ClientError> {
        self.nonce += 1;
        let nonce = self.nonce;
        let started = Instant::now();
        self.send(&Frame::ping(nonce)).await?;
        let pong = async {
            loop {
                match self.next_frame().await? {
                    Frame::Ctrl(Ctrl::Pong { nonce: n }) if n == nonce => return Ok(started.elapsed()),
                    other => self.stash(other)?,
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, pong).await.unwrap_or(Err(ClientError::NoAnswer("PING")))
    }

    /// Sends `payload` as `DATA` and returns the node's `DATA` answer (the
    /// echo of the default handler).
    pub async fn echo(&mut self, payload: Bytes) -> Result<Bytes, ClientError> {
        self.send(&Frame::Data(payload)).await?;
        let echo = async {
            loop {
                match self.next_frame().await? {
                    Frame::Data(echo) => return Ok(echo),
                    other => self.stash(other)?,
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, echo).await.unwrap_or(Err(ClientError::NoAnswer("DATA")))
    }

    /// Publishes one message and waits for its receipt.
    pub async fn publish(&mut self, topic: &Topic, payload: Bytes) -> Result<PubAck, ClientError> {
        let req_id = self.next_req();
        self.send(&Frame::Pub { req_id, topic: topic.clone(), payload }).await?;
        Ok(receipt(self.answer(req_id, "PUB").await?)??)
    }

    /// Publishes every message, at most [`PUB_WINDOW`] unanswered at a time,
    /// and hands each one's [`Receipt`] to `on_receipt`, in order. A refused
    /// message does not stop the rest; a lost session, or no receipt within
    /// [`ANSWER_TIMEOUT`], does.
    pub async fn publish_all<I>(&mut self, messages: I, mut on_receipt: impl FnMut(Receipt)) -> Result<(), ClientError>
    where
        I: IntoIterator<Item = (Topic, Bytes)>,
    {
        let mut messages = messages.into_iter();
        let mut in_flight = VecDeque::with_capacity(PUB_WINDOW);
        loop {
            while in_flight.len() < PUB_WINDOW
                && let Some((topic, payload)) = messages.next()
            {
                let req_id = self.next_req();
                self.feed(&Frame::Pub { req_id, topic, payload })?;
                in_flight.push_back(req_id);
            }
            self.flush().await?;
            let Some(req_id) = in_flight.pop_front() else { return Ok(()) };
            on_receipt(receipt(self.answer(req_id, "PUB").await?)?);
        }
    }

    /// Subscribes to `pattern` and waits for the node's `ACK`; the
    /// deliveries follow.
    pub async fn subscribe(&mut self, pattern: &Pattern) -> Result<Deliveries<'_>, ClientError> {
        let req_id = self.next_req();
        self.send(&Frame::Sub { req_id, pattern: pattern.clone() }).await?;
        self.answer(req_id, "SUB").await?.map_err(ClientError::from)?;
        self.subscriptions.push(req_id);
        Ok(Deliveries { client: self })
    }

    /// The next delivery to this session's subscriptions. An `ERROR` (a
    /// subscription revoked, for example when its token expired) is
    /// returned as [`ClientError::Refused`].
    ///
    /// # Cancel safety
    /// Cancel safe: bytes read so far stay buffered for the next call.
    pub async fn next_delivery(&mut self) -> Result<Delivery, ClientError> {
        if let Some(kept) = self.stashed.pop_front() {
            return match kept {
                Stashed::Delivery(d) => {
                    if let Delivery::Message(m) = &d {
                        self.stashed_bytes -= m.payload.len();
                    }
                    Ok(d)
                }
                Stashed::Revoked(r) => Err(r.into()),
            };
        }
        // Lost after everything kept, before anything read from now on.
        if self.stash_lost > 0 {
            return Ok(Delivery::Lagged(std::mem::take(&mut self.stash_lost)));
        }
        loop {
            match self.next_frame().await? {
                Frame::Msg(m) => return Ok(Delivery::Message(message(m))),
                Frame::Lagged { dropped } => return Ok(Delivery::Lagged(dropped)),
                Frame::Error(e) if e.req_id == 0 || self.subscriptions.contains(&e.req_id) => {
                    return Err(ClientError::Refused { code: e.code, reason: e.reason });
                }
                // Late answers to requests given up on, relay-only frames.
                _ => {}
            }
        }
    }

    /// Waits for the `ACK` or `ERROR` answering `req_id` (at most
    /// [`ANSWER_TIMEOUT`]), keeping the deliveries that come first.
    async fn answer(&mut self, req_id: u32, what: &'static str) -> Result<Result<Ack, Refusal>, ClientError> {
        let answer = async {
            loop {
                match self.next_frame().await? {
                    Frame::Ack(a) if a.req_id == req_id => return Ok(Ok(a)),
                    Frame::Error(e) if e.req_id == req_id => {
                        return Ok(Err(Refusal { code: e.code, reason: e.reason }));
                    }
                    other => self.stash(other)?,
                }
            }
        };
        tokio::time::timeout(ANSWER_TIMEOUT, answer).await.unwrap_or(Err(ClientError::NoAnswer(what)))
    }

    /// The one receive path: the next frame that is not the node's
    /// keepalive (answered here); a `GOAWAY` ends it with an error.
    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        // A PONG (or a request) a cancelled call left unwritten goes first.
        if !self.tx.is_empty() {
            self.flush().await?;
        }
        loop {
            match self.recv().await? {
                Frame::Ctrl(Ctrl::Ping { nonce }) => self.send(&Frame::pong(nonce)).await?,
                Frame::Ctrl(Ctrl::Goaway { code, reason, .. }) => return Err(ClientError::GoAway { code, reason }),
                frame => return Ok(frame),
            }
        }
    }

    /// Keeps what arrives for the subscriptions while waiting for
    /// something else: deliveries, and a subscription's `ERROR` (revoked,
    /// for example when its token expired). An `ERROR` for no request is the
    /// session's and ends the wait; anything else unasked for is an error.
    fn stash(&mut self, frame: Frame) -> Result<(), ClientError> {
        let kept = match frame {
            Frame::Msg(m) => Delivery::Message(message(m)),
            Frame::Lagged { dropped } => Delivery::Lagged(dropped),
            Frame::Error(e) if e.req_id == 0 => return Err(ClientError::Refused { code: e.code, reason: e.reason }),
            Frame::Error(e) if self.subscriptions.contains(&e.req_id) => {
                // Never dropped: a subscription's end must reach the caller.
                self.stashed.push_back(Stashed::Revoked(Refusal { code: e.code, reason: e.reason }));
                return Ok(());
            }
            // Late answers to a request given up on, stray PONGs.
            Frame::Ack(_) | Frame::Error(_) | Frame::Ctrl(Ctrl::Pong { .. }) => return Ok(()),
            other => return Err(ClientError::Unexpected(other.kind())),
        };
        let bytes = match &kept {
            Delivery::Message(m) => m.payload.len(),
            Delivery::Lagged(_) => 0,
        };
        if self.stashed.len() < MAX_STASHED && self.stashed_bytes + bytes <= MAX_STASHED_BYTES {
            self.stashed_bytes += bytes;
            self.stashed.push_back(Stashed::Delivery(kept));
        } else {
            self.stash_lost += match kept {
                Delivery::Lagged(n) => n,
                Delivery::Message(_) => 1,
            };
        }
        Ok(())
    }

    fn next_req(&mut self) -> u32 {
        // 0 is "no request" in an ERROR: skipped when the counter wraps.
        self.req_id = self.req_id.checked_add(1).unwrap_or(1);
        self.req_id
    }

    /// Buffers a frame without writing it; [`Client::flush`] sends the lot.
    pub fn feed(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.codec.encode(frame, &mut self.tx)?;
        Ok(())
    }

    /// Writes everything fed so far (through TLS too).
    ///
    /// # Cancel safety
    /// Cancel safe: what was written is gone from the buffer, the rest is
    /// written by the next call.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.stream.write_all_buf(&mut self.tx).await?;
        self.stream.flush().await?;
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

    /// The next frame from the node, as it came (no keepalive handling).
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

/// The deliveries after a [`Client::subscribe`].
pub struct Deliveries<'a> {
    client: &'a mut Client,
}

impl Deliveries<'_> {
    /// The next delivery (see [`Client::next_delivery`]).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn next(&mut self) -> Result<Delivery, ClientError> {
        self.client.next_delivery().await
    }
}

/// A `PUB`'s answer: its receipt, or the node's refusal. An `ACK` without
/// a receipt breaks the protocol.
fn receipt(answer: Result<Ack, Refusal>) -> Result<Receipt, ClientError> {
    match answer {
        Ok(Ack { publish: Some(receipt), .. }) => Ok(Ok(receipt)),
        Ok(_) => Err(ClientError::Unexpected(Kind::Ack)),
        Err(refusal) => Ok(Err(refusal)),
    }
}

fn message(m: oap_codec::Msg) -> Message {
    Message { topic: m.topic, msg_id: m.msg_id, hops: m.hops, payload: m.payload }
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr).await.map_err(|source| ClientError::Connect { addr, source })?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
