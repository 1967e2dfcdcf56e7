//! svc-overlay as a library: an OAP/1 node that other RON services embed
//! in-process, and the small client the CLI and tests use.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use overlay_core::{Overlay, OverlayConfig};
//!
//! let mut config = OverlayConfig::default();
//! config.transport.addr = "127.0.0.1:0".parse()?;
//! config.admin.addr = "127.0.0.1:0".parse()?;
//! let node = Overlay::start(config).await?;
//! println!("serving OAP/1 on {}", node.local_addr());
//! node.shutdown().await;
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
mod session;
mod subscription;

pub use config::{
    AdminSection, AuthSection, ConfigError, GossipSection, OapSection, OverlayConfig, Peer, ReadinessSection,
    SessionSection, Source, TransportSection, ValidConfig, flatten,
};
pub use events::OverlayEvent;
pub use handler::{DataHandler, Echo, SessionInfo};
pub use node::{AddPeerError, Overlay, OverlayBuilder, PublishError, PublishReceipt, StartError, SubscribeError};
pub use oap_codec::{MsgId, Pattern, Topic};
pub use ron_transport::tls::{PqMode, TlsError, TlsInfo};
pub use ron_transport::{DisconnectReason, TransportEvent};
pub use session::Reset;

/// The OAP/1 wire types a client of the node speaks (re-exported from
/// `oap-codec`, so users of `overlay_core::client` need no other crate).
pub mod wire {
    pub use oap_codec::{Ack, Caps, Ctrl, ErrorFrame, Frame, Kind, Msg, PubAck, TopicError};
}
pub use subscription::{Delivery, Message, Subscription};
