//! The registry: who subscribes to what, and the fanout of one message to
//! every local subscriber through their bounded queues. Messages reach other
//! nodes through the swarm (overlay-swarm), which hands what it receives
//! back here with [`Registry::deliver`].

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oap_codec::{HEADER_LEN, Msg, MsgId, Pattern, Topic};

use crate::metrics::GossipMetrics;
use crate::msgid::MsgIdGen;
use crate::queue::{Budget, Charged, DeliveryQueue, DropReason, Offer};
use crate::trie::Trie;

/// Identifies a subscriber (a session or an in-process subscription).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberId(u64);

/// Bounds and knobs, fixed when the registry is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// Bytes queued per subscriber (or relay link) before deliveries are dropped.
    pub delivery_queue_bytes: usize,
    /// Bytes queued across every queue before deliveries are dropped.
    pub max_pending_bytes: usize,
    /// Lagging longer than this evicts a subscriber (`GOAWAY 429`).
    pub slow_consumer_timeout: Duration,
    /// Patterns one subscriber may hold.
    pub max_subscriptions: usize,
    /// Largest frame `len`; a message whose `MSG` would exceed it is refused.
    pub max_frame: u32,
}

impl Default for GossipConfig {
    fn default() -> GossipConfig {
        GossipConfig {
            delivery_queue_bytes: 8 << 20,
            max_pending_bytes: 256 << 20,
            slow_consumer_timeout: Duration::from_secs(10),
            max_subscriptions: 1024,
            max_frame: oap_codec::MAX_FRAME,
        }
    }
}

/// Why a subscription was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The subscriber already holds `max_subscriptions` patterns.
    #[error("max_subscriptions ({0}) reached")]
    TooMany(usize),
    /// The subscriber is not attached (it left).
    #[error("unknown subscriber")]
    Unknown,
}

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Its `MSG` frame would exceed `max_frame`.
    #[error("message of {payload} bytes on this topic exceeds max_frame (at most {max} payload bytes)")]
    TooLarge {
        /// The payload length given.
        payload: usize,
        /// The largest payload that fits on this topic.
        max: usize,
    },
}

/// What one publish did.
#[derive(Debug, Clone)]
pub struct Fanout {
    /// The message id.
    pub msg_id: MsgId,
    /// Subscriber queues it was handed to.
    pub queued: u32,
    /// Queues that dropped it (full, or over the budget). Consumers that
    /// were leaving (closed or evicted) count in neither.
    pub dropped: u32,
    /// Its id binds its content, so it may leave this node: hand it to the
    /// swarm (see [`Registry::set_relaying`]).
    pub relay: bool,
}

/// A fanout in progress: its report, and where congested queues go.
struct Out<'a> {
    fanout: Fanout,
    batch: &'a mut PublishBatch,
}

/// Entries gathered before a publisher must stall anyway: bounds the list
/// (and the work to settle it) when many queues congest at once.
const MAX_GATHERED: usize = 64;

/// What a run of one publisher's messages (a read batch) leaves to do: the
/// queues they left more than half full, so the publisher stalls once for
/// the run (spec section 4), and at once when one passes three quarters; and
/// the counts for the metrics, added by [`Registry::settle`].
#[derive(Debug, Default)]
pub struct PublishBatch {
    queues: Vec<Arc<DeliveryQueue>>,
    /// The gathered queues' addresses: one publish may congest thousands
    /// of queues, and each must be found in constant time.
    gathered: HashSet<usize, BuildHasherDefault<IdHasher>>,
    urgent: bool,
    ingress: u64,
    fanout: u64,
}

impl PublishBatch {
    /// No congested queue gathered.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// The publisher should stall before its next message: a queue passed
    /// three quarters, or many distinct queues were gathered.
    pub fn is_urgent(&self) -> bool {
        self.urgent || self.queues.len() >= MAX_GATHERED
    }

    /// The gathered queues, each once.
    pub fn queues(&self) -> &[Arc<DeliveryQueue>] {
        &self.queues
    }

