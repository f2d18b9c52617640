//! The fixed-rate publisher of `oneway` and `fanout`, and the stamp it puts in each message: the intended send
//! time, the actual send time (both raw TSC ticks of the run's clock) and the sequence number.
//!
//! Latency is taken against the intended time (coordinated-omission correction: a publisher that stalls cannot
//! hide the stall, the messages it sends late carry the time they should have left) and, separately, against the
//! actual time.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::Result;
use crate::scenarios::parties::{self, Outcome};
use crate::scenarios::Env;
use crate::systems::channel::{ChanCtx, Channel, Tx};
use crate::systems::seq_of;
use crate::timer::Timer;

/// Bytes of the stamp at the start of every message.
pub const STAMP_BYTES: usize = 24;

/// What a subscriber reads back from a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    /// When the message should have been sent (raw ticks).
    pub intended: u64,
    /// When it was sent (raw ticks).
    pub actual: u64,
    /// Its sequence number, from 0.
    pub seq: u64,
}

impl Stamp {
    /// Reads the stamp of a message of at least [`STAMP_BYTES`] bytes.
    #[inline(always)]
    pub fn read(msg: &[u8]) -> Stamp {
        Stamp {
            intended: seq_of(&msg[..8]),
            actual: seq_of(&msg[8..16]),
            seq: seq_of(&msg[16..24]),
        }
    }

    #[inline(always)]
    fn write(&self, buf: &mut [u8]) {
        buf[..8].copy_from_slice(&self.intended.to_le_bytes());
        buf[8..16].copy_from_slice(&self.actual.to_le_bytes());
        buf[16..24].copy_from_slice(&self.seq.to_le_bytes());
    }
}

/// Sends `total` messages at `rate` per second, the first ten intervals from now, busy-waiting for each intended
/// time; sets `done` (Release, pairing with the subscribers' Acquire) after the last. Returns how many sends
/// started after their intended time.
pub fn publish<T: Tx>(
    tx: &mut T,
    timer: &Timer,
    rate: u64,
    total: u64,
    done: &AtomicBool,
) -> Result<u64> {
    let interval = timer.ticks_per_ns() * 1e9 / rate as f64;
    let start = timer.raw() + (interval * 10.0) as u64;
    let mut late = 0u64;
    for seq in 0..total {
        let intended = start + (seq as f64 * interval) as u64;
        let mut now = timer.raw();
        if now > intended {
            late += 1;
        }
        while now < intended {
            core::hint::spin_loop();
            now = timer.raw();
        }
        Stamp {
            intended,
            actual: now,
            seq,
        }
        .write(tx.buf());
        tx.send()?;
    }
    done.store(true, Ordering::Release);
    Ok(late)
}

/// Runs `C` with one paced publisher ([`publish`], `total` = `ctx.messages`) and `ctx.readers` subscribers, each
/// running `subscriber` with its endpoint and the publisher's `done` flag. The writer's result is its late count.
pub fn run<C, S, RO>(ctx: &ChanCtx, env: &Env, rate: u64, subscriber: S) -> Result<Outcome<u64, RO>>
where
    C: Channel,
    S: Fn(&mut C::Rx, &AtomicBool) -> Result<RO> + Sync,
    RO: Send,
{
    let done = AtomicBool::new(false);
    let timer = &env.timer;
    parties::run::<C, _, _, _, _>(
        ctx,
        env.core_a,
        env.core_b,
        |_, tx, _| publish(tx, timer, rate, ctx.messages, &done),
        |_, rx, _| subscriber(rx, &done),
    )
}
