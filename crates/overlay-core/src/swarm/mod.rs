//! The swarm driver: runs the I/O-free [`overlay_swarm::Swarm`] for this
//! node. The swarm state sits behind one mutex, taken only for in-memory
//! work (never across `.await`): a relay session hands it what arrives on
//! its link (a swarm frame, a `MSG`), a session or the embedding API what
//! is published here, and the driver's task the due timers. What the swarm
//! asks for is carried out at once without waiting: frames and messages are
//! offered to the links' bounded queues (a control queue and a payload
//! queue per link, so a payload backlog never holds back membership),
//! dials go to the driver task, and local deliveries are made under the
//! lock (in the order the reorder window set), on the caller's publish
//! batch, so the session whose link brought the message stalls for
//! congested subscribers, as any publisher does.
//!
//! Beside it: `outbox` (frames and messages onto the links' queues), `dial`
//! (pacing), `link` (what a link shares with the driver, and the status it
//! reports), `id` (node ids), `metrics`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use oap_codec::{Msg, MsgId, NodeAddr, NodeId, Pattern, SwarmFrame};
use overlay_gossip::{Charged, PublishBatch, Registry};
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
/// Addresses found to be this node remembered at most.
const MAX_MYSELF: usize = 64;

mod dial;
mod id;
mod link;
mod metrics;
mod outbox;
#[cfg(test)]
mod tests;

pub(crate) use id::{hex, key_id, parse_id, random_id};
pub(crate) use link::{LinkHandle, LinkIo, Pushed, Refused};
pub use link::{PeerInfo, SwarmStatus};

