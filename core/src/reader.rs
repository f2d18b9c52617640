//! Readers: lock-free, zero-copy, any number per stream, in any process.

use crate::error::{Error, Result};
use crate::frame::{align_up, payload_offset, HeaderFields, HEADER_LEN};
use crate::protocol::{self, Peek, Walked};
use crate::segment::Segment;
use crate::stream::Shared;
use crate::Position;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How far ahead of its position a polling reader asks the processor to fetch (bytes). The next
/// frame's address depends on the current frame's length, a load that misses when the writer
/// just wrote the line; fetching a few lines ahead lets a reader that lags the writer stream
/// through finished lines instead of taking one cross-core miss per frame in turn.
const PREFETCH_AHEAD: u64 = 512;

/// Frames one `poll` call handles before it starts prefetching. A reader that has caught up
/// with the writer finds a few frames per call; prefetching then would pull in the lines the
/// writer is about to fill, so each of them crosses between the cores twice more (the writer
/// has to take it back before writing, and the reader fetches it again). A long run of committed
/// frames means the reader lags, and only then is fetching ahead a gain: on a 4 x 16 MiB ring
/// with a busy-polling reader, 32-byte messages went from 16 M/s (prefetching from the first
/// frame) to 41 M/s, while a reader replaying a filled segment kept its 70-80 M frames/s.
const PREFETCH_AFTER: usize = 64;

/// Where a reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The oldest retained frame.
    Beginning,
    /// After the last committed frame: only new messages.
    End,
    /// A frame position (must be a frame boundary still retained).
    Position(Position),
    /// The first frame whose timestamp is at or after this many ns since the Unix epoch.
    Time(u64),
}

/// A committed frame, borrowed from the mapping.
#[derive(Clone, Copy)]
pub struct Frame<'a> {
    position: Position,
    fields: HeaderFields,
    raw: &'a [u8],
    padding: bool,
}

impl std::fmt::Debug for Frame<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("position", &self.position)
            .field("type_id", &self.fields.type_id)
            .field("len", &self.payload().len())
            .field("padding", &self.padding)
            .finish()
    }
}

impl<'a> Frame<'a> {
    /// Position of the frame.
    #[inline]
    pub fn position(&self) -> Position {
        self.position
    }
    /// Position of the frame after this one.
    #[inline]
    pub fn next_position(&self) -> Position {
        let stride = if self.padding {
            self.raw.len() as u64
        } else {
            align_up(self.raw.len() as u64)
        };
        Position(self.position.0 + stride)
    }
    /// Write time, ns since the Unix epoch.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.fields.timestamp_ns
    }
    /// User type id.
    #[inline]
    pub fn type_id(&self) -> u32 {
        self.fields.type_id
    }
    /// Schema version of the type id.
    #[inline]
    pub fn schema_version(&self) -> u16 {
        self.fields.schema_version
    }
    /// Header flags.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.fields.flags
    }
    /// Frame kind (data or metadata).
    #[inline]
    pub fn kind(&self) -> u8 {
        self.fields.kind
    }
    /// All header fields.
    #[inline]
    pub fn header(&self) -> HeaderFields {
        self.fields
    }
    /// `true` for padding frames (only yielded by the raw readers).
    #[inline]
    pub fn is_padding(&self) -> bool {
        self.padding
    }
    /// Frame metadata (e.g. an MQTT topic), empty if none.
    #[inline]
    pub fn meta(&self) -> &'a [u8] {
        if self.padding {
            return &[];
        }
        &self.raw[HEADER_LEN..HEADER_LEN + self.fields.meta_len as usize]
    }
    /// The message payload. Its address is 8-byte aligned.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        if self.padding {
            return &[];
        }
        &self.raw[payload_offset(self.fields.meta_len as usize)..]
    }
    /// The frame's bytes exactly as stored: header, meta and payload (padding: its whole length).
    #[inline]
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }
}

