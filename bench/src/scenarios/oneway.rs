//! `oneway`: a publisher thread sends at a fixed rate (`--rate`), stamping each message with its intended send
//! time, its actual send time (TSC) and its sequence number; a subscriber thread on the other core records
//! receive time minus the intended send time (corrected for coordinated omission: a stalled publisher does not
//! hide the stall). Ringway and every peer with a [`Channel`] run in turn, in the same run, with the same payload
//! and pinning. The latency against the actual send time is summarised in each row's note.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

use crate::cli::OnewayArgs;
use crate::error::{BenchError, Result};
use crate::report::table::fmt_ns;
use crate::report::{Report, SystemRun};
use crate::scenarios::paced::{self, Stamp, STAMP_BYTES};
use crate::scenarios::{parties, progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record, Summary};
use crate::systems::channel::{run_system, ChanCtx, Channel, ChannelRun, Rx};
use crate::systems::parse_peers;

/// How long a subscriber of a lossy system keeps polling after the publisher's last send before it counts the
/// missing messages as lost.
const LOSS_GRACE: Duration = Duration::from_millis(200);

/// Runs the scenario.
pub fn run(args: &OnewayArgs) -> Result<Report> {
    if args.rate == 0 {
        return Err(BenchError::Usage("--rate must be at least 1".into()));
    }
    if args.common.payload < STAMP_BYTES {
        return Err(BenchError::Usage(format!(
            "oneway needs --payload of at least {STAMP_BYTES} bytes (two timestamps and a sequence number)"
        )));
    }
    let peers = parse_peers(&args.peers)?;
    let mut env = Env::new(&args.common)?;
    let systems: Vec<&str> = std::iter::once("ringway").chain(peers).collect();
    let total = env.warmup + env.iterations;
    let pb = progress(total * systems.len() as u64, args.common.quick);
    let size = args.common.payload;
    let mut runs = Vec::new();
    for name in systems {
        pb.set_message(name);
        let mut o = Oneway {
            env: &env,
            rate: args.rate,
            size,
            pb: &pb,
            how: "",
        };
        let r = run_system(name, size, &mut o)
            .map_err(BenchError::Usage)
            .and_then(|r| r);
        let how = o.how;
        runs.push(match r {
            Ok(m) => {
                env.pins.extend(m.pins);
                let u = Summary::of(&m.uncorrected);
                let mut run = SystemRun::measured(name, m.corrected);
                run.result.mode = Some(format!(
                    "threads, {} msgs/s, corrected (intended send time); {how}",
                    args.rate
                ));
                let mut note = format!(
                    "against the actual send time: p50 {}, p99 {}, p99.9 {}, max {}; {} of {total} sends started \
                     after their intended time",
                    fmt_ns(u.p50_ns as f64),
                    fmt_ns(u.p99_ns as f64),
                    fmt_ns(u.p999_ns as f64),
                    fmt_ns(u.max_ns as f64),
                    m.late
                );
                if m.lost > 0 {
                    note.push_str(&format!(
                        "; {} of {total} messages lost (not in the histogram)",
                        m.lost
                    ));
                }
                run.result.note = Some(note);
                run
            }
            Err(e) => SystemRun::skipped(name, e),
        });
    }
    pb.finish_and_clear();
    let mut report = env.report("oneway", size, runs);
    report.notes.push(format!(
        "each system: publisher thread on one core, subscriber thread busy-polling on the other, {} msgs/s, {} \
         warm-up messages then {} recorded",
        args.rate, report.warmup, report.iterations
    ));
    Ok(report)
}

/// What one system's run produced.
struct Measured {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    late: u64,
    lost: u64,
    pins: Vec<crate::pinning::PinRecord>,
}

/// One system.
struct Oneway<'a> {
    env: &'a Env,
    rate: u64,
    size: usize,
    pb: &'a ProgressBar,
    /// How the system was driven (set by `run`).
    how: &'static str,
}

impl ChannelRun for Oneway<'_> {
    type Out = Result<Measured>;

    fn run<C: Channel>(&mut self) -> Result<Measured> {
        self.how = C::HOW;
        let env = self.env;
        let total = env.warmup + env.iterations;
        let ctx = ChanCtx {
            payload: self.size,
            messages: total,
            writers: 1,
            readers: 1,
            dir: env.subdir(C::NAME)?,
            timeout: env.timeout,
        };
        parties::check::<C>(&ctx, None)?;
        let (timer, pb) = (&env.timer, self.pb);
        let out = paced::run::<C, _, _>(&ctx, env, self.rate, |rx, done| {
            let mut h = Subscriber::new(env.warmup, total);
            let mut spin = Spinner::new(ctx.timeout);
            let mut idle_since: Option<Instant> = None;
            while h.next < total {
                let n = rx.poll(64, |p| {
                    h.on_message(C::LOSSY, Stamp::read(p), timer.raw(), timer, pb)
                })?;
                h.failed(C::NAME)?;
                if n > 0 {
                    idle_since = None;
                    continue;
                }
                // Acquire pairs with the publisher's Release after its last send: once seen, a lossy system's
                // missing messages are either in flight (the grace period) or gone.
                if C::LOSSY && done.load(Ordering::Acquire) {
                    let since = *idle_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > LOSS_GRACE {
                        h.lost += total - h.next;
                        break;
                    }
                }
                spin.spin("published messages")?;
            }
            Ok(h)
        })?;
        let late = out.writers.first().copied().unwrap_or(0);
        let h = out
            .readers
            .into_iter()
            .next()
            .ok_or_else(|| BenchError::system(C::NAME, "no subscriber result"))?;
        Ok(Measured {
            corrected: h.corrected,
            uncorrected: h.uncorrected,
            late,
            lost: h.lost,
            pins: out.pins,
        })
    }
}

/// The subscriber's state: both histograms, the next sequence number expected, losses.
struct Subscriber {
    corrected: Histogram<u64>,
    uncorrected: Histogram<u64>,
    warmup: u64,
    total: u64,
    next: u64,
    lost: u64,
    error: Option<BenchError>,
}

impl Subscriber {
    fn new(warmup: u64, total: u64) -> Self {
        Subscriber {
            corrected: new_histogram(),
            uncorrected: new_histogram(),
            warmup,
            total,
            next: 0,
            lost: 0,
            error: None,
        }
    }

    #[inline(always)]
    fn on_message(
        &mut self,
        lossy: bool,
        s: Stamp,
        now: u64,
        timer: &crate::timer::Timer,
        pb: &ProgressBar,
    ) {
        if self.error.is_some() {
            return;
        }
        if s.seq != self.next {
            // A lossy system may drop messages (never reorder them); a lossless one may do neither.
            if !(lossy && s.seq > self.next && s.seq < self.total) {
                self.error = Some(BenchError::BadReply {
                    system: "oneway",
                    expected: self.next,
                    got: s.seq,
                });
                return;
            }
            self.lost += s.seq - self.next;
        }
        self.next = s.seq + 1;
        if s.seq >= self.warmup {
            if let Err(e) = record(&mut self.corrected, timer.nanos_between(s.intended, now))
                .and_then(|_| record(&mut self.uncorrected, timer.nanos_between(s.actual, now)))
            {
                self.error = Some(e);
            }
        }
        if self.next & 0xffff == 0 {
            pb.inc(0x10000);
        }
    }

    /// The first error seen, if any, as the system's error.
    fn failed(&mut self, system: &'static str) -> Result<()> {
        match self.error.take() {
            Some(BenchError::BadReply { expected, got, .. }) => Err(BenchError::BadReply {
                system,
                expected,
                got,
            }),
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
