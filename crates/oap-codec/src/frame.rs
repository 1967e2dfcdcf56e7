//! Typed OAP/1 frames (spec section 2): one enum variant per kind, each with
//! its structured payload. Payload bytes are `Bytes` slices of the frame they
//! arrived in, never copies.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, ErrorCode};
use crate::swarm::SwarmFrame;
use crate::topic::{Pattern, Topic, TopicError};

/// Longest reason text an `ERROR` frame carries, in bytes.
pub const MAX_ERROR_REASON: usize = 512;

/// Frame kinds defined by OAP/1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Opaque bytes; echoed by default.
    Data = 0x01,
    /// Control ops: PING, PONG, GOAWAY.
    Ctrl = 0x02,
    /// Subscribe to a pattern.
    Sub = 0x03,
    /// Drop a subscription.
    Unsub = 0x04,
    /// Publish to a topic.
    Pub = 0x05,
    /// A delivery, or a relay between nodes.
    Msg = 0x06,
    /// Positive answer to a request.
    Ack = 0x07,
    /// Negative answer, or a notice.
    Error = 0x08,
    /// Present a capability token.
    Auth = 0x09,
    /// How many deliveries were dropped since the last `LAGGED`.
    Lagged = 0x0A,
    /// A relay link's identity and advertised address.
    Node = 0x10,
    /// Join the swarm through the receiver.
    Join = 0x11,
    /// A join spreading by random walk.
    ForwardJoin = 0x12,
    /// Ask to enter the receiver's active view.
    Neighbor = 0x13,
    /// Leave the receiver's active view.
    Disconnect = 0x14,
    /// Exchange samples of the views.
    Shuffle = 0x15,
    /// The answer to `SHUFFLE`.
    ShuffleReply = 0x16,
    /// Ids of messages the sender has.
    IHave = 0x17,
    /// Join the receiver's tree; ask for a message.
    Graft = 0x18,
    /// Leave the receiver's tree.
    Prune = 0x19,
    /// The patterns reachable through the sender, per origin's tree.
    Interest = 0x1A,
}

impl Kind {
    /// Every kind, in wire order.
    pub const ALL: [Kind; 21] = [
        Kind::Data,
        Kind::Ctrl,
        Kind::Sub,
        Kind::Unsub,
        Kind::Pub,
        Kind::Msg,
        Kind::Ack,
        Kind::Error,
        Kind::Auth,
        Kind::Lagged,
        Kind::Node,
        Kind::Join,
        Kind::ForwardJoin,
        Kind::Neighbor,
        Kind::Disconnect,
        Kind::Shuffle,
        Kind::ShuffleReply,
        Kind::IHave,
        Kind::Graft,
        Kind::Prune,
        Kind::Interest,
    ];

    /// This kind's position in [`Kind::ALL`], for per-kind counters.
    pub const fn index(self) -> usize {
        match self as u8 {
            b @ 0x01..=0x0A => b as usize - 1,
            b => b as usize - 0x10 + 10,
        }
    }

    /// A swarm kind (OAP-1 section 5): needs `SWARM_V1`.
    pub const fn is_swarm(self) -> bool {
        self as u8 >= 0x10
    }

    /// The kind for a wire byte, if OAP/1 defines it.
    pub const fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            0x01 => Kind::Data,
            0x02 => Kind::Ctrl,
            0x03 => Kind::Sub,
            0x04 => Kind::Unsub,
            0x05 => Kind::Pub,
            0x06 => Kind::Msg,
            0x07 => Kind::Ack,
            0x08 => Kind::Error,
            0x09 => Kind::Auth,
            0x0A => Kind::Lagged,
            0x10 => Kind::Node,
            0x11 => Kind::Join,
            0x12 => Kind::ForwardJoin,
            0x13 => Kind::Neighbor,
            0x14 => Kind::Disconnect,
            0x15 => Kind::Shuffle,
            0x16 => Kind::ShuffleReply,
            0x17 => Kind::IHave,
            0x18 => Kind::Graft,
            0x19 => Kind::Prune,
            0x1A => Kind::Interest,
            _ => return None,
        })
    }

    /// Lowercase name, used as the `kind` metric label.
    pub const fn label(self) -> &'static str {
        match self {
            Kind::Data => "data",
            Kind::Ctrl => "ctrl",
            Kind::Sub => "sub",
            Kind::Unsub => "unsub",
            Kind::Pub => "pub",
            Kind::Msg => "msg",
            Kind::Ack => "ack",
            Kind::Error => "error",
            Kind::Auth => "auth",
            Kind::Lagged => "lagged",
            Kind::Node => "node",
            Kind::Join => "join",
            Kind::ForwardJoin => "forward_join",
            Kind::Neighbor => "neighbor",
            Kind::Disconnect => "disconnect",
            Kind::Shuffle => "shuffle",
            Kind::ShuffleReply => "shuffle_reply",
            Kind::IHave => "ihave",
            Kind::Graft => "graft",
            Kind::Prune => "prune",
            Kind::Interest => "interest",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Data => "DATA",
            Kind::Ctrl => "CTRL",
            Kind::Sub => "SUB",
            Kind::Unsub => "UNSUB",
            Kind::Pub => "PUB",
            Kind::Msg => "MSG",
            Kind::Ack => "ACK",
            Kind::Error => "ERROR",
            Kind::Auth => "AUTH",
            Kind::Lagged => "LAGGED",
            Kind::Node => "NODE",
            Kind::Join => "JOIN",
            Kind::ForwardJoin => "FORWARD_JOIN",
            Kind::Neighbor => "NEIGHBOR",
            Kind::Disconnect => "DISCONNECT",
            Kind::Shuffle => "SHUFFLE",
            Kind::ShuffleReply => "SHUFFLE_REPLY",
            Kind::IHave => "IHAVE",
            Kind::Graft => "GRAFT",
            Kind::Prune => "PRUNE",
            Kind::Interest => "INTEREST",
        })
    }
}

