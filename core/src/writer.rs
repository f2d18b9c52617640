//! Writers: the single-writer fast path, multi-writer claims, and zero-copy claims.

use crate::clock::EpochClock;
use crate::error::{Error, Result};
use crate::frame::{
    align_up, frame_len, payload_offset, HeaderFields, FLAG_CRC, HEADER_LEN, KIND_DATA,
};
use crate::meta::WRITER_SLOTS;
use crate::preparer::Preparer;
use crate::process::{current_pid, current_start_time, is_alive};
use crate::protocol::{self, ClaimTail, LogMemory, MultiClaim, Walked};
use crate::segment::Segment;
use crate::stream::Shared;
use crate::Position;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How far ahead of its tail a single writer keeps recycled segments cleared (bytes). It clears
/// in steps of this size, a few cache lines at a time, after commits.
const CLEAR_AHEAD: u64 = 1024;

/// Per-message options beyond the payload.
///
/// ```
/// use ringway_core::AppendOptions;
/// let opts = AppendOptions { type_id: 7, schema_version: 2, meta: b"sensors/1/temp" };
/// assert_eq!(opts.meta.len(), 14);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct AppendOptions<'a> {
    /// User message type stored in the frame header.
    pub type_id: u32,
    /// Schema version of `type_id`.
    pub schema_version: u16,
    /// Frame metadata (e.g. an MQTT topic and properties), stored before the payload.
    pub meta: &'a [u8],
}

enum Mode {
    Single,
    Multi { slot: usize },
}

impl ClaimTail for AtomicU64 {
    fn load(&self, order: Ordering) -> u64 {
        AtomicU64::load(self, order)
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
}

/// Appends messages to a stream.
///
/// A single-writer stream has one writer at a time (across processes); its appends use no
/// read-modify-write atomics. A multi-writer stream allows any number of writers, which claim
/// space with compare-exchange on a shared tail.
pub struct Writer {
    shared: Arc<Shared>,
    seg: Segment,
    /// Segment-local offset of the next frame (single-writer mode); written only by this writer.
    off: u64,
    /// Single-writer mode: every 8-byte word of the segment from `off` up to this offset is zero
    /// (or, below `off`, belongs to this lap's frames). Commit words at frame boundaries below it
    /// need no clearing before a commit; the writer keeps it ahead of itself in recycled
    /// segments, which still hold the previous lap's bytes. Always a multiple of 8.
    clear_to: u64,
    mode: Mode,
    clock: EpochClock,
    preparer: Preparer,
    messages: u64,
    max_message: usize,
    crc: bool,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("stream", &self.shared.name)
            .field("next", &self.next_position())
            .finish()
    }
}

impl Writer {
    pub(crate) fn open(shared: Arc<Shared>) -> Result<Writer> {
        if shared.config.replica {
            return Err(Error::ReadOnlyReplica(shared.name.clone()));
        }
        let mode = if shared.config.multi_writer {
            Mode::Multi {
                slot: take_slot(&shared)?,
            }
        } else {
            take_lock(&shared)?;
            Mode::Single
        };
        let result = Self::open_locked(shared.clone(), mode);
        if result.is_err() && !shared.config.multi_writer {
            release_lock(&shared);
        }
        result
    }

    fn open_locked(shared: Arc<Shared>, mode: Mode) -> Result<Writer> {
        let meta = shared.meta.get();
        let size = shared.segment_size();
        let (seg, off, messages) = match mode {
            Mode::Single => {
                let (seg, off) = recover_tail(&shared)?;
                (seg, off, meta.writer.messages.load(Ordering::Relaxed))
            }
            Mode::Multi { .. } => {
                let t = meta.claim.claim_tail.load(Ordering::Acquire);
                (open_or_create(&shared, t / size)?, 0, 0)
            }
        };
        // Recovery zeroed everything after the tail.
        let clear_to = size;
        crate::notify::register_writer_process();
        let mut preparer = Preparer::spawn(shared.clone());
        preparer.request_now(seg.index() + 1);
        let max_message = shared.config.max_message_size as usize;
        let crc = shared.config.crc;
        Ok(Writer {
            shared,
            seg,
            off,
            clear_to,
            mode,
            clock: EpochClock::new(),
            preparer,
            messages,
            max_message,
            crc,
        })
    }

