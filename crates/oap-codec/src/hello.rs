//! The 9-byte OAP/1 hello and capability negotiation (spec section 1).
//!
//! Pure functions over bytes: reading the hello off a socket under a timeout is
//! the session's job, never this module's.

use std::fmt;
use std::ops::{BitAnd, BitOr};

/// The four magic bytes every hello starts with.
pub const MAGIC: [u8; 4] = *b"OAP1";
/// The protocol version this crate speaks; higher versions negotiate down to it.
pub const VERSION: u8 = 1;
/// Length of a hello on the wire.
pub const HELLO_LEN: usize = 9;

/// Capability bits carried in a hello. Unknown bits are kept, never rejected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caps(u32);

impl Caps {
    /// Required on both sides.
    pub const GOSSIP_V1: Caps = Caps(0x0001);
    /// `SUB`, `UNSUB`, `PUB`, `MSG`, `ACK`, `LAGGED`.
    pub const PUBSUB_V1: Caps = Caps(0x0004);
    /// The sender is an overlay node and the session is a relay link.
    pub const PEER_V1: Caps = Caps(0x0008);
    /// `AUTH` frames.
    pub const AUTH_V1: Caps = Caps(0x0010);
    /// With `PEER_V1`: the swarm's identity, membership and tree frames.
    pub const SWARM_V1: Caps = Caps(0x0020);
    /// The sender's TLS session negotiated a hybrid post-quantum key exchange.
    pub const PQ_HYBRID: Caps = Caps(0x0100);

    const NAMED: [(Caps, &'static str); 6] = [
        (Caps::GOSSIP_V1, "GOSSIP_V1"),
        (Caps::PUBSUB_V1, "PUBSUB_V1"),
        (Caps::PEER_V1, "PEER_V1"),
        (Caps::AUTH_V1, "AUTH_V1"),
        (Caps::SWARM_V1, "SWARM_V1"),
        (Caps::PQ_HYBRID, "PQ_HYBRID"),
    ];

    /// No bits set.
    pub const fn empty() -> Caps {
        Caps(0)
    }

    /// Caps from raw bits, unknown bits included.
    pub const fn from_bits(bits: u32) -> Caps {
        Caps(bits)
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True when every bit of `other` is set in `self`.
    pub const fn contains(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` added.
    pub const fn with(self, other: Caps) -> Caps {
        Caps(self.0 | other.0)
    }
}

impl BitOr for Caps {
    type Output = Caps;
    fn bitor(self, rhs: Caps) -> Caps {
        Caps(self.0 | rhs.0)
    }
}

impl BitAnd for Caps {
    type Output = Caps;
    fn bitand(self, rhs: Caps) -> Caps {
        Caps(self.0 & rhs.0)
    }
}

impl fmt::Debug for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        f.write_str("Caps(")?;
        for (cap, name) in Caps::NAMED {
            if self.contains(cap) {
                if !first {
                    f.write_str(" | ")?;
                }
                f.write_str(name)?;
                first = false;
                rest &= !cap.0;
            }
        }
        if rest != 0 {
            if !first {
                f.write_str(" | ")?;
            }
            write!(f, "{rest:#x}")?;
        }
        f.write_str(")")
    }
}

/// A hello as sent or received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version; 1 for this crate, higher from newer peers.
    pub version: u8,
    /// The sender's capability bits.
    pub caps: Caps,
}

/// What both sides agreed on after the hello exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Always [`VERSION`]: a higher peer version negotiates down.
    pub version: u8,
    /// `ours & theirs`.
    pub caps: Caps,
}

/// Why a peer's hello was refused. Checked in spec order: magic, version, caps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HelloError {
    /// The first four bytes are not `OAP1`.
    #[error("bad magic {0:02x?}, expected \"OAP1\"")]
    Preamble([u8; 4]),
    /// Version 0 is not a protocol version.
    #[error("unsupported version {0}")]
    Version(u8),
    /// One side did not set `GOSSIP_V1`.
    #[error("caps mismatch: GOSSIP_V1 is required on both sides (ours {ours:?}, theirs {theirs:?})")]
    Caps {
        /// Our advertised caps.
        ours: Caps,
        /// The peer's advertised caps.
        theirs: Caps,
    },
}

impl HelloError {
    /// The spec's error code (sent as `ERROR` only for [`HelloError::Caps`]).
    pub fn code(&self) -> u16 {
        400
    }

    /// Closed label for `overlay_handshake_fail_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            HelloError::Preamble(_) => "preamble",
            HelloError::Version(_) => "version",
            HelloError::Caps { .. } => "caps",
        }
    }

    /// True when the spec wants an `ERROR 400` sent before closing.
    pub fn sends_error(&self) -> bool {
        matches!(self, HelloError::Caps { .. })
    }
}

impl Hello {
    /// A version-1 hello advertising `caps`.
    pub const fn new(caps: Caps) -> Hello {
        Hello { version: VERSION, caps }
    }

