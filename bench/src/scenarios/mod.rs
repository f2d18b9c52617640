//! Scenarios. Each is one module with a `run(args) -> Result<Report>`; what they share (clock, pinning records,
//! progress bar, scratch directory, output) lives here. A new scenario (e.g. `replicate`, `mqtt`) is a new module,
//! a new `Command` variant in `cli.rs` and one line in `main.rs`.

pub mod fanout;
pub mod mqtt;
pub mod mqtt_device;
pub mod mqtt_load;
pub mod oneway;
pub mod paced;
pub mod parties;
pub mod pingpong;
pub mod replicate;
pub mod roll;
pub mod throughput;
pub mod typed;
pub mod wake;

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tempfile::TempDir;

use crate::cli::CommonArgs;
use crate::error::{BenchError, Result};
use crate::machine::Machine;
use crate::pinning::{default_cores, PinRecord};
use crate::report::{Report, SystemRun};
use crate::timer::{Timer, TimerOverhead};

/// What every scenario run carries: the clock, its measured overhead, pinning outcomes, a scratch directory.
pub struct Env {
    /// The clock.
    pub timer: Timer,
    /// Its overhead, measured at start.
    pub overhead: TimerOverhead,
    /// Every pinning request and outcome.
    pub pins: Vec<PinRecord>,
    /// Core of the first participant (ping, writer, publisher).
    pub core_a: Option<usize>,
    /// Core of the second participant (echo, reader, subscriber).
    pub core_b: Option<usize>,
    /// Scratch directory under /dev/shm, removed at the end.
    pub scratch: TempDir,
    /// Recorded iterations.
    pub iterations: u64,
    /// Warm-up iterations.
    pub warmup: u64,
    /// Timeout of a wait on the other side.
    pub timeout: Duration,
    /// CPUs this process could use before any pinning.
    pub cores_allowed: usize,
}

impl Env {
    /// Sets up the clock (and measures its overhead), the cores and the scratch directory.
    pub fn new(common: &CommonArgs) -> Result<Self> {
        if common.iterations() == 0 {
            return Err(BenchError::Usage("--iterations must be at least 1".into()));
        }
        let cores_allowed = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0);
        let timer = Timer::new();
        let overhead = timer.measure_overhead(if common.quick { 100_000 } else { 1_000_000 });
        let (a, b) = match (common.no_pin, common.cores) {
            (true, _) => (None, None),
            (false, Some((a, b))) => (Some(a), Some(b)),
            (false, None) => default_cores(),
        };
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let scratch = tempfile::Builder::new()
            .prefix("ringway-bench-")
            .tempdir_in(&base)
            .map_err(|e| {
                BenchError::io(
                    format!("creating a scratch directory in {}", base.display()),
                    e,
                )
            })?;
        Ok(Env {
            timer,
            overhead,
            pins: Vec::new(),
            core_a: a,
            core_b: b,
            scratch,
            iterations: common.iterations(),
            warmup: common.warmup(),
            timeout: Duration::from_secs(common.timeout_secs.max(1)),
            cores_allowed,
        })
    }

    /// Pins the calling thread as `role` to `core` and records the outcome.
    pub fn pin(&mut self, role: &str, core: Option<usize>) {
        let rec = crate::pinning::pin_current(role, core);
        self.pins.push(rec);
    }

    /// A fresh sub-directory of the scratch directory.
    pub fn subdir(&self, name: &str) -> Result<std::path::PathBuf> {
        let d = self.scratch.path().join(name);
        std::fs::create_dir_all(&d).map_err(|source| BenchError::File {
            path: d.clone(),
            source,
        })?;
        Ok(d)
    }

    /// Builds the report of a finished scenario.
    pub fn report(self, scenario: &str, payload: usize, runs: Vec<SystemRun>) -> Report {
        let mut machine = Machine::describe(self.pins, self.overhead);
        machine.cores_allowed = self.cores_allowed;
        Report::new(
            scenario,
            payload,
            self.iterations,
            self.warmup,
            machine,
            runs,
        )
    }
}

/// A progress bar on stderr for runs longer than a couple of seconds; hidden for `--quick` or without a terminal.
pub fn progress(total: u64, quick: bool) -> ProgressBar {
    if quick || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(4));
    if let Ok(style) = ProgressStyle::with_template("{msg:>12} [{bar:40}] {percent:>3}% eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb
}
