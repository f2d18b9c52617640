//! The claim / commit / read protocol over one segment, independent of how the segment is stored.
//!
//! Everything that touches shared frame memory goes through [`LogMemory`], implemented by the
//! memory-mapped segments in production and by a loom-instrumented buffer in the model tests
//! (`core/tests/loom_protocol.rs`). Offsets are relative to the segment start and always 8-byte
//! aligned.
//!
//! # Synchronisation (the SYNC POINTs)
//! * **Commit**: a writer fills the header fields, metadata and payload with plain stores, then
//!   stores the commit word with `Release` (single writer) or swaps it from the claimed value with a
//!   `Release` compare-exchange (multi-writer). A reader loads the commit word with `Acquire`; when
//!   it sees a data word with the segment's tag, every byte the writer stored before the commit is
//!   visible to it. This pair is the only ordering the hot path needs.
//! * **Claim (multi-writer)**: writers advance the shared claim tail with compare-exchange, then
//!   publish "claimed" in the frame's commit word. The claim tail is only ever compared, so
//!   `AcqRel`/`Acquire` is enough: no frame bytes are published through it.
//! * **Recovery**: a hole left by a dead writer is turned into padding word by word with
//!   compare-exchange from zero, so a writer that is merely slow either publishes its claim first
//!   (and recovery stops before it) or finds its words poisoned and learns that its claim is gone.

use crate::frame::{align_up, CommitWord, HeaderFields, State, HEADER_LEN};
use core::sync::atomic::Ordering;

/// Shared storage for one segment, as the protocol sees it.
///
/// # Safety
/// Implementors must map `0..capacity()` to memory that stays valid for the implementor's lifetime,
/// and must make `load`/`store`/`compare_exchange` atomic 64-bit operations on 8-byte-aligned
/// offsets. Byte accessors may alias memory written concurrently by other processes; the protocol
/// only reads bytes after an `Acquire` load of a commit word that a `Release` published.
pub unsafe trait LogMemory {
    /// Size of the segment in bytes (a multiple of 8).
    fn capacity(&self) -> u64;
    /// Atomically loads the word at `off`.
    fn load(&self, off: u64, order: Ordering) -> u64;
    /// Atomically stores the word at `off`.
    fn store(&self, off: u64, value: u64, order: Ordering);
    /// Atomic compare-exchange of the word at `off`.
    fn compare_exchange(
        &self,
        off: u64,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
    /// Copies `src` to `off`.
    ///
    /// # Safety
    /// `off + src.len() <= capacity()`, and the caller owns the range (it claimed it and has not
    /// committed it), so no reader reads it concurrently under the protocol.
    unsafe fn write_bytes(&self, off: u64, src: &[u8]);
    /// Copies bytes at `off` into `dst`.
    ///
    /// # Safety
    /// `off + dst.len() <= capacity()`, and the range belongs to a frame whose commit word was
    /// observed committed with `Acquire` (or the caller owns the range).
    unsafe fn read_bytes(&self, off: u64, dst: &mut [u8]);
    /// Sets `len` bytes at `off` to zero.
    ///
    /// # Safety
    /// As for [`LogMemory::write_bytes`].
    unsafe fn zero(&self, off: u64, len: u64);
}

/// The shared claim tail of a multi-writer stream (a stream position).
pub trait ClaimTail {
    /// Loads the tail.
    fn load(&self, order: Ordering) -> u64;
    /// Compare-exchange on the tail.
    fn compare_exchange(
        &self,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64>;
}

/// What a reader finds at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peek {
    /// Nothing written yet (zero word).
    Empty,
    /// A claim in progress (or a hole being recovered): wait.
    InProgress {
        /// Claimed frame length (0 while a hole is being recovered).
        len: u32,
    },
    /// A committed data frame of `len` bytes.
    Data {
        /// Unaligned frame length.
        len: u32,
    },
    /// Padding to skip.
    Padding {
        /// Bytes to skip.
        len: u32,
    },
    /// A word written for another segment (another ring lap) or corrupt bits.
    Foreign(CommitWord),
}

/// Loads and classifies the commit word at `off` (`Acquire`: SYNC POINT with [`commit`]).
#[inline]
pub fn peek<M: LogMemory + ?Sized>(mem: &M, off: u64, tag: u32) -> Peek {
    let word = CommitWord(mem.load(off, Ordering::Acquire));
    classify(word, tag)
}

/// Classifies a commit word (see [`peek`]).
#[inline]
pub fn classify(word: CommitWord, tag: u32) -> Peek {
    if word == CommitWord::EMPTY {
        return Peek::Empty;
    }
    if word == CommitWord::POISON {
        return Peek::InProgress { len: 0 };
    }
    if word.tag() != tag {
        return Peek::Foreign(word);
    }
    match word.state() {
        Some(State::Data) => Peek::Data { len: word.len() },
        Some(State::Padding) => Peek::Padding { len: word.len() },
        Some(State::Claimed) => Peek::InProgress { len: word.len() },
        None => Peek::Foreign(word),
    }
}

/// A committed frame or padding met by a walk over a segment's frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walked {
    /// A data frame of `len` bytes; the next frame starts at `next`.
    Data {
        /// Unaligned frame length.
        len: u32,
        /// Segment offset of the next frame.
        next: u64,
    },
    /// Padding; the next frame starts at `next`.
    Padding {
        /// Segment offset of the next frame.
        next: u64,
    },
}

