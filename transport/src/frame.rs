//! The parts of the journal's frame format the transport checks before writing a replica.
//!
//! Word 0 of every frame (u64 LE) is the commit word: bits 0..30 the frame length (header + meta +
//! payload, unaligned), bits 30..32 the state (2 data, 3 padding), bits 32..64 the tag
//! `segment index + 1`. Frames are 8-byte aligned and never cross a segment boundary.

use thiserror::Error;

/// Size of the journal's frame header.
pub const FRAME_HEADER_LEN: usize = 32;
const LEN_MASK: u64 = (1 << 30) - 1;
/// Commit-word state of a data frame.
pub const STATE_DATA: u8 = 2;
/// Commit-word state of a padding frame.
pub const STATE_PADDING: u8 = 3;

/// Rounds up to the frame alignment.
#[inline]
pub fn align8(x: u64) -> u64 {
    (x + 7) & !7
}

/// Why a frame received from the network cannot be written to the replica.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// Fewer bytes than a frame header, or than the frame's own length word says.
    #[error("truncated frame at {position}")]
    Truncated {
        /// Position of the frame.
        position: u64,
    },
    /// The length word is smaller than a header.
    #[error("frame at {position} has bad length {len}")]
    BadLength {
        /// Position of the frame.
        position: u64,
        /// Length found.
        len: u64,
    },
    /// State is neither data nor padding (claimed or empty frames are never shipped).
    #[error("frame at {position} has state {state}")]
    BadState {
        /// Position of the frame.
        position: u64,
        /// State found.
        state: u8,
    },
    /// Tag does not match the segment the position falls in.
    #[error("frame at {position} has tag {tag}, expected {expected}")]
    BadTag {
        /// Position of the frame.
        position: u64,
        /// Tag found.
        tag: u32,
        /// Tag expected.
        expected: u32,
    },
    /// The frame is unaligned or would cross the end of its segment.
    #[error("frame at {position} (length {len}) does not fit its segment")]
    OutOfSegment {
        /// Position of the frame.
        position: u64,
        /// Length found.
        len: u64,
    },
}

/// Decoded commit word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitWord {
    /// Frame length (unaligned).
    pub len: u64,
    /// Frame state.
    pub state: u8,
    /// Segment tag.
    pub tag: u32,
}

/// Reads the commit word at the start of `raw`, if there are 8 bytes.
pub fn commit_word(raw: &[u8]) -> Option<CommitWord> {
    let b: [u8; 8] = raw.get(..8)?.try_into().ok()?;
    let w = u64::from_le_bytes(b);
    Some(CommitWord {
        len: w & LEN_MASK,
        state: ((w >> 30) & 3) as u8,
        tag: (w >> 32) as u32,
    })
}

/// Checks the header of the frame starting `raw` as if it lay at `position` in a stream of
/// `segment_size`-byte segments; returns its length (unaligned). `raw` may hold more bytes.
pub fn check_header(position: u64, raw: &[u8], segment_size: u64) -> Result<u64, FrameError> {
    let cw = commit_word(raw).ok_or(FrameError::Truncated { position })?;
    match cw.state {
        STATE_DATA => {
            if cw.len < FRAME_HEADER_LEN as u64 {
                return Err(FrameError::BadLength {
                    position,
                    len: cw.len,
                });
            }
        }
        // Padding is the commit word alone when only 8 bytes are left in a segment.
        STATE_PADDING => {
            if cw.len < 8 || !cw.len.is_multiple_of(8) {
                return Err(FrameError::BadLength {
                    position,
                    len: cw.len,
                });
            }
        }
        state => return Err(FrameError::BadState { position, state }),
    }
    let expected = tag_for_segment(position / segment_size);
    if cw.tag != expected {
        return Err(FrameError::BadTag {
            position,
            tag: cw.tag,
            expected,
        });
    }
    let within = position % segment_size;
    if !position.is_multiple_of(8) || within + align8(cw.len) > segment_size {
        return Err(FrameError::OutOfSegment {
            position,
            len: cw.len,
        });
    }
    Ok(cw.len)
}

/// Splits a DATA batch of whole frames starting at `position` into `(position, raw)` pairs,
/// checking each header. Stops with an error at the first bad frame; frames before it are valid.
pub fn for_each_frame<'a>(
    mut position: u64,
    mut bytes: &'a [u8],
    segment_size: u64,
    mut f: impl FnMut(u64, &'a [u8]),
) -> Result<(), FrameError> {
    while !bytes.is_empty() {
        let len = check_header(position, bytes, segment_size)? as usize;
        if bytes.len() < len {
            return Err(FrameError::Truncated { position });
        }
        let (raw, rest) = bytes.split_at(len);
        f(position, raw);
        position += align8(len as u64);
        bytes = rest;
    }
    Ok(())
}

/// Tag of segment `index`, as the journal writes it.
pub fn tag_for_segment(index: u64) -> u32 {
    ((index % u32::MAX as u64) + 1) as u32
}

/// Builds a frame header's commit word (used by tests and the in-memory journal).
pub fn make_commit_word(len: u64, state: u8, tag: u32) -> u64 {
    (len & LEN_MASK) | ((state as u64 & 3) << 30) | ((tag as u64) << 32)
}
