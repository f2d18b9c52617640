//! `throughput`: messages/s and bytes/s from one (or `--writers N`) writer thread to one reader thread, pinned to
//! the two cores, for payload sizes 8 B .. 64 KiB, for Ringway and every peer with a [`Channel`] in the same run.
//! Every system first moves the same warm-up (32 MiB of frames: two Ringway segments) through, then is timed from
//! the first timed write to the reader's last message; the reader checks every message's length and sequence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::cli::ThroughputArgs;
use crate::error::{BenchError, Result};
use crate::pinning::PinRecord;
use crate::report::{Report, SystemResult, SystemRun};
use crate::scenarios::{parties, progress, Env};
use crate::spin::Spinner;
use crate::systems::channel::{run_system, ChanCtx, Channel, ChannelRun, Rx, Tx};
use crate::systems::ringway_channel::{frame_bytes, RING_SEGMENTS, SEGMENT_SIZE};
use crate::systems::{parse_peers, seq_of, stamp};

/// Default payload sizes.
pub const DEFAULT_SIZES: &[usize] = &[8, 32, 128, 512, 2048, 8192, 32768, 65536];

/// Bytes of payload moved per size, at most (keeps large sizes to a sensible count).
const MAX_BYTES_PER_SIZE: u64 = 1 << 30;

/// Messages moved before timing starts, by every system: one lap of Ringway's ring and one more segment's worth of
/// frames. The first lap creates the ring's files (the kernel allocates and zeroes them, on the reader's CPU); a
/// long-running ring recycles them, as every other system reuses the buffers it allocated before its first message,
/// so the timed part measures that steady state, with every system's buffers warm.
fn warmup_messages(size: usize) -> u64 {
    ((RING_SEGMENTS as u64 + 1) * SEGMENT_SIZE).div_ceil(frame_bytes(size))
}

