//! The systems a scenario measures: the physical limit, Ringway, and the peers.
//!
//! A system takes part in `pingpong` by implementing [`PingPong`]: the parent side prepares shared resources and
//! describes them in an [`EchoSpec`]; the echo side is built from that spec in a thread of this process or in a
//! child process (the spec's arguments travel on the command line, its file descriptors are inherited); the parent
//! then builds its [`Pinger`] and times round trips.
//!
//! A system takes part in the one-directional scenarios (`throughput`, `oneway`, `fanout`) by implementing
//! [`channel::Channel`].

pub mod channel;
pub mod crossbeam;
pub mod fdpair;
#[cfg(feature = "iceoryx2")]
pub mod iceoryx2;
pub mod limit;
pub mod limit_log;
pub mod limit_two;
pub mod pipe;
pub mod ringfire;
pub mod ringway;
pub mod ringway_channel;
pub mod tcp;
pub mod udp;
pub mod uds;

use std::any::Any;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{BenchError, Result};

/// How kernel-based peers wait for data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitMode {
    /// Non-blocking reads retried in a busy loop (same CPU policy as the shared-memory systems).
    Spin,
    /// Blocking reads (the kernel wakes the reader).
    Block,
}

impl WaitMode {
    /// Name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WaitMode::Spin => "spin",
            WaitMode::Block => "block",
        }
    }
}

/// Parameters shared by both sides of a round trip.
#[derive(Clone, Debug)]
pub struct PingCtx {
    /// Payload bytes per message.
    pub payload: usize,
    /// Round trips the echo side serves (warm-up plus recorded).
    pub count: u64,
    /// Private scratch directory (under /dev/shm) for files the systems create.
    pub dir: PathBuf,
    /// How long either side waits for the other before giving up.
    pub timeout: Duration,
    /// Waiting policy of kernel-based peers.
    pub wait: WaitMode,
}

/// What the echo side needs to attach to the resources the parent prepared.
#[derive(Default)]
pub struct EchoSpec {
    /// Plain arguments (names, paths, ports).
    pub args: Vec<String>,
    /// File descriptors the echo side takes over (inherited by a child process).
    pub fds: Vec<OwnedFd>,
    /// In-process objects handed to an echo thread (systems that only work within one process).
    pub local: Option<Box<dyn Any + Send>>,
}

/// The timed side: sends one message and busy-waits for its echo.
pub trait Pinger {
    /// One round trip carrying sequence number `seq` (stamped into the payload and checked on return).
    fn round_trip(&mut self, seq: u64) -> Result<()>;
}

/// The echo side: waits for one message and sends it back.
pub trait Echo {
    /// Serves one round trip.
    fn echo_one(&mut self) -> Result<()>;
}

/// A system measured by `pingpong`.
pub trait PingPong: Sized {
    /// Row name in the report.
    const NAME: &'static str;
    /// Whether the echo side can live in another process (false for in-process channels).
    const CROSS_PROCESS: bool = true;
    /// The timed side.
    type Pinger: Pinger;
    /// The echo side.
    type Echo: Echo;
    /// Creates the shared resources; returns the parent state and what the echo side needs.
    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)>;
    /// Builds the echo side (in the echo thread or the child process).
    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<Self::Echo>;
    /// Builds the timed side, once the echo side reported ready.
    fn pinger(self, ctx: &PingCtx) -> Result<Self::Pinger>;
    /// Why this system cannot run with `ctx`, if it cannot (checked before anything is created).
    fn unsupported(_ctx: &PingCtx) -> Option<String> {
        None
    }
}

/// Writes `seq` into the first bytes of `buf` (as many of its 8 little-endian bytes as fit).
#[inline(always)]
pub fn stamp(buf: &mut [u8], seq: u64) {
    // A constant-length copy for the common case compiles to one store; the variable-length one
    // is a call into memcpy, which the timed path of every system would pay.
    if let Some(head) = buf.first_chunk_mut::<8>() {
        *head = seq.to_le_bytes();
        return;
    }
    let n = buf.len();
    buf.copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// Reads the sequence number stamped by [`stamp`].
#[inline(always)]
pub fn seq_of(bytes: &[u8]) -> u64 {
    if let Some(head) = bytes.first_chunk::<8>() {
        return u64::from_le_bytes(*head);
    }
    let mut b = [0u8; 8];
    let n = bytes.len().min(8);
    b[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(b)
}

/// Checks that a reply carries `seq` (truncated to the payload's width) and has the payload's length.
#[inline(always)]
pub fn check_reply(system: &'static str, reply: &[u8], len: usize, seq: u64) -> Result<()> {
    let n = len.min(8);
    let mask = if n == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * n)) - 1
    };
    let got = seq_of(reply);
    if reply.len() != len || got != seq & mask {
        return Err(BenchError::BadReply {
            system,
            expected: seq & mask,
            got: if reply.len() != len {
                reply.len() as u64
            } else {
                got
            },
        });
    }
    Ok(())
}

/// Every peer name accepted by `--peers`, in report order.
pub const PEERS: &[&str] = &[
    "ringfire",
    "iceoryx2",
    "crossbeam",
    "uds",
    "tcp",
    "udp",
    "pipe",
];

/// Parses `--peers`: `all`, `none`, or a comma-separated list of [`PEERS`].
pub fn parse_peers(spec: &str) -> Result<Vec<&'static str>> {
    match spec.trim() {
        "all" => return Ok(PEERS.to_vec()),
        "none" | "" => return Ok(Vec::new()),
        _ => {}
    }
    let mut out = Vec::new();
    for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(p) = PEERS.iter().find(|p| **p == name) else {
            return Err(BenchError::Usage(format!(
                "unknown peer `{name}`; known: all, none, {}",
                PEERS.join(", ")
            )));
        };
        if !out.contains(p) {
            out.push(*p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_and_check_short_payloads() {
        let mut b = [0u8; 3];
        stamp(&mut b, 0x0102_0304_0506);
        assert!(check_reply("t", &b, 3, 0x0102_0304_0506).is_ok());
        assert!(check_reply("t", &b, 3, 7).is_err());
        assert!(check_reply("t", &b[..2], 3, 0x0102_0304_0506).is_err());
    }

    #[test]
    fn peers_parse() {
        assert_eq!(parse_peers("all").unwrap().len(), PEERS.len());
        assert!(parse_peers("none").unwrap().is_empty());
        assert_eq!(parse_peers("tcp, uds,tcp").unwrap(), vec!["tcp", "uds"]);
        assert!(parse_peers("zeromq").is_err());
    }
}
