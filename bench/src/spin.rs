//! Busy-waiting with a deadline, so a dead peer turns into an error instead of a hang.

use std::time::{Duration, Instant};

use crate::error::{BenchError, Result};

/// Spins with `PAUSE`; checks the clock only every 16384 spins, so the common short wait reads no clock.
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
        core::hint::spin_loop();
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
