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
use oap_codec::{Frame, HEADER_LEN, Msg, MsgId, NodeAddr, NodeId, Pattern, SwarmFrame};
use overlay_gossip::{Charged, DeliveryQueue, Offer, PublishBatch, Registry};
use overlay_swarm::{InEvent, OutEvent, Swarm, SwarmEvent, Timer, keeps_dial_of};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Bytes of swarm frames queued per link before more are dropped: many
/// full `IHAVE` batches; a peer this far behind is lagging anyway.
pub(crate) const CONTROL_QUEUE_BYTES: usize = 1 << 20;
/// Dials waiting for the driver task at most (the swarm itself keeps at
/// most 16 in flight).
const DIAL_QUEUE: usize = 64;

/// What the writer and reader of a swarm link share with the swarm: the
/// control queue, and the signal to close.
#[derive(Debug, Clone)]
pub(crate) struct LinkIo {
    pub(crate) control: Arc<DeliveryQueue>,
    pub(crate) close: CancellationToken,
}

impl LinkIo {
    /// A control queue that evicts a peer lagging for `slow_after`, as a
    /// payload queue does.
    pub(crate) fn new(slow_after: Duration) -> LinkIo {
        LinkIo {
            control: Arc::new(DeliveryQueue::new(CONTROL_QUEUE_BYTES, slow_after)),
            close: CancellationToken::new(),
        }
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
}

/// The node's swarm, shared by its sessions.
pub(crate) struct SwarmDriver {
    id: NodeId,
    core: Mutex<Core>,
    registry: Arc<Registry>,
    max_frame: u32,
    config: overlay_swarm::Config,
    /// Wakes the driver task: a timer due sooner than the one it waits for.
    wake: Notify,
    dials: mpsc::Sender<SocketAddr>,
    active: AtomicUsize,
    metrics: SwarmMetrics,
}

#[derive(Clone)]
struct SwarmMetrics {
    active: Gauge,
    passive: Gauge,
    payload_sent: Counter,
    control_sent: Counter,
    duplicates: Counter,
    grafts: Counter,
    prunes: Counter,
    dropped_control: Counter,
    dropped_payload: Counter,
}

impl SwarmMetrics {
    fn new(service: &str) -> SwarmMetrics {
        describe_gauge!(
            "overlay_swarm_active_peers",
            "Peers in the swarm's active view (linked, carrying the broadcast)."
        );
        describe_gauge!("overlay_swarm_passive_peers", "Addresses in the swarm's passive view.");
        describe_counter!("overlay_swarm_sent_total", "Frames the swarm sent to peers, by kind (payload: MSG).");
        describe_counter!("overlay_swarm_duplicates_total", "Copies of messages the swarm had seen already.");
        describe_counter!("overlay_swarm_grafts_total", "GRAFTs sent: messages announced and asked for.");
        describe_counter!("overlay_swarm_prunes_total", "PRUNEs sent: links that left the broadcast tree.");
        describe_counter!("overlay_swarm_dropped_total", "Frames to a peer dropped (its queue full), by queue.");
        let s = || service.to_owned();
        SwarmMetrics {
            active: gauge!("overlay_swarm_active_peers", "service" => s()),
            passive: gauge!("overlay_swarm_passive_peers", "service" => s()),
            payload_sent: counter!("overlay_swarm_sent_total", "service" => s(), "kind" => "payload"),
            control_sent: counter!("overlay_swarm_sent_total", "service" => s(), "kind" => "control"),
            duplicates: counter!("overlay_swarm_duplicates_total", "service" => s()),
            grafts: counter!("overlay_swarm_grafts_total", "service" => s()),
            prunes: counter!("overlay_swarm_prunes_total", "service" => s()),
            dropped_control: counter!("overlay_swarm_dropped_total", "service" => s(), "queue" => "control"),
            dropped_payload: counter!("overlay_swarm_dropped_total", "service" => s(), "queue" => "payload"),
        }
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
        service: &str,
    ) -> (Arc<SwarmDriver>, mpsc::Receiver<SocketAddr>) {
        let core = Core {
            swarm: Swarm::new(me, config.clone(), random_u64()),
            links: HashMap::new(),
            timers: BTreeMap::new(),
            seq: 0,
            encoded: None,
            scratch: Vec::new(),
        };
        let (dials, rx) = mpsc::channel(DIAL_QUEUE);
        let driver = SwarmDriver {
            id: me.id,
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
        let me = NodeAddr { id: self.id, addr };
        self.lock().swarm = Swarm::new(me, self.config.clone(), random_u64());
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
        if node.id == self.id {
            drop(core);
            if let Some(addr) = dialed {
                self.dial_failed(addr, now);
            }
            return Err(Refused::Myself);
        }
        if let Some(old) = core.links.get(&node.id) {
            // Both sides dialed at once: both keep the link dialed by the
            // node `keeps_dial_of` names. Two links dialed by the same side
            // (a redial before the old link's end was noticed): the new one.
            let keeper_is_me = keeps_dial_of(self.id, node.id) == self.id;
            if old.handle.dialed != handle.dialed && handle.dialed != keeper_is_me {
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
        self.step(&mut self.lock(), InEvent::DialFailed(addr), now, &mut Vec::new());
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
        let mut delivered = Vec::new();
        {
            let mut core = self.lock();
            if core.links.get(&from).is_none_or(|l| l.handle.session != session) {
                return; // a link that lost the simultaneous-dial rule
            }
            self.step(&mut core, event, now, &mut delivered);
        }
        for msg in &delivered {
            self.registry.deliver(msg, now, batch);
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
        let next = core.timers.first_key_value().map(|(k, _)| k.0);
        let stats = core.swarm.stats();
        self.metrics.passive.set(core.swarm.passive().len() as f64);
        drop(core);
        let m = &self.metrics;
        m.payload_sent.absolute(stats.payload_sent);
        m.control_sent.absolute(stats.control_sent);
        m.duplicates.absolute(stats.duplicates);
        m.grafts.absolute(stats.grafts);
        m.prunes.absolute(stats.prunes);
        // Timers deliver nothing (a GRAFT only asks); kept for the rule.
        let mut batch = PublishBatch::default();
        for msg in &delivered {
            self.registry.deliver(msg, now, &mut batch);
        }
        self.registry.settle(&mut batch);
        next
    }

    /// Runs one event through the swarm and carries out what it asks,
    /// except local deliveries, which go to `delivered`; returns what
    /// became of the payloads it sent.
    fn step(&self, core: &mut Core, event: InEvent, now: Instant, delivered: &mut Vec<Msg>) -> Pushed {
        let mut pushed = Pushed::default();
        let mut out = std::mem::take(&mut core.scratch);
        out.extend(core.swarm.handle(event, now));
        let mut woke = false;
        for action in out.drain(..) {
            match action {
                OutEvent::Send { to, frame } => self.send_frame(core, to, frame, now),
                OutEvent::SendMsg { to, msg } => match self.send_msg(core, to, &msg, now) {
                    true => pushed.queued += 1,
                    false => pushed.dropped += 1,
                },
                OutEvent::Deliver(msg) => delivered.push(msg),
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
            let mut buf = BytesMut::with_capacity(frame.encoded_len());
            frame.encode_into(&mut buf);
            let offered = self.registry.budget().charge(buf.freeze()).map(|c| link.handle.control.offer(c, now));
            if !matches!(offered, Some(Offer::Queued | Offer::Congested { .. })) {
                self.metrics.dropped_control.increment(1);
            }
        }
    }

    /// Offers `msg` to the link of `to`; false when it was dropped.
    fn send_msg(&self, core: &mut Core, to: NodeId, msg: &Msg, now: Instant) -> bool {
        let Some(link) = core.links.get(&to) else { return false };
        if !link.handle.filter.iter().all(|p| p.matches(&msg.topic)) {
            return true; // the peer's grant does not cover the topic: not for it
        }
        let queue = link.handle.payload.clone();
        let fresh = !matches!(&core.encoded, Some((id, hops, _)) if *id == msg.msg_id && *hops == msg.hops);
        if fresh {
            core.encoded =
                self.registry.budget().charge(msg.encode_as(msg.hops)).map(|c| (msg.msg_id, msg.hops, c.into_shared()));
        }
        let offered = core.encoded.as_ref().and_then(|(_, _, c)| c.share()).map(|frame| queue.offer(frame, now));
        let queued = matches!(offered, Some(Offer::Queued | Offer::Congested { .. }));
        if !queued {
            self.metrics.dropped_payload.increment(1);
        }
        queued
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
    fn node_ids_parse_from_64_hex_digits_only() {
        let text = "00".repeat(31) + "ff";
        assert_eq!(parse_id(&text).unwrap().0[31], 0xff);
        assert!(parse_id("abc").is_err());
        assert!(parse_id(&"zz".repeat(32)).is_err());
        assert_ne!(random_id(), random_id());
    }
}
