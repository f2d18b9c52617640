//! Model checks of the claim / commit / read / recovery protocol under loom.
//!
//! `LoomMemory` implements [`LogMemory`] with a loom atomic per 8-byte word (the commit words)
//! and a `loom::cell::UnsafeCell` per 8-byte chunk for frame bytes, so loom explores every
//! interleaving and reports any byte access that is not ordered by the protocol's
//! Release/Acquire pairs. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p ringway-core --test loom_protocol --release
//! ```
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use ringway_core::frame::{frame_len, HeaderFields, HEADER_LEN};
use ringway_core::protocol::{
    self, abandon_claim, claim_multi, commit, commit_multi, pad_hole, peek, read_fields, ClaimTail,
    LogMemory, MultiClaim, Peek,
};
use std::sync::atomic::Ordering;

const TAG: u32 = 1;

/// One segment of `words` 8-byte words.
struct LoomMemory {
    words: Vec<AtomicU64>,
    bytes: Vec<UnsafeCell<[u8; 8]>>,
}

impl LoomMemory {
    fn new(words: usize) -> Self {
        LoomMemory {
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            bytes: (0..words).map(|_| UnsafeCell::new([0; 8])).collect(),
        }
    }
    fn word(&self, off: u64) -> &AtomicU64 {
        assert_eq!(off % 8, 0, "commit words are 8-byte aligned");
        &self.words[(off / 8) as usize]
    }
}

// SAFETY: `words` and `bytes` cover `capacity()` bytes for the memory's lifetime; word accessors
// are loom atomics (64-bit, aligned by construction); byte accessors go through loom cells, which
// check the caller's claim that nobody accesses the range concurrently.
unsafe impl LogMemory for LoomMemory {
    fn capacity(&self) -> u64 {
        self.words.len() as u64 * 8
    }
    fn load(&self, off: u64, order: Ordering) -> u64 {
        self.word(off).load(order)
    }
    fn store(&self, off: u64, value: u64, order: Ordering) {
        self.word(off).store(value, order)
    }
    fn compare_exchange(
        &self,
        off: u64,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.word(off)
            .compare_exchange(current, new, success, failure)
    }
    unsafe fn write_bytes(&self, off: u64, src: &[u8]) {
        assert!(off + src.len() as u64 <= self.capacity());
        for (i, &b) in src.iter().enumerate() {
            let at = off as usize + i;
            // SAFETY: loom checks that no other thread accesses this chunk concurrently.
            self.bytes[at / 8].with_mut(|c| unsafe { (*c)[at % 8] = b });
        }
    }
    unsafe fn read_bytes(&self, off: u64, dst: &mut [u8]) {
        assert!(off + dst.len() as u64 <= self.capacity());
        for (i, b) in dst.iter_mut().enumerate() {
            let at = off as usize + i;
            // SAFETY: loom checks that no other thread writes this chunk concurrently.
            *b = self.bytes[at / 8].with(|c| unsafe { (*c)[at % 8] });
        }
    }
    unsafe fn zero(&self, off: u64, len: u64) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write_bytes(off, &vec![0; len as usize]) }
    }
}

struct Tail(AtomicU64);

impl ClaimTail for Tail {
    fn load(&self, order: Ordering) -> u64 {
        self.0.load(order)
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
}

/// Payload of the frames in these models.
const PAYLOAD: usize = 8;

fn fields(id: u8) -> HeaderFields {
    HeaderFields {
        type_id: id as u32,
        ..Default::default()
    }
}

/// Writes header fields and payload of a claimed (not yet committed) frame.
fn fill(mem: &LoomMemory, off: u64, id: u8) {
    // SAFETY: the caller owns the claimed, uncommitted frame at `off`.
    unsafe {
        protocol::write_fields(mem, off, &fields(id));
        mem.write_bytes(off + HEADER_LEN as u64, &[id; PAYLOAD]);
    }
}

/// Reads a frame a reader observed as committed data and checks it is whole; returns its id.
fn read_committed(mem: &LoomMemory, off: u64) -> u8 {
    // SAFETY: the frame's commit word was observed as data with Acquire.
    let f = unsafe { read_fields(mem, off) };
    let mut p = [0u8; PAYLOAD];
    // SAFETY: as above.
    unsafe { mem.read_bytes(off + HEADER_LEN as u64, &mut p) };
    let id = f.type_id as u8;
    assert!(id != 0, "header fields must be visible with the commit");
    assert_eq!(
        p, [id; PAYLOAD],
        "payload must be whole when the frame is visible"
    );
    id
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(3);
    }
    b.check(f);
}

const LEN: u32 = frame_len(0, PAYLOAD) as u32;
const STRIDE: u64 = ((LEN as u64) + 7) & !7;

