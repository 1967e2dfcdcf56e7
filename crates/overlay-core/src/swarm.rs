//! The swarm driver: runs the I/O-free [`overlay_swarm::Swarm`] for this
//! node. The swarm state sits behind one mutex, taken only for in-memory
//! work (never across `.await`): a relay session hands it what arrives on
//! its link (a swarm frame, a `MSG`), a session or the embedding API what
//! is published here, and the driver's task the due timers. What the swarm
//! asks for is carried out at once without waiting: frames and messages are
//! offered to the links' bounded queues (a control queue and a payload
//! queue per link, so a payload backlog never holds back membership),
//! dials go to the driver task, and local deliveries are made by the caller
//! after the lock is released, so the session whose link brought the
//! message stalls for congested subscribers, as any publisher does.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use oap_codec::{Frame, HEADER_LEN, Kind, Msg, MsgId, NodeAddr, NodeId, Pattern, SwarmFrame};
use overlay_gossip::{Charged, DeliveryQueue, DropReason, Offer, PublishBatch, Registry};
use overlay_swarm::{InEvent, OutEvent, Reorder, Swarm, SwarmEvent, Timer, keeps_dial_of};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Bytes of swarm frames queued per link before more are dropped: many
/// full `IHAVE` batches; a peer this far behind is lagging anyway.
pub(crate) const CONTROL_QUEUE_BYTES: usize = 1 << 20;
/// Dials waiting for the driver task at most (the swarm itself keeps at
/// most 16 in flight).
const DIAL_QUEUE: usize = 64;
/// Swarm links held at most, for a small active view: the links a join,
/// a shuffle or a neighbour request hold open for `link_grace` beside the
/// active ones. Past it an inbound link is refused (`GOAWAY 503`, come back
/// in a second), apart from client sessions' `transport.max_conns`.
const MIN_LINK_CAP: usize = 256;
/// Past [`MIN_LINK_CAP`], links held at most per active-view slot.
const LINKS_PER_ACTIVE: usize = 8;
/// `reconnect_after_ms` in the `GOAWAY` refusing a link over the cap.
pub(crate) const FULL_RETRY_MS: u32 = 1000;

/// Two links of one pair that came up this close together were dialed at
/// once (the simultaneous-dial rule applies); an older one is stale.
const DIAL_RACE: Duration = Duration::from_secs(5);

/// Dials started per second at most, to any addresses: what a forged
/// `SHUFFLE` full of third parties' addresses could make this node do.
const DIALS_PER_SEC: u32 = 32;
/// First pause before an address whose dial failed is dialed again; it
/// doubles with each failure in a row, up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between two dials of one address.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Addresses whose back-off is remembered at most (the soonest due is
/// forgotten first).
const MAX_BACKOFFS: usize = 1024;

/// Paces dials: an address waits out a back-off after each failed dial
/// (jittered within `[d/2, d]`, so restarted peers do not dial in
/// lockstep; a link that comes up clears it), and all dials together stay
/// under [`DIALS_PER_SEC`].
struct DialLimiter {
    /// Per address: not before when, and the next back-off.
    backoff: HashMap<SocketAddr, (Instant, Duration)>,
    /// The current second's start and the dials started in it.
    second: Option<(Instant, u32)>,
    jitter: u64,
}

impl DialLimiter {
    fn new() -> DialLimiter {
        DialLimiter { backoff: HashMap::new(), second: None, jitter: random_u64() | 1 }
    }

    /// Whether `addr` may be dialed at `now` (counting the dial if so).
    fn allow(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.backoff.get(&addr).is_some_and(|(not_before, _)| now < *not_before) {
            return false;
        }
        let (start, started) = self.second.get_or_insert((now, 0));
        if now >= *start + Duration::from_secs(1) {
            (*start, *started) = (now, 0);
        }
        if *started >= DIALS_PER_SEC {
            return false;
        }
        *started += 1;
        true
    }

    /// A dial of `addr` failed at `now`: its back-off grows.
    fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let pause = self.backoff.get(&addr).map_or(BACKOFF_MIN, |(_, next)| *next);
        if self.backoff.len() >= MAX_BACKOFFS
            && !self.backoff.contains_key(&addr)
            && let Some(soonest) = self.backoff.iter().min_by_key(|(_, (at, _))| *at).map(|(a, _)| *a)
        {
            self.backoff.remove(&soonest);
        }
        let at = now + self.spread(pause);
        self.backoff.insert(addr, (at, (pause * 2).min(BACKOFF_MAX)));
    }

    /// `addr` asked not to be dialed before `until` (a `GOAWAY`'s
    /// `reconnect_after_ms`).
    fn hold(&mut self, addr: SocketAddr, until: Instant) {
        let next = self.backoff.get(&addr).map_or(BACKOFF_MIN, |(_, next)| *next);
        let at = self.backoff.get(&addr).map_or(until, |(at, _)| (*at).max(until));
        if self.backoff.len() < MAX_BACKOFFS || self.backoff.contains_key(&addr) {
            self.backoff.insert(addr, (at, next));
        }
    }

    /// A link to `addr` came up: it is dialed freely again.
    fn succeeded(&mut self, addr: SocketAddr) {
        self.backoff.remove(&addr);
    }

    /// Uniform in `[d/2, d]` (xorshift).
    fn spread(&mut self, d: Duration) -> Duration {
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let half = d / 2;
        half + Duration::from_nanos(self.jitter % (half.as_nanos() as u64 + 1))
    }
}

