//! Writing replicated frames: the same bytes at the same positions as on the primary.

use crate::error::{Error, Result};
use crate::frame::{parse_frame, tag_for_segment};
use crate::process::{current_pid, current_start_time, is_alive};
use crate::protocol::LogMemory;
use crate::segment::Segment;
use crate::stream::Shared;
use crate::Position;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Writes frames received from a primary into a replica stream.
///
/// Frames must arrive in position order; each is validated (header, length, segment bounds,
/// CRC when flagged) before it is written, and published with its commit word last, so local
/// readers of the replica read it exactly as readers of the primary do.
pub struct ReplicaWriter {
    shared: Arc<Shared>,
    seg: Segment,
    off: u64,
    messages: u64,
}

impl std::fmt::Debug for ReplicaWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaWriter")
            .field("stream", &self.shared.name)
            .field("next", &self.next_position())
            .finish()
    }
}

impl ReplicaWriter {
    pub(crate) fn open(shared: Arc<Shared>) -> Result<ReplicaWriter> {
        if !shared.config.replica {
            return Err(Error::NotAReplica(shared.name.clone()));
        }
        let lock = &shared.meta.get().lock;
        let me = current_pid();
        loop {
            let holder = lock.writer_pid.load(Ordering::Acquire);
            if holder != 0
                && (holder == me || is_alive(holder, lock.writer_start.load(Ordering::Relaxed)))
            {
                return Err(Error::WriterBusy {
                    name: shared.name.clone(),
                    pid: holder,
                });
            }
            if lock
                .writer_pid
                .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                lock.writer_start
                    .store(current_start_time(), Ordering::Relaxed);
                break;
            }
        }
        let size = shared.segment_size();
        let tail = shared
            .meta
            .get()
            .writer
            .tail
            .load(Ordering::Acquire)
            .max(shared.first_position());
        let seg = match Segment::open(&shared.dir, tail / size, size, true)? {
            Some(s) => s,
            None => Segment::create(&shared.dir, tail / size, size, shared.config.file_mode)?,
        };
        let messages = shared.meta.get().writer.messages.load(Ordering::Relaxed);
        let w = ReplicaWriter {
            shared,
            seg,
            off: tail % size,
            messages,
        };
        // Clear anything a killed receiver left past the tail.
        // SAFETY: we hold the writer lock; readers never read past the unpublished tail word.
        unsafe { w.seg.zero(w.off, size - w.off) };
        w.publish_tail();
        Ok(w)
    }

    /// Position the next frame must have.
    pub fn next_position(&self) -> Position {
        Position(self.seg.base() + self.off)
    }

    /// Writes one frame (`raw` as returned by [`crate::Frame::raw`] on the primary) at `pos`.
    pub fn write_frame(&mut self, pos: Position, raw: &[u8]) -> Result<()> {
        let size = self.shared.segment_size();
        if pos != self.next_position() {
            return Err(Error::BadPosition {
                requested: pos,
                tail: Some(self.next_position()),
            });
        }
        let tag = tag_for_segment(pos.0 / size);
        let room = size - self.off;
        // Validate against the room left in the segment: a frame can never cross a segment end.
        let mut buf_len = raw.len() as u64;
        if buf_len > room {
            buf_len = room;
        }
        let crc = |m: &[u8], p: &[u8]| crc32c::crc32c_append(crc32c::crc32c(m), p);
        let parsed = parse_frame(&raw[..buf_len as usize], tag, Some(&crc)).map_err(|reason| {
            Error::CorruptFrame {
                position: pos,
                reason,
            }
        })?;
        if parsed.raw.len() != raw.len() {
            return Err(Error::CorruptFrame {
                position: pos,
                reason: crate::frame::FrameError::BadLength {
                    len: raw.len() as u32,
                },
            });
        }
        let stride = parsed.stride();
        let word = u64::from_le_bytes(raw[0..8].try_into().expect("8 bytes"));
        // SAFETY: we hold the writer lock and the range off..off+stride lies inside the segment
        // (parse_frame checked it against `room`); readers do not read it before the commit word.
        unsafe {
            self.seg.write_bytes(self.off + 8, &raw[8..]);
            let pad = stride - raw.len() as u64;
            if pad > 0 {
                self.seg.zero(self.off + raw.len() as u64, pad);
            }
        }
        // Release: SYNC POINT with readers' Acquire, as for a local commit.
        self.seg.store(self.off, word, Ordering::Release);
        if !parsed.is_padding() {
            self.messages += 1;
        }
        self.off += stride;
        if self.off >= size {
            let next = self.seg.index() + 1;
            self.seg = match Segment::open(&self.shared.dir, next, size, true)? {
                Some(s) => s,
                None => {
                    Segment::create(&self.shared.dir, next, size, self.shared.config.file_mode)?
                }
            };
            self.off = 0;
            self.shared
                .meta
                .get()
                .retention
                .current_segment
                .store(next, Ordering::Release);
            crate::preparer::apply_retention(&self.shared, next);
        }
        self.publish_tail();
        Ok(())
    }

    fn publish_tail(&self) {
        let m = self.shared.meta.get();
        crate::notify::wake_waiters(&m.notify);
        m.writer
            .tail
            .store(self.seg.base() + self.off, Ordering::Release);
        m.writer.messages.store(self.messages, Ordering::Relaxed);
        m.writer
            .heartbeat_ns
            .store(crate::clock::system_now_ns(), Ordering::Relaxed);
    }

    /// msync of the current segment and metadata.
    pub fn flush(&mut self) -> Result<()> {
        if self.off > 0 {
            self.seg.flush_range(0, self.off)?;
        }
        self.shared.meta.flush()
    }
}

impl Drop for ReplicaWriter {
    fn drop(&mut self) {
        let lock = &self.shared.meta.get().lock;
        lock.writer_start.store(0, Ordering::Relaxed);
        let _ = lock.writer_pid.compare_exchange(
            current_pid(),
            0,
            Ordering::Release,
            Ordering::Relaxed,
        );
    }
}