    /// Appends `payload`; returns its position. Under back-pressure from a blocking cursor it
    /// waits (spinning, then yielding, then sleeping) until the cursor moves or is released.
    #[inline]
    pub fn append(&mut self, payload: &[u8]) -> Result<Position> {
        match self.append_fast(payload) {
            Some(pos) => Ok(pos),
            None => self.append_with(&AppendOptions::default(), payload),
        }
    }

    /// The common case of [`Writer::append`], inlined into the caller: a single writer without
    /// CRCs appending a frame that fits in the current segment. `None` sends every other case
    /// (roll, back-pressure, multi-writer, CRC, oversized payload and its error) down the general
    /// path. Returning a bare position instead of `Result<Position>` keeps the error type out of
    /// the caller's registers and stack on this path.
    #[inline(always)]
    fn append_fast(&mut self, payload: &[u8]) -> Option<Position> {
        if !matches!(self.mode, Mode::Single) || self.crc || payload.len() > self.max_message {
            return None;
        }
        let off = self.off;
        let flen = frame_len(0, payload.len());
        if off + align_up(flen) > self.seg.capacity() {
            return None;
        }
        let po = off + payload_offset(0) as u64;
        // SAFETY: single-writer mode: this writer alone owns the uncommitted space from `off`,
        // and `off + align_up(flen)` was checked against the segment's end above, so the payload
        // range `[po, po + len)` lies inside the mapping and is not yet visible to readers.
        let dst = unsafe { self.seg.slice_mut(po, payload.len()) };
        copy_payload(dst, payload);
        // No metadata, type, schema or CRC: every other field is zero.
        let fields = HeaderFields {
            kind: KIND_DATA,
            timestamp_ns: self.clock.now_ns(),
            ..HeaderFields::default()
        };
        Some(self.commit_single(off, flen, &fields))
    }

    /// Appends `payload` with a type id, schema version and frame metadata, waiting under
    /// back-pressure like [`Writer::append`].
    #[inline]
    pub fn append_with(&mut self, opts: &AppendOptions<'_>, payload: &[u8]) -> Result<Position> {
        match self.try_append_with(opts, payload) {
            Err(Error::WouldBlock { .. }) => self.append_blocked(opts, payload),
            r => r,
        }
    }