/// What the writer and reader of a swarm link share with the swarm: the
/// control queue, and the signal to close.
#[derive(Debug, Clone)]
pub(crate) struct LinkIo {
    pub(crate) control: Arc<DeliveryQueue>,
    pub(crate) close: CancellationToken,
    /// The id the peer's `NODE` must carry (a dialed TLS link: its
    /// certificate's).
    pub(crate) expect: Option<NodeId>,
}

impl LinkIo {
    /// A control queue that evicts a peer lagging for `slow_after`, as a
    /// payload queue does.
    pub(crate) fn new(slow_after: Duration, expect: Option<NodeId>) -> LinkIo {
        let control = Arc::new(DeliveryQueue::new(CONTROL_QUEUE_BYTES, slow_after));
        LinkIo { control, close: CancellationToken::new(), expect }
    }
}

/// What a relay session gives the swarm to reach its peer.
pub(crate) struct LinkHandle {
    /// The session's id: a link that was replaced reports nothing.
    pub(crate) session: u64,
    /// The socket's remote address.
    pub(crate) remote: SocketAddr,
    /// This node dialed the link.
    pub(crate) dialed: bool,
    /// Where `MSG`s go (bounded in bytes, like a subscriber's).
    pub(crate) payload: Arc<DeliveryQueue>,
    /// Where swarm frames go; its writer takes them first.
    pub(crate) control: Arc<DeliveryQueue>,
    /// Fired to close the link once what is queued is written.
    pub(crate) close: CancellationToken,
    /// Topics the peer's grant lets it receive (empty: every topic).
    pub(crate) filter: Vec<Pattern>,
}

/// What became of a message's payload sends to peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pushed {
    /// Peer queues that took it.
    pub(crate) queued: u32,
    /// Peer queues that dropped it (full, or over the budget).
    pub(crate) dropped: u32,
}

/// Why a link was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refused {
    /// The peer has this node's id: a dial that reached this node itself.
    #[error("the peer is this node (same node id)")]
    Myself,
    /// The pair already keeps another link (the simultaneous-dial rule).
    #[error("the pair keeps another link")]
    Duplicate,
    /// The node holds as many swarm links as it takes.
    #[error("this node holds its maximum of swarm links")]
    Full,
}

/// One peer in [`SwarmStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its node id (hex, first 8 bytes).
    pub node_id: String,
    /// Where it accepts relay links.
    pub addr: SocketAddr,
    /// Seconds its link has been up (active peers).
    pub up_secs: Option<u64>,
    /// `"out"` when this node dialed the link, `"in"` otherwise.
    pub direction: Option<&'static str>,
}

/// The swarm as `/peersz` and [`crate::Overlay::swarm`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwarmStatus {
    /// This node's id (hex, all 32 bytes).
    pub node_id: String,
    /// Where this node says it accepts relay links.
    pub advertised: SocketAddr,
    /// Linked peers that carry the broadcast.
    pub active: Vec<PeerInfo>,
    /// Known addresses kept to replace lost active peers.
    pub passive: Vec<PeerInfo>,
    /// `MSG` frames sent to peers since start.
    pub payload_sent: u64,
    /// Swarm frames sent since start.
    pub control_sent: u64,
    /// Copies of messages already seen, since start.
    pub duplicates: u64,
}

impl SwarmStatus {
    /// The body of `/peersz`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let peers = |list: &[PeerInfo]| -> Vec<serde_json::Value> {
            list.iter()
                .map(|p| {
                    serde_json::json!({
                        "node_id": p.node_id, "addr": p.addr.to_string(),
                        "up_secs": p.up_secs, "direction": p.direction,
                    })
                })
                .collect()
        };
        serde_json::json!({
            "node_id": self.node_id,
            "advertised": self.advertised.to_string(),
            "active": peers(&self.active),
            "passive": peers(&self.passive),
            "payload_sent": self.payload_sent,
            "control_sent": self.control_sent,
            "duplicates": self.duplicates,
        })
    }
}

struct Link {
    handle: LinkHandle,
    node: NodeAddr,
    since: Instant,
}

struct Core {
    swarm: Swarm,
    links: HashMap<NodeId, Link>,
    /// Due time and a sequence number (two timers may share a time).
    timers: BTreeMap<(Instant, u64), Timer>,
    seq: u64,
    /// The last message encoded, shared by the peers it goes to.
    encoded: Option<(MsgId, u8, Charged)>,
    /// Reused for each event's actions.
    scratch: Vec<OutEvent>,
    /// The swarm's duplicates already added to `gossip_duplicates_total`.
    duplicates: u64,
    dials: DialLimiter,
    /// Puts each origin's messages back in publish order before delivery.
    reorder: Reorder,
    /// Every action the swarm asked for, in order (the trace test).
    #[cfg(test)]
    trace: Vec<OutEvent>,
}

