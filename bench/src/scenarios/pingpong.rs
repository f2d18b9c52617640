//! `pingpong`: round trips between two processes (default) or two threads, pinned, busy-spin. The raw cache-line
//! ping-pong (the physical limit) runs first and again last, in the same run, on the same cores.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::cli::PingpongArgs;
use crate::error::{BenchError, Result};
use crate::pinning::PinRecord;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::SpinStyle;
use crate::stats::{new_histogram, record};
use crate::systems::crossbeam::Crossbeam;
use crate::systems::limit::Limit;
use crate::systems::limit_log::LimitLog;
use crate::systems::limit_two::LimitTwo;
use crate::systems::pipe::Pipe;
use crate::systems::ringway::Ringway;
use crate::systems::tcp::Tcp;
use crate::systems::udp::Udp;
use crate::systems::uds::Uds;
use crate::systems::{parse_peers, Echo, EchoSpec, PingCtx, PingPong, Pinger};

/// Marker printed by the echo side once it is attached and pinned.
pub const READY: &str = "READY ";
/// Marker printed by the echo side after its last echo.
pub const DONE: &str = "DONE";

/// Runs the scenario.
pub fn run(args: &PingpongArgs) -> Result<Report> {
    args.spin.apply();
    let peers = parse_peers(&args.peers)?;
    let mut env = Env::new(&args.common)?;
    let core_a = env.core_a;
    env.pin("ping", core_a);
    let systems = 5 + peers.len() as u64;
    let pb = progress(
        systems * (env.iterations + env.warmup),
        args.common.quick || env.iterations < 200_000,
    );
    let rounds = args.rounds.clamp(1, env.iterations);
    let mut d = Driver {
        args,
        pb: &pb,
        env: &mut env,
        round: 0,
        rounds,
    };
    let mut runs: Vec<SystemRun> = Vec::new();
    let mut round_limits = Vec::new();
    for round in 0..rounds {
        d.round = round;
        let mut this = vec![
            d.run::<Limit>("limit"),
            d.run::<LimitTwo>("limit-2line"),
            d.run::<LimitLog>("limit-log"),
        ];
        this.push(d.run::<Ringway>("ringway"));
        for p in &peers {
            let r = match *p {
                "ringfire" => crate::with_ringfire_size!(
                    args.common.payload,
                    T => d.run::<T>("ringfire"),
                    SystemRun::skipped(
                        "ringfire",
                        format!(
                            "ringfire rings hold fixed-size items; payload {} B is not among the compiled sizes {:?}",
                            args.common.payload,
                            crate::systems::ringfire::SIZES
                        )
                    )
                ),
                "iceoryx2" => d.iceoryx2(),
                "crossbeam" => d.run::<Crossbeam>("crossbeam"),
                "uds" => d.run::<Uds>("uds"),
                "tcp" => d.run::<Tcp>("tcp"),
                "udp" => d.run::<Udp>("udp"),
                "pipe" => d.run::<Pipe>("pipe"),
                other => SystemRun::skipped(other, "unknown peer"),
            };
            this.push(r);
        }
        this.push(d.run::<Limit>("limit-after"));
        round_limits.push(
            [&this[0], this.last().expect("limit-after pushed")]
                .iter()
                .map(|r| r.result.p50_ns.map_or("-".to_string(), |v| v.to_string()))
                .collect::<Vec<_>>()
                .join("/"),
        );
        if runs.is_empty() {
            runs = this;
        } else {
            for (acc, new) in runs.iter_mut().zip(this) {
                merge(acc, new);
            }
        }
    }
    pb.finish_and_clear();
    let mut notes = vec![format!(
        "{rounds} interleaved rounds; limit p50 before/after each round (ns): {}; waiting loops spin {}",
        round_limits.join(", "),
        match args.spin {
            SpinStyle::Pause => "with a PAUSE per check",
            SpinStyle::Busy => "back to back, without PAUSE (--spin busy)",
        }
    )];
    let p50 = |name: &str| {
        runs.iter()
            .find(|r| r.result.name == name && r.result.is_ok())
            .and_then(|r| r.result.p50_ns)
    };
    if let (Some(a), Some(b)) = (p50("limit"), p50("limit-after")) {
        let drift = (a as f64 - b as f64).abs() / a.min(b).max(1) as f64;
        if drift > 0.2 {
            notes.push(format!(
                "the limit moved from {a} ns to {b} ns p50 during the run ({:.0}%): other load or the vCPU placement \
                 changed; ratios to the limit are approximate",
                drift * 100.0
            ));
        }
    }
    let payload = args.common.payload;
    let mut report = env.report("pingpong", payload, runs);
    report.notes.extend(notes);
    Ok(report)
}