/// A 16-byte message id, unique per node and across restarts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MsgId(pub [u8; 16]);

impl fmt::Debug for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MsgId({self})")
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// `CTRL` ops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ctrl {
    /// Liveness probe; answered with `PONG` carrying the same nonce.
    Ping {
        /// Echoed back in the `PONG`.
        nonce: u64,
    },
    /// Answer to a `PING`.
    Pong {
        /// The nonce of the `PING`.
        nonce: u64,
    },
    /// The sender sends nothing more and closes after flushing.
    Goaway {
        /// An [`ErrorCode`] number: 408, 429, 503, ...
        code: u16,
        /// When the receiver may come back.
        reconnect_after_ms: u32,
        /// Human-readable reason.
        reason: String,
    },
}

impl Ctrl {
    /// Op byte of `PING`.
    pub const PING: u8 = 0x01;
    /// Op byte of `PONG`.
    pub const PONG: u8 = 0x02;
    /// Op byte of `GOAWAY`.
    pub const GOAWAY: u8 = 0x03;
}

/// A delivery to a subscriber, or a relay between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msg {
    /// The topic it was published to.
    pub topic: Topic,
    /// Assigned by the node that accepted the `PUB`.
    pub msg_id: MsgId,
    /// Relay hops so far: 0 to local subscribers of the origin node.
    pub hops: u8,
    /// The message body.
    pub payload: Bytes,
}

/// What an `ACK` for a `PUB` adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PubAck {
    /// The id the node assigned.
    pub msg_id: MsgId,
    /// Subscriber queues and relay links the message was handed to.
    pub queued: u32,
    /// Queues that were full and dropped it.
    pub dropped: u32,
}

/// A positive answer to `SUB`, `UNSUB`, `PUB` or `AUTH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The request being answered.
    pub req_id: u32,
    /// Present when answering a `PUB`.
    pub publish: Option<PubAck>,
}

/// An `ERROR` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// An [`ErrorCode`] number.
    pub code: u16,
    /// The request it answers, or 0.
    pub req_id: u32,
    /// Human-readable reason, at most [`MAX_ERROR_REASON`] bytes.
    pub reason: String,
}

impl ErrorFrame {
    /// An error with `reason` cut to [`MAX_ERROR_REASON`] bytes on a char boundary.
    pub fn new(code: ErrorCode, req_id: u32, reason: impl Into<String>) -> ErrorFrame {
        let mut reason = reason.into();
        if reason.len() > MAX_ERROR_REASON {
            let mut end = MAX_ERROR_REASON;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        ErrorFrame { code: code.code(), req_id, reason }
    }
}

/// One OAP/1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opaque bytes.
    Data(Bytes),
    /// A control op.
    Ctrl(Ctrl),
    /// Subscribe to `pattern`.
    Sub {
        /// Answered by `ACK` or `ERROR` with this id.
        req_id: u32,
        /// What to subscribe to; wildcards allowed.
        pattern: Pattern,
    },
    /// Drop the subscription made with the same pattern text.
    Unsub {
        /// Answered by `ACK` or `ERROR` with this id.
        req_id: u32,
        /// The pattern text of the `SUB`.
        pattern: Pattern,
    },
    /// Publish `payload` to `topic`.
    Pub {
        /// 0 for no `ACK`.
        req_id: u32,
        /// Where to publish; no wildcards.
        topic: Topic,
        /// The message body.
        payload: Bytes,
    },
    /// A delivery or relay.
    Msg(Msg),
    /// A positive answer.
    Ack(Ack),
    /// A negative answer.
    Error(ErrorFrame),
    /// A capability token.
    Auth {
        /// Answered by `ACK` or `ERROR 401` with this id.
        req_id: u32,
        /// The token text (base64url macaroon).
        token: Bytes,
    },
    /// Deliveries dropped since the last `LAGGED`.
    Lagged {
        /// How many.
        dropped: u64,
    },
    /// A swarm frame (kinds `0x10` and up).
    Swarm(SwarmFrame),
}