/// The node's swarm, shared by its sessions.
pub(crate) struct SwarmDriver {
    id: NodeId,
    core: Mutex<Core>,
    registry: Arc<Registry>,
    max_frame: u32,
    config: overlay_swarm::Config,
    /// Swarm links held at most (inbound ones past it are refused).
    max_links: usize,
    /// Wakes the driver task: a timer due sooner than the one it waits for.
    wake: Notify,
    dials: mpsc::Sender<SocketAddr>,
    active: AtomicUsize,
    metrics: SwarmMetrics,
}

/// The swarm's series, resolved once with the node's `service` label.
struct SwarmMetrics {
    active: Gauge,
    passive: Gauge,
    payload_sent: Counter,
    /// `overlay_swarm_control_sent_total` by frame kind (the swarm's kinds only).
    control_sent: [Option<Counter>; Kind::ALL.len()],
    grafts: Counter,
    prunes: Counter,
    reordered: Counter,
}

impl SwarmMetrics {
    fn new(service: &str) -> SwarmMetrics {
        describe_gauge!(
            "overlay_swarm_active_peers",
            "Peers in the swarm's active view (linked, carrying the broadcast)."
        );
        describe_gauge!("overlay_swarm_passive_peers", "Addresses in the swarm's passive view.");
        describe_counter!("overlay_relay_payload_sent_total", "Payload-carrying frames (MSG) queued to other nodes.");
        describe_counter!("overlay_swarm_control_sent_total", "Swarm frames queued to other nodes, by kind.");
        describe_counter!("overlay_swarm_grafts_total", "GRAFTs sent: messages announced and asked for.");
        describe_counter!("overlay_swarm_prunes_total", "PRUNEs sent: links that left the broadcast tree.");
        describe_counter!(
            "overlay_swarm_reordered_total",
            "Gaps in an origin's messages given up after the reorder window, and messages delivered after later ones."
        );
        let s = || service.to_owned();
        SwarmMetrics {
            active: gauge!("overlay_swarm_active_peers", "service" => s()),
            passive: gauge!("overlay_swarm_passive_peers", "service" => s()),
            payload_sent: counter!("overlay_relay_payload_sent_total", "service" => s()),
            control_sent: Kind::ALL.map(|k| {
                k.is_swarm()
                    .then(|| counter!("overlay_swarm_control_sent_total", "service" => s(), "kind" => k.label()))
            }),
            grafts: counter!("overlay_swarm_grafts_total", "service" => s()),
            prunes: counter!("overlay_swarm_prunes_total", "service" => s()),
            reordered: counter!("overlay_swarm_reordered_total", "service" => s()),
        }
    }

    fn control_sent(&self, kind: Kind) -> Option<&Counter> {
        self.control_sent[kind.index()].as_ref()
    }
}

impl SwarmDriver {
    /// A swarm for node `me` (its address is completed by
    /// [`SwarmDriver::advertise`] once the listener is bound); the receiver
    /// gets the addresses to dial (see [`SwarmDriver::run`]).
    pub(crate) fn new(
        me: NodeAddr,
        config: overlay_swarm::Config,
        registry: Arc<Registry>,
        max_frame: u32,
        reorder_window: Duration,
        service: &str,
    ) -> (Arc<SwarmDriver>, mpsc::Receiver<SocketAddr>) {
        let core = Core {
            reorder: Reorder::new(reorder_window),
            swarm: Swarm::new(me, config.clone(), random_u64()),
            links: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            encoded: None,
            scratch: Vec::new(),
            duplicates: 0,
            dials: DialLimiter::new(),
            #[cfg(test)]
            trace: Vec::new(),
        };
        let (dials, rx) = mpsc::channel(DIAL_QUEUE);
        let driver = SwarmDriver {
            id: me.id,
            max_links: (LINKS_PER_ACTIVE * config.active_view).max(MIN_LINK_CAP),
            config,
            core: Mutex::new(core),
            registry,
            max_frame,
            wake: Notify::new(),
            dials,
            active: AtomicUsize::new(0),
            metrics: SwarmMetrics::new(service),
        };
        (Arc::new(driver), rx)
    }

    /// This node, as its `NODE` frames say.
    pub(crate) fn me(&self) -> NodeAddr {
        *self.lock().swarm.me()
    }

    /// Sets the address this node advertises: called once, when the
    /// listener is bound and before any link or seed (a fresh swarm).
    pub(crate) fn advertise(&self, addr: SocketAddr) {
        self.reset(addr, random_u64());
    }

    fn reset(&self, addr: SocketAddr, seed: u64) {
        let me = NodeAddr { id: self.id, addr };
        self.lock().swarm = Swarm::new(me, self.config.clone(), seed);
    }

