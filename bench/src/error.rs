//! The harness's error type.

use std::path::PathBuf;

/// Everything that can stop a benchmark, a system or a comparison.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// An operating-system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The other side did not answer in time (it died, or the machine stalled badly).
    #[error("timed out after {secs} s waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        secs: u64,
    },
    /// A reply did not carry what was sent.
    #[error("{system}: reply out of order or corrupt: expected sequence {expected}, got {got}")]
    BadReply {
        /// The system under test.
        system: &'static str,
        /// The sequence number sent.
        expected: u64,
        /// The sequence number received.
        got: u64,
    },
    /// The system under test reported an error.
    #[error("{system}: {message}")]
    System {
        /// The system under test.
        system: &'static str,
        /// Its error, rendered.
        message: String,
    },
    /// The echo child process failed.
    #[error("echo process for {system}: {message}")]
    Child {
        /// The system under test.
        system: String,
        /// What went wrong.
        message: String,
    },
    /// A JSON summary could not be parsed or has the wrong shape.
    #[error("{path}: {message}")]
    BadSummary {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A command-line value is out of range or inconsistent.
    #[error("{0}")]
    Usage(String),
    /// Plot rendering failed.
    #[error("plot {path}: {message}")]
    Plot {
        /// The output file.
        path: PathBuf,
        /// The backend's error.
        message: String,
    },
    /// Histogram recording failed (value out of the trackable range).
    #[error("histogram: {0}")]
    Histogram(String),
}

impl BenchError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    /// Wraps any displayable error of a system under test.
    pub fn system(system: &'static str, err: impl std::fmt::Display) -> Self {
        BenchError::System {
            system,
            message: err.to_string(),
        }
    }
}

/// Result with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