/// Reads a stream from a position onwards.
///
/// Readers never block and never take locks: [`Reader::poll`] returns 0 when nothing new is
/// committed. They map segments read-only; only abandoned-claim recovery opens a segment for
/// writing, briefly.
pub struct Reader {
    shared: Arc<Shared>,
    seg: Option<Segment>,
    /// Segment index the reader is in.
    index: u64,
    /// Segment-local offset of the next frame.
    off: u64,
    size: u64,
    ring: bool,
    multi: bool,
    /// Check each frame's CRC32C when it carries one (on by default for CRC streams).
    check_crc: bool,
    /// Where and since when the reader has been waiting on an unpublished frame.
    stall: Option<(u64, Instant)>,
    /// Ring streams: mappings of segments the reader left, reused when it meets their files
    /// again under the next lap's names (at most one lap of them).
    spare: Vec<Segment>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("stream", &self.shared.name)
            .field("position", &self.position())
            .finish()
    }
}

enum Step {
    Frame(u64),
    Pad(u64),
    Wait,
}

impl Reader {
    pub(crate) fn open(shared: Arc<Shared>, start: Start) -> Result<Reader> {
        let size = shared.segment_size();
        let mut r = Reader {
            ring: shared.config.ring_segments.is_some(),
            multi: shared.config.multi_writer,
            check_crc: shared.config.crc,
            shared,
            seg: None,
            index: 0,
            off: 0,
            size,
            stall: None,
            spare: Vec::new(),
        };
        let first = r.shared.first_position();
        let pos = match start {
            Start::Beginning => first,
            Start::End => {
                let m = r.shared.meta.get();
                if r.multi {
                    m.claim.claim_tail.load(Ordering::Acquire)
                } else {
                    m.writer.tail.load(Ordering::Acquire)
                }
            }
            Start::Position(p) => r.check_boundary(p.0)?,
            Start::Time(ns) => crate::seek::position_for_time(&r.shared, ns)?,
        };
        r.index = pos / size;
        r.off = pos % size;
        Ok(r)
    }

    /// Checks that `pos` is retained and a frame boundary.
    fn check_boundary(&self, pos: u64) -> Result<u64> {
        let first = self.shared.first_position();
        if pos < first {
            return Err(Error::Lapped {
                requested: Position(pos),
                oldest: Position(first),
            });
        }
        let size = self.size;
        let index = pos / size;
        let target = pos % size;
        let bad = || Error::BadPosition {
            requested: Position(pos),
            tail: None,
        };
        if !target.is_multiple_of(8) {
            return Err(bad());
        }
        // Read before the lookup (see `map_segment`): a segment the writer enters after it is found.
        let current = self.current_segment();
        let Some(seg) = Segment::open(&self.shared.dir, index, size, false)? else {
            return if pos.is_multiple_of(size) && index == current + 1 {
                Ok(pos)
            } else {
                Err(bad())
            };
        };
        let mut off = 0;
        while off < target {
            match protocol::walk_step(&seg, off, seg.tag()) {
                Some(Walked::Data { next, .. } | Walked::Padding { next }) => off = next,
                // Unwritten, claimed or damaged before the target: not a boundary.
                None => return Err(bad()),
            }
        }
        if off == target {
            Ok(pos)
        } else {
            Err(bad())
        }
    }

    /// Turns checking of per-frame CRC32C on or off (on by default for streams created with CRC).
    /// A frame whose CRC does not match fails with [`Error::CorruptFrame`].
    pub fn set_crc_check(&mut self, on: bool) {
        self.check_crc = on;
    }

    /// Whether the stream is a ring (frames can be overwritten by a later lap while borrowed).
    pub fn is_ring(&self) -> bool {
        self.ring
    }

    /// The next position this reader will read.
    pub fn position(&self) -> Position {
        Position(self.index * self.size + self.off)
    }

    /// Moves the reader to another start.
    pub fn seek(&mut self, start: Start) -> Result<()> {
        let r = Reader::open(self.shared.clone(), start)?;
        let check_crc = self.check_crc;
        *self = r;
        self.check_crc = check_crc;
        Ok(())
    }

