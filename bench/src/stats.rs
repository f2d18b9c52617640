//! Histograms and the percentile summary taken from them.

use hdrhistogram::Histogram;

use crate::error::{BenchError, Result};

/// Highest recordable value: 60 s in nanoseconds. Anything longer is a hang, not a latency.
pub const MAX_TRACKABLE_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant digits, 1 ns to 60 s.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_TRACKABLE_NS, 3).expect("constant histogram bounds are valid")
}

/// Records one sample, saturating at the trackable range (a 0 ns sample counts as 1 ns).
#[inline]
pub fn record(hist: &mut Histogram<u64>, ns: u64) -> Result<()> {
    hist.record(ns.clamp(1, MAX_TRACKABLE_NS))
        .map_err(|e| BenchError::Histogram(format!("{e:?}")))
}

/// The figures reported per system.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// Median.
    pub p50_ns: u64,
    /// 90th percentile.
    pub p90_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p999_ns: u64,
    /// 99.99th percentile.
    pub p9999_ns: u64,
    /// Largest sample.
    pub max_ns: u64,
    /// Mean of all samples.
    pub mean_ns: f64,
    /// Number of samples.
    pub samples: u64,
}

impl Summary {
    /// Reads the percentiles off a histogram.
    pub fn of(hist: &Histogram<u64>) -> Self {
        Summary {
            p50_ns: hist.value_at_quantile(0.50),
            p90_ns: hist.value_at_quantile(0.90),
            p99_ns: hist.value_at_quantile(0.99),
            p999_ns: hist.value_at_quantile(0.999),
            p9999_ns: hist.value_at_quantile(0.9999),
            max_ns: hist.max(),
            mean_ns: hist.mean(),
            samples: hist.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_reads_percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            record(&mut h, v).unwrap();
        }
        let s = Summary::of(&h);
        assert_eq!(s.samples, 10_000);
        assert!((4990..=5010).contains(&s.p50_ns), "{s:?}");
        assert!((9890..=9910).contains(&s.p99_ns), "{s:?}");
        assert_eq!(s.max_ns, h.max());
    }

    #[test]
    fn record_saturates_instead_of_failing() {
        let mut h = new_histogram();
        record(&mut h, 0).unwrap();
        record(&mut h, u64::MAX).unwrap();
        assert_eq!(h.len(), 2);
    }
}
