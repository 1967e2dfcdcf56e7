//! The HTTP server: its own thread and current-thread runtime, a bounded
//! number of connections, and pure request handling in [`respond`].

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics::{Unit, counter, describe_counter, describe_histogram, histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;

use crate::readiness::{Readiness, gate};

/// Admin connections served at once; more wait in the kernel backlog.
const MAX_ADMIN_CONNS: usize = 64;
/// Time a client has to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an admin connection is kept, so clients that stop reading
/// cannot hold the connection slots.
const CONN_LIFETIME: Duration = Duration::from_secs(60);

/// Where the admin plane listens.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Address to bind; port 0 picks a free port.
    pub addr: SocketAddr,
    /// The `service` label on the admin's own metrics.
    pub service: Arc<str>,
}

/// What `/version` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// Package name of the program.
    pub name: String,
    /// Package version of the program.
    pub version: String,
    /// Git commit the program was built from.
    pub git: String,
    /// UTC build time.
    pub built: String,
    /// The compiler that built it.
    pub rustc: String,
    /// The node's id in the swarm (hex), once the node set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
}

impl VersionInfo {
    /// Build facts of this workspace, with the program's own name and version.
    pub fn new(name: &str, version: &str) -> VersionInfo {
        VersionInfo {
            name: name.into(),
            version: version.into(),
            git: env!("OVERLAY_GIT_SHA").into(),
            built: env!("OVERLAY_BUILT").into(),
            rustc: env!("OVERLAY_RUSTC").into(),
            node_id: None,
        }
    }
}

/// Everything the routes read.
#[derive(Clone)]
pub struct AdminState {
    /// Gates behind `/readyz`.
    pub readiness: Readiness,
    /// Body of `/version`.
    pub version: VersionInfo,
    /// Body of `/configz`: the effective config, secrets already redacted.
    pub configz: Arc<serde_json::Value>,
    /// The recorder `/metrics` renders.
    pub metrics: PrometheusHandle,
    /// The `service` label.
    pub service: Arc<str>,
    /// Body of `/peersz` (the swarm's views), read at each request; 404
    /// without it.
    pub peersz: Option<Arc<dyn Fn() -> serde_json::Value + Send + Sync>>,
}

/// Why the admin plane could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The socket could not be bound.
    #[error("cannot listen on admin address {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The runtime thread could not be started.
    #[error("cannot start the admin thread: {0}")]
    Thread(io::Error),
}

/// A running admin plane.
#[derive(Debug)]
pub struct AdminHandle {
    addr: SocketAddr,
    cancel: CancellationToken,
    stopped: Option<oneshot::Receiver<()>>,
}

impl AdminHandle {
    /// Binds `cfg.addr` and serves on a new thread. Sets the `metrics_bound`
    /// gate once the listener is up and the recorder installed.
    pub fn start(cfg: AdminConfig, state: AdminState) -> Result<AdminHandle, AdminError> {
        describe_histogram!("request_latency_seconds", Unit::Seconds, "Admin plane request latency, by route.");
        describe_counter!("http_requests_total", "Admin plane requests, by route and status.");
        let bind_err = |source| AdminError::Bind { addr: cfg.addr, source };
        let listener = std::net::TcpListener::bind(cfg.addr).map_err(bind_err)?;
        listener.set_nonblocking(true).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let cancel = CancellationToken::new();
        let (done_tx, done_rx) = oneshot::channel();
        let token = cancel.clone();
        std::thread::Builder::new()
            .name("overlay-admin".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt.block_on(serve(listener, state, token)),
                    Err(e) => tracing::error!(error = %e, "admin runtime failed to start"),
                }
                let _ = done_tx.send(());
            })
            .map_err(AdminError::Thread)?;
        tracing::info!(%addr, "admin plane listening");
        Ok(AdminHandle { addr, cancel, stopped: Some(done_rx) })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits for the admin thread to finish.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(stopped) = self.stopped.take() {
            let _ = stopped.await;
        }
    }
}

impl Drop for AdminHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn serve(listener: std::net::TcpListener, state: AdminState, cancel: CancellationToken) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin listener unusable");
            return;
        }
    };
    state.readiness.set(gate::METRICS_BOUND, true);
    let permits = Arc::new(Semaphore::new(MAX_ADMIN_CONNS));
    let state = Arc::new(state);
    loop {
        let permit = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, _) = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(respond(&state, req.method(), req.uri().path())) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            match tokio::time::timeout(CONN_LIFETIME, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "admin connection ended with an error"),
                Err(_) => tracing::debug!("admin connection closed after its lifetime"),
            }
            drop(permit);
        });
    }
    state.readiness.set(gate::METRICS_BOUND, false);
}

/// Answers one request. Pure apart from reading `state` and recording the
/// admin's own metrics, so it is tested without a socket.
pub fn respond(state: &AdminState, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let (route, response) = route(state, method, path);
    let service = state.service.to_string();
    histogram!("request_latency_seconds", "service" => service.clone(), "route" => route)
        .record(started.elapsed().as_secs_f64());
    counter!("http_requests_total", "service" => service, "route" => route, "status" => response.status().as_str().to_owned())
        .increment(1);
    response
}

fn route(state: &AdminState, method: &Method, path: &str) -> (&'static str, Response<Full<Bytes>>) {
    let route = match path {
        "/healthz" => "/healthz",
        "/readyz" => "/readyz",
        "/configz" => "/configz",
        "/version" => "/version",
        "/peersz" if state.peersz.is_some() => "/peersz",
        "/metrics" => "/metrics",
        _ => return ("other", json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": "not found", "path": path }))),
    };
    if method != Method::GET && method != Method::HEAD {
        let mut resp = json(StatusCode::METHOD_NOT_ALLOWED, &serde_json::json!({ "error": "method not allowed" }));
        resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return (route, resp);
    }
    let resp = match route {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({ "alive": true })),
        "/readyz" => {
            let snap = state.readiness.snapshot();
            let status = if snap.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            json(status, &snap)
        }
        "/configz" => json(StatusCode::OK, &*state.configz),
        "/version" => json(StatusCode::OK, &state.version),
        "/peersz" => json(StatusCode::OK, &state.peersz.as_ref().map_or(serde_json::Value::Null, |f| f())),
        _ => {
            let mut body = state.metrics.render();
            crate::metrics::render_size_histograms(&mut body);
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
            resp
        }
    };
    (route, resp)
}

fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{\"error\":\"serialization failed\"}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}
