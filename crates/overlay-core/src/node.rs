//! The node: starts the admin plane and the transport, hands each connection
//! to a session, and runs the shutdown choreography.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use oap_codec::{Caps, Msg, MsgId, NodeAddr, Pattern, Topic, TopicError};
use overlay_admin::{
    AdminConfig, AdminError, AdminHandle, AdminState, Readiness, VersionInfo, detached_recorder, gate, install_recorder,
};
use overlay_gossip::{PublishBatch, Registry};
use ron_transport::fd::ConnCap;
use ron_transport::tls::{self, PqMode, TlsError};
use ron_transport::{BindError, DisconnectReason, TransportConfig, TransportHandle, spawn_transport_with_cancel};
use rustls::ClientConfig;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{AuthPolicy, RootKeyError, load_root_key};
use crate::config::{ConfigError, OverlayConfig, Peer, PeerAddr, ValidConfig};
use crate::events::OverlayEvent;
use crate::handler::{DataHandler, Echo};
use crate::metrics::OverlayMetrics;
use crate::peer;
use crate::readiness::Sampler;
use crate::seeds::Seeds;
use crate::session::{self, Dialed, Limits, Meta, SessionCtx};
use crate::subscription::Subscription;
use crate::swarm::{self, SwarmDriver, SwarmStatus};

/// The readiness gate of `tls.pq = require`.
const PQ_READY: &str = "pq_ready";
/// Node events buffered for slow subscribers before they lag.
const EVENT_CAPACITY: usize = 1024;
/// Ids of outbound relay sessions start here, apart from accepted ones.
const OUTBOUND_IDS: u64 = 1 << 63;

/// Why [`Overlay::subscribe`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The pattern breaks OAP-1 section 3.
    #[error("bad pattern: {0}")]
    Pattern(#[from] TopicError),
    /// The registry refused it.
    #[error("{0}")]
    Registry(#[from] overlay_gossip::SubscribeError),
}

/// Why [`Overlay::publish`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic breaks OAP-1 section 3 (or has wildcards).
    #[error("bad topic: {0}")]
    Topic(#[from] TopicError),
    /// The message would not fit a frame.
    #[error("{0}")]
    TooLarge(#[from] overlay_gossip::PublishError),
}

/// Why [`Overlay::add_peer`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddPeerError {
    /// A TLS node dials peers with TLS only, and has no `tls.ca` to check them.
    #[error("not dialing {0}: tls.enabled needs tls.ca to dial peers")]
    NoTlsTrust(PeerAddr),
    /// The node is shutting down.
    #[error("not dialing {0}: the node is shutting down")]
    Draining(PeerAddr),
}

/// What one publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishReceipt {
    /// The id assigned to the message.
    pub msg_id: MsgId,
    /// Subscriber queues and relay links it was handed to.
    pub queued: u32,
    /// Queues that dropped it.
    pub dropped: u32,
}

/// Time given to sessions to stop after the drain deadline fired the kill token.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The config breaks a documented range.
    #[error("invalid config: {0}")]
    Config(#[from] ConfigError),
    /// The data-plane listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The admin plane could not be started.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The root key file was refused.
    #[error(transparent)]
    RootKey(#[from] RootKeyError),
    /// A TLS file was missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl StartError {
    /// True when the configuration itself is at fault (a bad value, a
    /// refused root key file, a missing or unusable TLS file), as opposed to
    /// the environment (a port in use): the binary exits 2 for these.
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::Config(_) | StartError::RootKey(_) | StartError::Tls(_))
    }
}

/// Options for [`Overlay::builder`].
pub struct OverlayBuilder {
    config: Result<ValidConfig, ConfigError>,
    handler: Arc<dyn DataHandler>,
    version: VersionInfo,
    recorder: Option<bool>,
}

impl OverlayBuilder {
    /// Installs the `DATA` handler; the default echoes.
    pub fn data_handler(mut self, handler: impl DataHandler) -> OverlayBuilder {
        self.handler = Arc::new(handler);
        self
    }

    /// The program name and version `/version` and `overlay_build_info` report.
    pub fn version(mut self, name: &str, version: &str) -> OverlayBuilder {
        self.version = VersionInfo::new(name, version);
        self
    }

