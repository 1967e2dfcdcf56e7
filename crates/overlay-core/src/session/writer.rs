//! The session writer: the one future that owns the write half (polled in
//! the session's task, right after the reader). It takes
//! replies (never dropped) first and deliveries (pre-encoded `MSG` frames)
//! after them, coalesces both into few large writes, and bounds every write
//! by `write_timeout`.

use std::io::IoSlice;
use std::time::Duration;

use bytes::BytesMut;
use oap_codec::{Ctrl, ErrorCode, Frame, Kind};
use overlay_admin::SizeTally;
use overlay_gossip::{Charged, DeliveryQueue, settle_releases};
use ron_transport::DisconnectReason;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::{ReplyQueue, SessionCtx};

/// Bytes coalesced into one write before it is issued.
const WRITE_BATCH_BYTES: usize = 256 * 1024;
/// Replies taken off the queue per batch.
const WRITE_BATCH_FRAMES: usize = 256;
/// Reply payload tails at least this long are written from their own
/// buffer instead of being copied into the batch: a copy held by a blocked
/// write is memory beyond the delivery budget.
const DIRECT_TAIL: usize = 4 * 1024;
/// Deliveries at least this long are written from their own buffer too:
/// 256 of them still fill a 256 KiB vectored write, and the copy they would
/// cost was the largest user-space cost of a 1 KiB fanout (9 % of the
/// node's time, `perf`). Shorter ones are copied: one slice each would
/// make writes too small.
const DIRECT_DELIVERY: usize = 1024;
/// Slices per vectored write, well under the kernel's IOV_MAX (1024).
const MAX_IOVECS: usize = 256;
/// The copy buffer is written out once it holds this much: short of
/// [`KEEP_BUFFER`] by more than one copied frame, so it never outgrows it.
const FLUSH_AT: usize = KEEP_BUFFER - DIRECT_TAIL - 1024;
/// A batch buffer grown past this is released after a batch with
/// deliveries. It bounds what a session whose peer does not read holds
/// beyond its charged deliveries.
const KEEP_BUFFER: usize = 64 * 1024;
/// Replies (answers to the session's own requests, bounded by its reply
/// queue) fill the copy buffer up to a whole batch: 256 echoed 1 KiB frames
/// go out in one write, not five (-9 % on 1 KiB pipelined echo).
const REPLY_FLUSH_AT: usize = WRITE_BATCH_BYTES;
/// What a session writing replies only keeps of its copy buffer (until a
/// keepalive finds it idle).
const REPLY_KEEP_BUFFER: usize = 2 * WRITE_BATCH_BYTES;
/// `reconnect_after_ms` in the `GOAWAY 429` to an evicted slow consumer.
const SLOW_CONSUMER_BACKOFF_MS: u32 = 1000;

/// One thing to write. A delivery keeps its charge against
/// `max_pending_bytes` until it has been written.
enum Out {
    Frame(Frame),
    Encoded(Charged),
}

