//! Exponential reconnect backoff with jitter.

use embassy_time::Duration;

/// Reconnect delay policy: the delay doubles after each failed attempt, from `initial` up to
/// `max`, with up to `jitter_percent` random reduction so a fleet does not reconnect in lockstep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BackoffPolicy {
    /// First delay after a failure.
    pub initial: Duration,
    /// Upper bound of the delay.
    pub max: Duration,
    /// Random reduction of each delay, 0..=100 percent.
    pub jitter_percent: u8,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(30),
            jitter_percent: 25,
        }
    }
}

/// Backoff state: call [`Backoff::next_delay`] after a failure, [`Backoff::reset`] on success.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A fresh backoff; `seed` (e.g. the device id) decorrelates the jitter between devices.
    pub fn new(policy: BackoffPolicy, seed: u64) -> Self {
        Self {
            policy,
            attempt: 0,
            // xorshift must not start at zero.
            rng: seed | 1,
        }
    }

    /// Failed attempts since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Forget previous failures.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// The delay before the next attempt (and count this failure).
    pub fn next_delay(&mut self) -> Duration {
        let initial = self.policy.initial.as_ticks().max(1);
        let max = self.policy.max.as_ticks().max(initial);
        let shift = self.attempt.min(32);
        let base = initial.saturating_mul(1u64 << shift).min(max);
        self.attempt = self.attempt.saturating_add(1);
        let jitter = u64::from(self.policy.jitter_percent.min(100));
        let span = base / 100 * jitter;
        let cut = if span == 0 {
            0
        } else {
            self.next_random() % (span + 1)
        };
        Duration::from_ticks(base - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            jitter_percent: 0,
        }
    }

    #[test]
    fn doubles_up_to_the_cap() {
        let mut b = Backoff::new(no_jitter(), 1);
        let got: Vec<u64> = (0..8).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1600, 2000, 2000, 2000]);
        assert_eq!(b.attempts(), 8);
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(no_jitter(), 1);
        b.next_delay();
        b.next_delay();
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn jitter_stays_within_bounds_and_varies() {
        let policy = BackoffPolicy {
            jitter_percent: 50,
            ..no_jitter()
        };
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..50u64 {
            let mut b = Backoff::new(policy, seed);
            for _ in 0..4 {
                b.next_delay();
            }
            let d = b.next_delay().as_millis(); // base 1600 ms
            assert!((800..=1600).contains(&d), "{d}");
            seen.insert(d);
        }
        assert!(seen.len() > 5, "jitter should differ between seeds");
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut b = Backoff::new(no_jitter(), 3);
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(2));
        }
    }
}
