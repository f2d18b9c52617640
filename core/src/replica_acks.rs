//! Replica acknowledgements: a small table in the stream's `meta` file where replication senders
//! record, per receiver, the position up to which that receiver holds the stream, so any process
//! on the primary (the MQTT gateway, `ringway stat`) can ask how many replicas hold a position.
//!
//! The table has [`REPLICA_ACK_SLOTS`] slots of 64 bytes at `meta` offset
//! [`REPLICA_ACK_TABLE_OFFSET`] (`docs/format.md`, "Replica acknowledgements"). It lives in space
//! that version 2 files always left zero, so older files read as "no acknowledgements" and the
//! format version does not change. Nothing on the writer's append path reads or writes it.
//!
//! # Protocol (the SYNC POINTs)
//! A slot's `receiver` word is its state: 0 free, [`BUSY`] being (re)initialised, anything else
//! the id of the receiver whose acknowledgements the slot holds.
//! * **Take** (a recorder that finds no slot for its receiver): compare-exchange a free slot's
//!   word (or the word of a slot whose owner process is dead) to `BUSY` (`Acquire`, pairs with the
//!   `Release` of the release that freed it), `fence(Release)`, store owner, time and the first
//!   position, then store the receiver id with `Release`. The fence orders the `BUSY` store before
//!   the new field values for a reader (seqlock writer); the final `Release` publishes them.
//! * **Record** (the slot is the receiver's): `fetch_max` of the position (`Release`, so a reader
//!   that sees it also sees the time stored before it), acknowledged positions never move back.
//! * **Release**: compare-exchange the receiver id to 0 (`Release`). The position is left as it
//!   was: the next taker overwrites it while the slot is `BUSY`, so no reader attributes it to
//!   the next receiver.
//! * **Read** (seqlock reader): load the receiver word (`Acquire`), load the position, then
//!   `fence(Acquire)` and load the receiver word again. The entry counts only if both loads saw
//!   the same receiver id: if the position load saw a value stored by a later taker, the fence
//!   pairs with that taker's `fence(Release)` and the second load sees `BUSY` or a later id.
//!   The same receiver can appear twice in one scan (released and taken again in another slot
//!   while the reader walks the table), so a snapshot keeps one entry per receiver id.
//!
//! Loom checks this protocol in `core/tests/loom_replica_acks.rs`, through the same generic code
//! ([`AckWords`]) that the memory-mapped table uses.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::notify::{futex_wait, futex_wake};

use crate::process::{current_pid, current_start_time, is_alive};
use crate::stream::Shared;

/// Offset of the replica-acknowledgement table in `meta`.
pub const REPLICA_ACK_TABLE_OFFSET: usize = 2048;
/// Slots in the table: receivers whose acknowledgements a stream records at once.
pub const REPLICA_ACK_SLOTS: usize = 16;
/// Offset of the table's change signal in `meta` (right after the slots).
pub const REPLICA_ACK_SIGNAL_OFFSET: usize = 3072;
/// Receiver word of a slot being taken (never a valid receiver id).
pub const BUSY: u64 = u64::MAX;

/// Why an acknowledgement could not be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplicaAckError {
    /// Every slot holds a receiver of a live process.
    #[error(
        "replica acknowledgement table full: all {slots} slots hold receivers of live senders"
    )]
    TableFull {
        /// Slots in the table.
        slots: usize,
    },
    /// 0 and `u64::MAX` are reserved (free and busy slots).
    #[error("receiver id {0:#x} is reserved (0 and u64::MAX mark free and busy slots)")]
    InvalidReceiverId(u64),
}

/// One slot of the table as stored in `meta` (64 bytes, one cache line).
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ReplicaAckSlot {
    /// 0 free, [`BUSY`] being taken, else the receiver id.
    pub receiver: AtomicU64,
    /// Position up to which the receiver holds the stream (only grows while the slot is held).
    pub position: AtomicU64,
    /// Time of the last acknowledgement, ns since the Unix epoch.
    pub updated_ns: AtomicU64,
    /// Pid of the process recording for this receiver (a replication sender).
    pub owner_pid: AtomicU64,
    /// Start time of that process (`process::start_time`), to tell a recycled pid apart.
    pub owner_start: AtomicU64,
    /// Zero.
    pub _reserved: [u64; 3],
}

