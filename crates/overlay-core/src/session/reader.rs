//! The session reader: the I/O half of the session core. It reads with a
//! deadline, sizes its buffer, decodes frames in place and hands each to
//! the core ([`SessionState`]), then carries out what the core asks:
//! replies go to the reply queue (the reader pauses at `tx_watermark`
//! queued replies and resumes once the writer has drained below half of
//! it), link changes are announced, and a publisher whose messages
//! congested a subscriber is stalled before more is read from it.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::BytesMut;
use oap_codec::{Frame, OapCodec};
use ron_transport::DisconnectReason;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::state::{Action, Now, SessionState};
use super::{ReplyQueue, SessionCtx, peer_up};

/// Smallest read issued; the read size doubles while reads fill it.
const MIN_READ: usize = 512;
/// Largest read issued.
const MAX_READ: usize = 256 * 1024;

/// The time now, as the session core takes it: the runtime's clock (paused
/// in tests) and the wall clock.
pub(super) fn now() -> Now {
    Now { at: tokio::time::Instant::now().into_std(), unix: crate::auth::wall() }
}

/// Resolves when `close` fires; never without one.
async fn closed(close: Option<&CancellationToken>) {
    match close {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

struct Reader<'s, 'a> {
    queue: &'s ReplyQueue,
    state: &'s mut SessionState<'a>,
    ctx: &'s SessionCtx,
    peer: SocketAddr,
    codec: OapCodec,
    buf: BytesMut,
    read_size: usize,
    /// When the current batch was read; its messages carry this time.
    now: Now,
    /// Replies queued but not yet added to the reply-queue gauge (see
    /// [`Reader::count_queued`]).
    queued: u32,
    /// Fired by the swarm to close a swarm link.
    close: Option<&'s CancellationToken>,
}

impl Drop for Reader<'_, '_> {
    fn drop(&mut self) {
        self.count_queued();
    }
}

/// Reads and dispatches until the session ends; returns why.
pub(super) async fn run<R: AsyncRead + Unpin>(
    rd: &mut R,
    queue: &ReplyQueue,
    state: &mut SessionState<'_>,
    ctx: &SessionCtx,
    peer: SocketAddr,
    close: Option<&CancellationToken>,
) -> DisconnectReason {
    let mut reader = Reader {
        queue,
        state,
        ctx,
        peer,
        codec: OapCodec::with_max_frame(ctx.limits.max_frame),
        buf: BytesMut::new(),
        read_size: MIN_READ,
        now: now(),
        queued: 0,
        close,
    };
    let Err(reason) = reader.read_loop(rd).await;
    reason
}

impl Reader<'_, '_> {
    async fn read_loop<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> Result<Infallible, DisconnectReason> {
        // What the core decided at its start (a link's attachment, a token).
        self.perform().await?;
        loop {
            // 1. Dispatch every complete frame already buffered.
            let mut progressed = false;
            loop {
                // Waiting for room is rare: boxed, so its state is not carried
                // by every session's future (nor are the other rare paths'
                // below: stalls, timers, drain).
                if !self.below_watermark() {
                    Box::pin(self.wait_for_room()).await?;
                    // Messages dispatched after a wait carry the time now.
                    self.now = now();
                }
                // A started frame longer than the room left: make room for
                // it and a read beyond it at once (the codec would reserve
                // just the frame, and the next frame would copy again).
                if let Ok(Some(total)) = self.codec.frame_len(&self.buf)
                    && total > self.buf.capacity()
                {
                    self.buf.reserve(total - self.buf.len() + self.read_size);
                }
                match self.codec.decode(&mut self.buf) {
                    Ok(Some(frame)) => {
                        progressed = true;
                        self.state.on_frame(frame, self.now);
                    }
                    Ok(None) => break,
                    Err(e) => self.state.on_decode_error(e),
                }
                self.perform().await?;
                // A queue this batch congested passed three quarters: stall
                // before the next message, so a subscriber that keeps up is
                // never overrun by one read's worth of them.
                if self.state.is_urgent() {
                    Box::pin(self.stall()).await?;
                }
            }
            self.count_queued();
            // Let the writer send this batch's replies before the next read
            // (which often finds nothing and only costs the reply time).
            if progressed {
                self.queue.yield_to_writer().await;
            }
            // Spec section 4: a publisher whose messages congested some
            // subscriber waits (briefly) before the node reads more from it.
            self.state.settle();
            if self.state.is_congested() {
                Box::pin(self.stall()).await?;
            }

            // 2. The deadline is the core's: a started frame's read_timeout,
            //    keepalive, or the grant's expiry.
            let at = now();
            self.state.end_batch(at, !self.buf.is_empty());
            let deadline = self.state.timeout(at);

            // 3. Read, unless the node drains or the writer died.
            // A started frame's remainder was reserved by the codec: read
            // into it. Reserving more would reallocate and copy what already
            // arrived of the frame (up to max_frame bytes) on every read.
            let started = matches!(self.codec.frame_len(&self.buf), Ok(Some(total)) if total > self.buf.len());
            if !started && self.buf.capacity() - self.buf.len() < self.read_size / 2 {
                self.buf.reserve(self.read_size);
            }
            let read = tokio::select! {
                biased;
                () = self.ctx.kill.cancelled() => return Err(DisconnectReason::Shutdown),
                () = self.queue.writer_gone() => return Err(DisconnectReason::Io),
                () = self.ctx.drain.cancelled() => return Err(Box::pin(self.drain()).await),
                () = closed(self.close) => return Err(DisconnectReason::Overlay),
                r = tokio::time::timeout_at(deadline.into(), rd.read_buf(&mut self.buf)) => r,
            };
            match read {
                Ok(Ok(0)) => return Err(DisconnectReason::PeerClosed),
                Ok(Ok(n)) => {
                    self.now = now();
                    self.state.on_read(self.now);
                    if n >= self.read_size {
                        self.read_size = (self.read_size * 2).min(MAX_READ);
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "read failed");
                    return Err(DisconnectReason::Io);
                }
                Err(_) => Box::pin(self.on_timer()).await?,
            }
        }
    }

    /// A deadline passed: the core does what is due (PING, `GOAWAY 408`,
    /// revocations).
    async fn on_timer(&mut self) -> Result<(), DisconnectReason> {
        // Quiet: give back what a burst grew the read buffer to (an idle
        // session holds one minimal read's worth).
        if self.buf.is_empty() {
            self.buf = BytesMut::new();
            self.read_size = MIN_READ;
        }
        self.state.on_timer(now());
        self.perform().await?;
        self.state.release_idle();
        Ok(())
    }

    /// Carries out the core's actions in order; `Err` ends the session.
    async fn perform(&mut self) -> Result<(), DisconnectReason> {
        while let Some(action) = self.state.poll() {
            match action {
                Action::Send(frame) => self.reply(frame).await?,
                Action::LinkUp(node) => peer_up(self.ctx, self.peer, node),
                Action::Close(reason) => return Err(reason),
            }
        }
        Ok(())
    }

    /// Spec section 4: wait (at most `publish_stall_ms` in all) for the
    /// subscribers this batch's messages left congested to drain below half.
    /// Once per read batch, not per message: the publisher is held back
    /// where it matters, before the node reads more from it.
    async fn stall(&mut self) -> Result<(), DisconnectReason> {
        self.count_queued();
        let batch = self.state.congested();
        let deadline = tokio::time::Instant::now() + self.ctx.limits.publish_stall;
        for queue in batch.queues() {
            tokio::select! {
                biased;
                () = self.ctx.kill.cancelled() => return Err(DisconnectReason::Shutdown),
                r = tokio::time::timeout_at(deadline, queue.wait_drained()) => if r.is_err() { break },
            }
        }
        self.state.stalled(batch);
        // Time went by: what this batch still offers carries the time now.
        self.now = now();
        Ok(())
    }

    /// Shutdown step 2 for this session: the core's `GOAWAY 503`, queued.
    async fn drain(&mut self) -> DisconnectReason {
        self.state.on_drain();
        self.perform().await.err().unwrap_or(DisconnectReason::Shutdown)
    }

    /// Queues a reply; waits while the queue is full (replies are never dropped).
    async fn reply(&mut self, frame: Frame) -> Result<(), DisconnectReason> {
        let sent = match self.queue.try_push(frame) {
            Ok(()) => Ok(()),
            // Full, or the writer is gone: the rare path, boxed.
            Err(frame) => Box::pin(self.reply_waiting(frame)).await,
        };
        if sent.is_ok() {
            self.queued += 1;
        }
        sent
    }

    /// Adds the replies queued since the last call to the reply-queue
    /// gauge: once per batch rather than per reply (a gauge update per
    /// small echo was 6 % of the node's time). Called before every wait,
    /// so the writer, which runs only while the reader waits (`join`),
    /// never subtracts a reply not yet added.
    fn count_queued(&mut self) {
        if self.queued > 0 {
            self.ctx.metrics.reply_queue_depth.increment(f64::from(std::mem::take(&mut self.queued)));
        }
    }

    async fn reply_waiting(&mut self, frame: Frame) -> Result<(), DisconnectReason> {
        self.count_queued();
        tokio::select! {
            biased;
            () = self.ctx.kill.cancelled() => Err(DisconnectReason::Shutdown),
            sent = self.queue.push(frame) => sent.map_err(|_| DisconnectReason::Io),
        }
    }

    /// Spec section 4: at `tx_watermark` queued replies (or their byte
    /// equivalent), stop reading until the writer has drained the queue
    /// below half of it. A drain while paused still gets its `GOAWAY 503`:
    /// the watermark is below `tx_queue`, so there is room for it.
    async fn wait_for_room(&mut self) -> Result<(), DisconnectReason> {
        self.count_queued();
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
                () = self.ctx.drain.cancelled() => return Err(self.drain().await),
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
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use oap_codec::Caps;
    use overlay_gossip::{GossipConfig, Registry};
    use tokio::io::AsyncWriteExt;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::handler::{Echo, SessionInfo};
    use crate::metrics::OverlayMetrics;
    use crate::session::{Limits, join};

    const TX_QUEUE: usize = 16;
    const TX_WATERMARK: usize = 8;

    fn ctx() -> SessionCtx {
        let limits = Limits {
            caps: Caps::GOSSIP_V1,
            max_frame: 4096,
            handshake_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            tx_queue: TX_QUEUE,
            tx_watermark: TX_WATERMARK,
            drain_window_ms: 5000,
            publish_stall: Duration::from_millis(50),
            node_certs: false,
        };
        let registry = Arc::new(Registry::new(GossipConfig::default(), "test"));
        let me = oap_codec::NodeAddr { id: oap_codec::NodeId([1; 32]), addr: "127.0.0.1:9".parse().unwrap() };
        let config = overlay_swarm::Config::default();
        let swarm =
            crate::swarm::SwarmDriver::new(me, config, registry.clone(), 4096, Duration::from_secs(1), "test").0;
        SessionCtx {
            limits,
            metrics: OverlayMetrics::new("test"),
            handler: Arc::new(Echo),
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            tasks: TaskTracker::new(),
            links: TaskTracker::new(),
            registry: registry.clone(),
            events: tokio::sync::broadcast::channel(4).0,
            auth: None,
            seeds: Arc::new(crate::seeds::Seeds::new(swarm.clone())),
            swarm,
        }
    }

    /// Lets every task run until all wait (the clock is paused: it moves
    /// only once they do).
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_reader_pauses_at_tx_watermark_and_resumes_below_half_of_it() {
        let ctx = ctx();
        let queue = ReplyQueue::new(TX_QUEUE, ctx.limits.max_frame);
        let peer = "127.0.0.1:1".parse().unwrap();
        let info = SessionInfo { id: 1, peer, caps: Caps::GOSSIP_V1 };
        let mut state = SessionState::new(ctx.env(), info, false, None, ctx.registry.queue(), None, now());
        let (mut client, mut server) = tokio::io::duplex(64 << 10);
        // 20 PINGs arrive at once; each asks for a PONG, and no writer takes any.
        let mut pings = BytesMut::new();
        for nonce in 0..20 {
            Frame::ping(nonce).encode_into(&mut pings);
        }
        client.write_all(&pings).await.unwrap();
        let reader = std::pin::pin!(run(&mut server, &queue, &mut state, &ctx, peer, None));
        let no_writer = std::pin::pin!(std::future::pending());
        let session = join::join(reader, no_writer, &queue, Duration::from_secs(1));
        let mut taken = Vec::new();
        let test = async {
            settle().await;
            assert_eq!(queue.level().0, TX_WATERMARK, "the reader did not stop at tx_watermark replies");
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(queue.level().0, TX_WATERMARK, "the reader went on while the queue stood at tx_watermark");

            // Drained to half: still paused (it resumes below half).
            queue.take(TX_WATERMARK / 2, usize::MAX, &mut taken);
            settle().await;
            assert_eq!(queue.level().0, TX_WATERMARK / 2, "the reader resumed at half of tx_watermark");

            // One more: below half, so it reads on, up to the watermark again.
            queue.take(1, usize::MAX, &mut taken);
            settle().await;
            assert_eq!(queue.level().0, TX_WATERMARK, "the reader did not resume below half of tx_watermark");

            // Everything taken: the last 7 PINGs are answered, in order.
            queue.take(TX_WATERMARK, usize::MAX, &mut taken);
            settle().await;
            assert_eq!(queue.level().0, 7);
            queue.take(TX_WATERMARK, usize::MAX, &mut taken);
            let nonces: Vec<u64> = taken
                .iter()
                .map(|f| match f {
                    Frame::Ctrl(oap_codec::Ctrl::Pong { nonce }) => *nonce,
                    other => panic!("not a PONG: {other:?}"),
                })
                .collect();
            assert_eq!(nonces, (0..20).collect::<Vec<_>>());
        };
        tokio::select! {
            ended = session => panic!("the session ended: {:?}", ended.read),
            () = test => {}
        }
    }
}
