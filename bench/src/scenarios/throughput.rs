//! `throughput`: messages/s and bytes/s from one (or `--writers N`) writer thread to one reader thread, pinned to
//! the two cores, for payload sizes 8 B .. 64 KiB. Time runs from the first write to the reader's last message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use ringway_core::{Start, Stream, StreamConfig};

use crate::cli::ThroughputArgs;
use crate::error::{BenchError, Result};
use crate::pinning::{pin_current, PinRecord};
use crate::report::{Report, SystemResult, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::systems::{parse_peers, seq_of, stamp};

/// Peers with a throughput implementation.
const THROUGHPUT_PEERS: &[&str] = &["crossbeam"];

/// Default payload sizes.
pub const DEFAULT_SIZES: &[usize] = &[8, 32, 128, 512, 2048, 8192, 32768, 65536];

/// Bytes of payload moved per size, at most (keeps large sizes to a sensible count).
const MAX_BYTES_PER_SIZE: u64 = 1 << 30;

/// Segment size of the throughput streams.
const SEGMENT_SIZE: u64 = 16 << 20;

/// Messages written (and read) before timing starts: two segments' worth, so that the timed part runs with the
/// writer's segment preparer already ahead of the writer.
fn warmup_messages(size: usize) -> u64 {
    (2 * SEGMENT_SIZE).div_ceil(frame_bytes(size))
}

/// Bytes a frame of `size` payload bytes occupies (32-byte header, 8-byte alignment).
fn frame_bytes(size: usize) -> u64 {
    (32 + size as u64).div_ceil(8) * 8
}

/// One measurement: messages, seconds, and the pinning of each thread.
struct Measured {
    messages: u64,
    secs: f64,
    pins: Vec<PinRecord>,
}

/// Runs the scenario.
pub fn run(args: &ThroughputArgs) -> Result<Report> {
    if args.writers == 0 {
        return Err(BenchError::Usage("--writers must be at least 1".into()));
    }
    let peers = parse_peers(&args.peers)?;
    let sizes = args.sizes.clone().unwrap_or_else(|| DEFAULT_SIZES.to_vec());
    if let Some(bad) = sizes.iter().find(|s| **s == 0 || **s > 1 << 20) {
        return Err(BenchError::Usage(format!(
            "size {bad} out of range 1 ..= 1 MiB"
        )));
    }
    let mut env = Env::new(&args.common)?;
    let default_count = if args.common.quick {
        100_000
    } else {
        20_000_000
    };
    let count_for = |size: usize| {
        args.common
            .iterations
            .unwrap_or(default_count)
            .min((MAX_BYTES_PER_SIZE / size as u64).max(1000))
    };
    let pb = progress(sizes.len() as u64 * 2, args.common.quick);
    let mut runs = Vec::new();
    let mode = if args.writers == 1 {
        "1 writer thread -> 1 reader thread".to_string()
    } else {
        format!(
            "{} writer threads (multi-writer) -> 1 reader thread",
            args.writers
        )
    };
    for &size in &sizes {
        let count = count_for(size);
        pb.set_message(format!("ringway {size} B"));
        let dir = env.subdir(&format!("ringway-{size}"))?;
        let r = ringway(
            &dir,
            size,
            count,
            args.writers,
            env.core_a,
            env.core_b,
            env.timeout,
        );
        runs.push(row("ringway", size, &mode, r, &mut env.pins));
        pb.inc(1);
        for p in peers.iter().filter(|p| THROUGHPUT_PEERS.contains(p)) {
            pb.set_message(format!("{p} {size} B"));
            let r = crossbeam(size, count, args.writers, env.core_a, env.core_b);
            runs.push(row(p, size, &mode, r, &mut env.pins));
            pb.inc(1);
        }
    }
    for p in peers.iter().filter(|p| !THROUGHPUT_PEERS.contains(p)) {
        runs.push(SystemRun::skipped(
            p,
            "no throughput implementation for this peer in the harness yet (pingpong measures its latency)",
        ));
    }
    pb.finish_and_clear();
    let payload = 32;
    let mut report = env.report("throughput", payload, runs);
    report.notes.push(format!(
        "messages per size: {} (capped at {} GiB of payload per size); ringway: append-only stream whose retention \
         holds the run, {} MiB segments pre-faulted by the writer's preparer, two segments written before timing",
        args.common.iterations.unwrap_or(default_count),
        MAX_BYTES_PER_SIZE >> 30,
        SEGMENT_SIZE >> 20
    ));
    Ok(report)
}

fn row(
    name: &str,
    size: usize,
    mode: &str,
    r: Result<Measured>,
    pins: &mut Vec<PinRecord>,
) -> SystemRun {
    match r {
        Ok(m) => {
            pins.extend(m.pins);
            let rate = m.messages as f64 / m.secs;
            let mut res = SystemResult::skipped(name, "");
            res.status = "ok".into();
            res.payload_bytes = Some(size);
            res.msgs_per_sec = Some(rate);
            res.bytes_per_sec = Some(rate * size as f64);
            res.samples = Some(m.messages);
            res.mode = Some(mode.to_string());
            SystemRun::row(res)
        }
        Err(e) => {
            let mut res = SystemResult::skipped(name, e);
            res.payload_bytes = Some(size);
            SystemRun::row(res)
        }
    }
}

/// An append-only stream whose retention keeps the whole run: a throughput figure must count every message, and
/// a ring (which has no back-pressure: a slow reader is lapped, by design) would let the writer lap the reader.
fn stream_cfg(size: usize, writers: usize, messages: u64) -> StreamConfig {
    let bytes = (messages + warmup_messages(size) * writers as u64) * frame_bytes(size);
    StreamConfig::default()
        .segment_size(SEGMENT_SIZE)
        .max_message_size(size.max(64 << 10) as u32)
        .multi_writer(writers > 1)
        .retention(
            ringway_core::Retention::default().max_segments((bytes / SEGMENT_SIZE + 4) as u32),
        )
}

fn ringway(
    dir: &std::path::Path,
    size: usize,
    count: u64,
    writers: usize,
    core_a: Option<usize>,
    core_b: Option<usize>,
    timeout: std::time::Duration,
) -> Result<Measured> {
    let err = |e: ringway_core::Error| BenchError::system("ringway", e);
    let stream = Stream::create(dir, "tput", &stream_cfg(size, writers, count)).map_err(err)?;
    let per_writer = count / writers as u64;
    let total = per_writer * writers as u64;
    let warm_per_writer = warmup_messages(size) / writers as u64;
    let warm = warm_per_writer * writers as u64;
    let start_ns = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(writers + 1));
    let timed = Arc::new(Barrier::new(writers + 1));
    let epoch = Instant::now();
    let mut handles = Vec::new();
    for w in 0..writers {
        let stream = Stream::open(dir, "tput").map_err(err)?;
        let barrier = barrier.clone();
        let timed = timed.clone();
        let start_ns = start_ns.clone();
        handles.push(std::thread::spawn(move || -> Result<PinRecord> {
            let pin = pin_current(&format!("writer-{w}"), core_a);
            let mut writer = stream.writer().map_err(err)?;
            let mut buf = vec![0u8; size];
            barrier.wait();
            for seq in 0..warm_per_writer {
                stamp(&mut buf, seq);
                writer.append(&buf).map_err(err)?;
            }
            timed.wait();
            let t = epoch.elapsed().as_nanos() as u64;
            // First writer to start sets the start time; Relaxed is enough, it is read after the joins.
            let _ = start_ns.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
            for seq in warm_per_writer..warm_per_writer + per_writer {
                stamp(&mut buf, seq);
                writer.append(&buf).map_err(err)?;
            }
            Ok(pin)
        }));
    }
    let reader_pin = pin_current("reader", core_b);
    let mut reader = stream.reader(Start::Beginning).map_err(err)?;
    barrier.wait();
    let mut seen = 0u64;
    let mut expect = 0u64;
    let mut bad = None;
    let mut spin = Spinner::new(timeout);
    let mut timed_started = false;
    while seen < warm + total {
        if !timed_started && seen >= warm {
            timed.wait();
            timed_started = true;
        }
        let n = reader
            .poll(1024, |f| {
                let p = f.payload();
                if writers == 1 && bad.is_none() && (p.len() != size || seq_of(p) != expect) {
                    bad = Some(seq_of(p));
                }
                expect += 1;
            })
            .map_err(err)?;
        if n == 0 {
            spin.spin("ringway messages")?;
        } else {
            seen += n as u64;
        }
    }
    if !timed_started {
        timed.wait();
    }
    let end = epoch.elapsed().as_nanos() as u64;
    let mut pins = vec![reader_pin];
    for h in handles {
        pins.push(
            h.join()
                .map_err(|_| BenchError::system("ringway", "writer thread panicked"))??,
        );
    }
    if let Some(got) = bad {
        return Err(BenchError::BadReply {
            system: "ringway",
            expected: expect,
            got,
        });
    }
    let secs = (end.saturating_sub(start_ns.load(Ordering::Relaxed))) as f64 / 1e9;
    Ok(Measured {
        messages: total,
        secs,
        pins,
    })
}

