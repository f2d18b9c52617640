//! `wake`: one-way latency from a writer's commit to a reader running, for a reader that busy-spins and for one
//! that blocks in the kernel (`IdleStrategy::Block`: futex in the stream's shared metadata, woken by the
//! writer), in the same run; then the CPU each kind of reader uses while the stream is idle.
//!
//! The writer paces messages (it waits for the reader to see each one, then sleeps `GAP`), so that the blocking
//! reader is asleep in the kernel when the next commit arrives: every sample is a real wake-up. Both threads are
//! pinned (writer on the first core, reader on the second).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringway_core::idle::{IdleStrategy, Idler};
use ringway_core::{Start, Stream};

use crate::cli::CommonArgs;
use crate::error::{BenchError, Result};
use crate::pinning::pin_current;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};

/// Pause between messages: long enough for a blocking reader to be asleep in the kernel.
const GAP: Duration = Duration::from_micros(200);
/// How long each reader kind idles while its CPU time is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

fn sys(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringway", e)
}

/// Runs the scenario.
pub fn run(common: &CommonArgs) -> Result<Report> {
    let mut env = Env::new(common)?;
    // Paced wake-ups take GAP each: far fewer iterations than the other scenarios by default.
    env.iterations = common
        .iterations
        .unwrap_or(if common.quick { 2_000 } else { 20_000 });
    env.warmup = common
        .warmup
        .unwrap_or(if common.quick { 200 } else { 1_000 });
    let pb = progress(2 * (env.warmup + env.iterations), common.quick);
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    for (name, idle) in [
        ("ringway-busy-spin", IdleStrategy::BusySpin),
        (
            "ringway-block",
            IdleStrategy::Block(Duration::from_millis(100)),
        ),
    ] {
        pb.set_message(name);
        match measure(&mut env, name, idle, &pb) {
            Ok((hist, cpu)) => {
                let mut r = SystemRun::measured(name, hist);
                r.result.mode = Some(format!(
                    "commit -> reader running, one way, {GAP:?} between messages"
                ));
                runs.push(r);
                notes.push(format!(
                    "{name}: reader thread CPU while the stream is idle for {IDLE_WINDOW:?}: {:.2}% of a core",
                    cpu * 100.0
                ));
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
    }
    pb.finish_and_clear();
    let mut report = env.report("wake", 8, runs);
    report.notes.extend(notes);
    Ok(report)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: `getrusage` writes into the zeroed struct we own; RUSAGE_THREAD is valid on Linux.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Latency histogram and the reader's idle CPU share.
fn measure(
    env: &mut Env,
    name: &str,
    idle: IdleStrategy,
    pb: &indicatif::ProgressBar,
) -> Result<(hdrhistogram::Histogram<u64>, f64)> {
    let dir = env.subdir(name)?;
    let stream =
        Stream::create(&dir, "wake", &crate::systems::ringway::stream_config(8)).map_err(sys)?;
    let total = env.warmup + env.iterations;
    let seen = Arc::new(AtomicU64::new(0));
    let (rstream, rseen) = (stream.clone(), seen.clone());
    let (core_b, timeout, timer, warmup) = (env.core_b, env.timeout, env.timer.clone(), env.warmup);
    let reader = std::thread::spawn(
        move || -> Result<(crate::pinning::PinRecord, hdrhistogram::Histogram<u64>, f64)> {
            let pin = pin_current("reader", core_b);
            let mut r = rstream.reader(Start::Beginning).map_err(sys)?;
            let mut idler = Idler::new(idle);
            let mut hist = new_histogram();
            let mut n = 0u64;
            let deadline = Instant::now() + timeout * 4;
            while n < total {
                let mut sample = None;
                let got = r
                    .poll(1, |f| {
                        let now = timer.raw();
                        let t0 = u64::from_le_bytes(
                            f.payload()[..8].try_into().expect("8-byte payload"),
                        );
                        sample = Some(timer.nanos_between(t0, now));
                    })
                    .map_err(sys)?;
                if let Some(ns) = sample {
                    if n >= warmup {
                        record(&mut hist, ns)?;
                    }
                    n += 1;
                    // Release: the writer's Acquire load sees the count only after the frame was handled.
                    rseen.store(n, Ordering::Release);
                }
                idler.idle_on(got, &mut r).map_err(sys)?;
                if got == 0 && Instant::now() > deadline {
                    return Err(sys("timed out waiting for the writer"));
                }
            }
            // Idle CPU: nothing is written during this window.
            let (cpu0, t0) = (thread_cpu(), Instant::now());
            while t0.elapsed() < IDLE_WINDOW {
                let got = r.poll(1, |_| {}).map_err(sys)?;
                idler.idle_on(got, &mut r).map_err(sys)?;
            }
            let share = (thread_cpu() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
            Ok((pin, hist, share))
        },
    );
    env.pin("writer", env.core_a);
    let mut w = stream.writer().map_err(sys)?;
    let mut spin = Spinner::new(env.timeout);
    for i in 0..total {
        std::thread::sleep(GAP);
        let t0 = env.timer.raw();
        w.append(&t0.to_le_bytes()).map_err(sys)?;
        // Acquire: pairs with the reader's Release store of its count.
        while seen.load(Ordering::Acquire) <= i {
            spin.spin("reader")?;
        }
        if i & 0x3ff == 0x3ff {
            pb.inc(0x400);
        }
    }
    let (pin, hist, share) = reader.join().map_err(|_| sys("reader thread panicked"))??;
    env.pins.push(pin);
    Ok((hist, share))
}
