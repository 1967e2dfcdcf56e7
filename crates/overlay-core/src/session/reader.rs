//! The session reader: reads with a deadline, decodes frames in place, and
//! dispatches each one in order. It pauses at `tx_watermark` queued replies
//! and resumes once the writer has drained below half of it.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use oap_codec::{Ack, Caps, Ctrl, DecodeError, ErrorCode, Frame, Kind, Msg, OapCodec, Pattern, PubAck, Topic};
use overlay_admin::SizeTally;
use overlay_gossip::{DeliveryQueue, PublishBatch, PublishError, Refused, SubscribeError};

use super::{link_down, link_up};
use crate::auth::{AuthError, Grant, Op, UnixClock};
use ron_transport::{DisconnectReason, LogLimit};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;

use super::{Consumer, ReplyQueue, SessionCtx, reconnect_after};
use crate::handler::SessionInfo;

/// Longest single wait for a grant's expiry; later ones are re-armed.
const MAX_EXPIRY_WAIT: std::time::Duration = std::time::Duration::from_secs(86_400);
/// Smallest read issued; the read size doubles while reads fill it.
const MIN_READ: usize = 512;
/// Largest read issued.
const MAX_READ: usize = 256 * 1024;
/// "relay peer refused" lines a session logs per second at most.
const REFUSAL_LOGS_PER_SEC: u32 = 1;

/// What the reader does when its read deadline passes.
#[derive(Clone, Copy)]
enum Deadline {
    /// A frame has started and must finish within `read_timeout`.
    Frame,
    /// Half the idle timeout passed in silence: PING the peer.
    Ping,
    /// The whole idle timeout passed in silence: close with `GOAWAY 408`.
    Idle,
    /// The session's grant expired: its subscriptions end, the session stays.
    Expiry,
}

struct Reader<'a> {
    queue: Arc<ReplyQueue>,
    deliveries: &'a Arc<DeliveryQueue>,
    consumer: &'a mut Consumer,
    info: SessionInfo,
    ctx: &'a SessionCtx,
    codec: OapCodec,
    buf: BytesMut,
    nonce: u64,
    // Per read batch (a batch holds at most a read buffer of frames, so u32).
    counts: [u32; Kind::ALL.len()],
    bytes: u64,
    sizes: SizeTally,
    /// What this read batch's messages left to do: subscriber queues they
    /// left more than half full (the reader stalls on them once, before it
    /// reads more, or at once when one passes three quarters) and counts for
    /// the gossip metrics (settled at the batch's end).
    batch: PublishBatch,
    /// When the current batch was read; its messages carry this time.
    now: Instant,
    /// The grant of the last successful `AUTH`.
    grant: Option<Grant>,
    /// The Unix time the grant is checked against.
    unix: UnixClock,
    /// The session's subscriptions with the `req_id` of their `SUB`, so a
    /// revocation can name them.
    subs: Vec<(Pattern, u32)>,
    /// This node dialed the link: what the peer relays back over it needs
    /// no token, over TLS or plain TCP alike (we chose the peer; tokens are
    /// checked by the side that accepts a link, OAP-1 section 6).
    dialed: bool,
    /// Warnings about a relay peer's refusals, a few a second at most.
    refusals: LogLimit,
}

/// Reads and dispatches until the session ends; returns why.
#[allow(clippy::too_many_arguments)]
pub(super) async fn run<R: AsyncRead + Unpin>(
    rd: &mut R,
    queue: Arc<ReplyQueue>,
    deliveries: &Arc<DeliveryQueue>,
    consumer: &mut Consumer,
    info: SessionInfo,
    ctx: &Arc<SessionCtx>,
    dialed: bool,
) -> DisconnectReason {
    let mut reader = Reader {
        queue,
        deliveries,
        consumer,
        info,
        ctx,
        codec: OapCodec::with_max_frame(ctx.limits.max_frame),
        buf: BytesMut::new(),
        nonce: 0,
        counts: [0; Kind::ALL.len()],
        bytes: 0,
        sizes: SizeTally::default(),
        batch: PublishBatch::default(),
        now: Instant::now(),
        grant: None,
        unix: UnixClock::new(),
        subs: Vec::new(),
        dialed,
        refusals: LogLimit::new(REFUSAL_LOGS_PER_SEC),
    };
    let reason = reader.read_loop(rd).await;
    // A batch cut short by the session's end is counted all the same.
    reader.ctx.registry.settle(&mut reader.batch);
    reason
}