    /// The slow path of [`Writer::append_with`]: waits out back-pressure.
    #[cold]
    #[inline(never)]
    fn append_blocked(&mut self, opts: &AppendOptions<'_>, payload: &[u8]) -> Result<Position> {
        let mut idle = 0u32;
        loop {
            match self.try_append_with(opts, payload) {
                Err(Error::WouldBlock { .. }) => {
                    idle += 1;
                    if idle < 64 {
                        std::hint::spin_loop();
                    } else if idle < 128 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(std::time::Duration::from_micros(200));
                    }
                }
                r => return r,
            }
        }
    }

    /// Appends `payload`, failing with [`Error::WouldBlock`] under back-pressure.
    #[inline]
    pub fn try_append(&mut self, payload: &[u8]) -> Result<Position> {
        self.try_append_with(&AppendOptions::default(), payload)
    }

    /// As [`Writer::append_with`], failing with [`Error::WouldBlock`] under back-pressure.
    #[inline]
    pub fn try_append_with(
        &mut self,
        opts: &AppendOptions<'_>,
        payload: &[u8],
    ) -> Result<Position> {
        let mut claim = self.claim_inner(opts.meta.len(), payload.len())?;
        claim.type_id = opts.type_id;
        claim.schema_version = opts.schema_version;
        if !opts.meta.is_empty() {
            // SAFETY: the claim owns its frame's range until commit; meta fits between the header
            // and the payload offset.
            unsafe {
                claim
                    .writer
                    .seg
                    .write_bytes(claim.off + HEADER_LEN as u64, opts.meta)
            };
        }
        copy_payload(claim.payload_mut(), payload);
        claim.commit()
    }

    /// Appends every payload of `batch`; returns the position of the last (or the next position if empty).
    pub fn append_batch<'p, I: IntoIterator<Item = &'p [u8]>>(
        &mut self,
        batch: I,
    ) -> Result<Position> {
        let mut last = None;
        for p in batch {
            last = Some(self.append(p)?);
        }
        Ok(last.unwrap_or_else(|| self.next_position()))
    }

    /// Claims `len` bytes of payload in the mapping for zero-copy writing.
    ///
    /// ```
    /// use ringway_core::{Stream, StreamConfig};
    /// let root = tempfile::tempdir().unwrap();
    /// let stream = Stream::create(root.path(), "s", &StreamConfig::default().segment_size(1 << 20)).unwrap();
    /// let mut w = stream.writer().unwrap();
    /// let mut claim = w.try_claim(8).unwrap();
    /// claim.payload_mut().copy_from_slice(&42u64.to_le_bytes());
    /// claim.set_type_id(1);
    /// let pos = claim.commit().unwrap();
    /// assert_eq!(pos.get(), 0);
    /// ```
    #[inline]
    pub fn try_claim(&mut self, len: usize) -> Result<Claim<'_>> {
        self.claim_inner(0, len)
    }

    /// Claims a frame with `meta_len` bytes of metadata and `len` bytes of payload; the metadata
    /// is written with [`Claim::meta_mut`].
    pub fn try_claim_with_meta(&mut self, meta_len: usize, len: usize) -> Result<Claim<'_>> {
        self.claim_inner(meta_len, len)
    }

    #[inline]
    fn claim_inner(&mut self, meta_len: usize, len: usize) -> Result<Claim<'_>> {
        if meta_len + len > self.max_message || meta_len > u16::MAX as usize {
            return Err(Error::MessageTooLarge {
                len: meta_len + len,
                max: self.max_message,
            });
        }
        let flen = frame_len(meta_len, len);
        let off = match self.mode {
            Mode::Single => {
                if self.off + align_up(flen) > self.shared.segment_size() {
                    self.roll_single()?;
                }
                self.off
            }
            Mode::Multi { .. } => self.claim_multi(flen as u32)?,
        };
        Ok(Claim {
            writer: self,
            off,
            meta_len,
            len,
            claimed_len: flen as u32,
            type_id: 0,
            schema_version: 0,
            done: false,
        })
    }

    #[cold]
    #[inline(never)]
    fn roll_single(&mut self) -> Result<()> {
        let next = self.seg.index() + 1;
        // Take the next segment first: under back-pressure this fails and nothing changes.
        let seg = self.preparer.take(next)?;
        protocol::pad_to_end(&self.seg, self.off, self.seg.tag());
        self.clear_to = seg.cleared();
        let old = std::mem::replace(&mut self.seg, seg);
        self.off = 0;
        let meta = self.shared.meta.get();
        meta.writer.tail.store(self.seg.base(), Ordering::Release);
        meta.retention
            .current_segment
            .store(next, Ordering::Release);
        self.preparer.retire(old);
        self.preparer.request(next + 1);
        Ok(())
    }

    fn claim_multi(&mut self, flen: u32) -> Result<u64> {
        let size = self.shared.segment_size();
        loop {
            let meta = self.shared.meta.get();
            let tail = &meta.claim.claim_tail;
            match protocol::claim_multi(&self.seg, tail, self.seg.base(), flen, self.seg.tag()) {
                MultiClaim::Frame(off) => return Ok(off),
                MultiClaim::Lost => continue,
                MultiClaim::SegmentFull => {
                    let idx = tail.load(Ordering::Acquire) / size;
                    if idx != self.seg.index() {
                        let seg = if idx == self.seg.index() + 1 {
                            self.preparer.take(idx)?
                        } else {
                            open_or_create(&self.shared, idx)?
                        };
                        meta.retention
                            .current_segment
                            .fetch_max(idx, Ordering::AcqRel);
                        let old = std::mem::replace(&mut self.seg, seg);
                        self.preparer.retire(old);
                        self.preparer.request(idx + 1);
                    }
                }
            }
        }
    }

    /// Single-writer commit of the frame of `flen` bytes at `off`; returns its position.
    #[inline(always)]
    fn commit_single(&mut self, off: u64, flen: u64, fields: &HeaderFields) -> Position {
        // SAFETY: this writer owns the uncommitted frame at `off`.
        unsafe { protocol::write_fields(&self.seg, off, fields) };
        // The next frame's commit word must be zero before this frame is published: a reader that
        // sees this frame committed moves on to that word, and a recycled ring segment still holds
        // the previous lap's bytes. Normally `clear_to` is already past it (fresh segments are
        // zero, and the writer clears recycled ones ahead of itself below); otherwise a plain
        // store, ordered before the Release commit.
        let next = off + align_up(flen);
        let cap = self.seg.capacity();
        if next >= self.clear_to && next < cap {
            self.seg.store(next, 0, Ordering::Relaxed);
            self.clear_to = next + 8;
        }
        protocol::commit(&self.seg, off, flen as u32, self.seg.tag());
        // Clear ahead after the commit, so those stores never delay its visibility and the commit
        // path never loads a line it does not own yet.
        if self.clear_to < cap && self.clear_to < next + CLEAR_AHEAD {
            self.clear_ahead(next);
        }
        // Ask for the next frame's line for writing now: a reader waiting for that frame holds
        // it shared (it polls its commit word), and the next append's stores would otherwise
        // wait for the invalidation. Round trip between two pinned processes: p50 ~240 -> ~200 ns.
        self.seg.prefetch_write(next);
        self.off = next;
        self.messages += 1;
        let pos = self.seg.base() + off;
        let meta = self.shared.meta.get();
        // Release on the tail: `Start::End` readers and `stat` use it as a frame boundary.
        meta.writer
            .tail
            .store(self.seg.base() + next, Ordering::Release);
        meta.writer.messages.store(self.messages, Ordering::Relaxed);
        meta.writer
            .heartbeat_ns
            .store(fields.timestamp_ns, Ordering::Relaxed);
        crate::notify::wake_waiters(&meta.notify);
        Position(pos)
    }

    /// Zeroes the next stretch of a recycled segment after `next` (see `clear_to`).
    #[inline(never)]
    fn clear_ahead(&mut self, next: u64) {
        let from = self.clear_to.max(next);
        let to = (next + 2 * CLEAR_AHEAD).min(self.seg.capacity());
        // SAFETY: `[from, to)` lies past the frame just committed, beyond anything published in
        // this lap; this writer alone writes there (single-writer lock), and readers of this lap
        // never read past the zero word at `next`. Readers lapped by the ring that still look at
        // the old bytes detect it through the first position.
        unsafe { self.seg.zero(from, to - from) };
        self.clear_to = to;
    }

    /// Multi-writer commit of the claimed frame at `off`.
    #[inline(never)]
    fn commit_multi(
        &mut self,
        off: u64,
        claimed_len: u32,
        flen: u64,
        mut fields: HeaderFields,
        slot: usize,
    ) -> Result<Position> {
        fields.reserved = slot as u16 + 1;
        let pos = self.seg.base() + off;
        // SAFETY: this writer owns the claimed frame at `off`.
        unsafe { protocol::write_fields(&self.seg, off, &fields) };
        if !protocol::commit_multi(&self.seg, off, claimed_len, flen as u32, self.seg.tag()) {
            return Err(Error::ClaimRecovered(Position(pos)));
        }
        self.messages += 1;
        let meta = self.shared.meta.get();
        let s = &meta.slots[slot];
        s.messages.store(self.messages, Ordering::Relaxed);
        s.heartbeat_ns.store(fields.timestamp_ns, Ordering::Relaxed);
        meta.writer
            .tail
            .fetch_max(pos + align_up(flen), Ordering::AcqRel);
        crate::notify::wake_waiters(&meta.notify);
        Ok(Position(pos))
    }

    /// Position the next single-writer append will get (multi-writer: the shared claim tail).
    pub fn next_position(&self) -> Position {
        match self.mode {
            Mode::Single => Position(self.seg.base() + self.off),
            Mode::Multi { .. } => Position(
                self.shared
                    .meta
                    .get()
                    .claim
                    .claim_tail
                    .load(Ordering::Acquire),
            ),
        }
    }

    /// Messages appended to the stream (single writer: since creation; multi-writer: by this writer).
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Flushes committed frames of the current segment and the metadata to storage (msync).
    ///
    /// After a process crash every committed frame survives (the page cache holds it); after a
    /// power loss only what a completed `flush` covered survives.
    pub fn flush(&mut self) -> Result<()> {
        let end = match self.mode {
            Mode::Single => self.off,
            Mode::Multi { .. } => self.shared.segment_size(),
        };
        if end > 0 {
            self.seg.flush_range(0, end)?;
        }
        self.shared.meta.flush()?;
        let pos = self.seg.base() + end;
        self.shared
            .meta
            .get()
            .writer
            .flushed
            .fetch_max(pos, Ordering::AcqRel);
        Ok(())
    }

    /// Flushes written data to storage in the background every `interval` (`None` turns it off),
    /// so at most about one interval of data is lost on power failure, without an msync on the
    /// append path.
    pub fn set_flush_interval(&mut self, interval: Option<std::time::Duration>) {
        self.preparer.flush_every(interval);
    }

    /// Refreshes this writer's heartbeat without appending (for idle writers).
    pub fn heartbeat(&self) {
        let now = self.clock.now_ns();
        let meta = self.shared.meta.get();
        match self.mode {
            Mode::Single => meta.writer.heartbeat_ns.store(now, Ordering::Relaxed),
            Mode::Multi { slot } => meta.slots[slot].heartbeat_ns.store(now, Ordering::Relaxed),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let meta = self.shared.meta.get();
        match self.mode {
            Mode::Single => release_lock(&self.shared),
            Mode::Multi { slot } => {
                let s = &meta.slots[slot];
                s.start.store(0, Ordering::Relaxed);
                // Release: the slot's counters are final before another process may take the slot.
                let _ =
                    s.pid
                        .compare_exchange(current_pid(), 0, Ordering::Release, Ordering::Relaxed);
            }
        }
    }
}

