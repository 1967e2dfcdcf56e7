//! What the swarm asks to send, put on the links' queues: swarm frames
//! (fitted to `max_frame`) on the control queue, messages on the payload
//! queue, encoded once and shared by every peer they go to.

use std::time::Instant;

use bytes::BytesMut;
use oap_codec::{Frame, HEADER_LEN, Msg, NodeId, SwarmFrame};
use overlay_gossip::{DropReason, Offer};

use super::{Core, SwarmDriver};

impl SwarmDriver {
    pub(super) fn send_frame(&self, core: &Core, to: NodeId, frame: SwarmFrame, now: Instant) {
        let Some(link) = core.links.get(&to) else { return };
        for frame in fit(frame, self.max_frame) {
            let kind = frame.kind();
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            frame.encode_into(&mut buf);
            let charged = self.registry.budget().charge(buf.freeze());
            match charged.map(|c| link.handle.control.offer(c, now)) {
                Some(Offer::Queued | Offer::Congested { .. }) => {
                    if let Some(sent) = self.metrics.control_sent(kind) {
                        sent.increment(1);
                    }
                }
                Some(Offer::Dropped(reason)) => self.registry.note_drop("control", reason),
                None => self.registry.note_drop("control", DropReason::Budget),
            }
        }
    }

    /// Offers `msg` to the link of `to`: whether it was queued, or `None`
    /// when it is not for that peer (no link, or a topic its grant does not
    /// cover).
    pub(super) fn send_msg(&self, core: &mut Core, to: NodeId, msg: &Msg, flood: bool, now: Instant) -> Option<bool> {
        let link = core.links.get(&to)?;
        if !link.handle.filter.iter().all(|p| p.matches(&msg.topic)) {
            return None;
        }
        let queue = link.handle.payload.clone();
        let fresh = !matches!(&core.encoded, Some((id, hops, _)) if *id == msg.msg_id && *hops == msg.hops);
        if fresh {
            core.encoded =
                self.registry.budget().charge(msg.encode_as(msg.hops)).map(|c| (msg.msg_id, msg.hops, c.into_shared()));
        }
        match core.encoded.as_ref().and_then(|(_, _, c)| c.share()).map(|frame| queue.offer(frame, now)) {
            Some(Offer::Queued | Offer::Congested { .. }) => {
                let sent = if flood { &self.metrics.payload_flood } else { &self.metrics.payload_interest };
                sent.increment(1);
                Some(true)
            }
            Some(Offer::Dropped(reason)) => {
                self.registry.note_drop("relay", reason);
                Some(false)
            }
            None => {
                self.registry.note_drop("relay", DropReason::Budget);
                Some(false)
            }
        }
    }
}

/// A frame as one or more frames that each fit `max_frame`: an `IHAVE`
/// batch, or an `INTEREST` for many origins, is split in halves until its
/// parts fit (the swarm builds them for the largest frame; a node may be
/// configured with 1 KiB ones); one origin's summary too large for the
/// frame is sent as "every topic" (what the peer would assume without it).
pub(super) fn fit(frame: SwarmFrame, max_frame: u32) -> Vec<Frame> {
    let frame = Frame::Swarm(frame);
    if frame.encoded_len() - HEADER_LEN <= max_frame as usize {
        return vec![frame];
    }
    match frame {
        Frame::Swarm(SwarmFrame::IHave(mut ids)) if ids.len() > 1 => {
            let rest = ids.split_off(ids.len() / 2);
            let mut parts = fit(SwarmFrame::IHave(ids), max_frame);
            parts.extend(fit(SwarmFrame::IHave(rest), max_frame));
            parts
        }
        Frame::Swarm(SwarmFrame::Interest { mut origins, patterns, parent }) if origins.len() > 1 => {
            let rest = origins.split_off(origins.len() / 2);
            let mut parts = fit(SwarmFrame::Interest { origins, patterns: patterns.clone(), parent }, max_frame);
            parts.extend(fit(SwarmFrame::Interest { origins: rest, patterns, parent }, max_frame));
            parts
        }
        Frame::Swarm(SwarmFrame::Interest { origins, patterns: Some(_), parent }) => {
            fit(SwarmFrame::Interest { origins, patterns: None, parent }, max_frame)
        }
        other => {
            // A SHUFFLE of 255 IPv6 peers is under 13 KiB: never reached
            // with max_frame >= 1 KiB and the default sample sizes.
            tracing::warn!(kind = %other.kind(), len = other.encoded_len(), "swarm frame over max_frame not sent");
            Vec::new()
        }
    }
}
