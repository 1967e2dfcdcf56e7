//! The session core: what a session does with each frame and each timer,
//! as a state machine in the manner of quinn-proto's `Connection`. Events
//! and `now` go in (`on_frame`, `on_decode_error`, `on_read`, `on_timer`,
//! `on_drain`); actions come out (`poll`). It does no I/O and reads no
//! clock: the reader (`reader.rs`) owns the socket, the buffers, the
//! deadlines and the waiting, and carries out what the core returns.
//!
//! The gossip registry is itself I/O-free protocol state (time comes in as
//! an argument), so the core calls it directly: an `ACK` carries what the
//! fanout did. What needs the node or the socket (a reply, a link's
//! announcement, the end of the session) is an [`Action`].
// Enforced, not grepped: the clock reads are denied here and in the child
// modules (`grant`: AUTH and what a grant allows; `link`: swarm links)
// (clippy.toml names them), and `tests::the_core_reads_no_clock_and_names_no_runtime`
// fails on any mention of the runtime in any of them.
#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oap_codec::{
    Ack, Caps, Ctrl, DecodeError, ErrorCode, Frame, Kind, Msg, NodeId, Pattern, PubAck, SwarmFrame, Topic,
};
use overlay_admin::SizeTally;
use overlay_gossip::{DeliveryQueue, PublishBatch, PublishError, Registry, SubscribeError, SubscriberId};
use ron_transport::{DisconnectReason, LogLimit};

use super::{Limits, reconnect_after};
use crate::auth::AuthPolicy;
use crate::handler::{DataHandler, SessionInfo};
use crate::metrics::OverlayMetrics;
use crate::swarm::{LinkIo, SwarmDriver};

/// Longest single wait for a grant's expiry; later ones are re-armed.
const MAX_EXPIRY_WAIT: Duration = Duration::from_secs(86_400);
/// "relay peer refused" lines a session logs per second at most.
const REFUSAL_LOGS_PER_SEC: u32 = 1;

mod grant;
mod link;

use grant::Held;
use link::SwarmLink;
#[cfg(test)]
mod tests;

/// When an event happens: the driver's monotonic clock, and the wall clock
/// as time since the Unix epoch (what tokens' expiries are checked against).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub(crate) at: Instant,
    pub(crate) unix: Duration,
}

/// What the core asks of its driver, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Queue this frame for the peer (replies are never dropped).
    Send(Frame),
    /// The swarm took the session's link to the node with this id.
    LinkUp(NodeId),
    /// End the session; what was sent before is flushed first.
    Close(DisconnectReason),
}

/// Where a session's deliveries come from.
#[derive(Debug)]
enum Consumer {
    /// A client: a subscriber, attached at its first `SUB`.
    Client(Option<SubscriberId>),
    /// A relay link (`PEER_V1` and `SWARM_V1`), boxed so that client
    /// sessions, the many, do not carry its size: handed to the swarm once
    /// the peer's `NODE` arrived (and, inbound on a node that requires
    /// tokens, an `AUTH` granted `relay`).
    Swarm(Box<SwarmLink>),
}

/// What a session core works with, shared by every session of a node.
#[derive(Clone, Copy)]
pub(crate) struct Env<'a> {
    pub(crate) limits: &'a Limits,
    pub(crate) registry: &'a Registry,
    pub(crate) metrics: &'a OverlayMetrics,
    pub(crate) handler: &'a dyn DataHandler,
    /// Token checking, when the node has a root key.
    pub(crate) auth: Option<&'a AuthPolicy>,
    /// The node's swarm, which takes swarm links.
    pub(crate) swarm: &'a SwarmDriver,
}