struct Driver<'a> {
    args: &'a PingpongArgs,
    pb: &'a ProgressBar,
    env: &'a mut Env,
    /// Current round (0-based).
    round: u64,
    /// Number of rounds.
    rounds: u64,
}

/// Adds one round of a system to its accumulated result; a failed round makes the system skipped.
fn merge(acc: &mut SystemRun, new: SystemRun) {
    if !acc.result.is_ok() {
        return;
    }
    match (acc.histogram.as_mut(), new.histogram) {
        (Some(h), Some(n)) if new.result.is_ok() => {
            if let Err(e) = h.add(&n) {
                *acc = SystemRun::skipped(&acc.result.name, format!("merging rounds: {e:?}"));
                return;
            }
            let mode = acc.result.mode.take();
            let hist = acc.histogram.take().expect("matched Some above");
            *acc = SystemRun::measured(&new.result.name, hist);
            acc.result.mode = mode;
        }
        _ => {
            *acc = SystemRun::skipped(
                &new.result.name,
                new.result.status.trim_start_matches("skipped: "),
            );
        }
    }
}

/// The echo side, running in a thread or a child process.
enum EchoSide {
    Thread(std::thread::JoinHandle<Result<()>>),
    Process(ChildGuard, mpsc::Receiver<String>),
}