/// Space claimed in the mapping for one message; commit it to publish, drop or abort it to discard.
pub struct Claim<'w> {
    writer: &'w mut Writer,
    off: u64,
    meta_len: usize,
    len: usize,
    /// Frame length published in the claimed commit word (multi-writer).
    claimed_len: u32,
    type_id: u32,
    schema_version: u16,
    done: bool,
}

impl std::fmt::Debug for Claim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("position", &self.position())
            .field("len", &self.len)
            .finish()
    }
}

impl Claim<'_> {
    /// Position the frame will have.
    pub fn position(&self) -> Position {
        Position(self.writer.seg.base() + self.off)
    }

    /// The payload bytes to fill (exactly the claimed length; contents unspecified until written).
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let po = self.off + payload_offset(self.meta_len) as u64;
        // SAFETY: the claim owns the frame's range until commit or abort; the range is inside the
        // segment (claim_inner checked the stride against the segment end), and `&mut self`
        // guarantees no other reference to it from this writer.
        unsafe { self.writer.seg.slice_mut(po, self.len) }
    }

    /// The metadata bytes to fill (claims made with [`Writer::try_claim_with_meta`]).
    pub fn meta_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `payload_mut`; meta sits between the header and the payload.
        unsafe {
            self.writer
                .seg
                .slice_mut(self.off + HEADER_LEN as u64, self.meta_len)
        }
    }

    /// Sets the frame's user type id.
    pub fn set_type_id(&mut self, type_id: u32) {
        self.type_id = type_id;
    }

    /// Sets the frame's schema version.
    pub fn set_schema_version(&mut self, v: u16) {
        self.schema_version = v;
    }

    /// Shrinks the payload to its first `len` bytes before committing (for serializers that only
    /// know the size afterwards). The unused rest never becomes readable. `len` larger than the
    /// claimed length is ignored.
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        let old_stride = align_up(frame_len(self.meta_len, self.len));
        let new_stride = align_up(frame_len(self.meta_len, len));
        self.len = len;
        let w = &mut *self.writer;
        let gap = self.off + new_stride;
        let slack = old_stride - new_stride;
        if slack == 0 {
            return;
        }
        match w.mode {
            // SAFETY: the claim owns `off..off+old_stride`; clearing the slack before the commit
            // keeps serializer scratch bytes from ever being read as a frame.
            Mode::Single => unsafe { w.seg.zero(gap, slack) },
            Mode::Multi { .. } => {
                // The claimed range stays allocated: fill the slack with padding. Readers only
                // reach it after the frame's Release commit, which orders this store.
                // SAFETY: as above.
                unsafe { w.seg.zero(gap, slack) };
                let pad = crate::frame::CommitWord::new(
                    slack as u32,
                    crate::frame::State::Padding,
                    w.seg.tag(),
                );
                w.seg.store(gap, pad.0, Ordering::Relaxed);
            }
        }
    }

    /// Publishes the frame to readers; returns its position.
    #[inline]
    pub fn commit(mut self) -> Result<Position> {
        self.done = true;
        let off = self.off;
        let flen = frame_len(self.meta_len, self.len);
        let now = self.writer.clock.now_ns();
        let mut fields = HeaderFields {
            kind: KIND_DATA,
            flags: 0,
            meta_len: self.meta_len as u16,
            type_id: self.type_id,
            timestamp_ns: now,
            crc32c: 0,
            schema_version: self.schema_version,
            reserved: 0,
        };
        if self.writer.crc {
            fields.flags |= FLAG_CRC;
            fields.crc32c = self.crc32c();
        }
        let w = &mut *self.writer;
        match w.mode {
            Mode::Single => Ok(w.commit_single(off, flen, &fields)),
            Mode::Multi { slot } => w.commit_multi(off, self.claimed_len, flen, fields, slot),
        }
    }

    /// CRC32C of the frame's metadata and payload.
    #[inline(never)]
    fn crc32c(&self) -> u32 {
        let seg = &self.writer.seg;
        let meta = seg.slice(self.off + HEADER_LEN as u64, self.meta_len);
        let payload = seg.slice(self.off + payload_offset(self.meta_len) as u64, self.len);
        crc32c::crc32c_append(crc32c::crc32c(meta), payload)
    }

    /// Discards the claim: nothing becomes visible to readers.
    pub fn abort(mut self) {
        self.abort_inner();
    }

    fn abort_inner(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let w = &mut *self.writer;
        let flen = frame_len(self.meta_len, self.len);
        let claimed_len = self.claimed_len;
        match w.mode {
            // Zero what the caller may have written so no stale bytes can look like a frame later.
            // SAFETY: this writer owns the uncommitted range.
            Mode::Single => unsafe { w.seg.zero(self.off, align_up(flen)) },
            Mode::Multi { .. } => {
                protocol::abandon_claim(&w.seg, self.off, claimed_len, w.seg.tag());
            }
        }
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.abort_inner();
    }
}

