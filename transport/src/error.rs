//! The crate's error type.

use thiserror::Error;

use crate::frame::FrameError;
use crate::wire::{ErrorCode, WireError};

/// Replication errors.
#[derive(Debug, Error)]
pub enum Error {
    /// Socket or ring failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A packet could not be encoded or decoded.
    #[error("wire: {0}")]
    Wire(#[from] WireError),
    /// A received frame failed its checks.
    #[error("frame: {0}")]
    Frame(#[from] FrameError),
    /// The requested position is no longer retained by the primary.
    #[error("position {requested} is no longer retained (oldest is {oldest})")]
    Lapped {
        /// Position asked for.
        requested: u64,
        /// Oldest retained position.
        oldest: u64,
    },
    /// The replica already holds more than the primary: they are not copies of one stream.
    #[error("replica is at {replica}, beyond the primary's tail {tail}")]
    ReplicaAhead {
        /// Replica position.
        replica: u64,
        /// Primary tail.
        tail: u64,
    },
    /// The replica stream exists with another geometry.
    #[error("replica geometry mismatch: {0}")]
    Geometry(String),
    /// The peer reported an error.
    #[error("peer reported {code:?} ({a}, {b})")]
    Remote {
        /// Code sent by the peer.
        code: ErrorCode,
        /// First value.
        a: u64,
        /// Second value.
        b: u64,
    },
    /// A journal operation failed.
    #[error("journal: {0}")]
    Journal(String),
    /// The ringway-core journal reported an error.
    #[error(transparent)]
    Core(ringway_core::Error),
    /// An endpoint string could not be parsed.
    #[error(
        "bad endpoint {0:?}: expected udp://HOST:PORT, tcp://HOST:PORT or \
         udp://GROUP:PORT?interface=ADDR&ttl=N&loop=0|1&min-receivers=N"
    )]
    Endpoint(String),
    /// A synchronous-mode wait ran out of time.
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
}

/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<ringway_core::Error> for Error {
    fn from(e: ringway_core::Error) -> Self {
        match e {
            ringway_core::Error::Lapped { requested, oldest } => Error::Lapped {
                requested: requested.0,
                oldest: oldest.0,
            },
            e => Error::Core(e),
        }
    }
}