    /// Peers in the active view now.
    pub(crate) fn active_peers(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Swarm links up now (in the active view or not yet or no longer).
    pub(crate) fn links(&self) -> usize {
        self.lock().links.len()
    }

    /// Forgets the seed `addr` and closes a link to it.
    pub(crate) fn forget(&self, addr: SocketAddr, now: Instant) {
        let mut core = self.lock();
        self.step(&mut core, InEvent::Forget(addr), now, &mut Vec::new());
        for link in core.links.values().filter(|l| l.node.addr == addr || l.handle.remote == addr) {
            link.handle.close.cancel();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        // Every step leaves the swarm consistent before anything that could
        // panic (the swarm's own code does not unwind mid-update).
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A relay link to `node` finished its identity exchange. The address
    /// it gave is completed with the socket's IP when it said only its port
    /// (a node listening on every interface). Refused when it is this node,
    /// or when the pair keeps another link; a link it replaces is closed.
    pub(crate) fn link_up(&self, mut node: NodeAddr, handle: LinkHandle, now: Instant) -> Result<NodeAddr, Refused> {
        if node.addr.ip().is_unspecified() {
            node.addr.set_ip(handle.remote.ip());
        }
        let dialed = handle.dialed.then_some(handle.remote);
        let mut core = self.lock();
        if let Some(addr) = dialed {
            core.dials.succeeded(addr);
        }
        if node.id == self.id {
            // This node dialed itself (a seed list naming it), or another
            // process runs with this node's id: say which.
            let me = *core.swarm.me();
            if node.addr != me.addr {
                tracing::error!(
                    addr = %node.addr,
                    "another node says it has this node's id: node.id (or a TLS key) shared by two processes"
                );
            }
            drop(core);
            if let Some(addr) = dialed {
                self.dial_failed(addr, now);
            }
            return Err(Refused::Myself);
        }
        if !handle.dialed && !core.links.contains_key(&node.id) && core.links.len() >= self.max_links {
            tracing::warn!(node = %node.id, links = core.links.len(), "swarm link refused: at the link cap");
            return Err(Refused::Full);
        }
        if let Some(old) = core.links.get(&node.id) {
            // Both sides dialed at once (the old link is new too): both keep
            // the link dialed by the node `keeps_dial_of` names. Otherwise
            // (a redial before the old link's end was noticed, a restarted
            // peer) the new link is kept.
            let keeper_is_me = keeps_dial_of(self.id, node.id) == self.id;
            let race = now.saturating_duration_since(old.since) < DIAL_RACE;
            if race && old.handle.dialed != handle.dialed && handle.dialed != keeper_is_me {
                // The new link loses; what its dial was for is served by the old one.
                let node = old.node;
                self.step(&mut core, InEvent::LinkUp { node, dialed }, now, &mut Vec::new());
                return Err(Refused::Duplicate);
            }
        }
        tracing::info!(node = %node.id, addr = %node.addr, direction = direction(handle.dialed), "swarm link up");
        let link = Link { handle, node, since: now };
        if let Some(old) = core.links.insert(node.id, link) {
            old.handle.close.cancel();
        }
        self.step(&mut core, InEvent::LinkUp { node, dialed }, now, &mut Vec::new());
        Ok(node)
    }

    /// The link of `session` to `node` ended.
    pub(crate) fn link_down(&self, node: NodeId, session: u64, now: Instant) {
        let mut core = self.lock();
        if core.links.get(&node).is_none_or(|l| l.handle.session != session) {
            return; // replaced, or refused
        }
        core.links.remove(&node);
        tracing::info!(node = %node, "swarm link down");
        self.step(&mut core, InEvent::LinkDown(node), now, &mut Vec::new());
    }

    /// A dial the swarm asked for did not bring a link up.
    pub(crate) fn dial_failed(&self, addr: SocketAddr, now: Instant) {
        let mut core = self.lock();
        core.dials.failed(addr, now);
        self.step(&mut core, InEvent::DialFailed(addr), now, &mut Vec::new());
    }

    /// The peer this node dialed at `addr` said (`GOAWAY`) when it may be
    /// dialed again: held, for [`BACKOFF_MAX`] at most.
    pub(crate) fn hold_off(&self, addr: SocketAddr, after: Duration, now: Instant) {
        self.lock().dials.hold(addr, now + after.min(BACKOFF_MAX));
    }

    /// The topics the link of `session` to `node` may carry changed (a
    /// refreshed grant).
    pub(crate) fn set_filter(&self, node: NodeId, session: u64, filter: Vec<Pattern>) {
        if let Some(link) = self.lock().links.get_mut(&node).filter(|l| l.handle.session == session) {
            link.handle.filter = filter;
        }
    }

    /// Joins through `seed` (kept: an empty active view rejoins through it).
    pub(crate) fn join(&self, seed: SocketAddr, now: Instant) {
        self.step(&mut self.lock(), InEvent::Join(seed), now, &mut Vec::new());
    }

    /// Leaves the swarm: every active peer is told, and the links close
    /// once that is written.
    pub(crate) fn leave(&self, now: Instant) {
        self.step(&mut self.lock(), InEvent::Leave, now, &mut Vec::new());
    }

    /// A swarm frame arrived on the link of `session` from `from`.
    pub(crate) fn recv(&self, from: NodeId, session: u64, frame: SwarmFrame, now: Instant, batch: &mut PublishBatch) {
        self.event(from, session, InEvent::Recv { from, frame }, now, batch);
    }

    /// A `MSG` (its id checked against its content) arrived on the link of
    /// `session` from `from`.
    pub(crate) fn message(&self, from: NodeId, session: u64, msg: Msg, now: Instant, batch: &mut PublishBatch) {
        self.event(from, session, InEvent::Message { from, msg }, now, batch);
    }

    /// A message entered the overlay here (its local subscribers have it);
    /// returns the peers' queues it went to and those that dropped it.
    pub(crate) fn publish(&self, msg: Msg, now: Instant) -> Pushed {
        self.step(&mut self.lock(), InEvent::Publish(msg), now, &mut Vec::new())
    }

    fn event(&self, from: NodeId, session: u64, event: InEvent, now: Instant, batch: &mut PublishBatch) {
        let mut arrived = Vec::new();
        let mut delivered = Vec::new();
        {
            let mut core = self.lock();
            if core.links.get(&from).is_none_or(|l| l.handle.session != session) {
                return; // a link that lost the simultaneous-dial rule
            }
            self.step(&mut core, event, now, &mut arrived);
            let held = core.reorder.held();
            for msg in arrived {
                core.reorder.push(msg, now, &mut delivered);
            }
            if core.reorder.held() > held {
                // The driver task gives up gaps on time.
                self.wake.notify_one();
            }
            // Delivered under the lock: the order the reorder window set is
            // the order subscribers see, whichever thread releases what.
            // (Lock order: swarm, then registry and queues; nothing takes
            // the swarm lock while holding those.)
            for msg in &delivered {
                self.registry.deliver(msg, now, batch);
            }
        }
    }

    /// Fires the timers due by `now`; returns when the next one is due.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut delivered = Vec::new();
        let mut core = self.lock();
        while let Some(entry) = core.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            self.step(&mut core, InEvent::Timer(timer), now, &mut delivered);
        }
        core.reorder.expire(now, &mut delivered);
        // A peer lagging past the slow-consumer timeout is evicted on time,
        // whether or not more frames come for it (its writer sends GOAWAY 429).
        for link in core.links.values() {
            link.handle.payload.expire(now);
            link.handle.control.expire(now);
        }
        let next = core.timers.first_key_value().map(|(k, _)| k.0);
        let next = match (next, core.reorder.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.metrics.reordered.absolute(core.reorder.reordered());
        let stats = core.swarm.stats();
        let duplicates = stats.duplicates.saturating_sub(std::mem::replace(&mut core.duplicates, stats.duplicates));
        self.metrics.passive.set(core.swarm.passive().len() as f64);
        // Messages held for order whose gap was given up: under the lock, as
        // in `event`.
        let mut batch = PublishBatch::default();
        for msg in &delivered {
            self.registry.deliver(msg, now, &mut batch);
        }
        drop(core);
        self.registry.settle(&mut batch);
        self.registry.count_duplicates(duplicates);
        self.metrics.grafts.absolute(stats.grafts);
        self.metrics.prunes.absolute(stats.prunes);
        next
    }

    /// Runs one event through the swarm and carries out what it asks,
    /// except local deliveries, which go to `delivered`; returns what
    /// became of the payloads it sent.
    fn step(&self, core: &mut Core, event: InEvent, now: Instant, delivered: &mut Vec<Msg>) -> Pushed {
        let mut pushed = Pushed::default();
        let mut out = std::mem::take(&mut core.scratch);
        out.extend(core.swarm.handle(event, now));
        #[cfg(test)]
        core.trace.extend(out.iter().cloned());
        let mut woke = false;
        // Dials the limiter holds back fail at once: the swarm tries
        // another address, or again at its next repair.
        let mut refused = Vec::new();
        let mut rounds = 0;
        loop {
            for action in out.drain(..) {
                match action {
                    OutEvent::Send { to, frame } => self.send_frame(core, to, frame, now),
                    OutEvent::SendMsg { to, msg } => match self.send_msg(core, to, &msg, now) {
                        Some(true) => pushed.queued += 1,
                        Some(false) => pushed.dropped += 1,
                        None => {}
                    },
                    OutEvent::Deliver(msg) => delivered.push(msg),
                    OutEvent::Dial(addr) if !core.dials.allow(addr, now) => refused.push(addr),
                    OutEvent::Dial(addr) => {
                        // The swarm keeps at most 16 dials in flight, so the queue
                        // is full only once the driver task is gone (shutdown);
                        // the swarm gives up a dial never reported back itself.
                        if let Err(e) = self.dials.try_send(addr) {
                            tracing::debug!(%addr, error = %e, "swarm dial not started");
                        }
                    }
                    OutEvent::Disconnect(peer) => {
                        if let Some(link) = core.links.get(&peer) {
                            link.handle.close.cancel();
                        }
                    }
                    OutEvent::ScheduleTimer { after, timer } => {
                        let at = now + after;
                        core.seq += 1;
                        let first = core.timers.first_key_value().is_none_or(|(k, _)| at < k.0);
                        core.timers.insert((at, core.seq), timer);
                        woke |= first;
                    }
                    OutEvent::Event(SwarmEvent::NeighborUp(node)) => {
                        tracing::debug!(node = %node.id, addr = %node.addr, "swarm neighbour up");
                        self.active_changed(core);
                    }
                    OutEvent::Event(SwarmEvent::NeighborDown(id)) => {
                        tracing::debug!(node = %id, "swarm neighbour down");
                        self.active_changed(core);
                    }
                }
            }
            // Each failure takes its address out of the passive view, so this
            // ends; the bound is a guard.
            rounds += 1;
            if refused.is_empty() || rounds > 64 {
                break;
            }
            for addr in refused.drain(..) {
                out.extend(core.swarm.handle(InEvent::DialFailed(addr), now));
            }
        }
        core.scratch = out;
        core.encoded = None;
        if woke {
            self.wake.notify_one();
        }
        pushed
    }

    fn active_changed(&self, core: &Core) {
        let n = core.swarm.active().len();
        self.active.store(n, Ordering::Relaxed);
        self.metrics.active.set(n as f64);
        self.registry.set_relaying(n > 0);
    }

    fn send_frame(&self, core: &Core, to: NodeId, frame: SwarmFrame, now: Instant) {
        let Some(link) = core.links.get(&to) else { return };
        for frame in fit(frame, self.max_frame) {
            let kind = frame.kind();
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            frame.encode_into(&mut buf);
            let charged = self.registry.budget().charge(buf.freeze());
            match charged.map(|c| link.handle.control.offer(c, now)) {
                Some(Offer::Queued | Offer::Congested { .. }) => {
                    if let Some(sent) = self.metrics.control_sent(kind) {
                        sent.increment(1);
                    }
                }
                Some(Offer::Dropped(reason)) => self.registry.note_drop("control", reason),
                None => self.registry.note_drop("control", DropReason::Budget),
            }
        }
    }

    /// Offers `msg` to the link of `to`: whether it was queued, or `None`
    /// when it is not for that peer (no link, or a topic its grant does not
    /// cover).
    fn send_msg(&self, core: &mut Core, to: NodeId, msg: &Msg, now: Instant) -> Option<bool> {
        let link = core.links.get(&to)?;
        if !link.handle.filter.iter().all(|p| p.matches(&msg.topic)) {
            return None;
        }
        let queue = link.handle.payload.clone();
        let fresh = !matches!(&core.encoded, Some((id, hops, _)) if *id == msg.msg_id && *hops == msg.hops);
        if fresh {
            core.encoded =
                self.registry.budget().charge(msg.encode_as(msg.hops)).map(|c| (msg.msg_id, msg.hops, c.into_shared()));
        }
        match core.encoded.as_ref().and_then(|(_, _, c)| c.share()).map(|frame| queue.offer(frame, now)) {
            Some(Offer::Queued | Offer::Congested { .. }) => {
                self.metrics.payload_sent.increment(1);
                Some(true)
            }
            Some(Offer::Dropped(reason)) => {
                self.registry.note_drop("relay", reason);
                Some(false)
            }
            None => {
                self.registry.note_drop("relay", DropReason::Budget);
                Some(false)
            }
        }
    }

    /// The swarm's views and counts now.
    pub(crate) fn status(&self, now: Instant) -> SwarmStatus {
        let core = self.lock();
        let active = core
            .swarm
            .active()
            .iter()
            .map(|n| {
                let link = core.links.get(&n.id);
                PeerInfo {
                    node_id: n.id.to_string(),
                    addr: n.addr,
                    up_secs: link.map(|l| now.saturating_duration_since(l.since).as_secs()),
                    direction: link.map(|l| direction(l.handle.dialed)),
                }
            })
            .collect();
        let passive = core
            .swarm
            .passive()
            .iter()
            .map(|n| PeerInfo { node_id: n.id.to_string(), addr: n.addr, up_secs: None, direction: None })
            .collect();
        let stats = core.swarm.stats();
        SwarmStatus {
            node_id: hex(&self.id),
            advertised: core.swarm.me().addr,
            active,
            passive,
            payload_sent: stats.payload_sent,
            control_sent: stats.control_sent,
            duplicates: stats.duplicates,
        }
    }

    /// The driver task: fires the swarm's timers and hands its dials to
    /// `dial`, until `stop`.
    pub(crate) async fn run(
        self: Arc<SwarmDriver>,
        mut dials: mpsc::Receiver<SocketAddr>,
        dial: impl Fn(SocketAddr),
        stop: CancellationToken,
    ) {
        loop {
            let next = self.fire(tokio_now());
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => return,
                Some(addr) = dials.recv() => dial(addr),
                () = self.wake.notified() => {}
                () = sleep => {}
            }
        }
    }
}

/// The time as the driver's callers take it: the runtime's clock (paused in
/// tests).
pub(crate) fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn direction(dialed: bool) -> &'static str {
    if dialed { "out" } else { "in" }
}

