//! Stream statistics for operators (`ringway stat`).

use crate::error::Result;
use crate::process::is_alive;
use crate::segment::list_segments;
use crate::{Position, Stream};
use std::sync::atomic::Ordering;

/// A live or dead writer registered on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterInfo {
    /// Process id.
    pub pid: u32,
    /// Whether the process is running.
    pub alive: bool,
    /// Last append or heartbeat, ns since the epoch (0 = never).
    pub heartbeat_ns: u64,
    /// Multi-writer slot, `None` for the single writer.
    pub slot: Option<usize>,
}

/// A snapshot of a stream's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamStat {
    /// Stream name.
    pub name: String,
    /// Segment files present.
    pub segments: u64,
    /// Bytes of segment files retained.
    pub bytes: u64,
    /// Oldest readable position.
    pub first_position: Position,
    /// Position after the last frame.
    pub last_position: Position,
    /// Messages appended since creation.
    pub messages: u64,
    /// Registered writers.
    pub writers: Vec<WriterInfo>,
    /// Abandoned claims turned into padding.
    pub recovered_claims: u64,
    /// Segments deleted or recycled by retention.
    pub deleted_segments: u64,
    /// Blocking cursors released because their owner was gone.
    pub released_cursors: u64,
    /// Times a writer was refused space by a blocking cursor.
    pub back_pressure_events: u64,
    /// Segment size.
    pub segment_size: u64,
    /// `"append"` or `"ring"`.
    pub mode: &'static str,
    /// Multi-writer stream.
    pub multi_writer: bool,
    /// Replica stream.
    pub replica: bool,
}

impl Stream {
    /// Reads the stream's current state.
    pub fn stat(&self) -> Result<StreamStat> {
        let s = &self.shared;
        let m = s.meta.get();
        let segs = list_segments(&s.dir)?;
        let mut writers = Vec::new();
        let pid = m.lock.writer_pid.load(Ordering::Acquire);
        let mut messages = m.writer.messages.load(Ordering::Relaxed);
        if pid != 0 {
            writers.push(WriterInfo {
                pid,
                alive: is_alive(pid, m.lock.writer_start.load(Ordering::Relaxed)),
                heartbeat_ns: m.writer.heartbeat_ns.load(Ordering::Relaxed),
                slot: None,
            });
        }
        for (i, slot) in m.slots.iter().enumerate() {
            let pid = slot.pid.load(Ordering::Acquire);
            messages += slot.messages.load(Ordering::Relaxed);
            if pid != 0 {
                writers.push(WriterInfo {
                    pid,
                    alive: is_alive(pid, slot.start.load(Ordering::Relaxed)),
                    heartbeat_ns: slot.heartbeat_ns.load(Ordering::Relaxed),
                    slot: Some(i),
                });
            }
        }
        Ok(StreamStat {
            name: s.name.clone(),
            segments: segs.len() as u64,
            bytes: segs.len() as u64 * s.segment_size(),
            first_position: self.first_position(),
            last_position: self.tail(),
            messages,
            writers,
            recovered_claims: m.retention.recovered_claims.load(Ordering::Relaxed),
            deleted_segments: m.retention.deleted_segments.load(Ordering::Relaxed),
            released_cursors: m.retention.released_cursors.load(Ordering::Relaxed),
            back_pressure_events: m.retention.back_pressure_events.load(Ordering::Relaxed),
            segment_size: s.segment_size(),
            mode: if s.config.ring_segments.is_some() {
                "ring"
            } else {
                "append"
            },
            multi_writer: s.config.multi_writer,
            replica: s.config.replica,
        })
    }

    /// Counts the data frames from `from` to the tail (from the oldest position if `from` was
    /// deleted). Walks the frames: cost is proportional to the lag.
    pub fn count_messages_from(&self, from: Position) -> Result<u64> {
        let mut r = match self.reader(crate::Start::Position(from)) {
            Err(crate::Error::Lapped { .. }) => self.reader(crate::Start::Beginning)?,
            r => r?,
        };
        let mut n = 0u64;
        loop {
            let k = r.poll(usize::MAX, |_| {})?;
            if k == 0 {
                return Ok(n);
            }
            n += k as u64;
        }
    }
}
