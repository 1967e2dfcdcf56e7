//! Node events for embedders: sessions coming and going, relay links up and down.

use std::net::SocketAddr;

use ron_transport::TransportEvent;

/// What [`crate::Overlay::events`] reports. A receiver that falls behind
/// loses the oldest events (and learns it from `RecvError::Lagged`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverlayEvent {
    /// An accepted connection came or went (`Connected`, `Disconnected`).
    Session(TransportEvent),
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