    /// Whether the node installs its Prometheus recorder as the process's
    /// global `metrics` recorder. Default: when the admin plane is on (its
    /// `/metrics` renders that recorder). An embedding service that installs
    /// its own recorder says `false`: the node's series then go to the
    /// embedder's recorder, and the node's own `/metrics` (if served) shows
    /// only the frame-size histograms.
    pub fn install_metrics_recorder(mut self, install: bool) -> OverlayBuilder {
        self.recorder = Some(install);
        self
    }

    /// Binds, spawns and returns the running node.
    pub async fn start(self) -> Result<Overlay, StartError> {
        let config = self.config?;
        let install = self.recorder.unwrap_or(config.admin.enabled);
        Overlay::launch(config, self.handler, self.version, install).await
    }
}

/// A running node. Cheap to clone; every clone controls the same node.
///
/// Dropping the handles does not stop the node: call [`Overlay::shutdown`],
/// after which no task of the node is left running.
#[derive(Clone)]
pub struct Overlay {
    inner: Arc<Inner>,
}

struct Inner {
    config: ValidConfig,
    readiness: Readiness,
    ctx: Arc<SessionCtx>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    outbound_ids: Arc<AtomicU64>,
    tls_client: Option<Arc<ClientConfig>>,
    running: Mutex<Option<Running>>,
    stopped: CancellationToken,
}

struct Running {
    transport: TransportHandle,
    admin: Option<AdminHandle>,
}

impl Overlay {
    /// Validates `config`, binds, spawns, and returns the running node.
    pub async fn start(config: OverlayConfig) -> Result<Overlay, StartError> {
        Overlay::builder(config).start().await
    }

    /// A node with options; `config` is validated at `start`.
    pub fn builder(config: OverlayConfig) -> OverlayBuilder {
        OverlayBuilder {
            config: config.validate(),
            handler: Arc::new(Echo),
            version: VersionInfo::new("overlay-core", env!("CARGO_PKG_VERSION")),
            recorder: None,
        }
    }

    /// A node from a config already validated (with its sources).
    pub fn from_valid(config: ValidConfig) -> OverlayBuilder {
        OverlayBuilder { config: Ok(config), ..Overlay::builder(OverlayConfig::default()) }
    }

