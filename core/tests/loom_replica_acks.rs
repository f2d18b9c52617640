//! Model checks of the replica-acknowledgement table's take / record / release / read protocol
//! under loom (`core/src/replica_acks.rs`, module docs). `LoomTable` implements
//! [`AckWords`] with loom atomics and loom's fence, so loom explores every interleaving of the
//! same code the memory-mapped table runs. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p ringway-core --test loom_replica_acks --release
//! ```
#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use ringway_core::replica_acks::{
    record, release, snapshot, AckWord, AckWords, Recorder, ReplicaAck, SlotWords,
};
use std::sync::atomic::Ordering;

struct Word(AtomicU64);

impl AckWord for Word {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
    }
    fn store(&self, value: u64, order: Ordering) {
        self.0.store(value, order)
    }
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.0.compare_exchange(current, new, success, failure)
    }
    fn fetch_max(&self, value: u64, order: Ordering) -> u64 {
        self.0.fetch_max(value, order)
    }
}

/// `n` slots of five words.
struct LoomTable {
    words: Vec<Word>,
}

impl LoomTable {
    fn new(slots: usize) -> Self {
        LoomTable {
            words: (0..slots * 5).map(|_| Word(AtomicU64::new(0))).collect(),
        }
    }
}

impl AckWords for LoomTable {
    type Word = Word;
    fn slots(&self) -> usize {
        self.words.len() / 5
    }
    fn slot(&self, i: usize) -> SlotWords<'_, Word> {
        let w = &self.words[i * 5..i * 5 + 5];
        SlotWords {
            receiver: &w[0],
            position: &w[1],
            updated_ns: &w[2],
            owner_pid: &w[3],
            owner_start: &w[4],
        }
    }
    fn fence(&self, order: Ordering) {
        loom::sync::atomic::fence(order)
    }
}

const ME: Recorder = Recorder {
    pid: 1,
    start: 1,
    now_ns: 1,
};

fn never_dead(_: u32, _: u64) -> bool {
    false
}

fn read(t: &LoomTable) -> Vec<(u64, u64)> {
    let mut v: Vec<ReplicaAck> = Vec::new();
    snapshot(t, &mut v);
    v.iter().map(|e| (e.receiver_id, e.position)).collect()
}

/// A slot released by one receiver and taken by the next while a reader scans it: the reader
/// never pairs one receiver with the other's position.
#[test]
fn reused_slot_never_mixes_receivers() {
    loom::model(|| {
        let t = Arc::new(LoomTable::new(1));
        record(&*t, 1, 100, ME, &never_dead).unwrap();
        let w = t.clone();
        let h = thread::spawn(move || {
            assert!(release(&*w, 1));
            record(&*w, 2, 10, ME, &never_dead).unwrap();
        });
        let seen = read(&t);
        assert!(
            seen.is_empty() || seen == [(1, 100)] || seen == [(2, 10)],
            "{seen:?}"
        );
        h.join().unwrap();
        assert_eq!(read(&t), [(2, 10)]);
    });
}

/// Two recorders taking slots at once get different slots; a reader sees each with its own
/// position.
#[test]
fn concurrent_takes_get_distinct_slots() {
    loom::model(|| {
        let t = Arc::new(LoomTable::new(2));
        let hs: Vec<_> = [(1u64, 5u64), (2, 7)]
            .into_iter()
            .map(|(id, pos)| {
                let w = t.clone();
                thread::spawn(move || record(&*w, id, pos, ME, &never_dead).unwrap())
            })
            .collect();
        for e in read(&t) {
            assert!(e == (1, 5) || e == (2, 7), "{e:?}");
        }
        for h in hs {
            h.join().unwrap();
        }
        let mut all = read(&t);
        all.sort();
        assert_eq!(all, [(1, 5), (2, 7)]);
    });
}

/// A receiver released from one slot and recorded again (into the other) during a scan is
/// counted once.
#[test]
fn a_receiver_moving_slots_counts_once() {
    loom::model(|| {
        let t = Arc::new(LoomTable::new(2));
        record(&*t, 1, 100, ME, &never_dead).unwrap();
        let w = t.clone();
        let h = thread::spawn(move || {
            // Receiver 9 takes slot 0 once 1 left it, so 1 comes back in slot 1.
            assert!(release(&*w, 1));
            record(&*w, 9, 1, ME, &never_dead).unwrap();
            record(&*w, 1, 200, ME, &never_dead).unwrap();
            assert!(release(&*w, 9));
        });
        let seen = read(&t);
        assert!(seen.iter().filter(|e| e.0 == 1).count() <= 1, "{seen:?}");
        for e in &seen {
            assert!(*e == (1, 100) || *e == (1, 200) || *e == (9, 1), "{e:?}");
        }
        h.join().unwrap();
        assert_eq!(read(&t), [(1, 200)]);
    });
}
