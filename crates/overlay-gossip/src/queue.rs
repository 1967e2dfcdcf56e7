//! Per-subscriber delivery queues, bounded in bytes and by a process-wide
//! budget, with the stall-then-lag policy of OAP-1 section 4.
//!
//! The budget counts what is really held, once: an encoded frame is charged
//! when it is made ([`Budget::charge`]), shared by every queue it goes to,
//! and given back when its last holder lets go of it: after the writer has
//! written it, a subscription has decoded it, or a closed queue dropped it.
//! So a wide fanout costs one frame, and a blocked writer's batch still counts.
//! A frame is charged what its allocation takes ([`held_bytes`]), not its
//! length: frames just over a size class would otherwise hold up to a
//! quarter more memory than the budget says.
//!
//! A queue is *congested* above half its capacity (publishers stall briefly,
//! at most `publish_stall_ms`), *lagging* once an offer found it full (new
//! deliveries are dropped and counted; publishers no longer stall on it)
//! until it drains below half, and *evicted* when it has lagged longer than
//! the slow-consumer timeout. Time is passed in; nothing here reads a clock.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// The process-wide cap on bytes waiting in delivery queues.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    max: usize,
}

impl Budget {
    /// A budget of `max` bytes, for the life of the process (16 bytes, one
    /// per registry): each charge can then refer to it without a reference
    /// count, which publisher and writer threads would otherwise both touch
    /// for every message.
    pub fn new(max: usize) -> &'static Budget {
        Box::leak(Box::new(Budget { used: AtomicUsize::new(0), max }))
    }

    /// Bytes queued now, across every queue sharing this budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Charges `frame` once, for every queue and writer it will go to;
    /// `None` when it would take the budget past its cap.
    pub fn charge(&'static self, frame: Bytes) -> Option<Charged> {
        if !self.try_reserve(held_bytes(frame.len())) {
            return None;
        }
        Some(Charged(Holder::One(Charge { frame, budget: self })))
    }

    fn try_reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| used.checked_add(n).filter(|t| *t <= self.max))
            .is_ok()
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// An encoded frame with its charge against the [`Budget`]; the charge is
/// given back when the frame is dropped. A frame for one queue is held as
/// it is; one for several is [`Charged::into_shared`] first, and each queue
/// gets a [`Charged::share`] (one reference count, no copy), the charge
/// given back with the last.
#[derive(Debug)]
pub struct Charged(Holder);

#[derive(Debug)]
enum Holder {
    /// One holder: no reference count, no allocation besides the frame.
    One(Charge),
    /// Several holders of one charge.
    Shared(Arc<Charge>),
}

#[derive(Debug)]
struct Charge {
    frame: Bytes,
    budget: &'static Budget,
}

impl Drop for Charge {
    fn drop(&mut self) {
        release_later(self.budget, held_bytes(self.frame.len()));
    }
}

/// The memory an allocation of `len` bytes takes: its size class under
/// jemalloc (the binary's allocator), which has four classes per doubling
/// above 128 bytes and 16-byte steps below. The system allocator's chunks
/// are within 16 bytes of `len`, so under it this errs on the safe side, by
/// at most a quarter.
pub(crate) fn held_bytes(len: usize) -> usize {
    if len <= 128 {
        return len.next_multiple_of(16);
    }
    // len - 1 >= 128, so its log2 is at least 7 and the step at least 32.
    let log2 = usize::BITS - 1 - (len - 1).leading_zeros();
    len.next_multiple_of(1 << (log2 - 2))
}

/// Bytes of dropped charges a thread collects before it gives them back
/// on its own (without a [`settle_releases`]): what a thread that stops
/// settling can leave counted, at most.
const RELEASE_BATCH: usize = 64 << 10;

