//! The receivers of a multicast sender: per-receiver flow control and liveness.
//!
//! Each receiver reports its position and window (SETUP_ACK, then STATUS). A receiver whose
//! `position + window` reaches what the sender has sent is *tethered*: the sender never sends a
//! frame starting at or beyond the smallest `position + window` of the tethered receivers, so
//! none of them is overrun. A receiver that joins far behind (or comes back after an outage) is
//! *catching up*: it does not bound the sender, its NAKs are answered from the journal, and it
//! becomes tethered once it is within one window of the sender. A tethered receiver that holds
//! the sender back without advancing for the stall time-out goes back to catching up; one
//! silent for the session time-out is dropped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// One receiver of the group.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// Receiver id (random per receiver process).
    pub id: u64,
    /// Source address of its control packets: unicast answers go there.
    pub addr: SocketAddr,
    /// Every byte before this is in its replica (never moves backwards).
    pub position: u64,
    /// Its window from `position`.
    pub window: u32,
    /// Last packet from it.
    pub last_rx: Instant,
    /// Last time its position moved (or it joined).
    pub last_progress: Instant,
    /// Whether it bounds the sender's window.
    pub tethered: bool,
}

impl Member {
    /// End of its window: it accepts frames starting before this.
    pub fn limit(&self) -> u64 {
        self.position.saturating_add(u64::from(self.window))
    }
}

/// What [`Members::expire`] did.
#[derive(Debug, Default)]
pub(crate) struct Expired {
    /// Receivers dropped (silent for the session time-out).
    pub dropped: Vec<u64>,
    /// Receivers that no longer bound the sender (stalled).
    pub untethered: Vec<u64>,
}

/// The receivers of a multicast sender.
#[derive(Debug, Default)]
pub(crate) struct Members {
    list: Vec<Member>,
}

impl Members {
    /// How many receivers are known.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Whether no receiver is known.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many receivers bound the sender.
    pub fn tethered(&self) -> usize {
        self.list.iter().filter(|m| m.tethered).count()
    }

    /// The receiver `id`.
    pub fn get(&self, id: u64) -> Option<&Member> {
        self.list.iter().find(|m| m.id == id)
    }

    /// All receivers.
    pub fn iter(&self) -> impl Iterator<Item = &Member> {
        self.list.iter()
    }

    /// Adds receiver `id` at `position` (or refreshes it); it is tethered when its window
    /// reaches `sent`. Returns whether it is new.
    pub fn join(
        &mut self,
        id: u64,
        addr: SocketAddr,
        position: u64,
        window: u32,
        sent: u64,
        now: Instant,
    ) -> bool {
        if self.get(id).is_some() {
            self.status(id, addr, position, window, sent, now);
            return false;
        }
        let mut m = Member {
            id,
            addr,
            position,
            window,
            last_rx: now,
            last_progress: now,
            tethered: false,
        };
        m.tethered = m.limit() >= sent;
        self.list.push(m);
        true
    }

    /// Applies a STATUS from `id`; returns false when `id` is unknown. A catching-up receiver
    /// whose window now reaches `sent` becomes tethered.
    pub fn status(
        &mut self,
        id: u64,
        addr: SocketAddr,
        position: u64,
        window: u32,
        sent: u64,
        now: Instant,
    ) -> bool {
        let Some(m) = self.list.iter_mut().find(|m| m.id == id) else {
            return false;
        };
        m.addr = addr;
        m.last_rx = now;
        if position > m.position {
            m.position = position;
            m.last_progress = now;
        }
        m.window = window;
        if !m.tethered && m.limit() >= sent {
            log::info!(
                "receiver {id:#x} caught up at {}: it bounds the sender again",
                m.position
            );
            m.tethered = true;
            m.last_progress = now;
        }
        true
    }

