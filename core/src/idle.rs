//! Idle strategies: what a polling thread does when a duty cycle found no work.
//!
//! | strategy | latency after a quiet period | CPU while idle |
//! |---|---|---|
//! | [`IdleStrategy::BusySpin`] | lowest | one core, 100% |
//! | [`IdleStrategy::Yield`] | low (a `sched_yield` per empty poll) | 100%, shared with other threads |
//! | [`IdleStrategy::Backoff`] | low; spins briefly, then yields | 100%, shared |
//! | [`IdleStrategy::Sleep`] | up to the sleep plus timer slack | ~0% |
//! | [`IdleStrategy::Block`] | a futex wake-up | ~0% |
//!
//! `Block` needs something to block on: a [`Wait`] such as a [`Reader`], a
//! [`NamedReader`] or a typed [`Subscriber`](crate::typed::Subscriber). The reader blocks in the
//! kernel on a futex word in the stream's shared metadata and any writer process wakes it on
//! commit; writers make no system call while nobody blocks, so busy-spinning readers of the same
//! stream pay nothing for it.

use std::time::Duration;

use crossbeam_utils::Backoff;

use crate::{NamedReader, Reader};

/// How to idle when a duty cycle did no work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdleStrategy {
    /// Spin on the CPU (`spin_loop` hint): lowest latency, burns the core.
    BusySpin,
    /// Give the CPU to other runnable threads (`sched_yield`) once per empty cycle.
    Yield,
    /// Spin with exponential back-off, then yield (crossbeam-utils `Backoff`); resets on work.
    #[default]
    Backoff,
    /// Sleep this long per empty cycle.
    Sleep(Duration),
    /// Block in the kernel until a writer commits, at most this long per empty cycle (the bound
    /// is how quickly a blocked agent notices a stop request).
    Block(Duration),
}

impl IdleStrategy {
    /// Blocking with the default bound of 50 ms per wait.
    pub const BLOCK: IdleStrategy = IdleStrategy::Block(Duration::from_millis(50));

    /// Parses `spin`, `yield`, `backoff`, `sleep:<micros>` or `block[:<millis>]`.
    ///
    /// ```
    /// use ringway_core::idle::IdleStrategy;
    /// use std::time::Duration;
    /// assert_eq!("sleep:100".parse::<IdleStrategy>().unwrap(), IdleStrategy::Sleep(Duration::from_micros(100)));
    /// assert_eq!("block".parse::<IdleStrategy>().unwrap(), IdleStrategy::BLOCK);
    /// assert!("nap".parse::<IdleStrategy>().is_err());
    /// ```
    pub fn parse(s: &str) -> Result<IdleStrategy, IdleError> {
        let bad = || IdleError::Parse(s.to_string());
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a.parse::<u64>().map_err(|_| bad())?)),
            None => (s, None),
        };
        Ok(match (name, arg) {
            ("spin", None) => IdleStrategy::BusySpin,
            ("yield", None) => IdleStrategy::Yield,
            ("backoff", None) => IdleStrategy::Backoff,
            ("sleep", Some(us)) => IdleStrategy::Sleep(Duration::from_micros(us)),
            ("sleep", None) => IdleStrategy::Sleep(Duration::from_micros(100)),
            ("block", None) => IdleStrategy::BLOCK,
            ("block", Some(ms)) if ms > 0 => IdleStrategy::Block(Duration::from_millis(ms)),
            _ => return Err(bad()),
        })
    }
}

impl std::str::FromStr for IdleStrategy {
    type Err = IdleError;
    fn from_str(s: &str) -> Result<Self, IdleError> {
        IdleStrategy::parse(s)
    }
}

/// Errors of idling.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdleError {
    /// [`IdleStrategy::Block`] was used without anything to block on.
    #[error("the Block idle strategy needs a reader to block on (use Idler::idle_on with a reader or subscriber)")]
    NeedsWaiter,
    /// An idle strategy name did not parse.
    #[error(
        "unknown idle strategy '{0}': use spin, yield, backoff, sleep:<micros> or block[:<millis>]"
    )]
    Parse(String),
}

/// Something a thread can block on until new data may be ready.
pub trait Wait {
    /// The error a wait can fail with.
    type Error;
    /// Blocks until data is ready or `timeout` passes; returns whether data is ready.
    fn wait(&mut self, timeout: Duration) -> Result<bool, Self::Error>;
}

impl Wait for Reader {
    type Error = crate::Error;
    fn wait(&mut self, timeout: Duration) -> crate::Result<bool> {
        Reader::wait(self, timeout)
    }
}

impl Wait for NamedReader {
    type Error = crate::Error;
    fn wait(&mut self, timeout: Duration) -> crate::Result<bool> {
        self.reader_mut().wait(timeout)
    }
}

/// A [`Wait`] that cannot block: `Block` through it fails with [`IdleError::NeedsWaiter`].
#[derive(Debug, Clone, Copy, Default)]
pub struct NoWait;

impl Wait for NoWait {
    type Error = IdleError;
    fn wait(&mut self, _timeout: Duration) -> Result<bool, IdleError> {
        Err(IdleError::NeedsWaiter)
    }
}

/// An [`IdleStrategy`] with its state (the back-off step).
///
/// ```
/// use ringway_core::idle::{Idler, IdleStrategy};
/// let mut idler = Idler::new(IdleStrategy::Yield);
/// for _ in 0..3 {
///     let work = 0; // poll something
///     idler.idle(work).unwrap();
/// }
/// ```
#[derive(Debug)]
pub struct Idler {
    strategy: IdleStrategy,
    backoff: Backoff,
}

impl Idler {
    /// An idler with `strategy`.
    pub fn new(strategy: IdleStrategy) -> Self {
        Idler {
            strategy,
            backoff: Backoff::new(),
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> IdleStrategy {
        self.strategy
    }

    /// After a duty cycle that did `work`: resets on work, idles on none.
    /// `Block` fails with [`IdleError::NeedsWaiter`]: use [`Idler::idle_on`].
    #[inline]
    pub fn idle(&mut self, work: usize) -> Result<(), IdleError> {
        self.idle_on(work, &mut NoWait)
    }

    /// As [`Idler::idle`]; `Block` blocks on `waiter`.
    #[inline]
    pub fn idle_on<W: Wait + ?Sized>(
        &mut self,
        work: usize,
        waiter: &mut W,
    ) -> Result<(), W::Error> {
        if work > 0 {
            self.reset();
            return Ok(());
        }
        match self.strategy {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff => self.backoff.snooze(),
            IdleStrategy::Sleep(d) => std::thread::sleep(d),
            IdleStrategy::Block(d) => {
                waiter.wait(d)?;
            }
        }
        Ok(())
    }

    /// Forgets the back-off progress (called on work).
    #[inline]
    pub fn reset(&mut self) {
        if self.strategy == IdleStrategy::Backoff {
            self.backoff.reset();
        }
    }
}
