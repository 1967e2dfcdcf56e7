//! The swarm's frames (OAP-1 section 5, kinds `0x10` to `0x1A`, under
//! `PEER_V1` and `SWARM_V1`): a relay link's identity, HyParView membership,
//! PlumTree's tree repair and the interest summaries that steer it.
//! Payloads travel as `MSG` frames.
//!
//! Every field is fixed-size or counted, so a frame is all "head" (no
//! trailing body): `encoded_len` is exact and the decoder checks each count
//! against the bytes that remain before it allocates.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::fmt;

use bytes::{Buf, BufMut, BytesMut};

use crate::error::DecodeError;
use crate::frame::{Kind, MsgId, Reader};
use crate::topic::Pattern;

/// Bytes of a [`NodeId`].
pub const NODE_ID_LEN: usize = 32;

/// A node's identity in the swarm: 32 bytes (random, configured, or derived
/// from the node certificate's public key).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; NODE_ID_LEN]);

impl fmt::Display for NodeId {
    /// The first 8 bytes in hex, as logs and `/peersz` show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0[..8].iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// A node and the address it can be dialed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeAddr {
    /// Its identity.
    pub id: NodeId,
    /// Where it accepts relay links (its advertised address).
    pub addr: SocketAddr,
}

/// How strongly a `NEIGHBOR` request asks to be taken into the active view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The sender has other active peers: the receiver may refuse.
    Low,
    /// The sender's active view is empty: the receiver must accept.
    High,
}

/// One message id announced by `IHAVE`, with the hops it took to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IHave {
    /// The announced message.
    pub msg_id: MsgId,
    /// Hops from the origin to the announcing node.
    pub hops: u8,
}

/// A swarm frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwarmFrame {
    /// Sent by both sides right after the hello: who I am, where I listen.
    Node(NodeAddr),
    /// Asks the receiver to take the sender into its active view and spread
    /// the join (HyParView JOIN).
    Join,
    /// A join spreading by random walk: `node` joined, `ttl` steps remain.
    ForwardJoin {
        /// Walk steps left.
        ttl: u8,
        /// The node that joined.
        node: NodeAddr,
    },
    /// The sender took the receiver into its active view and asks the same
    /// of it; a refusal is a `DISCONNECT`.
    Neighbor {
        /// Whether the receiver may refuse.
        priority: Priority,
    },
    /// The sender drops the receiver from its active view.
    Disconnect {
        /// The sender stays up (keep it as a passive peer), or it leaves.
        alive: bool,
    },
    /// A sample of the origin's views, walking to a random node (SHUFFLE).
    Shuffle {
        /// Walk steps left.
        ttl: u8,
        /// The node that started the shuffle, which gets the reply.
        origin: NodeAddr,
        /// The sample.
        nodes: Vec<NodeAddr>,
    },
    /// The receiving node's sample in exchange, sent to the origin.
    ShuffleReply {
        /// The sample.
        nodes: Vec<NodeAddr>,
    },
    /// Ids of messages the sender has (PlumTree lazy push).
    IHave(Vec<IHave>),
    /// Puts the link back in the broadcast tree of this message's origin
    /// (`None`: of every origin) and asks for the message, if the sender
    /// was announced it and is missing it.
    Graft(Option<MsgId>),
    /// Takes the link out of the broadcast tree of this message's origin
    /// (`None`: of every origin): the sender got the message twice.
    Prune(Option<MsgId>),
    /// What subscribers are reachable through the sender in the trees of
    /// these origins (a message id's first [`ORIGIN_LEN`] bytes): send it
    /// the messages, and `IHAVE`s, whose topic a pattern matches.
    Interest {
        /// The origins this summary is for.
        origins: Vec<[u8; ORIGIN_LEN]>,
        /// The patterns; `None`: every topic (the summary is too large, or
        /// not known, or withdrawn).
        patterns: Option<Vec<Pattern>>,
        /// The receiver is the sender's parent in these trees (its first
        /// copies come from it): the receiver keeps the link in them.
        parent: bool,
    },
}

/// `INTEREST` flag: every topic (no pattern list follows).
const INTEREST_EVERY: u8 = 1;
/// `INTEREST` flag: the receiver is the sender's parent in these trees.
const INTEREST_PARENT: u8 = 2;

/// Bytes of a message id that name its origin (the publishing node's
/// generator), the key of a broadcast tree.
pub const ORIGIN_LEN: usize = 6;

impl SwarmFrame {
    /// Peers a `SHUFFLE` or `SHUFFLE_REPLY` carries at most (its count byte).
    pub const MAX_NODES: usize = u8::MAX as usize;
    /// Ids an `IHAVE` is built with at most: 4,096 x 17 bytes (about
    /// 70 KiB) fits the default `max_frame`. A receiver accepts any count
    /// its frame can hold. (A node configured with a `max_frame` below it
    /// needs smaller batches: a note for the node's swarm driver.)
    pub const MAX_IHAVE: usize = 4096;
    /// Origins an `INTEREST` carries at most (its count is a u16).
    pub const MAX_ORIGINS: usize = u16::MAX as usize;
    /// Patterns an `INTEREST` carries at most (its count is a u16).
    pub const MAX_PATTERNS: usize = u16::MAX as usize;