    async fn launch(
        config: ValidConfig,
        handler: Arc<dyn DataHandler>,
        mut version: VersionInfo,
        install_recorder_globally: bool,
    ) -> Result<Overlay, StartError> {
        let service = config.transport.name.clone();
        // With TLS the id is the certificate's (its public key's SHA-256):
        // the handshake proves it to every node that dials this one.
        let node_id = match (&config.tls.cert, config.tls.enabled) {
            (Some(cert), true) => swarm::key_id(&ron_transport::tls::leaf_public_key("tls.cert", cert)?),
            _ => config.node_id().unwrap_or_else(swarm::random_id),
        };
        version.node_id = Some(swarm::hex(&node_id));
        let auth = match &config.auth.root_key_file {
            Some(path) => Some(AuthPolicy { root_key: load_root_key(path)?, required: config.auth.required }),
            None => None,
        };
        let pq = config.pq();
        // A TLS node with a CA proves its id both ways: the nodes it dials
        // check its certificate, and it checks theirs (a dialing node
        // presents its own certificate as a client certificate).
        let (ca, cert, key) = (config.tls.ca.as_deref(), config.tls.cert.as_deref(), config.tls.key.as_deref());
        let tls_server = match (cert, key) {
            (Some(cert), Some(key)) if config.tls.enabled => Some(tls::server_config(cert, key, ca, pq)?),
            _ => None,
        };
        let node_certs = tls_server.is_some() && ca.is_some();
        let tls_client = match (ca, cert, key) {
            (Some(ca), Some(cert), Some(key)) if config.tls.enabled => {
                Some(tls::client_config_with_cert(ca, cert, key, pq)?)
            }
            (Some(ca), _, _) => Some(tls::client_config(ca, pq)?),
            _ => None,
        };
        let mut gates = vec![gate::LISTENERS_BOUND, gate::METRICS_BOUND, gate::CFG_LOADED, gate::DRAINING];
        gates.extend(Sampler::gates(config.readiness.min_peers as usize, !config.peers.is_empty()));
        if pq == PqMode::Require {
            gates.push(PQ_READY);
        }
        let readiness = Readiness::new(&gates);
        if pq == PqMode::Require {
            // Ready only when the provider can negotiate a hybrid group.
            readiness.set(PQ_READY, tls::supports_hybrid(&tls::provider(pq)));
        }
        let cap = session_cap(&config)?;
        let recorder = if install_recorder_globally { install_recorder() } else { detached_recorder() };
        let metrics = OverlayMetrics::new(&service);
        metrics.build_info(&version.version, &version.git);

        // The admin plane comes up first, so /readyz answers 503 while the
        // data plane binds.
        let registry = Arc::new(Registry::new(config.gossip().clone(), &service));
        let me = NodeAddr { id: node_id, addr: config.transport.addr };
        let (swarm, dials) = SwarmDriver::new(
            me,
            config.swarm().clone(),
            registry.clone(),
            config.oap.max_frame,
            config.reorder_window(),
            &service,
        );
        if config.swarm.interest {
            swarm.route_by_interest();
        }
        let admin = if config.admin.enabled {
            let status = Arc::downgrade(&swarm);
            let state = AdminState {
                readiness: readiness.clone(),
                version,
                configz: Arc::new(configz(&config, cap)),
                metrics: recorder,
                service: service.as_str().into(),
                peersz: Some(Arc::new(move || match status.upgrade() {
                    Some(swarm) => swarm.status(swarm::tokio_now()).to_json(),
                    None => serde_json::Value::Null,
                })),
            };
            Some(AdminHandle::start(AdminConfig { addr: config.admin.addr, service: service.as_str().into() }, state)?)
        } else {
            readiness.set(gate::METRICS_BOUND, true);
            None
        };
        readiness.set(gate::CFG_LOADED, true);
        readiness.set(gate::DRAINING, true);

        let ctx = Arc::new(SessionCtx {
            limits: Limits {
                // Every hello says what this node is: clients negotiate
                // pub/sub, other nodes (PEER_V1 on both sides) a relay link.
                caps: Caps::GOSSIP_V1
                    | Caps::PUBSUB_V1
                    | Caps::PEER_V1
                    | Caps::SWARM_V1
                    | if auth.is_some() { Caps::AUTH_V1 } else { Caps::empty() },
                max_frame: config.oap.max_frame,
                handshake_timeout: config.handshake_timeout(),
                read_timeout: config.read_timeout(),
                write_timeout: config.write_timeout(),
                idle_timeout: config.idle_timeout(),
                tx_queue: config.session.tx_queue as usize,
                tx_watermark: config.session.tx_watermark as usize,
                drain_window_ms: u32::try_from(config.drain_timeout_ms).unwrap_or(u32::MAX),
                publish_stall: config.publish_stall(),
                node_certs,
            },
            metrics,
            handler,
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            tasks: TaskTracker::new(),
            links: TaskTracker::new(),
            registry,
            events: broadcast::channel(EVENT_CAPACITY).0,
            auth,
            seeds: Arc::new(Seeds::new(swarm.clone())),
            swarm,
        });
        let transport_cfg = TransportConfig {
            addr: config.transport.addr,
            name: service.as_str().into(),
            max_conns: config.transport.max_conns as usize,
            fd_reserve: config.transport.fd_reserve as usize,
            handshake_timeout: config.handshake_timeout(),
            tls: tls_server,
        };
        let session_ctx = ctx.clone();
        let accept = move |conn: ron_transport::Conn| {
            let meta =
                Meta { id: conn.id(), peer: conn.peer_addr(), opened: conn.opened(), tls: conn.tls(), dialed: false };
            // A client certificate (a dialing node's) proves the id its
            // `NODE` must say.
            let proven = conn.peer_public_key().map(|k| swarm::key_id(&k));
            let credential = proven.map(|id| Box::new(Dialed { token: None, expect: Some(id) }));
            let ctx = session_ctx.clone();
            // Boxed once here: every async step below that takes the
            // connection by value would otherwise keep its own copy of it
            // (a few hundred bytes each) in the session's future.
            let conn = Box::new(conn);
            async move { session::run(conn, meta, ctx, credential).await.reason }
        };
        let transport = match spawn_transport_with_cancel(transport_cfg, accept).await {
            Ok(t) => t,
            Err(e) => {
                if let Some(admin) = admin {
                    admin.stop().await;
                }
                return Err(e.into());
            }
        };
        readiness.set(gate::LISTENERS_BOUND, true);
        ctx.swarm.advertise(config.swarm.advertise_addr.unwrap_or(transport.addr));
        forward_events(&transport, &ctx);
        let sampler = Sampler {
            ctx: ctx.clone(),
            readiness: readiness.clone(),
            period: Duration::from_millis(config.readiness.sample_ms),
            shed_rate_max: config.readiness.shed_rate_max as f64,
            min_peers: config.readiness.min_peers as usize,
            joins: !config.peers.is_empty(),
            rejected: transport.rejected(),
            load: transport.load(),
            service: service.clone(),
        };
        ctx.tasks.spawn(sampler.start(ctx.kill.clone()));
        let admin_addr = admin.as_ref().map(AdminHandle::addr);
        let admin_field = admin_addr.map_or_else(|| "disabled".to_string(), |a| a.to_string());
        tracing::info!(
            addr = %transport.addr,
            admin_addr = %admin_field,
            node = %node_id,
            advertised = %ctx.swarm.me().addr,
            "overlay node started"
        );
        let outbound_ids = Arc::new(AtomicU64::new(OUTBOUND_IDS));
        spawn_swarm(&ctx, dials, outbound_ids.clone(), tls_client.clone(), &config);
        ctx.tasks.spawn(ctx.seeds.clone().follow(ctx.drain.clone()));
        let node = Overlay {
            inner: Arc::new(Inner {
                readiness,
                ctx,
                local_addr: transport.addr,
                admin_addr,
                outbound_ids,
                tls_client,
                running: Mutex::new(Some(Running { transport, admin })),
                stopped: CancellationToken::new(),
                config,
            }),
        };
        for peer in node.inner.config.peers.clone() {
            // Validation refused configs that would be refused here (a TLS
            // node with peers and no tls.ca); say so if that ever changes.
            if let Err(e) = node.add_peer(peer) {
                tracing::error!(error = %e, "configured peer not dialed");
            }
        }
        Ok(node)
    }

