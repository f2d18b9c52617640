//! The offline buffer shared by the application (which submits readings) and the session
//! (which publishes them): a fixed-capacity ring of readings not yet acknowledged by the broker.

use core::cell::RefCell;

use embassy_sync::blocking_mutex::{raw::RawMutex, Mutex};
use embassy_sync::signal::Signal;
use embassy_time::Instant;
use minimq::Op;

use crate::ring::Ring;
use crate::sequence::Sequencer;
use crate::wire::{DeviceId, Reading, Telemetry, WireError};

/// What happens when a reading is submitted while the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OverflowPolicy {
    /// Drop the oldest reading that has not been handed to the network yet (keeps the newest
    /// data; readings already in flight are never dropped). If every buffered reading is in
    /// flight, the new reading is dropped instead.
    DropOldest,
    /// Drop the new reading (keeps the oldest data).
    DropNewest,
}

/// Result of [`Outbox::submit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Submitted {
    /// Sequence number given to the submitted reading.
    pub seq: u64,
    /// Sequence number of a reading dropped because the buffer was full (possibly `seq` itself).
    pub dropped: Option<u64>,
}

/// Counters of one device session. All monotonic except `buffered` and `in_flight`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Stats {
    /// Readings submitted by the application.
    pub submitted: u64,
    /// Readings acknowledged by the broker (PUBACK).
    pub acked: u64,
    /// Readings dropped because the buffer was full.
    pub dropped: u64,
    /// PUBLISH packets written, including retransmissions.
    pub published: u64,
    /// Readings sent again after their first transmission was lost with a connection.
    pub retransmitted: u64,
    /// Readings currently held (queued, in flight, or acknowledged out of order).
    pub buffered: usize,
    /// Readings currently in flight.
    pub in_flight: usize,
    /// MQTT sessions established (CONNACK received).
    pub connects: u64,
    /// Connection attempts that failed or connections that were lost.
    pub connection_failures: u64,
    /// Commands handed to the application.
    pub commands: u64,
    /// Commands rejected (invalid bytes, wrong device, duplicate).
    pub rejected_commands: u64,
}

#[derive(Clone, Copy)]
pub(crate) enum State<K> {
    Queued {
        sent_before: bool,
    },
    /// Handed to the MQTT client; the publish call has not returned yet.
    Sending {
        sent_before: bool,
    },
    InFlight {
        op: K,
        since: Instant,
    },
    Acked,
}

struct Entry<K> {
    telemetry: Telemetry,
    state: State<K>,
}

struct Inner<const N: usize, K> {
    ring: Ring<Entry<K>, N>,
    sequencer: Sequencer,
    policy: OverflowPolicy,
    stats: Stats,
}

/// Status of a publish operation as seen by the MQTT client.
pub(crate) enum OpStatus {
    Pending,
    Complete,
    Lost,
}

/// Fixed-capacity offline buffer of `N` readings (`K` is the MQTT client's handle of an
/// in-flight publish), shared between tasks through a blocking
/// mutex of kind `M` (e.g. `CriticalSectionRawMutex`, or `NoopRawMutex` on one executor).
///
/// Readings stay here until the broker acknowledged them, so a reconnect resends exactly the
/// unacknowledged ones, in order.
pub struct Outbox<M: RawMutex, const N: usize, K: Copy = Op> {
    device_id: DeviceId,
    inner: Mutex<M, RefCell<Inner<N, K>>>,
    wake: Signal<M, ()>,
}

impl<M: RawMutex, const N: usize, K: Copy> Outbox<M, N, K> {
    /// An empty outbox for `device_id` in boot `boot_id` (see [`Telemetry::boot_id`]).
    pub const fn new(device_id: DeviceId, boot_id: u32, policy: OverflowPolicy) -> Self {
        Self {
            device_id,
            inner: Mutex::new(RefCell::new(Inner {
                ring: Ring::new(),
                sequencer: Sequencer::new(boot_id),
                policy,
                stats: Stats {
                    submitted: 0,
                    acked: 0,
                    dropped: 0,
                    published: 0,
                    retransmitted: 0,
                    buffered: 0,
                    in_flight: 0,
                    connects: 0,
                    connection_failures: 0,
                    commands: 0,
                    rejected_commands: 0,
                },
            })),
            wake: Signal::new(),
        }
    }

