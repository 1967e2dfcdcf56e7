//! The readiness sampler: re-checks the load gates every
//! `readiness.sample_ms` and sets them only when their condition holds, with
//! hysteresis so a gate neither flaps nor lags recovery by more than a few
//! periods.
//!
//! Each gate trips at its threshold and clears below a lower one, and both
//! changes need two samples in a row. The sampler reads atomics only (byte
//! budget, reject and drop totals, link count, connection permits) and
//! `/proc/self`, so it never waits on the data plane.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::gauge;
use overlay_admin::Readiness;
use ron_transport::ConnLoad;
use ron_transport::fd::nofile_share;
use tokio_util::sync::CancellationToken;

use crate::session::SessionCtx;

/// Gate: all delivery queues together under 75 % of `max_pending_bytes`.
pub(crate) const QUEUES_OK: &str = "queues_ok";
/// Gate: sessions under 90 % of the session cap that the descriptor limit
/// leaves (`RLIMIT_NOFILE - fd_reserve`), and open fds under 90 % of
/// RLIMIT_NOFILE.
pub(crate) const FD_HEADROOM: &str = "fd_headroom";
/// Gate: rejects and drops per second under `readiness.shed_rate_max`.
pub(crate) const SHED_RATE_OK: &str = "shed_rate_ok";
/// Gate: at least `readiness.min_peers` relay links (only when > 0).
pub(crate) const PEERS_OK: &str = "peers_ok";
/// Gate: the swarm's active view holds a peer (only when seeds are
/// configured: a node meant to join is not ready alone).
pub(crate) const JOINED: &str = "joined";

/// Fraction of `max_pending_bytes` at which `queues_ok` trips.
const QUEUES_TRIP: f64 = 0.75;
/// Fraction of the session cap (or of the fd limit) at which `fd_headroom` trips.
const FD_TRIP: f64 = 0.90;
/// A tripped gate clears below this share of its threshold.
const CLEAR_RATIO: f64 = 0.8;
/// Samples in a row needed to change a gate.
const CONFIRM: u8 = 2;

/// What the sampler watches and against what.
pub(crate) struct Sampler {
    pub(crate) ctx: Arc<SessionCtx>,
    pub(crate) readiness: Readiness,
    pub(crate) period: Duration,
    pub(crate) shed_rate_max: f64,
    pub(crate) min_peers: usize,
    /// Seeds are configured: the `joined` gate applies.
    pub(crate) joins: bool,
    pub(crate) rejected: Arc<AtomicU64>,
    pub(crate) load: ConnLoad,
    pub(crate) service: String,
}

/// The sampler's memory between samples.
struct State {
    queues: Gate,
    fds: Gate,
    shed: Gate,
    peers: Gate,
    joined: Gate,
    last: (Instant, u64),
}

/// One gate's hysteresis state.
struct Gate {
    name: &'static str,
    ok: bool,
    streak: u8,
    primed: bool,
}

impl Gate {
    fn new(name: &'static str) -> Gate {
        Gate { name, ok: true, streak: 0, primed: false }
    }

    /// Feeds one sample; `trip` is where it goes bad, clearing below
    /// `CLEAR_RATIO` of it.
    fn sample(&mut self, readiness: &Readiness, observed: f64, trip: f64, service: &str) {
        let want = if self.ok { observed < trip } else { observed < trip * CLEAR_RATIO };
        if !self.primed {
            // The first sample is taken as it is: nothing to smooth yet.
            self.primed = true;
            self.ok = want;
        } else if want == self.ok {
            self.streak = 0;
        } else {
            self.streak += 1;
            if self.streak >= CONFIRM {
                self.ok = want;
                self.streak = 0;
                tracing::info!(gate = self.name, ok = want, observed, threshold = trip, "readiness gate changed");
            }
        }
        readiness.set_observed(self.name, self.ok, observed, trip);
        gauge!("overlay_ready_gate", "service" => service.to_owned(), "gate" => self.name)
            .set(f64::from(u8::from(self.ok)));
    }
}

