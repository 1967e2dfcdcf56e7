//! The node: starts the admin plane and the transport, hands each connection
//! to a session, and runs the shutdown choreography.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use oap_codec::Caps;
use overlay_admin::{AdminConfig, AdminError, AdminHandle, AdminState, Readiness, VersionInfo, gate, install_recorder};
use ron_transport::{BindError, TransportConfig, TransportEvent, TransportHandle, spawn_transport_with_cancel};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigError, OverlayConfig, ValidConfig};
use crate::handler::{DataHandler, Echo};
use crate::metrics::OverlayMetrics;
use crate::session::{self, Limits, SessionCtx};

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
}

/// Options for [`Overlay::builder`].
pub struct OverlayBuilder {
    config: Result<ValidConfig, ConfigError>,
    handler: Arc<dyn DataHandler>,
    version: VersionInfo,
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

    /// Binds, spawns and returns the running node.
    pub async fn start(self) -> Result<Overlay, StartError> {
        Overlay::launch(self.config?, self.handler, self.version).await
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
    events: broadcast::Sender<TransportEvent>,
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
        }
    }

    /// A node from a config already validated (with its sources).
    pub fn from_valid(config: ValidConfig) -> OverlayBuilder {
        OverlayBuilder { config: Ok(config), ..Overlay::builder(OverlayConfig::default()) }
    }

    async fn launch(
        config: ValidConfig,
        handler: Arc<dyn DataHandler>,
        version: VersionInfo,
    ) -> Result<Overlay, StartError> {
        let service = config.transport.name.clone();
        let readiness = Readiness::new(&[gate::LISTENERS_BOUND, gate::METRICS_BOUND, gate::CFG_LOADED, gate::DRAINING]);
        let recorder = install_recorder();
        let metrics = OverlayMetrics::new(&service);
        metrics.build_info(&version.version, &version.git);

        // The admin plane comes up first, so /readyz answers 503 while the
        // data plane binds.
        let admin = if config.admin.enabled {
            let state = AdminState {
                readiness: readiness.clone(),
                version,
                configz: Arc::new(config.configz()),
                metrics: recorder,
                service: service.as_str().into(),
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
                caps: Caps::GOSSIP_V1,
                max_frame: config.oap.max_frame,
                handshake_timeout: config.handshake_timeout(),
                read_timeout: config.read_timeout(),
                write_timeout: config.write_timeout(),
                idle_timeout: config.idle_timeout(),
                tx_queue: config.session.tx_queue as usize,
                tx_watermark: config.session.tx_watermark as usize,
                drain_window_ms: u32::try_from(config.drain_timeout_ms).unwrap_or(u32::MAX),
            },
            metrics,
            handler,
            drain: CancellationToken::new(),
            kill: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        let transport_cfg = TransportConfig {
            addr: config.transport.addr,
            name: service.as_str().into(),
            max_conns: config.transport.max_conns as usize,
            read_timeout: config.read_timeout(),
            write_timeout: config.write_timeout(),
            idle_timeout: config.idle_timeout(),
        };
        let session_ctx = ctx.clone();
        let transport =
            match spawn_transport_with_cancel(transport_cfg, move |conn| session::run(conn, session_ctx.clone())).await
            {
                Ok(t) => t,
                Err(e) => {
                    if let Some(admin) = admin {
                        admin.stop().await;
                    }
                    return Err(e.into());
                }
            };
        readiness.set(gate::LISTENERS_BOUND, true);
        let admin_addr = admin.as_ref().map(AdminHandle::addr);
        let admin_field = admin_addr.map_or_else(|| "disabled".to_string(), |a| a.to_string());
        tracing::info!(addr = %transport.addr, admin_addr = %admin_field, "overlay node started");
        Ok(Overlay {
            inner: Arc::new(Inner {
                readiness,
                ctx,
                local_addr: transport.addr,
                admin_addr,
                events: transport.events.clone(),
                running: Mutex::new(Some(Running { transport, admin })),
                stopped: CancellationToken::new(),
                config,
            }),
        })
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

    /// Session lifecycle events.
    pub fn events(&self) -> broadcast::Receiver<TransportEvent> {
        self.inner.events.subscribe()
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

        // 2. Every session gets GOAWAY 503 and flushes, bounded by drain_timeout_ms.
        ctx.drain.cancel();
        let drained = tokio::time::timeout(drain, &mut transport.task).await.is_ok();

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
        ctx.tasks.close();
        if tokio::time::timeout(KILL_GRACE, ctx.tasks.wait()).await.is_err() {
            tracing::error!(left = ctx.tasks.len(), "node tasks still running after the kill");
        }
        self.readiness.set(gate::LISTENERS_BOUND, false);
        if let Some(admin) = admin {
            admin.stop().await;
        }
        tracing::info!(drained, "shutdown complete");
    }
}
