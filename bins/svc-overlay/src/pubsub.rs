//! `svc-overlay pub` and `svc-overlay sub`: the pub/sub client commands, a
//! printer over [`overlay_core::client`].

use overlay_core::Delivery;
use overlay_core::client::{Client, ClientError};

use crate::cli::{OptionsError, PubArgs, SubArgs};

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
    /// The TLS or token options could not be read.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// Some messages were refused (each printed with its reason).
    #[error("the node refused {refused} of {sent} messages")]
    Refused {
        /// How many were refused.
        refused: u32,
        /// How many were sent.
        sent: u32,
    },
}

/// Publishes `args.count` times, printing `msg_id=... queued=N dropped=M`
/// for each receipt, or `error=CODE reason` for a refused message (and
/// going on).
pub async fn publish(args: &PubArgs, mut out: impl FnMut(&str)) -> Result<(), PubSubError> {
    let topic: overlay_core::Topic = args.topic.parse()?;
    let mut client = Client::connect(&args.connect.options()?).await?;
    let payload = overlay_core::Bytes::from(args.message.clone().into_bytes());
    let messages = (0..args.count).map(|_| (topic.clone(), payload.clone()));
    let mut refused = 0;
    client
        .publish_all(messages, |receipt| match receipt {
            Ok(r) => out(&format!("msg_id={} queued={} dropped={}", r.msg_id, r.queued, r.dropped)),
            Err(e) => {
                refused += 1;
                out(&format!("error={} {}", e.code, e.reason));
            }
        })
        .await?;
    client.close().await.ok();
    if refused > 0 {
        return Err(PubSubError::Refused { refused, sent: args.count });
    }
    Ok(())
}

/// Subscribes and prints `topic hops=H payload` per message (payload as
/// UTF-8, or hex when it is not text) and `LAGGED dropped=N` on loss.
pub async fn subscribe(args: &SubArgs, mut out: impl FnMut(&str)) -> Result<(), PubSubError> {
    let pattern: overlay_core::Pattern = args.pattern.parse()?;
    let mut client = Client::connect(&args.connect.options()?).await?;
    let mut deliveries = client.subscribe(&pattern).await?;
    out(&format!("subscribed to {} on {}", args.pattern, args.connect.addr));
    let mut received = 0u64;
    while args.count.is_none_or(|n| received < n) {
        match deliveries.next().await? {
            Delivery::Message(m) => {
                received += 1;
                out(&format!("{} hops={} {}", m.topic, m.hops, printable(&m.payload)));
            }
            Delivery::Lagged(dropped) => out(&format!("LAGGED dropped={dropped}")),
        }
    }
    client.close().await.ok();
    Ok(())
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