/// One thread's released bytes, given back when the thread ends too.
struct Tally(Cell<(Option<&'static Budget>, usize)>);

impl Drop for Tally {
    fn drop(&mut self) {
        if let (Some(budget), pending) = self.0.get() {
            budget.release(pending);
        }
    }
}

thread_local! {
    /// Bytes that charges dropped on this thread have given back, not yet
    /// returned to their budget: the budget is updated once per write batch
    /// (or [`RELEASE_BATCH`]), not once per frame, so the writer's thread
    /// and the publisher's do not trade the budget's cache line per message.
    static RELEASED: Tally = const { Tally(Cell::new((None, 0))) };
}

fn release_later(budget: &'static Budget, bytes: usize) {
    RELEASED.with(|Tally(cell)| match cell.get() {
        (Some(b), pending) if std::ptr::eq(b, budget) => {
            let pending = pending + bytes;
            if pending >= RELEASE_BATCH {
                budget.release(pending);
                cell.set((Some(budget), 0));
            } else {
                cell.set((Some(budget), pending));
            }
        }
        (other, pending) => {
            if let Some(b) = other {
                b.release(pending);
            }
            cell.set((Some(budget), bytes));
        }
    });
}

/// Returns what charges dropped on this thread have given back to their
/// budget. Consumers call it after each batch they wrote or read; a thread
/// that never does holds back at most `RELEASE_BATCH` bytes.
pub fn settle_releases() {
    RELEASED.with(|Tally(cell)| {
        if let (Some(budget), pending) = cell.replace((None, 0)) {
            budget.release(pending);
        }
    });
}

impl Charged {
    /// The frame, ready to be shared by several queues.
    pub fn into_shared(self) -> Charged {
        match self.0 {
            Holder::One(charge) => Charged(Holder::Shared(Arc::new(charge))),
            shared => Charged(shared),
        }
    }

    /// Another holder of a shared frame; `None` for one that is not shared.
    pub fn share(&self) -> Option<Charged> {
        match &self.0 {
            Holder::Shared(charge) => Some(Charged(Holder::Shared(charge.clone()))),
            Holder::One(_) => None,
        }
    }

    /// The encoded frame.
    pub fn frame(&self) -> &Bytes {
        match &self.0 {
            Holder::One(charge) => &charge.frame,
            Holder::Shared(charge) => &charge.frame,
        }
    }

    /// Its length in bytes (what queues count; the budget is charged
    /// `held_bytes` of it).
    pub fn len(&self) -> usize {
        self.frame().len()
    }

    /// True for an empty frame (never made by the registry).
    pub fn is_empty(&self) -> bool {
        self.frame().is_empty()
    }
}

/// What happened to one offered delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Queued; the queue is at most half full.
    Queued,
    /// Queued; the queue is more than half full, so the publisher should
    /// stall briefly on [`DeliveryQueue::wait_drained`]; `urgent` when it is
    /// more than three quarters full: stall before offering it more.
    Congested {
        /// More than three quarters full.
        urgent: bool,
    },
    /// Not queued.
    Dropped(DropReason),
}

/// Why a delivery was dropped; a closed set for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The queue's own byte capacity was reached.
    Full,
    /// The process-wide `max_pending_bytes` was reached (the frame could
    /// not be charged, so no queue got it).
    Budget,
    /// The consumer is gone or was evicted.
    Closed,
}

impl DropReason {
    /// Label for `gossip_dropped_total{reason}` and friends.
    pub const fn label(self) -> &'static str {
        match self {
            DropReason::Full => "full",
            DropReason::Budget => "budget",
            DropReason::Closed => "closed",
        }
    }
}

/// What a consumer took from its queue.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Bytes moved into the output.
    pub bytes: usize,
    /// Deliveries dropped since the last report: send `LAGGED` first.
    pub lagged: Option<u64>,
    /// The consumer lagged past the slow-consumer timeout: `GOAWAY 429`.
    pub evicted: bool,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Charged>,
    bytes: usize,
    unreported: u64,
    lagging_since: Option<Instant>,
    evicted: bool,
    closed: bool,
}

/// One consumer's queue of charged frames. Many publishers offer, one
/// consumer takes. The lock is held only to move a few pointers.
#[derive(Debug)]
pub struct DeliveryQueue {
    state: Mutex<State>,
    ready: Notify,
    drained: Notify,
    capacity: usize,
    slow_after: Duration,
}

impl DeliveryQueue {
    /// A queue holding at most `capacity` bytes that evicts its consumer
    /// after lagging for `slow_after`.
    pub fn new(capacity: usize, slow_after: Duration) -> DeliveryQueue {
        DeliveryQueue { state: Mutex::default(), ready: Notify::new(), drained: Notify::new(), capacity, slow_after }
    }

    /// Offers one charged frame (never blocks).
    pub fn offer(&self, frame: Charged, now: Instant) -> Offer {
        let len = frame.len();
        let mut st = self.lock();
        if st.closed || st.evicted {
            return Offer::Dropped(DropReason::Closed);
        }
        if st.bytes + len > self.capacity {
            st.unreported += 1;
            // Only a full queue of its own makes a consumer lagging.
            let since = *st.lagging_since.get_or_insert(now);
            if now.saturating_duration_since(since) >= self.slow_after {
                self.evict(st);
            } else {
                drop(st);
                // Publishers stalled on this queue are released: it lags now.
                self.drained.notify_waiters();
            }
            return Offer::Dropped(DropReason::Full);
        }
        st.items.push_back(frame);
        st.bytes += len;
        let congested = self.congested(&st);
        let urgent = st.bytes * 4 > self.capacity * 3;
        // The consumer waits only after a take that left the queue empty, so
        // only the offer that ends that emptiness needs to wake it.
        let first = st.items.len() == 1;
        drop(st);
        if first {
            self.ready.notify_one();
        }
        if congested { Offer::Congested { urgent } } else { Offer::Queued }
    }