impl Frame {
    /// A `DATA` frame.
    pub fn data(payload: impl Into<Bytes>) -> Frame {
        Frame::Data(payload.into())
    }

    /// A `CTRL PING`.
    pub fn ping(nonce: u64) -> Frame {
        Frame::Ctrl(Ctrl::Ping { nonce })
    }

    /// A `CTRL PONG`.
    pub fn pong(nonce: u64) -> Frame {
        Frame::Ctrl(Ctrl::Pong { nonce })
    }

    /// A `CTRL GOAWAY`, reason cut like an `ERROR` reason.
    pub fn goaway(code: ErrorCode, reconnect_after_ms: u32, reason: impl Into<String>) -> Frame {
        let ErrorFrame { code, reason, .. } = ErrorFrame::new(code, 0, reason);
        Frame::Ctrl(Ctrl::Goaway { code, reconnect_after_ms, reason })
    }

    /// An `ERROR` frame.
    pub fn error(code: ErrorCode, req_id: u32, reason: impl Into<String>) -> Frame {
        Frame::Error(ErrorFrame::new(code, req_id, reason))
    }

    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            Frame::Data(_) => Kind::Data,
            Frame::Ctrl(_) => Kind::Ctrl,
            Frame::Sub { .. } => Kind::Sub,
            Frame::Unsub { .. } => Kind::Unsub,
            Frame::Pub { .. } => Kind::Pub,
            Frame::Msg(_) => Kind::Msg,
            Frame::Ack(_) => Kind::Ack,
            Frame::Error(_) => Kind::Error,
            Frame::Auth { .. } => Kind::Auth,
            Frame::Lagged { .. } => Kind::Lagged,
            Frame::Swarm(s) => s.kind(),
        }
    }

    /// Bytes on the wire, header included.
    pub fn encoded_len(&self) -> usize {
        crate::HEADER_LEN + 1 + self.head_len() + self.tail().len()
    }

    /// Writes the header and every field but the trailing bytes of
    /// [`Frame::tail`]; a writer may send the tail from its own buffer
    /// instead of copying it. Does not check `max_frame`.
    pub fn encode_head(&self, dst: &mut BytesMut) {
        let len = 1 + self.head_len() + self.tail().len();
        dst.reserve(crate::HEADER_LEN + 1 + self.head_len());
        // `len` fits in u32: callers check it against `max_frame` (<= 1 MiB)
        // before encoding, and the codec does so in `Encoder::encode`.
        dst.put_u32(len as u32);
        dst.put_u8(self.kind() as u8);
        match self {
            Frame::Data(_) => {}
            Frame::Ctrl(Ctrl::Ping { nonce }) => {
                dst.put_u8(Ctrl::PING);
                dst.put_u64(*nonce);
            }
            Frame::Ctrl(Ctrl::Pong { nonce }) => {
                dst.put_u8(Ctrl::PONG);
                dst.put_u64(*nonce);
            }
            Frame::Ctrl(Ctrl::Goaway { code, reconnect_after_ms, .. }) => {
                dst.put_u8(Ctrl::GOAWAY);
                dst.put_u16(*code);
                dst.put_u32(*reconnect_after_ms);
            }
            Frame::Sub { req_id, pattern } | Frame::Unsub { req_id, pattern } => {
                dst.put_u32(*req_id);
                put_name(dst, pattern.as_bytes());
            }
            Frame::Pub { req_id, topic, .. } => {
                dst.put_u32(*req_id);
                put_name(dst, topic.as_bytes());
            }
            Frame::Msg(msg) => put_msg_fields(dst, &msg.topic, msg.msg_id, msg.hops),
            Frame::Ack(ack) => {
                dst.put_u32(ack.req_id);
                if let Some(p) = &ack.publish {
                    dst.put_slice(&p.msg_id.0);
                    dst.put_u32(p.queued);
                    dst.put_u32(p.dropped);
                }
            }
            Frame::Error(e) => {
                dst.put_u16(e.code);
                dst.put_u32(e.req_id);
            }
            Frame::Auth { req_id, .. } => dst.put_u32(*req_id),
            Frame::Lagged { dropped } => dst.put_u64(*dropped),
            Frame::Swarm(s) => s.encode_payload(dst),
        }
    }

    /// The trailing variable-length bytes of the payload (message body,
    /// token, or reason text); empty for fixed-size frames.
    pub fn tail(&self) -> &[u8] {
        match self {
            Frame::Data(b) | Frame::Pub { payload: b, .. } | Frame::Auth { token: b, .. } => b,
            Frame::Msg(msg) => &msg.payload,
            Frame::Ctrl(Ctrl::Goaway { reason, .. }) => reason.as_bytes(),
            Frame::Error(e) => e.reason.as_bytes(),
            Frame::Ctrl(_)
            | Frame::Sub { .. }
            | Frame::Unsub { .. }
            | Frame::Ack(_)
            | Frame::Lagged { .. }
            | Frame::Swarm(_) => &[],
        }
    }

    /// The whole frame into `dst`. Does not check `max_frame`; use the codec
    /// where the size is not already known to fit.
    pub fn encode_into(&self, dst: &mut BytesMut) {
        self.encode_head(dst);
        dst.extend_from_slice(self.tail());
    }

    /// Parses a frame body (`kind` byte and the payload after it).
    pub fn decode(kind: u8, payload: Bytes) -> Result<Frame, DecodeError> {
        let kind = Kind::from_u8(kind).ok_or(DecodeError::UnknownKind { kind })?;
        let mut r = Reader { kind, req_id: 0, buf: payload };
        let frame = match kind {
            Kind::Data => Frame::Data(r.buf),
            Kind::Ctrl => {
                let op = *r.buf.first().ok_or(DecodeError::EmptyCtrl)?;
                r.buf.advance(1);
                let ctrl = match op {
                    Ctrl::PING => Ctrl::Ping { nonce: r.u64("PING needs an 8-byte nonce")? },
                    Ctrl::PONG => Ctrl::Pong { nonce: r.u64("PONG needs an 8-byte nonce")? },
                    Ctrl::GOAWAY => Ctrl::Goaway {
                        code: r.u16("GOAWAY needs a code")?,
                        reconnect_after_ms: r.u32("GOAWAY needs reconnect_after_ms")?,
                        reason: r.text()?,
                    },
                    op => return Err(DecodeError::UnknownCtrlOp { op }),
                };
                r.end()?;
                Frame::Ctrl(ctrl)
            }
            Kind::Sub | Kind::Unsub => {
                r.req_id = r.u32("needs a req_id")?;
                let req_id = r.req_id;
                let pattern = r.name(Pattern::new)?;
                r.end()?;
                if kind == Kind::Sub { Frame::Sub { req_id, pattern } } else { Frame::Unsub { req_id, pattern } }
            }
            Kind::Pub => {
                r.req_id = r.u32("needs a req_id")?;
                let topic = r.name(Topic::new)?;
                Frame::Pub { req_id: r.req_id, topic, payload: r.buf }
            }
            Kind::Msg => {
                let topic = r.name(Topic::new)?;
                let msg_id = r.msg_id()?;
                let hops = r.u8("needs hops")?;
                Frame::Msg(Msg { topic, msg_id, hops, payload: r.buf })
            }
            Kind::Ack => {
                let req_id = r.u32("needs a req_id")?;
                let publish = match r.buf.len() {
                    0 => None,
                    24 => Some(PubAck {
                        msg_id: r.msg_id()?,
                        queued: r.u32("needs queued")?,
                        dropped: r.u32("needs dropped")?,
                    }),
                    _ => return Err(r.malformed("ACK is 4 or 28 bytes")),
                };
                Frame::Ack(Ack { req_id, publish })
            }
            Kind::Error => {
                let code = r.u16("needs a code")?;
                let req_id = r.u32("needs a req_id")?;
                Frame::Error(ErrorFrame { code, req_id, reason: r.reason()? })
            }
            Kind::Auth => {
                r.req_id = r.u32("needs a req_id")?;
                Frame::Auth { req_id: r.req_id, token: r.buf }
            }
            Kind::Lagged => {
                let dropped = r.u64("needs a u64 count")?;
                r.end()?;
                Frame::Lagged { dropped }
            }
            _ => Frame::Swarm(SwarmFrame::decode(&mut r)?),
        };
        Ok(frame)
    }

    /// Length of the fixed fields and length-prefixed names before the tail.
    fn head_len(&self) -> usize {
        match self {
            Frame::Data(_) => 0,
            Frame::Ctrl(Ctrl::Ping { .. } | Ctrl::Pong { .. }) => 1 + 8,
            Frame::Ctrl(Ctrl::Goaway { .. }) => 1 + 2 + 4,
            Frame::Sub { pattern, .. } | Frame::Unsub { pattern, .. } => 4 + 1 + pattern.as_bytes().len(),
            Frame::Pub { topic, .. } => 4 + 1 + topic.as_bytes().len(),
            Frame::Msg(msg) => 1 + msg.topic.as_bytes().len() + 16 + 1,
            Frame::Ack(ack) => 4 + if ack.publish.is_some() { 24 } else { 0 },
            Frame::Error(_) => 2 + 4,
            Frame::Auth { .. } => 4,
            Frame::Lagged { .. } => 8,
            Frame::Swarm(s) => s.payload_len(),
        }
    }
}

