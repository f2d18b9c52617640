//! Errors of typed publishing and subscribing.

use crate::Position;

/// What can go wrong sending or receiving typed messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TypedError {
    /// The journal failed (includes `WouldBlock` from `try_send` and `Lapped` from `poll`).
    #[error(transparent)]
    Journal(#[from] crate::Error),
    /// A frame carries another message type.
    #[error("frame at {position} holds message type {found:#x}, this subscriber reads type {expected:#x}")]
    WrongType {
        /// Position of the frame (already skipped).
        position: Position,
        /// The subscriber's `TYPE_ID`.
        expected: u32,
        /// The frame's `type_id`.
        found: u32,
    },
    /// A frame carries the right type in another schema version.
    #[error("frame at {position} holds schema version {found} of type {type_id:#x}, this subscriber reads version {expected}")]
    WrongSchema {
        /// Position of the frame (already skipped).
        position: Position,
        /// The message type.
        type_id: u32,
        /// The subscriber's `SCHEMA_VERSION`.
        expected: u16,
        /// The frame's schema version.
        found: u16,
    },
    /// Validation (bytecheck) rejected a frame's payload.
    #[error("frame at {position} is not a valid archived message: {source}")]
    Invalid {
        /// Position of the frame (already skipped).
        position: Position,
        /// What the validator found.
        source: rkyv::rancor::Error,
    },
    /// An unchecked subscriber got a payload too short to hold the archived root.
    #[error(
        "frame at {position} has a {len}-byte payload, the archived message needs at least {need}"
    )]
    TooShort {
        /// Position of the frame (already skipped).
        position: Position,
        /// Payload length.
        len: usize,
        /// Size of the archived root.
        need: usize,
    },
    /// Serializing a value failed (e.g. a value the serializer cannot represent).
    #[error("serializing the message failed: {0}")]
    Serialize(#[source] rkyv::rancor::Error),
}

impl TypedError {
    /// Whether this is back-pressure from a blocking cursor (`try_send`): retry later.
    pub fn is_would_block(&self) -> bool {
        matches!(self, TypedError::Journal(crate::Error::WouldBlock { .. }))
    }
}