/// Copies `src` into `dst` (same length). Small payloads, the common case on latency-sensitive
/// streams, are copied with a few overlapping unaligned word moves inline instead of a call into
/// the general `memcpy`, whose call and size dispatch cost more than the copy itself.
#[inline(always)]
fn copy_payload(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    assert_eq!(dst.len(), n, "claim and payload lengths differ");
    let (d, s) = (dst.as_mut_ptr(), src.as_ptr());
    // SAFETY: both slices are `n` bytes long (asserted above), so every access below is in
    // bounds: each branch reads and writes `[0, k)` and `[n - k, n)` with `k <= n`. Unaligned
    // reads/writes are used throughout; `dst` and `src` cannot overlap (one is borrowed mutably).
    unsafe {
        match n {
            0 => {}
            1..=7 => std::ptr::copy_nonoverlapping(s, d, n),
            8..=16 => {
                let a = s.cast::<u64>().read_unaligned();
                let b = s.add(n - 8).cast::<u64>().read_unaligned();
                d.cast::<u64>().write_unaligned(a);
                d.add(n - 8).cast::<u64>().write_unaligned(b);
            }
            17..=32 => {
                let a = s.cast::<u128>().read_unaligned();
                let b = s.add(n - 16).cast::<u128>().read_unaligned();
                d.cast::<u128>().write_unaligned(a);
                d.add(n - 16).cast::<u128>().write_unaligned(b);
            }
            33..=64 => {
                let a = s.cast::<u128>().read_unaligned();
                let b = s.add(16).cast::<u128>().read_unaligned();
                let c = s.add(n - 32).cast::<u128>().read_unaligned();
                let e = s.add(n - 16).cast::<u128>().read_unaligned();
                d.cast::<u128>().write_unaligned(a);
                d.add(16).cast::<u128>().write_unaligned(b);
                d.add(n - 32).cast::<u128>().write_unaligned(c);
                d.add(n - 16).cast::<u128>().write_unaligned(e);
            }
            _ => std::ptr::copy_nonoverlapping(s, d, n),
        }
    }
}

