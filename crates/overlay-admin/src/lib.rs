//! The admin plane: `/healthz`, `/readyz`, `/configz`, `/version` and
//! `/metrics` over HTTP/1.1 (hyper 1) on a socket and a runtime thread of its
//! own, so a saturated data plane cannot starve its probes.
//!
//! It knows nothing of sessions: it reads readiness gates and renders the
//! process-wide Prometheus recorder. Gates are set by whoever owns the
//! condition, and only when the condition holds.

mod metrics;
mod readiness;
mod server;

pub use metrics::{
    FRAME_SIZE_BUCKETS, LATENCY_BUCKETS, LIFETIME_BUCKETS, SizeHistogram, SizeTally, detached_recorder,
    install_recorder, render_size_histograms,
};
pub use readiness::{GateState, Readiness, ReadySnapshot, gate};
pub use server::{AdminConfig, AdminError, AdminHandle, AdminState, VersionInfo, respond};
