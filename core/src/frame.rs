//! The frame format: header layout, the commit word, and a parser for untrusted frame bytes.
//!
//! This module is `no_std` and allocation-free so that firmware, fuzzers and the replication
//! receiver can all share it. `docs/format.md` describes the same layout byte by byte.
//!
//! ```text
//! offset size field
//!  0      8   commit word (u64 LE, accessed atomically): bits 0..30 frame length,
//!             bits 30..32 state, bits 32..64 tag
//!  8      1   kind (0 = data, 1 = metadata)
//!  9      1   flags (bit 0: CRC32C present)
//! 10      2   meta_len (u16 LE): bytes of frame metadata after the header
//! 12      4   type_id (u32 LE)
//! 16      8   timestamp_ns (u64 LE, nanoseconds since the Unix epoch)
//! 24      4   crc32c (u32 LE) over meta and payload, 0 when the flag is clear
//! 28      2   schema_version (u16 LE)
//! 30      2   reserved (multi-writer: the claiming writer's slot + 1)
//! 32      .   meta (meta_len bytes), zero padding to 8 bytes, payload
//! ```

use core::fmt;

/// Every frame starts on a multiple of this many bytes.
pub const FRAME_ALIGN: u64 = 8;
/// Size of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 32;
/// Largest frame length the commit word can describe (30 bits).
pub const MAX_FRAME_LEN: u32 = (1 << 30) - 1;

/// Bit offset of the state field in the commit word.
const STATE_SHIFT: u32 = 30;
/// Mask of the length field in the commit word.
const LEN_MASK: u64 = (1 << 30) - 1;

/// Frame kind byte: an application message.
pub const KIND_DATA: u8 = 0;
/// Frame kind byte: a metadata record written by Ringway itself.
pub const KIND_METADATA: u8 = 1;
/// Flags bit: the header's `crc32c` field covers meta and payload.
pub const FLAG_CRC: u8 = 1;

/// A CRC32C over a frame's metadata and payload, as `parse_frame` takes it.
pub type CrcFn<'a> = &'a dyn Fn(&[u8], &[u8]) -> u32;

/// Rounds `len` up to the frame alignment.
#[inline]
pub const fn align_up(len: u64) -> u64 {
    (len + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

/// Offset of the payload inside a frame whose metadata is `meta_len` bytes long.
#[inline]
pub const fn payload_offset(meta_len: usize) -> usize {
    HEADER_LEN + align_up(meta_len as u64) as usize
}

/// Unaligned frame length of a frame with `meta_len` bytes of metadata and `payload_len` bytes of payload.
#[inline]
pub const fn frame_len(meta_len: usize, payload_len: usize) -> u64 {
    (payload_offset(meta_len) + payload_len) as u64
}

/// The tag stored in the commit words of segment `index`: never 0, differs between ring laps.
#[inline]
pub const fn tag_for_segment(index: u64) -> u32 {
    ((index % (u32::MAX as u64)) + 1) as u32
}

/// State of a frame as its commit word tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Space claimed by a multi-writer writer that has not committed yet.
    Claimed,
    /// A committed data or metadata frame.
    Data,
    /// Padding: readers skip `len` bytes.
    Padding,
}

impl State {
    const fn bits(self) -> u64 {
        match self {
            State::Claimed => 1,
            State::Data => 2,
            State::Padding => 3,
        }
    }
}

/// The first 8 bytes of every frame, stored and loaded atomically.
///
/// A zero word means "nothing written here yet"; a frame becomes visible to readers only when its
/// writer stores a word whose tag matches the segment and whose state is [`State::Data`] or
/// [`State::Padding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWord(pub u64);

impl CommitWord {
    /// The word of an unwritten frame.
    pub const EMPTY: CommitWord = CommitWord(0);
    /// The word written over a hole while it is turned into padding: "in progress", tag 0.
    pub const POISON: CommitWord = CommitWord(State::Claimed.bits() << STATE_SHIFT);

    /// Builds a word from its fields. `len` must not exceed [`MAX_FRAME_LEN`].
    #[inline]
    pub const fn new(len: u32, state: State, tag: u32) -> CommitWord {
        CommitWord((len as u64 & LEN_MASK) | (state.bits() << STATE_SHIFT) | ((tag as u64) << 32))
    }

    /// Frame length in bytes (unaligned for data, exact skip distance for padding).
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub const fn len(self) -> u32 {
        (self.0 & LEN_MASK) as u32
    }

    /// Tag of the segment the word was written for (0 only for [`CommitWord::POISON`]).
    #[inline]
    pub const fn tag(self) -> u32 {
        (self.0 >> 32) as u32
    }

    /// State field, `None` for the reserved value 0 (never written by Ringway in a non-zero word).
    #[inline]
    pub const fn state(self) -> Option<State> {
        match (self.0 >> STATE_SHIFT) & 3 {
            1 => Some(State::Claimed),
            2 => Some(State::Data),
            3 => Some(State::Padding),
            _ => None,
        }
    }
}

/// The fixed header fields that follow the commit word (bytes 8..32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeaderFields {
    /// [`KIND_DATA`] or [`KIND_METADATA`].
    pub kind: u8,
    /// Flag bits ([`FLAG_CRC`]).
    pub flags: u8,
    /// Length of the metadata section.
    pub meta_len: u16,
    /// User message type.
    pub type_id: u32,
    /// Nanoseconds since the Unix epoch when the frame was written.
    pub timestamp_ns: u64,
    /// CRC32C over meta and payload when [`FLAG_CRC`] is set.
    pub crc32c: u32,
    /// User schema version of `type_id`.
    pub schema_version: u16,
    /// Reserved: in multi-writer streams the claiming writer's slot + 1.
    pub reserved: u16,
}