    /// The device this outbox numbers readings for.
    pub fn device_id(&self) -> DeviceId {
        self.device_id
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner<N, K>) -> R) -> R {
        self.inner.lock(|cell| {
            let mut inner = cell.borrow_mut();
            let r = f(&mut inner);
            inner.stats.buffered = inner.ring.len();
            r
        })
    }

    /// Number the next reading, store it, and wake the session. Never blocks.
    ///
    /// When the buffer is full the [`OverflowPolicy`] decides which reading is dropped; the
    /// drop is reported in the result and counted in [`Stats::dropped`].
    pub fn submit(&self, uptime_ms: u64, readings: &[Reading]) -> Result<Submitted, WireError> {
        let mut telemetry = Telemetry::new(self.device_id, 0, 0, uptime_ms);
        for r in readings {
            telemetry.push(*r)?;
        }
        let result = self.with(|inner| {
            telemetry.boot_id = inner.sequencer.boot_id();
            telemetry.seq = inner.sequencer.next_seq();
            inner.stats.submitted += 1;
            let mut dropped = None;
            if inner.ring.is_full() {
                let victim = match inner.policy {
                    OverflowPolicy::DropNewest => None,
                    OverflowPolicy::DropOldest => (0..inner.ring.len()).find(|&i| {
                        matches!(
                            inner.ring.get(i).map(|e| e.state),
                            Some(State::Queued { .. })
                        )
                    }),
                };
                match victim.and_then(|i| inner.ring.remove(i)) {
                    Some(old) => dropped = Some(old.telemetry.seq),
                    None => {
                        inner.stats.dropped += 1;
                        return Submitted {
                            seq: telemetry.seq,
                            dropped: Some(telemetry.seq),
                        };
                    }
                }
                inner.stats.dropped += 1;
            }
            let seq = telemetry.seq;
            // Cannot fail: a slot was freed above if the ring was full.
            let _ = inner.ring.push_back(Entry {
                telemetry,
                state: State::Queued { sent_before: false },
            });
            Submitted { seq, dropped }
        });
        self.wake.signal(());
        Ok(result)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        self.with(|inner| {
            let mut s = inner.stats;
            s.in_flight = inner
                .ring
                .iter()
                .filter(|e| matches!(e.state, State::InFlight { .. }))
                .count();
            s
        })
    }

    /// Readings that can be submitted before the overflow policy has to drop one.
    pub fn free_slots(&self) -> usize {
        self.with(|inner| N - inner.ring.len())
    }

    /// Readings not yet acknowledged by the broker.
    pub fn pending(&self) -> usize {
        self.with(|inner| {
            inner
                .ring
                .iter()
                .filter(|e| !matches!(e.state, State::Acked))
                .count()
        })
    }

    pub(crate) async fn wait(&self) {
        self.wake.wait().await
    }

    pub(crate) fn update_stats(&self, f: impl FnOnce(&mut Stats)) {
        self.with(|inner| f(&mut inner.stats))
    }

    /// Apply the client's view of every in-flight operation, then release acknowledged
    /// readings from the front. Returns (in flight count, oldest in-flight send time).
    pub(crate) fn reconcile(&self, status: impl Fn(&K) -> OpStatus) -> (usize, Option<Instant>) {
        self.with(|inner| {
            let mut in_flight = 0;
            let mut oldest: Option<Instant> = None;
            for i in 0..inner.ring.len() {
                let Some(entry) = inner.ring.get_mut(i) else {
                    break;
                };
                if let State::InFlight { op, since } = entry.state {
                    match status(&op) {
                        OpStatus::Complete => {
                            entry.state = State::Acked;
                            inner.stats.acked += 1;
                        }
                        OpStatus::Lost => entry.state = State::Queued { sent_before: true },
                        OpStatus::Pending => {
                            in_flight += 1;
                            oldest = Some(oldest.map_or(since, |o| o.min(since)));
                        }
                    }
                }
            }
            while matches!(inner.ring.get(0).map(|e| e.state), Some(State::Acked)) {
                inner.ring.pop_front();
            }
            (in_flight, oldest)
        })
    }

    /// Every in-flight reading goes back to the queue (its connection is gone and the broker
    /// did not resume the session).
    pub(crate) fn requeue_in_flight(&self) {
        self.with(|inner| {
            for i in 0..inner.ring.len() {
                if let Some(entry) = inner.ring.get_mut(i) {
                    match entry.state {
                        State::InFlight { .. } | State::Sending { sent_before: true } => {
                            entry.state = State::Queued { sent_before: true }
                        }
                        State::Sending { sent_before: false } => {
                            entry.state = State::Queued { sent_before: false }
                        }
                        State::Queued { .. } | State::Acked => {}
                    }
                }
            }
        })
    }

    /// Take the oldest queued reading for publishing. It cannot be dropped by overflow until
    /// [`Outbox::mark_in_flight`] or [`Outbox::abort_send`] is called for it.
    pub(crate) fn begin_send(&self) -> Option<Telemetry> {
        self.with(|inner| {
            let i = (0..inner.ring.len()).find(|&i| {
                matches!(
                    inner.ring.get(i).map(|e| e.state),
                    Some(State::Queued { .. })
                )
            })?;
            let entry = inner.ring.get_mut(i)?;
            if let State::Queued { sent_before } = entry.state {
                entry.state = State::Sending { sent_before };
            }
            Some(entry.telemetry)
        })
    }

    /// The publish of reading `seq` failed before the client accepted it.
    pub(crate) fn abort_send(&self, seq: u64) {
        self.with(|inner| {
            for i in 0..inner.ring.len() {
                if let Some(entry) = inner.ring.get_mut(i) {
                    if let (true, State::Sending { sent_before }) =
                        (entry.telemetry.seq == seq, entry.state)
                    {
                        entry.state = State::Queued { sent_before };
                    }
                }
            }
        })
    }

    /// Record that reading `seq` was published as `op` (or, for `None`, that the client
    /// accepted it without an ack handle, which only happens for QoS 0).
    pub(crate) fn mark_in_flight(&self, seq: u64, op: Option<K>, now: Instant) {
        self.with(|inner| {
            inner.stats.published += 1;
            let Some(i) = (0..inner.ring.len())
                .find(|&i| inner.ring.get(i).is_some_and(|e| e.telemetry.seq == seq))
            else {
                return;
            };
            if let Some(entry) = inner.ring.get_mut(i) {
                if let State::Sending { sent_before: true } = entry.state {
                    inner.stats.retransmitted += 1;
                }
                entry.state = match op {
                    Some(op) => State::InFlight { op, since: now },
                    None => State::Acked,
                };
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Quantity;
    use embassy_sync::blocking_mutex::raw::NoopRawMutex;

    fn reading(v: f32) -> Reading {
        Reading::new(0, Quantity::Temperature, v)
    }

    fn queued_seqs<const N: usize>(o: &Outbox<NoopRawMutex, N, u16>) -> Vec<u64> {
        o.with(|inner| {
            inner
                .ring
                .iter()
                .filter(|e| matches!(e.state, State::Queued { .. }))
                .map(|e| e.telemetry.seq)
                .collect()
        })
    }

    #[test]
    fn numbers_readings_in_order() {
        let o: Outbox<NoopRawMutex, 8, u16> =
            Outbox::new(DeviceId(3), 9, OverflowPolicy::DropOldest);
        for i in 0..5 {
            let s = o.submit(i, &[reading(i as f32)]).unwrap();
            assert_eq!(
                s,
                Submitted {
                    seq: i,
                    dropped: None
                }
            );
        }
        let t = o.begin_send().unwrap();
        assert_eq!((t.device_id, t.boot_id, t.seq), (DeviceId(3), 9, 0));
        assert_eq!(o.stats().submitted, 5);
        assert_eq!(o.pending(), 5);
        assert_eq!(o.free_slots(), 3);
    }

    #[test]
    fn drop_oldest_reports_the_dropped_sequence() {
        let o: Outbox<NoopRawMutex, 3, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        for i in 0..3 {
            o.submit(i, &[]).unwrap();
        }
        let s = o.submit(3, &[]).unwrap();
        assert_eq!(
            s,
            Submitted {
                seq: 3,
                dropped: Some(0)
            }
        );
        assert_eq!(queued_seqs(&o), vec![1, 2, 3]);
        assert_eq!(o.stats().dropped, 1);
    }

    #[test]
    fn drop_newest_keeps_the_oldest() {
        let o: Outbox<NoopRawMutex, 2, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropNewest);
        o.submit(0, &[]).unwrap();
        o.submit(1, &[]).unwrap();
        assert_eq!(
            o.submit(2, &[]).unwrap(),
            Submitted {
                seq: 2,
                dropped: Some(2)
            }
        );
        assert_eq!(queued_seqs(&o), vec![0, 1]);
        // The sequence keeps counting: the gap tells the receiver a reading was lost.
        assert_eq!(o.submit(3, &[]).unwrap().seq, 3);
    }

    #[test]
    fn too_many_readings_is_rejected_without_consuming_a_sequence_number() {
        let o: Outbox<NoopRawMutex, 2, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropNewest);
        let many = [reading(0.0); crate::wire::MAX_READINGS + 1];
        assert_eq!(o.submit(0, &many), Err(WireError::TooManyReadings));
        assert_eq!(o.submit(0, &[]).unwrap().seq, 0);
    }

    fn status_from(acked: &[u16], lost: &[u16]) -> impl Fn(&u16) -> OpStatus {
        let acked = acked.to_vec();
        let lost = lost.to_vec();
        move |op| {
            if acked.contains(op) {
                OpStatus::Complete
            } else if lost.contains(op) {
                OpStatus::Lost
            } else {
                OpStatus::Pending
            }
        }
    }

    /// Publish every queued reading with packet id = seq + 100.
    fn send_all(o: &Outbox<NoopRawMutex, 8, u16>, limit: usize) -> Vec<u64> {
        let mut sent = vec![];
        while sent.len() < limit {
            let Some(t) = o.begin_send() else { break };
            o.mark_in_flight(t.seq, Some(t.seq as u16 + 100), Instant::from_ticks(0));
            sent.push(t.seq);
        }
        sent
    }

    #[test]
    fn acked_readings_leave_in_order_even_if_acks_arrive_out_of_order() {
        let o: Outbox<NoopRawMutex, 8, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        for i in 0..4 {
            o.submit(i, &[]).unwrap();
        }
        assert_eq!(send_all(&o, 3), vec![0, 1, 2]);
        // Ack for 1 arrives before ack for 0: nothing can leave the front yet.
        assert_eq!(o.reconcile(status_from(&[101], &[])).0, 2);
        assert_eq!(o.pending(), 3);
        assert_eq!(o.stats().buffered, 4);
        assert_eq!(o.reconcile(status_from(&[100, 101], &[])).0, 1);
        assert_eq!(o.stats().buffered, 2);
        assert_eq!(o.stats().acked, 2);
        assert_eq!(send_all(&o, 8), vec![3]);
    }

    #[test]
    fn lost_publishes_are_resent_first_and_counted_as_retransmissions() {
        let o: Outbox<NoopRawMutex, 8, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        for i in 0..5 {
            o.submit(i, &[]).unwrap();
        }
        assert_eq!(send_all(&o, 3), vec![0, 1, 2]);
        // Connection lost; the broker acked 1 before it went, 0 and 2 are lost.
        o.reconcile(status_from(&[101], &[100, 102]));
        assert_eq!(send_all(&o, 8), vec![0, 2, 3, 4]);
        let s = o.stats();
        assert_eq!(s.retransmitted, 2);
        assert_eq!(s.published, 7);
        o.reconcile(status_from(&[100, 101, 102, 103, 104], &[]));
        assert_eq!(o.pending(), 0);
        assert_eq!(o.stats().buffered, 0);
    }

    #[test]
    fn requeue_in_flight_resends_everything_unacked() {
        let o: Outbox<NoopRawMutex, 8, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        for i in 0..3 {
            o.submit(i, &[]).unwrap();
        }
        send_all(&o, 2);
        o.requeue_in_flight();
        assert_eq!(send_all(&o, 8), vec![0, 1, 2]);
        assert_eq!(o.stats().retransmitted, 2);
    }

    #[test]
    fn a_reading_being_sent_is_not_dropped_and_can_be_returned() {
        let o: Outbox<NoopRawMutex, 2, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        o.submit(0, &[]).unwrap();
        o.submit(1, &[]).unwrap();
        assert_eq!(o.begin_send().unwrap().seq, 0);
        assert_eq!(o.submit(2, &[]).unwrap().dropped, Some(1));
        o.abort_send(0);
        assert_eq!(queued_seqs(&o), vec![0, 2]);
        assert_eq!(o.begin_send().unwrap().seq, 0);
        o.requeue_in_flight();
        assert_eq!(o.stats().retransmitted, 0);
        assert_eq!(queued_seqs(&o), vec![0, 2]);
    }

    #[test]
    fn overflow_never_drops_in_flight_readings() {
        let o: Outbox<NoopRawMutex, 8, u16> =
            Outbox::new(DeviceId(1), 0, OverflowPolicy::DropOldest);
        for i in 0..8 {
            o.submit(i, &[]).unwrap();
        }
        send_all(&o, 2); // 0 and 1 in flight
        assert_eq!(o.submit(8, &[]).unwrap().dropped, Some(2));
        send_all(&o, 8);
        // Everything is in flight now: the new reading is the one dropped.
        assert_eq!(o.submit(9, &[]).unwrap().dropped, Some(9));
        assert_eq!(o.stats().dropped, 2);
        assert_eq!(o.stats().in_flight, 8);
    }
}
