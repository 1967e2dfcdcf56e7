//! The reply queue of spec section 4, between a session's reader (which
//! pushes) and its writer (which takes).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Poll;

use oap_codec::Frame;
use tokio::sync::Notify;

/// Reply slots a drained queue keeps; a larger buffer is released.
const KEEP_REPLY_SLOTS: usize = 64;

/// The reply queue of spec section 4: the node's answers to the session's
/// own requests (echo, PONG, ACK, ERROR), bounded by `tx_queue` frames and
/// never dropped. One reader pushes, one writer takes; the storage grows
/// only as replies queue up, so an idle session holds none.
pub(crate) struct ReplyQueue {
    state: Mutex<Replies>,
    /// Wakes the writer: the reader is done. (Replies need no wake-up: the
    /// writer is polled after the reader, in the same task.)
    ready: Notify,
    /// Wakes the reader: the writer took something, or is gone.
    pub(super) drained: Notify,
    /// Wakes the reader: the writer is gone. Its own `Notify`, so a reader
    /// waiting for room and for the writer at once cannot have one wake-up
    /// taken by the other wait.
    gone: Notify,
    capacity: usize,
    /// Queued reply bytes at which the reader pauses, like `tx_watermark`
    /// does for frames; resumes below half.
    pub(super) byte_watermark: usize,
    /// The reader stepped aside for the writer and must be polled again in
    /// the same pass (see `yield_to_writer`).
    repoll: AtomicBool,
    /// Copies of the queue's length and bytes, written under the lock.
    level_frames: AtomicUsize,
    level_bytes: AtomicUsize,
}

#[derive(Default)]
struct Replies {
    frames: VecDeque<Frame>,
    bytes: usize,
    reader_done: bool,
    writer_gone: bool,
}

/// What the writer took.
pub(crate) struct TakenReplies {
    pub(crate) frames: usize,
    pub(crate) bytes: usize,
    /// The reader is done and nothing is left: no reply will come again.
    pub(crate) finished: bool,
}

impl ReplyQueue {
    pub(super) fn new(capacity: usize, max_frame: u32) -> ReplyQueue {
        ReplyQueue {
            state: Mutex::default(),
            ready: Notify::new(),
            drained: Notify::new(),
            gone: Notify::new(),
            repoll: AtomicBool::new(false),
            level_frames: AtomicUsize::new(0),
            level_bytes: AtomicUsize::new(0),
            capacity,
            byte_watermark: 2 * max_frame as usize,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Replies> {
        // Every critical section leaves the queue consistent before anything
        // that could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames and bytes queued now, without the lock: the reader asks
    /// before every frame it dispatches.
    pub(crate) fn level(&self) -> (usize, usize) {
        (self.level_frames.load(Ordering::Relaxed), self.level_bytes.load(Ordering::Relaxed))
    }

    /// Publishes the level for `level` (called with the lock held).
    fn note_level(&self, st: &Replies) {
        self.level_frames.store(st.frames.len(), Ordering::Relaxed);
        self.level_bytes.store(st.bytes, Ordering::Relaxed);
    }

    /// Queues a reply if there is room and the writer is there; otherwise
    /// hands it back (then [`ReplyQueue::push`] waits, or fails).
    pub(crate) fn try_push(&self, frame: Frame) -> Result<(), Frame> {
        let mut st = self.lock();
        if st.writer_gone || st.frames.len() >= self.capacity {
            return Err(frame);
        }
        st.bytes += frame.encoded_len();
        st.frames.push_back(frame);
        self.note_level(&st);
        // No wake-up: the writer is polled right after the reader in the same
        // task (`established`), and its `ready` looks at the queue on every
        // poll. Waking our own task would only reschedule it, and may hand it
        // to another thread.
        Ok(())
    }

    /// Queues a reply, waiting while `tx_queue` frames are queued (replies
    /// are never dropped); `Err` once the writer is gone.
    ///
    /// # Cancel safety
    /// Cancel safe: a cancelled push queued nothing.
    pub(crate) async fn push(&self, mut frame: Frame) -> Result<(), Frame> {
        loop {
            // Made before the attempt: room made in between is not missed.
            let room = self.drained.notified();
            frame = match self.try_push(frame) {
                Ok(()) => return Ok(()),
                Err(frame) if self.lock().writer_gone => return Err(frame),
                Err(frame) => frame,
            };
            room.await;
        }
    }

    /// The reader is done: the writer flushes what is queued, then stops.
    pub(crate) fn close_reader(&self) {
        self.lock().reader_done = true;
        self.ready.notify_one();
    }

    /// Moves up to `max_frames` replies (about `max_bytes`) into `out`.
    pub(crate) fn take(&self, max_frames: usize, max_bytes: usize, out: &mut Vec<Frame>) -> TakenReplies {
        let mut st = self.lock();
        let (mut frames, mut bytes) = (0, 0);
        while frames < max_frames && bytes < max_bytes {
            let Some(f) = st.frames.pop_front() else { break };
            frames += 1;
            bytes += f.encoded_len();
            out.push(f);
        }
        st.bytes -= bytes;
        self.note_level(&st);
        let finished = st.reader_done && st.frames.is_empty();
        if st.frames.is_empty() && st.frames.capacity() > KEEP_REPLY_SLOTS {
            st.frames = VecDeque::new();
        }
        drop(st);
        if frames > 0 {
            self.drained.notify_one();
        }
        TakenReplies { frames, bytes, finished }
    }

    /// Releases the queue's buffer if it is empty: the session is idle
    /// (the writer has just sent a keepalive), so the next reply can pay
    /// for a new one.
    pub(crate) fn release_idle(&self) {
        let mut st = self.lock();
        if st.frames.is_empty() {
            st.frames = VecDeque::new();
        }
    }

    /// Waits until a reply is queued or the reader is done.
    ///
    /// A queued reply is seen whenever this is polled; it registers no
    /// waker for replies, because the writer is polled right after the reader
    /// in the same task (see [`ReplyQueue::push`]).
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that arrives while not waiting is kept.
    pub(crate) async fn ready(&self) {
        let done = self.ready.notified();
        let mut done = std::pin::pin!(done);
        std::future::poll_fn(|cx| {
            if done.as_mut().poll(cx).is_ready() || !self.lock().frames.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// Lets the writer run before the reader goes on, when replies are queued:
    /// returns `Pending` once without a wake-up, and `established` polls the
    /// reader again right after the writer, in the same pass.
    pub(crate) async fn yield_to_writer(&self) {
        if self.lock().frames.is_empty() {
            return;
        }
        let mut yielded = false;
        std::future::poll_fn(|_| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            self.repoll.store(true, Ordering::Relaxed);
            Poll::Pending
        })
        .await;
    }

    /// True (once) when the reader asked to be polled again.
    pub(super) fn take_repoll(&self) -> bool {
        self.repoll.swap(false, Ordering::Relaxed)
    }

    /// Waits until the writer is gone (failed, evicted, or done).
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn writer_gone(&self) {
        loop {
            // Made before the check: a notification in between is kept.
            let notified = self.gone.notified();
            if self.lock().writer_gone {
                return;
            }
            notified.await;
        }
    }

    /// The writer is gone: queued replies are dropped (how many is
    /// returned) and the reader's pushes fail from now on.
    pub(crate) fn close_writer(&self) -> usize {
        let mut st = self.lock();
        st.writer_gone = true;
        let left = st.frames.len();
        st.frames = VecDeque::new();
        st.bytes = 0;
        self.note_level(&st);
        drop(st);
        self.drained.notify_one();
        self.gone.notify_one();
        left
    }
}
