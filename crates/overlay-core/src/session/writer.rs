//! The session writer: the one task that owns the write half. It takes what
//! is queued, coalesces it into few large writes, and bounds every write by
//! `write_timeout`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use oap_codec::{Ctrl, Frame, Kind};
use ron_transport::DisconnectReason;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ReplyQueue, SessionCtx};

/// Bytes coalesced into one write before it is issued.
const WRITE_BATCH_BYTES: usize = 64 * 1024;
/// Frames taken off the queue per batch.
const WRITE_BATCH_FRAMES: usize = 256;
/// Payload tails at least this long are written from their own buffer
/// instead of being copied into the batch.
const DIRECT_TAIL: usize = 16 * 1024;
/// A batch buffer grown past this is released after use.
const KEEP_BUFFER: usize = 256 * 1024;

/// Runs until the queue closes (`None`), or returns why writing failed.
/// On failure it fires `failed`, so the reader stops too.
pub(super) async fn run<W>(
    mut wr: W,
    mut rx: mpsc::Receiver<Frame>,
    queue: Arc<ReplyQueue>,
    ctx: Arc<SessionCtx>,
    failed: CancellationToken,
) -> Option<DisconnectReason>
where
    W: AsyncWrite + Unpin,
{
    // However the writer ends (error, panic, queue closed), the reader must
    // not wait on it any longer.
    let _stop_reader = failed.clone().drop_guard();
    let m = &ctx.metrics;
    let write_timeout = ctx.limits.write_timeout;
    let mut out = BytesMut::new();
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = ctx.kill.cancelled() => return Some(DisconnectReason::Shutdown),
            first = rx.recv() => first,
        };
        let Some(first) = first else { break };
        let mut bytes = first.encoded_len();
        batch.push(first);
        while batch.len() < WRITE_BATCH_FRAMES && bytes < WRITE_BATCH_BYTES {
            match rx.try_recv() {
                Ok(f) => {
                    bytes += f.encoded_len();
                    batch.push(f);
                }
                Err(_) => break,
            }
        }
        queue.taken(bytes);
        m.reply_queue_depth.decrement(batch.len() as f64);

        let goaway = batch.iter().any(|f| matches!(f, Frame::Ctrl(Ctrl::Goaway { .. })));
        let written = tokio::select! {
            biased;
            () = ctx.kill.cancelled() => return Some(DisconnectReason::Shutdown),
            r = write_batch(&mut wr, &mut out, &batch, write_timeout) => r,
        };
        if let Err(reason) = written {
            return Some(reason);
        }
        let mut counts = [0u64; Kind::ALL.len()];
        for f in &batch {
            counts[f.kind() as usize - 1] += 1;
            m.frame_size_out.record(f.encoded_len() as f64);
        }
        for (kind, n) in Kind::ALL.iter().zip(counts) {
            if n > 0 {
                m.frames_out(*kind).increment(n);
            }
        }
        m.bytes_out.increment(bytes as u64);
        batch.clear();
        if out.capacity() > KEEP_BUFFER {
            out = BytesMut::new();
        }
        if goaway {
            // The sender of a GOAWAY sends nothing more (spec section 2).
            break;
        }
    }
    let _ = tokio::time::timeout(write_timeout, wr.shutdown()).await;
    None
}

/// Encodes `batch` into `out` and writes it; long tails go out directly.
/// Each write must finish within `limit`.
///
/// # Cancel safety
/// Not cancel safe: a cancelled call may have written part of the batch.
/// The session is closed whenever it is cancelled.
async fn write_batch<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &mut BytesMut,
    batch: &[Frame],
    limit: Duration,
) -> Result<(), DisconnectReason> {
    for frame in batch {
        frame.encode_head(out);
        let tail = frame.tail();
        if tail.len() >= DIRECT_TAIL {
            write(wr, out, limit).await?;
            out.clear();
            write(wr, tail, limit).await?;
        } else {
            out.extend_from_slice(tail);
            if out.len() >= WRITE_BATCH_BYTES {
                write(wr, out, limit).await?;
                out.clear();
            }
        }
    }
    if !out.is_empty() {
        write(wr, out, limit).await?;
        out.clear();
    }
    Ok(())
}

/// One `write_all` bounded by `limit`.
async fn write<W: AsyncWrite + Unpin>(wr: &mut W, bytes: &[u8], limit: Duration) -> Result<(), DisconnectReason> {
    match tokio::time::timeout(limit, wr.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
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
