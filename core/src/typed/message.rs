//! The [`Message`] trait: a stable wire identity for an rkyv type.

use rkyv::api::high::HighValidator;
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::sharing::Share;
use rkyv::ser::Serializer;
use rkyv::{Archive, Serialize};

use super::sink::ClaimSink;

/// The serializer [`Publisher`](super::Publisher) runs: it writes straight into a claimed frame
/// of the mapping and takes scratch space from an arena the publisher reuses.
pub type FrameSerializer<'buf, 'arena> =
    rancor::Strategy<Serializer<ClaimSink<'buf>, ArenaHandle<'arena>, Share>, rancor::Error>;

/// The validator a validated [`Subscriber`](super::Subscriber) checks frames with.
pub type FrameValidator<'a> = HighValidator<'a, rancor::Error>;

/// A message type with a stable identity on the wire.
///
/// `TYPE_ID` goes into every frame's header next to `SCHEMA_VERSION`; a subscriber only reads
/// frames whose header carries both of its own values, so a reader of the wrong type gets
/// [`TypedError::WrongType`](super::TypedError::WrongType) (or `WrongSchema`) instead of
/// reinterpreting bytes. Choose `TYPE_ID` once and never reuse it for another layout; bump
/// `SCHEMA_VERSION` whenever the archived layout changes (a field added, removed, reordered or
/// retyped).
///
/// Implement it by hand or with [`message!`](crate::message):
///
/// ```
/// use rkyv::{Archive, Serialize};
///
/// #[derive(Archive, Serialize)]
/// struct Trade { price: i64, qty: u32 }
///
/// ringway_core::message!(Trade, type_id = 0x5452_4144, schema = 1);
/// # use ringway_core::typed::Message;
/// assert_eq!(<Trade as Message>::TYPE_ID, 0x5452_4144);
/// ```
///
/// # Alignment
///
/// Frames start on 8-byte boundaries and their payload does too (`docs/format.md`); rkyv lays
/// out archived data relative to the start of the payload, so every archived value whose
/// alignment is at most 8 lands correctly aligned in the mapping. [`Publisher::new`] and the
/// subscriber constructors reject, at compile time, a root type whose archived alignment is
/// larger (e.g. one holding a `u128`). Out-of-line data (the elements of a `Vec<u128>`) cannot
/// be checked that way: validated subscribers report such frames as invalid, unchecked ones
/// must never be used with such types.
///
/// [`Publisher::new`]: super::Publisher::new
pub trait Message:
    Archive<Archived: for<'a> CheckBytes<FrameValidator<'a>>>
    + for<'b, 'a> Serialize<FrameSerializer<'b, 'a>>
{
    /// Stable identifier of the type, stored in every frame's `type_id`.
    const TYPE_ID: u32;
    /// Version of the archived layout, stored in every frame's `schema_version`.
    const SCHEMA_VERSION: u16;
}

/// Largest archived alignment a message type may have: the alignment of frame payloads.
pub const MAX_ALIGN: usize = crate::frame::FRAME_ALIGN as usize;

/// Fails compilation for message types whose archived root needs more than [`MAX_ALIGN`].
pub(crate) const fn assert_alignment<T: Archive>() {
    assert!(
        core::mem::align_of::<T::Archived>() <= MAX_ALIGN,
        "the archived type needs more than 8-byte alignment, which frame payloads do not provide"
    );
}

/// Implements [`Message`](crate::typed::Message) for a type that derives rkyv's `Archive` and
/// `Serialize`.
///
/// ```
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Heartbeat { seq: u64 }
/// ringway_core::message!(Heartbeat, type_id = 17, schema = 1);
/// ```
#[macro_export]
macro_rules! message {
    ($ty:ty, type_id = $id:expr, schema = $v:expr $(,)?) => {
        impl $crate::typed::Message for $ty {
            const TYPE_ID: u32 = $id;
            const SCHEMA_VERSION: u16 = $v;
        }
    };
}
