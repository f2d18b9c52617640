//! `roll`: append latency of a single writer, split into appends inside a segment and the first append of each
//! new segment, for an append-only stream and for a ring, with a reader thread consuming on the other core.
//! Segments are small (`--segment-size`, default 1 MiB) so that a run crosses many rolls.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ringway_core::{Retention, Start, Stream, StreamConfig};

use crate::cli::RollArgs;
use crate::error::{BenchError, Result};
use crate::pinning::pin_current;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};

/// Runs the scenario.
pub fn run(args: &RollArgs) -> Result<Report> {
    let mut env = Env::new(&args.common)?;
    let size = args.common.payload;
    let pb = progress(2 * (env.warmup + env.iterations), args.common.quick);
    let mut runs = Vec::new();
    let mut notes = Vec::new();
    let base = StreamConfig::default()
        .segment_size(args.segment_size)
        .max_message_size(size.max(1024) as u32);
    let configs = [
        (
            "ringway-append",
            base.clone().retention(Retention::default().max_segments(8)),
        ),
        ("ringway-ring", base.ring(8)),
    ];
    for (name, cfg) in configs {
        pb.set_message(name);
        match measure(&mut env, name, &cfg, args.segment_size, size, &pb) {
            Ok((inside, rolls, lapped)) => {
                if lapped > 0 {
                    notes.push(format!(
                        "{name}: the reader was lapped {lapped} times and skipped ahead"
                    ));
                }
                let mut a = SystemRun::measured(&format!("{name}-in-segment"), inside);
                a.result.mode = Some("append latency, writer thread".into());
                let mut b = SystemRun::measured(&format!("{name}-first-in-segment"), rolls);
                b.result.mode = Some("append latency of the first frame of each segment".into());
                runs.push(a);
                runs.push(b);
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
    }
    pb.finish_and_clear();
    let mut report = env.report("roll", size, runs);
    report.notes.extend(notes);
    Ok(report)
}

fn measure(
    env: &mut Env,
    name: &str,
    cfg: &StreamConfig,
    seg: u64,
    size: usize,
    pb: &indicatif::ProgressBar,
) -> Result<(
    hdrhistogram::Histogram<u64>,
    hdrhistogram::Histogram<u64>,
    u64,
)> {
    let err = |e: ringway_core::Error| BenchError::system("ringway", e);
    let dir = env.subdir(name)?;
    let stream = Stream::create(&dir, "roll", cfg).map_err(err)?;
    let total = env.warmup + env.iterations;
    let rstream = Stream::open(&dir, "roll").map_err(err)?;
    let core_b = env.core_b;
    let timeout = env.timeout;
    let done = Arc::new(AtomicBool::new(false));
    let writer_done = done.clone();
    let reader = std::thread::spawn(move || -> Result<(crate::pinning::PinRecord, u64)> {
        let pin = pin_current("reader", core_b);
        let mut r = rstream.reader(Start::Beginning).map_err(err)?;
        let mut seen = 0u64;
        let mut lapped = 0u64;
        let mut spin = Spinner::new(timeout);
        while seen < total {
            match r.poll(256, |f| {
                std::hint::black_box(f.payload());
            }) {
                Ok(0) => {
                    // Acquire pairs with the writer's Release store after its last append: once seen, every
                    // frame it appended is visible, so an empty poll now means the reader is done.
                    if writer_done.load(Ordering::Acquire) && r.poll(1, |_| ()).map_err(err)? == 0 {
                        break;
                    }
                    spin.spin("appended messages")?;
                }
                Ok(n) => seen += n as u64,
                // A reader lapped by the ring or by retention skips ahead: the writer is what is measured here.
                Err(ringway_core::Error::Lapped { oldest, .. }) => {
                    lapped += 1;
                    r.seek(Start::Position(oldest)).map_err(err)?;
                }
                Err(e) => return Err(err(e)),
            }
        }
        Ok((pin, lapped))
    });
    env.pin("writer", env.core_a);
    let mut writer = stream.writer().map_err(err)?;
    let buf = vec![7u8; size];
    let mut inside = new_histogram();
    let mut rolls = new_histogram();
    let mut last_seg = writer.next_position().0 / seg;
    let timer = env.timer.clone();
    for i in 0..total {
        let t0 = timer.raw();
        let pos = writer.append(&buf).map_err(err)?;
        let t1 = timer.raw();
        let s = pos.0 / seg;
        let rolled = s != last_seg;
        last_seg = s;
        if i >= env.warmup {
            let ns = timer.nanos_between(t0, t1);
            if rolled {
                record(&mut rolls, ns)?;
            } else {
                record(&mut inside, ns)?;
            }
        }
        if i & 0xffff == 0xffff {
            pb.inc(0x10000);
        }
    }
    done.store(true, Ordering::Release);
    let (pin, lapped) = reader
        .join()
        .map_err(|_| BenchError::system("ringway", "reader thread panicked"))??;
    env.pins.push(pin);
    Ok((inside, rolls, lapped))
}