/// Runs until the reply queue closes (`None`), or returns why the session
/// must end (write failure, eviction, kill). However it ends (also when it
/// is dropped), it closes the reply queue's writer side, so the reader stops
/// (`writer_gone`). `link` is true on relay links, which get no `LAGGED`
/// (the loss is counted here). A swarm link's `control` frames go right
/// after the replies, also while the session closes (a `DISCONNECT` is
/// written before the link ends).
pub(super) async fn run<W>(
    wr: &mut W,
    replies: &ReplyQueue,
    deliveries: &DeliveryQueue,
    control: Option<&DeliveryQueue>,
    close: Option<&CancellationToken>,
    ctx: &SessionCtx,
    link: bool,
) -> Option<DisconnectReason>
where
    W: AsyncWrite + Unpin,
{
    let _closed = CloseWriter { replies, ctx };
    let m = &ctx.metrics;
    let write_timeout = ctx.limits.write_timeout;
    let mut out = BytesMut::new();
    let mut batch: Vec<Out> = Vec::new();
    let mut encoded = Vec::new();
    let mut frames = Vec::new();
    loop {
        // 1. Replies first: they answer this session's own requests. A
        //    GOAWAY (always the reader's last reply) is held back to go out last.
        let taken_replies = replies.take(WRITE_BATCH_FRAMES, WRITE_BATCH_BYTES, &mut frames);
        let open = !taken_replies.finished;
        let reply_bytes = taken_replies.bytes;
        if taken_replies.frames > 0 {
            m.reply_queue_depth.decrement(taken_replies.frames as f64);
        }
        let mut goaway = None;
        for f in frames.drain(..) {
            if matches!(f, Frame::Ctrl(Ctrl::Goaway { .. })) {
                goaway = Some(f);
            } else {
                batch.push(Out::Frame(f));
            }
        }
        // 2. The swarm's frames, all of them (a bounded queue of small ones).
        // A swarm link the swarm closes flushes what was queued for it, as a
        // drain does.
        let closing = close.is_some_and(CancellationToken::is_cancelled);
        let flush_all = goaway.is_some() || closing;
        let mut room = if flush_all { usize::MAX } else { WRITE_BATCH_BYTES.saturating_sub(reply_bytes).max(1) };
        let mut control_evicted = false;
        if let Some(control) = control {
            let taken = control.take(usize::MAX, &mut encoded);
            room = room.saturating_sub(taken.bytes).max(1);
            control_evicted = taken.evicted;
        }
        let controls = encoded.len();
        // 3. Deliveries: in the room left; everything queued ahead of a
        //    GOAWAY (the drain flushes it); none once the reader is gone.
        let taken = if open || flush_all { deliveries.take(room, &mut encoded) } else { Default::default() };
        if let Some(dropped) = taken.lagged
            && !link
        {
            batch.push(Out::Frame(Frame::Lagged { dropped }));
        }
        let delivered = (encoded.len() - controls) as u64;
        batch.extend(encoded.drain(..).map(Out::Encoded));
        if taken.evicted || control_evicted {
            m.reject("slow_consumer");
            tracing::info!("slow consumer: lagging past slow_consumer_timeout");
            let reason = "slow consumer: lagged past slow_consumer_timeout";
            goaway = Some(Frame::goaway(ErrorCode::SlowConsumer, SLOW_CONSUMER_BACKOFF_MS, reason));
        }
        let last = goaway.is_some();
        if let Some(g) = goaway {
            batch.push(Out::Frame(g));
        }

        if batch.is_empty() {
            if !open {
                break;
            }
            tokio::select! {
                biased;
                () = ctx.kill.cancelled() => return Some(DisconnectReason::Shutdown),
                () = replies.ready() => {}
                () = deliveries.ready() => {}
                () = control_ready(control) => {}
            }
            continue;
        }

        let written = tokio::select! {
            biased;
            () = ctx.kill.cancelled() => return Some(DisconnectReason::Shutdown),
            r = write_batch(wr, &mut out, &batch, write_timeout) => r,
        };
        out.clear();
        if let Err(reason) = written {
            return Some(reason);
        }
        count_out(ctx, &batch, controls, delivered);
        let idle = keepalive_only(&batch);
        // Written: the deliveries' charges are given back here, not when
        // they were taken off the queue.
        batch.clear();
        if delivered > 0 {
            settle_releases();
            ctx.registry.note_pending();
        }
        let keep = if delivered > 0 { KEEP_BUFFER } else { REPLY_KEEP_BUFFER };
        if idle {
            // The session is quiet (the reader sent a keepalive): hold no
            // buffers until it has something to write again.
            (batch, frames, encoded, out) = (Vec::new(), Vec::new(), Vec::new(), BytesMut::new());
            replies.release_idle();
        } else if out.capacity() > keep {
            out = BytesMut::new();
        }
        if last {
            // The sender of a GOAWAY sends nothing more (spec section 2).
            let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
            return (taken.evicted || control_evicted).then_some(DisconnectReason::SlowConsumer);
        }
        if !open {
            break;
        }
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    None
}

/// Resolves when the control queue may have something; never without one.
async fn control_ready(control: Option<&DeliveryQueue>) {
    match control {
        Some(queue) => queue.ready().await,
        None => std::future::pending().await,
    }
}

/// Closes the reply queue's writer side when the writer ends: replies that
/// will never be written are no longer counted as queued.
struct CloseWriter<'a> {
    replies: &'a ReplyQueue,
    ctx: &'a SessionCtx,
}

impl Drop for CloseWriter<'_> {
    fn drop(&mut self) {
        let left = self.replies.close_writer();
        if left > 0 {
            self.ctx.metrics.reply_queue_depth.decrement(left as f64);
        }
    }
}