    /// Forgets the congested queues gathered (keeps the allocation).
    pub fn clear(&mut self) {
        self.queues.clear();
        self.gathered.clear();
        self.urgent = false;
    }

    fn add(&mut self, queue: &Arc<DeliveryQueue>, urgent: bool) {
        // Each queue once. An address is a fair key: the Arc kept in
        // `queues` keeps it from being reused while gathered.
        if self.gathered.insert(Arc::as_ptr(queue) as usize) {
            self.queues.push(queue.clone());
        }
        self.urgent |= urgent;
    }
}

thread_local! {
    /// Subscribers matched by the current fanout: one buffer per thread,
    /// reused, instead of an allocation per message.
    static MATCHED: std::cell::RefCell<Vec<SubscriberId>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Default)]
struct Index {
    trie: Trie,
    /// Distinct patterns held, with how many subscribers hold each: what
    /// the node tells its swarm it is interested in.
    interest: HashMap<Pattern, u32>,
    /// Bumped each time `interest` gains or loses a pattern.
    interest_epoch: u64,
    subscribers: HashMap<SubscriberId, Subscriber, BuildHasherDefault<IdHasher>>,
}

impl Index {
    /// One more subscriber holds `p`; whether the set of patterns grew.
    fn gain(&mut self, p: &Pattern) -> bool {
        let n = self.interest.entry(p.clone()).or_insert(0);
        *n += 1;
        let new = *n == 1;
        self.interest_epoch += u64::from(new);
        new
    }

    /// One less subscriber holds `p`; whether the set of patterns shrank.
    fn lose(&mut self, p: &Pattern) -> bool {
        let Some(n) = self.interest.get_mut(p) else { return false };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        self.interest.remove(p);
        self.interest_epoch += 1;
        true
    }
}

struct Subscriber {
    queue: Arc<DeliveryQueue>,
    patterns: Vec<Pattern>,
}

/// Distinct patterns a node tells its swarm at most: past it, every topic.
pub const MAX_INTEREST: usize = 256;

/// Topic registry and fanout. Shared behind an `Arc`; its locks are held
/// only for in-memory work, never across `.await`.
pub struct Registry {
    cfg: GossipConfig,
    index: RwLock<Index>,
    ids: MsgIdGen,
    budget: &'static Budget,
    next_id: AtomicU64,
    metrics: GossipMetrics,
    dropped: AtomicU64,
    /// The node has swarm peers: what is published here leaves it.
    relaying: AtomicBool,
    /// Called (outside the lock) when the set of distinct patterns changed.
    on_interest: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl Registry {
    /// An empty registry whose metrics carry `service`.
    pub fn new(cfg: GossipConfig, service: &str) -> Registry {
        Registry {
            budget: Budget::new(cfg.max_pending_bytes),
            index: RwLock::default(),
            ids: MsgIdGen::new(),
            next_id: AtomicU64::new(1),
            metrics: GossipMetrics::new(service),
            dropped: AtomicU64::new(0),
            relaying: AtomicBool::new(false),
            on_interest: std::sync::OnceLock::new(),
            cfg,
        }
    }

    /// The bounds this registry applies.
    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// The process-wide byte budget every queue draws on.
    pub fn budget(&self) -> &'static Budget {
        self.budget
    }

    /// A fresh queue with this registry's bounds, not yet attached.
    pub fn queue(&self) -> Arc<DeliveryQueue> {
        Arc::new(DeliveryQueue::new(self.cfg.delivery_queue_bytes, self.cfg.slow_consumer_timeout))
    }

    /// Registers a subscriber that receives into `queue`.
    pub fn attach(&self, queue: Arc<DeliveryQueue>) -> SubscriberId {
        let id = SubscriberId(self.next_id.fetch_add(1, Ordering::Relaxed));
        self.write().subscribers.insert(id, Subscriber { queue, patterns: Vec::new() });
        id
    }