/// One step of a walk over committed frames (`Acquire`, as [`peek`]).
///
/// Returns the frame at `off` when it is committed data or padding whose length is possible
/// (data at least a header long, padding a non-zero multiple of 8) and ends inside the segment;
/// `None` for anything else: unwritten, claimed, foreign or damaged words all end a walk, so a
/// walk never stalls, misaligns or runs past the segment.
#[inline]
pub fn walk_step<M: LogMemory + ?Sized>(mem: &M, off: u64, tag: u32) -> Option<Walked> {
    let room = mem.capacity().checked_sub(off)?;
    match peek(mem, off, tag) {
        Peek::Data { len } if len as usize >= HEADER_LEN && align_up(len as u64) <= room => {
            Some(Walked::Data {
                len,
                next: off + align_up(len as u64),
            })
        }
        Peek::Padding { len } if len > 0 && len % 8 == 0 && len as u64 <= room => {
            Some(Walked::Padding {
                next: off + len as u64,
            })
        }
        _ => None,
    }
}

/// Writes header fields (bytes 8..32) for a frame at `off`.
///
/// # Safety
/// The caller owns `off..off + HEADER_LEN` (claimed, not yet committed).
#[inline]
pub unsafe fn write_fields<M: LogMemory + ?Sized>(mem: &M, off: u64, fields: &HeaderFields) {
    // SAFETY: forwarded from the caller: the range is claimed and uncommitted.
    unsafe { mem.write_bytes(off + 8, &fields.encode()) };
}

/// Publishes a single-writer frame of `len` bytes at `off` (`Release`: SYNC POINT with [`peek`]).
///
/// The header fields, metadata and payload must already be written.
#[inline]
pub fn commit<M: LogMemory + ?Sized>(mem: &M, off: u64, len: u32, tag: u32) {
    mem.store(
        off,
        CommitWord::new(len, State::Data, tag).0,
        Ordering::Release,
    );
}

/// Writes padding from `off` to the end of the segment (single writer), so readers move on.
pub fn pad_to_end<M: LogMemory + ?Sized>(mem: &M, off: u64, tag: u32) {
    let room = mem.capacity() - off;
    if room > 0 {
        // Release: readers that see the padding also see nothing else, but keep the same pairing
        // as commits so a reader never reorders it before earlier frames.
        mem.store(
            off,
            CommitWord::new(room as u32, State::Padding, tag).0,
            Ordering::Release,
        );
    }
}

/// Result of a multi-writer claim attempt inside one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MultiClaim {
    /// The frame at this segment offset is ours; its commit word says "claimed".
    Frame(u64),
    /// The segment is full (this writer may have padded its end): claim again in the segment
    /// holding the claim tail.
    SegmentFull,
    /// Recovery poisoned the claimed space before the claim was published: claim again.
    Lost,
}

