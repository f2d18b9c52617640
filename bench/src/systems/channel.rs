//! One-directional transfer from writers to readers: the shape `throughput`, `oneway` and `fanout` measure.
//!
//! A system takes part by implementing [`Channel`]: [`Channel::open`] creates what the endpoints share (files,
//! service names, descriptors) on the driving thread; each writer and reader thread then builds its own endpoint
//! from it with [`Channel::tx`] / [`Channel::rx`] (some systems' ports may not move between threads). Every
//! system does the same work per message: the writer fills the endpoint's staging buffer and the system copies
//! it into its medium once ([`Tx::send`]); the reader sees each message as a byte slice ([`Rx::poll`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::Result;

/// What a channel is opened for.
#[derive(Clone, Debug)]
pub struct ChanCtx {
    /// Payload bytes per message.
    pub payload: usize,
    /// Messages each writer sends over the whole measurement (warm-up included).
    pub messages: u64,
    /// Writer threads.
    pub writers: usize,
    /// Reader threads; each reader receives every message.
    pub readers: usize,
    /// Private scratch directory (under /dev/shm) for files the system creates.
    pub dir: PathBuf,
    /// How long a side waits for the other before giving up.
    pub timeout: Duration,
}

/// A writer's endpoint.
pub trait Tx {
    /// The staging buffer of the next message (`payload` bytes); the writer fills it before [`Tx::send`].
    fn buf(&mut self) -> &mut [u8];
    /// Sends the staging buffer. Lossless systems wait (busy-spin) while the medium is full, up to the timeout.
    fn send(&mut self) -> Result<()>;
    /// Called once every endpoint exists, before the first message (systems that connect lazily connect here).
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A reader's endpoint.
pub trait Rx {
    /// Hands up to `max` available messages to `f`, in order; returns how many (0 when none is available).
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, f: F) -> Result<usize>;
    /// Called once every endpoint exists, before the first message (systems that connect lazily connect here).
    fn settle(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A system measured by the one-directional scenarios.
pub trait Channel {
    /// Row name in the report.
    const NAME: &'static str;
    /// How the system is driven, for the report's mode column.
    const HOW: &'static str;
    /// Whether a writer faster than its reader loses messages instead of waiting (no back-pressure).
    const LOSSY: bool = false;
    /// What the endpoints share; built on the driving thread, borrowed by the endpoint threads.
    type Shared: Sync;
    /// A writer's endpoint.
    type Tx: Tx;
    /// A reader's endpoint.
    type Rx: Rx;
    /// Why this system cannot run `ctx`, if it cannot (checked before anything is created).
    fn unsupported(_ctx: &ChanCtx) -> Option<String> {
        None
    }
    /// Creates the shared resources.
    fn open(ctx: &ChanCtx) -> Result<Self::Shared>;
    /// Builds writer `index`'s endpoint (on the writer's thread).
    fn tx(shared: &Self::Shared, ctx: &ChanCtx, index: usize) -> Result<Self::Tx>;
    /// Builds reader `index`'s endpoint (on the reader's thread).
    fn rx(shared: &Self::Shared, ctx: &ChanCtx, index: usize) -> Result<Self::Rx>;
}

/// Something run once per system with the system's [`Channel`] type.
pub trait ChannelRun {
    /// The result of one system.
    type Out;
    /// Runs `C`.
    fn run<C: Channel>(&mut self) -> Self::Out;
}

/// Calls `r.run::<C>()` with the [`Channel`] of system `name` for messages of `payload` bytes, or returns why it
/// cannot (ringfire sizes that are not compiled in, iceoryx2 without its feature, unknown names).
pub fn run_system<R: ChannelRun>(
    name: &str,
    payload: usize,
    r: &mut R,
) -> std::result::Result<R::Out, String> {
    use super::{crossbeam::Crossbeam, pipe::Pipe, ringway::Ringway, tcp::Tcp, udp::Udp, uds::Uds};
    Ok(match name {
        "ringway" => r.run::<Ringway>(),
        "ringfire" => crate::with_ringfire_size!(
            payload,
            T => r.run::<T>(),
            return Err(format!(
                "ringfire rings hold fixed-size items; {payload} B is not among the compiled sizes {:?}",
                super::ringfire::SIZES
            ))
        ),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => r.run::<super::iceoryx2::Iceoryx2>(),
        #[cfg(not(feature = "iceoryx2"))]
        "iceoryx2" => {
            return Err(
                "built without the `iceoryx2` feature (cargo run --release -p ringway-bench --features iceoryx2)"
                    .into(),
            )
        }
        "crossbeam" => r.run::<Crossbeam>(),
        "uds" => r.run::<Uds>(),
        "tcp" => r.run::<Tcp>(),
        "udp" => r.run::<Udp>(),
        "pipe" => r.run::<Pipe>(),
        other => return Err(format!("unknown system `{other}`")),
    })
}

/// The common `unsupported` checks: empty payloads, and more writers or readers than the system takes.
pub fn limits(
    ctx: &ChanCtx,
    max_writers: Option<(usize, &str)>,
    max_readers: Option<(usize, &str)>,
) -> Option<String> {
    if ctx.payload == 0 {
        return Some("payload must be at least 1 byte".into());
    }
    if let Some((max, why)) = max_writers {
        if ctx.writers > max {
            return Some(format!("{} writers: {why}", ctx.writers));
        }
    }
    if let Some((max, why)) = max_readers {
        if ctx.readers > max {
            return Some(format!("{} readers: {why}", ctx.readers));
        }
    }
    None
}

/// Takes a value out of a shared slot once (endpoints that exist once, such as a descriptor or a producer).
pub fn take_once<T>(
    slot: &std::sync::Mutex<Option<T>>,
    system: &'static str,
    what: &str,
) -> Result<T> {
    slot.lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .ok_or_else(|| crate::error::BenchError::system(system, format!("{what} already taken")))
}