    /// The frame's kind.
    pub fn kind(&self) -> Kind {
        match self {
            SwarmFrame::Node(_) => Kind::Node,
            SwarmFrame::Join => Kind::Join,
            SwarmFrame::ForwardJoin { .. } => Kind::ForwardJoin,
            SwarmFrame::Neighbor { .. } => Kind::Neighbor,
            SwarmFrame::Disconnect { .. } => Kind::Disconnect,
            SwarmFrame::Shuffle { .. } => Kind::Shuffle,
            SwarmFrame::ShuffleReply { .. } => Kind::ShuffleReply,
            SwarmFrame::IHave(_) => Kind::IHave,
            SwarmFrame::Graft(_) => Kind::Graft,
            SwarmFrame::Prune(_) => Kind::Prune,
            SwarmFrame::Interest { .. } => Kind::Interest,
        }
    }

    /// Bytes after the kind byte.
    pub(crate) fn payload_len(&self) -> usize {
        match self {
            SwarmFrame::Node(n) => node_len(n),
            SwarmFrame::Join => 0,
            SwarmFrame::ForwardJoin { node, .. } => 1 + node_len(node),
            SwarmFrame::Neighbor { .. } | SwarmFrame::Disconnect { .. } => 1,
            SwarmFrame::Shuffle { origin, nodes, .. } => 1 + node_len(origin) + nodes_len(nodes),
            SwarmFrame::ShuffleReply { nodes } => nodes_len(nodes),
            SwarmFrame::IHave(ids) => 2 + ids.len().min(Self::MAX_IHAVE) * (16 + 1),
            SwarmFrame::Graft(id) | SwarmFrame::Prune(id) => id.map_or(0, |_| 16),
            SwarmFrame::Interest { origins, patterns, .. } => {
                let patterns = patterns.as_deref().map_or(0, |p| {
                    2 + p.iter().take(Self::MAX_PATTERNS).map(|p| 1 + p.as_bytes().len()).sum::<usize>()
                });
                2 + origins.len().min(Self::MAX_ORIGINS) * ORIGIN_LEN + 1 + patterns
            }
        }
    }

    /// Writes the payload (after the kind byte). Counts beyond
    /// [`SwarmFrame::MAX_NODES`] / [`SwarmFrame::MAX_IHAVE`] are the
    /// caller's bug; they are cut to the bound so the frame stays valid.
    pub(crate) fn encode_payload(&self, dst: &mut BytesMut) {
        match self {
            SwarmFrame::Node(n) => put_node(dst, n),
            SwarmFrame::Join => {}
            SwarmFrame::ForwardJoin { ttl, node } => {
                dst.put_u8(*ttl);
                put_node(dst, node);
            }
            SwarmFrame::Neighbor { priority } => dst.put_u8(u8::from(*priority == Priority::High)),
            SwarmFrame::Disconnect { alive } => dst.put_u8(u8::from(*alive)),
            SwarmFrame::Shuffle { ttl, origin, nodes } => {
                dst.put_u8(*ttl);
                put_node(dst, origin);
                put_nodes(dst, nodes);
            }
            SwarmFrame::ShuffleReply { nodes } => put_nodes(dst, nodes),
            SwarmFrame::IHave(ids) => {
                let ids = &ids[..ids.len().min(Self::MAX_IHAVE)];
                dst.put_u16(ids.len() as u16);
                for i in ids {
                    dst.put_slice(&i.msg_id.0);
                    dst.put_u8(i.hops);
                }
            }
            SwarmFrame::Graft(id) | SwarmFrame::Prune(id) => {
                if let Some(id) = id {
                    dst.put_slice(&id.0);
                }
            }
            SwarmFrame::Interest { origins, patterns, parent } => {
                let origins = &origins[..origins.len().min(Self::MAX_ORIGINS)];
                dst.put_u16(origins.len() as u16);
                origins.iter().for_each(|o| dst.put_slice(o));
                let parent = if *parent { INTEREST_PARENT } else { 0 };
                match patterns {
                    None => dst.put_u8(INTEREST_EVERY | parent),
                    Some(patterns) => {
                        let patterns = &patterns[..patterns.len().min(Self::MAX_PATTERNS)];
                        dst.put_u8(parent);
                        dst.put_u16(patterns.len() as u16);
                        for p in patterns {
                            // Patterns are 1..=255 bytes (checked when made).
                            dst.put_u8(p.as_bytes().len() as u8);
                            dst.put_slice(p.as_bytes());
                        }
                    }
                }
            }
        }
    }

