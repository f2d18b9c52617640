//! The error type of the journal.

use crate::frame::FrameError;
use crate::Position;
use std::path::PathBuf;

/// Result alias for journal operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong opening, writing or reading a stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream directory does not exist.
    #[error("stream '{name}' not found in {}", dir.display())]
    NotFound {
        /// Stream name.
        name: String,
        /// Root directory searched.
        dir: PathBuf,
    },
    /// The stream already exists (on create).
    #[error("stream '{name}' already exists in {}", dir.display())]
    AlreadyExists {
        /// Stream name.
        name: String,
        /// Root directory.
        dir: PathBuf,
    },
    /// The stream name is empty or contains characters other than `[A-Za-z0-9._-]`.
    #[error("invalid stream name '{0}': use letters, digits, '.', '_' and '-' only")]
    InvalidName(String),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Another live process holds the stream's single-writer lock.
    #[error("stream '{name}' already has a live writer (pid {pid}); open it with multi-writer mode or stop that writer")]
    WriterBusy {
        /// Stream name.
        name: String,
        /// Process id of the live writer.
        pid: u32,
    },
    /// All multi-writer slots are held by live processes.
    #[error("stream '{name}' has no free writer slot ({slots} live writers)")]
    TooManyWriters {
        /// Stream name.
        name: String,
        /// Number of slots.
        slots: usize,
    },
    /// The stream is a replica: only the replication receiver may write to it.
    #[error("stream '{0}' is a read-only replica; write to its primary instead")]
    ReadOnlyReplica(String),
    /// The stream is not a replica, so it cannot take replicated frames.
    #[error(
        "stream '{0}' is not a replica (create it with replica mode to receive replicated frames)"
    )]
    NotAReplica(String),
    /// A message is larger than the stream allows.
    #[error("message of {len} bytes exceeds the stream's maximum message size of {max} bytes")]
    MessageTooLarge {
        /// Requested payload plus metadata length.
        len: usize,
        /// Maximum allowed.
        max: usize,
    },
    /// The requested position is no longer retained (deleted by retention or overwritten by the ring).
    #[error(
        "position {requested} is no longer available: the oldest retained position is {oldest}"
    )]
    Lapped {
        /// The position asked for.
        requested: Position,
        /// The oldest position still available.
        oldest: Position,
    },
    /// The requested position is beyond the stream's tail or not a frame boundary.
    #[error("position {requested} is not a frame boundary in this stream{}", hint_tail(*.tail))]
    BadPosition {
        /// The position asked for.
        requested: Position,
        /// The current end of the stream, when known.
        tail: Option<Position>,
    },
    /// A frame failed validation.
    #[error("corrupt frame at position {position}: {reason}")]
    CorruptFrame {
        /// Position of the bad frame.
        position: Position,
        /// What is wrong with it.
        reason: FrameError,
    },
    /// The metadata file or a segment file is not what Ringway wrote.
    #[error("corrupt stream file {}: {reason}", path.display())]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The stream was written by an incompatible format version.
    #[error("stream file {} has format version {found}; this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The metadata file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The named cursor does not exist.
    #[error("stream '{stream}' has no cursor named '{cursor}'")]
    CursorNotFound {
        /// Stream name.
        stream: String,
        /// Cursor name.
        cursor: String,
    },
    /// Another live process reads through this named cursor.
    #[error("cursor '{cursor}' is in use by live process {pid}")]
    CursorBusy {
        /// Cursor name.
        cursor: String,
        /// Owner pid.
        pid: u32,
    },
    /// A blocking cursor has not consumed the space the writer needs (back-pressure).
    #[error("back-pressure: blocking cursor at position {cursor_position} holds the space the writer needs")]
    WouldBlock {
        /// Position of the slowest blocking cursor.
        cursor_position: Position,
    },
    /// A multi-writer claim was taken over by recovery because this writer stalled past the claim timeout.
    #[error("claim at position {0} was recovered as abandoned after the claim timeout; the message was not written")]
    ClaimRecovered(Position),
    /// An operating-system call failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn hint_tail(tail: Option<Position>) -> String {
    match tail {
        Some(t) => format!(" (the stream currently ends at {t})"),
        None => String::new(),
    }
}

/// Adds file context to `io::Error`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