impl HeaderFields {
    /// Encodes the fields into bytes 8..32 of a frame header.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_LEN - 8] {
        let mut b = [0u8; HEADER_LEN - 8];
        b[0] = self.kind;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.meta_len.to_le_bytes());
        b[4..8].copy_from_slice(&self.type_id.to_le_bytes());
        b[8..16].copy_from_slice(&self.timestamp_ns.to_le_bytes());
        b[16..20].copy_from_slice(&self.crc32c.to_le_bytes());
        b[20..22].copy_from_slice(&self.schema_version.to_le_bytes());
        b[22..24].copy_from_slice(&self.reserved.to_le_bytes());
        b
    }

    /// Decodes bytes 8..32 of a frame header.
    #[inline]
    pub fn decode(b: &[u8; HEADER_LEN - 8]) -> HeaderFields {
        HeaderFields {
            kind: b[0],
            flags: b[1],
            meta_len: u16::from_le_bytes([b[2], b[3]]),
            type_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            timestamp_ns: u64::from_le_bytes([
                b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15],
            ]),
            crc32c: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
            schema_version: u16::from_le_bytes([b[20], b[21]]),
            reserved: u16::from_le_bytes([b[22], b[23]]),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than the commit word, or than the length the word announces.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// The commit word is zero: nothing was written.
    Empty,
    /// The frame was claimed but never committed.
    Uncommitted,
    /// The commit word's tag does not belong to the segment holding it.
    WrongTag {
        /// Tag expected for this segment.
        expected: u32,
        /// Tag found.
        found: u32,
    },
    /// The state bits hold the reserved value.
    BadState,
    /// A data frame shorter than its header, or with metadata longer than the frame.
    BadLength {
        /// The frame length found.
        len: u32,
    },
    /// Padding whose length is zero or not a multiple of the frame alignment.
    BadPadding {
        /// The padding length found.
        len: u32,
    },
    /// The kind byte is unknown.
    BadKind {
        /// The kind byte found.
        kind: u8,
    },
    /// The frame would run past the end of its segment.
    CrossesSegment {
        /// Unaligned frame length.
        len: u32,
        /// Bytes left in the segment from the frame's offset.
        room: u64,
    },
    /// The stored CRC32C differs from the one computed over meta and payload.
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed from the bytes.
        computed: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::Truncated { needed, available } => {
                write!(
                    f,
                    "truncated frame: needs {needed} bytes, {available} available"
                )
            }
            FrameError::Empty => write!(f, "no frame written here"),
            FrameError::Uncommitted => write!(f, "frame claimed but never committed"),
            FrameError::WrongTag { expected, found } => {
                write!(f, "commit word tag {found:#x} does not belong to this segment (expected {expected:#x})")
            }
            FrameError::BadState => write!(f, "bad header: reserved state bits in commit word"),
            FrameError::BadLength { len } => {
                write!(f, "bad header: frame length {len} is inconsistent")
            }
            FrameError::BadPadding { len } => write!(f, "bad padding length {len}"),
            FrameError::BadKind { kind } => write!(f, "bad header: unknown frame kind {kind}"),
            FrameError::CrossesSegment { len, room } => {
                write!(
                    f,
                    "torn frame: length {len} runs past the segment end ({room} bytes left)"
                )
            }
            FrameError::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
                )
            }
        }
    }
}