/// A `MSG` frame's fields between its kind byte and its payload.
fn put_msg_fields(dst: &mut BytesMut, topic: &Topic, msg_id: MsgId, hops: u8) {
    put_name(dst, topic.as_bytes());
    dst.put_slice(&msg_id.0);
    dst.put_u8(hops);
}

impl Msg {
    /// This message as a whole `MSG` frame carrying `hops` (a relay forwards
    /// with its own count), encoded straight from its fields: no `Frame` is
    /// built, so nothing is cloned. Does not check `max_frame`.
    pub fn encode_as(&self, hops: u8) -> Bytes {
        let len = 1 + 1 + self.topic.as_bytes().len() + 16 + 1 + self.payload.len();
        let mut dst = BytesMut::with_capacity(crate::HEADER_LEN + len);
        // `len` fits in u32: callers check it against `max_frame` (<= 1 MiB).
        dst.put_u32(len as u32);
        dst.put_u8(Kind::Msg as u8);
        put_msg_fields(&mut dst, &self.topic, self.msg_id, hops);
        dst.put_slice(&self.payload);
        dst.freeze()
    }
}

fn put_name(dst: &mut BytesMut, name: &[u8]) {
    // Topics and patterns are validated to 1..=255 bytes at construction.
    dst.put_u8(name.len() as u8);
    dst.put_slice(name);
}

