//! Pinned agents: a duty-cycle loop on its own thread, pinned to a core, idling by strategy.
//!
//! In the spirit of Aeron's agents: the agent's duty cycle does a bounded amount of work and
//! returns how much it did; the runner calls it in a loop, idles with an
//! [`IdleStrategy`] when a cycle did nothing, and stops on request, on
//! [`StopSignal::stop`] from inside the agent, or on the agent's first error, which
//! [`AgentRunner::stop`] / [`AgentRunner::join`] hand back to the caller.
//!
//! ```
//! use ringway_core::agent::{AgentOptions, AgentRunner};
//! use ringway_core::idle::IdleStrategy;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//!
//! let counter = Arc::new(AtomicU64::new(0));
//! let c = counter.clone();
//! let opts = AgentOptions::new("counter").idle(IdleStrategy::Yield);
//! let runner = AgentRunner::spawn(opts, move || {
//!     c.fetch_add(1, Ordering::Relaxed);
//!     Ok::<usize, std::io::Error>(0)
//! }).unwrap();
//! while counter.load(Ordering::Relaxed) < 10 { std::thread::yield_now(); }
//! let stats = runner.stop().unwrap();
//! assert!(stats.duty_cycles >= 10);
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::idle::{IdleStrategy, Idler, Wait};

/// A shared stop flag: the runner's handle and the agent itself may raise it.
#[derive(Debug, Clone, Default)]
pub struct StopSignal(Arc<AtomicBool>);

impl StopSignal {
    /// A signal not raised yet.
    pub fn new() -> Self {
        Self::default()
    }
    /// Asks the agent to stop after its current duty cycle.
    pub fn stop(&self) {
        // Release: whatever the stopper did before is visible to the agent once it sees the flag.
        self.0.store(true, Ordering::Release);
    }
    /// Whether a stop was asked for.
    #[inline]
    pub fn is_stopped(&self) -> bool {
        // Acquire: pairs with `stop`; a plain load on x86, so the per-cycle check is free.
        self.0.load(Ordering::Acquire)
    }
}

/// How to run an agent.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    name: String,
    core: Option<usize>,
    idle: IdleStrategy,
    stop: StopSignal,
}

impl AgentOptions {
    /// Options for an agent called `name` (also its thread's name): unpinned, backing off.
    pub fn new(name: impl Into<String>) -> Self {
        AgentOptions {
            name: name.into(),
            core: None,
            idle: IdleStrategy::default(),
            stop: StopSignal::new(),
        }
    }
    /// Pins the agent's thread to this core; spawning fails if that is not possible.
    pub fn core(mut self, core: usize) -> Self {
        self.core = Some(core);
        self
    }
    /// Pins to `core` if `Some`.
    pub fn core_opt(mut self, core: Option<usize>) -> Self {
        self.core = core;
        self
    }
    /// The idle strategy for empty duty cycles.
    pub fn idle(mut self, idle: IdleStrategy) -> Self {
        self.idle = idle;
        self
    }
    /// Uses `stop` as the agent's stop signal (clone it into the agent to let it stop itself).
    pub fn stop_signal(mut self, stop: StopSignal) -> Self {
        self.stop = stop;
        self
    }
}

/// What an agent did, returned when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Duty cycles run.
    pub duty_cycles: u64,
    /// Sum of the work counts the duty cycle returned.
    pub work: u64,
    /// Duty cycles that did no work (followed by an idle).
    pub idle_cycles: u64,
}

/// Why an agent could not start or how it ended badly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError<E> {
    /// The requested core is not one this process may run on.
    #[error("agent '{name}': core {core} is not available to this process (it may use cores {available:?})")]
    CoreUnavailable {
        /// Agent name.
        name: String,
        /// Requested core.
        core: usize,
        /// Cores in the process's affinity mask.
        available: Vec<usize>,
    },
    /// The operating system refused to pin the thread.
    #[error("agent '{name}': pinning its thread to core {core} failed")]
    PinFailed {
        /// Agent name.
        name: String,
        /// Requested core.
        core: usize,
    },
    /// The `Block` idle strategy was chosen for an agent with nothing to block on.
    #[error("agent '{name}': the Block idle strategy needs something to block on; spawn it with AgentRunner::spawn_waiting")]
    BlockNeedsWaiter {
        /// Agent name.
        name: String,
    },
    /// The agent's thread could not be created.
    #[error("agent '{name}': could not start its thread: {source}")]
    Spawn {
        /// Agent name.
        name: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The duty cycle (or its blocking wait) returned an error; the agent stopped.
    #[error("agent '{name}' failed: {source}")]
    Failed {
        /// Agent name.
        name: String,
        /// The agent's error.
        source: E,
    },
    /// The duty cycle panicked.
    #[error("agent '{name}' panicked: {message}")]
    Panicked {
        /// Agent name.
        name: String,
        /// The panic message.
        message: String,
    },
}

/// Handle to a running agent. Dropping it stops and joins the agent, discarding its outcome.
#[derive(Debug)]
pub struct AgentRunner<E> {
    name: String,
    stop: StopSignal,
    core: Option<usize>,
    thread: Option<JoinHandle<Result<AgentStats, E>>>,
}