/// One session's protocol state.
pub(crate) struct SessionState<'a> {
    env: Env<'a>,
    info: SessionInfo,
    /// This node dialed the link: what the peer relays back over it needs
    /// no token, over TLS or plain TCP alike (we chose the peer; tokens are
    /// checked by the side that accepts a link, OAP-1 section 6).
    dialed: bool,
    deliveries: Arc<DeliveryQueue>,
    consumer: Consumer,
    /// The grant of the last successful `AUTH`.
    grant: Option<Held>,
    /// The session's subscriptions with the `req_id` of their `SUB`, so a
    /// revocation can name them.
    subs: Vec<(Pattern, u32)>,
    /// Subscriber queues this read batch's messages left more than half
    /// full, and counts for the gossip metrics (see [`SessionState::settle`]).
    batch: PublishBatch,
    /// Keepalive: when bytes last arrived, whether the PING for this
    /// silence went out, and the nonce of the last one.
    last_rx: Instant,
    pinged: bool,
    nonce: u64,
    /// When the buffered start of an unfinished frame began to wait.
    partial_since: Option<Instant>,
    /// A frame was handled since the last [`SessionState::end_batch`].
    progressed: bool,
    // Per read batch, added to the metrics once (a batch holds at most a
    // read buffer of frames, so u32).
    counts: [u32; Kind::ALL.len()],
    bytes: u64,
    sizes: SizeTally,
    /// Warnings about a relay peer's refusals, a few a second at most.
    refusals: LogLimit,
    out: VecDeque<Action>,
}

