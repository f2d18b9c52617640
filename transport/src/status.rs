//! When a receiver acknowledges (sends STATUS): every `status_interval`, whenever its position
//! moved a quarter window, and, so that a writer waiting for replicas (synchronous replication)
//! hears of new data soon, whenever the position moved and no STATUS went out for
//! `status_progress_gap`. The last rule costs at most one STATUS per gap (10,000 a second at the
//! default 100 µs) while data flows and none when it does not.

use std::time::{Duration, Instant};

/// A receiver's STATUS timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StatusPolicy {
    /// STATUS at least this often.
    pub interval: Duration,
    /// Progress is acknowledged once the last STATUS is this old.
    pub progress_gap: Duration,
    /// The receiver's window: moving a quarter of it is acknowledged at once.
    pub window: u32,
}

impl StatusPolicy {
    /// Whether a STATUS is due for a replica at `next` whose last STATUS, sent at `last`,
    /// reported `reported`.
    pub(crate) fn due(
        &self,
        next: u64,
        reported: u64,
        last: Option<Instant>,
        now: Instant,
    ) -> bool {
        let Some(last) = last else { return true };
        let since = now.saturating_duration_since(last);
        next.saturating_sub(reported) >= u64::from(self.window) / 4
            || since >= self.interval
            || (next > reported && since >= self.progress_gap)
    }

    /// How long the receive loop may wait before progress already made must be acknowledged
    /// (`None`: nothing unacknowledged).
    pub(crate) fn progress_wait(
        &self,
        next: u64,
        reported: u64,
        last: Option<Instant>,
        now: Instant,
    ) -> Option<Duration> {
        if next <= reported {
            return None;
        }
        let since = last.map_or(self.progress_gap, |t| now.saturating_duration_since(t));
        Some(self.progress_gap.saturating_sub(since))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_acknowledged_after_the_gap_and_the_wait_says_when() {
        let p = StatusPolicy {
            interval: Duration::from_millis(10),
            progress_gap: Duration::from_micros(100),
            window: 1 << 20,
        };
        let t0 = Instant::now();
        let at = |us| t0 + Duration::from_micros(us);
        assert!(p.due(0, 0, None, t0), "first STATUS at once");
        // No progress: only the interval.
        assert!(!p.due(64, 64, Some(t0), at(5_000)));
        assert!(p.due(64, 64, Some(t0), at(10_000)));
        assert_eq!(p.progress_wait(64, 64, Some(t0), at(10)), None);
        // Progress: within the gap, not yet, and the wait is the rest of the gap.
        assert!(!p.due(128, 64, Some(t0), at(40)));
        assert_eq!(
            p.progress_wait(128, 64, Some(t0), at(40)),
            Some(Duration::from_micros(60))
        );
        assert!(p.due(128, 64, Some(t0), at(100)));
        assert_eq!(
            p.progress_wait(128, 64, Some(t0), at(150)),
            Some(Duration::ZERO)
        );
        // A quarter window at once.
        assert!(p.due(64 + (1 << 18), 64, Some(t0), at(1)));
    }
}