fn open_or_create(s: &Shared, index: u64) -> Result<Segment> {
    match Segment::open(&s.dir, index, s.segment_size(), true)? {
        Some(seg) => Ok(seg),
        None => Segment::create(&s.dir, index, s.segment_size(), s.config.file_mode),
    }
}

/// Takes the single-writer lock, stealing it from a dead holder.
fn take_lock(s: &Shared) -> Result<()> {
    let lock = &s.meta.get().lock;
    let me = current_pid();
    let my_start = current_start_time();
    loop {
        // Acquire: if we take over from a previous writer, its tail and counters are visible.
        let holder = lock.writer_pid.load(Ordering::Acquire);
        if holder == me {
            return Err(Error::WriterBusy {
                name: s.name.clone(),
                pid: me,
            });
        }
        if holder != 0 && is_alive(holder, lock.writer_start.load(Ordering::Relaxed)) {
            return Err(Error::WriterBusy {
                name: s.name.clone(),
                pid: holder,
            });
        }
        if lock
            .writer_pid
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            lock.writer_start.store(my_start, Ordering::Relaxed);
            return Ok(());
        }
    }
}

fn release_lock(s: &Shared) {
    let lock = &s.meta.get().lock;
    lock.writer_start.store(0, Ordering::Relaxed);
    // Release: our last tail/counter stores happen-before the next writer's Acquire of the lock.
    let _ =
        lock.writer_pid
            .compare_exchange(current_pid(), 0, Ordering::Release, Ordering::Relaxed);
}

