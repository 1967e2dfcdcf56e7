//! `svc-overlay pub` and `svc-overlay sub`: the pub/sub client commands.

use overlay_core::client::{Client, ClientError};
use overlay_core::wire::{Ack, Caps, Ctrl, Frame, PubAck};

use crate::cli::{ConnectArgs, PubArgs, SubArgs};

/// Requests in flight before `pub` waits for receipts.
const PUB_WINDOW: u32 = 256;
/// How long `pub` waits for the next receipt before giving up.
const ACK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a pub/sub command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PubSubError {
    /// Connecting, sending or receiving failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The topic or pattern breaks OAP-1 section 3.
    #[error("bad topic: {0}")]
    Topic(#[from] overlay_core::wire::TopicError),
    /// The node refused a request.
    #[error("node answered ERROR {code}: {reason}")]
    Refused {
        /// The spec's error code.
        code: u16,
        /// The node's reason.
        reason: String,
    },
    /// The node closed the session with a GOAWAY.
    #[error("node sent GOAWAY {code}: {reason}")]
    GoAway {
        /// The spec's error code.
        code: u16,
        /// The node's reason.
        reason: String,
    },
    /// Something other than the expected answer arrived.
    #[error("unexpected {0} from node")]
    Unexpected(overlay_core::wire::Kind),
    /// No receipt came within the timeout.
    #[error("no ACK within {secs}s for PUB {0}", secs = ACK_TIMEOUT.as_secs())]
    NoAck(u32),
}

/// Publishes `args.count` times, printing `msg_id=... queued=N dropped=M`
/// for each receipt.
pub async fn publish(args: &PubArgs, mut out: impl FnMut(&str)) -> Result<(), PubSubError> {
    let topic: overlay_core::Topic = args.topic.parse()?;
    let mut client = connect(&args.connect, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
    let payload = bytes::Bytes::from(args.message.clone().into_bytes());
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < args.count {
        while sent < args.count && sent - acked < PUB_WINDOW {
            sent += 1;
            client.feed(&Frame::Pub { req_id: sent, topic: topic.clone(), payload: payload.clone() })?;
        }
        client.flush().await?;
        let receipt = tokio::time::timeout(ACK_TIMEOUT, next(&mut client)).await;
        match receipt.map_err(|_| PubSubError::NoAck(acked + 1))?? {
            Frame::Ack(Ack { publish: Some(PubAck { msg_id, queued, dropped }), .. }) => {
                acked += 1;
                out(&format!("msg_id={msg_id} queued={queued} dropped={dropped}"));
            }
            other => return Err(PubSubError::Unexpected(other.kind())),
        }
    }
    client.close().await.ok();
    Ok(())
}

/// Subscribes and prints `topic hops=H payload` per message (payload as
/// UTF-8, or hex when it is not text) and `LAGGED dropped=N` on loss.
pub async fn subscribe(args: &SubArgs, mut out: impl FnMut(&str)) -> Result<(), PubSubError> {
    let pattern: overlay_core::Pattern = args.pattern.parse()?;
    let mut client = connect(&args.connect, Caps::GOSSIP_V1 | Caps::PUBSUB_V1).await?;
    client.send(&Frame::Sub { req_id: 1, pattern }).await?;
    match next(&mut client).await? {
        Frame::Ack(_) => out(&format!("subscribed to {} on {}", args.pattern, args.connect.addr)),
        other => return Err(PubSubError::Unexpected(other.kind())),
    }
    let mut received = 0u64;
    while args.count.is_none_or(|n| received < n) {
        match next(&mut client).await? {
            Frame::Msg(m) => {
                received += 1;
                out(&format!("{} hops={} {}", m.topic, m.hops, printable(&m.payload)));
            }
            Frame::Lagged { dropped } => out(&format!("LAGGED dropped={dropped}")),
            other => return Err(PubSubError::Unexpected(other.kind())),
        }
    }
    client.close().await.ok();
    Ok(())
}

/// Connects with `caps` (over TLS when asked) and, given a token, presents
/// it before anything else.
pub async fn connect(to: &ConnectArgs, caps: Caps) -> Result<Client, ClientError> {
    let caps = if to.token.is_some() { caps | Caps::AUTH_V1 } else { caps };
    let mut client = match (&to.ca, to.tls) {
        (Some(ca), true) => {
            let config = overlay_core::client::tls_config(ca).map_err(|e| ClientError::Tls(e.to_string()))?;
            let name = to.tls_name.clone().unwrap_or_else(|| to.addr.ip().to_string());
            Client::connect_tls(to.addr, caps, config, &name).await?
        }
        _ => Client::connect(to.addr, caps).await?,
    };
    if let Some(token) = &to.token {
        client.authenticate(token).await?;
    }
    Ok(client)
}

/// The next frame that is not keepalive; `ERROR` and `GOAWAY` become errors.
async fn next(client: &mut Client) -> Result<Frame, PubSubError> {
    loop {
        match client.recv().await? {
            Frame::Ctrl(Ctrl::Ping { nonce }) => client.send(&Frame::pong(nonce)).await?,
            Frame::Ctrl(Ctrl::Pong { .. }) => {}
            Frame::Ctrl(Ctrl::Goaway { code, reason, .. }) => return Err(PubSubError::GoAway { code, reason }),
            Frame::Error(e) => return Err(PubSubError::Refused { code: e.code, reason: e.reason }),
            frame => return Ok(frame),
        }
    }
}

/// UTF-8 text as is (when it has no control characters), otherwise `0x` hex.
pub fn printable(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) if !text.chars().any(char::is_control) => text.to_string(),
        _ => {
            let mut hex = String::with_capacity(2 + payload.len() * 2);
            hex.push_str("0x");
            payload.iter().for_each(|b| hex.push_str(&format!("{b:02x}")));
            hex
        }
    }
}