const _: () = assert!(std::mem::size_of::<ReplicaAckSlot>() == 64);

/// Lets a process sleep until a recorder changes the table (64 bytes, its own cache line).
///
/// A recorder, after each record or release, increments `changes` and then loads `waiters`
/// (both `SeqCst`), and calls `FUTEX_WAKE` on `changes` only when there is a waiter. A waiter
/// increments `waiters`, loads `changes` (both `SeqCst`), and sleeps in `FUTEX_WAIT` only if it
/// is still the count it saw before reading the table. In the single total order of these
/// `SeqCst` operations either the recorder's load sees the waiter (and wakes it) or the
/// waiter's load sees the new count (and does not sleep): a change is never slept through.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ReplicaAckSignal {
    /// Changes so far (wraps); the futex word.
    pub changes: AtomicU32,
    /// Processes sleeping on `changes`.
    pub waiters: AtomicU32,
    /// Zero.
    pub _reserved: [u32; 14],
}

const _: () = assert!(std::mem::size_of::<ReplicaAckSignal>() == 64);

/// The words of one slot, wherever they live (the mapping, or loom atomics in the model tests).
pub trait AckWord {
    /// Atomic load.
    fn load(&self, order: Ordering) -> u64;
    /// Atomic store.
    fn store(&self, value: u64, order: Ordering);
    /// Atomic compare-exchange.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    /// Atomic maximum; returns the previous value.
    fn fetch_max(&self, value: u64, order: Ordering) -> u64;
}

impl AckWord for AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
    }
    fn store(&self, value: u64, order: Ordering) {
        AtomicU64::store(self, value, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        AtomicU64::compare_exchange(self, current, new, success, failure)
    }
    fn fetch_max(&self, value: u64, order: Ordering) -> u64 {
        AtomicU64::fetch_max(self, value, order)
    }
}

/// Borrowed words of one slot.
#[derive(Debug, Clone, Copy)]
pub struct SlotWords<'a, W> {
    /// Receiver word (state).
    pub receiver: &'a W,
    /// Acknowledged position.
    pub position: &'a W,
    /// Last update, ns.
    pub updated_ns: &'a W,
    /// Owner pid.
    pub owner_pid: &'a W,
    /// Owner start time.
    pub owner_start: &'a W,
}

/// A table of slots and the fence that goes with its atomics.
pub trait AckWords {
    /// The atomic word type.
    type Word: AckWord;
    /// Number of slots.
    fn slots(&self) -> usize;
    /// Slot `i` (`i < slots()`).
    fn slot(&self, i: usize) -> SlotWords<'_, Self::Word>;
    /// A memory fence of the same kind as the words (`std` or loom).
    fn fence(&self, order: Ordering);
}

impl AckWords for [ReplicaAckSlot; REPLICA_ACK_SLOTS] {
    type Word = AtomicU64;
    fn slots(&self) -> usize {
        REPLICA_ACK_SLOTS
    }
    fn slot(&self, i: usize) -> SlotWords<'_, AtomicU64> {
        let s = &self[i];
        SlotWords {
            receiver: &s.receiver,
            position: &s.position,
            updated_ns: &s.updated_ns,
            owner_pid: &s.owner_pid,
            owner_start: &s.owner_start,
        }
    }
    fn fence(&self, order: Ordering) {
        fence(order)
    }
}

/// Who is recording and when (kept apart so the model tests need no processes or clocks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorder {
    /// Pid of the recording process.
    pub pid: u32,
    /// Its start time.
    pub start: u64,
    /// Now, ns since the epoch.
    pub now_ns: u64,
}