/// A frame parsed from bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedFrame<'a> {
    /// The commit word.
    pub word: CommitWord,
    /// Header fields (all zero for padding).
    pub fields: HeaderFields,
    /// The frame's bytes: `len` bytes for data, the whole skip for padding (may be shorter than a header).
    pub raw: &'a [u8],
}

impl<'a> ParsedFrame<'a> {
    /// `true` for padding frames.
    pub fn is_padding(&self) -> bool {
        self.word.state() == Some(State::Padding)
    }

    /// Bytes from this frame's start to the next frame's start.
    pub fn stride(&self) -> u64 {
        match self.word.state() {
            Some(State::Padding) => self.word.len() as u64,
            _ => align_up(self.word.len() as u64),
        }
    }

    /// The frame's metadata section (empty for padding).
    pub fn meta(&self) -> &'a [u8] {
        if self.is_padding() {
            return &[];
        }
        &self.raw[HEADER_LEN..HEADER_LEN + self.fields.meta_len as usize]
    }

    /// The frame's payload (empty for padding).
    pub fn payload(&self) -> &'a [u8] {
        if self.is_padding() {
            return &[];
        }
        &self.raw[payload_offset(self.fields.meta_len as usize)..]
    }
}

/// Checks a commit word read at a segment offset and returns the frame's stride.
///
/// `room` is the number of bytes from the frame's offset to the end of the segment.
pub fn check_word(word: CommitWord, tag: u32, room: u64) -> Result<(), FrameError> {
    if word == CommitWord::EMPTY {
        return Err(FrameError::Empty);
    }
    let state = word.state().ok_or(FrameError::BadState)?;
    if word.tag() != tag {
        return Err(FrameError::WrongTag {
            expected: tag,
            found: word.tag(),
        });
    }
    let len = word.len();
    match state {
        State::Claimed => Err(FrameError::Uncommitted),
        State::Padding => {
            if len == 0 || !(len as u64).is_multiple_of(FRAME_ALIGN) {
                Err(FrameError::BadPadding { len })
            } else if len as u64 > room {
                Err(FrameError::CrossesSegment { len, room })
            } else {
                Ok(())
            }
        }
        State::Data => {
            if (len as usize) < HEADER_LEN {
                Err(FrameError::BadLength { len })
            } else if len as u64 > room || align_up(len as u64) > align_up(room) {
                // `room` is unaligned only for a frame's exact bytes (`Frame::raw`, as replicated),
                // which end at the frame's unaligned length.
                Err(FrameError::CrossesSegment { len, room })
            } else {
                Ok(())
            }
        }
    }
}

/// Parses one frame at the start of `bytes`, which hold the rest of a segment from the frame's offset.
///
/// `crc` computes CRC32C over a list of slices; pass `None` to skip CRC checks (e.g. where no
/// CRC implementation is available). Never panics, whatever the bytes.
pub fn parse_frame<'a>(
    bytes: &'a [u8],
    tag: u32,
    crc: Option<CrcFn<'_>>,
) -> Result<ParsedFrame<'a>, FrameError> {
    if bytes.len() < 8 {
        return Err(FrameError::Truncated {
            needed: 8,
            available: bytes.len() as u64,
        });
    }
    let word = CommitWord(u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes")));
    check_word(word, tag, bytes.len() as u64)?;
    let len = word.len() as usize;
    if word.state() == Some(State::Padding) {
        return Ok(ParsedFrame {
            word,
            fields: HeaderFields::default(),
            raw: &bytes[..len],
        });
    }
    let fields = HeaderFields::decode(bytes[8..HEADER_LEN].try_into().expect("24 bytes"));
    if fields.kind != KIND_DATA && fields.kind != KIND_METADATA {
        return Err(FrameError::BadKind { kind: fields.kind });
    }
    if payload_offset(fields.meta_len as usize) > len {
        return Err(FrameError::BadLength { len: word.len() });
    }
    let raw = &bytes[..len];
    let frame = ParsedFrame { word, fields, raw };
    if fields.flags & FLAG_CRC != 0 {
        if let Some(crc) = crc {
            let computed = crc(frame.meta(), frame.payload());
            if computed != fields.crc32c {
                return Err(FrameError::CrcMismatch {
                    stored: fields.crc32c,
                    computed,
                });
            }
        }
    }
    Ok(frame)
}

/// Outcome of walking a segment's bytes with [`walk_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegmentSummary {
    /// Committed data and metadata frames.
    pub frames: u64,
    /// Padding frames.
    pub paddings: u64,
    /// Offset of the first byte after the last committed frame.
    pub end: u64,
    /// The walk ended on the segment's closing padding or exactly at its end.
    pub sealed: bool,
}

