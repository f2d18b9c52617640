//! `fanout`: one publisher at a fixed rate, N subscriber threads on one stream. Per message, the latency of the
//! slowest subscriber and of the median subscriber are recorded (corrected for coordinated omission, like
//! `oneway`). With more subscribers than spare cores, subscribers yield when idle instead of spinning.

use std::sync::{Arc, Barrier};

use ringway_core::{Start, Stream};

use crate::cli::FanoutArgs;
use crate::error::{BenchError, Result};
use crate::pinning::pin_current;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};
use crate::systems::ringway::stream_config;
use crate::systems::seq_of;

/// Runs the scenario.
pub fn run(args: &FanoutArgs) -> Result<Report> {
    if args.subscribers == 0 || args.rate == 0 {
        return Err(BenchError::Usage(
            "--subscribers and --rate must be at least 1".into(),
        ));
    }
    if args.common.payload < 8 {
        return Err(BenchError::Usage(
            "fanout needs --payload of at least 8 bytes (a timestamp)".into(),
        ));
    }
    let mut env = Env::new(&args.common)?;
    let dir = env.subdir("ringway")?;
    let size = args.common.payload;
    let err = |e: ringway_core::Error| BenchError::system("ringway", e);
    Stream::create(&dir, "fanout", &stream_config(size)).map_err(err)?;
    let total = env.warmup + env.iterations;
    let warmup = env.warmup;
    let n = args.subscribers;
    let cores = std::thread::available_parallelism()
        .map(|c| c.get())
        .unwrap_or(1);
    let yield_when_idle = n + 1 > cores;
    let barrier = Arc::new(Barrier::new(n + 1));
    let pb = progress(total, args.common.quick);
    let mut subs = Vec::new();
    for k in 0..n {
        let stream = Stream::open(&dir, "fanout").map_err(err)?;
        let timer = env.timer.clone();
        let barrier = barrier.clone();
        let core = env.core_b;
        let timeout = env.timeout;
        subs.push(std::thread::spawn(
            move || -> Result<(crate::pinning::PinRecord, Vec<u64>)> {
                let pin = pin_current(&format!("subscriber-{k}"), core);
                let mut reader = stream.reader(Start::Beginning).map_err(err)?;
                let mut lat = vec![0u64; (total - warmup) as usize];
                barrier.wait();
                let mut seen = 0u64;
                let mut spin = Spinner::new(timeout);
                while seen < total {
                    let got = reader
                        .poll(64, |f| {
                            let now = timer.raw();
                            if seen >= warmup {
                                lat[(seen - warmup) as usize] =
                                    timer.nanos_between(seq_of(f.payload()), now);
                            }
                            seen += 1;
                        })
                        .map_err(err)?;
                    if got == 0 {
                        if yield_when_idle {
                            std::thread::yield_now();
                        }
                        spin.spin("published messages")?;
                    }
                }
                Ok((pin, lat))
            },
        ));
    }
    let stream = Stream::open(&dir, "fanout").map_err(err)?;
    env.pin("publisher", env.core_a);
    let mut writer = stream.writer().map_err(err)?;
    let mut buf = vec![0u8; size];
    let interval = env.timer.ticks_per_ns() * 1e9 / args.rate as f64;
    barrier.wait();
    let start = env.timer.raw() + (interval * 10.0) as u64;
    for i in 0..total {
        let intended = start + (i as f64 * interval) as u64;
        while env.timer.raw() < intended {
            core::hint::spin_loop();
        }
        buf[..8].copy_from_slice(&intended.to_le_bytes());
        writer.append(&buf).map_err(err)?;
        if i & 0xffff == 0xffff {
            pb.inc(0x10000);
        }
    }
    let mut all = Vec::new();
    for s in subs {
        let (pin, lat) = s
            .join()
            .map_err(|_| BenchError::system("ringway", "subscriber thread panicked"))??;
        env.pins.push(pin);
        all.push(lat);
    }
    pb.finish_and_clear();
    let mut slowest = new_histogram();
    let mut median = new_histogram();
    let mut per_msg = vec![0u64; n];
    for i in 0..(total - warmup) as usize {
        for (k, l) in all.iter().enumerate() {
            per_msg[k] = l[i];
        }
        per_msg.sort_unstable();
        record(&mut slowest, per_msg[n - 1])?;
        record(&mut median, per_msg[n / 2])?;
    }
    let mode = format!(
        "threads, {n} subscribers, {} msgs/s{}",
        args.rate,
        if yield_when_idle {
            ", subscribers yield when idle (more threads than cores)"
        } else {
            ""
        }
    );
    let mut a = SystemRun::measured("ringway-slowest", slowest);
    a.result.mode = Some(mode.clone());
    let mut b = SystemRun::measured("ringway-median", median);
    b.result.mode = Some(mode);
    Ok(env.report("fanout", size, vec![a, b]))
}