    /// Removes a subscriber and all its patterns; its queue is closed.
    pub fn detach(&self, id: SubscriberId) {
        let mut index = self.write();
        let mut changed = false;
        if let Some(sub) = index.subscribers.remove(&id) {
            for p in &sub.patterns {
                index.trie.remove(p, id);
                changed |= index.lose(p);
            }
            self.metrics.subscribers.set(index.trie.len() as f64);
            sub.queue.close();
        }
        drop(index);
        self.interest_changed(changed);
    }

    /// Adds `pattern` for `id`; `Ok(false)` when it already held it.
    pub fn subscribe(&self, id: SubscriberId, pattern: &Pattern) -> Result<bool, SubscribeError> {
        let mut index = self.write();
        let Index { trie, subscribers, .. } = &mut *index;
        let sub = subscribers.get_mut(&id).ok_or(SubscribeError::Unknown)?;
        if sub.patterns.contains(pattern) {
            return Ok(false);
        }
        if sub.patterns.len() >= self.cfg.max_subscriptions {
            return Err(SubscribeError::TooMany(self.cfg.max_subscriptions));
        }
        sub.patterns.push(pattern.clone());
        trie.insert(pattern, id);
        self.metrics.subscribers.set(trie.len() as f64);
        let changed = index.gain(pattern);
        drop(index);
        self.interest_changed(changed);
        Ok(true)
    }

    /// Drops `pattern` for `id`; false when it did not hold it.
    pub fn unsubscribe(&self, id: SubscriberId, pattern: &Pattern) -> bool {
        let mut index = self.write();
        let Index { trie, subscribers, .. } = &mut *index;
        let Some(sub) = subscribers.get_mut(&id) else { return false };
        let Some(at) = sub.patterns.iter().position(|p| p == pattern) else { return false };
        sub.patterns.swap_remove(at);
        trie.remove(pattern, id);
        self.metrics.subscribers.set(trie.len() as f64);
        let changed = index.lose(pattern);
        drop(index);
        self.interest_changed(changed);
        true
    }

    /// The distinct patterns this node's subscribers hold, with a number
    /// that changes each time that set does; `None` for the patterns when
    /// there are more than [`MAX_INTEREST`] (the swarm then says every
    /// topic).
    pub fn interest(&self) -> (u64, Option<Vec<Pattern>>) {
        let index = self.read();
        let patterns = (index.interest.len() <= MAX_INTEREST).then(|| index.interest.keys().cloned().collect());
        (index.interest_epoch, patterns)
    }

    /// Calls `f` (without the registry's lock held) each time the set of
    /// distinct patterns changes; one callback per registry, the first set.
    pub fn on_interest_change(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_interest.set(Box::new(f));
    }

    fn interest_changed(&self, changed: bool) {
        if let Some(f) = self.on_interest.get().filter(|_| changed) {
            f();
        }
    }

    /// Patterns `id` holds.
    pub fn patterns(&self, id: SubscriberId) -> Vec<Pattern> {
        self.read().subscribers.get(&id).map(|s| s.patterns.clone()).unwrap_or_default()
    }

    /// How many subscribers a message on `topic` would reach (each once).
    pub fn interested(&self, topic: &Topic) -> usize {
        let mut matched = Vec::new();
        self.read().trie.matches(topic, &mut matched);
        matched.len()
    }

    /// Deliveries dropped so far (full queues and budget), for shed rates.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Publishes the bytes queued across all queues to
    /// `overlay_queue_depth{queue="delivery"}`; consumers call it after taking.
    pub fn note_pending(&self) {
        self.metrics.pending_bytes.set(self.budget.used() as f64);
    }

    /// Closes every subscriber's queue: consumers see the end.
    pub fn close_all(&self) {
        self.read().subscribers.values().for_each(|s| s.queue.close());
    }