impl Sampler {
    /// The gates this sampler owns, to register before the first sample.
    pub(crate) fn gates(min_peers: usize, joins: bool) -> Vec<&'static str> {
        let mut gates = vec![QUEUES_OK, FD_HEADROOM, SHED_RATE_OK];
        if min_peers > 0 {
            gates.push(PEERS_OK);
        }
        if joins {
            gates.push(JOINED);
        }
        gates
    }

    /// Samples once now (so the gates hold from the start), then every
    /// period until `stop` fires.
    pub(crate) fn start(self, stop: CancellationToken) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut state = State {
            queues: Gate::new(QUEUES_OK),
            fds: Gate::new(FD_HEADROOM),
            shed: Gate::new(SHED_RATE_OK),
            peers: Gate::new(PEERS_OK),
            joined: Gate::new(JOINED),
            last: (Instant::now(), self.shed_total()),
        };
        self.sample(&mut state);
        async move {
            let mut tick = tokio::time::interval(self.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    _ = tick.tick() => self.sample(&mut state),
                }
            }
        }
    }

    fn sample(&self, st: &mut State) {
        // Consumers lagging past slow_consumer_timeout are evicted now,
        // whether or not another message comes for them.
        let evicted = self.ctx.registry.sweep(Instant::now());
        if evicted > 0 {
            tracing::debug!(evicted, "slow consumers past their deadline");
        }
        let budget = self.ctx.registry.budget();
        let used = budget.used() as f64 / budget.max().max(1) as f64;
        // Publishers do not refresh the depth gauge per message; consumers
        // do after taking, and this keeps it current when none is taking.
        self.ctx.registry.note_pending();
        st.queues.sample(&self.readiness, used, QUEUES_TRIP, &self.service);

        if let Some(pressure) = self.fd_pressure() {
            st.fds.sample(&self.readiness, pressure, FD_TRIP, &self.service);
        }

        let now = (Instant::now(), self.shed_total());
        let secs = now.0.duration_since(st.last.0).as_secs_f64().max(1e-3);
        let rate = now.1.saturating_sub(st.last.1) as f64 / secs;
        st.last = now;
        st.shed.sample(&self.readiness, rate, self.shed_rate_max, &self.service);

        let active = self.ctx.swarm.active_peers();
        if self.min_peers > 0 {
            // Observed: links missing; one or more (>= 0.5) is bad.
            let missing = self.min_peers.saturating_sub(active) as f64;
            st.peers.sample(&self.readiness, missing, 0.5, &self.service);
        }
        if self.joins {
            // Observed: 1 while the active view is empty, unless every seed
            // is this node (a cluster of one).
            let alone = active == 0 && !self.ctx.swarm.seeds_are_me(&self.ctx.seeds.addrs());
            st.joined.sample(&self.readiness, f64::from(u8::from(alone)), 0.5, &self.service);
        }
    }

    /// The larger of two shares: sessions of the effective session cap when
    /// the descriptor limit sets that cap (`RLIMIT_NOFILE - fd_reserve`: the
    /// data plane's descriptors), and open fds of RLIMIT_NOFILE (the whole
    /// process, relay links and admin connections included). A node full at
    /// `max_conns` with descriptors to spare is not short of descriptors.
    /// `None` (no sample) only when neither share can be known.
    fn fd_pressure(&self) -> Option<f64> {
        let cap = self.load.cap();
        let sessions = cap.fd_bound().then(|| self.load.in_use() as f64 / cap.cap.max(1) as f64);
        match (sessions, nofile_share()) {
            (Some(s), Some(p)) => Some(s.max(p)),
            (one, other) => one.or(other),
        }
    }

    fn shed_total(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed) + self.ctx.registry.dropped_total()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gates_need_two_samples_and_clear_below_the_lower_threshold() {
        let r = Readiness::new(&[QUEUES_OK]);
        let mut g = Gate::new(QUEUES_OK);
        g.sample(&r, 0.1, 0.75, "t");
        assert!(r.is_set(QUEUES_OK), "the first sample is taken as it is");
        g.sample(&r, 0.9, 0.75, "t");
        assert!(r.is_set(QUEUES_OK), "one bad sample does not flip");
        g.sample(&r, 0.9, 0.75, "t");
        assert!(!r.is_set(QUEUES_OK));
        g.sample(&r, 0.7, 0.75, "t");
        g.sample(&r, 0.7, 0.75, "t");
        assert!(!r.is_set(QUEUES_OK), "under the trip point but above the clear point");
        g.sample(&r, 0.5, 0.75, "t");
        g.sample(&r, 0.5, 0.75, "t");
        assert!(r.is_set(QUEUES_OK));
        assert_eq!(r.snapshot().gates[QUEUES_OK].observed, Some(0.5));
    }
}
