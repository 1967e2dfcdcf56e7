//! The overlay_* series, resolved once per node with its `service` label so
//! the hot path is an atomic add, never a registry lookup. Every labelled
//! family is registered for each label value it can take, so it is on
//! `/metrics` at 0 from the start, and every family has `# HELP` text.

use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use oap_codec::Kind;
use overlay_admin::SizeHistogram;
use ron_transport::DisconnectReason;

/// Every `reason` of `overlay_oap_rejects_total`: the decode errors'
/// (`DecodeError::reason`), the auth refusals' (`AuthError::reason`), and
/// the session's own.
pub(crate) const REJECT_REASONS: [&str; 28] = [
    // oap-codec DecodeError
    "too_large",
    "empty",
    "unknown_kind",
    "malformed",
    "bad_topic",
    "empty_ctrl",
    "unknown_ctrl_op",
    "io",
    // auth
    "auth_missing",
    "auth_signature",
    "auth_malformed",
    "auth_caveat",
    "auth_expired",
    "forbidden_op",
    "forbidden_topic",
    "revoked",
    // session
    "reply_too_large",
    "unexpected_error",
    "unsupported",
    "max_subscriptions",
    "not_subscribed",
    "message_too_large",
    "cap_not_negotiated",
    "slow_consumer",
    "bad_msg_id",
    "no_swarm",
    "bad_node_id",
    "no_node_cert",
];

/// Every `kx_group` a TLS session can report (`TlsInfo::from_group`).
const KX_GROUPS: [&str; 8] =
    ["X25519MLKEM768", "SECP256R1MLKEM768", "MLKEM768", "X25519", "SECP256R1", "SECP384R1", "other", "none"];

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
    frames_in: [Counter; Kind::ALL.len()],
    frames_out: [Counter; Kind::ALL.len()],
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
    rejects: [Counter; REJECT_REASONS.len()],
    closed: [Counter; DisconnectReason::ALL.len()],
    tls_sessions: [Counter; KX_GROUPS.len()],
}

/// `# HELP` of `overlay_frame_size_bytes`.
const FRAME_SIZE_HELP: &str = "OAP frame sizes in bytes, by direction (counted per read or write batch).";

/// `# HELP` text for every overlay_* family this crate records (the recorder
/// keeps the first description of a name, so calling it again is harmless).
fn describe() {
    describe_gauge!("overlay_build_info", "Always 1; the labels name the build.");
    describe_gauge!("overlay_sessions_active", "OAP sessions open now.");
    describe_counter!("overlay_connections_total", "Connections handed to sessions.");
    describe_counter!("overlay_sessions_closed_total", "Sessions ended, by reason.");
    describe_counter!("overlay_frames_in_total", "Frames received, by kind.");
    describe_counter!("overlay_frames_out_total", "Frames sent, by kind.");
    describe_counter!("overlay_bytes_in_total", Unit::Bytes, "Frame bytes received, headers included.");
    describe_counter!("overlay_bytes_out_total", Unit::Bytes, "Frame bytes sent, headers included.");
    describe_counter!("overlay_handshake_fail_total", "Failed hellos, by reason.");
    describe_histogram!("overlay_accept_latency_seconds", Unit::Seconds, "Accept to finished hello.");
    describe_histogram!("overlay_conn_lifetime_seconds", Unit::Seconds, "Session lifetime.");
    describe_counter!("oap_decode_errors_total", "Frames that did not decode.");
    describe_gauge!("overlay_peers_connected", "Relay links up, both directions.");
    describe_counter!("overlay_oap_rejects_total", "Frames answered with ERROR or ignored, and refusals, by reason.");
    describe_counter!("overlay_tls_sessions_total", "TLS sessions, by key exchange group.");
    describe_gauge!("overlay_ready_gate", "1 while a sampled readiness gate holds.");
}

