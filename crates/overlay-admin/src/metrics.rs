//! The process-wide Prometheus recorder: installed once, shared by every node
//! in the process (series are told apart by their `service` label).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets for every `*_seconds` histogram: 100 µs to 10 s.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets for connection lifetimes: 10 ms to 1 day.
pub const LIFETIME_BUCKETS: &[f64] = &[0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 21_600.0, 86_400.0];
/// Buckets for `overlay_frame_size_bytes`: 512 B to 1 MiB.
pub const FRAME_SIZE_BUCKETS: [u64; 7] = [512, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576];
/// A slot per bucket, and one past the last (`+Inf`).
const SIZE_SLOTS: usize = FRAME_SIZE_BUCKETS.len() + 1;
/// How often histogram samples are folded into buckets, bounding their memory.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder every metric in this process goes to, installed on first use.
///
/// When another global recorder was installed first (an embedding service's),
/// ours is kept private: `/metrics` then shows only what is recorded into it,
/// and a warning says so.
pub fn install_recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match builder().map(|b| b.install_recorder()) {
                Ok(Ok(handle)) => handle,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a metrics recorder is already installed; /metrics shows only admin series");
                    PrometheusBuilder::new().build_recorder().handle()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bad histogram buckets; using summaries");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_PERIOD);
                    upkeep.run_upkeep();
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start metrics upkeep thread; histograms fold only on scrape");
            }
            handle
        })
        .clone()
}

/// A recorder of our own that is not installed globally: for a node whose
/// embedder keeps the global recorder. `/metrics` then shows only what is
/// recorded into it directly (the frame-size histograms), not the series the
/// data path records through the `metrics` macros.
pub fn detached_recorder() -> PrometheusHandle {
    match builder() {
        Ok(b) => b.build_recorder().handle(),
        Err(_) => PrometheusBuilder::new().build_recorder().handle(),
    }
}

/// The recorder with this project's histogram buckets.
fn builder() -> Result<PrometheusBuilder, metrics_exporter_prometheus::BuildError> {
    PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full("overlay_conn_lifetime_seconds".into()), LIFETIME_BUCKETS))
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("transport_conn_latency_seconds".into()), LIFETIME_BUCKETS)
        })
}

/// Every [`SizeHistogram`] in the process, rendered after the recorder's series.
static SIZE_HISTOGRAMS: Mutex<Vec<Arc<SizeHistogram>>> = Mutex::new(Vec::new());

/// A byte-size histogram over [`FRAME_SIZE_BUCKETS`] that is fed in
/// batches: the data path counts each frame into a [`SizeTally`] (plain
/// integers: no atomics, no clock, no sample buffer) and adds the tally once
/// per read or write batch. A recorder histogram costs a clock read and a
/// buffered sample per frame, a few percent of a node's CPU at millions of
/// frames a second. `/metrics` renders it as a Prometheus histogram.
#[derive(Debug)]
pub struct SizeHistogram {
    name: &'static str,
    help: &'static str,
    labels: String,
    slots: [AtomicU64; SIZE_SLOTS],
    sum: AtomicU64,
}

/// Frame sizes counted locally, not yet added to a [`SizeHistogram`].
#[derive(Debug, Default, Clone)]
pub struct SizeTally {
    // A tally covers one batch of frames, far fewer than u32::MAX.
    slots: [u32; SIZE_SLOTS],
    sum: u64,
}

impl SizeTally {
    /// Counts one frame of `bytes`.
    pub fn record(&mut self, bytes: usize) {
        let bytes = bytes as u64;
        let slot = FRAME_SIZE_BUCKETS.iter().position(|&bound| bytes <= bound).unwrap_or(FRAME_SIZE_BUCKETS.len());
        self.slots[slot] = self.slots[slot].saturating_add(1);
        self.sum += bytes;
    }

    /// True when nothing was counted since the last add.
    pub fn is_empty(&self) -> bool {
        self.slots.iter().all(|&n| n == 0)
    }
}