/// Adds a written batch to the metrics: `controls` swarm frames (counted by
/// their kind byte) and `delivered` `MSG`s among its encoded frames.
fn count_out(ctx: &SessionCtx, batch: &[Out], controls: usize, delivered: u64) {
    let m = &ctx.metrics;
    let mut counts = [0u64; Kind::ALL.len()];
    let encoded = batch.iter().filter_map(|o| if let Out::Encoded(c) = o { Some(c) } else { None });
    for c in encoded.take(controls) {
        if let Some(kind) = c.frame().get(oap_codec::HEADER_LEN).and_then(|&k| Kind::from_u8(k)) {
            counts[kind.index()] += 1;
        }
    }
    let mut bytes = 0;
    let mut sizes = SizeTally::default();
    for o in batch {
        let len = match o {
            Out::Frame(f) => {
                counts[f.kind().index()] += 1;
                f.encoded_len()
            }
            Out::Encoded(c) => c.len(),
        };
        bytes += len as u64;
        sizes.record(len);
    }
    m.frame_size_out.add(&mut sizes);
    counts[Kind::Msg.index()] += delivered;
    for (kind, n) in Kind::ALL.iter().zip(counts) {
        if n > 0 {
            m.frames_out(*kind).increment(n);
        }
    }
    m.bytes_out.increment(bytes);
}

/// True for a batch of keepalive `PING`s alone: the node's own, sent after
/// half an idle timeout of silence.
fn keepalive_only(batch: &[Out]) -> bool {
    !batch.is_empty() && batch.iter().all(|o| matches!(o, Out::Frame(Frame::Ctrl(Ctrl::Ping { .. }))))
}

/// Encodes `batch` into `out` and writes it: short frames are copied into
/// `out`, long tails (and long deliveries) are written from their own
/// buffers, in vectored writes, so a head and its tail share a syscall. `out`
/// is flushed whenever it reaches [`FLUSH_AT`] after a delivery (a drain's
/// batch can hold a whole delivery queue) or [`REPLY_FLUSH_AT`] after a
/// reply, and each write must make progress within `limit`.
///
/// # Cancel safety
/// Not cancel safe: a cancelled call may have written part of the batch.
/// The session is closed whenever it is cancelled.
async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    batch: &[Out],
    limit: Duration,
) -> Result<(), DisconnectReason> {
    // Where in `out` each long tail goes.
    let mut cuts: Vec<(usize, &[u8])> = Vec::new();
    for item in batch {
        let (tail, flush_at, direct): (&[u8], _, _) = match item {
            Out::Frame(frame) => {
                frame.encode_head(out);
                (frame.tail(), REPLY_FLUSH_AT, DIRECT_TAIL)
            }
            Out::Encoded(charged) => (charged.frame(), FLUSH_AT, DIRECT_DELIVERY),
        };
        if tail.len() >= direct {
            cuts.push((out.len(), tail));
        } else {
            out.extend_from_slice(tail);
        }
        if out.len() >= flush_at || cuts.len() >= MAX_IOVECS {
            flush(wr, out, &mut cuts, limit).await?;
        }
    }
    flush(wr, out, &mut cuts, limit).await
}

/// Writes `out` with the long tails spliced in at their cuts; empties both.
async fn flush<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    cuts: &mut Vec<(usize, &[u8])>,
    limit: Duration,
) -> Result<(), DisconnectReason> {
    if cuts.is_empty() {
        if !out.is_empty() {
            write(wr, out, limit).await?;
        }
        out.clear();
        return Ok(());
    }
    let mut slices = Vec::with_capacity(2 * cuts.len() + 1);
    let mut at = 0;
    for &(pos, tail) in cuts.iter() {
        if pos > at {
            slices.push(IoSlice::new(&out[at..pos]));
        }
        slices.push(IoSlice::new(tail));
        at = pos;
    }
    if out.len() > at {
        slices.push(IoSlice::new(&out[at..]));
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let upto = rest.len().min(MAX_IOVECS);
        let n = bounded(limit, wr.write_vectored(&rest[..upto])).await?;
        if n == 0 {
            tracing::debug!("write returned 0");
            return Err(DisconnectReason::Io);
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    drop(slices);
    out.clear();
    cuts.clear();
    Ok(())
}

/// One `write_all` bounded by `limit`.
async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8], limit: Duration) -> Result<(), DisconnectReason> {
    bounded(limit, wr.write_all(bytes)).await
}

/// One write operation that must finish within `limit`.
async fn bounded<T>(
    limit: Duration,
    op: impl std::future::Future<Output = std::io::Result<T>>,
) -> Result<T, DisconnectReason> {
    match tokio::time::timeout(limit, op).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "write failed");
            Err(DisconnectReason::Io)
        }
        Err(_) => {
            tracing::debug!(timeout_ms = limit.as_millis() as u64, "write timed out");
            Err(DisconnectReason::WriteTimeout)
        }
    }
}