impl Reader<'_> {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> DisconnectReason {
        let ctx: &SessionCtx = self.ctx;
        let limits = &ctx.limits;
        let mut last_rx = Instant::now();
        let mut pinged = false;
        let mut partial_since: Option<Instant> = None;
        let mut read_size = MIN_READ;
        loop {
            // 1. Dispatch every complete frame already buffered.
            let mut progressed = false;
            loop {
                // Waiting for room is rare: boxed, so its state is not carried
                // by every session's future (nor are the other rare paths'
                // below: errors, timeouts, AUTH, drain).
                if !self.below_watermark() {
                    if let Err(reason) = Box::pin(self.wait_for_room()).await {
                        return reason;
                    }
                    // Messages dispatched after a wait carry the time now.
                    self.now = Instant::now();
                }
                // A started frame longer than the room left: make room for
                // it and a read beyond it at once (the codec would reserve
                // just the frame, and the next frame would copy again).
                if let Ok(Some(total)) = self.codec.frame_len(&self.buf)
                    && total > self.buf.capacity()
                {
                    self.buf.reserve(total - self.buf.len() + read_size);
                }
                let step = match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        progressed = true;
                        self.count_in(&frame);
                        match self.dispatch(frame).await {
                            // A queue this batch congested passed three
                            // quarters: stall before the next message, so a
                            // subscriber that keeps up is never overrun by
                            // one read's worth of them.
                            None if self.batch.is_urgent() => Box::pin(self.stall()).await,
                            step => step,
                        }
                    }
                    Ok(None) => break,
                    Err(e) => Box::pin(self.reject(e)).await,
                };
                if let Some(reason) = step {
                    self.flush_counts();
                    return reason;
                }
            }
            self.flush_counts();
            // Let the writer send this batch's replies before the next read
            // (which often finds nothing and only costs the reply time).
            if progressed {
                self.queue.yield_to_writer().await;
            }
            // Spec section 4: a publisher whose messages congested some
            // subscriber waits (briefly) before the node reads more from it.
            self.ctx.registry.settle(&mut self.batch);
            if !self.batch.is_empty()
                && let Some(reason) = Box::pin(self.stall()).await
            {
                return reason;
            }

            // 2. Pick the deadline: a started frame must finish within
            //    read_timeout; silence earns a PING at half the idle timeout
            //    and a GOAWAY 408 at the full one.
            let now = Instant::now();
            if self.buf.is_empty() {
                partial_since = None;
            } else if progressed || partial_since.is_none() {
                partial_since = Some(now);
            }
            let (mut deadline, mut on_deadline) = match partial_since {
                Some(started) => (started + limits.read_timeout, Deadline::Frame),
                None if !pinged => (last_rx + limits.idle_timeout / 2, Deadline::Ping),
                None => (last_rx + limits.idle_timeout, Deadline::Idle),
            };
            if let Some(expiry) = self.grant_expiry()
                && expiry < deadline
            {
                (deadline, on_deadline) = (expiry, Deadline::Expiry);
            }

            // 3. Read, unless the node drains or the writer died.
            // A started frame's remainder was reserved by the codec: read
            // into it. Reserving more would reallocate and copy what already
            // arrived of the frame (up to max_frame bytes) on every read.
            let started = matches!(self.codec.frame_len(&self.buf), Ok(Some(total)) if total > self.buf.len());
            if !started && self.buf.capacity() - self.buf.len() < read_size / 2 {
                self.buf.reserve(read_size);
            }
            let read = tokio::select! {
                biased;
                () = self.ctx.kill.cancelled() => return DisconnectReason::Shutdown,
                () = self.queue.writer_gone() => return DisconnectReason::Io,
                () = self.ctx.drain.cancelled() => return Box::pin(self.drain_goaway()).await,
                r = tokio::time::timeout_at(deadline.into(), rd.read_buf(&mut self.buf)) => r,
            };
            match read {
                Ok(Ok(0)) => return DisconnectReason::PeerClosed,
                Ok(Ok(n)) => {
                    last_rx = Instant::now();
                    self.now = last_rx;
                    pinged = false;
                    if n >= read_size {
                        read_size = (read_size * 2).min(MAX_READ);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return DisconnectReason::Io;
                }
                Err(_) => match on_deadline {
                    Deadline::Frame => {
                        let reason = "frame not completed within read_timeout";
                        let goaway = self.goaway(ErrorCode::Timeout, 0, reason, DisconnectReason::ReadTimeout);
                        return Box::pin(goaway).await;
                    }
                    Deadline::Ping => {
                        // Quiet for half the idle timeout: give back what a
                        // burst grew the read buffer to (an idle session
                        // holds one minimal read's worth).
                        if self.buf.is_empty() {
                            self.buf = BytesMut::new();
                            read_size = MIN_READ;
                        }
                        self.nonce += 1;
                        if let Err(reason) = self.reply(Frame::ping(self.nonce)).await {
                            return reason;
                        }
                        pinged = true;
                    }
                    Deadline::Expiry => {
                        if let Err(reason) = Box::pin(self.expire()).await {
                            return reason;
                        }
                    }
                    Deadline::Idle => {
                        let goaway = self.goaway(ErrorCode::Timeout, 0, "idle timeout", DisconnectReason::IdleTimeout);
                        return Box::pin(goaway).await;
                    }
                },
            }
        }
    }

    /// Handles one well-formed frame; `Some` ends the session.
    async fn dispatch(&mut self, frame: Frame) -> Option<DisconnectReason> {
        if let Some(refusal) = self.cap_refusal(frame.kind(), req_id(&frame)) {
            return self.reply(refusal).await.err();
        }
        let reply = match frame {
            Frame::Data(payload) => match self.ctx.handler.on_data(&self.info, payload) {
                // An embedder's handler may answer with more than a frame can
                // carry: a bug on our side of the wire (ERROR 500 is fatal).
                Some(reply) if reply.len() >= self.ctx.limits.max_frame as usize => {
                    self.ctx.metrics.reject("reply_too_large");
                    tracing::error!(len = reply.len(), "DATA handler reply exceeds max_frame");
                    let err = Frame::error(ErrorCode::Internal, 0, "reply exceeds max_frame");
                    return Some(self.reply(err).await.err().unwrap_or(DisconnectReason::Protocol));
                }
                reply => reply.map(Frame::Data),
            },
            Frame::Ctrl(Ctrl::Ping { nonce }) => Some(Frame::pong(nonce)),
            // Any inbound bytes already reset the idle timer.
            Frame::Ctrl(Ctrl::Pong { .. }) => None,
            Frame::Ctrl(Ctrl::Goaway { code, reason, .. }) => {
                tracing::debug!(code, %reason, "peer sent GOAWAY");
                return Some(DisconnectReason::PeerClosed);
            }
            // Another node's notices on a relay link need no answer; its
            // refusals (a rejected relay token) are worth a warning.
            Frame::Ack(_) | Frame::Lagged { .. } | Frame::Error(_) if matches!(self.consumer, Consumer::Link(_)) => {
                if let Frame::Error(e) = &frame
                    && let Some(suppressed) = self.refusals.allow(Instant::now())
                {
                    tracing::warn!(code = e.code, reason = %e.reason, suppressed, "relay peer refused");
                }
                None
            }
            Frame::Error(e) => {
                self.ctx.metrics.reject("unexpected_error");
                tracing::debug!(code = e.code, req_id = e.req_id, reason = %e.reason, "peer sent ERROR");
                None
            }
            Frame::Auth { req_id, token } => return Box::pin(self.authenticate(req_id, &token)).await,
            Frame::Sub { req_id, pattern } => Some(
                self.authorize(req_id, |g, now| g.subscribe(&pattern, now))
                    .unwrap_or_else(|| self.subscribe(req_id, &pattern)),
            ),
            Frame::Unsub { req_id, pattern } => {
                Some(self.authorize(req_id, |_, _| Ok(())).unwrap_or_else(|| self.unsubscribe(req_id, &pattern)))
            }
            Frame::Pub { req_id, topic, payload } => match self.authorize(req_id, |g, now| g.publish(&topic, now)) {
                Some(refusal) => Some(refusal),
                None => return self.publish(req_id, &topic, payload).await,
            },
            // A peer we dialed relays to us without a token of its own: we
            // chose it (and, over TLS, checked its certificate).
            Frame::Msg(msg) if self.dialed => return self.relay(msg).await,
            Frame::Msg(msg) => match self.authorize(0, |g, now| g.relay(&msg.topic, now)) {
                Some(refusal) => Some(refusal),
                None => return self.relay(msg).await,
            },
            other => Some({
                self.ctx.metrics.reject("unsupported");
                Frame::error(
                    ErrorCode::Unsupported,
                    req_id(&other),
                    format!("{} is not served by this node", other.kind()),
                )
            }),
        };
        match reply {
            Some(frame) => self.reply(frame).await.err(),
            None => None,
        }
    }

    /// Answers a frame that did not decode; `Some` ends the session.
    async fn reject(&mut self, e: DecodeError) -> Option<DisconnectReason> {
        let m = &self.ctx.metrics;
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
            return self.reply(refusal).await.err();
        }
        match e {
            DecodeError::EmptyCtrl | DecodeError::UnknownCtrlOp { .. } => None,
            DecodeError::Io(_) => Some(DisconnectReason::Io),
            e => {
                let frame = Frame::error(e.error_code(), e.req_id(), e.to_string());
                if let Err(reason) = self.reply(frame).await {
                    return Some(reason);
                }
                e.is_fatal().then_some(DisconnectReason::Protocol)
            }
        }
    }

    /// `SUB`: attach this session as a subscriber on first use, add the pattern.
    fn subscribe(&mut self, req_id: u32, pattern: &Pattern) -> Frame {
        let registry = &self.ctx.registry;
        let sub = match self.consumer {
            // Relay links receive every message already; interest announced
            // on a link is acknowledged and changes nothing.
            Consumer::Link(_) => return ack(req_id),
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
                self.ctx.metrics.reject("max_subscriptions");
                Frame::error(ErrorCode::SlowConsumer, req_id, format!("max_subscriptions ({max}) reached"))
            }
            Err(e) => Frame::error(ErrorCode::Internal, req_id, e.to_string()),
        }
    }

    /// `UNSUB`: drop the subscription made with the same pattern text.
    fn unsubscribe(&mut self, req_id: u32, pattern: &Pattern) -> Frame {
        match self.consumer {
            Consumer::Link(_) => ack(req_id),
            Consumer::Client(Some(sub)) if self.ctx.registry.unsubscribe(*sub, pattern) => {
                self.subs.retain(|(p, _)| p != pattern);
                ack(req_id)
            }
            Consumer::Client(_) => {
                self.ctx.metrics.reject("not_subscribed");
                Frame::error(ErrorCode::BadRequest, req_id, format!("no subscription to {pattern}"))
            }
        }
    }

    /// `PUB`: fan out, answer `ACK(req_id, msg_id, queued, dropped)`, then
    /// stall briefly for subscribers more than half full.
    async fn publish(&mut self, req_id: u32, topic: &Topic, payload: Bytes) -> Option<DisconnectReason> {
        let fanout = match self.ctx.registry.publish(topic, payload, self.now, &mut self.batch) {
            Ok(f) => f,
            Err(e @ PublishError::TooLarge { .. }) => {
                self.ctx.metrics.reject("message_too_large");
                return self.reply(Frame::error(ErrorCode::BadRequest, req_id, e.to_string())).await.err();
            }
            Err(e) => return self.reply(Frame::error(ErrorCode::Internal, req_id, e.to_string())).await.err(),
        };
        if req_id != 0 {
            let publish = Some(PubAck { msg_id: fanout.msg_id, queued: fanout.queued, dropped: fanout.dropped });
            return self.reply(Frame::Ack(Ack { req_id, publish })).await.err();
        }
        None
    }

    /// `MSG` over a relay link: dedup, deliver, forward.
    async fn relay(&mut self, msg: Msg) -> Option<DisconnectReason> {
        let Consumer::Link(Some(link)) = *self.consumer else {
            // Unreachable while MSG requires PEER_V1, which makes the session a link.
            return self
                .reply(Frame::error(ErrorCode::Unsupported, 0, "MSG is accepted on relay links only"))
                .await
                .err();
        };
        match self.ctx.registry.relay(msg, link, self.now, &mut self.batch) {
            Err(e @ Refused::Forged) => {
                self.ctx.metrics.reject("bad_msg_id");
                self.reply(Frame::error(ErrorCode::BadRequest, 0, e.to_string())).await.err()
            }
            // Duplicates are normal in a mesh (counted by the registry).
            Ok(_) | Err(_) => None,
        }
    }

    /// Spec section 4: wait (at most `publish_stall_ms` in all) for the
    /// subscribers this batch's messages left congested to drain below half.
    /// Once per read batch, not per message: the publisher is held back
    /// where it matters, before the node reads more from it.
    async fn stall(&mut self) -> Option<DisconnectReason> {
        // Counted before the wait, which a kill may cut short.
        self.ctx.registry.settle(&mut self.batch);
        let mut batch = std::mem::take(&mut self.batch);
        let deadline = tokio::time::Instant::now() + self.ctx.limits.publish_stall;
        for queue in batch.queues() {
            tokio::select! {
                biased;
                () = self.ctx.kill.cancelled() => return Some(DisconnectReason::Shutdown),
                r = tokio::time::timeout_at(deadline, queue.wait_drained()) => if r.is_err() { break },
            }
        }
        batch.clear();
        self.batch = batch;
        // Time went by: what this batch still offers carries the time now.
        self.now = Instant::now();
        None
    }

    /// `AUTH`: a valid token replaces the grant (in-band refresh); the
    /// subscriptions it no longer covers end with `ERROR 403` and their
    /// `SUB`'s req_id. An invalid token gets `ERROR 401`; the old grant stays.
    async fn authenticate(&mut self, req_id: u32, token: &[u8]) -> Option<DisconnectReason> {
        let Some(policy) = &self.ctx.auth else {
            return self.reply(Frame::error(ErrorCode::Unsupported, req_id, "AUTH is not enabled")).await.err();
        };
        // Each grant keeps time from its own AUTH (see `UnixClock`).
        let unix = UnixClock::new();
        match Grant::verify(token, &policy.root_key, unix.now()) {
            Ok(grant) => {
                self.unix = unix;
                tracing::debug!(identifier = %grant.identifier, "AUTH accepted");
                self.grant = Some(grant);
                if let Err(reason) = self.reply(ack(req_id)).await {
                    return Some(reason);
                }
                self.regrant();
                self.revoke_uncovered("no longer granted").await.err()
            }
            Err(e) => {
                self.ctx.metrics.reject(e.reason());
                self.reply(Frame::error(e.error_code(), req_id, e.to_string())).await.err()
            }
        }
    }

    /// `None` when the request may go ahead; otherwise the `ERROR` (401
    /// without a grant, 403 when the grant does not cover it). Only enforced
    /// when `auth.required`.
    fn authorize(&self, req_id: u32, check: impl FnOnce(&Grant, u64) -> Result<(), AuthError>) -> Option<Frame> {
        self.ctx.auth.as_ref().filter(|p| p.required)?;
        let verdict = match &self.grant {
            None => Err(AuthError::Missing),
            Some(g) => check(g, self.unix.now()),
        };
        let e = verdict.err()?;
        self.ctx.metrics.reject(e.reason());
        Some(Frame::error(e.error_code(), req_id, e.to_string()))
    }

    fn auth_required(&self) -> bool {
        self.ctx.auth.as_ref().is_some_and(|p| p.required)
    }

    /// An inbound relay link follows its grant: attached (with the grant's
    /// topics as its filter) while the grant allows `relay`, detached when
    /// it no longer does.
    fn regrant(&mut self) {
        if self.dialed || !self.auth_required() {
            return;
        }
        let Consumer::Link(slot) = self.consumer else { return };
        let relay = self.grant.as_ref().filter(|g| g.allows(Op::Relay, self.unix.now())).map(|g| g.topics().to_vec());
        if let Some(link) = slot.take() {
            link_down(self.ctx, link, self.info.peer);
        }
        if let Some(filter) = relay {
            *slot = Some(link_up(self.ctx, self.deliveries, self.info.peer, filter));
        }
    }

    /// When the current grant stops being valid, if auth is enforced; `None`
    /// for far-off expiries (they are checked again on the next AUTH).
    fn grant_expiry(&self) -> Option<Instant> {
        let at = self.ctx.auth.as_ref().filter(|p| p.required).and(self.grant.as_ref())?.expires()?;
        let left = std::time::Duration::from_secs(at.saturating_sub(self.unix.now()));
        Instant::now().checked_add(left.min(MAX_EXPIRY_WAIT))
    }

    /// The grant expired: every subscription ends with `ERROR 403`; the
    /// session stays open for a fresh `AUTH`.
    async fn expire(&mut self) -> Result<(), DisconnectReason> {
        if self.grant.as_ref().and_then(Grant::expires).is_some_and(|at| self.unix.now() >= at) {
            tracing::debug!("grant expired");
            self.grant = None;
            self.regrant();
            self.revoke_uncovered("token expired").await?;
        }
        Ok(())
    }

    /// Ends each subscription the current grant (or its absence) no longer
    /// covers, answering its `SUB`'s req_id with `ERROR 403`.
    async fn revoke_uncovered(&mut self, why: &str) -> Result<(), DisconnectReason> {
        if !self.ctx.auth.as_ref().is_some_and(|p| p.required) {
            return Ok(());
        }
        let now = self.unix.now();
        let (keep, drop): (Vec<_>, Vec<_>) = std::mem::take(&mut self.subs)
            .into_iter()
            .partition(|(p, _)| self.grant.as_ref().is_some_and(|g| g.subscribe(p, now).is_ok()));
        self.subs = keep;
        for (pattern, req_id) in drop {
            if let Consumer::Client(Some(sub)) = self.consumer {
                self.ctx.registry.unsubscribe(*sub, &pattern);
            }
            self.ctx.metrics.reject("revoked");
            self.reply(Frame::error(ErrorCode::Forbidden, req_id, format!("{why}: {pattern}"))).await?;
        }
        Ok(())
    }

    /// `ERROR 415` when `kind` needs a cap this session did not negotiate.
    fn cap_refusal(&self, kind: Kind, req_id: u32) -> Option<Frame> {
        let (cap, name) = required_cap(kind)?;
        if self.info.caps.contains(cap) {
            return None;
        }
        self.ctx.metrics.reject("cap_not_negotiated");
        Some(Frame::error(ErrorCode::Unsupported, req_id, format!("{kind} requires {name}, which was not negotiated")))
    }

    /// Queues a reply; waits while the queue is full (replies are never dropped).
    async fn reply(&self, frame: Frame) -> Result<(), DisconnectReason> {
        let sent = match self.queue.try_push(frame) {
            Ok(()) => Ok(()),
            // Full, or the writer is gone: the rare path, boxed.
            Err(frame) => Box::pin(self.reply_waiting(frame)).await,
        };
        if sent.is_ok() {
            self.ctx.metrics.reply_queue_depth.increment(1.0);
        }
        sent
    }

    async fn reply_waiting(&self, frame: Frame) -> Result<(), DisconnectReason> {
        tokio::select! {
            biased;
            () = self.ctx.kill.cancelled() => Err(DisconnectReason::Shutdown),
            sent = self.queue.push(frame) => sent.map_err(|_| DisconnectReason::Io),
        }
    }

    async fn goaway(
        &self,
        code: ErrorCode,
        reconnect_after_ms: u32,
        reason: &str,
        disconnect: DisconnectReason,
    ) -> DisconnectReason {
        match self.reply(Frame::goaway(code, reconnect_after_ms, reason)).await {
            Ok(()) => disconnect,
            Err(other) => other,
        }
    }

    /// Spec section 4: at `tx_watermark` queued replies (or their byte
    /// equivalent), stop reading until the writer has drained the queue
    /// below half of it. A drain while paused still gets its `GOAWAY 503`:
    /// the watermark is below `tx_queue`, so there is room for it.
    async fn wait_for_room(&self) -> Result<(), DisconnectReason> {
        let frames = self.ctx.limits.tx_watermark;
        let bytes = self.queue.byte_watermark;
        loop {
            let (queued, queued_bytes) = self.queue.level();
            if queued * 2 < frames && queued_bytes * 2 < bytes {
                return Ok(());
            }
            tokio::select! {
                biased;
                () = self.ctx.kill.cancelled() => return Err(DisconnectReason::Shutdown),
                () = self.queue.writer_gone() => return Err(DisconnectReason::Io),
                () = self.ctx.drain.cancelled() => return Err(self.drain_goaway().await),
                () = self.queue.drained.notified() => {}
            }
        }
    }

    /// True while the reply queue is below `tx_watermark` (and its bytes
    /// below their watermark): reading goes on.
    fn below_watermark(&self) -> bool {
        let (frames, bytes) = self.queue.level();
        frames < self.ctx.limits.tx_watermark && bytes < self.queue.byte_watermark
    }

    /// Shutdown step 2 for this session.
    async fn drain_goaway(&self) -> DisconnectReason {
        let after = reconnect_after(self.info.id, self.ctx.limits.drain_window_ms);
        self.goaway(ErrorCode::Unavailable, after, "node shutting down", DisconnectReason::Shutdown).await
    }

    fn count_in(&mut self, frame: &Frame) {
        let len = frame.encoded_len();
        self.counts[frame.kind() as usize - 1] += 1;
        self.bytes += len as u64;
        self.sizes.record(len);
    }

    /// Counters are added once per read batch, not once per frame.
    fn flush_counts(&mut self) {
        let m = &self.ctx.metrics;
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