    /// Notes a packet from `id` other than STATUS (it is alive); false when unknown.
    pub fn heard(&mut self, id: u64, now: Instant) -> bool {
        match self.list.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                m.last_rx = now;
                true
            }
            None => false,
        }
    }

    /// Drops receiver `id`; returns whether it was known.
    pub fn remove(&mut self, id: u64) -> bool {
        let before = self.list.len();
        self.list.retain(|m| m.id != id);
        self.list.len() != before
    }

    /// Drops every receiver.
    pub fn clear(&mut self) {
        self.list.clear();
    }

    /// The sender's limit: the smallest window end of the tethered receivers, provided at least
    /// `min` of them are tethered (`None` otherwise: send nothing new).
    pub fn limit(&self, min: usize) -> Option<u64> {
        if self.tethered() < min.max(1) {
            return None;
        }
        self.list
            .iter()
            .filter(|m| m.tethered)
            .map(Member::limit)
            .min()
    }

    /// The smallest position of the tethered receivers (what every one of them holds).
    pub fn acked(&self) -> Option<u64> {
        self.list
            .iter()
            .filter(|m| m.tethered)
            .map(|m| m.position)
            .min()
    }

    /// Drops receivers silent for `timeout`; unties tethered receivers that have data
    /// outstanding (`position < sent`) and whose position has not moved for `stall`.
    pub fn expire(
        &mut self,
        now: Instant,
        timeout: Duration,
        stall: Duration,
        sent: u64,
    ) -> Expired {
        let mut out = Expired::default();
        self.list.retain(|m| {
            let keep = now.duration_since(m.last_rx) < timeout;
            if !keep {
                out.dropped.push(m.id);
            }
            keep
        });
        for m in self.list.iter_mut() {
            if m.tethered && m.position < sent && now.duration_since(m.last_progress) >= stall {
                m.tethered = false;
                out.untethered.push(m.id);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slowest_tethered_receiver_bounds_the_sender() {
        let t0 = Instant::now();
        let a: SocketAddr = ([10, 0, 0, 1], 1).into();
        let mut m = Members::default();
        assert_eq!(m.limit(1), None, "no receiver: nothing new is sent");
        assert!(m.join(1, a, 0, 100, 0, t0));
        assert!(m.join(2, a, 50, 100, 0, t0));
        assert!(!m.join(2, a, 50, 100, 0, t0), "known");
        assert_eq!(m.limit(1), Some(100));
        assert_eq!(m.limit(3), None, "min receivers not reached");
        assert_eq!(m.acked(), Some(0));
        assert!(m.status(1, a, 80, 100, 120, t0));
        assert_eq!((m.limit(1), m.acked()), (Some(150), Some(50)));
        // Joining far behind: catching up, does not bound the sender until within a window.
        assert!(m.join(3, a, 0, 100, 140, t0));
        assert_eq!(m.tethered(), 2);
        assert_eq!(m.limit(1), Some(150));
        assert!(m.status(3, a, 60, 100, 140, t0));
        assert_eq!(m.tethered(), 3);
        assert_eq!(m.limit(1), Some(150));
        assert_eq!(m.acked(), Some(50));
        assert!(!m.status(9, a, 0, 1, 0, t0), "unknown receiver");
    }

    #[test]
    fn silent_receivers_are_dropped_and_stalled_ones_untied() {
        let t0 = Instant::now();
        let a: SocketAddr = ([10, 0, 0, 1], 1).into();
        let mut m = Members::default();
        m.join(1, a, 0, 100, 0, t0);
        m.join(2, a, 0, 100, 0, t0);
        let t1 = t0 + Duration::from_secs(1);
        m.status(1, a, 100, 100, 100, t1);
        m.heard(2, t1);
        let e = m.expire(t1, Duration::from_secs(5), Duration::from_millis(500), 100);
        assert_eq!(e.dropped, Vec::<u64>::new());
        assert_eq!(
            e.untethered,
            vec![2],
            "2 holds the sender at 100 without moving"
        );
        assert_eq!(m.limit(1), Some(200));
        let t2 = t0 + Duration::from_secs(6);
        m.status(1, a, 100, 100, 100, t2);
        let e = m.expire(t2, Duration::from_secs(5), Duration::from_millis(500), 100);
        assert_eq!(e.dropped, vec![2]);
        assert_eq!(m.len(), 1);
        assert!(m.remove(1));
        assert!(m.is_empty());
    }
}