/// A cursor over a frame payload that turns short reads into `Malformed`.
pub(crate) struct Reader {
    pub(crate) kind: Kind,
    pub(crate) req_id: u32,
    pub(crate) buf: Bytes,
}

impl Reader {
    pub(crate) fn malformed(&self, what: &'static str) -> DecodeError {
        DecodeError::Malformed { kind: self.kind, req_id: self.req_id, what }
    }

    pub(crate) fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n { Err(self.malformed(what)) } else { Ok(()) }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn msg_id(&mut self) -> Result<MsgId, DecodeError> {
        self.need(16, "needs a 16-byte msg_id")?;
        let mut id = [0u8; 16];
        self.buf.copy_to_slice(&mut id);
        Ok(MsgId(id))
    }

    /// A msg_id, or nothing: an empty payload.
    pub(crate) fn optional_msg_id(&mut self) -> Result<Option<MsgId>, DecodeError> {
        if self.buf.is_empty() { Ok(None) } else { self.msg_id().map(Some) }
    }

    pub(crate) fn name<T>(&mut self, parse: fn(Bytes) -> Result<T, TopicError>) -> Result<T, DecodeError> {
        let n = usize::from(self.u8("needs a topic length")?);
        self.need(n, "topic is shorter than its length byte")?;
        let raw = self.buf.split_to(n);
        parse(raw).map_err(|source| DecodeError::Topic { kind: self.kind, req_id: self.req_id, source })
    }

    /// An `ERROR` reason: UTF-8, at most 512 bytes.
    fn reason(&mut self) -> Result<String, DecodeError> {
        if self.buf.len() > MAX_ERROR_REASON {
            return Err(self.malformed("reason is longer than 512 bytes"));
        }
        self.text()
    }

    /// The rest of the payload as UTF-8 (bounded by `max_frame`).
    fn text(&mut self) -> Result<String, DecodeError> {
        let raw = std::mem::take(&mut self.buf);
        String::from_utf8(raw.to_vec()).map_err(|_| self.malformed("reason is not UTF-8"))
    }

    pub(crate) fn end(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() { Ok(()) } else { Err(self.malformed("trailing bytes")) }
    }
}
