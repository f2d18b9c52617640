//! The stream's metadata file (`meta`): a versioned `#[repr(C)]` layout mapped by every process.
//!
//! Offsets are fixed by `docs/format.md`; the `const` assertions below keep the structs honest.
//! The header (bytes 0..128) is written once, before the file is renamed into place, and is
//! read-only afterwards. Everything after it is atomics, grouped on 128-byte lines by who writes
//! them, so a reader's polling never shares a line with a writer's counters.

use crate::config::{Retention, StreamConfig};
use crate::error::{Error, IoContext, Result};
use crate::replica_acks::{
    ReplicaAckSignal, ReplicaAckSlot, REPLICA_ACK_SIGNAL_OFFSET, REPLICA_ACK_SLOTS,
    REPLICA_ACK_TABLE_OFFSET,
};
use memmap2::MmapRaw;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::Duration;

/// First 8 bytes of every metadata file.
pub const MAGIC: [u8; 8] = *b"RINGWAY\0";
/// Format version this build writes. It also reads version 1, whose cursor table always has
/// 256 slots (version 2 records the count in the header).
pub const FORMAT_VERSION: u32 = 2;
/// Cursor slots of a version 1 stream.
pub const V1_CURSOR_SLOTS: u32 = 256;
/// Number of multi-writer slots.
pub const WRITER_SLOTS: usize = 16;
/// Offset of the cursor table.
pub const CURSOR_TABLE_OFFSET: usize = 4096;
/// Bytes of one cursor slot.
pub const CURSOR_SLOT_LEN: usize = 128;

/// Size of the metadata file of a stream with `cursor_slots` cursor slots.
pub fn meta_file_len(cursor_slots: u32) -> usize {
    CURSOR_TABLE_OFFSET + cursor_slots as usize * CURSOR_SLOT_LEN
}

/// Header flag: the stream is a bounded ring.
pub const FLAG_RING: u32 = 1;
/// Header flag: several writers may append.
pub const FLAG_MULTI_WRITER: u32 = 2;
/// Header flag: frames carry CRC32C.
pub const FLAG_CRC: u32 = 4;
/// Header flag: the stream is a replica.
pub const FLAG_REPLICA: u32 = 8;

/// Immutable stream header, bytes 0..128.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MetaHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Bytes per segment.
    pub segment_size: u64,
    /// Largest metadata + payload of a message.
    pub max_message_size: u32,
    /// Segments in the ring (0 for append-only).
    pub ring_segments: u32,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Retention: segment count (0 = unlimited).
    pub retention_max_segments: u32,
    /// Permission bits of the stream's files.
    pub file_mode: u32,
    /// Retention: bytes (0 = unlimited).
    pub retention_max_bytes: u64,
    /// Retention: age in ns (0 = unlimited).
    pub retention_max_age_ns: u64,
    /// Abandoned-claim timeout in ns.
    pub claim_timeout_ns: u64,
    /// Random identity of the stream (a replica keeps its primary's).
    pub stream_id: u64,
    /// How long a blocking cursor whose owner is gone keeps holding the writer, in ns.
    pub cursor_timeout_ns: u64,
    /// Slots in the cursor table (version 2; zero in version 1, meaning 256).
    pub cursor_slots: u32,
    /// Zero.
    pub reserved: [u8; 32],
    /// CRC32C of bytes 0..124.
    pub header_crc: u32,
}

/// Written by the (single) writer on every append.
#[repr(C, align(128))]
pub struct WriterLine {
    /// Position after the last committed frame (single writer; multi-writer: after the last commit seen by that writer).
    pub tail: AtomicU64,
    /// Messages appended since creation.
    pub messages: AtomicU64,
    /// Time of the last append or heartbeat, ns since the epoch.
    pub heartbeat_ns: AtomicU64,
    /// Position up to which `flush` completed.
    pub flushed: AtomicU64,
}

/// The single-writer lock.
#[repr(C, align(128))]
pub struct LockLine {
    /// Pid of the writer holding the lock (0 = free).
    pub writer_pid: AtomicU32,
    /// Padding.
    pub _pad: u32,
    /// Start time of that process (see `process::start_time`).
    pub writer_start: AtomicU64,
}

/// The multi-writer claim tail.
#[repr(C, align(128))]
pub struct ClaimLine {
    /// Position where the next claim starts.
    pub claim_tail: AtomicU64,
}

/// Retention and recovery bookkeeping.
#[repr(C, align(128))]
pub struct RetentionLine {
    /// Oldest position still readable (start of the oldest retained segment).
    pub first_position: AtomicU64,
    /// Abandoned claims turned into padding.
    pub recovered_claims: AtomicU64,
    /// Segments deleted or recycled by retention.
    pub deleted_segments: AtomicU64,
    /// Index of the segment the writer is in.
    pub current_segment: AtomicU64,
    /// Blocking cursors released because their owner was gone past the cursor timeout.
    pub released_cursors: AtomicU64,
    /// Times a writer was refused space because a blocking cursor held it.
    pub back_pressure_events: AtomicU64,
}

