//! In-process subscriptions: the embedding API's view of a delivery queue,
//! under the same bounds (queue bytes, budget, lag, eviction) as a session.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use oap_codec::{Frame, HEADER_LEN, MsgId, Topic};
use overlay_gossip::{Charged, DeliveryQueue, Registry, SubscriberId};

/// Bytes taken from the queue per refill.
const TAKE_BYTES: usize = 256 * 1024;

/// One message delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The topic it was published to.
    pub topic: Topic,
    /// The id the origin node assigned.
    pub msg_id: MsgId,
    /// Relay hops it took to reach this node (0 when published here).
    pub hops: u8,
    /// The message body.
    pub payload: Bytes,
}

/// What a [`Subscription`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A message.
    Message(Message),
    /// This many messages were dropped since the last report, because the
    /// subscription fell behind; loss is never silent.
    Lagged(u64),
}

/// A subscription made with [`crate::Overlay::subscribe`]: a `Stream` of
/// [`Delivery`]. It ends (`None`) when the node shuts down or evicts it as a
/// slow consumer. Dropping it unsubscribes.
pub struct Subscription {
    id: SubscriberId,
    queue: Arc<DeliveryQueue>,
    registry: Arc<Registry>,
    buffer: VecDeque<Delivery>,
    taken: Vec<Charged>,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    ended: bool,
}

impl Subscription {
    pub(crate) fn new(id: SubscriberId, queue: Arc<DeliveryQueue>, registry: Arc<Registry>) -> Subscription {
        Subscription { id, queue, registry, buffer: VecDeque::new(), taken: Vec::new(), waiting: None, ended: false }
    }

    /// The next delivery; `None` once the subscription has ended.
    ///
    /// # Cancel safety
    /// Cancel safe: nothing taken from the queue is lost.
    pub async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        loop {
            if let Some(d) = self.buffer.pop_front() {
                return Poll::Ready(Some(d));
            }
            if self.ended {
                return Poll::Ready(None);
            }
            if self.refill() {
                continue;
            }
            // An offer between the refill and this wait is not missed: the
            // queue keeps one wake-up for its single consumer.
            let queue = self.queue.clone();
            let waiting = self.waiting.get_or_insert_with(|| Box::pin(async move { queue.ready().await }));
            match waiting.as_mut().poll(cx) {
                Poll::Ready(()) => self.waiting = None,
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Moves what the queue holds into the buffer; true when anything came.
    fn refill(&mut self) -> bool {
        let taken = self.queue.take(TAKE_BYTES, &mut self.taken);
        if let Some(n) = taken.lagged {
            self.buffer.push_back(Delivery::Lagged(n));
        }
        let got = !self.taken.is_empty() || taken.lagged.is_some();
        // Each frame's charge ends here: what the embedder keeps of a payload
        // is its own memory, not the node's delivery budget.
        for charged in self.taken.drain(..) {
            let frame = charged.frame();
            // The registry only queues whole MSG frames it encoded itself;
            // the payload stays a slice of that frame (no copy).
            let body = frame.get(HEADER_LEN).map(|kind| (*kind, frame.slice(HEADER_LEN + 1..)));
            if let Some((kind, body)) = body
                && let Ok(Frame::Msg(m)) = Frame::decode(kind, body)
            {
                self.buffer.push_back(Delivery::Message(Message {
                    topic: m.topic,
                    msg_id: m.msg_id,
                    hops: m.hops,
                    payload: m.payload,
                }));
            }
        }
        if got {
            overlay_gossip::settle_releases();
            self.registry.note_pending();
        }
        if taken.evicted || self.queue.is_closed() {
            // Out of the index now, not only when the handle is dropped.
            self.registry.detach(self.id);
            self.ended = true;
        }
        !self.buffer.is_empty() || self.ended
    }
}

impl futures_core::Stream for Subscription {
    type Item = Delivery;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        self.get_mut().poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.detach(self.id);
    }
}
