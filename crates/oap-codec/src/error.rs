//! Codec errors, each mapped to the spec's `ERROR` code and a closed reason
//! label for metrics.

use std::io;

use crate::frame::Kind;
use crate::topic::TopicError;

/// The spec's error codes (section 2), HTTP-like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// Malformed payload, bad topic, caps mismatch, `len == 0`.
    BadRequest,
    /// Token missing, malformed, bad signature, expired.
    Unauthorized,
    /// Valid token that does not grant this op or topic.
    Forbidden,
    /// Handshake or idle timeout.
    Timeout,
    /// `len > max_frame`.
    TooLarge,
    /// Unknown kind, or a kind whose cap was not negotiated.
    Unsupported,
    /// A session dropped for not reading, or over quota.
    SlowConsumer,
    /// A bug; never expected.
    Internal,
    /// Node shutting down, or fanout full for a `PUB`.
    Unavailable,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub const fn code(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::Timeout => 408,
            ErrorCode::TooLarge => 413,
            ErrorCode::Unsupported => 415,
            ErrorCode::SlowConsumer => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
        }
    }

    /// The spec's name for the code.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::SlowConsumer => "slow_consumer",
            ErrorCode::Internal => "internal",
            ErrorCode::Unavailable => "unavailable",
        }
    }

    /// The code for a number received on the wire, if the spec names it.
    pub const fn from_code(code: u16) -> Option<ErrorCode> {
        Some(match code {
            400 => ErrorCode::BadRequest,
            401 => ErrorCode::Unauthorized,
            403 => ErrorCode::Forbidden,
            408 => ErrorCode::Timeout,
            413 => ErrorCode::TooLarge,
            415 => ErrorCode::Unsupported,
            429 => ErrorCode::SlowConsumer,
            500 => ErrorCode::Internal,
            503 => ErrorCode::Unavailable,
            _ => return None,
        })
    }
}

/// Why bytes could not be decoded into a frame.
///
/// Fatal errors ([`DecodeError::is_fatal`]) leave the stream unusable: the
/// receiver answers with [`DecodeError::code`] and closes. Every other error
/// has consumed exactly its own frame, so the decoder can be called again;
/// a node answers `ERROR` (or, for CTRL, counts and ignores) and reads on.
/// `tokio_util::codec::Framed` ends the stream on any error, which suits
/// clients; a server that wants to keep a session open after a bad frame
/// calls [`tokio_util::codec::Decoder::decode`] itself.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The header announced more than `max_frame`; the body was not read.
    #[error("frame length {len} exceeds max_frame {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The configured cap.
        max: u32,
    },
    /// The header announced `len == 0`, which has no room for a kind.
    #[error("zero-length frame")]
    Empty,
    /// A kind this version does not define; the frame was skipped.
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind {
        /// The kind byte.
        kind: u8,
    },
    /// A known kind whose payload does not parse.
    #[error("malformed {kind} payload: {what}")]
    Malformed {
        /// The frame kind.
        kind: Kind,
        /// The request id, when it could be read (0 otherwise).
        req_id: u32,
        /// What was wrong, for humans.
        what: &'static str,
    },
    /// A topic or pattern that breaks section 3.
    #[error("bad topic in {kind}: {source}")]
    Topic {
        /// The frame kind.
        kind: Kind,
        /// The request id, when it could be read (0 otherwise).
        req_id: u32,
        /// What was wrong with the topic.
        source: TopicError,
    },
    /// A `CTRL` frame with no op byte; counted and ignored by nodes.
    #[error("empty CTRL frame")]
    EmptyCtrl,
    /// A `CTRL` op this version does not define; counted and ignored by nodes.
    #[error("unknown CTRL op {op:#04x}")]
    UnknownCtrlOp {
        /// The op byte.
        op: u8,
    },
    /// The underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl DecodeError {
    /// The spec's error code for this failure.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => ErrorCode::TooLarge,
            DecodeError::UnknownKind { .. } => ErrorCode::Unsupported,
            DecodeError::Empty
            | DecodeError::Malformed { .. }
            | DecodeError::Topic { .. }
            | DecodeError::EmptyCtrl
            | DecodeError::UnknownCtrlOp { .. } => ErrorCode::BadRequest,
            DecodeError::Io(_) => ErrorCode::Internal,
        }
    }

    /// The numeric code, as sent in an `ERROR` frame.
    pub fn code(&self) -> u16 {
        self.error_code().code()
    }

    /// Closed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Empty => "empty",
            DecodeError::UnknownKind { .. } => "unknown_kind",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Topic { .. } => "bad_topic",
            DecodeError::EmptyCtrl => "empty_ctrl",
            DecodeError::UnknownCtrlOp { .. } => "unknown_ctrl_op",
            DecodeError::Io(_) => "io",
        }
    }

    /// True when the stream cannot be read further.
    pub fn is_fatal(&self) -> bool {
        matches!(self, DecodeError::TooLarge { .. } | DecodeError::Empty | DecodeError::Io(_))
    }

    /// The request id the failed frame carried, or 0.
    pub fn req_id(&self) -> u32 {
        match self {
            DecodeError::Malformed { req_id, .. } | DecodeError::Topic { req_id, .. } => *req_id,
            _ => 0,
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The frame would exceed `max_frame`; nothing was written.
    #[error("frame length {len} exceeds max_frame {max}")]
    TooLarge {
        /// The length the frame would have.
        len: usize,
        /// The configured cap.
        max: u32,
    },
    /// The underlying stream failed.
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
}

impl EncodeError {
    /// Closed label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::TooLarge { .. } => "too_large",
            EncodeError::Io(_) => "io",
        }
    }
}
