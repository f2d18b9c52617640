//! Wire types shared by devices, the MQTT gateway and host readers.
//!
//! This module is `no_std` and allocation-free: it is available with the `std` feature of
//! `ringway-core` turned off, which is how device firmware uses it.
//!
//! The encoding is [rkyv] 0.8 with an explicitly pinned format (little endian, 32-bit relative
//! pointers, aligned primitives), so a Cortex-M device and an x86_64 host agree byte for byte.
//! A device serializes a [`Telemetry`] into a caller-provided [`WireBuf`] (no heap, no
//! scratch allocator); the gateway stores those bytes verbatim as the payload of a journal
//! frame; a host process then reads `&ArchivedTelemetry` straight out of the memory mapping with
//! [`access_telemetry`]. Frames are 8-byte aligned in the journal, which is the alignment the
//! archived types need ([`WIRE_ALIGN`]).
//!
//! Everything that came from a device or the network is validated (bytecheck) before use:
//! [`access_telemetry`] and [`access_command`] check bounds, alignment, enum tags, `bool`/`char`
//! validity and the type invariants (for example `len <= MAX_READINGS`), and return a typed
//! [`WireError`] instead of panicking. [`access_telemetry_unchecked`] exists for data the caller
//! validated already (e.g. the gateway checked it before appending).
//!
//! Duplicate suppression: every reading carries the device id, a boot id and a sequence number
//! that increases by one per reading within a boot. `(device_id, boot_id, seq)` identifies a
//! reading uniquely, so a QoS 1 retransmission can be dropped by whoever stores it.

mod codec;
mod command;
mod error;
mod telemetry;

pub use codec::{
    access_command, access_telemetry, access_telemetry_unchecked, decode_command, encode_command,
    encode_telemetry, WireBuf, COMMAND_WIRE_SIZE, TELEMETRY_WIRE_SIZE, WIRE_ALIGN,
};
pub use command::{Action, ArchivedAction, ArchivedCommand, Command};
pub use error::WireError;
pub use telemetry::{
    ArchivedDeviceId, ArchivedQuantity, ArchivedReading, ArchivedTelemetry, DeviceId, Quantity,
    Reading, Telemetry, MAX_READINGS,
};

/// Journal `type_id` the gateway assigns to frames holding an archived [`Telemetry`].
pub const TELEMETRY_TYPE_ID: u32 = 0x5257_0001;
/// Journal `type_id` for frames holding an archived [`Command`].
pub const COMMAND_TYPE_ID: u32 = 0x5257_0002;
/// Schema version of the types in this module (journal `schema_version`).
pub const WIRE_SCHEMA_VERSION: u16 = 1;

#[cfg(test)]
mod tests;
