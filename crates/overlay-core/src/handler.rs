//! What a session does with `DATA`: echo by default, or an embedder's handler.

use std::net::SocketAddr;

use bytes::Bytes;
use oap_codec::Caps;

/// The session a `DATA` frame arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Node-unique session id.
    pub id: u64,
    /// The remote address.
    pub peer: SocketAddr,
    /// The negotiated caps.
    pub caps: Caps,
}

/// Handles each `DATA` frame of every session.
///
/// Runs on the session's reader task, in frame order: it must not block. A
/// returned payload is sent back as `DATA` through the session's reply queue,
/// so replies keep the order of the frames they answer.
pub trait DataHandler: Send + Sync + 'static {
    /// Answers one `DATA` payload; `None` sends nothing back.
    fn on_data(&self, session: &SessionInfo, payload: Bytes) -> Option<Bytes>;
}

/// The default handler: echoes every payload unchanged (no copy).
#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

impl DataHandler for Echo {
    fn on_data(&self, _session: &SessionInfo, payload: Bytes) -> Option<Bytes> {
        Some(payload)
    }
}

impl<F> DataHandler for F
where
    F: Fn(&SessionInfo, Bytes) -> Option<Bytes> + Send + Sync + 'static,
{
    fn on_data(&self, session: &SessionInfo, payload: Bytes) -> Option<Bytes> {
        self(session, payload)
    }
}