/// Reserved for blocking waits.
#[repr(C, align(128))]
pub struct NotifyLine {
    /// Futex word.
    pub futex: AtomicU32,
    /// Blocked readers.
    pub waiters: AtomicU32,
}

/// Cursor-table bookkeeping.
#[repr(C, align(128))]
pub struct CursorLine {
    /// One past the highest cursor slot ever taken (version 2; lookups scan no further). Only
    /// grows (`fetch_max`).
    pub high_water: AtomicU32,
}

/// A multi-writer registration.
#[repr(C)]
pub struct WriterSlot {
    /// Pid of the writer holding the slot (0 = free).
    pub pid: AtomicU32,
    /// Padding.
    pub _pad: u32,
    /// Start time of that process.
    pub start: AtomicU64,
    /// Last append, ns since the epoch.
    pub heartbeat_ns: AtomicU64,
    /// Messages appended through this slot.
    pub messages: AtomicU64,
    /// Reserved.
    pub _reserved: [u64; 4],
}

/// The metadata file's first 4096 bytes.
#[repr(C)]
pub struct Meta {
    /// Immutable header.
    pub header: MetaHeader,
    _pad0: [u8; 128],
    /// At 256.
    pub writer: WriterLine,
    /// At 384.
    pub lock: LockLine,
    /// At 512.
    pub claim: ClaimLine,
    /// At 640.
    pub retention: RetentionLine,
    /// At 768.
    pub notify: NotifyLine,
    /// At 896.
    pub cursors: CursorLine,
    /// At 1024.
    pub slots: [WriterSlot; WRITER_SLOTS],
    /// At 2048: replica acknowledgements (see [`crate::replica_acks`]; zero in files written
    /// before the table existed, which reads as "no acknowledgements").
    pub replica_acks: [ReplicaAckSlot; REPLICA_ACK_SLOTS],
    /// At 3072: change count and waiters of the replica-acknowledgement table.
    pub replica_ack_signal: ReplicaAckSignal,
    _pad2: [u8; 960],
}

const _: () = {
    assert!(std::mem::size_of::<MetaHeader>() == 128);
    assert!(std::mem::offset_of!(Meta, writer) == 256);
    assert!(std::mem::offset_of!(Meta, lock) == 384);
    assert!(std::mem::offset_of!(Meta, claim) == 512);
    assert!(std::mem::offset_of!(Meta, retention) == 640);
    assert!(std::mem::offset_of!(Meta, notify) == 768);
    assert!(std::mem::offset_of!(Meta, cursors) == 896);
    assert!(std::mem::offset_of!(Meta, slots) == 1024);
    assert!(std::mem::offset_of!(Meta, replica_acks) == REPLICA_ACK_TABLE_OFFSET);
    assert!(std::mem::offset_of!(Meta, replica_ack_signal) == REPLICA_ACK_SIGNAL_OFFSET);
    assert!(std::mem::size_of::<WriterSlot>() == 64);
    assert!(std::mem::size_of::<Meta>() == CURSOR_TABLE_OFFSET);
};

impl MetaHeader {
    /// Builds the header for a new stream.
    pub fn new(cfg: &StreamConfig, created_ns: u64, stream_id: u64) -> MetaHeader {
        let mut flags = 0;
        if cfg.ring_segments.is_some() {
            flags |= FLAG_RING;
        }
        if cfg.multi_writer {
            flags |= FLAG_MULTI_WRITER;
        }
        if cfg.crc {
            flags |= FLAG_CRC;
        }
        if cfg.replica {
            flags |= FLAG_REPLICA;
        }
        let mut h = MetaHeader {
            magic: MAGIC,
            version: FORMAT_VERSION,
            flags,
            segment_size: cfg.segment_size,
            max_message_size: cfg.max_message_size,
            ring_segments: cfg.ring_segments.unwrap_or(0),
            created_ns,
            retention_max_segments: cfg.retention.max_segments.unwrap_or(0),
            file_mode: cfg.file_mode,
            retention_max_bytes: cfg.retention.max_bytes.unwrap_or(0),
            retention_max_age_ns: cfg
                .retention
                .max_age
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
            claim_timeout_ns: cfg.claim_timeout.as_nanos() as u64,
            stream_id,
            cursor_timeout_ns: cfg.cursor_timeout.as_nanos() as u64,
            cursor_slots: cfg.cursor_slots,
            reserved: [0; 32],
            header_crc: 0,
        };
        h.header_crc = h.compute_crc();
        h
    }

    fn bytes(&self) -> &[u8; 128] {
        // SAFETY: MetaHeader is repr(C), 128 bytes, and has no padding (the size assertion and the
        // field sizes add up to 128), so every byte is initialised.
        unsafe { &*(self as *const MetaHeader as *const [u8; 128]) }
    }

    fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes()[..124])
    }

    /// The configuration the header describes.
    pub fn config(&self) -> StreamConfig {
        let opt32 = |v: u32| if v == 0 { None } else { Some(v) };
        let opt64 = |v: u64| if v == 0 { None } else { Some(v) };
        StreamConfig {
            segment_size: self.segment_size,
            max_message_size: self.max_message_size,
            ring_segments: opt32(self.ring_segments),
            retention: Retention {
                max_segments: opt32(self.retention_max_segments),
                max_bytes: opt64(self.retention_max_bytes),
                max_age: opt64(self.retention_max_age_ns).map(Duration::from_nanos),
            },
            crc: self.flags & FLAG_CRC != 0,
            multi_writer: self.flags & FLAG_MULTI_WRITER != 0,
            replica: self.flags & FLAG_REPLICA != 0,
            file_mode: self.file_mode,
            claim_timeout: Duration::from_nanos(self.claim_timeout_ns),
            cursor_timeout: Duration::from_nanos(self.cursor_timeout_ns),
            cursor_slots: self.cursor_slot_count(),
        }
    }

    /// Slots in the cursor table.
    pub fn cursor_slot_count(&self) -> u32 {
        if self.version == 1 {
            V1_CURSOR_SLOTS
        } else {
            self.cursor_slots
        }
    }

    /// Checks magic, version, checksum and values.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let corrupt = |reason: String| {
            Err(Error::CorruptFile {
                path: path.to_path_buf(),
                reason,
            })
        };
        if self.magic != MAGIC {
            return corrupt(format!(
                "bad magic {:02x?}: not a Ringway metadata file",
                self.magic
            ));
        }
        if self.version != FORMAT_VERSION && self.version != 1 {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let crc = self.compute_crc();
        if crc != self.header_crc {
            return corrupt(format!(
                "header checksum {:#010x} does not match its contents ({crc:#010x})",
                self.header_crc
            ));
        }
        if let Err(e) = self.config().validate() {
            return corrupt(format!("header holds an invalid configuration: {e}"));
        }
        Ok(())
    }
}

/// A mapped metadata file.
pub struct MetaFile {
    map: MmapRaw,
    path: PathBuf,
}

impl std::fmt::Debug for MetaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetaFile")
            .field("path", &self.path)
            .finish()
    }
}

impl MetaFile {
    /// Writes a new metadata file at `path` (created with `mode`, header filled, atomics zero).
    pub fn write_new(path: &Path, header: &MetaHeader, first_position: u64) -> Result<()> {
        // The cursor table starts zeroed: the file is extended past this page without writing
        // it, so unused slots take no memory until they are touched.
        let mut buf = vec![0u8; CURSOR_TABLE_OFFSET];
        // SAFETY: MetaHeader is 128 initialised bytes (see `bytes`).
        let hb =
            unsafe { std::slice::from_raw_parts(header as *const MetaHeader as *const u8, 128) };
        buf[..128].copy_from_slice(hb);
        let fp = std::mem::offset_of!(Meta, retention);
        buf[fp..fp + 8].copy_from_slice(&first_position.to_le_bytes());
        let tail = std::mem::offset_of!(Meta, writer);
        buf[tail..tail + 8].copy_from_slice(&first_position.to_le_bytes());
        let claim = std::mem::offset_of!(Meta, claim);
        buf[claim..claim + 8].copy_from_slice(&first_position.to_le_bytes());
        let cur = fp + 24;
        let seg = first_position / header.segment_size;
        buf[cur..cur + 8].copy_from_slice(&seg.to_le_bytes());
        let len = meta_file_len(header.cursor_slot_count()) as u64;
        crate::fsutil::write_file_atomically(path, &buf, len, header.file_mode)
    }

    /// Maps and validates an existing metadata file.
    pub fn open(path: &Path) -> Result<MetaFile> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .ctx("open metadata", path)?;
        let len = file.metadata().ctx("stat metadata", path)?.len();
        let short = |expected: u64| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("metadata file is {len} bytes, expected {expected}"),
        };
        if len < CURSOR_TABLE_OFFSET as u64 {
            return Err(short(CURSOR_TABLE_OFFSET as u64));
        }
        let map = MmapRaw::map_raw(&file).ctx("map metadata", path)?;
        let meta = MetaFile {
            map,
            path: path.to_path_buf(),
        };
        let header = meta.get().header;
        header.validate(path)?;
        let expected = meta_file_len(header.cursor_slot_count()) as u64;
        if len != expected {
            return Err(short(expected));
        }
        Ok(meta)
    }

    /// Opens the metadata file read-only (for inspection without write permission).
    pub fn open_file(path: &Path) -> Result<File> {
        File::open(path).ctx("open metadata", path)
    }

    /// The mapped layout.
    #[inline]
    pub fn get(&self) -> &Meta {
        // SAFETY: the mapping is at least size_of::<Meta>() bytes (checked in `open`), page-aligned (so aligned
        // for Meta's 128-byte alignment), lives as long as `self`, and every field of Meta is valid
        // for any bit pattern (integers and atomics). The header is immutable after creation;
        // everything else is only accessed through atomics, so shared references are sound even
        // though other processes write the file.
        unsafe { &*(self.map.as_ptr() as *const Meta) }
    }

    /// The header.
    pub fn header(&self) -> &MetaHeader {
        &self.get().header
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Base pointer of the mapping (for the cursor table).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// msync of the whole file.
    pub fn flush(&self) -> Result<()> {
        self.map.flush().ctx("flush metadata", &self.path)
    }
}