/// Walks every committed frame of one segment's bytes from offset 0, checking each.
///
/// Stops at the first empty or claimed commit word (the tail) and returns what it saw, or the
/// offset and reason of the first bad frame. Never panics, whatever the bytes.
pub fn walk_segment(
    bytes: &[u8],
    tag: u32,
    crc: Option<CrcFn<'_>>,
    mut visit: impl FnMut(u64, &ParsedFrame<'_>),
) -> Result<SegmentSummary, (u64, FrameError)> {
    let mut s = SegmentSummary::default();
    let mut off = 0u64;
    while (off as usize) < bytes.len() {
        match parse_frame(&bytes[off as usize..], tag, crc) {
            Ok(f) => {
                visit(off, &f);
                if f.is_padding() {
                    s.paddings += 1;
                } else {
                    s.frames += 1;
                }
                off += f.stride();
                s.end = off;
            }
            Err(FrameError::Empty) | Err(FrameError::Uncommitted) => return Ok(s),
            Err(e) => return Err((off, e)),
        }
    }
    s.sealed = true;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u32, meta: &[u8], payload: &[u8]) -> [u8; 128] {
        let mut b = [0u8; 128];
        let len = frame_len(meta.len(), payload.len()) as u32;
        let f = HeaderFields {
            meta_len: meta.len() as u16,
            type_id: 9,
            ..Default::default()
        };
        b[8..32].copy_from_slice(&f.encode());
        b[32..32 + meta.len()].copy_from_slice(meta);
        let po = payload_offset(meta.len());
        b[po..po + payload.len()].copy_from_slice(payload);
        b[0..8].copy_from_slice(&CommitWord::new(len, State::Data, tag).0.to_le_bytes());
        b
    }

    #[test]
    fn commit_word_round_trips() {
        let w = CommitWord::new(1234, State::Padding, 77);
        assert_eq!(
            (w.len(), w.state(), w.tag()),
            (1234, Some(State::Padding), 77)
        );
        assert_eq!(CommitWord::POISON.state(), Some(State::Claimed));
        assert_eq!(CommitWord::POISON.tag(), 0);
    }

    #[test]
    fn tags_are_never_zero() {
        assert_eq!(tag_for_segment(0), 1);
        assert_ne!(tag_for_segment(u32::MAX as u64 - 1), 0);
        assert_ne!(tag_for_segment(u32::MAX as u64), 0);
    }

    #[test]
    fn parses_meta_and_payload() {
        let b = frame(3, b"abc", b"hello");
        let f = parse_frame(&b, 3, None).unwrap();
        assert_eq!(f.meta(), b"abc");
        assert_eq!(f.payload(), b"hello");
        assert_eq!(f.fields.type_id, 9);
        assert_eq!(f.stride(), align_up(frame_len(3, 5)));
    }

    #[test]
    fn rejects_wrong_tag_and_bad_lengths() {
        let b = frame(3, b"", b"x");
        assert!(matches!(
            parse_frame(&b, 4, None),
            Err(FrameError::WrongTag { .. })
        ));
        let mut c = b;
        c[0..8].copy_from_slice(&CommitWord::new(8, State::Data, 3).0.to_le_bytes());
        assert_eq!(
            parse_frame(&c, 3, None),
            Err(FrameError::BadLength { len: 8 })
        );
        c[0..8].copy_from_slice(&CommitWord::new(4000, State::Data, 3).0.to_le_bytes());
        assert!(matches!(
            parse_frame(&c, 3, None),
            Err(FrameError::CrossesSegment { .. })
        ));
        c[0..8].copy_from_slice(&CommitWord::new(12, State::Padding, 3).0.to_le_bytes());
        assert_eq!(
            parse_frame(&c, 3, None),
            Err(FrameError::BadPadding { len: 12 })
        );
        assert!(matches!(
            parse_frame(&c[..5], 3, None),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn meta_longer_than_frame_is_rejected() {
        let mut b = frame(1, b"", b"abcdefgh");
        b[10..12].copy_from_slice(&100u16.to_le_bytes());
        assert!(matches!(
            parse_frame(&b, 1, None),
            Err(FrameError::BadLength { .. })
        ));
    }

    #[test]
    fn walk_stops_at_tail() {
        let mut seg = [0u8; 256];
        seg[..128].copy_from_slice(&frame(1, b"", b"one"));
        let s = walk_segment(&seg, 1, None, |_, _| {}).unwrap();
        assert_eq!(s.frames, 1);
        assert_eq!(s.end, align_up(frame_len(0, 3)));
        assert!(!s.sealed);
    }
}