    /// Evicts every subscriber that has lagged past the slow-consumer
    /// timeout by `now` (see [`DeliveryQueue::expire`]), so the timeout is a
    /// deadline, not a check made on the next offer. Returns how many were
    /// evicted. (Relay links' queues are the swarm driver's to sweep.)
    pub fn sweep(&self, now: Instant) -> usize {
        self.read().subscribers.values().filter(|s| s.queue.expire(now)).count()
    }

    /// Counts `n` more copies of messages the swarm had seen
    /// (`gossip_duplicates_total`).
    pub fn count_duplicates(&self, n: u64) {
        self.metrics.duplicates.increment(n);
    }

    /// Counts a frame `queue` dropped (`overlay_queue_dropped_total{queue,reason}`,
    /// `gossip_dropped_total{reason}`, and the shed rate unless its consumer
    /// was leaving): `delivery` (subscribers), `relay` (messages to other
    /// nodes) or `control` (the swarm's own frames).
    pub fn note_drop(&self, queue: &'static str, reason: DropReason) {
        if reason != DropReason::Closed {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        self.metrics.dropped(queue, reason);
    }

    /// Whether the node has swarm peers (its driver says so as its active
    /// view fills and empties): the ids of messages published meanwhile bind
    /// their content, and [`Fanout::relay`] says to hand them on.
    pub fn set_relaying(&self, relaying: bool) {
        self.relaying.store(relaying, Ordering::Relaxed);
    }

    /// Whether `id` is one this node issued (its own message, or a forgery
    /// of one).
    pub fn issued(&self, id: &MsgId) -> bool {
        self.ids.issued(id)
    }

    /// Whether the node has swarm peers now (see [`Registry::set_relaying`]).
    pub fn is_relaying(&self) -> bool {
        self.relaying.load(Ordering::Relaxed)
    }

    /// Publishes a message that entered at this node: a new msg id, `hops`
    /// 0 to local subscribers ([`Fanout::relay`] says whether to hand it to
    /// the swarm). Queues left more
    /// than half full are added to `batch`: the publisher stalls briefly on
    /// them before it reads more (at once when it [`PublishBatch::is_urgent`]);
    /// its counts reach the metrics at [`Registry::settle`].
    pub fn publish(
        &self,
        topic: &Topic,
        payload: Bytes,
        now: Instant,
        batch: &mut PublishBatch,
    ) -> Result<Fanout, PublishError> {
        self.check_size(topic, &payload)?;
        batch.ingress += 1;
        // An id binds its content for the nodes that check it on receipt; a
        // message published while the node has no swarm peer never leaves
        // it, and its digest is left zero, which saves hashing every payload
        // on a single node.
        let relay = self.relaying.load(Ordering::Relaxed);
        let msg_id = if relay { self.ids.next_id(topic, &payload) } else { self.ids.next_local_id() };
        let msg = Msg { topic: topic.clone(), msg_id, hops: 0, payload };
        Ok(Fanout { relay, ..self.fan_out(&self.read(), &msg, now, batch) })
    }

    /// Takes a message the swarm delivers (it dropped the copies it had
    /// seen, and its sender checked that the id binds the content) to the
    /// local subscribers with its `hops`. `None` for this node's own message
    /// coming back.
    pub fn deliver(&self, msg: &Msg, now: Instant, batch: &mut PublishBatch) -> Option<Fanout> {
        if self.ids.issued(&msg.msg_id) {
            self.metrics.duplicates.increment(1);
            return None;
        }
        batch.ingress += 1;
        Some(self.fan_out(&self.read(), msg, now, batch))
    }

    /// Adds what `batch` counted (`gossip_ingress_total`,
    /// `gossip_fanout_total`) to the metrics; call it when a run of publishes
    /// ends (a read batch, or one in-process publish).
    pub fn settle(&self, batch: &mut PublishBatch) {
        // Frames no queue kept were dropped on this thread.
        crate::queue::settle_releases();
        if batch.ingress > 0 {
            self.metrics.ingress.increment(std::mem::take(&mut batch.ingress));
        }
        if batch.fanout > 0 {
            self.metrics.fanout.increment(std::mem::take(&mut batch.fanout));
        }
    }

    fn fan_out(&self, index: &Index, msg: &Msg, now: Instant, batch: &mut PublishBatch) -> Fanout {
        let mut out = Out { fanout: Fanout { msg_id: msg.msg_id, queued: 0, dropped: 0, relay: false }, batch };
        MATCHED.with_borrow_mut(|matched| {
            matched.clear();
            index.trie.matches(&msg.topic, matched);
            let queues = matched.iter().filter_map(|id| index.subscribers.get(id).map(|s| &s.queue));
            self.offer_all(queues, || encode(msg, msg.hops), now, &mut out);
        });
        // `overlay_queue_depth` is refreshed by the consumers after taking and
        // by the node's sampler, not once per message; the counters are added
        // by `settle`, once per batch.
        out.batch.fanout += u64::from(out.fanout.queued);
        out.fanout
    }

    /// Offers one frame, encoded only if some queue wants it, to every queue.
    /// It is charged to the budget once for all of them (its clones share
    /// one count); when it does not fit, every queue misses it.
    fn offer_all<'q>(
        &self,
        queues: impl Iterator<Item = &'q Arc<DeliveryQueue>>,
        encode: impl FnOnce() -> Bytes,
        now: Instant,
        out: &mut Out<'_>,
    ) {
        let mut queues = queues.into_iter();
        let Some(mut queue) = queues.next() else { return };
        let Some(frame) = self.budget.charge(encode()) else {
            for queue in std::iter::once(queue).chain(queues) {
                let reason = if queue.miss() { DropReason::Budget } else { DropReason::Closed };
                self.count_drop(reason, out);
            }
            return;
        };
        let Some(mut next) = queues.next() else {
            // One queue (the common 1 -> 1 case): the frame as it is.
            return self.offer(queue, frame, now, out);
        };
        let frame = frame.into_shared();
        loop {
            if let Some(share) = frame.share() {
                self.offer(queue, share, now, out);
            }
            queue = next;
            match queues.next() {
                Some(after) => next = after,
                None => break,
            }
        }
        // The last queue takes the charge itself: one reference count less.
        self.offer(queue, frame, now, out);
    }

