//! OAP/1 wire format: the 9-byte hello, typed frames, topics and patterns, and
//! [`OapCodec`], a tokio-util `Decoder`/`Encoder` with a hard `max_frame` cap.
//!
//! This crate is sans-IO: it never touches a socket, a runtime or a clock, so
//! svc-overlay, svc-dht and tests all share one byte-exact implementation of
//! `specs/OAP-1.md`.
//!
//! ```
//! use bytes::BytesMut;
//! use oap_codec::{Frame, OapCodec};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = OapCodec::new();
//! let mut wire = BytesMut::new();
//! codec.encode(Frame::data("hello, overlay!"), &mut wire).unwrap();
//! assert_eq!(&wire[..5], &[0, 0, 0, 0x10, 0x01]);
//! assert_eq!(codec.decode(&mut wire).unwrap(), Some(Frame::data("hello, overlay!")));
//! ```

// No clock reads here: time comes in as an argument (clippy.toml names them).
#![deny(clippy::disallowed_methods)]

mod codec;
mod error;
mod frame;
mod hello;
mod swarm;
mod topic;

pub use codec::{HEADER_LEN, MAX_FRAME, OapCodec};
pub use error::{DecodeError, EncodeError, ErrorCode};
pub use frame::{Ack, Ctrl, ErrorFrame, Frame, Kind, MAX_ERROR_REASON, Msg, MsgId, PubAck};
pub use hello::{Caps, HELLO_LEN, Hello, HelloError, MAGIC, Negotiated, VERSION};
pub use swarm::{IHave, NODE_ID_LEN, NodeAddr, NodeId, ORIGIN_LEN, Priority, SwarmFrame};
pub use topic::{MAX_TOPIC_LEN, Pattern, Topic, TopicError};