impl<'a> SessionState<'a> {
    /// A session whose hello exchange just succeeded at `now`. A swarm link
    /// (`link_io` given: both sides speak `SWARM_V1`) sends its `NODE`
    /// first. A link this node dialed (or any link, on a node that checks
    /// no tokens) is attached at once; a dialed link with a `credential`
    /// presents it ahead of everything else but the `NODE`.
    pub(crate) fn new(
        env: Env<'a>,
        info: SessionInfo,
        dialed: bool,
        credential: Option<Bytes>,
        deliveries: Arc<DeliveryQueue>,
        link_io: Option<LinkIo>,
        now: Now,
    ) -> SessionState<'a> {
        let mut state = SessionState {
            env,
            info,
            dialed,
            deliveries,
            consumer: Consumer::Client(None),
            grant: None,
            subs: Vec::new(),
            batch: PublishBatch::default(),
            last_rx: now.at,
            pinged: false,
            nonce: 0,
            partial_since: None,
            progressed: false,
            counts: [0; Kind::ALL.len()],
            bytes: 0,
            sizes: SizeTally::default(),
            refusals: LogLimit::new(REFUSAL_LOGS_PER_SEC),
            out: VecDeque::new(),
        };
        match link_io {
            Some(io) => {
                let deadline = now.at + env.limits.handshake_timeout;
                let link = SwarmLink { io, told: None, up: None, offered: false, filter: Vec::new(), deadline };
                state.consumer = Consumer::Swarm(Box::new(link));
                state.send(Frame::Swarm(SwarmFrame::Node(env.swarm.me())));
            }
            None if info.caps.contains(Caps::PEER_V1) => {
                // A node of an older version: relay links run the swarm, and
                // nothing without it was ever released.
                env.metrics.reject("no_swarm");
                let why = "relay links need SWARM_V1 (identity and membership; OAP-1 section 5)";
                state.send(Frame::error(ErrorCode::Unsupported, 0, why));
                state.close(DisconnectReason::Protocol);
                return state;
            }
            None if dialed => {
                // A dial reached a node that does not take relay links.
                env.metrics.reject("no_swarm");
                tracing::warn!(caps = ?info.caps, "dialed a node that takes no relay links (no PEER_V1)");
                state.close(DisconnectReason::Protocol);
                return state;
            }
            None => {}
        }
        if let Some(token) = credential
            && info.caps.contains(Caps::AUTH_V1)
        {
            state.send(Frame::Auth { req_id: 1, token });
        }
        state
    }

    /// The next thing to do, in order.
    pub(crate) fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// Gives back the action queue's storage once it is empty: called when
    /// the session is quiet (keepalive), so an idle session holds none.
    pub(crate) fn release_idle(&mut self) {
        if self.out.is_empty() {
            self.out = VecDeque::new();
        }
    }

    /// The deliveries this session's writer sends.
    pub(crate) fn deliveries(&self) -> &Arc<DeliveryQueue> {
        &self.deliveries
    }

    /// The session is a relay link (taken by the swarm or not yet).
    pub(crate) fn is_link(&self) -> bool {
        matches!(self.consumer, Consumer::Swarm(_))
    }

    /// The session's link was offered to the swarm (so a dial that opened
    /// it was reported to the swarm, whatever it answered).
    pub(crate) fn offered_to_swarm(&self) -> bool {
        matches!(&self.consumer, Consumer::Swarm(l) if l.offered)
    }

    /// Bytes arrived at `now`: the silence that keepalive measures ends.
    pub(crate) fn on_read(&mut self, now: Now) {
        self.last_rx = now.at;
        self.pinged = false;
    }

    /// A read batch was handled; `partial` says whether the buffer still
    /// holds the start of a frame, which must then finish within
    /// `read_timeout` of the last progress. Adds the batch's counts to the
    /// metrics.
    pub(crate) fn end_batch(&mut self, now: Now, partial: bool) {
        if !partial {
            self.partial_since = None;
        } else if self.progressed || self.partial_since.is_none() {
            self.partial_since = Some(now.at);
        }
        self.progressed = false;
        self.flush_counts();
    }

    /// When [`SessionState::on_timer`] is next due: a started frame's
    /// `read_timeout`, else the PING at half `idle_timeout` of silence or the
    /// close at the full, or the grant's expiry if sooner.
    pub(crate) fn timeout(&self, now: Now) -> Instant {
        let limits = self.env.limits;
        let keepalive = match self.partial_since {
            Some(started) => started + limits.read_timeout,
            None if !self.pinged => self.last_rx + limits.idle_timeout / 2,
            None => self.last_rx + limits.idle_timeout,
        };
        let keepalive = match &self.consumer {
            Consumer::Swarm(link) if !link.offered => keepalive.min(link.deadline),
            _ => keepalive,
        };
        match self.grant_expiry(now) {
            Some(expiry) => keepalive.min(expiry),
            None => keepalive,
        }
    }

    /// Time passed: does what is due at `now` (see [`SessionState::timeout`]).
    pub(crate) fn on_timer(&mut self, now: Now) {
        let limits = self.env.limits;
        if let Consumer::Swarm(link) = &self.consumer
            && !link.offered
            && now.at >= link.deadline
        {
            let why = if link.told.is_none() {
                "no NODE within handshake_timeout"
            } else {
                "no relay grant within handshake_timeout"
            };
            return self.goaway(ErrorCode::Timeout, 0, why, DisconnectReason::Handshake);
        }
        match self.partial_since {
            Some(started) if now.at >= started + limits.read_timeout => {
                let why = "frame not completed within read_timeout";
                return self.goaway(ErrorCode::Timeout, 0, why, DisconnectReason::ReadTimeout);
            }
            Some(_) => {}
            None if now.at >= self.last_rx + limits.idle_timeout => {
                return self.goaway(ErrorCode::Timeout, 0, "idle timeout", DisconnectReason::IdleTimeout);
            }
            None if !self.pinged && now.at >= self.last_rx + limits.idle_timeout / 2 => {
                self.nonce += 1;
                self.send(Frame::ping(self.nonce));
                self.pinged = true;
            }
            None => {}
        }
        if self.grant.as_ref().is_some_and(|h| h.grant.expires().is_some_and(|at| h.unix(now) >= at)) {
            tracing::debug!("grant expired");
            self.grant = None;
            self.regrant(now);
            self.revoke_uncovered("token expired", now);
        }
    }

    /// Shutdown step 2 for this session: `GOAWAY 503` with its place in the
    /// drain window, then close.
    pub(crate) fn on_drain(&mut self) {
        let after = reconnect_after(self.info.id, self.env.limits.drain_window_ms);
        self.goaway(ErrorCode::Unavailable, after, "node shutting down", DisconnectReason::Shutdown);
    }

    /// Handles one well-formed frame that arrived at `now` (or was read in
    /// a batch that did).
    pub(crate) fn on_frame(&mut self, frame: Frame, now: Now) {
        self.count_in(&frame);
        self.progressed = true;
        if let Some(refusal) = self.cap_refusal(frame.kind(), req_id(&frame)) {
            return self.send(refusal);
        }
        let reply = match frame {
            Frame::Data(payload) => match self.env.handler.on_data(&self.info, payload) {
                // An embedder's handler may answer with more than a frame can
                // carry: a bug on our side of the wire (ERROR 500 is fatal).
                Some(reply) if reply.len() >= self.env.limits.max_frame as usize => {
                    self.env.metrics.reject("reply_too_large");
                    tracing::error!(len = reply.len(), "DATA handler reply exceeds max_frame");
                    self.send(Frame::error(ErrorCode::Internal, 0, "reply exceeds max_frame"));
                    return self.close(DisconnectReason::Protocol);
                }
                reply => reply.map(Frame::Data),
            },
            Frame::Ctrl(Ctrl::Ping { nonce }) => Some(Frame::pong(nonce)),
            // Any inbound bytes already reset the idle timer.
            Frame::Ctrl(Ctrl::Pong { .. }) => None,
            Frame::Ctrl(Ctrl::Goaway { code, reason, reconnect_after_ms }) => {
                tracing::debug!(code, %reason, reconnect_after_ms, "peer sent GOAWAY");
                // A node this one dialed that asks to be left alone for a
                // while is not redialed at that address before then (the
                // address dialed, not one the peer claims; capped).
                if self.dialed && self.offered_to_swarm() {
                    let after = Duration::from_millis(u64::from(reconnect_after_ms));
                    self.env.swarm.hold_off(self.info.peer, after, now.at);
                }
                return self.close(DisconnectReason::PeerClosed);
            }
            // Another node's notices on a relay link need no answer; its
            // refusals (a rejected relay token) are worth a warning.
            Frame::Ack(_) | Frame::Lagged { .. } | Frame::Error(_) if self.is_link() => {
                if let Frame::Error(e) = &frame
                    && let Some(suppressed) = self.refusals.allow(now.at)
                {
                    tracing::warn!(code = e.code, reason = %e.reason, suppressed, "relay peer refused");
                }
                None
            }
            Frame::Error(e) => {
                self.env.metrics.reject("unexpected_error");
                tracing::debug!(code = e.code, req_id = e.req_id, reason = %e.reason, "peer sent ERROR");
                None
            }
            Frame::Auth { req_id, token } => return self.authenticate(req_id, &token, now),
            Frame::Sub { req_id, pattern } => Some(
                self.authorize(req_id, now, |g, unix| g.subscribe(&pattern, unix))
                    .unwrap_or_else(|| self.subscribe(req_id, &pattern)),
            ),
            Frame::Unsub { req_id, pattern } => {
                Some(self.authorize(req_id, now, |_, _| Ok(())).unwrap_or_else(|| self.unsubscribe(req_id, &pattern)))
            }
            Frame::Pub { req_id, topic, payload } => {
                match self.authorize(req_id, now, |g, unix| g.publish(&topic, unix)) {
                    Some(refusal) => Some(refusal),
                    None => self.publish(req_id, &topic, payload, now),
                }
            }
            Frame::Swarm(frame) => return self.on_swarm(frame, now),
            // A peer we dialed relays to us without a token of its own: we
            // chose it (and, over TLS, checked its certificate).
            Frame::Msg(msg) if self.dialed => self.relay(msg, now),
            Frame::Msg(msg) => match self.authorize(0, now, |g, unix| g.relay(&msg.topic, unix)) {
                Some(refusal) => Some(refusal),
                None => self.relay(msg, now),
            },
            other => {
                self.env.metrics.reject("unsupported");
                let why = format!("{} is not served by this node", other.kind());
                Some(Frame::error(ErrorCode::Unsupported, req_id(&other), why))
            }
        };
        if let Some(frame) = reply {
            self.send(frame);
        }
    }

    /// Answers a frame that did not decode: `ERROR` with the spec's code,
    /// then a close when the stream cannot be read on.
    pub(crate) fn on_decode_error(&mut self, e: DecodeError) {
        let m = self.env.metrics;
        m.decode_errors.increment(1);
        m.reject(e.reason());
        tracing::debug!(error = %e, "bad frame");
        let kind = match &e {
            DecodeError::Malformed { kind, .. } | DecodeError::Topic { kind, .. } => Some(*kind),
            _ => None,
        };
        // A kind whose cap was not negotiated is refused as such (415), even
        // when its payload is also malformed.
        if let Some(refusal) = kind.and_then(|k| self.cap_refusal(k, e.req_id())) {
            return self.send(refusal);
        }
        match e {
            DecodeError::EmptyCtrl | DecodeError::UnknownCtrlOp { .. } => {}
            DecodeError::Io(_) => self.close(DisconnectReason::Io),
            e => {
                self.send(Frame::error(e.error_code(), e.req_id(), e.to_string()));
                if e.is_fatal() {
                    self.close(DisconnectReason::Protocol);
                }
            }
        }
    }

    /// Counts this batch's messages in the gossip metrics.
    pub(crate) fn settle(&mut self) {
        self.env.registry.settle(&mut self.batch);
    }

    /// A subscriber this batch's messages congested passed three quarters:
    /// the driver stalls before the next message.
    pub(crate) fn is_urgent(&self) -> bool {
        self.batch.is_urgent()
    }

    /// This batch's messages left some subscriber more than half full.
    pub(crate) fn is_congested(&self) -> bool {
        !self.batch.is_empty()
    }

    /// The queues to wait on before reading more (spec section 4), counted
    /// first; hand the batch back with [`SessionState::stalled`].
    pub(crate) fn congested(&mut self) -> PublishBatch {
        self.settle();
        std::mem::take(&mut self.batch)
    }

    /// The stall is over: the batch (emptied) is reused.
    pub(crate) fn stalled(&mut self, mut batch: PublishBatch) {
        batch.clear();
        self.batch = batch;
    }

    /// The session ended at `now`: its counts go to the metrics, and its
    /// subscriber leaves the registry, or its link the swarm. True when the
    /// swarm had taken the link (the driver announces it down).
    pub(crate) fn detach(&mut self, now: Now) -> bool {
        self.settle();
        self.flush_counts();
        self.deliveries.close();
        let offered = self.offered_to_swarm();
        match std::mem::replace(&mut self.consumer, Consumer::Client(None)) {
            Consumer::Client(Some(sub)) => self.env.registry.detach(sub),
            Consumer::Swarm(link) => {
                link.io.control.close();
                // Put back, so a dial can still tell it was offered.
                let up = link.up;
                self.consumer = Consumer::Swarm(Box::new(SwarmLink { up: None, offered, ..*link }));
                if let Some(node) = up {
                    self.env.swarm.link_down(node, self.info.id, now.at);
                    return true;
                }
            }
            Consumer::Client(None) => {}
        }
        false
    }

    fn send(&mut self, frame: Frame) {
        self.out.push_back(Action::Send(frame));
    }

    fn close(&mut self, reason: DisconnectReason) {
        self.out.push_back(Action::Close(reason));
    }

    fn goaway(&mut self, code: ErrorCode, reconnect_after_ms: u32, why: &str, reason: DisconnectReason) {
        self.send(Frame::goaway(code, reconnect_after_ms, why));
        self.close(reason);
    }

    /// `SUB`: attach this session as a subscriber on first use, add the pattern.
    fn subscribe(&mut self, req_id: u32, pattern: &Pattern) -> Frame {
        let registry = self.env.registry;
        let sub = match &mut self.consumer {
            // Relay links receive every message already; interest announced
            // on a link is acknowledged and changes nothing.
            Consumer::Swarm(_) => return ack(req_id),
            Consumer::Client(Some(sub)) => *sub,
            Consumer::Client(slot @ None) => *slot.insert(registry.attach(self.deliveries.clone())),
        };
        match registry.subscribe(sub, pattern) {
            Ok(added) => {
                if added {
                    self.subs.push((pattern.clone(), req_id));
                }
                ack(req_id)
            }
            Err(SubscribeError::TooMany(max)) => {
                self.env.metrics.reject("max_subscriptions");
                Frame::error(ErrorCode::SlowConsumer, req_id, format!("max_subscriptions ({max}) reached"))
            }
            Err(e) => Frame::error(ErrorCode::Internal, req_id, e.to_string()),
        }
    }

    /// `UNSUB`: drop the subscription made with the same pattern text.
    fn unsubscribe(&mut self, req_id: u32, pattern: &Pattern) -> Frame {
        match &self.consumer {
            Consumer::Swarm(_) => ack(req_id),
            Consumer::Client(Some(sub)) if self.env.registry.unsubscribe(*sub, pattern) => {
                self.subs.retain(|(p, _)| p != pattern);
                ack(req_id)
            }
            Consumer::Client(_) => {
                self.env.metrics.reject("not_subscribed");
                Frame::error(ErrorCode::BadRequest, req_id, format!("no subscription to {pattern}"))
            }
        }
    }

    /// `PUB`: fan out, and answer `ACK(req_id, msg_id, queued, dropped)`
    /// unless `req_id` is 0.
    fn publish(&mut self, req_id: u32, topic: &Topic, payload: Bytes, now: Now) -> Option<Frame> {
        // A copy for the swarm only while the node has swarm peers (a single
        // node's publish path stays as it was). Should that change between
        // here and the publish, the message stays local, as one published a
        // moment earlier would.
        let copy = self.env.registry.is_relaying().then(|| payload.clone());
        let mut published = self.env.registry.publish(topic, payload, now.at, &mut self.batch);
        if let (Ok(f), Some(payload)) = (&mut published, copy)
            && f.relay
        {
            let msg = Msg { topic: topic.clone(), msg_id: f.msg_id, hops: 0, payload };
            let pushed = self.env.swarm.publish(msg, now.at);
            f.queued += pushed.queued;
            f.dropped += pushed.dropped;
        }
        match published {
            Ok(f) if req_id != 0 => {
                let publish = Some(PubAck { msg_id: f.msg_id, queued: f.queued, dropped: f.dropped });
                Some(Frame::Ack(Ack { req_id, publish }))
            }
            Ok(_) => None,
            Err(e @ PublishError::TooLarge { .. }) => {
                self.env.metrics.reject("message_too_large");
                Some(Frame::error(ErrorCode::BadRequest, req_id, e.to_string()))
            }
            Err(e) => Some(Frame::error(ErrorCode::Internal, req_id, e.to_string())),
        }
    }

    /// `ERROR 415` when `kind` needs a cap this session did not negotiate.
    fn cap_refusal(&self, kind: Kind, req_id: u32) -> Option<Frame> {
        let (cap, name) = required_cap(kind)?;
        if self.info.caps.contains(cap) {
            return None;
        }
        self.env.metrics.reject("cap_not_negotiated");
        Some(Frame::error(ErrorCode::Unsupported, req_id, format!("{kind} requires {name}, which was not negotiated")))
    }

    fn count_in(&mut self, frame: &Frame) {
        let len = frame.encoded_len();
        self.counts[frame.kind().index()] += 1;
        self.bytes += len as u64;
        self.sizes.record(len);
    }

    /// Counters are added once per read batch, not once per frame.
    fn flush_counts(&mut self) {
        let m = self.env.metrics;
        for (kind, n) in Kind::ALL.iter().zip(&mut self.counts) {
            if *n > 0 {
                m.frames_in(*kind).increment(u64::from(std::mem::take(n)));
            }
        }
        if self.bytes > 0 {
            m.bytes_in.increment(std::mem::take(&mut self.bytes));
            m.frame_size_in.add(&mut self.sizes);
        }
    }
}