    fn count_drop(&self, reason: DropReason, out: &mut Out<'_>) {
        if reason != DropReason::Closed {
            out.fanout.dropped += 1;
        }
        self.note_drop("delivery", reason);
    }

    fn offer(&self, queue: &Arc<DeliveryQueue>, frame: Charged, now: Instant, out: &mut Out<'_>) {
        let fanout = &mut out.fanout;
        match queue.offer(frame, now) {
            Offer::Queued => fanout.queued += 1,
            Offer::Congested { urgent } => {
                fanout.queued += 1;
                out.batch.add(queue, urgent);
            }
            Offer::Dropped(reason) => self.count_drop(reason, out),
        }
    }

    fn check_size(&self, topic: &Topic, payload: &Bytes) -> Result<(), PublishError> {
        // MSG len = kind + topic length byte + topic + msg_id + hops + payload.
        let overhead = 1 + 1 + topic.as_bytes().len() + 16 + 1;
        let max = (self.cfg.max_frame as usize).saturating_sub(overhead);
        if payload.len() > max {
            return Err(PublishError::TooLarge { payload: payload.len(), max });
        }
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        // Index updates complete before anything that could panic.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MSG` frame for `msg` with `hops`, encoded once and shared by every
/// queue it goes to.
fn encode(msg: &Msg, hops: u8) -> Bytes {
    let frame = msg.encode_as(hops);
    debug_assert!(frame.len() > HEADER_LEN);
    frame
}

/// Hashes [`SubscriberId`]s, which this registry hands out in sequence, and
/// queue addresses (never a peer's input, so no flooding of one bucket to
/// fear): one multiply instead of SipHash on every delivery's lookup.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