/// One receiver's acknowledgement as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaAck {
    /// Receiver id (as the replication protocol names it).
    pub receiver_id: u64,
    /// Position up to which the receiver holds the stream.
    pub position: u64,
    /// Time of its last acknowledgement, ns since the epoch.
    pub updated_ns: u64,
    /// Pid of the sender process recording it.
    pub owner_pid: u32,
}

fn check_id(receiver_id: u64) -> Result<(), ReplicaAckError> {
    if receiver_id == 0 || receiver_id == BUSY {
        Err(ReplicaAckError::InvalidReceiverId(receiver_id))
    } else {
        Ok(())
    }
}

/// Records that `receiver_id` holds the stream up to `position` (never moves an entry back).
/// Takes a free slot, or the slot of a dead owner (`is_dead(pid, start)`), when the receiver
/// has none.
pub fn record<T: AckWords + ?Sized>(
    table: &T,
    receiver_id: u64,
    position: u64,
    me: Recorder,
    is_dead: &dyn Fn(u32, u64) -> bool,
) -> Result<(), ReplicaAckError> {
    check_id(receiver_id)?;
    for i in 0..table.slots() {
        let s = table.slot(i);
        // Relaxed: only finding the slot; the position below is a RMW on the slot's own word.
        if s.receiver.load(Ordering::Relaxed) == receiver_id {
            // Relaxed: a timestamp for display and liveness, published by the Release below.
            s.updated_ns.store(me.now_ns, Ordering::Relaxed);
            if s.owner_pid.load(Ordering::Relaxed) != u64::from(me.pid) {
                // A new sender process took over the receiver (the old one restarted).
                s.owner_start.store(me.start, Ordering::Relaxed);
                s.owner_pid.store(u64::from(me.pid), Ordering::Relaxed);
            }
            // Release: a reader that sees this position sees the time stored before it.
            s.position.fetch_max(position, Ordering::Release);
            return Ok(());
        }
    }
    // Free slots first, then slots whose owner process is gone.
    for reclaim in [false, true] {
        for i in 0..table.slots() {
            let s = table.slot(i);
            let current = s.receiver.load(Ordering::Relaxed);
            let takeable = if reclaim {
                current != 0
                    && current != BUSY
                    && is_dead(
                        s.owner_pid.load(Ordering::Relaxed) as u32,
                        s.owner_start.load(Ordering::Relaxed),
                    )
            } else {
                current == 0
            };
            if !takeable {
                continue;
            }
            // Acquire: pairs with the Release of the release (or publish) that left `current`,
            // so the stores below come after the previous holder's in every word's order.
            if s.receiver
                .compare_exchange(current, BUSY, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // Release fence: a reader whose position load sees a store below also sees BUSY (or
            // a later word) in its second receiver load, and discards the entry.
            table.fence(Ordering::Release);
            s.owner_pid.store(u64::from(me.pid), Ordering::Relaxed);
            s.owner_start.store(me.start, Ordering::Relaxed);
            s.updated_ns.store(me.now_ns, Ordering::Relaxed);
            s.position.store(position, Ordering::Relaxed);
            // Release: publishes the fields above with the receiver id.
            s.receiver.store(receiver_id, Ordering::Release);
            return Ok(());
        }
    }
    Err(ReplicaAckError::TableFull {
        slots: table.slots(),
    })
}

/// Frees the slot of `receiver_id` (its session ended); returns whether it had one.
pub fn release<T: AckWords + ?Sized>(table: &T, receiver_id: u64) -> bool {
    if check_id(receiver_id).is_err() {
        return false;
    }
    let mut found = false;
    for i in 0..table.slots() {
        // Release: a taker that sees the slot free (Acquire) stores after everything here.
        found |= table
            .slot(i)
            .receiver
            .compare_exchange(receiver_id, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok();
    }
    found
}

/// The receivers in the table, one entry per receiver id (the highest position if a receiver
/// was seen twice while the table changed), in slot order. Allocation-free: fills `out`.
pub fn snapshot<T: AckWords + ?Sized>(table: &T, out: &mut Vec<ReplicaAck>) {
    out.clear();
    for i in 0..table.slots() {
        let s = table.slot(i);
        // Acquire: pairs with the taker's Release store of the id (its fields are visible).
        let id = s.receiver.load(Ordering::Acquire);
        if id == 0 || id == BUSY {
            continue;
        }
        // Acquire: pairs with the recorder's Release fetch_max (its timestamp is visible).
        let position = s.position.load(Ordering::Acquire);
        let updated_ns = s.updated_ns.load(Ordering::Relaxed);
        let owner_pid = s.owner_pid.load(Ordering::Relaxed) as u32;
        // Seqlock check: see the module docs.
        table.fence(Ordering::Acquire);
        if s.receiver.load(Ordering::Relaxed) != id {
            continue;
        }
        let entry = ReplicaAck {
            receiver_id: id,
            position,
            updated_ns,
            owner_pid,
        };
        match out.iter_mut().find(|e| e.receiver_id == id) {
            Some(e) if e.position < position => *e = entry,
            Some(_) => {}
            None => out.push(entry),
        }
    }
}

/// Receivers that hold the stream up to `position` or further.
pub fn acknowledged_by<T: AckWords + ?Sized>(table: &T, position: u64) -> usize {
    let mut v = Vec::with_capacity(table.slots());
    snapshot(table, &mut v);
    v.iter().filter(|e| e.position >= position).count()
}

/// The highest position that at least `k` receivers hold (`None`: fewer than `k` receivers;
/// `k = 0`: `u64::MAX`, nothing to wait for).
pub fn quorum_position<T: AckWords + ?Sized>(table: &T, k: usize) -> Option<u64> {
    if k == 0 {
        return Some(u64::MAX);
    }
    let mut v = Vec::with_capacity(table.slots());
    snapshot(table, &mut v);
    if v.len() < k {
        return None;
    }
    let mut positions: Vec<u64> = v.iter().map(|e| e.position).collect();
    positions.sort_unstable_by(|a, b| b.cmp(a));
    Some(positions[k - 1])
}

/// A stream's replica-acknowledgement table, usable from any process that opened the stream:
/// replication senders [`record`](ReplicaAcks::record) what their receivers acknowledge, and
/// anyone asks how many receivers hold a position.
///
/// ```
/// use ringway_core::{Stream, StreamConfig};
/// let root = tempfile::tempdir().unwrap();
/// let stream = Stream::create(root.path(), "quotes", &StreamConfig::default().segment_size(1 << 20)).unwrap();
/// let pos = stream.writer().unwrap().append(b"hello").unwrap();
/// let end = stream.tail().0;
/// let acks = stream.replica_acks();
/// assert_eq!(acks.acknowledged_by(end), 0);
/// acks.record(0x51, end).unwrap();      // a sender saw receiver 0x51 acknowledge `end`
/// assert_eq!(acks.acknowledged_by(end), 1);
/// assert_eq!(acks.quorum_position(1), Some(end));
/// assert!(pos.0 < end);
/// acks.release(0x51);                   // its session ended
/// assert_eq!(acks.acknowledged_by(end), 0);
/// ```
#[derive(Debug, Clone)]
pub struct ReplicaAcks {
    shared: Arc<Shared>,
}

impl ReplicaAcks {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ReplicaAcks { shared }
    }

    fn table(&self) -> &[ReplicaAckSlot; REPLICA_ACK_SLOTS] {
        &self.shared.meta.get().replica_acks
    }

    fn signal(&self) -> &ReplicaAckSignal {
        &self.shared.meta.get().replica_ack_signal
    }

    /// Tells sleeping waiters (any process) that the table changed.
    fn changed(&self) {
        let s = self.signal();
        // SeqCst (both): see `ReplicaAckSignal`.
        s.changes.fetch_add(1, Ordering::SeqCst);
        if s.waiters.load(Ordering::SeqCst) != 0 {
            futex_wake(&s.changes);
        }
    }

    /// The table's change count: pass it to [`ReplicaAcks::wait_for_change`] after reading the
    /// table, to sleep until the next change.
    pub fn change_count(&self) -> u32 {
        // SeqCst: see `ReplicaAckSignal` (loaded before the table is read, so a change made
        // after that read moves the count away from this value).
        self.signal().changes.load(Ordering::SeqCst)
    }

    /// Sleeps until a recorder changes the table after `seen` (a [`ReplicaAcks::change_count`]
    /// taken before reading it), or `timeout` passes; returns at once if it already changed.
    /// Recorders of builds without the signal are only seen at the timeout.
    pub fn wait_for_change(&self, seen: u32, timeout: Duration) {
        let s = self.signal();
        // SeqCst (both): see `ReplicaAckSignal`.
        s.waiters.fetch_add(1, Ordering::SeqCst);
        if s.changes.load(Ordering::SeqCst) == seen {
            futex_wait(&s.changes, seen, timeout);
        }
        s.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Records that receiver `receiver_id` holds the stream up to `position` (a receiver's
    /// entry never moves back). Its first record takes a free slot, or the slot of a receiver
    /// whose recording process is gone; [`ReplicaAckError::TableFull`] when there is none.
    pub fn record(&self, receiver_id: u64, position: u64) -> Result<(), ReplicaAckError> {
        let me = Recorder {
            pid: current_pid(),
            start: own_start_time(),
            now_ns: crate::clock::system_now_ns(),
        };
        record(self.table(), receiver_id, position, me, &|pid, start| {
            !is_alive(pid, start)
        })?;
        self.changed();
        Ok(())
    }

    /// Frees the slot of `receiver_id` (its replication session ended); returns whether it had
    /// one. Its acknowledgements no longer count.
    pub fn release(&self, receiver_id: u64) -> bool {
        let found = release(self.table(), receiver_id);
        if found {
            self.changed();
        }
        found
    }

    /// Receivers that hold the stream up to `position` or further.
    pub fn acknowledged_by(&self, position: u64) -> usize {
        acknowledged_by(self.table(), position)
    }

    /// The highest position that at least `k` receivers hold (`None`: fewer than `k` receivers
    /// are recorded). A writer waiting for `k` replicas of everything before `p` is done when
    /// this is at least `p`.
    pub fn quorum_position(&self, k: usize) -> Option<u64> {
        quorum_position(self.table(), k)
    }

    /// Fills `out` with the receivers recorded now, one entry per receiver.
    pub fn snapshot(&self, out: &mut Vec<ReplicaAck>) {
        snapshot(self.table(), out)
    }

    /// The receivers recorded now, one entry per receiver.
    pub fn entries(&self) -> Vec<ReplicaAck> {
        let mut v = Vec::new();
        self.snapshot(&mut v);
        v
    }
}

/// This process's start time, read from `/proc` once.
fn own_start_time() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    *START.get_or_init(current_start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Box<[ReplicaAckSlot; REPLICA_ACK_SLOTS]> {
        // SAFETY: every field is an atomic integer or an integer array, valid when zeroed.
        Box::new(unsafe { std::mem::zeroed() })
    }

    const ME: Recorder = Recorder {
        pid: 7,
        start: 1,
        now_ns: 100,
    };

    fn alive(_: u32, _: u64) -> bool {
        false
    }

    fn dead(_: u32, _: u64) -> bool {
        true
    }

    #[test]
    fn records_counts_and_releases() {
        let t = table();
        assert_eq!(acknowledged_by(&*t, 0), 0);
        assert_eq!(quorum_position(&*t, 1), None);
        record(&*t, 1, 100, ME, &alive).unwrap();
        record(&*t, 2, 300, ME, &alive).unwrap();
        record(&*t, 1, 50, ME, &alive).unwrap(); // never backwards
        assert_eq!(acknowledged_by(&*t, 100), 2);
        assert_eq!(acknowledged_by(&*t, 101), 1);
        assert_eq!(quorum_position(&*t, 1), Some(300));
        assert_eq!(quorum_position(&*t, 2), Some(100));
        assert_eq!(quorum_position(&*t, 3), None);
        assert_eq!(quorum_position(&*t, 0), Some(u64::MAX));
        assert!(release(&*t, 2));
        assert!(!release(&*t, 2));
        assert_eq!(acknowledged_by(&*t, 100), 1);
        // A new receiver in the freed slot starts from its own position, not the old one.
        record(&*t, 3, 10, ME, &alive).unwrap();
        let mut v = Vec::new();
        snapshot(&*t, &mut v);
        assert_eq!(
            v.iter()
                .map(|e| (e.receiver_id, e.position))
                .collect::<Vec<_>>(),
            vec![(1, 100), (3, 10)]
        );
        assert_eq!(v[0].owner_pid, 7);
        assert_eq!(v[0].updated_ns, 100);
    }

    #[test]
    fn reserved_ids_are_refused() {
        let t = table();
        assert_eq!(
            record(&*t, 0, 1, ME, &alive),
            Err(ReplicaAckError::InvalidReceiverId(0))
        );
        assert_eq!(
            record(&*t, BUSY, 1, ME, &alive),
            Err(ReplicaAckError::InvalidReceiverId(BUSY))
        );
        assert!(!release(&*t, BUSY));
    }

    #[test]
    fn full_table_is_an_error_unless_an_owner_is_dead() {
        let t = table();
        for id in 1..=REPLICA_ACK_SLOTS as u64 {
            record(&*t, id, id * 8, ME, &alive).unwrap();
        }
        assert_eq!(
            record(&*t, 99, 8, ME, &alive),
            Err(ReplicaAckError::TableFull {
                slots: REPLICA_ACK_SLOTS
            })
        );
        // Known receivers still record.
        record(&*t, 3, 1000, ME, &alive).unwrap();
        // With dead owners, the first dead slot is reclaimed and starts at the new position.
        let other = Recorder { pid: 8, ..ME };
        record(&*t, 99, 8, other, &dead).unwrap();
        let mut v = Vec::new();
        snapshot(&*t, &mut v);
        assert_eq!(v.len(), REPLICA_ACK_SLOTS);
        let e = v.iter().find(|e| e.receiver_id == 99).unwrap();
        assert_eq!((e.position, e.owner_pid), (8, 8));
        assert!(!v.iter().any(|e| e.receiver_id == 1));
    }

    #[test]
    fn a_receiver_seen_in_two_slots_counts_once() {
        let t = table();
        // Forge the state a reader can meet mid-scan: the same receiver in two slots.
        for i in [0, 5] {
            t[i].position.store(200 + i as u64, Ordering::Relaxed);
            t[i].receiver.store(4, Ordering::Release);
        }
        assert_eq!(acknowledged_by(&*t, 100), 1);
        let mut v = Vec::new();
        snapshot(&*t, &mut v);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].position, 205);
        assert_eq!(quorum_position(&*t, 2), None);
    }

    #[test]
    fn concurrent_recorders_and_readers() {
        let t: std::sync::Arc<[ReplicaAckSlot; REPLICA_ACK_SLOTS]> = std::sync::Arc::from(table());
        let threads: Vec<_> = (0..4u64)
            .map(|n| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for round in 0..200u64 {
                        let id = n * 1000 + round % 3 + 1;
                        for p in 1..=20u64 {
                            record(&*t, id, id * 100 + p, ME, &alive).unwrap();
                        }
                        assert!(release(&*t, id));
                    }
                })
            })
            .collect();
        let mut v = Vec::new();
        while !threads.iter().all(|h| h.is_finished()) {
            snapshot(&*t, &mut v);
            for e in &v {
                // Every entry pairs a receiver with one of its own positions.
                assert!(
                    e.position > e.receiver_id * 100 && e.position <= e.receiver_id * 100 + 20,
                    "{e:?}"
                );
            }
        }
        for h in threads {
            h.join().unwrap();
        }
        snapshot(&*t, &mut v);
        assert!(v.is_empty());
    }
}
