//! Errors of the wire codec.

use core::fmt;

/// Why bytes could not be encoded into, or read as, a wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WireError {
    /// The output buffer cannot hold the encoded value.
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The input is shorter or longer than the archived type.
    WrongLength {
        /// Expected length in bytes.
        expected: usize,
        /// Length that was given.
        actual: usize,
    },
    /// The input does not start at an address aligned to [`WIRE_ALIGN`](super::WIRE_ALIGN).
    Misaligned {
        /// The input's address modulo the required alignment.
        offset: usize,
    },
    /// The bytes are not a valid archived value (bad enum tag, broken invariant, ...).
    Invalid,
    /// A telemetry value cannot take another reading ([`MAX_READINGS`](super::MAX_READINGS)).
    TooManyReadings,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { needed, available } => {
                write!(f, "buffer too small: need {needed} bytes, have {available}")
            }
            Self::WrongLength { expected, actual } => {
                write!(f, "wrong length: expected {expected} bytes, got {actual}")
            }
            Self::Misaligned { offset } => {
                write!(
                    f,
                    "input misaligned by {offset} bytes (needs 8-byte alignment)"
                )
            }
            Self::Invalid => f.write_str("bytes are not a valid archived value"),
            Self::TooManyReadings => f.write_str("too many readings in one telemetry value"),
        }
    }
}

impl core::error::Error for WireError {}
