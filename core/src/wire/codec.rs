//! Allocation-free encoding and validated zero-copy access.

use core::mem::size_of;

use rkyv::{
    api::low::{access, from_bytes, to_bytes_in_with_alloc},
    rancor::Failure,
    ser::{allocator::SubAllocator, writer::Buffer},
    Archive,
};

use super::{ArchivedCommand, ArchivedTelemetry, Command, Telemetry, WireError};

/// Alignment an encoded value needs in memory to be accessed in place.
pub const WIRE_ALIGN: usize = 8;

/// Encoded size of a [`Telemetry`] (all values have the same size).
pub const TELEMETRY_WIRE_SIZE: usize = size_of::<ArchivedTelemetry>();

/// Encoded size of a [`Command`].
pub const COMMAND_WIRE_SIZE: usize = size_of::<ArchivedCommand>();

/// A byte buffer aligned to [`WIRE_ALIGN`], for encoding into and for receiving into.
#[derive(Clone)]
#[repr(C, align(8))]
pub struct WireBuf<const N: usize>(pub [u8; N]);

impl<const N: usize> WireBuf<N> {
    /// A zeroed buffer.
    pub const fn new() -> Self {
        Self([0; N])
    }

    /// Copy `src` into the start of the buffer and return the aligned copy.
    pub fn load(&mut self, src: &[u8]) -> Result<&[u8], WireError> {
        let dst = self
            .0
            .get_mut(..src.len())
            .ok_or(WireError::BufferTooSmall {
                needed: src.len(),
                available: N,
            })?;
        dst.copy_from_slice(src);
        Ok(dst)
    }
}

impl<const N: usize> Default for WireBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

// The archived layout must not depend on the target: these hold for every target because the
// format features (little endian, 32-bit offsets, aligned) are pinned in Cargo.toml.
const _: () = assert!(core::mem::align_of::<ArchivedTelemetry>() <= WIRE_ALIGN);
const _: () = assert!(core::mem::align_of::<ArchivedCommand>() <= WIRE_ALIGN);

fn encode_fixed<'o, T, const N: usize>(
    value: &T,
    out: &'o mut WireBuf<N>,
    size: usize,
) -> Result<&'o [u8], WireError>
where
    T: Archive
        + for<'a> rkyv::Serialize<
            rkyv::api::low::LowSerializer<Buffer<'a>, SubAllocator<'a>, Failure>,
        >,
{
    if N < size {
        return Err(WireError::BufferTooSmall {
            needed: size,
            available: N,
        });
    }
    let written = to_bytes_in_with_alloc::<_, _, Failure>(
        value,
        Buffer::from(&mut out.0[..]),
        SubAllocator::empty(),
    )
    .map_err(|_| WireError::BufferTooSmall {
        needed: size,
        available: N,
    })?
    .len();
    Ok(&out.0[..written])
}

fn check_shape<T>(bytes: &[u8]) -> Result<(), WireError> {
    if bytes.len() != size_of::<T>() {
        return Err(WireError::WrongLength {
            expected: size_of::<T>(),
            actual: bytes.len(),
        });
    }
    let offset = bytes.as_ptr() as usize % WIRE_ALIGN;
    if offset != 0 {
        return Err(WireError::Misaligned { offset });
    }
    Ok(())
}

/// Serialize `value` into `out` without allocating; returns the encoded bytes
/// ([`TELEMETRY_WIRE_SIZE`] long).
pub fn encode_telemetry<'o, const N: usize>(
    value: &Telemetry,
    out: &'o mut WireBuf<N>,
) -> Result<&'o [u8], WireError> {
    encode_fixed(value, out, TELEMETRY_WIRE_SIZE)
}

/// Serialize `value` into `out` without allocating; returns the encoded bytes
/// ([`COMMAND_WIRE_SIZE`] long).
pub fn encode_command<'o, const N: usize>(
    value: &Command,
    out: &'o mut WireBuf<N>,
) -> Result<&'o [u8], WireError> {
    encode_fixed(value, out, COMMAND_WIRE_SIZE)
}

/// Validate `bytes` and view them as an archived [`Telemetry`] in place (zero copy).
///
/// `bytes` must be exactly [`TELEMETRY_WIRE_SIZE`] long and start at an address aligned to
/// [`WIRE_ALIGN`] (journal payloads are).
pub fn access_telemetry(bytes: &[u8]) -> Result<&ArchivedTelemetry, WireError> {
    check_shape::<ArchivedTelemetry>(bytes)?;
    access::<ArchivedTelemetry, Failure>(bytes).map_err(|_| WireError::Invalid)
}

/// View `bytes` as an archived [`Telemetry`] without validating the contents.
///
/// Length and alignment are still checked.
///
/// # Safety
/// The bytes must have been produced by [`encode_telemetry`] or have passed
/// [`access_telemetry`] before (for example when the gateway appended them).
pub unsafe fn access_telemetry_unchecked(bytes: &[u8]) -> Result<&ArchivedTelemetry, WireError> {
    check_shape::<ArchivedTelemetry>(bytes)?;
    // SAFETY: the caller guarantees the bytes are a valid archived Telemetry; the length and
    // alignment were checked above, so the root object lies fully inside `bytes`.
    Ok(unsafe { rkyv::access_unchecked::<ArchivedTelemetry>(bytes) })
}

/// Validate `bytes` and view them as an archived [`Command`] in place.
pub fn access_command(bytes: &[u8]) -> Result<&ArchivedCommand, WireError> {
    check_shape::<ArchivedCommand>(bytes)?;
    access::<ArchivedCommand, Failure>(bytes).map_err(|_| WireError::Invalid)
}

/// Validate `bytes` (which need not be aligned) and decode an owned [`Command`].
///
/// Unaligned input is first copied into an aligned stack buffer.
pub fn decode_command(bytes: &[u8]) -> Result<Command, WireError> {
    if bytes.len() != COMMAND_WIRE_SIZE {
        return Err(WireError::WrongLength {
            expected: COMMAND_WIRE_SIZE,
            actual: bytes.len(),
        });
    }
    let mut buf = WireBuf::<COMMAND_WIRE_SIZE>::new();
    let aligned = buf.load(bytes)?;
    from_bytes::<Command, Failure>(aligned).map_err(|_| WireError::Invalid)
}