/// All 32 bytes of an id in hex.
pub(crate) fn hex(id: &NodeId) -> String {
    id.0.iter().map(|b| format!("{b:02x}")).collect()
}

/// A frame as one or more frames that each fit `max_frame`: an `IHAVE`
/// batch is split in halves until its parts fit (the swarm builds batches
/// for the largest frame; a node may be configured with 1 KiB ones).
fn fit(frame: SwarmFrame, max_frame: u32) -> Vec<Frame> {
    let frame = Frame::Swarm(frame);
    if frame.encoded_len() - HEADER_LEN <= max_frame as usize {
        return vec![frame];
    }
    match frame {
        Frame::Swarm(SwarmFrame::IHave(mut ids)) if ids.len() > 1 => {
            let rest = ids.split_off(ids.len() / 2);
            let mut parts = fit(SwarmFrame::IHave(ids), max_frame);
            parts.extend(fit(SwarmFrame::IHave(rest), max_frame));
            parts
        }
        other => {
            // A SHUFFLE of 255 IPv6 peers is under 13 KiB: never reached
            // with max_frame >= 1 KiB and the default sample sizes.
            tracing::warn!(kind = %other.kind(), len = other.encoded_len(), "swarm frame over max_frame not sent");
            Vec::new()
        }
    }
}