    /// Moves to `pos`, which the caller knows to be a frame boundary (a position a frame or
    /// `next_position` returned), without walking the segment to check it.
    pub(crate) fn jump(&mut self, pos: u64) {
        self.index = pos / self.size;
        self.off = pos % self.size;
        self.stall = None;
    }

    /// Blocks in the kernel until a frame is committed at the reader's position or `timeout`
    /// passes; returns whether a frame (or padding to skip) is ready.
    ///
    /// Writers make no system call while no reader is blocked, so busy-polling readers of the same
    /// stream pay nothing for this (see `docs/format.md`, blocking waits).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool> {
        if self.ready()? {
            return Ok(true);
        }
        let shared = self.shared.clone();
        let n = &shared.meta.get().notify;
        let deadline = Instant::now() + timeout;
        // SeqCst: the increment must be globally visible before the barrier and the re-check.
        n.waiters.fetch_add(1, Ordering::SeqCst);
        let result = (|| {
            let exact = crate::notify::global_barrier();
            loop {
                // Acquire: pairs with the writer's Release increment before FUTEX_WAKE.
                let seq = n.futex.load(Ordering::Acquire);
                if self.ready()? {
                    return Ok(true);
                }
                let now = Instant::now();
                if now >= deadline {
                    return Ok(false);
                }
                let mut slice = deadline - now;
                if !exact {
                    slice = slice.min(Duration::from_millis(1));
                }
                crate::notify::futex_wait(&n.futex, seq, slice);
                if n.futex.load(Ordering::Acquire) != seq {
                    // Woken: by a commit (then data is ready) or by `Stream::wake_readers`.
                    return self.ready();
                }
            }
        })();
        n.waiters.fetch_sub(1, Ordering::SeqCst);
        result
    }

    /// Whether the next step would make progress (a frame or padding is committed).
    fn ready(&mut self) -> Result<bool> {
        Ok(!matches!(self.step()?, Step::Wait))
    }

    /// Handles up to `limit` committed data frames with `handler`; returns how many.
    ///
    /// In a ring stream the writer may overwrite a frame while a slow handler still looks at it;
    /// `poll` detects that after the handler returns and fails with [`Error::Lapped`] (the bytes
    /// the handler saw may be torn). Copy what must outlive a lap.
    #[inline]
    pub fn poll<F: FnMut(Frame<'_>)>(&mut self, limit: usize, handler: F) -> Result<usize> {
        self.poll_inner(limit, false, handler)
    }

    /// As [`Reader::poll`], but also yields padding frames (for replication).
    pub fn poll_raw<F: FnMut(Frame<'_>)>(&mut self, limit: usize, handler: F) -> Result<usize> {
        self.poll_inner(limit, true, handler)
    }

    /// The next committed data frame, if any.
    ///
    /// In a ring stream the frame's bytes can be overwritten by a later lap while borrowed; use
    /// [`Reader::poll`] there.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Frame<'_>>> {
        self.next_inner(false)
    }

    /// As [`Reader::next`], but also yields padding frames.
    pub fn next_raw(&mut self) -> Result<Option<Frame<'_>>> {
        self.next_inner(true)
    }

    fn next_inner(&mut self, raw: bool) -> Result<Option<Frame<'_>>> {
        loop {
            match self.step()? {
                Step::Wait => return Ok(None),
                Step::Pad(len) => {
                    let at = self.off;
                    self.advance(len);
                    if raw {
                        let seg = self.seg_at(at, len);
                        return Ok(Some(padding_frame(seg, at, len)));
                    }
                }
                Step::Frame(len) => {
                    let at = self.off;
                    // `advance`, not `off +=`: a frame may end exactly at the segment end, with no
                    // closing padding. The old mapping stays in `self.seg` until the next step.
                    self.advance(align_up(len));
                    let seg = self.seg.as_ref().expect("segment mapped by step");
                    return Ok(Some(data_frame(seg, at, len)));
                }
            }
        }
    }

    fn seg_at(&self, _at: u64, _len: u64) -> &Segment {
        self.seg.as_ref().expect("segment mapped by step")
    }

    fn poll_inner<F: FnMut(Frame<'_>)>(
        &mut self,
        limit: usize,
        raw: bool,
        mut handler: F,
    ) -> Result<usize> {
        let mut n = 0;
        while n < limit {
            match self.step()? {
                Step::Wait => break,
                Step::Pad(len) => {
                    if raw {
                        let seg = self.seg.as_ref().expect("segment mapped by step");
                        handler(padding_frame(seg, self.off, len));
                        n += 1;
                    }
                    self.advance(len);
                }
                Step::Frame(len) => {
                    let seg = self.seg.as_ref().expect("segment mapped by step");
                    if n >= PREFETCH_AFTER {
                        seg.prefetch(self.off + PREFETCH_AHEAD);
                    }
                    handler(data_frame(seg, self.off, len));
                    if self.ring {
                        self.check_not_lapped()?;
                    }
                    // A frame may end exactly at the segment end, with no closing padding.
                    self.advance(align_up(len));
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    #[inline]
    fn advance(&mut self, len: u64) {
        self.off += len;
        if self.off >= self.size {
            self.index += 1;
            self.off = 0;
            // The old mapping is dropped when the next step maps the new segment.
        }
    }

    /// Classifies the frame at the reader's position, mapping segments and recovering holes.
    #[inline]
    fn step(&mut self) -> Result<Step> {
        let seg = match &self.seg {
            Some(s) if s.index() == self.index => s,
            _ => {
                if !self.map_segment()? {
                    return Ok(Step::Wait);
                }
                self.seg.as_ref().expect("just mapped")
            }
        };
        match protocol::peek(seg, self.off, seg.tag()) {
            Peek::Data { len } => {
                let len = len as u64;
                let meta_len = {
                    let b = seg.slice(self.off + 10, 2);
                    u16::from_le_bytes([b[0], b[1]]) as usize
                };
                if len < HEADER_LEN as u64
                    || self.off + align_up(len) > self.size
                    || payload_offset(meta_len) as u64 > len
                {
                    return Err(
                        self.corrupt(crate::frame::FrameError::BadLength { len: len as u32 })
                    );
                }
                if self.check_crc {
                    let flags = seg.slice(self.off + 9, 1)[0];
                    if flags & crate::frame::FLAG_CRC != 0 {
                        let b = seg.slice(self.off + 24, 4);
                        let stored = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        let meta = seg.slice(self.off + HEADER_LEN as u64, meta_len);
                        let po = payload_offset(meta_len) as u64;
                        let payload = seg.slice(self.off + po, (len - po) as usize);
                        let computed = crc32c::crc32c_append(crc32c::crc32c(meta), payload);
                        if computed != stored {
                            return Err(self.corrupt(crate::frame::FrameError::CrcMismatch {
                                stored,
                                computed,
                            }));
                        }
                    }
                }
                self.stall = None;
                Ok(Step::Frame(len))
            }
            Peek::Padding { len } => {
                let len = len as u64;
                if len == 0 || !len.is_multiple_of(8) || self.off + len > self.size {
                    return Err(
                        self.corrupt(crate::frame::FrameError::BadPadding { len: len as u32 })
                    );
                }
                self.stall = None;
                Ok(Step::Pad(len))
            }
            Peek::Empty => {
                self.check_not_lapped()?;
                if self.multi {
                    self.maybe_recover(None)?;
                }
                Ok(Step::Wait)
            }
            Peek::InProgress { len } => {
                self.check_not_lapped()?;
                self.maybe_recover(Some(len))?;
                Ok(Step::Wait)
            }
            Peek::Foreign(w) => {
                self.check_not_lapped()?;
                Err(self.corrupt(crate::frame::FrameError::WrongTag {
                    expected: seg.tag(),
                    found: w.tag(),
                }))
            }
        }
    }

    fn corrupt(&self, reason: crate::frame::FrameError) -> Error {
        Error::CorruptFrame {
            position: self.position(),
            reason,
        }
    }

    /// Fails with `Lapped` if retention or the ring has moved past the reader's position.
    #[inline]
    fn check_not_lapped(&self) -> Result<()> {
        // Acquire fence: bytes read before this point (a frame's payload, or a zero word) were
        // read before the first position below; paired with the Release fence in retention.
        fence(Ordering::Acquire);
        let first = self.shared.first_position();
        let pos = self.position().0;
        if pos < first {
            return Err(Error::Lapped {
                requested: Position(pos),
                oldest: Position(first),
            });
        }
        Ok(())
    }

    /// The segment the writer is in (Acquire: it publishes it only after the file exists).
    fn current_segment(&self) -> u64 {
        self.shared
            .meta
            .get()
            .retention
            .current_segment
            .load(Ordering::Acquire)
    }

    /// Maps the reader's segment; `false` if it does not exist yet.
    fn map_segment(&mut self) -> Result<bool> {
        let left = self.seg.take();
        if let (Some(seg), Some(ring)) = (left, self.shared.config.ring_segments) {
            self.spare.push(seg);
            if self.spare.len() > ring as usize {
                self.spare.remove(0);
            }
        }
        // Read before the file is looked for: writers publish the current segment only after its
        // file exists (Acquire pairs with that Release), and never delete a retained segment. A
        // file missing below the segment current *before* the lookup is therefore damage (or a
        // lap), not a segment still to come. Read after a failed lookup instead, it would also
        // count a segment that the writer created and left in between (a reader that reached the
        // end of a segment exactly filled by frames arrives before the writer's roll).
        let current = self.current_segment();
        // Page tables are populated at map time (for a 16 MiB segment of the page cache, a few
        // hundred µs once), so the reader never takes a page fault on the hot path: a lazily
        // mapped segment faults once per fault-around block, a few µs every thousand frames.
        match Segment::open_reusing(
            &self.shared.dir,
            self.index,
            self.size,
            false,
            &mut self.spare,
        )? {
            Some(s) => {
                self.seg = Some(s);
                Ok(true)
            }
            None => {
                self.check_not_lapped()?;
                if self.index < current {
                    // Retention or the ring may have moved past us since the check above.
                    self.check_not_lapped()?;
                    return Err(Error::CorruptFile {
                        path: crate::segment::segment_path(&self.shared.dir, self.index, self.size),
                        reason: format!(
                            "segment file is missing while the stream continues in segment {current}"
                        ),
                    });
                }
                Ok(false)
            }
        }
    }

    /// Turns an abandoned claim or hole at the reader's position into padding once it has been
    /// stuck for the stream's claim timeout.
    fn maybe_recover(&mut self, claimed_len: Option<u32>) -> Result<()> {
        let pos = self.position().0;
        let meta = self.shared.meta.get();
        if claimed_len.is_none() {
            // A zero word is a hole only if claims went past it.
            if meta.claim.claim_tail.load(Ordering::Acquire) <= pos {
                self.stall = None;
                return Ok(());
            }
        }
        let since = match self.stall {
            Some((p, t)) if p == pos => t,
            _ => {
                self.stall = Some((pos, Instant::now()));
                return Ok(());
            }
        };
        if since.elapsed() < self.shared.config.claim_timeout {
            return Ok(());
        }
        crate::recovery::recover_at(&self.shared, pos, claimed_len)?;
        self.stall = None;
        Ok(())
    }
}

fn data_frame(seg: &Segment, off: u64, len: u64) -> Frame<'_> {
    let raw = seg.slice(off, len as usize);
    let fields = HeaderFields::decode(raw[8..HEADER_LEN].try_into().expect("header is 24 bytes"));
    Frame {
        position: Position(seg.base() + off),
        fields,
        raw,
        padding: false,
    }
}

fn padding_frame(seg: &Segment, off: u64, len: u64) -> Frame<'_> {
    Frame {
        position: Position(seg.base() + off),
        fields: HeaderFields::default(),
        raw: seg.slice(off, len as usize),
        padding: true,
    }
}