    /// The bound data-plane address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The bound admin address, when the admin plane is enabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// The config the node runs with.
    pub fn config(&self) -> &ValidConfig {
        &self.inner.config
    }

    /// The readiness gates behind `/readyz`.
    pub fn readiness(&self) -> &Readiness {
        &self.inner.readiness
    }

    /// Session and relay-link events.
    pub fn events(&self) -> broadcast::Receiver<OverlayEvent> {
        self.inner.ctx.events.subscribe()
    }

    /// Subscribes in-process to `pattern` (`*` and a trailing `>` allowed).
    /// The subscription has a delivery queue with the same bounds as a
    /// session's; dropping it unsubscribes.
    pub fn subscribe(&self, pattern: &str) -> Result<Subscription, SubscribeError> {
        let pattern: Pattern = pattern.parse()?;
        let registry = &self.inner.ctx.registry;
        let queue = registry.queue();
        let id = registry.attach(queue.clone());
        let subscription = Subscription::new(id, queue, registry.clone());
        registry.subscribe(id, &pattern)?;
        Ok(subscription)
    }

    /// Publishes `payload` on `topic` to every subscriber, local and remote.
    /// Never blocks: a full subscriber queue drops and counts.
    pub fn publish(&self, topic: &str, payload: impl Into<Bytes>) -> Result<PublishReceipt, PublishError> {
        let topic: Topic = topic.parse()?;
        // In-process publishers do not stall: congestion is left to the queues.
        let ctx = &self.inner.ctx;
        let mut batch = PublishBatch::default();
        let payload = payload.into();
        let now = swarm::tokio_now();
        let copy = ctx.registry.is_relaying().then(|| payload.clone());
        let f = ctx.registry.publish(&topic, payload, now, &mut batch)?;
        ctx.registry.settle(&mut batch);
        let mut receipt = PublishReceipt { msg_id: f.msg_id, queued: f.queued, dropped: f.dropped };
        if let Some(payload) = copy
            && f.relay
        {
            let pushed = ctx.swarm.publish(Msg { topic, msg_id: f.msg_id, hops: 0, payload }, now);
            receipt.queued += pushed.queued;
            receipt.dropped += pushed.dropped;
        }
        Ok(receipt)
    }