/// The node id of a TLS node: the SHA-256 of its certificate's public key
/// (DER `SubjectPublicKeyInfo`), so it survives a renewal with the same key.
pub(crate) fn key_id(public_key: &[u8]) -> NodeId {
    use sha2::Digest as _;
    NodeId(sha2::Sha256::digest(public_key).into())
}

/// A random node id (when `node.id` is not configured).
pub(crate) fn random_id() -> NodeId {
    let mut id = [0u8; 32];
    for chunk in id.chunks_mut(8) {
        chunk.copy_from_slice(&random_u64().to_le_bytes());
    }
    NodeId(id)
}

/// Parses 64 hex digits into a node id.
pub(crate) fn parse_id(text: &str) -> Result<NodeId, String> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("64 hex digits".into());
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
    }
    Ok(NodeId(id))
}

/// A random number from std's per-process random hash keys and the time.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher, RandomState};
    let mut h = RandomState::new().build_hasher();
    h.write_u128(crate::auth::wall().as_nanos());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ihave_batches_are_split_to_fit_a_small_max_frame() {
        let ids: Vec<_> = (0..4096u32)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..4].copy_from_slice(&i.to_le_bytes());
                oap_codec::IHave { msg_id: MsgId(id), hops: 1 }
            })
            .collect();
        let parts = fit(SwarmFrame::IHave(ids), 1024);
        assert!(parts.len() > 64, "{}", parts.len());
        let mut total = 0;
        for p in &parts {
            assert!(p.encoded_len() - HEADER_LEN <= 1024);
            let Frame::Swarm(SwarmFrame::IHave(ids)) = p else { panic!("not an IHAVE") };
            total += ids.len();
        }
        assert_eq!(total, 4096);
    }

    #[test]
    fn a_failing_address_waits_a_doubling_jittered_back_off_and_all_dials_a_rate() {
        let mut limiter = DialLimiter::new();
        let a: SocketAddr = "192.0.2.1:9500".parse().unwrap();
        let t0 = Instant::now();
        assert!(limiter.allow(a, t0));
        let mut now = t0;
        for k in 0..8u32 {
            limiter.failed(a, now);
            let (at, _) = limiter.backoff[&a];
            let pause = (BACKOFF_MIN * 2u32.pow(k)).min(BACKOFF_MAX);
            assert!(at - now >= pause / 2 && at - now <= pause, "failure {k}: {:?}", at - now);
            assert!(!limiter.allow(a, at - Duration::from_millis(1)));
            now = at + Duration::from_secs(1);
            assert!(limiter.allow(a, now));
        }
        limiter.succeeded(a);
        assert!(limiter.allow(a, now));
        // All addresses together: DIALS_PER_SEC a second.
        let later = now + Duration::from_secs(5);
        let allowed =
            (0..100u16).filter(|i| limiter.allow(SocketAddr::from(([198, 51, 100, 1], 1000 + i)), later)).count();
        assert_eq!(allowed, DIALS_PER_SEC as usize);
        assert!(limiter.allow(SocketAddr::from(([198, 51, 100, 2], 1)), later + Duration::from_secs(1)));
        // A GOAWAY's reconnect_after_ms is waited out.
        let b: SocketAddr = "192.0.2.2:9500".parse().unwrap();
        let t = later + Duration::from_secs(10);
        limiter.hold(b, t + Duration::from_secs(3));
        assert!(!limiter.allow(b, t + Duration::from_secs(2)));
        assert!(limiter.allow(b, t + Duration::from_secs(3)));
    }

    /// The driver is the swarm and nothing else: the same scripted events,
    /// fed to the driver through its entry points and to a bare `Swarm` (as
    /// the simulator drives it) with the same seed and times, ask for the
    /// same actions in the same order.
    #[test]
    fn the_driver_asks_for_what_the_bare_swarm_asks_for() {
        use bytes::Bytes;
        use oap_codec::{IHave, Priority, Topic};

        let node = |n: u8| NodeAddr { id: NodeId([n; 32]), addr: SocketAddr::from(([10, 0, 0, n], 9500)) };
        let registry = Arc::new(Registry::new(overlay_gossip::GossipConfig::default(), "trace"));
        let config = overlay_swarm::Config::default();
        let (driver, _dials) =
            SwarmDriver::new(node(1), config.clone(), registry, oap_codec::MAX_FRAME, Duration::ZERO, "trace");
        driver.reset(node(1).addr, 7);
        let mut bare = Swarm::new(node(1), config, 7);
        let handle = |session: u64, remote: SocketAddr, dialed: bool| LinkHandle {
            session,
            remote,
            dialed,
            payload: Arc::new(DeliveryQueue::new(1 << 20, Duration::from_secs(10))),
            control: Arc::new(DeliveryQueue::new(1 << 20, Duration::from_secs(10))),
            close: CancellationToken::new(),
            filter: Vec::new(),
        };
        let msg = |n: u8, hops: u8| Msg {
            topic: Topic::new(Bytes::from_static(b"t")).unwrap(),
            msg_id: MsgId([n; 16]),
            hops,
            payload: Bytes::from_static(b"x"),
        };
        let t0 = tokio_now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut batch = PublishBatch::default();
        let mut expected = Vec::new();
        let mut bare_on = |event: InEvent, now: Instant| expected.extend(bare.handle(event, now));

        // A seed dialed and linked; a peer links in and joins; a neighbour
        // request; a publish; a message relayed in; an announcement that
        // is asked for after its timer; a peer lost.
        driver.join(node(2).addr, at(0));
        bare_on(InEvent::Join(node(2).addr), at(0));
        assert!(driver.link_up(node(2), handle(1, node(2).addr, true), at(1)).is_ok());
        bare_on(InEvent::LinkUp { node: node(2), dialed: Some(node(2).addr) }, at(1));
        assert!(driver.link_up(node(3), handle(2, node(3).addr, false), at(2)).is_ok());
        bare_on(InEvent::LinkUp { node: node(3), dialed: None }, at(2));
        driver.recv(node(3).id, 2, SwarmFrame::Join, at(3), &mut batch);
        bare_on(InEvent::Recv { from: node(3).id, frame: SwarmFrame::Join }, at(3));
        let neighbor = SwarmFrame::Neighbor { priority: Priority::High };
        driver.recv(node(2).id, 1, neighbor.clone(), at(4), &mut batch);
        bare_on(InEvent::Recv { from: node(2).id, frame: neighbor }, at(4));
        driver.publish(msg(9, 0), at(5));
        bare_on(InEvent::Publish(msg(9, 0)), at(5));
        driver.message(node(2).id, 1, msg(8, 1), at(6), &mut batch);
        bare_on(InEvent::Message { from: node(2).id, msg: msg(8, 1) }, at(6));
        let ihave = SwarmFrame::IHave(vec![IHave { msg_id: MsgId([7; 16]), hops: 2 }]);
        driver.recv(node(3).id, 2, ihave.clone(), at(7), &mut batch);
        bare_on(InEvent::Recv { from: node(3).id, frame: ihave }, at(7));
        // Due by 300 ms: the IHAVE batch (55 ms), then the GRAFT (207 ms).
        driver.fire(at(300));
        bare_on(InEvent::Timer(Timer::IHave), at(300));
        bare_on(InEvent::Timer(Timer::Graft(MsgId([7; 16]))), at(300));
        driver.link_down(node(3).id, 2, at(301));
        bare_on(InEvent::LinkDown(node(3).id), at(301));

        let traced = std::mem::take(&mut driver.lock().trace);
        assert!(expected.len() > 10, "a trace worth comparing: {expected:?}");
        assert_eq!(traced, expected);
    }

    #[test]
    fn node_ids_parse_from_64_hex_digits_only() {
        let text = "00".repeat(31) + "ff";
        assert_eq!(parse_id(&text).unwrap().0[31], 0xff);
        assert!(parse_id("abc").is_err());
        assert!(parse_id(&"zz".repeat(32)).is_err());
        assert_ne!(random_id(), random_id());
    }
}
