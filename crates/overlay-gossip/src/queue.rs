//! Per-subscriber delivery queues, bounded in bytes and by a process-wide
//! budget, with the stall-then-lag policy of OAP-1 section 4.
//!
//! A queue is *congested* above half its capacity (publishers stall briefly,
//! at most `publish_stall_ms`), *lagging* once an offer found it full (new
//! deliveries are dropped and counted; publishers no longer stall on it)
//! until it drains below half, and *evicted* when it has lagged longer than
//! the slow-consumer timeout. Time is passed in; nothing here reads a clock.

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
    /// A budget of `max` bytes.
    pub fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget { used: AtomicUsize::new(0), max })
    }

    /// Bytes queued now, across every queue sharing this budget.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
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
    /// The process-wide `max_pending_bytes` was reached.
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
    items: VecDeque<Bytes>,
    bytes: usize,
    unreported: u64,
    lagging_since: Option<Instant>,
    evicted: bool,
    closed: bool,
}

/// One consumer's queue of encoded frames. Many publishers offer, one
/// consumer takes. The lock is held only to move a few pointers.
#[derive(Debug)]
pub struct DeliveryQueue {
    state: Mutex<State>,
    ready: Notify,
    drained: Notify,
    capacity: usize,
    slow_after: Duration,
    budget: Arc<Budget>,
}

impl DeliveryQueue {
    /// A queue holding at most `capacity` bytes, drawing on `budget`, that
    /// evicts its consumer after lagging for `slow_after`.
    pub fn new(capacity: usize, slow_after: Duration, budget: Arc<Budget>) -> DeliveryQueue {
        DeliveryQueue {
            state: Mutex::default(),
            ready: Notify::new(),
            drained: Notify::new(),
            capacity,
            slow_after,
            budget,
        }
    }

    /// Offers one encoded frame (never blocks).
    pub fn offer(&self, frame: Bytes, now: Instant) -> Offer {
        let len = frame.len();
        let mut st = self.lock();
        if st.closed || st.evicted {
            return Offer::Dropped(DropReason::Closed);
        }
        let reason = if st.bytes + len > self.capacity {
            Some(DropReason::Full)
        } else if !self.budget.try_reserve(len) {
            Some(DropReason::Budget)
        } else {
            None
        };
        if let Some(reason) = reason {
            st.unreported += 1;
            // Only a full queue of its own makes a consumer lagging; a drop
            // for the shared budget is reported (LAGGED) but not held against it.
            if reason == DropReason::Full {
                let since = *st.lagging_since.get_or_insert(now);
                if now.saturating_duration_since(since) >= self.slow_after {
                    // Evicted: what it holds will never be read; give it back.
                    st.evicted = true;
                    st.items.clear();
                    let bytes = std::mem::take(&mut st.bytes);
                    drop(st);
                    self.budget.release(bytes);
                    self.ready.notify_one();
                } else {
                    drop(st);
                }
                // Publishers stalled on this queue are released: it lags now.
                self.drained.notify_waiters();
            }
            return Offer::Dropped(reason);
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

    /// Moves queued frames into `out`, up to about `max_bytes` (at least one
    /// frame when any is queued). Never blocks.
    pub fn take(&self, max_bytes: usize, out: &mut Vec<Bytes>) -> Taken {
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
        self.budget.release(taken);
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
        let bytes = std::mem::take(&mut st.bytes);
        st.items.clear();
        drop(st);
        self.budget.release(bytes);
        self.drained.notify_waiters();
        self.ready.notify_one();
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

impl Drop for DeliveryQueue {
    fn drop(&mut self) {
        let bytes = self.state.get_mut().map(|st| st.bytes).unwrap_or_else(|p| p.into_inner().bytes);
        self.budget.release(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[test]
    fn stall_then_lag_then_recover() {
        let t0 = Instant::now();
        let q = DeliveryQueue::new(100, Duration::from_secs(10), Budget::new(1000));
        assert_eq!(q.offer(frame(40), t0), Offer::Queued);
        assert_eq!(q.offer(frame(30), t0), Offer::Congested { urgent: false });
        assert_eq!(q.offer(frame(10), t0), Offer::Congested { urgent: true });
        assert!(q.is_congested());
        assert_eq!(q.offer(frame(40), t0), Offer::Dropped(DropReason::Full));
        assert!(!q.is_congested(), "a lagging queue stalls no publisher");
        assert_eq!(q.offer(frame(40), t0), Offer::Dropped(DropReason::Full));

        let mut out = Vec::new();
        let taken = q.take(1000, &mut out);
        assert_eq!((out.len(), taken.lagged, taken.evicted), (3, Some(2), false));
        assert_eq!(q.offer(frame(40), t0), Offer::Queued, "recovered below half");
        assert_eq!(q.take(1000, &mut out).lagged, None, "loss reported once");
    }

    #[test]
    fn lagging_past_the_timeout_evicts() {
        let t0 = Instant::now();
        let q = DeliveryQueue::new(10, Duration::from_secs(1), Budget::new(1000));
        assert_eq!(q.offer(frame(10), t0), Offer::Congested { urgent: true });
        assert_eq!(q.offer(frame(1), t0), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(1), t0 + Duration::from_millis(999)), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(1), t0 + Duration::from_secs(1)), Offer::Dropped(DropReason::Full));
        assert_eq!(q.offer(frame(1), t0 + Duration::from_secs(2)), Offer::Dropped(DropReason::Closed));
        let mut out = Vec::new();
        let taken = q.take(100, &mut out);
        assert!(taken.evicted);
        assert!(out.is_empty(), "an evicted consumer's backlog is released");
        assert_eq!(q.queued_bytes(), 0);
        assert_eq!(taken.lagged, Some(3));
    }

    #[test]
    fn budget_drops_are_reported_but_never_evict() {
        let t0 = Instant::now();
        let budget = Budget::new(10);
        let hog = DeliveryQueue::new(100, Duration::from_secs(1), budget.clone());
        let q = DeliveryQueue::new(100, Duration::from_secs(1), budget);
        assert_eq!(hog.offer(frame(10), t0), Offer::Queued);
        for s in 0..5 {
            assert_eq!(q.offer(frame(1), t0 + Duration::from_secs(s)), Offer::Dropped(DropReason::Budget));
        }
        let taken = q.take(100, &mut Vec::new());
        assert_eq!((taken.lagged, taken.evicted), (Some(5), false));
    }

    #[test]
    fn the_budget_bounds_all_queues_together() {
        let budget = Budget::new(100);
        let a = DeliveryQueue::new(1000, Duration::from_secs(10), budget.clone());
        let b = DeliveryQueue::new(1000, Duration::from_secs(10), budget.clone());
        let now = Instant::now();
        assert_eq!(a.offer(frame(60), now), Offer::Queued);
        assert_eq!(b.offer(frame(60), now), Offer::Dropped(DropReason::Budget));
        assert_eq!(b.offer(frame(40), now), Offer::Queued);
        assert_eq!(budget.used(), 100);
        a.take(1000, &mut Vec::new());
        drop(b);
        assert_eq!(budget.used(), 0, "taking and dropping return the budget");
    }

    #[tokio::test]
    async fn wait_drained_returns_once_below_half() {
        let q = Arc::new(DeliveryQueue::new(100, Duration::from_secs(10), Budget::new(1000)));
        let now = Instant::now();
        q.offer(frame(60), now);
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
