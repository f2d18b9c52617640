//! Busy-waiting with a deadline, so a dead peer turns into an error instead of a hang.

use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};

/// Environment variable that selects how every waiting loop spins, in this process and in the echo processes it
/// starts (they inherit it): `pause` (default) or `busy` (no `PAUSE`). See [`SpinStyle`].
pub const SPIN_ENV: &str = "RINGWAY_BENCH_SPIN";

/// How waiting loops spin, the same for every system and for the limit rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SpinStyle {
    /// One `PAUSE` per empty check: gentler on a sibling hyperthread and on the power budget, but on this
    /// processor a `PAUSE` lasts tens of nanoseconds, which a waiting side adds to the moment it notices a change.
    Pause,
    /// Checks back to back, without `PAUSE`.
    Busy,
}

impl SpinStyle {
    /// Name used on the command line and in [`SPIN_ENV`].
    pub fn as_str(self) -> &'static str {
        match self {
            SpinStyle::Pause => "pause",
            SpinStyle::Busy => "busy",
        }
    }

    /// Makes this process and the processes it starts afterwards spin this way. Call before any waiting loop
    /// runs (the style is read once, at the first spin).
    pub fn apply(self) {
        std::env::set_var(SPIN_ENV, self.as_str());
    }
}

/// Whether waiting loops execute `PAUSE` (read once from [`SPIN_ENV`]).
static PAUSE: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var(SPIN_ENV).map_or(true, |v| v != "busy"));

/// Spins with `PAUSE` (unless [`SpinStyle::Busy`] is selected); checks the clock only every 16384 spins, so the
/// common short wait reads no clock.
pub struct Spinner {
    spins: u32,
    started: Option<Instant>,
    timeout: Duration,
}

impl Spinner {
    /// A spinner that gives up after about `timeout`.
    #[inline(always)]
    pub fn new(timeout: Duration) -> Self {
        Spinner {
            spins: 0,
            started: None,
            timeout,
        }
    }

    /// One spin; fails once the deadline has passed.
    #[inline(always)]
    pub fn spin(&mut self, what: &str) -> Result<()> {
        self.spins = self.spins.wrapping_add(1);
        if self.spins & 0x3fff == 0 {
            self.check(what)?;
        }
        if *PAUSE {
            core::hint::spin_loop();
        }
        Ok(())
    }

    #[cold]
    fn check(&mut self, what: &str) -> Result<()> {
        let now = Instant::now();
        match self.started {
            None => self.started = Some(now),
            Some(s) if now.duration_since(s) > self.timeout => {
                return Err(BenchError::Timeout {
                    what: what.to_string(),
                    secs: self.timeout.as_secs(),
                })
            }
            Some(_) => {}
        }
        Ok(())
    }
}