impl<E> AgentRunner<E>
where
    E: Send + 'static,
{
    /// Runs `work` as a duty cycle on a new thread until stopped.
    ///
    /// With a core in `opts`, the thread is pinned before the first cycle, and this returns
    /// [`AgentError::CoreUnavailable`] or [`AgentError::PinFailed`] instead of running unpinned.
    /// [`IdleStrategy::Block`] needs [`AgentRunner::spawn_waiting`].
    pub fn spawn<F>(opts: AgentOptions, mut work: F) -> Result<Self, AgentError<E>>
    where
        F: FnMut() -> Result<usize, E> + Send + 'static,
    {
        if matches!(opts.idle, IdleStrategy::Block(_)) {
            return Err(AgentError::BlockNeedsWaiter { name: opts.name });
        }
        Self::start(opts, NoBlock, move |_| work(), |e| match e {})
    }

    /// Runs `work` as a duty cycle over `waiter` (e.g. a subscriber), which the agent owns;
    /// with [`IdleStrategy::Block`] empty cycles block on it in the kernel.
    pub fn spawn_waiting<W, F>(
        opts: AgentOptions,
        waiter: W,
        work: F,
    ) -> Result<Self, AgentError<E>>
    where
        W: Wait + Send + 'static,
        E: From<W::Error>,
        F: FnMut(&mut W) -> Result<usize, E> + Send + 'static,
    {
        Self::start(opts, waiter, work, E::from)
    }

    fn start<W, F, C>(
        opts: AgentOptions,
        mut waiter: W,
        mut work: F,
        convert: C,
    ) -> Result<Self, AgentError<E>>
    where
        W: Wait + Send + 'static,
        F: FnMut(&mut W) -> Result<usize, E> + Send + 'static,
        C: Fn(W::Error) -> E + Send + 'static,
    {
        let AgentOptions {
            name,
            core,
            idle,
            stop,
        } = opts;
        let (ready_tx, ready_rx) = sync_channel::<Result<(), AgentError<E>>>(1);
        let signal = stop.clone();
        let thread_name = name.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                if let Some(core) = core {
                    if let Err(e) = pin(&thread_name, core) {
                        let _ = ready_tx.send(Err(e));
                        return Ok(AgentStats::default());
                    }
                }
                let _ = ready_tx.send(Ok(()));
                drop(ready_tx);
                let mut idler = Idler::new(idle);
                let mut stats = AgentStats::default();
                while !signal.is_stopped() {
                    let n = work(&mut waiter)?;
                    stats.duty_cycles += 1;
                    stats.work += n as u64;
                    if n == 0 {
                        stats.idle_cycles += 1;
                        idler.idle_on(0, &mut waiter).map_err(&convert)?;
                    } else {
                        idler.reset();
                    }
                }
                Ok(stats)
            })
            .map_err(|source| AgentError::Spawn {
                name: name.clone(),
                source,
            })?;
        let runner = AgentRunner {
            name,
            stop,
            core,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(runner),
            Ok(Err(e)) => {
                let _ = runner.finish();
                Err(e)
            }
            // The thread ended without reporting: it panicked before the first cycle.
            Err(_) => {
                let name = runner.name.clone();
                match runner.finish() {
                    Err(e) => Err(e),
                    Ok(_) => Err(AgentError::Panicked {
                        name,
                        message: "agent thread ended before starting".into(),
                    }),
                }
            }
        }
    }

    /// The agent's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The core the agent is pinned to, if any.
    pub fn core(&self) -> Option<usize> {
        self.core
    }

    /// The agent's stop signal.
    pub fn stop_signal(&self) -> StopSignal {
        self.stop.clone()
    }

    /// Whether the agent's thread has ended (stopped, failed or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Asks the agent to stop and waits for it; returns its statistics or the error it ended
    /// with. A blocked agent notices within its `Block` bound.
    pub fn stop(self) -> Result<AgentStats, AgentError<E>> {
        self.stop.stop();
        self.finish()
    }

    /// Waits for the agent to end by itself (its stop signal raised, or an error).
    pub fn join(self) -> Result<AgentStats, AgentError<E>> {
        self.finish()
    }

    fn finish(mut self) -> Result<AgentStats, AgentError<E>> {
        let name = std::mem::take(&mut self.name);
        let Some(thread) = self.thread.take() else {
            return Ok(AgentStats::default());
        };
        match thread.join() {
            Ok(Ok(stats)) => Ok(stats),
            Ok(Err(source)) => Err(AgentError::Failed { name, source }),
            Err(panic) => Err(AgentError::Panicked {
                name,
                message: panic_message(panic.as_ref()),
            }),
        }
    }
}

impl<E> Drop for AgentRunner<E> {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            self.stop.stop();
            let _ = t.join();
        }
    }
}

/// The waiter of agents spawned without one; `Block` is refused for them before they start.
struct NoBlock;

impl Wait for NoBlock {
    type Error = std::convert::Infallible;
    fn wait(&mut self, _timeout: std::time::Duration) -> Result<bool, Self::Error> {
        Ok(false)
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

/// Pins the calling thread to `core`, failing clearly if the process may not use it.
fn pin<E>(name: &str, core: usize) -> Result<(), AgentError<E>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if !available.contains(&core) {
        return Err(AgentError::CoreUnavailable {
            name: name.to_string(),
            core,
            available,
        });
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
        return Err(AgentError::PinFailed {
            name: name.to_string(),
            core,
        });
    }
    Ok(())
}

/// The cores this process may run on (its affinity mask), ascending.
pub fn available_cores() -> Vec<usize> {
    let mut v: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    v.sort_unstable();
    v
}
