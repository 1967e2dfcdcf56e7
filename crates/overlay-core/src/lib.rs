//! svc-overlay as a library: an OAP/1 node that other RON services embed
//! in-process ([`Overlay`]), and the typed client ([`client`]) the CLI, the
//! load tools and tests use.
//!
//! A node, a subscription in-process and a publish to it:
//!
//! ```
//! use overlay_core::{Delivery, Overlay, OverlayConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = OverlayConfig::default();
//! config.transport.addr = "127.0.0.1:0".parse()?; // any free port
//! config.admin.enabled = false;
//! let node = Overlay::start(config).await?;
//! println!("serving OAP/1 on {}", node.local_addr());
//!
//! let mut subscription = node.subscribe("demo.>")?;
//! node.publish("demo.hello", "hi")?;
//! match subscription.recv().await {
//!     Some(Delivery::Message(m)) => assert_eq!((m.topic.as_str(), &m.payload[..]), ("demo.hello", &b"hi"[..])),
//!     other => panic!("expected the message, got {other:?}"),
//! }
//! node.shutdown().await; // drains: GOAWAY to every session, queues flushed
//! # Ok(())
//! # }
//! ```

pub mod auth;
pub mod client;
mod config;
mod events;
mod handler;
mod metrics;
mod node;
mod peer;
mod readiness;
mod seeds;
mod session;
mod subscription;
mod swarm;

/// Payloads move as `Bytes` (re-exported, so embedders need no other crate).
pub use bytes::Bytes;
pub use config::{
    AdminSection, AuthSection, ConfigError, DEFAULT_ADDR, DEFAULT_ADMIN_ADDR, GossipSection, OapSection, OverlayConfig,
    Peer, PeerAddr, ReadinessSection, SessionSection, Source, TransportSection, ValidConfig, flatten,
};
pub use events::OverlayEvent;
pub use handler::{DataHandler, Echo, SessionInfo};
pub use node::{AddPeerError, Overlay, OverlayBuilder, PublishError, PublishReceipt, StartError, SubscribeError};
pub use oap_codec::{MsgId, Pattern, Topic};
pub use ron_transport::tls::{PqMode, TlsError, TlsInfo};
pub use ron_transport::{DisconnectReason, TransportEvent};
pub use session::Reset;
pub use swarm::{PeerInfo, SwarmStatus};

/// The OAP/1 wire types a client of the node speaks (re-exported from
/// `oap-codec`, so users of `overlay_core::client` need no other crate).
pub mod wire {
    pub use oap_codec::{Ack, Caps, Ctrl, ErrorFrame, Frame, Kind, Msg, PubAck, TopicError};
}
pub use subscription::{Delivery, Message, Subscription};