    /// Parses the payload of a swarm kind.
    pub(crate) fn decode(r: &mut Reader) -> Result<SwarmFrame, DecodeError> {
        let frame = match r.kind {
            Kind::Node => SwarmFrame::Node(r.node()?),
            Kind::Join => SwarmFrame::Join,
            Kind::ForwardJoin => SwarmFrame::ForwardJoin { ttl: r.u8("needs a ttl")?, node: r.node()? },
            Kind::Neighbor => {
                let priority = if r.flag("needs a priority")? { Priority::High } else { Priority::Low };
                SwarmFrame::Neighbor { priority }
            }
            Kind::Disconnect => SwarmFrame::Disconnect { alive: r.flag("needs alive")? },
            Kind::Shuffle => SwarmFrame::Shuffle { ttl: r.u8("needs a ttl")?, origin: r.node()?, nodes: r.nodes()? },
            Kind::ShuffleReply => SwarmFrame::ShuffleReply { nodes: r.nodes()? },
            Kind::IHave => {
                let n = usize::from(r.u16("needs a count")?);
                // Checked before allocating: the count must fit what is left.
                r.need(n * 17, "fewer ids than its count")?;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(IHave { msg_id: r.msg_id()?, hops: r.u8("needs hops")? });
                }
                SwarmFrame::IHave(ids)
            }
            Kind::Graft => SwarmFrame::Graft(r.optional_msg_id()?),
            Kind::Prune => SwarmFrame::Prune(r.optional_msg_id()?),
            Kind::Interest => {
                let n = usize::from(r.u16("needs a count")?);
                r.need(n * ORIGIN_LEN + 1, "fewer origins than its count")?;
                let mut origins = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut o = [0u8; ORIGIN_LEN];
                    r.buf.copy_to_slice(&mut o);
                    origins.push(o);
                }
                let flags = r.u8("needs flags")?;
                if flags & !(INTEREST_EVERY | INTEREST_PARENT) != 0 {
                    return Err(r.malformed("unknown INTEREST flags"));
                }
                let patterns = if flags & INTEREST_EVERY != 0 {
                    None
                } else {
                    let n = usize::from(r.u16("needs a pattern count")?);
                    // Each pattern is at least a length byte and one byte.
                    r.need(n * 2, "fewer patterns than its count")?;
                    Some((0..n).map(|_| r.name(Pattern::new)).collect::<Result<_, _>>()?)
                };
                SwarmFrame::Interest { origins, patterns, parent: flags & INTEREST_PARENT != 0 }
            }
            // The frame decoder hands over swarm kinds only.
            _ => return Err(r.malformed("not a swarm kind")),
        };
        r.end()?;
        Ok(frame)
    }
}

fn addr_len(addr: &SocketAddr) -> usize {
    1 + if addr.is_ipv4() { 4 } else { 16 } + 2
}

fn node_len(n: &NodeAddr) -> usize {
    NODE_ID_LEN + addr_len(&n.addr)
}

fn nodes_len(nodes: &[NodeAddr]) -> usize {
    1 + nodes.iter().take(SwarmFrame::MAX_NODES).map(node_len).sum::<usize>()
}

fn put_node(dst: &mut BytesMut, n: &NodeAddr) {
    dst.put_slice(&n.id.0);
    match n.addr.ip() {
        IpAddr::V4(ip) => {
            dst.put_u8(4);
            dst.put_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            dst.put_u8(6);
            dst.put_slice(&ip.octets());
        }
    }
    dst.put_u16(n.addr.port());
}

fn put_nodes(dst: &mut BytesMut, nodes: &[NodeAddr]) {
    let nodes = &nodes[..nodes.len().min(SwarmFrame::MAX_NODES)];
    dst.put_u8(nodes.len() as u8);
    nodes.iter().for_each(|n| put_node(dst, n));
}

/// The swarm's field types, read off a frame's payload.
impl Reader {
    /// A byte that must be 0 or 1.
    fn flag(&mut self, what: &'static str) -> Result<bool, DecodeError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed("a flag is 0 or 1")),
        }
    }

    fn node(&mut self) -> Result<NodeAddr, DecodeError> {
        self.need(NODE_ID_LEN + 1, "needs a node id and an address family")?;
        let mut id = [0u8; NODE_ID_LEN];
        self.buf.copy_to_slice(&mut id);
        let ip = match self.buf.get_u8() {
            4 => {
                self.need(4 + 2, "IPv4 address is short")?;
                let mut o = [0u8; 4];
                self.buf.copy_to_slice(&mut o);
                IpAddr::V4(Ipv4Addr::from(o))
            }
            6 => {
                self.need(16 + 2, "IPv6 address is short")?;
                let mut o = [0u8; 16];
                self.buf.copy_to_slice(&mut o);
                IpAddr::V6(Ipv6Addr::from(o))
            }
            _ => return Err(self.malformed("address family is 4 or 6")),
        };
        Ok(NodeAddr { id: NodeId(id), addr: SocketAddr::new(ip, self.buf.get_u16()) })
    }

    fn nodes(&mut self) -> Result<Vec<NodeAddr>, DecodeError> {
        let n = usize::from(self.u8("needs a count")?);
        // Each entry is at least an IPv4 one: a count beyond what is left
        // is refused before anything is allocated.
        self.need(n * (NODE_ID_LEN + 1 + 4 + 2), "fewer nodes than its count")?;
        (0..n).map(|_| self.node()).collect()
    }
}