impl OverlayMetrics {
    pub(crate) fn new(service: &str) -> OverlayMetrics {
        describe();
        let s = || service.to_owned();
        let frames = |name: &'static str| Kind::ALL.map(|k| counter!(name, "service" => s(), "kind" => k.label()));
        OverlayMetrics {
            sessions_active: gauge!("overlay_sessions_active", "service" => s()),
            connections_total: counter!("overlay_connections_total", "service" => s()),
            frames_in: frames("overlay_frames_in_total"),
            frames_out: frames("overlay_frames_out_total"),
            bytes_in: counter!("overlay_bytes_in_total", "service" => s()),
            bytes_out: counter!("overlay_bytes_out_total", "service" => s()),
            frame_size_in: SizeHistogram::register(
                "overlay_frame_size_bytes",
                FRAME_SIZE_HELP,
                &[("service", service), ("dir", "in")],
            ),
            frame_size_out: SizeHistogram::register(
                "overlay_frame_size_bytes",
                FRAME_SIZE_HELP,
                &[("service", service), ("dir", "out")],
            ),
            handshake_fail: HandshakeFail::ALL
                .map(|r| counter!("overlay_handshake_fail_total", "service" => s(), "reason" => r.label())),
            accept_latency: histogram!("overlay_accept_latency_seconds", "service" => s()),
            conn_lifetime: histogram!("overlay_conn_lifetime_seconds", "service" => s()),
            reply_queue_depth: gauge!("overlay_queue_depth", "service" => s(), "queue" => "reply"),
            decode_errors: counter!("oap_decode_errors_total", "service" => s()),
            peers_connected: gauge!("overlay_peers_connected", "service" => s()),
            rejects: REJECT_REASONS.map(|r| counter!("overlay_oap_rejects_total", "service" => s(), "reason" => r)),
            closed: DisconnectReason::ALL
                .map(|r| counter!("overlay_sessions_closed_total", "service" => s(), "reason" => r.label())),
            tls_sessions: KX_GROUPS.map(|g| counter!("overlay_tls_sessions_total", "service" => s(), "kx_group" => g)),
            service: service.to_owned(),
        }
    }

    /// Publishes `overlay_build_info{version,git} 1`.
    pub(crate) fn build_info(&self, version: &str, git: &str) {
        gauge!("overlay_build_info", "service" => self.service.clone(), "version" => version.to_owned(), "git" => git.to_owned())
            .set(1.0);
    }

    pub(crate) fn frames_in(&self, kind: Kind) -> &Counter {
        &self.frames_in[kind.index()]
    }

    pub(crate) fn frames_out(&self, kind: Kind) -> &Counter {
        &self.frames_out[kind.index()]
    }

    pub(crate) fn handshake_fail(&self, reason: HandshakeFail) {
        self.handshake_fail[reason as usize].increment(1);
    }

    /// `overlay_tls_sessions_total{kx_group}`: one TLS session, by group.
    pub(crate) fn tls_session(&self, kx_group: &'static str) {
        let at = KX_GROUPS.iter().position(|g| *g == kx_group).unwrap_or(KX_GROUPS.len() - 2);
        self.tls_sessions[at].increment(1);
    }

    /// `overlay_oap_rejects_total{reason}`: a frame answered with `ERROR`
    /// or ignored.
    pub(crate) fn reject(&self, reason: &'static str) {
        match REJECT_REASONS.iter().position(|r| *r == reason) {
            Some(at) => self.rejects[at].increment(1),
            None => {
                // A reason missing from REJECT_REASONS is a bug: counted all
                // the same (it only shows up from its first use).
                debug_assert!(false, "reject reason {reason} is not in REJECT_REASONS");
                counter!("overlay_oap_rejects_total", "service" => self.service.clone(), "reason" => reason)
                    .increment(1);
            }
        }
    }

    /// `overlay_sessions_closed_total{reason}`: one session ended.
    pub(crate) fn session_closed(&self, reason: DisconnectReason) {
        let at = DisconnectReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.closed[at].increment(1);
    }
}
