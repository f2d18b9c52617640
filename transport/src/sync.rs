//! Synchronous mode: a publisher waits until `k` receivers have acknowledged a position.
//!
//! Senders feed every receiver's STATUS position into a shared [`AckTracker`]; one tracker may
//! be shared by the senders to several receivers, so `k` counts receivers across all of them.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use thiserror::Error;

/// A synchronous wait failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    /// Fewer than `required` receivers reached `position` in time.
    #[error("{acked} of {required} receivers acknowledged position {position} before the timeout")]
    Timeout {
        /// Position waited for.
        position: u64,
        /// Receivers required.
        required: usize,
        /// Receivers that had acknowledged it.
        acked: usize,
    },
}

#[derive(Debug, Default)]
struct Acks {
    by_receiver: HashMap<u64, u64>,
}

impl Acks {
    fn count_at_or_past(&self, position: u64) -> usize {
        self.by_receiver
            .values()
            .filter(|&&p| p >= position)
            .count()
    }
}

/// Acknowledged positions per receiver.
#[derive(Debug, Clone, Default)]
pub struct AckTracker {
    inner: Arc<(Mutex<Acks>, Condvar)>,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `receiver` holds everything before `position` (never moves backwards).
    pub fn update(&self, receiver: u64, position: u64) {
        let (m, cv) = &*self.inner;
        let mut a = m.lock().unwrap_or_else(|e| e.into_inner());
        let e = a.by_receiver.entry(receiver).or_insert(0);
        if position > *e {
            *e = position;
            cv.notify_all();
        }
    }

    /// Forgets a receiver (its session ended).
    pub fn remove(&self, receiver: u64) {
        let (m, _) = &*self.inner;
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_receiver
            .remove(&receiver);
    }

    /// Acknowledged position of each known receiver.
    pub fn positions(&self) -> HashMap<u64, u64> {
        let (m, _) = &*self.inner;
        m.lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_receiver
            .clone()
    }

    /// Blocks until at least `k` receivers acknowledged `position` (i.e. hold every byte before
    /// it), or `timeout` passes.
    pub fn wait_for(&self, k: usize, position: u64, timeout: Duration) -> Result<(), SyncError> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let mut a = m.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let acked = a.count_at_or_past(position);
            if acked >= k {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SyncError::Timeout {
                    position,
                    required: k,
                    acked,
                });
            }
            a = cv
                .wait_timeout(a, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_k_receivers() {
        let t = AckTracker::new();
        t.update(1, 100);
        assert!(t.wait_for(1, 100, Duration::ZERO).is_ok());
        assert_eq!(
            t.wait_for(2, 100, Duration::from_millis(10)),
            Err(SyncError::Timeout {
                position: 100,
                required: 2,
                acked: 1
            })
        );
        let t2 = t.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t2.update(2, 150);
        });
        assert!(t.wait_for(2, 100, Duration::from_secs(10)).is_ok());
        h.join().unwrap();
        t.update(2, 50); // never backwards
        assert_eq!(t.positions()[&2], 150);
    }
}