    /// Joins the overlay through a node (an address, or a [`Peer`] with the
    /// `op = relay` token it requires): a seed. One reachable seed is
    /// enough; the swarm keeps the seeds and rejoins through them whenever
    /// its active view empties, until [`Overlay::remove_peer`] or shutdown.
    /// Adding a seed again changes nothing.
    pub fn add_peer(&self, peer: impl Into<Peer>) -> Result<(), AddPeerError> {
        let peer = peer.into();
        if self.inner.tls_client.is_none() && self.inner.config.tls.enabled {
            // Never send a relay token or traffic in clear from a TLS node.
            return Err(AddPeerError::NoTlsTrust(peer.addr().clone()));
        }
        if self.inner.ctx.drain.is_cancelled() {
            return Err(AddPeerError::Draining(peer.addr().clone()));
        }
        let seeds = self.inner.ctx.seeds.clone();
        if seeds.add(peer.clone()) {
            // A name: resolved in the background (and again at each rejoin).
            let stop = self.inner.ctx.drain.clone();
            self.inner.ctx.tasks.spawn(async move { seeds.resolve(Some(&peer), &stop).await });
        }
        Ok(())
    }

    /// Forgets the seed `addr`: the swarm no longer joins through it nor
    /// keeps it as a passive peer, and a link to it is closed (the swarm
    /// replaces it from its passive view). False when `addr` was no seed.
    pub fn remove_peer(&self, addr: SocketAddr) -> bool {
        self.inner.ctx.seeds.remove(addr)
    }

    /// The seeds' addresses: configured peers and [`Overlay::add_peer`]s
    /// (a `dns:` seed's, once resolved).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.inner.ctx.seeds.addrs()
    }

    /// The swarm now: this node's id, its active and passive views, counts.
    pub fn swarm(&self) -> SwarmStatus {
        self.inner.ctx.swarm.status(swarm::tokio_now())
    }

    /// Serves one OAP/1 session over a stream the embedder accepted itself
    /// (or an in-memory one: tests, fuzzing), as if the node's listener had
    /// accepted it from `peer`; returns why it ended. It follows the node's
    /// drain like any session, but is not counted against the session cap.
    pub async fn serve<S>(&self, io: S, peer: SocketAddr) -> DisconnectReason
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + session::Reset + Unpin + Send + 'static,
    {
        let id = self.inner.outbound_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let meta = Meta { id, peer, opened: Instant::now(), tls: None, dialed: false };
        session::run(io, meta, self.inner.ctx.clone(), None).await.reason
    }

    /// Relay links up now (both directions).
    pub fn peers_connected(&self) -> usize {
        self.inner.ctx.swarm.links()
    }

    /// Resolves once a shutdown has completed.
    pub async fn stopped(&self) {
        self.inner.stopped.cancelled().await;
    }

    /// The shutdown choreography. Idempotent, and safe to cancel: it runs
    /// on a task of its own, and every call waits for that task to finish.
    pub async fn shutdown(&self) {
        let running = self.inner.running.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(running) = running {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                inner.drain(running).await;
                inner.stopped.cancel();
            });
        }
        self.stopped().await;
    }
}

impl Inner {
    async fn drain(&self, running: Running) {
        let Running { mut transport, admin } = running;
        let ctx = &self.ctx;
        let drain = self.config.drain_timeout();
        tracing::info!(drain_ms = drain.as_millis() as u64, "shutdown: draining");

        // 1. /readyz goes 503 with `draining`; the accept loop stops.
        self.readiness.set(gate::DRAINING, false);
        transport.cancel.cancel();

        // 2. The swarm's peers are told this node leaves (so they do not
        //    redial it); every session, accepted or dialed, gets GOAWAY 503
        //    and flushes, bounded by drain_timeout_ms; dials stop.
        ctx.swarm.leave(swarm::tokio_now());
        ctx.drain.cancel();
        ctx.links.close();
        let sessions = async {
            let _ = (&mut transport.task).await;
            ctx.links.wait().await;
        };
        let drained = tokio::time::timeout(drain, sessions).await.is_ok();

        // 3. Past the deadline, stop what is left; await every task.
        if !drained {
            tracing::warn!(live = transport.live_connections(), "drain deadline passed; closing remaining sessions");
            ctx.kill.cancel();
            if tokio::time::timeout(KILL_GRACE, &mut transport.task).await.is_err() {
                tracing::error!(
                    live = transport.live_connections(),
                    "sessions ignored the kill; aborting the accept loop"
                );
                transport.task.abort();
            }
        }
        ctx.kill.cancel();
        ctx.registry.close_all();
        ctx.tasks.close();
        let rest = async {
            ctx.links.wait().await;
            ctx.tasks.wait().await;
        };
        if tokio::time::timeout(KILL_GRACE, rest).await.is_err() {
            tracing::error!(left = ctx.tasks.len(), "node tasks still running after the kill");
        }
        self.readiness.set(gate::LISTENERS_BOUND, false);
        if let Some(admin) = admin {
            admin.stop().await;
        }
        tracing::info!(drained, "shutdown complete");
    }
}

