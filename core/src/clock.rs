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
    /// quanta reads the TSC itself (its raw values are TSC ticks): read it inline instead of
    /// through quanta's out-of-line `raw`, a call on every append.
    tsc: bool,
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
        let tsc = reads_tsc(&clock);
        let anchor_raw = clock.raw();
        let anchor_ns = system_now_ns();
        EpochClock {
            clock,
            tsc,
            anchor_raw,
            anchor_ns,
        }
    }

    /// Nanoseconds since the Unix epoch.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        let raw = if self.tsc {
            tsc_now()
        } else {
            self.clock.raw()
        };
        self.anchor_ns + self.clock.delta_as_nanos(self.anchor_raw, raw)
    }
}

/// Whether `clock`'s raw values are TSC readings: a raw value read between two TSC reads lies
/// between them. (quanta falls back to the monotonic clock in nanoseconds when the TSC is not
/// usable; those values are not TSC ticks and fail the test, except by a coincidence that three
/// tries rule out.)
fn reads_tsc(clock: &quanta::Clock) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        (0..3).all(|_| {
            let before = tsc_now();
            let raw = clock.raw();
            let after = tsc_now();
            before <= raw && raw <= after
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = clock;
        false
    }
}

/// The time stamp counter (only called when [`reads_tsc`] said quanta uses it).
#[inline(always)]
fn tsc_now() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC exists on every x86_64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        unreachable!("the TSC is only read on x86_64")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_clock_follows_the_system_clock_and_never_goes_back() {
        let clock = EpochClock::new();
        let mut last = clock.now_ns();
        for _ in 0..100_000 {
            let now = clock.now_ns();
            assert!(now >= last, "went back from {last} to {now}");
            last = now;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        let (ours, system) = (clock.now_ns(), system_now_ns());
        // Both read within microseconds of each other; allow for calibration drift and a
        // descheduled thread, but not for a unit error (ticks for nanoseconds).
        let diff = ours.abs_diff(system);
        assert!(diff < 50_000_000, "epoch clock {ours} vs system {system}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn monotonic_nanoseconds_are_not_taken_for_tsc_ticks() {
        // A clock whose raw values are nanoseconds (quanta's fallback) fails the TSC test.
        let (clock, _mock) = quanta::Clock::mock();
        assert!(!reads_tsc(&clock));
    }
}