#[test]
fn single_writer_commit_is_seen_whole_or_not_at_all() {
    model(|| {
        let mem = Arc::new(LoomMemory::new(16));
        let w = {
            let mem = mem.clone();
            thread::spawn(move || {
                fill(&mem, 0, 7);
                commit(&*mem, 0, LEN, TAG);
                fill(&mem, STRIDE, 8);
                commit(&*mem, STRIDE, LEN, TAG);
            })
        };
        let mut off = 0;
        while off < 2 * STRIDE {
            match peek(&*mem, off, TAG) {
                Peek::Data { len } => {
                    assert_eq!(len, LEN);
                    assert_eq!(read_committed(&mem, off), 7 + (off / STRIDE) as u8);
                    off += STRIDE;
                }
                Peek::Empty => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        w.join().unwrap();
    });
}

/// The model must be able to fail: publishing with a Relaxed store lets a reader see the commit
/// before the payload, which loom reports as a causality violation.
#[test]
#[should_panic(expected = "Causality violation")]
fn a_relaxed_commit_is_caught() {
    model(|| {
        let mem = Arc::new(LoomMemory::new(8));
        let w = {
            let mem = mem.clone();
            thread::spawn(move || {
                fill(&mem, 0, 7);
                let word = ringway_core::frame::CommitWord::new(
                    LEN,
                    ringway_core::frame::State::Data,
                    TAG,
                );
                mem.store(0, word.0, Ordering::Relaxed);
            })
        };
        if let Peek::Data { .. } = protocol::classify(
            ringway_core::frame::CommitWord(mem.load(0, Ordering::Relaxed)),
            TAG,
        ) {
            read_committed(&mem, 0);
        }
        w.join().unwrap();
    });
}

#[test]
fn two_multi_writer_claimers_and_a_reader() {
    model(|| {
        let mem = Arc::new(LoomMemory::new(16));
        let tail = Arc::new(Tail(AtomicU64::new(0)));
        let writers: Vec<_> = [1u8, 2]
            .into_iter()
            .map(|id| {
                let mem = mem.clone();
                let tail = tail.clone();
                thread::spawn(move || {
                    let MultiClaim::Frame(off) = claim_multi(&*mem, &*tail, 0, LEN, TAG) else {
                        panic!("room for both frames, and nobody recovers")
                    };
                    fill(&mem, off, id);
                    assert!(commit_multi(&*mem, off, LEN, LEN, TAG));
                    off
                })
            })
            .collect();
        // The reader reads in order and stops at the first frame not committed yet.
        let mut off = 0;
        let mut seen = Vec::new();
        while off < 2 * STRIDE {
            match peek(&*mem, off, TAG) {
                Peek::Data { len } => {
                    assert_eq!(len, LEN);
                    seen.push(read_committed(&mem, off));
                    off += STRIDE;
                }
                Peek::Empty | Peek::InProgress { .. } => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        let mut offs: Vec<u64> = writers.into_iter().map(|h| h.join().unwrap()).collect();
        offs.sort_unstable();
        assert_eq!(offs, vec![0, STRIDE], "claims never overlap");
        assert_eq!(tail.load(Ordering::Relaxed), 2 * STRIDE);
        seen.dedup();
        assert!(seen.len() <= 2);
        // Afterwards both frames are committed, whole, one per writer.
        let a = read_committed(&mem, 0);
        let b = read_committed(&mem, STRIDE);
        assert_ne!(a, b);
    });
}

/// A reader recovering a hole (a zero word below the claim tail) races the writer that claimed
/// it and has not published its claim yet: either the claim is published first and recovery
/// leaves it alone, or the claim is lost and the writer knows it. Never a message reported
/// committed that readers skip as padding.
#[test]
fn pad_hole_racing_a_slow_claimer() {
    model(|| {
        let mem = Arc::new(LoomMemory::new(8));
        let tail = Arc::new(Tail(AtomicU64::new(0)));
        let claimer = {
            let mem = mem.clone();
            let tail = tail.clone();
            thread::spawn(move || match claim_multi(&*mem, &*tail, 0, LEN, TAG) {
                MultiClaim::Frame(off) => {
                    assert_eq!(off, 0);
                    fill(&mem, off, 5);
                    Some(commit_multi(&*mem, off, LEN, LEN, TAG))
                }
                MultiClaim::Lost => None,
                MultiClaim::SegmentFull => panic!("room for the frame"),
            })
        };
        // Recovery as a reader does it: a zero word below the claim tail is a hole.
        let recovered = {
            let t = tail.load(Ordering::Acquire);
            if t > 0 && peek(&*mem, 0, TAG) == Peek::Empty {
                pad_hole(&*mem, 0, t, TAG)
            } else {
                None
            }
        };
        let outcome = claimer.join().unwrap();
        let final_word = peek(&*mem, 0, TAG);
        match outcome {
            Some(committed) => {
                assert!(
                    committed,
                    "a published claim is never taken by hole recovery"
                );
                assert_eq!(recovered, None);
                assert_eq!(final_word, Peek::Data { len: LEN });
                assert_eq!(read_committed(&mem, 0), 5);
            }
            None => {
                assert_eq!(recovered, Some(STRIDE), "the lost claim's space is padding");
                assert_eq!(final_word, Peek::Padding { len: STRIDE as u32 });
            }
        }
    });
}

/// Recovery of a published but stalled claim (abandon after the claim timeout) races its commit:
/// exactly one wins, and the writer learns which.
#[test]
fn abandon_claim_racing_commit() {
    model(|| {
        let mem = Arc::new(LoomMemory::new(8));
        let tail = Tail(AtomicU64::new(0));
        let MultiClaim::Frame(off) = claim_multi(&*mem, &tail, 0, LEN, TAG) else {
            panic!("claim")
        };
        let writer = {
            let mem = mem.clone();
            thread::spawn(move || {
                fill(&mem, off, 9);
                commit_multi(&*mem, off, LEN, LEN, TAG)
            })
        };
        let abandoned = match peek(&*mem, off, TAG) {
            Peek::InProgress { len } if len > 0 => abandon_claim(&*mem, off, len, TAG),
            Peek::Data { .. } => {
                read_committed(&mem, off);
                false
            }
            other => panic!("unexpected {other:?}"),
        };
        let committed = writer.join().unwrap();
        assert_ne!(
            committed, abandoned,
            "exactly one of commit and recovery wins"
        );
        match peek(&*mem, off, TAG) {
            Peek::Data { .. } => {
                assert!(committed);
                read_committed(&mem, off);
            }
            Peek::Padding { len } => {
                assert!(abandoned);
                assert_eq!(len as u64, STRIDE);
            }
            other => panic!("unexpected {other:?}"),
        }
    });
}