/// The sessions this process can serve at once:
/// `min(transport.max_conns, RLIMIT_NOFILE - transport.fd_reserve)`; a
/// reserve that leaves none is a config error naming the key.
fn session_cap(config: &ValidConfig) -> Result<ConnCap, ConfigError> {
    let t = &config.transport;
    ConnCap::new(t.max_conns as usize, t.fd_reserve as usize).map_err(|e| ConfigError::OutOfRange {
        key: "transport.fd_reserve",
        value: t.fd_reserve.to_string(),
        range: format!("16..={} under RLIMIT_NOFILE {}", e.nofile.saturating_sub(1), e.nofile),
    })
}

/// `/configz`: the effective config, and the session cap it comes to here.
fn configz(config: &ValidConfig, cap: ConnCap) -> serde_json::Value {
    let mut z = config.configz();
    z["effective"] = serde_json::json!({
        "transport.max_conns": {
            "value": cap.cap,
            "limited_by": if cap.fd_bound() { "fd_limit" } else { "max_conns" },
            "rlimit_nofile": cap.nofile,
        }
    });
    z
}

/// Starts the swarm's driver task: it fires the swarm's timers and dials what
/// the swarm asks for (a seed with its own token and TLS name, any other
/// address with `swarm.token` and `tls.peer_name`), until the drain.
fn spawn_swarm(
    ctx: &Arc<SessionCtx>,
    dials: tokio::sync::mpsc::Receiver<SocketAddr>,
    ids: Arc<AtomicU64>,
    tls: Option<Arc<ClientConfig>>,
    config: &ValidConfig,
) {
    let (token, name, tls_enabled) = (config.swarm.token.clone(), config.tls.peer_name.clone(), config.tls.enabled);
    let dialer = ctx.clone();
    let dial = move |addr: SocketAddr| {
        if tls_enabled && tls.is_none() {
            // A TLS node without tls.ca sends nothing in clear, and cannot
            // check a peer's certificate: it takes inbound links only.
            tracing::warn!(%addr, "not dialing: tls.enabled needs tls.ca to dial peers");
            return dialer.swarm.dial_failed(addr, swarm::tokio_now());
        }
        // A seed's own token and TLS name, else the swarm's.
        let seed = dialer.seeds.get(addr);
        let token = seed.as_ref().and_then(|p| p.token().map(str::to_owned)).or_else(|| token.clone());
        let name = match &seed {
            Some(seed) => Some(seed.tls_name()),
            None => name.clone(),
        };
        let peer = Peer::Detailed { addr: addr.into(), token, name };
        dialer.links.spawn(peer::dial(addr, peer, dialer.clone(), ids.clone(), tls.clone()));
    };
    ctx.tasks.spawn(ctx.swarm.clone().run(dials, dial, ctx.drain.clone()));
}

/// Copies transport events into the node's event stream until the kill.
fn forward_events(transport: &TransportHandle, ctx: &Arc<SessionCtx>) {
    let mut from = transport.events.subscribe();
    let ctx = ctx.clone();
    ctx.tasks.clone().spawn(async move {
        loop {
            let event = tokio::select! {
                biased;
                () = ctx.kill.cancelled() => return,
                e = from.recv() => e,
            };
            match event {
                Ok(e) => {
                    let _ = ctx.events.send(OverlayEvent::Session(e));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => tracing::debug!(missed = n, "event forwarder lagged"),
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