/// Kills the child if the parent gives up on it.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Driver<'_> {
    /// Warm-up and recorded round trips of the current round: the recorded ones are split across rounds (the
    /// last takes the remainder); every round warms up with a share of the warm-up, at least 10,000 round trips.
    fn per_round(&self) -> (u64, u64) {
        let it = self.env.iterations / self.rounds
            + if self.round + 1 == self.rounds {
                self.env.iterations % self.rounds
            } else {
                0
            };
        let warm = (self.env.warmup / self.rounds).max(self.env.warmup.min(10_000));
        (warm, it)
    }

    fn ctx(&self, name: &str) -> Result<PingCtx> {
        let (warm, it) = self.per_round();
        Ok(PingCtx {
            payload: self.args.common.payload,
            count: warm + it,
            dir: self.env.subdir(&format!("{name}-{}", self.round))?,
            timeout: self.env.timeout,
            wait: self.args.wait,
        })
    }

    #[cfg(feature = "iceoryx2")]
    fn iceoryx2(&mut self) -> SystemRun {
        self.run::<crate::systems::iceoryx2::Iceoryx2>("iceoryx2")
    }

    #[cfg(not(feature = "iceoryx2"))]
    fn iceoryx2(&mut self) -> SystemRun {
        SystemRun::skipped(
            "iceoryx2",
            "built without the `iceoryx2` feature (cargo run --release -p ringway-bench --features iceoryx2)",
        )
    }

    fn run<S: PingPong>(&mut self, name: &str) -> SystemRun {
        self.pb.set_message(name.to_string());
        let threads = self.args.threads || !S::CROSS_PROCESS;
        let mode = if threads {
            if S::CROSS_PROCESS {
                "threads"
            } else {
                "threads (in-process only)"
            }
        } else {
            "processes"
        };
        let r = self.ctx(name).and_then(|ctx| match S::unsupported(&ctx) {
            Some(reason) => Err(BenchError::Usage(reason)),
            None => self.measure::<S>(name, &ctx, threads),
        });
        match r {
            Ok(h) => {
                let mut run = SystemRun::measured(name, h);
                run.result.mode = Some(mode.to_string());
                run
            }
            Err(e) => SystemRun::skipped(name, e),
        }
    }

    fn measure<S: PingPong>(
        &mut self,
        name: &str,
        ctx: &PingCtx,
        threads: bool,
    ) -> Result<hdrhistogram::Histogram<u64>> {
        let (state, spec) = S::prepare(ctx)?;
        let core_b = self.env.core_b;
        let (side, pin) = if threads {
            spawn_thread::<S>(name, ctx, spec, core_b)?
        } else {
            spawn_process(S::NAME, name, ctx, spec, core_b, self.args.wait)?
        };
        self.env.pins.push(pin);
        let hist = self.time::<S>(state, ctx);
        let joined = join(side, ctx.timeout, name);
        // A measurement error says more than the echo side's reaction to it.
        let hist = hist?;
        joined?;
        Ok(hist)
    }

    fn time<S: PingPong>(
        &mut self,
        state: S,
        ctx: &PingCtx,
    ) -> Result<hdrhistogram::Histogram<u64>> {
        let mut p = state.pinger(ctx)?;
        let timer = &self.env.timer;
        let (warmup, iterations) = self.per_round();
        let total = warmup + iterations;
        let mut hist = new_histogram();
        for seq in 1..=warmup {
            p.round_trip(seq)?;
            if seq & 0xffff == 0 {
                self.pb.inc(0x10000);
            }
        }
        for seq in warmup + 1..=total {
            let t0 = timer.raw();
            p.round_trip(seq)?;
            let t1 = timer.raw();
            record(&mut hist, timer.nanos_between(t0, t1))?;
            if seq & 0xffff == 0 {
                self.pb.inc(0x10000);
            }
        }
        self.pb.inc(total & 0xffff);
        Ok(hist)
    }
}

fn spawn_thread<S: PingPong>(
    name: &str,
    ctx: &PingCtx,
    spec: EchoSpec,
    core: Option<usize>,
) -> Result<(EchoSide, PinRecord)> {
    let (tx, rx) = mpsc::channel::<Result<PinRecord>>();
    let ctx2 = ctx.clone();
    let role = format!("echo-{name}");
    let h = std::thread::Builder::new()
        .name(role.clone())
        .spawn(move || -> Result<()> {
            let pin = crate::pinning::pin_current(&role, core);
            let mut echo = match S::echo(&ctx2, spec) {
                Ok(e) => e,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.send(Err(e));
                    return Err(BenchError::Child {
                        system: role,
                        message: msg,
                    });
                }
            };
            let _ = tx.send(Ok(pin));
            for _ in 0..ctx2.count {
                echo.echo_one()?;
            }
            Ok(())
        })
        .map_err(|e| BenchError::io("spawning the echo thread", e))?;
    let pin = rx
        .recv_timeout(ctx.timeout)
        .map_err(|_| BenchError::Timeout {
            what: format!("the {name} echo thread to start"),
            secs: ctx.timeout.as_secs(),
        })??;
    Ok((EchoSide::Thread(h), pin))
}

