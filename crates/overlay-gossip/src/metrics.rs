//! The gossip_* series (and the delivery side of overlay_queue_*), resolved
//! once with the node's `service` label.

use metrics::{Counter, Gauge, counter, gauge};

use crate::queue::DropReason;

/// Handles for one registry.
pub(crate) struct GossipMetrics {
    service: String,
    pub(crate) subscribers: Gauge,
    pub(crate) ingress: Counter,
    pub(crate) fanout: Counter,
    pub(crate) duplicates: Counter,
    pub(crate) pending_bytes: Gauge,
    dropped: [Counter; 3],
}

const REASONS: [DropReason; 3] = [DropReason::Full, DropReason::Budget, DropReason::Closed];

impl GossipMetrics {
    pub(crate) fn new(service: &str) -> GossipMetrics {
        let s = || service.to_owned();
        GossipMetrics {
            subscribers: gauge!("gossip_subscribers", "service" => s()),
            ingress: counter!("gossip_ingress_total", "service" => s()),
            fanout: counter!("gossip_fanout_total", "service" => s()),
            duplicates: counter!("gossip_duplicates_total", "service" => s()),
            pending_bytes: gauge!("overlay_queue_depth", "service" => s(), "queue" => "delivery"),
            dropped: REASONS.map(|r| counter!("gossip_dropped_total", "service" => s(), "reason" => r.label())),
            service: service.to_owned(),
        }
    }

    /// A delivery dropped: `gossip_dropped_total{reason}` and
    /// `overlay_queue_dropped_total{queue,reason}`.
    pub(crate) fn dropped(&self, queue: &'static str, reason: DropReason) {
        let at = REASONS.iter().position(|r| *r == reason).unwrap_or(0);
        self.dropped[at].increment(1);
        counter!("overlay_queue_dropped_total", "service" => self.service.clone(), "queue" => queue, "reason" => reason.label())
            .increment(1);
    }
}