    /// Evicts the consumer when it has lagged for the slow-consumer timeout
    /// by `now`, whether or not more deliveries come for it (the node calls
    /// this periodically); true when it did.
    pub fn expire(&self, now: Instant) -> bool {
        let st = self.lock();
        let due = st.lagging_since.is_some_and(|since| now.saturating_duration_since(since) >= self.slow_after);
        if !due || st.closed || st.evicted {
            return false;
        }
        self.evict(st);
        true
    }

    /// Evicts the consumer: what it holds will never be read, and dropping it
    /// gives the frames' charges back. Its consumer is woken to send `GOAWAY 429`.
    fn evict(&self, mut st: MutexGuard<'_, State>) {
        st.evicted = true;
        self.end(st);
    }

    /// Drops what is queued (giving its charges back, outside the lock) and
    /// wakes the consumer and every stalled publisher.
    fn end(&self, mut st: MutexGuard<'_, State>) {
        st.bytes = 0;
        let held = std::mem::take(&mut st.items);
        drop(st);
        drop(held);
        settle_releases();
        self.ready.notify_one();
        self.drained.notify_waiters();
    }

    /// Records a delivery that could not be made for want of budget: the
    /// consumer learns of it from its next `LAGGED`, and it is not held
    /// against it (no lag, no eviction). False when the consumer is gone.
    pub fn miss(&self) -> bool {
        let mut st = self.lock();
        if st.closed || st.evicted {
            return false;
        }
        st.unreported += 1;
        true
    }

    /// Moves queued frames into `out`, up to about `max_bytes` (at least one
    /// frame when any is queued). Never blocks. The frames stay charged to
    /// the budget until `out` lets go of them.
    pub fn take(&self, max_bytes: usize, out: &mut Vec<Charged>) -> Taken {
        let mut st = self.lock();
        let was_congested = self.congested(&st);
        let mut taken = 0;
        while let Some(front) = st.items.front() {
            if taken > 0 && taken + front.len() > max_bytes {
                break;
            }
            taken += front.len();
            if let Some(f) = st.items.pop_front() {
                out.push(f);
            }
        }
        st.bytes -= taken;
        if st.bytes * 2 <= self.capacity {
            st.lagging_since = None;
        }
        let lagged = (st.unreported > 0).then(|| std::mem::take(&mut st.unreported));
        let evicted = st.evicted;
        let drained = was_congested && !self.congested(&st);
        drop(st);
        if drained {
            self.drained.notify_waiters();
        }
        Taken { bytes: taken, lagged, evicted }
    }

