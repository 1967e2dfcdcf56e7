//! The swarm's knobs, with the defaults of the HyParView and PlumTree
//! papers where they give one.

use std::time::Duration;

/// Sizes, walk lengths and timeouts of one swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Peers linked and used for broadcast (HyParView's active view).
    pub active_view: usize,
    /// Known addresses kept to replace lost active peers.
    pub passive_view: usize,
    /// Steps a `FORWARD_JOIN` walks (the active random walk length).
    pub active_walk: u8,
    /// The walk step at which a joining node is kept as a passive peer.
    pub passive_walk: u8,
    /// Time between two shuffles of the passive view.
    pub shuffle_period: Duration,
    /// Active peers a shuffle sample carries.
    pub shuffle_active: usize,
    /// Passive peers a shuffle sample carries.
    pub shuffle_passive: usize,
    /// Time between two repairs: an active view below its size is topped
    /// up from the passive view, an empty one rejoins through the seeds,
    /// and links outside the active view are closed.
    pub repair_period: Duration,
    /// Time between two probes of an active peer lost to a failure.
    pub probe_period: Duration,
    /// How long a lost active peer is probed for.
    pub lost_ttl: Duration,
    /// How long a link outside the active view is kept (for a join, a
    /// shuffle reply, a neighbour request in flight).
    pub link_grace: Duration,
    /// Time between the `IHAVE` batches sent to lazy peers.
    pub ihave_interval: Duration,
    /// How long a message announced but not received is waited for before
    /// it is asked for (`GRAFT`).
    pub graft_timeout: Duration,
    /// How long each further announcer is waited for after a `GRAFT`.
    pub graft_retry: Duration,
    /// Message ids remembered, to drop duplicates.
    pub seen_cache: usize,
    /// How long a message id is remembered.
    pub seen_ttl: Duration,
    /// Payload bytes kept to answer `GRAFT`s.
    pub cache_bytes: usize,
    /// How long a payload is kept to answer `GRAFT`s.
    pub cache_ttl: Duration,
    /// Relay hops after which a message is not relayed further (a loop
    /// guard beside the seen-cache; it is still delivered).
    pub max_hops: u8,
    /// Ids waiting for a `GRAFT` at most; announcements beyond it are
    /// ignored (a peer cannot make us hold unbounded state).
    pub max_missing: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            active_view: 5,
            passive_view: 30,
            // Longer than the paper's 6 and 3: with joins through a few
            // seeds, 6 leaves the overlay poorly mixed (in the simulator at
            // 1,000 nodes: eccentricity 12-14 and trees 20 hops deep, against
            // 9-11 and 12 hops with 8).
            active_walk: 8,
            passive_walk: 4,
            shuffle_period: Duration::from_secs(30),
            shuffle_active: 3,
            shuffle_passive: 4,
            repair_period: Duration::from_secs(1),
            link_grace: Duration::from_secs(5),
            probe_period: Duration::from_secs(10),
            lost_ttl: Duration::from_secs(600),
            ihave_interval: Duration::from_millis(50),
            graft_timeout: Duration::from_millis(200),
            graft_retry: Duration::from_millis(100),
            seen_cache: 65_536,
            seen_ttl: Duration::from_secs(120),
            cache_bytes: 16 << 20,
            cache_ttl: Duration::from_secs(30),
            max_hops: 32,
            max_missing: 65_536,
        }
    }
}
