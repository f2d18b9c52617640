//! The multicast half of the sender: admitting receivers, per-receiver flow control, eviction,
//! and choosing who a retransmission goes to (the policy is described in `udp::members`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{copies_bound, Phase, UdpSender, MAX_QUEUED_NAKS};
use crate::error::Result;
use crate::wire::{ErrorCode, NakRange, Packet};

impl UdpSender {
    /// Multicast: a packet from a receiver.
    pub(super) fn handle_group(
        &mut self,
        p: Packet<'_>,
        from: SocketAddr,
        now: Instant,
    ) -> Result<()> {
        let live = matches!(self.phase, Phase::Live { .. });
        match p {
            Packet::SetupAck(a) if a.nonce == self.nonce => {
                self.admit(a.receiver_id, from, a.resume, a.window, now)?;
            }
            Packet::Status(st) => {
                let sent = self.sent;
                let known = self.group.as_mut().is_some_and(|g| {
                    g.status(st.receiver_id, from, st.position, st.window, sent, now)
                });
                if known {
                    self.acks.update(st.receiver_id, st.position);
                } else if live {
                    // Back after it was dropped, or it kept its session across a restart of
                    // this sender's group: it joins where it is.
                    self.admit(st.receiver_id, from, st.position, st.window, now)?;
                }
                if live {
                    self.update_group_limit();
                }
            }
            Packet::Nak(n) => {
                let known = self
                    .group
                    .as_mut()
                    .is_some_and(|g| g.heard(n.receiver_id, now));
                if live && known {
                    self.stats
                        .naks
                        .fetch_add(n.ranges.len() as u64, Ordering::Relaxed);
                    for r in n.ranges {
                        if self.naks.len() < MAX_QUEUED_NAKS {
                            self.naks.push_back((r, n.receiver_id));
                        }
                    }
                } else {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Packet::Error(e) if e.code == ErrorCode::UnknownSession => {
                // A receiver that joined the group after the set-up (or restarted): set it up
                // alone, at most every 20 ms.
                if live
                    && self
                        .last_join_setup
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(20))
                {
                    self.last_join_setup = Some(now);
                    self.send_setup_to(self.nonce, from)?;
                }
            }
            Packet::Error(e) => {
                // One receiver's problem (its replica cannot be opened) is not the group's.
                log::warn!(
                    "receiver at {from} reported {:?} ({}, {})",
                    e.code,
                    e.a,
                    e.b
                );
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
            Packet::Close(_) => {
                if let Some(g) = self.group.as_mut() {
                    let gone: Vec<u64> =
                        g.iter().filter(|m| m.addr == from).map(|m| m.id).collect();
                    for id in gone {
                        g.remove(id);
                        self.acks.remove(id);
                    }
                }
                if live {
                    self.update_group_limit();
                }
            }
            _ => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Multicast: whether receiver `id` was refused lately (it asked for positions no longer
    /// retained); forgets refusals older than the session time-out.
    pub(super) fn is_refused(&mut self, id: u64, now: Instant) -> bool {
        let timeout = self.cfg.session_timeout;
        self.refused
            .retain(|(_, t)| now.duration_since(*t) < timeout);
        self.refused.iter().any(|(r, _)| *r == id)
    }

    /// Multicast: drops receiver `id` and refuses it for a session time-out.
    pub(super) fn refuse(&mut self, id: u64, now: Instant) {
        if let Some(g) = self.group.as_mut() {
            g.remove(id);
        }
        self.acks.remove(id);
        self.refused.push((id, now));
        self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        self.update_group_limit();
    }

    /// Multicast: admits receiver `id` at `position` (SETUP_ACK, or a STATUS from a receiver the
    /// sender does not know), unless the primary no longer holds that position or the receiver
    /// is ahead of the primary.
    pub(super) fn admit(
        &mut self,
        id: u64,
        from: SocketAddr,
        position: u64,
        window: u32,
        now: Instant,
    ) -> Result<()> {
        if self.is_refused(id, now) {
            return Ok(());
        }
        let oldest = self.source.oldest()?;
        let tail = self.source.tail()?;
        if position < oldest {
            log::warn!(
                "receiver {id:#x} at {from} needs {position}, no longer retained (oldest {oldest})"
            );
            self.send_lapped(position, oldest, from)?;
            self.refuse(id, now);
            return Ok(());
        }
        if position > tail {
            log::warn!("receiver {id:#x} at {from} is at {position}, beyond the primary's tail {tail}: not a replica of this stream");
            self.refuse(id, now);
            return Ok(());
        }
        let live = matches!(self.phase, Phase::Live { .. });
        let sent = if live { self.sent } else { position };
        let Some(g) = self.group.as_mut() else {
            return Ok(());
        };
        if g.join(id, from, position, window, sent, now) {
            log::info!(
                "receiver {id:#x} at {from} joined at {position}{}",
                if g.get(id).is_some_and(|m| m.tethered) {
                    ""
                } else {
                    " (catching up from the journal)"
                }
            );
            self.acks.update(id, position);
        }
        self.stats
            .receivers
            .store(g.len() as u64, Ordering::Relaxed);
        if live {
            self.update_group_limit();
        }
        Ok(())
    }

    /// Multicast: starts sending at the smallest position of the receivers that answered.
    pub(super) fn establish_group(&mut self, now: Instant) -> Result<()> {
        let Some(g) = self.group.as_ref() else {
            return Ok(());
        };
        let start = g.iter().map(|m| m.position).min().unwrap_or(0);
        let window = g.iter().map(|m| m.window).max().unwrap_or(0);
        let n = g.len();
        self.establish(0, start, window, now)?;
        log::info!(
            "sending to group {} from {start} ({n} receivers)",
            self.cfg.remote
        );
        // Every receiver holds at least `start`: all bound the sender from here.
        let sent = self.sent;
        if let Some(g) = self.group.as_mut() {
            let ids: Vec<(u64, SocketAddr, u64, u32)> = g
                .iter()
                .map(|m| (m.id, m.addr, m.position, m.window))
                .collect();
            g.clear();
            for (id, addr, pos, win) in ids {
                g.join(id, addr, pos, win, sent, now);
            }
        }
        self.update_group_limit();
        Ok(())
    }

    /// Multicast: the sender's limit and acknowledged position from its receivers.
    pub(super) fn update_group_limit(&mut self) {
        let Some(g) = self.group.as_ref() else {
            return;
        };
        self.limit = g.limit(1).unwrap_or(self.sent);
        if let Some(a) = g.acked() {
            if a > self.acked && a <= self.sent {
                self.acked = a;
                self.copies.release(a);
                self.stats.acked_position.store(a, Ordering::Relaxed);
            }
        }
        if let Some(w) = g.iter().map(|m| m.window).max() {
            self.copies.reserve(copies_bound(w));
        }
        self.stats
            .receivers
            .store(g.len() as u64, Ordering::Relaxed);
    }

    /// Multicast: drops silent receivers, unties stalled ones; sets up again when none is left.
    pub(super) fn expire_members(&mut self, now: Instant) {
        let Some(g) = self.group.as_mut() else {
            return;
        };
        let e = g.expire(
            now,
            self.cfg.session_timeout,
            self.cfg.stall_timeout,
            self.sent,
        );
        for id in &e.dropped {
            log::warn!(
                "receiver {id:#x} silent for {:?}: dropped",
                self.cfg.session_timeout
            );
            self.acks.remove(*id);
        }
        for id in &e.untethered {
            log::warn!(
                "receiver {id:#x} has not advanced for {:?}: it no longer bounds the sender and \
                 catches up from the journal",
                self.cfg.stall_timeout
            );
        }
        let n = (e.dropped.len() + e.untethered.len()) as u64;
        if n == 0 {
            return;
        }
        self.stats.evictions.fetch_add(n, Ordering::Relaxed);
        if g.is_empty() {
            log::warn!(
                "no receiver left in group {}: setting up again",
                self.cfg.remote
            );
            self.restart_setup();
        }
        self.update_group_limit();
    }

    /// Multicast: where a NAK of receiver `who` is answered: the part of `r` it can take
    /// (from its position to the end of its window, within what was sent), and the destination:
    /// that receiver alone, or the group (`None`) when another receiver misses an overlapping
    /// range too (queued, or answered to it alone within the hold-off). Unicast: the range
    /// past the acknowledged position, to the receiver. `None`: the receiver is not known.
    pub(super) fn nak_scope(
        &self,
        r: NakRange,
        who: u64,
    ) -> Option<(u64, u64, Option<SocketAddr>)> {
        let Some(g) = self.group.as_ref() else {
            return Some((self.acked, self.sent, None));
        };
        let m = g.get(who)?;
        let overlaps = |q: &NakRange| q.start < r.end && r.start < q.end;
        let shared = self.naks.iter().any(|(q, w)| *w != who && overlaps(q))
            || self
                .recent
                .iter()
                .any(|(q, _, d)| d.is_some_and(|a| a != m.addr) && overlaps(q));
        let to = if shared { None } else { Some(m.addr) };
        Some((m.position, self.sent.min(m.limit()), to))
    }
}
