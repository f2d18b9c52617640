//! Stream configuration, fixed when the stream is created and stored in its metadata file.

use crate::error::{Error, Result};
use std::time::Duration;

/// Smallest segment size accepted.
pub const MIN_SEGMENT_SIZE: u64 = 64 << 10;
/// Largest segment size accepted (the commit word's length field limits padding to 1 GiB - 1).
pub const MAX_SEGMENT_SIZE: u64 = 512 << 20;

/// When old segments of an append-only stream are deleted. All set limits apply; none set keeps everything.
///
/// ```
/// use ringway_core::Retention;
/// use std::time::Duration;
/// let r = Retention::default().max_segments(64).max_age(Duration::from_secs(3600));
/// assert_eq!(r.max_segments, Some(64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many segments.
    pub max_segments: Option<u32>,
    /// Keep at most this many bytes of segments.
    pub max_bytes: Option<u64>,
    /// Delete segments whose last frame is older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Keep at most `n` segments (at least 2: the one being written and the one before).
    pub fn max_segments(mut self, n: u32) -> Self {
        self.max_segments = Some(n);
        self
    }
    /// Keep at most `bytes` bytes of segments.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }
    /// Delete segments older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }
}

/// How a stream is created.
///
/// ```
/// use ringway_core::StreamConfig;
/// let cfg = StreamConfig::default().segment_size(1 << 20).max_message_size(4096).crc(true);
/// assert!(cfg.validate().is_ok());
/// assert!(StreamConfig::default().segment_size(1000).validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Bytes per segment file, a power of two.
    pub segment_size: u64,
    /// Largest metadata + payload of one message; 0 picks `min(1 MiB, segment_size / 4)`.
    pub max_message_size: u32,
    /// `Some(n)`: a bounded ring of `n` recycled segments.
    pub ring_segments: Option<u32>,
    /// Deletion of old segments (append-only streams).
    pub retention: Retention,
    /// Compute and store a CRC32C per frame.
    pub crc: bool,
    /// Allow several concurrent writers.
    pub multi_writer: bool,
    /// The stream is a replica of another stream.
    pub replica: bool,
    /// Permission bits of created files (0600 by default; 0660 for group access).
    pub file_mode: u32,
    /// How long a multi-writer claim (or a hole below the claim tail) may stay uncommitted before
    /// a reader turns it into padding. It must exceed the longest time a live writer holds a
    /// claim: a writer whose claim was recovered gets [`crate::Error::ClaimRecovered`] at commit.
    pub claim_timeout: Duration,
    /// How long a blocking cursor whose owner is gone keeps holding the writer back.
    pub cursor_timeout: Duration,
    /// Slots in the named-cursor table (one per named cursor, 128 bytes each in the metadata
    /// file): 1 ..= [`MAX_CURSOR_SLOTS`], 4,096 by default. Streams of format version 1 have 256.
    pub cursor_slots: u32,
}

/// Default number of named-cursor slots of a new stream.
pub const DEFAULT_CURSOR_SLOTS: u32 = 4096;
/// Largest number of named-cursor slots (an 8 MiB table).
pub const MAX_CURSOR_SLOTS: u32 = 65536;

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            segment_size: 16 << 20,
            max_message_size: 0,
            ring_segments: None,
            retention: Retention::default(),
            crc: false,
            multi_writer: false,
            replica: false,
            file_mode: 0o600,
            claim_timeout: Duration::from_secs(5),
            cursor_timeout: Duration::from_secs(30),
            cursor_slots: DEFAULT_CURSOR_SLOTS,
        }
    }
}

impl StreamConfig {
    /// Sets the number of named-cursor slots (1 ..= [`MAX_CURSOR_SLOTS`]).
    pub fn cursor_slots(mut self, slots: u32) -> Self {
        self.cursor_slots = slots;
        self
    }
    /// Sets the segment size (power of two, 64 KiB ..= 512 MiB).
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
    /// Sets the largest metadata + payload of one message.
    pub fn max_message_size(mut self, bytes: u32) -> Self {
        self.max_message_size = bytes;
        self
    }
    /// Makes the stream a bounded ring of `segments` recycled segments (at least 2).
    pub fn ring(mut self, segments: u32) -> Self {
        self.ring_segments = Some(segments);
        self
    }
    /// Sets retention for an append-only stream.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }
    /// Enables per-frame CRC32C.
    pub fn crc(mut self, on: bool) -> Self {
        self.crc = on;
        self
    }
    /// Allows several concurrent writers.
    pub fn multi_writer(mut self, on: bool) -> Self {
        self.multi_writer = on;
        self
    }
    /// Marks the stream as a replica (only [`crate::ReplicaWriter`] may write).
    pub fn replica(mut self, on: bool) -> Self {
        self.replica = on;
        self
    }
    /// Sets the permission bits of created files.
    pub fn file_mode(mut self, mode: u32) -> Self {
        self.file_mode = mode;
        self
    }
    /// Sets the abandoned-claim timeout.
    pub fn claim_timeout(mut self, timeout: Duration) -> Self {
        self.claim_timeout = timeout;
        self
    }

    /// Sets how long a blocking cursor whose owner is gone keeps holding the writer back.
    pub fn cursor_timeout(mut self, timeout: Duration) -> Self {
        self.cursor_timeout = timeout;
        self
    }

    /// Largest frame this configuration produces, aligned.
    pub fn max_frame_stride(&self) -> u64 {
        crate::frame::align_up(
            crate::frame::HEADER_LEN as u64 + 8 + self.resolved().max_message_size as u64,
        )
    }

    /// The configuration with automatic values filled in.
    pub fn resolved(&self) -> StreamConfig {
        let mut c = self.clone();
        if c.max_message_size == 0 {
            c.max_message_size = (1u64 << 20).min(self.segment_size / 4) as u32;
        }
        c
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if !self.segment_size.is_power_of_two()
            || self.segment_size < MIN_SEGMENT_SIZE
            || self.segment_size > MAX_SEGMENT_SIZE
        {
            return bad(format!(
                "segment size {} must be a power of two between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}",
                self.segment_size
            ));
        }
        if self.max_frame_stride() > self.segment_size / 2 {
            return bad(format!(
                "max message size {} must fit twice in a segment of {} bytes",
                self.resolved().max_message_size,
                self.segment_size
            ));
        }
        if let Some(n) = self.ring_segments {
            if n < 2 {
                return bad(format!("a ring needs at least 2 segments, got {n}"));
            }
        }
        if let Some(n) = self.retention.max_segments {
            if n < 2 {
                return bad(format!("retention must keep at least 2 segments, got {n}"));
            }
        }
        if let Some(b) = self.retention.max_bytes {
            if b < 2 * self.segment_size {
                return bad(format!(
                    "retention must keep at least 2 segments of bytes, got {b}"
                ));
            }
        }
        if self.cursor_slots == 0 || self.cursor_slots > MAX_CURSOR_SLOTS {
            return bad(format!(
                "cursor slots {} must be between 1 and {MAX_CURSOR_SLOTS}",
                self.cursor_slots
            ));
        }
        if self.file_mode & !0o777 != 0 || self.file_mode & 0o600 != 0o600 {
            return bad(format!(
                "file mode {:o} must include owner read/write and only permission bits",
                self.file_mode
            ));
        }
        Ok(())
    }
}
