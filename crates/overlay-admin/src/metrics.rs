//! The process-wide Prometheus recorder: installed once, shared by every node
//! in the process (series are told apart by their `service` label).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for every `*_seconds` histogram: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets for connection lifetimes: 10 ms to 1 day.
pub const LIFETIME_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21_600.0, 86_400.0];
/// Buckets for `overlay_frame_size_bytes`: 512 B to 1 MiB.
pub const FRAME_SIZE_BUCKETS: &[f64] = &[512.0, 1024.0, 4096.0, 16_384.0, 65_536.0, 262_144.0, 1_048_576.0];
/// How often histogram samples are folded into buckets, bounding their memory.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder every metric in this process goes to, installed on first use.
///
/// When another global recorder was installed first (an embedding service's),
/// ours is kept private: `/metrics` then shows only what is recorded into it,
/// and a warning says so.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = || {
                PrometheusBuilder::new()
                    .set_buckets(LATENCY_BUCKETS)
                    .and_then(|b| b.set_buckets_for_metric(Matcher::Full("overlay_frame_size_bytes".into()), FRAME_SIZE_BUCKETS))
                    .and_then(|b| b.set_buckets_for_metric(Matcher::Full("overlay_conn_lifetime_seconds".into()), LIFETIME_BUCKETS))
                    .and_then(|b| {
                        b.set_buckets_for_metric(Matcher::Full("transport_conn_latency_seconds".into()), LIFETIME_BUCKETS)
                    })
            };
            let handle = match builder().map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => handle,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics shows only admin series");
                    PrometheusBuilder::new().build_recorder().handle()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad histogram buckets; using summaries");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_PERIOD);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start metrics upkeep thread; histograms fold only on scrape");
            }
            handle
        })
        .clone()
}
