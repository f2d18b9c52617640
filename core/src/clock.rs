//! Frame timestamps: nanoseconds since the Unix epoch from the TSC.
//!
//! Reading the system clock costs a vDSO call per message; instead the clock is anchored to the
//! system clock once and advanced with quanta's calibrated TSC reading.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch according to the system clock.
pub fn system_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A cheap epoch-nanosecond clock.
#[derive(Clone)]
pub struct EpochClock {
    clock: quanta::Clock,
    anchor_raw: u64,
    anchor_ns: u64,
}

impl std::fmt::Debug for EpochClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochClock")
            .field("anchor_ns", &self.anchor_ns)
            .finish()
    }
}

impl Default for EpochClock {
    fn default() -> Self {
        Self::new()
    }
}

impl EpochClock {
    /// Anchors a new clock to the system clock now.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        let anchor_raw = clock.raw();
        let anchor_ns = system_now_ns();
        EpochClock {
            clock,
            anchor_raw,
            anchor_ns,
        }
    }

    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let raw = self.clock.raw();
        self.anchor_ns + self.clock.delta_as_nanos(self.anchor_raw, raw)
    }
}