/// Takes a free (or dead) multi-writer slot.
fn take_slot(s: &Shared) -> Result<usize> {
    let meta = s.meta.get();
    let me = current_pid();
    let start = current_start_time();
    for (i, slot) in meta.slots.iter().enumerate() {
        let pid = slot.pid.load(Ordering::Acquire);
        let free = pid == 0 || (pid != me && !is_alive(pid, slot.start.load(Ordering::Relaxed)));
        if free
            && slot
                .pid
                .compare_exchange(pid, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            slot.start.store(start, Ordering::Relaxed);
            slot.messages.store(0, Ordering::Relaxed);
            return Ok(i);
        }
    }
    Err(Error::TooManyWriters {
        name: s.name.clone(),
        slots: WRITER_SLOTS,
    })
}

/// Finds the end of the committed frames for a new single writer and clears whatever a dead
/// writer left beyond it.
fn recover_tail(s: &Shared) -> Result<(Segment, u64)> {
    let meta = s.meta.get();
    let size = s.segment_size();
    let hint = meta
        .writer
        .tail
        .load(Ordering::Acquire)
        .max(s.first_position());
    let mut index = hint / size;
    let mut off = hint % size;
    let mut seg = open_or_create(s, index)?;
    // Stops at the first word that is unwritten, claimed, foreign, or of a length no frame can
    // have: the tail.
    while let Some(Walked::Data { next, .. } | Walked::Padding { next }) =
        protocol::walk_step(&seg, off, seg.tag())
    {
        off = next;
        if off >= size {
            index += 1;
            off = 0;
            seg = open_or_create(s, index)?;
        }
    }
    // Everything from the tail to the segment end is unpublished: a dead writer's partial frame,
    // or zeros. Clear it so stale bytes can never be read as a frame.
    // SAFETY: we hold the single-writer lock, so nobody else writes; readers never read past an
    // unpublished commit word.
    unsafe { seg.zero(off, size - off) };
    let tail = seg.base() + off;
    meta.writer.tail.store(tail, Ordering::Release);
    meta.retention
        .current_segment
        .store(index, Ordering::Release);
    Ok((seg, off))
}
