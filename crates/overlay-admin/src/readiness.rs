//! Readiness gates: named conditions, each with when it last changed and,
//! where it has one, the observed value and its threshold.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Gate names known to the node.
pub mod gate {
    /// The data-plane listener is bound.
    pub const LISTENERS_BOUND: &str = "listeners_bound";
    /// `/metrics` is being served from the installed recorder.
    pub const METRICS_BOUND: &str = "metrics_bound";
    /// The config passed validation.
    pub const CFG_LOADED: &str = "cfg_loaded";
    /// True until shutdown starts; missing while the node drains.
    pub const DRAINING: &str = "draining";
}

/// One gate's state, as shown by `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateState {
    /// Whether the condition holds.
    pub ok: bool,
    /// Unix milliseconds of the last change of `ok`.
    pub since: u64,
    /// The measured value behind the gate, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// The value `observed` is held against, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
}

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadySnapshot {
    /// Every gate holds.
    pub ready: bool,
    /// Gates that do not hold, in name order.
    pub missing: Vec<&'static str>,
    /// Every gate by name.
    pub gates: BTreeMap<&'static str, GateState>,
}

/// A set of gates shared between whoever sets them and the admin plane.
/// Cheap to clone; the lock is held only to copy or set a few fields.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    gates: Arc<Mutex<BTreeMap<&'static str, GateState>>>,
}

impl Readiness {
    /// Gates `names`, none of them holding yet.
    pub fn new(names: &[&'static str]) -> Readiness {
        let now = unix_ms();
        let gates = names.iter().map(|n| (*n, GateState { ok: false, since: now, observed: None, threshold: None }));
        Readiness { gates: Arc::new(Mutex::new(gates.collect())) }
    }

    /// Sets a gate; adds it when it is new.
    pub fn set(&self, name: &'static str, ok: bool) {
        self.update(name, ok, None, None);
    }

    /// Sets a gate with the value it was judged on.
    pub fn set_observed(&self, name: &'static str, ok: bool, observed: f64, threshold: f64) {
        self.update(name, ok, Some(observed), Some(threshold));
    }

    /// Whether `name` holds (false for an unknown gate).
    pub fn is_set(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|g| g.ok)
    }

    /// A consistent copy of every gate.
    pub fn snapshot(&self) -> ReadySnapshot {
        let gates = self.lock().clone();
        let missing: Vec<_> = gates.iter().filter(|(_, g)| !g.ok).map(|(n, _)| *n).collect();
        ReadySnapshot { ready: missing.is_empty(), missing, gates }
    }

    fn update(&self, name: &'static str, ok: bool, observed: Option<f64>, threshold: Option<f64>) {
        let mut gates = self.lock();
        let gate = gates.entry(name).or_insert(GateState { ok: !ok, since: 0, observed: None, threshold: None });
        if gate.ok != ok {
            gate.ok = ok;
            gate.since = unix_ms();
        }
        gate.observed = observed;
        gate.threshold = threshold;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, GateState>> {
        // A panic while holding this lock cannot leave a gate half-written
        // (each field is a plain store), so a poisoned map is still valid.
        self.gates.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_gate_holds() {
        let r = Readiness::new(&[gate::LISTENERS_BOUND, gate::CFG_LOADED]);
        assert_eq!(r.snapshot().missing, vec!["cfg_loaded", "listeners_bound"]);
        r.set(gate::CFG_LOADED, true);
        r.set(gate::LISTENERS_BOUND, true);
        assert!(r.snapshot().ready);
        r.set_observed("queues_ok", false, 0.9, 0.75);
        let snap = r.snapshot();
        assert_eq!((snap.ready, snap.missing.clone()), (false, vec!["queues_ok"]));
        assert_eq!(snap.gates["queues_ok"].observed, Some(0.9));
    }

    #[test]
    fn since_moves_only_on_change() {
        let r = Readiness::new(&[gate::DRAINING]);
        r.set(gate::DRAINING, true);
        let first = r.snapshot().gates[gate::DRAINING].since;
        r.set(gate::DRAINING, true);
        assert_eq!(r.snapshot().gates[gate::DRAINING].since, first);
    }
}
