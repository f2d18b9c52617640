//! `oneway`: a publisher sends at a fixed rate (`--rate`), stamping each message with its intended send time and
//! its actual send time (TSC); the subscriber records receive time minus the intended send time (corrected for
//! coordinated omission: a stalled publisher does not hide the stall) and, separately, minus the actual send time.

use ringway_core::{Start, Stream};

use crate::cli::OnewayArgs;
use crate::error::{BenchError, Result};
use crate::pinning::pin_current;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};
use crate::systems::ringway::stream_config;
use crate::systems::seq_of;

/// Runs the scenario.
pub fn run(args: &OnewayArgs) -> Result<Report> {
    if args.rate == 0 {
        return Err(BenchError::Usage("--rate must be at least 1".into()));
    }
    if args.common.payload < 16 {
        return Err(BenchError::Usage(
            "oneway needs --payload of at least 16 bytes (two timestamps)".into(),
        ));
    }
    let mut env = Env::new(&args.common)?;
    let dir = env.subdir("ringway")?;
    let size = args.common.payload;
    let err = |e: ringway_core::Error| BenchError::system("ringway", e);
    let stream = Stream::create(&dir, "oneway", &stream_config(size)).map_err(err)?;
    let total = env.warmup + env.iterations;
    let warmup = env.warmup;
    let timer = env.timer.clone();
    let interval_ticks = env.timer.ticks_per_ns() * 1e9 / args.rate as f64;
    let (core_a, core_b) = (env.core_a, env.core_b);
    let pb = progress(total, args.common.quick);
    let wstream = Stream::open(&dir, "oneway").map_err(err)?;
    let wtimer = timer.clone();
    let publisher = std::thread::spawn(move || -> Result<(crate::pinning::PinRecord, u64)> {
        let pin = pin_current("publisher", core_a);
        let mut writer = wstream.writer().map_err(err)?;
        let mut buf = vec![0u8; size];
        let start = wtimer.raw() + (interval_ticks * 10.0) as u64;
        let mut late = 0u64;
        for i in 0..total {
            let intended = start + (i as f64 * interval_ticks) as u64;
            let mut now = wtimer.raw();
            if now > intended {
                late += 1;
            }
            while now < intended {
                core::hint::spin_loop();
                now = wtimer.raw();
            }
            buf[..8].copy_from_slice(&intended.to_le_bytes());
            buf[8..16].copy_from_slice(&now.to_le_bytes());
            writer.append(&buf).map_err(err)?;
        }
        Ok((pin, late))
    });
    env.pin("subscriber", core_b);
    let mut reader = stream.reader(Start::Beginning).map_err(err)?;
    let mut corrected = new_histogram();
    let mut uncorrected = new_histogram();
    let mut seen = 0u64;
    let mut spin = Spinner::new(env.timeout);
    while seen < total {
        let mut rec = Ok(());
        let n = reader
            .poll(64, |f| {
                let now = timer.raw();
                let p = f.payload();
                if seen >= warmup && rec.is_ok() {
                    let intended = seq_of(&p[..8]);
                    let actual = seq_of(&p[8..16]);
                    rec = record(&mut corrected, timer.nanos_between(intended, now))
                        .and_then(|_| record(&mut uncorrected, timer.nanos_between(actual, now)));
                }
                seen += 1;
                if seen & 0xffff == 0 {
                    pb.inc(0x10000);
                }
            })
            .map_err(err)?;
        rec?;
        if n == 0 {
            spin.spin("published messages")?;
        }
    }
    pb.finish_and_clear();
    let (pin, late) = publisher
        .join()
        .map_err(|_| BenchError::system("ringway", "publisher thread panicked"))??;
    env.pins.push(pin);
    let mut a = SystemRun::measured("ringway", corrected);
    a.result.mode = Some(format!(
        "threads, {} msgs/s, corrected (intended send time)",
        args.rate
    ));
    let mut b = SystemRun::measured("ringway-uncorrected", uncorrected);
    b.result.mode = Some(format!("threads, {} msgs/s, actual send time", args.rate));
    let mut report = env.report("oneway", size, vec![a, b]);
    report.notes.push(format!(
        "{late} of {total} sends started after their intended time (publisher behind schedule)"
    ));
    Ok(report)
}
