//! The gossip_* series (and the delivery side of overlay_queue_*), resolved
//! once with the node's `service` label, every labelled one at 0 from the
//! start.

use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};

use crate::queue::DropReason;

/// Handles for one registry.
pub(crate) struct GossipMetrics {
    pub(crate) subscribers: Gauge,
    pub(crate) ingress: Counter,
    pub(crate) fanout: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) pending_bytes: Gauge,
    dropped: [Counter; 3],
    /// `overlay_queue_dropped_total` by queue (`QUEUES`) and reason.
    queue_dropped: [[Counter; 3]; 3],
}

const REASONS: [DropReason; 3] = [DropReason::Full, DropReason::Budget, DropReason::Closed];
/// The `queue` label of `overlay_queue_dropped_total`: subscribers, and the
/// payload and control queues of relay links.
const QUEUES: [&str; 3] = ["delivery", "relay", "control"];

impl GossipMetrics {
    pub(crate) fn new(service: &str) -> GossipMetrics {
        describe();
        let s = || service.to_owned();
        GossipMetrics {
            subscribers: gauge!("gossip_subscribers", "service" => s()),
            ingress: counter!("gossip_ingress_total", "service" => s()),
            fanout: counter!("gossip_fanout_total", "service" => s()),
            duplicates: counter!("gossip_duplicates_total", "service" => s()),
            pending_bytes: gauge!("overlay_queue_depth", "service" => s(), "queue" => "delivery"),
            dropped: REASONS.map(|r| counter!("gossip_dropped_total", "service" => s(), "reason" => r.label())),
            queue_dropped: QUEUES.map(|q| {
                REASONS.map(
                    |r| counter!("overlay_queue_dropped_total", "service" => s(), "queue" => q, "reason" => r.label()),
                )
            }),
        }
    }

    /// A delivery dropped: `gossip_dropped_total{reason}` and
    /// `overlay_queue_dropped_total{queue,reason}`; `queue` is one of `QUEUES`.
    pub(crate) fn dropped(&self, queue: &'static str, reason: DropReason) {
        let at = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[at].increment(1);
        let q = QUEUES.iter().position(|name| *name == queue).unwrap_or(0);
        self.queue_dropped[q][at].increment(1);
    }
}

/// `# HELP` text for the families this crate records.
fn describe() {
    describe_gauge!("gossip_subscribers", "Subscriptions (patterns) held by subscribers.");
    describe_counter!("gossip_ingress_total", "Messages accepted: published here, or relayed and new.");
    describe_counter!("gossip_fanout_total", "Deliveries queued to local subscribers.");
    describe_counter!("gossip_duplicates_total", "Copies of messages from other nodes dropped as seen already.");
    describe_counter!("gossip_dropped_total", "Deliveries dropped: full queue, process budget, or consumer gone.");
    describe_gauge!(
        "overlay_queue_depth",
        Unit::Count,
        "Queued for sessions: replies (frames, queue=reply) and deliveries (bytes, queue=delivery)."
    );
    describe_counter!(
        "overlay_queue_dropped_total",
        "Frames dropped, by queue (delivery: subscribers; relay, control: links to other nodes) and reason."
    );
}
