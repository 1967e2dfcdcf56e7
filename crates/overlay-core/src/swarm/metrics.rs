//! The overlay_swarm_* series.

use metrics::{Counter, Gauge, counter, describe_counter, describe_gauge, gauge};
use oap_codec::Kind;

/// The swarm's series, resolved once with the node's `service` label.
pub(crate) struct SwarmMetrics {
    pub(crate) active: Gauge,
    pub(crate) passive: Gauge,
    /// `overlay_relay_payload_sent_total` by mode: sent where a peer's
    /// interest summary matched (or it asked), or flooded (its summary not
    /// known, or every topic).
    pub(crate) payload_interest: Counter,
    pub(crate) payload_flood: Counter,
    /// Links in some broadcast tree whose summary is not known yet.
    pub(crate) flood_edges: Gauge,
    /// `overlay_swarm_control_sent_total` by frame kind (the swarm's kinds only).
    control_sent: [Option<Counter>; Kind::ALL.len()],
    pub(crate) grafts: Counter,
    pub(crate) prunes: Counter,
    pub(crate) reordered: Counter,
    /// Peers' requests refused by a bound: `GRAFT`s past 4,096 a second
    /// per peer, `JOIN`/`NEIGHBOR` past 4 in 10 s per peer.
    pub(crate) refused_grafts: Counter,
    pub(crate) refused_admissions: Counter,
}

impl SwarmMetrics {
    pub(crate) fn new(service: &str) -> SwarmMetrics {
        describe_gauge!(
            "overlay_swarm_active_peers",
            "Peers in the swarm's active view (linked, carrying the broadcast)."
        );
        describe_gauge!("overlay_swarm_passive_peers", "Addresses in the swarm's passive view.");
        describe_counter!(
            "overlay_relay_payload_sent_total",
            "Payload-carrying frames (MSG) queued to other nodes (mode: interest, where a summary matched; flood, where none is known)."
        );
        describe_gauge!(
            "overlay_swarm_flood_edges",
            "Active links in some broadcast tree whose interest summary is not known yet: sent every message."
        );
        describe_counter!("overlay_swarm_control_sent_total", "Swarm frames queued to other nodes, by kind.");
        describe_counter!("overlay_swarm_grafts_total", "GRAFTs sent: messages announced and asked for.");
        describe_counter!("overlay_swarm_prunes_total", "PRUNEs sent: links that left the broadcast tree.");
        describe_counter!(
            "overlay_swarm_reordered_total",
            "Gaps in an origin's messages given up after the reorder window, and messages delivered after later ones."
        );
        describe_counter!(
            "overlay_swarm_refused_total",
            "Peers' swarm requests refused by a rate bound (reason: graft, admission)."
        );
        let s = || service.to_owned();
        SwarmMetrics {
            active: gauge!("overlay_swarm_active_peers", "service" => s()),
            passive: gauge!("overlay_swarm_passive_peers", "service" => s()),
            payload_interest: counter!("overlay_relay_payload_sent_total", "service" => s(), "mode" => "interest"),
            payload_flood: counter!("overlay_relay_payload_sent_total", "service" => s(), "mode" => "flood"),
            flood_edges: gauge!("overlay_swarm_flood_edges", "service" => s()),
            control_sent: Kind::ALL.map(|k| {
                k.is_swarm()
                    .then(|| counter!("overlay_swarm_control_sent_total", "service" => s(), "kind" => k.label()))
            }),
            grafts: counter!("overlay_swarm_grafts_total", "service" => s()),
            prunes: counter!("overlay_swarm_prunes_total", "service" => s()),
            reordered: counter!("overlay_swarm_reordered_total", "service" => s()),
            refused_grafts: counter!("overlay_swarm_refused_total", "service" => s(), "reason" => "graft"),
            refused_admissions: counter!("overlay_swarm_refused_total", "service" => s(), "reason" => "admission"),
        }
    }

    pub(crate) fn control_sent(&self, kind: Kind) -> Option<&Counter> {
        self.control_sent[kind.index()].as_ref()
    }
}