use dial::{BACKOFF_MAX, DialLimiter};
use id::random_u64;
use metrics::SwarmMetrics;
#[cfg(test)]
use outbox::fit;

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
    /// Addresses dialed that turned out to be this node.
    myself: std::collections::BTreeSet<SocketAddr>,
    /// Puts each origin's messages back in publish order before delivery.
    reorder: Reorder,
    /// The registry's interest epoch the swarm was last told.
    fed_interest: Option<u64>,
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
    /// Fires when the swarm is alone and rejoins (names among the seeds
    /// are resolved again).
    pub(crate) alone: Notify,
    dials: mpsc::Sender<SocketAddr>,
    active: AtomicUsize,
    metrics: SwarmMetrics,
    /// The swarm is told this node's subscriptions (`swarm.interest`).
    interest: AtomicBool,
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
            dials: DialLimiter::new(random_u64()),
            myself: std::collections::BTreeSet::new(),
            fed_interest: None,
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
            alone: Notify::new(),
            dials,
            active: AtomicUsize::new(0),
            metrics: SwarmMetrics::new(service),
            interest: AtomicBool::new(false),
        };
        (Arc::new(driver), rx)
    }

    /// Routes by interest (`swarm.interest`): the swarm is told what this
    /// node's subscribers want and tells its peers (OAP-1 section 5.2).
    /// Until then it wants every topic, and the broadcast is PlumTree's.
    pub(crate) fn route_by_interest(self: &Arc<SwarmDriver>) {
        // A subscription that changes what the node wants is told to the
        // swarm at once, on the subscribing thread (no lock held there), so
        // a widened summary is queued to the peers before the `SUB`'s `ACK`
        // is written.
        let weak = Arc::downgrade(self);
        self.registry.on_interest_change(move || {
            if let Some(driver) = weak.upgrade() {
                driver.feed_interest(tokio_now());
            }
        });
        self.interest.store(true, Ordering::Relaxed);
        self.feed_interest(tokio_now());
    }

    /// Tells the swarm what this node's subscribers (sessions' and
    /// in-process) want, when that changed since it was last told.
    fn feed_interest(&self, now: Instant) {
        if !self.interest.load(Ordering::Relaxed) {
            return;
        }
        // Read before the swarm lock is taken (lock order: swarm, then
        // registry; the registry's is not held here).
        let (epoch, patterns) = self.registry.interest();
        let mut core = self.lock();
        if core.fed_interest != Some(epoch) {
            core.fed_interest = Some(epoch);
            self.step(&mut core, InEvent::Interest(patterns), now, &mut Vec::new());
        }
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
        let mut core = self.lock();
        core.swarm = Swarm::new(me, self.config.clone(), seed);
        core.fed_interest = None;
        drop(core);
        // A fresh swarm wants every topic until told otherwise.
        self.feed_interest(tokio_now());
    }

    /// Every seed turned out to be this node (a one-node cluster whose
    /// seed list, a DNS name, names only itself): alone, and joined all the
    /// same.
    pub(crate) fn seeds_are_me(&self, seeds: &[SocketAddr]) -> bool {
        let core = self.lock();
        let me = core.swarm.me().addr;
        !seeds.is_empty() && seeds.iter().all(|s| *s == me || core.myself.contains(s))
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
            if let Some(addr) = dialed
                && core.myself.len() < MAX_MYSELF
            {
                core.myself.insert(addr);
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
        let topics = handle.filter.clone();
        let link = Link { handle, node, since: now };
        if let Some(old) = core.links.insert(node.id, link) {
            old.handle.close.cancel();
        }
        self.step(&mut core, InEvent::LinkUp { node, dialed }, now, &mut Vec::new());
        // Always, also empty: a link that replaced a restricted one of the
        // same peer lifts its restriction.
        self.step(&mut core, InEvent::Restrict { peer: node.id, topics }, now, &mut Vec::new());
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
    pub(crate) fn set_filter(&self, node: NodeId, session: u64, filter: Vec<Pattern>, now: Instant) {
        let mut core = self.lock();
        let Some(link) = core.links.get_mut(&node).filter(|l| l.handle.session == session) else { return };
        link.handle.filter = filter.clone();
        self.step(&mut core, InEvent::Restrict { peer: node, topics: filter }, now, &mut Vec::new());
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

    /// A message this node published came back on the link of `session`
    /// from `from`: a duplicate (the link leaves this node's tree).
    pub(crate) fn echo(&self, from: NodeId, session: u64, id: MsgId, now: Instant, batch: &mut PublishBatch) {
        self.event(from, session, InEvent::Echo { from, id }, now, batch);
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
            if !accepts(&core, from, session, &event) {
                return;
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
        while let Some(timer) = next_due(&mut core, now) {
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
        self.metrics.flood_edges.set(core.swarm.flood_edges() as f64);
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
        self.metrics.refused_grafts.absolute(stats.grafts_refused);
        self.metrics.refused_admissions.absolute(stats.admissions_refused);
        next
    }

    /// Fires the first timer due by `now` alone, and says which (the trace
    /// tests: timers due at one instant interleave with other events).
    #[cfg(test)]
    fn fire_one(&self, now: Instant) -> Option<Timer> {
        let mut core = self.lock();
        let timer = next_due(&mut core, now)?;
        self.step(&mut core, InEvent::Timer(timer), now, &mut Vec::new());
        Some(timer)
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
                    OutEvent::SendMsg { to, msg, flood } => match self.send_msg(core, to, &msg, flood, now) {
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
                    OutEvent::Event(SwarmEvent::Alone) => self.alone.notify_one(),
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

/// Whether the swarm takes `event`, which arrived on the link of `session`
/// from `from`. A link that is not the pair's current one (the loser of a
/// simultaneous dial, or a link replaced while the peer still sends on it)
/// still brings messages and the tree's frames (`IHAVE`, `GRAFT`, `PRUNE`,
/// `INTEREST`):
/// those are about the peer, not the link, and a payload dropped here
/// would be lost for good (its sender counted it sent, so no `IHAVE`
/// follows, and no duplicate means no `PRUNE` to stop the next ones).
/// Membership frames count only on the current link: a `DISCONNECT` on
/// the old link must not end the new one.
fn accepts(core: &Core, from: NodeId, session: u64, event: &InEvent) -> bool {
    match event {
        InEvent::Message { .. } | InEvent::Echo { .. } => true,
        InEvent::Recv {
            frame: SwarmFrame::IHave(_) | SwarmFrame::Graft(_) | SwarmFrame::Prune(_) | SwarmFrame::Interest { .. },
            ..
        } => core.links.contains_key(&from),
        _ => core.links.get(&from).is_some_and(|l| l.handle.session == session),
    }
}

/// Takes the first timer out of `core` if it is due by `now` (timers due
/// at one instant fire in the order they were set).
fn next_due(core: &mut Core, now: Instant) -> Option<Timer> {
    let entry = core.timers.first_entry()?;
    (entry.key().0 <= now).then(|| entry.remove())
}

/// The time as the driver's callers take it: the runtime's clock (paused in
/// tests).
pub(crate) fn tokio_now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn direction(dialed: bool) -> &'static str {
    if dialed { "out" } else { "in" }
}