/// The cap a kind needs, and its name for error messages; `None` for the
/// kinds every session speaks.
fn required_cap(kind: Kind) -> Option<(Caps, &'static str)> {
    match kind {
        Kind::Data | Kind::Ctrl | Kind::Error => None,
        Kind::Auth => Some((Caps::AUTH_V1, "AUTH_V1")),
        Kind::Msg => Some((Caps::PEER_V1, "PEER_V1")),
        Kind::Sub | Kind::Unsub | Kind::Pub | Kind::Ack | Kind::Lagged => Some((Caps::PUBSUB_V1, "PUBSUB_V1")),
        Kind::Node
        | Kind::Join
        | Kind::ForwardJoin
        | Kind::Neighbor
        | Kind::Disconnect
        | Kind::Shuffle
        | Kind::ShuffleReply
        | Kind::IHave
        | Kind::Graft
        | Kind::Prune
        | Kind::Interest => Some((Caps::SWARM_V1, "SWARM_V1")),
    }
}

fn ack(req_id: u32) -> Frame {
    Frame::Ack(Ack { req_id, publish: None })
}

fn req_id(frame: &Frame) -> u32 {
    match frame {
        Frame::Sub { req_id, .. }
        | Frame::Unsub { req_id, .. }
        | Frame::Pub { req_id, .. }
        | Frame::Auth { req_id, .. } => *req_id,
        _ => 0,
    }
}
