//! What a swarm link shares with the driver, and what the driver reports.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use oap_codec::{NodeId, Pattern};
use overlay_gossip::DeliveryQueue;
use tokio_util::sync::CancellationToken;

use super::CONTROL_QUEUE_BYTES;

/// What the writer and reader of a swarm link share with the swarm: the
/// control queue, and the signal to close.
#[derive(Debug, Clone)]
pub(crate) struct LinkIo {
    pub(crate) control: Arc<DeliveryQueue>,
    pub(crate) close: CancellationToken,
    /// The id the peer's `NODE` must carry (a dialed TLS link: its
    /// certificate's).
    pub(crate) expect: Option<NodeId>,
}

impl LinkIo {
    /// A control queue that evicts a peer lagging for `slow_after`, as a
    /// payload queue does.
    pub(crate) fn new(slow_after: Duration, expect: Option<NodeId>) -> LinkIo {
        let control = Arc::new(DeliveryQueue::new(CONTROL_QUEUE_BYTES, slow_after));
        LinkIo { control, close: CancellationToken::new(), expect }
    }
}

/// What a relay session gives the swarm to reach its peer.
pub(crate) struct LinkHandle {
    /// The session's id: a link that was replaced reports nothing.
    pub(crate) session: u64,
    /// The socket's remote address.
    pub(crate) remote: SocketAddr,
    /// This node dialed the link.
    pub(crate) dialed: bool,
    /// Where `MSG`s go (bounded in bytes, like a subscriber's).
    pub(crate) payload: Arc<DeliveryQueue>,
    /// Where swarm frames go; its writer takes them first.
    pub(crate) control: Arc<DeliveryQueue>,
    /// Fired to close the link once what is queued is written.
    pub(crate) close: CancellationToken,
    /// Topics the peer's grant lets it receive (empty: every topic).
    pub(crate) filter: Vec<Pattern>,
}

/// What became of a message's payload sends to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Peer queues that took it.
    pub(crate) queued: u32,
    /// Peer queues that dropped it (full, or over the budget).
    pub(crate) dropped: u32,
}

/// Why a link was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The peer has this node's id: a dial that reached this node itself.
    #[error("the peer is this node (same node id)")]
    Myself,
    /// The pair already keeps another link (the simultaneous-dial rule).
    #[error("the pair keeps another link")]
    Duplicate,
    /// The node holds as many swarm links as it takes.
    #[error("this node holds its maximum of swarm links")]
    Full,
}

/// One peer in [`SwarmStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id (hex, first 8 bytes).
    pub node_id: String,
    /// Where it accepts relay links.
    pub addr: SocketAddr,
    /// Seconds its link has been up (active peers).
    pub up_secs: Option<u64>,
    /// `"out"` when this node dialed the link, `"in"` otherwise.
    pub direction: Option<&'static str>,
}

/// The swarm as `/peersz` and [`crate::Overlay::swarm`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmStatus {
    /// This node's id (hex, all 32 bytes).
    pub node_id: String,
    /// Where this node says it accepts relay links.
    pub advertised: SocketAddr,
    /// Linked peers that carry the broadcast.
    pub active: Vec<PeerInfo>,
    /// Known addresses kept to replace lost active peers.
    pub passive: Vec<PeerInfo>,
    /// `MSG` frames sent to peers since start.
    pub payload_sent: u64,
    /// Swarm frames sent since start.
    pub control_sent: u64,
    /// Copies of messages already seen, since start.
    pub duplicates: u64,
}

impl SwarmStatus {
    /// The body of `/peersz`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let peers = |list: &[PeerInfo]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|p| {
                    serde_json::json!({
                        "node_id": p.node_id, "addr": p.addr.to_string(),
                        "up_secs": p.up_secs, "direction": p.direction,
                    })
                })
                .collect()
        };
        serde_json::json!({
            "node_id": self.node_id,
            "advertised": self.advertised.to_string(),
            "active": peers(&self.active),
            "passive": peers(&self.passive),
            "payload_sent": self.payload_sent,
            "control_sent": self.control_sent,
            "duplicates": self.duplicates,
        })
    }
}
