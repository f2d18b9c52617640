//! # ringway-core
//!
//! The Ringway journal: a lock-free, memory-mapped, segmented message stream that processes
//! share. Writers append frames to fixed-size segment files; any number of readers in any
//! process read them zero-copy, from any retained position, without locks or system calls.
//!
//! ```
//! use ringway_core::{Stream, StreamConfig, Start};
//! let root = tempfile::tempdir().unwrap();
//! let cfg = StreamConfig::default().segment_size(1 << 20);
//! let stream = Stream::open_or_create(root.path(), "prices", &cfg).unwrap();
//! let mut w = stream.writer().unwrap();
//! w.append(b"EURUSD 1.0841").unwrap();
//! w.append(b"EURUSD 1.0842").unwrap();
//! let mut r = stream.reader(Start::Beginning).unwrap();
//! let mut seen = Vec::new();
//! r.poll(10, |f| seen.push(f.payload().to_vec())).unwrap();
//! assert_eq!(seen.len(), 2);
//! ```
//!
//! Without the default `std` feature only the [`frame`] format remains (`no_std`, no allocation),
//! shared with firmware and fuzzers. The on-disk format is specified in `docs/format.md`.
#![cfg_attr(not(feature = "std"), no_std)]
#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod frame;
pub mod position;
pub mod wire;

pub use position::Position;

#[cfg(feature = "std")]
pub mod agent;
#[cfg(feature = "std")]
mod clock;
#[cfg(feature = "std")]
mod config;
#[cfg(feature = "std")]
pub mod cursor;
#[cfg(feature = "std")]
mod error;
#[cfg(feature = "std")]
mod fsutil;
#[cfg(feature = "std")]
pub mod group;
#[cfg(feature = "std")]
pub mod idle;
#[cfg(feature = "std")]
pub mod meta;
#[cfg(feature = "std")]
mod notify;
#[cfg(feature = "std")]
mod preparer;
#[cfg(feature = "std")]
pub mod process;
#[cfg(feature = "std")]
pub mod protocol;
#[cfg(feature = "std")]
mod reader;
#[cfg(feature = "std")]
mod recovery;
#[cfg(feature = "std")]
mod replica;
#[cfg(feature = "std")]
pub mod replica_acks;
#[cfg(feature = "std")]
mod seek;
#[cfg(feature = "std")]
mod segment;
#[cfg(feature = "std")]
mod stat;
#[cfg(feature = "std")]
mod stream;
#[cfg(feature = "std")]
pub mod typed;
#[cfg(feature = "std")]
mod verify;
#[cfg(feature = "std")]
mod writer;

#[cfg(feature = "std")]
pub use clock::{system_now_ns, EpochClock};
#[cfg(feature = "std")]
pub use config::{Retention, StreamConfig, DEFAULT_CURSOR_SLOTS, MAX_CURSOR_SLOTS};
#[cfg(feature = "std")]
pub use cursor::{CursorInfo, CursorOptions, NamedReader};
#[cfg(feature = "std")]
pub use error::{Error, Result};
#[cfg(feature = "std")]
pub use group::{Delivery, GroupMember, GroupOptions, GroupStat};
#[cfg(feature = "std")]
pub use reader::{Frame, Reader, Start};
#[cfg(feature = "std")]
pub use replica::ReplicaWriter;
#[cfg(feature = "std")]
pub use replica_acks::{ReplicaAck, ReplicaAckError, ReplicaAcks};
#[cfg(feature = "std")]
pub use stat::{StreamStat, WriterInfo};
#[cfg(feature = "std")]
pub use stream::{default_root, list_streams, Stream};
#[cfg(feature = "std")]
pub use verify::VerifyReport;
#[cfg(feature = "std")]
pub use writer::{AppendOptions, Claim, Writer};
