//! Back-off of an idle loop's wait (Aeron's `BackoffIdleStrategy`, with waits instead of spins):
//! the first idle iteration waits `start`, each further one twice as long, up to `max`; any
//! work starts over. A sender that just went quiet looks at its journal again within
//! microseconds (the next message of a request/response exchange, such as an MQTT client
//! waiting for a synchronously replicated PUBACK, usually comes soon), one that stays quiet
//! settles at `max` after a handful of wake-ups.

use std::time::Duration;

/// The wait of the next idle iteration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleBackoff {
    next: Duration,
    start: Duration,
    max: Duration,
}

impl IdleBackoff {
    /// Waits from `start` (at most `max`) doubling to `max`.
    pub(crate) fn new(start: Duration, max: Duration) -> Self {
        let start = start.min(max);
        IdleBackoff {
            next: start,
            start,
            max,
        }
    }

    /// Work was done: the next idle wait is `start` again.
    pub(crate) fn reset(&mut self) {
        self.next = self.start;
    }

    /// The wait for this idle iteration (the next one waits twice as long, up to `max`).
    pub(crate) fn wait(&mut self) -> Duration {
        let w = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_maximum_and_starts_over_after_work() {
        let us = Duration::from_micros;
        let mut b = IdleBackoff::new(us(10), us(200));
        let waits: Vec<_> = (0..7).map(|_| b.wait()).collect();
        assert_eq!(
            waits,
            [us(10), us(20), us(40), us(80), us(160), us(200), us(200)]
        );
        b.reset();
        assert_eq!(b.wait(), us(10));
        // Busy-polling (max zero) never waits; a start above the maximum is the maximum.
        let mut z = IdleBackoff::new(us(10), Duration::ZERO);
        assert_eq!((z.wait(), z.wait()), (Duration::ZERO, Duration::ZERO));
        assert_eq!(IdleBackoff::new(us(500), us(200)).wait(), us(200));
    }
}