    /// The 9 wire bytes.
    pub fn encode(&self) -> [u8; HELLO_LEN] {
        let mut out = [0u8; HELLO_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4] = self.version;
        out[5..].copy_from_slice(&self.caps.bits().to_be_bytes());
        out
    }

    /// Parses and checks magic and version. Caps are checked by [`Hello::negotiate`].
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Hello, HelloError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(HelloError::Preamble(magic));
        }
        let version = bytes[4];
        if version == 0 {
            return Err(HelloError::Version(version));
        }
        let caps = Caps::from_bits(u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]));
        Ok(Hello { version, caps })
    }

    /// Agrees on version and caps with a peer whose hello was `theirs`.
    pub fn negotiate(ours: Caps, theirs: &Hello) -> Result<Negotiated, HelloError> {
        if theirs.version == 0 {
            return Err(HelloError::Version(theirs.version));
        }
        if !ours.contains(Caps::GOSSIP_V1) || !theirs.caps.contains(Caps::GOSSIP_V1) {
            return Err(HelloError::Caps { ours, theirs: theirs.caps });
        }
        Ok(Negotiated { version: VERSION, caps: ours & theirs.caps })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_hello_gossip_v1() {
        let hello = Hello::new(Caps::GOSSIP_V1);
        assert_eq!(hello.encode(), [0x4f, 0x41, 0x50, 0x31, 0x01, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(Hello::decode(&hello.encode()), Ok(hello));
    }

    #[test]
    fn higher_version_negotiates_down_and_unknown_bits_are_ignored() {
        let theirs = Hello::decode(&[0x4f, 0x41, 0x50, 0x31, 7, 0x80, 0, 0x02, 0x05]).unwrap();
        assert_eq!(theirs.version, 7);
        let n = Hello::negotiate(Caps::GOSSIP_V1 | Caps::PUBSUB_V1, &theirs).unwrap();
        assert_eq!(n.version, 1);
        assert_eq!(n.caps, Caps::GOSSIP_V1 | Caps::PUBSUB_V1);
    }

    #[test]
    fn refusals_in_spec_order() {
        let bad_magic = Hello::decode(b"OAP2\x00\x00\x00\x00\x00").unwrap_err();
        assert_eq!(bad_magic.reason(), "preamble");
        let v0 = Hello::decode(b"OAP1\x00\x00\x00\x00\x01").unwrap_err();
        assert_eq!(v0.reason(), "version");
        let no_gossip = Hello::decode(b"OAP1\x01\x00\x00\x00\x04").unwrap();
        let err = Hello::negotiate(Caps::GOSSIP_V1, &no_gossip).unwrap_err();
        assert_eq!((err.reason(), err.code(), err.sends_error()), ("caps", 400, true));
    }

    #[test]
    fn caps_debug_names_bits() {
        let caps = Caps::GOSSIP_V1 | Caps::PQ_HYBRID | Caps::from_bits(0x8000);
        assert_eq!(format!("{caps:?}"), "Caps(GOSSIP_V1 | PQ_HYBRID | 0x8000)");
    }
}