fn spawn_process(
    system: &str,
    name: &str,
    ctx: &PingCtx,
    spec: EchoSpec,
    core: Option<usize>,
    wait: crate::systems::WaitMode,
) -> Result<(EchoSide, PinRecord)> {
    let exe =
        std::env::current_exe().map_err(|e| BenchError::io("locating the own executable", e))?;
    let mut cmd = Command::new(exe);
    cmd.arg("__echo")
        .args(["--system", system])
        .args(["--payload", &ctx.payload.to_string()])
        .args(["--count", &ctx.count.to_string()])
        .arg("--dir")
        .arg(&ctx.dir)
        .args(["--timeout-secs", &ctx.timeout.as_secs().to_string()])
        .args(["--wait", wait.as_str()]);
    if let Some(c) = core {
        cmd.args(["--core", &c.to_string()]);
    }
    for a in &spec.args {
        cmd.arg(format!("--arg={a}"));
    }
    let raw: Vec<i32> = spec.fds.iter().map(|f| f.as_raw_fd()).collect();
    for fd in &raw {
        cmd.arg(format!("--fd={fd}"));
    }
    let inherit = raw.clone();
    // SAFETY: the closure runs in the forked child before exec and only calls fcntl, which is
    // async-signal-safe; it clears FD_CLOEXEC on descriptors that stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &inherit {
                if libc::fcntl(*fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = cmd
        .spawn()
        .map_err(|e| BenchError::io(format!("starting the {name} echo process"), e))?;
    // The child has its copies now; close ours so that a dead child shows up as a closed socket or pipe.
    drop(spec);
    let stdout = child.stdout.take();
    let guard = ChildGuard(Some(child));
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(out) = stdout {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let line = rx
        .recv_timeout(ctx.timeout)
        .map_err(|_| BenchError::Child {
            system: name.to_string(),
            message: "exited or timed out before reporting ready (see its stderr above)".into(),
        })?;
    let Some(json) = line.strip_prefix(READY) else {
        return Err(BenchError::Child {
            system: name.to_string(),
            message: format!("unexpected first line `{line}`"),
        });
    };
    let pin: PinRecord = serde_json::from_str(json).map_err(|e| BenchError::Child {
        system: name.to_string(),
        message: format!("bad ready line: {e}"),
    })?;
    Ok((EchoSide::Process(guard, rx), pin))
}

fn join(side: EchoSide, timeout: Duration, name: &str) -> Result<()> {
    match side {
        EchoSide::Thread(h) => h.join().map_err(|_| BenchError::Child {
            system: name.to_string(),
            message: "echo thread panicked".into(),
        })?,
        EchoSide::Process(mut guard, rx) => {
            let deadline = Instant::now() + timeout;
            let mut done = false;
            while Instant::now() < deadline {
                match rx.recv_timeout(Duration::from_millis(50)) {
                    Ok(l) if l == DONE => done = true,
                    Ok(_) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
            }
            let mut child = guard.0.take().ok_or_else(|| BenchError::Child {
                system: name.to_string(),
                message: "lost".into(),
            })?;
            let status = loop {
                if let Ok(Some(s)) = child.try_wait() {
                    break Some(s);
                }
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(5));
            };
            match status {
                Some(s) if s.success() && done => Ok(()),
                Some(s) => Err(BenchError::Child {
                    system: name.to_string(),
                    message: format!("exited with {s} (finished: {done})"),
                }),
                None => Err(BenchError::Timeout {
                    what: format!("the {name} echo process to exit"),
                    secs: timeout.as_secs(),
                }),
            }
        }
    }
}

/// Echo side of a two-process run: attach, pin, report ready, serve, report done.
pub fn serve<S: PingPong>(ctx: &PingCtx, spec: EchoSpec, core: Option<usize>) -> Result<()> {
    use std::io::Write;
    let pin = crate::pinning::pin_current(&format!("echo-{}", S::NAME), core);
    let mut echo = S::echo(ctx, spec)?;
    let line = serde_json::to_string(&pin).map_err(|e| BenchError::Usage(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY}{line}")
        .and_then(|_| out.flush())
        .map_err(|e| BenchError::io("stdout", e))?;
    for _ in 0..ctx.count {
        echo.echo_one()?;
    }
    writeln!(out, "{DONE}")
        .and_then(|_| out.flush())
        .map_err(|e| BenchError::io("stdout", e))?;
    Ok(())
}
