//! [`Histogram`]: fixed buckets of relaxed atomic counters, and the bucket bounds of
//! latencies and group-commit batch sizes.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency bucket bounds, in microseconds (0.5 ms … 10 s).
const LATENCY_BOUNDS_US: [u64; 14] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000, 10_000_000,
];

/// Group-commit batch-size bucket bounds (writes per transaction; the writer caps at 512).
pub(super) const BATCH_BOUNDS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// A Prometheus histogram over integer observations (microseconds, or counts): one
/// counter per bucket, the count and the sum. Buckets are stored non-cumulative and
/// summed when rendered, so an observation touches exactly three atomics.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    /// Multiplies an observation to get the rendered unit (1e-6 for microseconds → s).
    scale: f64,
}

impl Histogram {
    pub(super) fn new(bounds: &'static [u64], scale: f64) -> Self {
        Histogram {
            bounds,
            // One more bucket for observations above the last bound (`+Inf`).
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// A latency histogram rendered in seconds.
    pub(crate) fn latency() -> Self {
        Self::new(&LATENCY_BOUNDS_US, 1e-6)
    }

    /// Records one observation, in the histogram's integer unit.
    pub(crate) fn observe(&self, v: u64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(v, Ordering::Relaxed);
    }

    /// Records a duration (latency histograms).
    pub(crate) fn observe_duration(&self, d: Duration) {
        self.observe(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Observations so far.
    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Writes `_bucket`, `_sum` and `_count` samples; `labels` is `a="x",b="y"` or empty.
    pub(super) fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(le) => {
                    let le = *le as f64 * self.scale;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
                    );
                }
            }
        }
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum.load(Ordering::Relaxed) as f64 * self.scale
        );
        let _ = writeln!(out, "{name}_count{} {}", braces(labels), self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = Histogram::new(&BATCH_BOUNDS, 1.0);
        for v in [1, 1, 3, 600] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "b", "");
        assert!(out.contains("b_bucket{le=\"1\"} 2\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"4\"} 3\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"512\"} 3\n"), "{out}");
        assert!(out.contains("b_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("b_sum 605\nb_count 4\n"), "{out}");
    }
}