fn crossbeam(
    size: usize,
    count: u64,
    writers: usize,
    core_a: Option<usize>,
    core_b: Option<usize>,
) -> Result<Measured> {
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u8>>(4096);
    let per_writer = count / writers as u64;
    let total = per_writer * writers as u64;
    let barrier = Arc::new(Barrier::new(writers + 1));
    let mut handles = Vec::new();
    for w in 0..writers {
        let tx = tx.clone();
        let barrier = barrier.clone();
        handles.push(std::thread::spawn(move || -> Result<PinRecord> {
            let pin = pin_current(&format!("writer-{w}"), core_a);
            barrier.wait();
            for seq in 0..per_writer {
                let mut buf = vec![0u8; size];
                stamp(&mut buf, seq);
                tx.send(buf)
                    .map_err(|_| BenchError::system("crossbeam", "disconnected"))?;
            }
            Ok(pin)
        }));
    }
    drop(tx);
    let reader_pin = pin_current("reader", core_b);
    barrier.wait();
    let t0 = Instant::now();
    let mut seen = 0u64;
    while seen < total {
        let m = rx
            .recv()
            .map_err(|_| BenchError::system("crossbeam", "disconnected"))?;
        std::hint::black_box(seq_of(&m));
        seen += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    let mut pins = vec![reader_pin];
    for h in handles {
        pins.push(
            h.join()
                .map_err(|_| BenchError::system("crossbeam", "writer thread panicked"))??,
        );
    }
    Ok(Measured {
        messages: total,
        secs,
        pins,
    })
}
