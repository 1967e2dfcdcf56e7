//! A session's reader and writer, joined in the session's one task.
//!
//! They are two futures of one task, not two tasks: a reply queued by the
//! reader wakes no other thread (a cross-thread wake per batch cost more
//! than the parallelism won, and a task per session costs memory). Sessions
//! still run in parallel with each other. The writer is polled right after
//! the reader, every pass, so it finds what the reader queued in that pass
//! without a wake-up ([`ReplyQueue::try_push`] registers none);
//! `tests::the_writer_takes_a_reply_queued_in_the_same_pass` fails if that
//! order breaks.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use ron_transport::DisconnectReason;

use super::{ReplyQueue, closes_on_its_own};

/// How the two halves ended.
pub(super) struct Ended {
    /// Why the reader stopped.
    pub(super) read: DisconnectReason,
    /// Why the writer stopped, when it failed; `None` when it flushed and
    /// finished, or was given up on.
    pub(super) write: Option<DisconnectReason>,
    /// The reader closed the session on its own account and the writer did
    /// not finish within the grace: its peer does not read.
    pub(super) grace_expired: bool,
}

/// Polls `reader`, then `writer`, until both end; or until the reader has
/// closed the session on its own account (idle, read timeout, a fatal
/// error) and `grace` has passed without the writer finishing.
pub(super) async fn join<R, W>(
    mut reader: Pin<&mut R>,
    mut writer: Pin<&mut W>,
    queue: &ReplyQueue,
    grace: Duration,
) -> Ended
where
    R: Future<Output = DisconnectReason>,
    W: Future<Output = Option<DisconnectReason>>,
{
    let (mut read_end, mut write_end) = (None, None);
    // Armed when the reader ends a session on its own account: the
    // writer's time to flush the GOAWAY (boxed: rare, and a timer is large).
    let mut grace_timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    std::future::poll_fn(|cx| {
        loop {
            if read_end.is_none()
                && let Poll::Ready(reason) = reader.as_mut().poll(cx)
            {
                read_end = Some(reason);
                if closes_on_its_own(reason) {
                    grace_timer = Some(Box::pin(tokio::time::sleep(grace)));
                }
            }
            if write_end.is_none()
                && let Poll::Ready(reason) = writer.as_mut().poll(cx)
            {
                write_end = Some(reason);
            }
            // The reader stepped aside for the writer: back to it now.
            if !(queue.take_repoll() && read_end.is_none()) {
                break;
            }
        }
        match (read_end, write_end) {
            (Some(read), Some(write)) => Poll::Ready(Ended { read, write, grace_expired: false }),
            (Some(read), None) if grace_timer.as_mut().is_some_and(|g| g.as_mut().poll(cx).is_ready()) => {
                Poll::Ready(Ended { read, write: None, grace_expired: true })
            }
            _ => Poll::Pending,
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::pin::pin;
    use std::task::{Context, Waker};

    use oap_codec::Frame;

    use super::*;

    /// One pass of the join with no waker at all: what the writer does in
    /// it, it did without a wake-up.
    fn one_pass(queue: &ReplyQueue, pushes: usize, step_aside: bool) -> usize {
        let taken = Cell::new(0);
        let reader = pin!(async {
            for nonce in 0..pushes as u64 {
                queue.try_push(Frame::ping(nonce)).unwrap();
                // Steps aside for the writer, as the reader does after a batch.
                if step_aside {
                    queue.yield_to_writer().await;
                }
            }
            std::future::pending::<DisconnectReason>().await
        });
        let writer = pin!(async {
            let mut out = Vec::new();
            loop {
                queue.ready().await;
                taken.set(taken.get() + queue.take(64, usize::MAX, &mut out).frames);
            }
        });
        let mut joined = pin!(join(reader, writer, queue, Duration::from_secs(1)));
        assert!(joined.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending());
        taken.get()
    }

    #[test]
    fn the_writer_takes_a_reply_queued_in_the_same_pass() {
        let queue = ReplyQueue::new(64, 1 << 20);
        assert_eq!(one_pass(&queue, 1, false), 1, "a reply waited for a wake-up that never comes");
    }

    #[test]
    fn a_reader_that_steps_aside_is_polled_again_in_the_same_pass() {
        let queue = ReplyQueue::new(64, 1 << 20);
        assert_eq!(one_pass(&queue, 3, true), 3, "the reader was not polled again after yielding to the writer");
    }
}
