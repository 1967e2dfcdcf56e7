//! A swarm link in the session core: the peer's `NODE`, the link offered to
//! the swarm, and what arrives on it once taken.

use std::time::Instant;

use oap_codec::{ErrorCode, Frame, Msg, NodeAddr, NodeId, Pattern, SwarmFrame};
use overlay_gossip::binds;
use ron_transport::DisconnectReason;

use super::{Action, Consumer, Now, SessionState};
use crate::auth::AuthError;
use crate::swarm::{self, LinkHandle, LinkIo};

/// A swarm link's state.
#[derive(Debug)]
pub(super) struct SwarmLink {
    pub(super) io: LinkIo,
    /// What the peer's `NODE` said.
    pub(super) told: Option<NodeAddr>,
    /// The swarm took the link: the peer's id.
    pub(super) up: Option<NodeId>,
    /// The link was offered to the swarm (whatever it answered).
    pub(super) offered: bool,
    /// The topics it may carry, as offered (empty: all).
    pub(super) filter: Vec<Pattern>,
    /// It must be offered by then (the peer's `NODE`, and an `AUTH` where
    /// one is needed, within `handshake_timeout` of the hello).
    pub(super) deadline: Instant,
}

impl SessionState<'_> {
    /// `MSG` over a relay link: to the swarm, which drops what it has seen,
    /// delivers the rest here and passes it on along its tree.
    pub(super) fn relay(&mut self, msg: Msg, now: Now) -> Option<Frame> {
        // A link the swarm refused (the loser of a simultaneous dial, now
        // closing) still brings what its peer sent before it heard: the
        // swarm takes a payload from a known peer on any of its links, so
        // nothing sent is lost to the race.
        let Some(from) = (match &self.consumer {
            Consumer::Swarm(link) => link.up.or(link.told.filter(|_| link.offered).map(|n| n.id)),
            Consumer::Client(_) => None,
        }) else {
            // On a client: unreachable, since MSG requires PEER_V1, which
            // makes the session a link.
            return Some(Frame::error(ErrorCode::Unsupported, 0, "MSG before the swarm took the link"));
        };
        // This node's own message coming back (or a forgery of one) goes no
        // further (OAP-1 section 5).
        if self.env.registry.issued(&msg.msg_id) {
            // ...but tells the swarm, which prunes the link from this node's
            // tree: otherwise the peer would push every message back.
            self.env.swarm.echo(from, self.info.id, msg.msg_id, now.at, &mut self.batch);
            return None;
        }
        // Checked before the swarm remembers the id: a forged or predicted
        // id never makes the real message look seen.
        if !binds(&msg.msg_id, &msg.topic, &msg.payload) {
            self.env.metrics.reject("bad_msg_id");
            return Some(Frame::error(ErrorCode::BadRequest, 0, "msg_id does not match the message's content"));
        }
        self.env.swarm.message(from, self.info.id, msg, now.at, &mut self.batch);
        None
    }

    /// A swarm frame on a swarm link: `NODE` first (the identity), then
    /// the swarm's own, once the swarm took the link.
    pub(super) fn on_swarm(&mut self, frame: SwarmFrame, now: Now) {
        let Consumer::Swarm(link) = &mut self.consumer else {
            self.env.metrics.reject("unsupported");
            let why = format!("{} is accepted on relay links only", frame.kind());
            return self.send(Frame::error(ErrorCode::Unsupported, 0, why));
        };
        match (frame, link.up) {
            (SwarmFrame::Node(node), _) if link.io.expect.is_some_and(|id| id != node.id) => {
                self.env.metrics.reject("bad_node_id");
                let why = "NODE id is not the one the peer's certificate proves";
                self.goaway(ErrorCode::Forbidden, 0, why, DisconnectReason::Protocol);
            }
            (SwarmFrame::Node(_), _) if link.io.expect.is_none() && !self.dialed && self.env.limits.node_certs => {
                self.env.metrics.reject("no_node_cert");
                let why = "a relay link to a TLS node needs the dialing node's certificate (TLS client auth)";
                self.goaway(ErrorCode::Forbidden, 0, why, DisconnectReason::Protocol);
            }
            (SwarmFrame::Node(node), _) if link.told.is_none() => {
                link.told = Some(node);
                self.swarm_up(now);
            }
            (SwarmFrame::Node(_), _) => {
                self.env.metrics.reject("malformed");
                let why = "NODE sent twice";
                self.goaway(ErrorCode::BadRequest, 0, why, DisconnectReason::Protocol);
            }
            (frame, Some(from)) => self.env.swarm.recv(from, self.info.id, frame, now.at, &mut self.batch),
            (frame, None) if link.told.is_none() => {
                self.env.metrics.reject("malformed");
                let why = format!("{} before NODE", frame.kind());
                self.goaway(ErrorCode::BadRequest, 0, &why, DisconnectReason::Protocol);
            }
            // Told, and not taken: not granted relay (yet), or refused (and
            // closing).
            (frame, None) if !link.offered => {
                let e = AuthError::Missing;
                self.env.metrics.reject(e.reason());
                let why = format!("{}: {e}", frame.kind());
                self.goaway(e.error_code(), 0, &why, DisconnectReason::Protocol);
            }
            (_, None) => {}
        }
    }

    /// Offers the swarm link to the swarm once the peer said who it is and
    /// may relay; a refused link is closed.
    pub(super) fn swarm_up(&mut self, now: Now) {
        let filter = self.relay_filter(now);
        let Consumer::Swarm(link) = &mut self.consumer else { return };
        let (Some(told), Some(filter), false) = (link.told, filter, link.offered) else { return };
        link.offered = true;
        link.filter = filter.clone();
        let handle = LinkHandle {
            session: self.info.id,
            remote: self.info.peer,
            dialed: self.dialed,
            payload: self.deliveries.clone(),
            control: link.io.control.clone(),
            close: link.io.close.clone(),
            filter,
        };
        match self.env.swarm.link_up(told, handle, now.at) {
            Ok(node) => {
                link.up = Some(node.id);
                self.out.push_back(Action::LinkUp(node.id));
            }
            Err(e @ swarm::Refused::Myself) => {
                self.goaway(ErrorCode::BadRequest, 0, &e.to_string(), DisconnectReason::Overlay);
            }
            Err(e @ swarm::Refused::Duplicate) => {
                self.goaway(ErrorCode::Unavailable, 0, &e.to_string(), DisconnectReason::Overlay);
            }
            Err(e @ swarm::Refused::Full) => {
                self.goaway(ErrorCode::Unavailable, swarm::FULL_RETRY_MS, &e.to_string(), DisconnectReason::Overlay);
            }
        }
    }
}
