//! `fanout`: one publisher at a fixed rate, N subscriber threads each receiving every message. Per message, the
//! latency of the slowest subscriber and of the median subscriber are recorded (corrected for coordinated
//! omission, like `oneway`). Ringway (one stream, N readers), ringfire (one SPMC ring, N consumers) and iceoryx2
//! (one service, N subscribers) run in turn in the same run; peers without a broadcast are reported as skipped.
//! With more threads than cores, subscribers yield when idle instead of spinning.

use crate::cli::FanoutArgs;
use crate::error::{BenchError, Result};
use crate::pinning::PinRecord;
use crate::report::{Report, SystemRun};
use crate::scenarios::paced::{self, Stamp, STAMP_BYTES};
use crate::scenarios::{parties, progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};
use crate::systems::channel::{run_system, ChanCtx, Channel, ChannelRun, Rx};
use crate::systems::parse_peers;

/// Runs the scenario.
pub fn run(args: &FanoutArgs) -> Result<Report> {
    if args.subscribers == 0 || args.rate == 0 {
        return Err(BenchError::Usage(
            "--subscribers and --rate must be at least 1".into(),
        ));
    }
    if args.common.payload < STAMP_BYTES {
        return Err(BenchError::Usage(format!(
            "fanout needs --payload of at least {STAMP_BYTES} bytes (two timestamps and a sequence number)"
        )));
    }
    let peers = parse_peers(&args.peers)?;
    let mut env = Env::new(&args.common)?;
    let n = args.subscribers;
    let yield_when_idle = n + 1 > env.cores_allowed.max(1);
    let systems: Vec<&str> = std::iter::once("ringway").chain(peers).collect();
    let pb = progress(systems.len() as u64, args.common.quick);
    let mut runs = Vec::new();
    for name in systems {
        pb.set_message(name);
        let mut f = Fanout {
            env: &env,
            rate: args.rate,
            size: args.common.payload,
            subscribers: n,
            yield_when_idle,
            how: "",
        };
        let r = run_system(name, args.common.payload, &mut f)
            .map_err(BenchError::Usage)
            .and_then(|r| r);
        let mode = format!(
            "threads, {n} subscribers, {} msgs/s{}; {}",
            args.rate,
            if yield_when_idle {
                ", subscribers yield when idle (more threads than cores)"
            } else {
                ""
            },
            f.how
        );
        match r {
            Ok((pins, slowest, median)) => {
                env.pins.extend(pins);
                for (suffix, h) in [("slowest", slowest), ("median", median)] {
                    let mut run = SystemRun::measured(&format!("{name}-{suffix}"), h);
                    run.result.mode = Some(mode.clone());
                    runs.push(run);
                }
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(env.report("fanout", args.common.payload, runs))
}

/// One system.
struct Fanout<'a> {
    env: &'a Env,
    rate: u64,
    size: usize,
    subscribers: usize,
    yield_when_idle: bool,
    /// How the system was driven (set by `run`).
    how: &'static str,
}

type Hist = hdrhistogram::Histogram<u64>;

impl ChannelRun for Fanout<'_> {
    type Out = Result<(Vec<PinRecord>, Hist, Hist)>;

    fn run<C: Channel>(&mut self) -> Self::Out {
        self.how = C::HOW;
        let env = self.env;
        let (warmup, total) = (env.warmup, env.warmup + env.iterations);
        let ctx = ChanCtx {
            payload: self.size,
            messages: total,
            writers: 1,
            readers: self.subscribers,
            dir: env.subdir(C::NAME)?,
            timeout: env.timeout,
        };
        parties::check::<C>(
            &ctx,
            Some(
                "loses messages; the slowest and median subscriber per message need every subscriber to get every \
                 message",
            ),
        )?;
        let (timer, yield_when_idle) = (&env.timer, self.yield_when_idle);
        let out = paced::run::<C, _, _>(&ctx, env, self.rate, |rx, _| {
            let mut lat = vec![0u64; (total - warmup) as usize];
            let mut next = 0u64;
            let mut bad = None;
            let mut spin = Spinner::new(ctx.timeout);
            while next < total {
                let got = rx.poll(64, |p| {
                    let now = timer.raw();
                    let s = Stamp::read(p);
                    if s.seq != next {
                        bad.get_or_insert((next, s.seq));
                    } else if s.seq >= warmup {
                        lat[(s.seq - warmup) as usize] = timer.nanos_between(s.intended, now);
                    }
                    next += 1;
                })?;
                if let Some((expected, got)) = bad {
                    return Err(BenchError::BadReply {
                        system: C::NAME,
                        expected,
                        got,
                    });
                }
                if got == 0 {
                    if yield_when_idle {
                        std::thread::yield_now();
                    }
                    spin.spin("published messages")?;
                }
            }
            Ok(lat)
        })?;
        let (slowest, median) = per_message(&out.readers)?;
        Ok((out.pins, slowest, median))
    }
}

/// The slowest and the median subscriber's latency of every message.
fn per_message(all: &[Vec<u64>]) -> Result<(Hist, Hist)> {
    let mut slowest = new_histogram();
    let mut median = new_histogram();
    let n = all.len();
    let mut per_msg = vec![0u64; n];
    for i in 0..all.first().map_or(0, Vec::len) {
        for (k, l) in all.iter().enumerate() {
            per_msg[k] = l[i];
        }
        per_msg.sort_unstable();
        record(&mut slowest, per_msg[n - 1])?;
        record(&mut median, per_msg[n / 2])?;
    }
    Ok((slowest, median))
}
