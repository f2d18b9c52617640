//! Ringway replication: a sender tails a local stream and ships its frames; a receiver writes
//! them into a replica stream at the same positions, byte for byte.
//!
//! - [`wire`]: the packet format, encoder and decoder (see `docs/replication.md`).
//! - [`io`]: datagram I/O over io_uring with a plain-socket fallback; [`loss`] injects faults.

mod acks;
pub mod auth;
pub mod cli;
pub mod endpoint;
pub mod error;
pub mod frame;
mod idle;
pub mod io;
pub mod journal;
pub mod loss;
mod status;
pub mod sync;
pub mod tcp;
pub mod udp;
pub mod wire;

pub use error::{Error, Result};
