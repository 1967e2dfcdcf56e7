//! Node events for embedders: sessions coming and going, relay links up and down.

use std::net::SocketAddr;

use ron_transport::{DisconnectReason, TransportEvent};

/// What [`crate::Overlay::events`] reports. A receiver that falls behind
/// loses the oldest events (and learns it from `RecvError::Lagged`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayEvent {
    /// A connection was accepted.
    Connected {
        /// Node-unique connection id.
        id: u64,
        /// The remote address.
        peer: SocketAddr,
    },
    /// An accepted connection ended.
    Disconnected {
        /// Node-unique connection id.
        id: u64,
        /// The remote address.
        peer: SocketAddr,
        /// Why it ended.
        reason: DisconnectReason,
    },
    /// A relay link to another node completed its hello (either direction).
    PeerUp {
        /// The other node: the dialed address, or the remote address of an
        /// inbound link.
        peer: SocketAddr,
    },
    /// A relay link ended.
    PeerDown {
        /// As in `PeerUp`.
        peer: SocketAddr,
    },
}

impl OverlayEvent {
    /// The node event for a transport event, if it maps to one.
    pub(crate) fn from_transport(event: TransportEvent) -> Option<OverlayEvent> {
        match event {
            TransportEvent::Connected { id, peer } => Some(OverlayEvent::Connected { id, peer }),
            TransportEvent::Disconnected { id, peer, reason } => Some(OverlayEvent::Disconnected { id, peer, reason }),
            _ => None,
        }
    }
}