impl SizeHistogram {
    /// The series `name{labels}`, registered once per process: asking for the
    /// same name and labels again (a second node with the same `service`)
    /// returns the same histogram, so `/metrics` never shows a series twice.
    /// `help` is the family's `# HELP` text.
    pub fn register(name: &'static str, help: &'static str, labels: &[(&str, &str)]) -> Arc<SizeHistogram> {
        let mut rendered = String::new();
        for (key, value) in labels {
            let value = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            let _ = write!(rendered, "{}{key}=\"{value}\"", if rendered.is_empty() { "" } else { "," });
        }
        let mut all = SIZE_HISTOGRAMS.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = all.iter().find(|h| h.name == name && h.labels == rendered) {
            return h.clone();
        }
        let h = Arc::new(SizeHistogram {
            name,
            help,
            labels: rendered,
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        });
        all.push(h.clone());
        h
    }

    /// Adds `tally` (and clears it).
    pub fn add(&self, tally: &mut SizeTally) {
        for (slot, n) in self.slots.iter().zip(&mut tally.slots) {
            if *n > 0 {
                slot.fetch_add(u64::from(std::mem::take(n)), Ordering::Relaxed);
            }
        }
        self.sum.fetch_add(std::mem::take(&mut tally.sum), Ordering::Relaxed);
    }

    fn render(&self, out: &mut String) {
        let name = self.name;
        let (labels, sep) = if self.labels.is_empty() { (String::new(), "") } else { (self.labels.clone(), ",") };
        let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let mut cumulative = 0;
        for (i, slot) in self.slots.iter().enumerate() {
            cumulative += slot.load(Ordering::Relaxed);
            let le = FRAME_SIZE_BUCKETS.get(i).map_or_else(|| "+Inf".to_string(), u64::to_string);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// Appends every registered [`SizeHistogram`] to a Prometheus text body.
pub fn render_size_histograms(out: &mut String) {
    let all = SIZE_HISTOGRAMS.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut typed: Vec<&str> = Vec::new();
    for h in &all {
        if !typed.contains(&h.name) {
            typed.push(h.name);
            let _ = writeln!(out, "# HELP {} {}", h.name, h.help);
            let _ = writeln!(out, "# TYPE {} histogram", h.name);
            // Series of one name stay together, as the format requires.
            all.iter().filter(|o| o.name == h.name).for_each(|o| o.render(out));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tallies_render_as_a_cumulative_prometheus_histogram() {
        let h = SizeHistogram::register("test_size_bytes", "Sizes.", &[("service", "a\"b"), ("dir", "in")]);
        let mut t = SizeTally::default();
        for bytes in [1, 512, 513, 1024, 5000, 2 << 20] {
            t.record(bytes);
        }
        h.add(&mut t);
        assert!(t.is_empty(), "adding clears the tally");
        assert!(Arc::ptr_eq(
            &h,
            &SizeHistogram::register("test_size_bytes", "Sizes.", &[("service", "a\"b"), ("dir", "in")])
        ));
        SizeHistogram::register("test_bare_bytes", "Bare.", &[]).add(&mut {
            let mut t = SizeTally::default();
            t.record(10);
            t
        });
        let mut out = String::new();
        render_size_histograms(&mut out);
        let labels = r#"service="a\"b",dir="in""#;
        for line in [
            "# TYPE test_size_bytes histogram".to_string(),
            format!(r#"test_size_bytes_bucket{{{labels},le="512"}} 2"#),
            format!(r#"test_size_bytes_bucket{{{labels},le="1024"}} 4"#),
            format!(r#"test_size_bytes_bucket{{{labels},le="16384"}} 5"#),
            format!(r#"test_size_bytes_bucket{{{labels},le="1048576"}} 5"#),
            format!(r#"test_size_bytes_bucket{{{labels},le="+Inf"}} 6"#),
            format!("test_size_bytes_sum{{{labels}}} {}", 1 + 512 + 513 + 1024 + 5000 + (2 << 20)),
            format!("test_size_bytes_count{{{labels}}} 6"),
            r#"test_bare_bytes_bucket{le="512"} 1"#.to_string(),
            "test_bare_bytes_count 1".to_string(),
        ] {
            assert!(out.lines().any(|l| l == line), "{line} missing from\n{out}");
        }
    }
}