    /// Waits until an offer or an eviction may have made something to take.
    ///
    /// # Cancel safety
    /// Cancel safe: a wake-up that arrives while not waiting is kept for the
    /// next call (one consumer per queue).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// Waits until the queue is no longer congested (drained to half, lagging,
    /// evicted or closed). Publishers bound this with `publish_stall_ms`.
    pub async fn wait_drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_congested() {
                return;
            }
            notified.await;
        }
    }

    /// More than half full, and neither lagging nor closed.
    pub fn is_congested(&self) -> bool {
        self.congested(&self.lock())
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// True once [`DeliveryQueue::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Drops everything queued and refuses further offers.
    pub fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        self.end(st);
    }

    fn congested(&self, st: &State) -> bool {
        st.bytes * 2 > self.capacity && st.lagging_since.is_none() && !st.evicted && !st.closed
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section leaves the state consistent before anything
        // that could panic, so a poisoned lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> &'static Budget {
        Budget::new(1 << 20)
    }

    fn frame(budget: &'static Budget, n: usize) -> Charged {
        budget.charge(Bytes::from(vec![0u8; n])).expect("under the test budget")
    }

    #[test]
    fn stall_then_lag_then_recover() {
        let (t0, b) = (Instant::now(), budget());
        let q = DeliveryQueue::new(100, Duration::from_secs(10));
        assert_eq!(q.offer(frame(b, 40), t0), Offer::Queued);
        assert_eq!(q.offer(frame(b, 30), t0), Offer::Congested { urgent: false });
        assert_eq!(q.offer(frame(b, 10), t0), Offer::Congested { urgent: true });
        assert!(q.is_congested());
        assert_eq!(q.offer(frame(b, 40), t0), Offer::Dropped(DropReason::Full));
        assert!(!q.is_congested(), "a lagging queue stalls no publisher");
        assert_eq!(q.offer(frame(b, 40), t0), Offer::Dropped(DropReason::Full));

        let mut out = Vec::new();
        let taken = q.take(1000, &mut out);
        assert_eq!((out.len(), taken.lagged, taken.evicted), (3, Some(2), false));
        assert_eq!(q.offer(frame(b, 40), t0), Offer::Queued, "recovered below half");
        assert_eq!(q.take(1000, &mut out).lagged, None, "loss reported once");
    }

    #[test]
    fn lagging_past_the_timeout_evicts() {
        let (t0, b) = (Instant::now(), budget());
        let q = DeliveryQueue::new(10, Duration::from_secs(1));
        assert_eq!(q.offer(frame(b, 10), t0), Offer::Congested { urgent: true });
        assert_eq!(q.offer(frame(b, 1), t0), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(b, 1), t0 + Duration::from_millis(999)), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(b, 1), t0 + Duration::from_secs(1)), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(b, 1), t0 + Duration::from_secs(2)), Offer::Dropped(DropReason::Closed));
        let mut out = Vec::new();
        let taken = q.take(100, &mut out);
        assert!(taken.evicted);
        assert!(out.is_empty(), "an evicted consumer's backlog is released");
        // The refused frames were dropped on this thread: settled here, as
        // the registry does after each batch.
        settle_releases();
        assert_eq!((q.queued_bytes(), b.used()), (0, 0));
        assert_eq!(taken.lagged, Some(3));
    }

    #[test]
    fn a_lagging_consumer_is_evicted_at_its_deadline_without_another_offer() {
        let (t0, b) = (Instant::now(), budget());
        let q = DeliveryQueue::new(10, Duration::from_secs(1));
        assert_eq!(q.offer(frame(b, 10), t0), Offer::Congested { urgent: true });
        assert!(!q.expire(t0 + Duration::from_secs(5)), "full but never refused: not lagging");
        assert_eq!(q.offer(frame(b, 1), t0), Offer::Dropped(DropReason::Full));
        assert!(!q.expire(t0 + Duration::from_millis(999)));
        assert!(q.expire(t0 + Duration::from_secs(1)), "no offer needed");
        assert!(!q.expire(t0 + Duration::from_secs(2)), "once");
        assert_eq!(b.used(), 0, "its backlog is given back");
        let taken = q.take(100, &mut Vec::new());
        assert_eq!((taken.evicted, taken.lagged), (true, Some(1)));
    }

    #[test]
    fn budget_misses_are_reported_but_never_evict() {
        let q = DeliveryQueue::new(100, Duration::from_secs(1));
        for _ in 0..5 {
            assert!(q.miss());
        }
        let taken = q.take(100, &mut Vec::new());
        assert_eq!((taken.lagged, taken.evicted), (Some(5), false));
        q.close();
        assert!(!q.miss(), "a closed queue misses nothing");
    }

    #[test]
    fn a_frame_is_charged_its_allocation_size_class() {
        for (len, held) in [(1, 16), (60, 64), (128, 128), (129, 160), (16_384, 16_384), (16_414, 20_480)] {
            assert_eq!(held_bytes(len), held, "{len} bytes");
        }
        let budget = Budget::new(40 << 10);
        let _first = budget.charge(Bytes::from(vec![0u8; 16_414])).unwrap();
        assert_eq!(budget.used(), 20 << 10);
        let _second = budget.charge(Bytes::from(vec![0u8; 16_414])).unwrap();
        assert!(budget.charge(Bytes::from(vec![0u8; 1])).is_none(), "a third byte does not");
    }

    #[test]
    fn a_shared_frame_is_charged_once_until_its_last_holder_lets_go() {
        let budget = Budget::new(100);
        let shared = frame(budget, 64).into_shared();
        let (a, b) =
            (DeliveryQueue::new(1000, Duration::from_secs(10)), DeliveryQueue::new(1000, Duration::from_secs(10)));
        let now = Instant::now();
        assert_eq!(a.offer(shared.share().unwrap(), now), Offer::Queued);
        assert_eq!(b.offer(shared, now), Offer::Queued);
        assert_eq!(budget.used(), 64, "two queues, one charge");
        assert!(budget.charge(Bytes::from(vec![0u8; 37])).is_none(), "the cap holds");
        let mut taken = Vec::new();
        a.take(1000, &mut taken);
        drop(b);
        assert_eq!(budget.used(), 64, "a taken frame not yet written still counts");
        taken.clear();
        settle_releases();
        assert_eq!(budget.used(), 0, "the last holder gives it back");
    }

    #[tokio::test]
    async fn wait_drained_returns_once_below_half() {
        let b = budget();
        let q = Arc::new(DeliveryQueue::new(100, Duration::from_secs(10)));
        q.offer(frame(b, 60), Instant::now());
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait_drained().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        q.take(1000, &mut Vec::new());
        waiter.await.unwrap();
    }
}
