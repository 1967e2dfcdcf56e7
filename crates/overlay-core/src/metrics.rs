//! The overlay_* series, resolved once per node with its `service` label so
//! the hot path is an atomic add, never a registry lookup.

use std::sync::Arc;

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use oap_codec::Kind;
use overlay_admin::SizeHistogram;

/// Why a handshake failed: the `reason` label of `overlay_handshake_fail_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFail {
    Timeout,
    Preamble,
    Version,
    Caps,
    Io,
}

impl HandshakeFail {
    const ALL: [HandshakeFail; 5] = [
        HandshakeFail::Timeout,
        HandshakeFail::Preamble,
        HandshakeFail::Version,
        HandshakeFail::Caps,
        HandshakeFail::Io,
    ];

    pub(crate) const fn label(self) -> &'static str {
        match self {
            HandshakeFail::Timeout => "timeout",
            HandshakeFail::Preamble => "preamble",
            HandshakeFail::Version => "version",
            HandshakeFail::Caps => "caps",
            HandshakeFail::Io => "io",
        }
    }
}

/// Handles for one node.
#[derive(Clone)]
pub(crate) struct OverlayMetrics {
    service: String,
    pub(crate) sessions_active: Gauge,
    pub(crate) connections_total: Counter,
    frames_in: [Counter; 10],
    frames_out: [Counter; 10],
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) frame_size_in: Arc<SizeHistogram>,
    pub(crate) frame_size_out: Arc<SizeHistogram>,
    handshake_fail: [Counter; 5],
    pub(crate) accept_latency: Histogram,
    pub(crate) conn_lifetime: Histogram,
    pub(crate) reply_queue_depth: Gauge,
    pub(crate) decode_errors: Counter,
    pub(crate) peers_connected: Gauge,
}

impl OverlayMetrics {
    pub(crate) fn new(service: &str) -> OverlayMetrics {
        let s = || service.to_owned();
        let frames = |name: &'static str| Kind::ALL.map(|k| counter!(name, "service" => s(), "kind" => k.label()));
        OverlayMetrics {
            sessions_active: gauge!("overlay_sessions_active", "service" => s()),
            connections_total: counter!("overlay_connections_total", "service" => s()),
            frames_in: frames("overlay_frames_in_total"),
            frames_out: frames("overlay_frames_out_total"),
            bytes_in: counter!("overlay_bytes_in_total", "service" => s()),
            bytes_out: counter!("overlay_bytes_out_total", "service" => s()),
            frame_size_in: SizeHistogram::register("overlay_frame_size_bytes", &[("service", service), ("dir", "in")]),
            frame_size_out: SizeHistogram::register(
                "overlay_frame_size_bytes",
                &[("service", service), ("dir", "out")],
            ),
            handshake_fail: HandshakeFail::ALL
                .map(|r| counter!("overlay_handshake_fail_total", "service" => s(), "reason" => r.label())),
            accept_latency: histogram!("overlay_accept_latency_seconds", "service" => s()),
            conn_lifetime: histogram!("overlay_conn_lifetime_seconds", "service" => s()),
            reply_queue_depth: gauge!("overlay_queue_depth", "service" => s(), "queue" => "reply"),
            decode_errors: counter!("oap_decode_errors_total", "service" => s()),
            peers_connected: gauge!("overlay_peers_connected", "service" => s()),
            service: service.to_owned(),
        }
    }

    /// Publishes `overlay_build_info{version,git} 1`.
    pub(crate) fn build_info(&self, version: &str, git: &str) {
        gauge!("overlay_build_info", "service" => self.service.clone(), "version" => version.to_owned(), "git" => git.to_owned())
            .set(1.0);
    }

    pub(crate) fn frames_in(&self, kind: Kind) -> &Counter {
        &self.frames_in[kind as usize - 1]
    }

    pub(crate) fn frames_out(&self, kind: Kind) -> &Counter {
        &self.frames_out[kind as usize - 1]
    }

    pub(crate) fn handshake_fail(&self, reason: HandshakeFail) {
        self.handshake_fail[reason as usize].increment(1);
    }

    /// `overlay_tls_sessions_total{kx_group}`: one TLS session, by group.
    pub(crate) fn tls_session(&self, kx_group: &'static str) {
        counter!("overlay_tls_sessions_total", "service" => self.service.clone(), "kx_group" => kx_group).increment(1);
    }

    /// `overlay_oap_rejects_total{reason}`: a frame answered with `ERROR`
    /// or ignored. Rare, so looked up on use.
    pub(crate) fn reject(&self, reason: &'static str) {
        counter!("overlay_oap_rejects_total", "service" => self.service.clone(), "reason" => reason).increment(1);
    }
}