/// Claims `len` bytes (unaligned frame length) in the segment starting at stream position `base`.
///
/// `owner` is stored nowhere by this function; see the caller for slot bookkeeping.
pub fn claim_multi<M: LogMemory + ?Sized, T: ClaimTail + ?Sized>(
    mem: &M,
    tail: &T,
    base: u64,
    len: u32,
    tag: u32,
) -> MultiClaim {
    let cap = mem.capacity();
    let stride = align_up(len as u64);
    loop {
        // Acquire pairs with the AcqRel of other claimers only for the value; no data rides on it.
        let t = tail.load(Ordering::Acquire);
        if t < base || t >= base + cap {
            return MultiClaim::SegmentFull;
        }
        let off = t - base;
        if off + stride > cap {
            if tail
                .compare_exchange(t, base + cap, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                // We own off..cap: publish it as padding. If recovery poisoned it meanwhile, the
                // space is being padded by recovery instead; either way readers move on.
                let pad = CommitWord::new((cap - off) as u32, State::Padding, tag).0;
                let _ = mem.compare_exchange(off, 0, pad, Ordering::Release, Ordering::Relaxed);
                return MultiClaim::SegmentFull;
            }
            continue;
        }
        if tail
            .compare_exchange(t, t + stride, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let claimed = CommitWord::new(len, State::Claimed, tag).0;
            // Relaxed on success: the claimed word publishes no data; readers only wait on it.
            return match mem.compare_exchange(off, 0, claimed, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => MultiClaim::Frame(off),
                Err(_) => MultiClaim::Lost,
            };
        }
    }
}

/// Publishes a multi-writer frame claimed with [`claim_multi`] for `claimed_len` bytes, as a frame
/// of `len <= claimed_len` bytes (the caller padded any slack between the two strides).
///
/// Returns `false` when recovery took the claim away (the frame became padding and its bytes are
/// lost); the writer must not assume the message is in the stream.
#[inline]
pub fn commit_multi<M: LogMemory + ?Sized>(
    mem: &M,
    off: u64,
    claimed_len: u32,
    len: u32,
    tag: u32,
) -> bool {
    let claimed = CommitWord::new(claimed_len, State::Claimed, tag).0;
    let data = CommitWord::new(len, State::Data, tag).0;
    // Release: SYNC POINT with `peek`'s Acquire, as for single-writer commits.
    mem.compare_exchange(off, claimed, data, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Turns a claimed-but-uncommitted frame at `off` into padding (abort, or recovery of a frame whose
/// owner died). Returns `false` if the frame was committed or changed meanwhile.
pub fn abandon_claim<M: LogMemory + ?Sized>(mem: &M, off: u64, len: u32, tag: u32) -> bool {
    let claimed = CommitWord::new(len, State::Claimed, tag).0;
    let pad = CommitWord::new(align_up(len as u64) as u32, State::Padding, tag).0;
    mem.compare_exchange(off, claimed, pad, Ordering::Release, Ordering::Relaxed)
        .is_ok()
}

/// Turns a run of never-written words starting at `off` into padding (recovery of a claim whose
/// owner died before publishing it).
///
/// Every zero word from `off` up to `limit` (a segment offset, at most the capacity) is poisoned
/// with compare-exchange until the first word that is not zero; then the padding word is published
/// at `off`. Returns the padding length, or `None` if `off` itself was not zero any more.
pub fn pad_hole<M: LogMemory + ?Sized>(mem: &M, off: u64, limit: u64, tag: u32) -> Option<u64> {
    let limit = limit.min(mem.capacity());
    // Relaxed: poisoning publishes nothing; it only has to win or lose against a writer's claim
    // publication, which compare-exchange decides on the single word.
    if mem
        .compare_exchange(
            off,
            0,
            CommitWord::POISON.0,
            Ordering::Relaxed,
            Ordering::Relaxed,
        )
        .is_err()
    {
        return None;
    }
    let mut end = off + 8;
    while end < limit
        && mem
            .compare_exchange(
                end,
                0,
                CommitWord::POISON.0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_ok()
    {
        end += 8;
    }
    let len = end - off;
    // Release: readers that see the padding see the poisoned words too (they never read them, but
    // a later recovery pass must not treat them as a fresh hole).
    mem.store(
        off,
        CommitWord::new(len as u32, State::Padding, tag).0,
        Ordering::Release,
    );
    Some(len)
}

/// Copies a committed frame's header fields.
///
/// # Safety
/// The frame at `off` was observed committed via [`peek`] (Acquire).
pub unsafe fn read_fields<M: LogMemory + ?Sized>(mem: &M, off: u64) -> HeaderFields {
    let mut b = [0u8; HEADER_LEN - 8];
    // SAFETY: forwarded from the caller: the frame is committed, so its header is stable.
    unsafe { mem.read_bytes(off + 8, &mut b) };
    HeaderFields::decode(&b)
}