/// Bits of the stamp that carry the writer's index (the rest carry its sequence number).
const WRITER_SHIFT: u32 = 48;

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
    if args.writers >= 1 << (64 - WRITER_SHIFT) {
        return Err(BenchError::Usage("--writers is too large".into()));
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
    // `--warmup` (or `--quick`) sets the warm-up messages; by default every system moves 32 MiB of frames first.
    let explicit_warmup = (args.common.warmup.is_some() || args.common.quick).then_some(env.warmup);
    let warm_for = |size: usize| {
        explicit_warmup
            .unwrap_or_else(|| warmup_messages(size))
            .max(1)
    };
    let systems: Vec<&str> = std::iter::once("ringway").chain(peers).collect();
    let pb = progress((sizes.len() * systems.len()) as u64, args.common.quick);
    let mut runs = Vec::new();
    let threads = if args.writers == 1 {
        "1 writer thread -> 1 reader thread".to_string()
    } else {
        format!("{} writer threads -> 1 reader thread", args.writers)
    };
    for &size in &sizes {
        for &name in &systems {
            pb.set_message(format!("{name} {size} B"));
            let mut t = Throughput {
                size,
                count: count_for(size),
                warm: warm_for(size),
                writers: args.writers,
                reader_backoff: args.reader_backoff,
                env: &env,
                how: "",
            };
            let r = run_system(name, size, &mut t)
                .map_err(BenchError::Usage)
                .and_then(|r| r);
            let mode = format!("{threads}; {}", t.how);
            runs.push(row(name, size, &mode, r, &mut env.pins));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    let runs = merge_skips(runs);
    let payload = 32;
    let mut report = env.report("throughput", payload, runs);
    report.notes.push(format!(
        "messages per size: {} (capped at {} GiB of payload per size), after a warm-up of {} per system; Ringway: \
         one writer: a ring of {} x {} MiB segments with a blocking cursor per reader (back-pressure), several \
         writers: an append-only multi-writer stream holding the run",
        args.common.iterations.unwrap_or(default_count),
        MAX_BYTES_PER_SIZE >> 30,
        match explicit_warmup {
            Some(n) => format!("{n} messages"),
            None => format!(
                "{} MiB of frames (a lap of the ring and a segment)",
                ((RING_SEGMENTS as u64 + 1) * SEGMENT_SIZE) >> 20
            ),
        },
        crate::systems::ringway_channel::RING_SEGMENTS,
        SEGMENT_SIZE >> 20
    ));
    report.notes.push(if args.reader_backoff == 0 {
        "readers poll again at once after finding nothing (busy spin)".to_string()
    } else {
        format!(
            "readers spin {} PAUSE instructions after a poll that found nothing (--reader-backoff), every system alike",
            args.reader_backoff
        )
    });
    Ok(report)
}

/// A system skipped at every size for the same reason is one row (without a payload), not one per size.
fn merge_skips(runs: Vec<SystemRun>) -> Vec<SystemRun> {
    let merged: Vec<String> = runs
        .iter()
        .filter(|r| !r.result.is_ok())
        .filter(|r| {
            runs.iter()
                .filter(|o| o.result.name == r.result.name)
                .all(|o| o.result.status == r.result.status)
        })
        .map(|r| r.result.name.clone())
        .collect();
    let mut out: Vec<SystemRun> = Vec::new();
    for r in runs {
        if !merged.contains(&r.result.name) {
            out.push(r);
        } else if !out.iter().any(|o| o.result.name == r.result.name) {
            let reason = r.result.status.trim_start_matches("skipped: ");
            out.push(SystemRun::skipped(&r.result.name, reason));
        }
    }
    out
}

/// One system at one size.
struct Throughput<'a> {
    size: usize,
    count: u64,
    warm: u64,
    writers: usize,
    /// PAUSEs after an empty poll (`--reader-backoff`).
    reader_backoff: u32,
    env: &'a Env,
    /// How the system was driven (set by `run`).
    how: &'static str,
}

impl ChannelRun for Throughput<'_> {
    type Out = Result<Measured>;

    fn run<C: Channel>(&mut self) -> Result<Measured> {
        self.how = C::HOW;
        let writers = self.writers as u64;
        let per_writer = self.count / writers;
        let warm_per_writer = self.warm.div_ceil(writers);
        let ctx = ChanCtx {
            payload: self.size,
            messages: warm_per_writer + per_writer,
            writers: self.writers,
            readers: 1,
            dir: self.env.subdir(&format!("{}-{}", C::NAME, self.size))?,
            timeout: self.env.timeout,
        };
        parties::check::<C>(
            &ctx,
            Some(
                "no back-pressure: a writer faster than its reader overflows the receive buffer and the kernel drops \
                 datagrams, so a count would be a loss rate, not a throughput",
            ),
        )?;
        measure::<C>(
            &ctx,
            self.env,
            warm_per_writer,
            per_writer,
            self.reader_backoff,
        )
    }
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

/// Moves `warm` then `timed` messages per writer through `C` and times the second part.
fn measure<C: Channel>(
    ctx: &ChanCtx,
    env: &Env,
    warm: u64,
    timed: u64,
    backoff: u32,
) -> Result<Measured> {
    let size = ctx.payload;
    let writers = ctx.writers;
    let total = timed * writers as u64;
    let warm_total = warm * writers as u64;
    let epoch = Instant::now();
    let start_ns = AtomicU64::new(u64::MAX);
    let out = parties::run::<C, _, _, _, _>(
        ctx,
        env.core_a,
        env.core_b,
        |w, tx, gate| {
            let tag = (w as u64) << WRITER_SHIFT;
            for seq in 0..warm {
                stamp(tx.buf(), tag | seq);
                tx.send()?;
            }
            gate.wait(C::NAME, "the warm-up to be read")?;
            // The earliest writer's start is the start; Relaxed is enough, it is read after the threads are joined.
            start_ns.fetch_min(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            for seq in warm..warm + timed {
                stamp(tx.buf(), tag | seq);
                tx.send()?;
            }
            Ok(())
        },
        |_, rx, gate| {
            let mut check = SeqCheck::new(size, writers);
            let mut seen = 0u64;
            let mut spin = Spinner::new(ctx.timeout);
            let mut timed_started = false;
            while seen < warm_total + total {
                if !timed_started && seen >= warm_total {
                    gate.wait(C::NAME, "the writers to finish the warm-up")?;
                    timed_started = true;
                }
                let n = rx.poll(1024, |p| check.check(p))?;
                if n == 0 {
                    for _ in 0..backoff {
                        std::hint::spin_loop();
                    }
                    if spin.spin("messages").is_err() {
                        let gap = check.bad.map_or(String::new(), |(e, g)| {
                            format!("; first wrong sequence number: expected {e}, got {g}")
                        });
                        return Err(BenchError::Timeout {
                            what: format!(
                                "messages ({seen} of {} received{gap})",
                                warm_total + total
                            ),
                            secs: ctx.timeout.as_secs(),
                        });
                    }
                } else {
                    seen += n as u64;
                }
            }
            let end = epoch.elapsed().as_nanos() as u64;
            check.result(C::NAME)?;
            Ok(end)
        },
    )?;
    let end = out.readers.first().copied().unwrap_or(0);
    let secs = end.saturating_sub(start_ns.load(Ordering::Relaxed)) as f64 / 1e9;
    Ok(Measured {
        messages: total,
        secs,
        pins: out.pins,
    })
}

/// The reader's check of every message: its length, and its sequence number per writer (in full with one
/// writer, as far as the payload holds it; per writer when the payload holds the writer's index).
struct SeqCheck {
    size: usize,
    mask: u64,
    next: Vec<u64>,
    bad: Option<(u64, u64)>,
}

impl SeqCheck {
    fn new(size: usize, writers: usize) -> Self {
        let bytes = size.min(8);
        SeqCheck {
            size,
            mask: if bytes == 8 {
                u64::MAX
            } else {
                (1u64 << (8 * bytes)) - 1
            },
            next: vec![
                0;
                if writers == 1 || size >= 8 {
                    writers
                } else {
                    0
                }
            ],
            bad: None,
        }
    }

    #[inline(always)]
    fn check(&mut self, p: &[u8]) {
        if self.bad.is_some() {
            return;
        }
        if p.len() != self.size {
            self.bad = Some((self.size as u64, p.len() as u64));
            return;
        }
        let got = seq_of(p);
        let (w, seq) = match self.next.len() {
            0 => return,
            1 => (0, got),
            _ => (
                (got >> WRITER_SHIFT) as usize,
                got & ((1 << WRITER_SHIFT) - 1),
            ),
        };
        match self.next.get_mut(w) {
            Some(next) if *next & self.mask == seq => *next += 1,
            Some(next) => self.bad = Some((*next & self.mask, seq)),
            None => self.bad = Some((0, got)),
        }
    }

    fn result(&self, system: &'static str) -> Result<()> {
        match self.bad {
            Some((expected, got)) => Err(BenchError::BadReply {
                system,
                expected,
                got,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(size: usize, v: u64) -> Vec<u8> {
        let mut b = vec![0u8; size];
        stamp(&mut b, v);
        b
    }

    #[test]
    fn one_writer_gap_and_wrong_length_are_caught() {
        let mut c = SeqCheck::new(16, 1);
        for v in [0, 1, 2] {
            c.check(&msg(16, v));
        }
        assert!(c.result("t").is_ok());
        c.check(&msg(16, 4));
        assert!(matches!(
            c.result("t"),
            Err(BenchError::BadReply {
                expected: 3,
                got: 4,
                ..
            })
        ));
        let mut c = SeqCheck::new(16, 1);
        c.check(&msg(15, 0));
        assert!(c.result("t").is_err());
    }

    #[test]
    fn short_payloads_check_the_sequence_as_far_as_it_fits() {
        let mut c = SeqCheck::new(1, 1);
        for v in 0..300u64 {
            c.check(&msg(1, v));
        }
        assert!(c.result("t").is_ok());
        c.check(&msg(1, 301));
        assert!(c.result("t").is_err());
    }

    #[test]
    fn several_writers_are_checked_each_in_order() {
        let tag = |w: u64| w << WRITER_SHIFT;
        let mut c = SeqCheck::new(8, 2);
        for v in [tag(0), tag(1), tag(1) | 1, tag(0) | 1] {
            c.check(&msg(8, v));
        }
        assert!(c.result("t").is_ok());
        c.check(&msg(8, tag(1) | 1));
        assert!(c.result("t").is_err());
    }

    #[test]
    fn a_system_skipped_at_every_size_for_one_reason_is_one_row() {
        let ok = |size| {
            let mut r = SystemResult::skipped("a", "");
            r.status = "ok".into();
            r.payload_bytes = Some(size);
            SystemRun::row(r)
        };
        let skip = |name: &str, why: &str, size| {
            let mut r = SystemResult::skipped(name, why);
            r.payload_bytes = Some(size);
            SystemRun::row(r)
        };
        let runs = vec![
            ok(8),
            skip("b", "never", 8),
            skip("c", "too big", 8),
            ok(16),
            skip("b", "never", 16),
            skip("c", "other", 16),
        ];
        let out = merge_skips(runs);
        let names: Vec<(&str, Option<usize>)> = out
            .iter()
            .map(|r| (r.result.name.as_str(), r.result.payload_bytes))
            .collect();
        assert_eq!(
            names,
            [
                ("a", Some(8)),
                ("b", None),
                ("c", Some(8)),
                ("a", Some(16)),
                ("c", Some(16))
            ]
        );
    }
}
