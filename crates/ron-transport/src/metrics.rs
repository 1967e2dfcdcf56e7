//! The transport_* series, resolved once per transport with its `service` label.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};

/// Pre-registered handles, so the hot path is an atomic add.
#[derive(Clone)]
pub(crate) struct TransportMetrics {
    pub(crate) connections: Gauge,
    /// The effective connection cap (`transport_max_conns`).
    pub(crate) max_conns: Gauge,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) rejected_max_conns: Counter,
    pub(crate) rejected_fd_limit: Counter,
    pub(crate) rejected_resource: Counter,
    #[cfg(feature = "tls")]
    pub(crate) rejected_tls: Counter,
    pub(crate) conn_latency: Histogram,
    /// Every rejection, readable back for the readiness sampler.
    pub(crate) rejected: Arc<AtomicU64>,
}

impl TransportMetrics {
    pub(crate) fn new(service: &str) -> TransportMetrics {
        describe();
        let service = service.to_owned();
        TransportMetrics {
            connections: gauge!("transport_connections", "service" => service.clone()),
            max_conns: gauge!("transport_max_conns", "service" => service.clone()),
            bytes_in: counter!("transport_bytes_in_total", "service" => service.clone()),
            bytes_out: counter!("transport_bytes_out_total", "service" => service.clone()),
            rejected_max_conns: counter!("transport_rejected_total", "service" => service.clone(), "reason" => "max_conns"),
            rejected_fd_limit: counter!("transport_rejected_total", "service" => service.clone(), "reason" => "fd_limit"),
            rejected_resource: counter!("transport_rejected_total", "service" => service.clone(), "reason" => "resource"),
            #[cfg(feature = "tls")]
            rejected_tls: counter!("transport_rejected_total", "service" => service.clone(), "reason" => "tls"),
            conn_latency: histogram!("transport_conn_latency_seconds", "service" => service),
            rejected: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// `# HELP` text for every transport_* family (the recorder keeps the first).
fn describe() {
    describe_gauge!("transport_connections", "Accepted connections open now.");
    describe_gauge!(
        "transport_max_conns",
        "Connections accepted at once at most: max_conns, or fewer when RLIMIT_NOFILE - fd_reserve is lower."
    );
    describe_counter!("transport_bytes_in_total", Unit::Bytes, "Bytes read from accepted connections.");
    describe_counter!("transport_bytes_out_total", Unit::Bytes, "Bytes written to accepted connections.");
    describe_counter!(
        "transport_rejected_total",
        "Connections closed at accept or refused: over max_conns, over the fd-limit cap, out of resources, failed TLS."
    );
    describe_histogram!(
        "transport_conn_latency_seconds",
        Unit::Seconds,
        "Lifetime of accepted connections at the transport."
    );
}

impl TransportMetrics {
    /// Counts one rejection in `counter` and in the readable total.
    pub(crate) fn reject(&self, counter: &Counter) {
        counter.increment(1);
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }
}
