//! The clock every sample is taken with: quanta's TSC reader, plus a measurement of its own cost.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A TSC-backed clock. `raw()` is one `rdtsc`; conversion to nanoseconds happens outside the timed path.
#[derive(Clone, Debug)]
pub struct Timer {
    clock: quanta::Clock,
}

impl Default for Timer {
    fn default() -> Self {
        Self::new()
    }
}

impl Timer {
    /// Calibrates the clock (quanta measures the TSC frequency against the monotonic clock).
    pub fn new() -> Self {
        Timer {
            clock: quanta::Clock::new(),
        }
    }

    /// A raw timestamp (TSC ticks). Comparable across threads and processes of this machine when the TSC is
    /// invariant (`constant_tsc nonstop_tsc`, reported in the machine description).
    #[inline(always)]
    pub fn raw(&self) -> u64 {
        self.clock.raw()
    }

    /// Nanoseconds between two raw timestamps; 0 if `end` precedes `start`.
    #[inline]
    pub fn nanos_between(&self, start: u64, end: u64) -> u64 {
        if end <= start {
            0
        } else {
            self.clock.delta_as_nanos(start, end)
        }
    }

    /// TSC ticks per nanosecond, from quanta's calibration (used to schedule sends at a fixed rate).
    pub fn ticks_per_ns(&self) -> f64 {
        let span = 1u64 << 32;
        let ns = self.clock.delta_as_nanos(0, span).max(1);
        span as f64 / ns as f64
    }

    /// Measures what one timed interval costs the clock itself: back-to-back `raw()` pairs, converted.
    pub fn measure_overhead(&self, pairs: u64) -> TimerOverhead {
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .expect("constant histogram bounds are valid");
        for _ in 0..pairs.min(10_000) {
            let a = self.raw();
            let b = self.raw();
            std::hint::black_box((a, b));
        }
        for _ in 0..pairs {
            let a = self.raw();
            let b = self.raw();
            // A zero delta cannot be recorded with a lowest bound of 1; saturate it to 1 ns.
            let _ = hist.record(self.nanos_between(a, b).max(1));
        }
        TimerOverhead {
            source: if quanta_uses_tsc() {
                "tsc"
            } else {
                "monotonic"
            }
            .to_string(),
            p50_ns: hist.value_at_quantile(0.5),
            mean_ns: hist.mean(),
            min_ns: hist.min(),
            p99_ns: hist.value_at_quantile(0.99),
            pairs,
        }
    }
}

/// Whether this machine exposes an invariant TSC (what quanta needs to read the TSC directly).
pub fn quanta_uses_tsc() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.contains(" constant_tsc") && l.contains(" nonstop_tsc"))
        .unwrap_or(false)
}

/// What the clock costs: the duration of an empty timed interval.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimerOverhead {
    /// `tsc` when quanta reads the invariant TSC, `monotonic` otherwise.
    pub source: String,
    /// Median empty interval.
    pub p50_ns: u64,
    /// Mean empty interval.
    pub mean_ns: f64,
    /// Smallest empty interval.
    pub min_ns: u64,
    /// 99th percentile empty interval.
    pub p99_ns: u64,
    /// How many back-to-back pairs were measured.
    pub pairs: u64,
}
