//! `typed`: round trip of a typed `Quote` (rkyv, serialized in place by `Publisher::send`, read in place by a
//! `Subscriber`, validated and unchecked) next to the raw 32-byte append/poll round trip, in the same run, two
//! pinned threads, busy-spin. The typed rows include serialization on both legs and the echo's copy of the
//! archived quote back into a `Quote`.

use ringway_core::typed::rkyv;
use ringway_core::typed::{Access, Publisher, Subscriber};
use ringway_core::{Start, Stream, StreamConfig};

use crate::cli::CommonArgs;
use crate::error::{BenchError, Result};
use crate::pinning::pin_current;
use crate::report::{Report, SystemRun};
use crate::scenarios::{progress, Env};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};

/// The market-data message of the scenario (same shape as core's `quote` example).
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(crate = ringway_core::typed::rkyv)]
pub struct Quote {
    /// Fixed-width symbol.
    pub symbol: [u8; 12],
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// Bid quantity.
    pub bid_size: u64,
    /// Ask quantity.
    pub ask_size: u64,
    /// Send time.
    pub ts: u64,
}
ringway_core::message!(Quote, type_id = 0x5155_4f54, schema = 1);

fn sys(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringway", e)
}

/// Runs the scenario.
pub fn run(common: &CommonArgs) -> Result<Report> {
    let mut env = Env::new(common)?;
    let total = env.warmup + env.iterations;
    let pb = progress(4 * total, common.quick);
    let mut runs = Vec::new();
    for name in [
        "ringway-raw-32B",
        "ringway-typed-quote-validated",
        "ringway-typed-quote-unchecked",
        "ringway-typed-quote-validated-append-only",
    ] {
        pb.set_message(name);
        match pingpong(&mut env, name, &pb) {
            Ok(h) => {
                let mut r = SystemRun::measured(name, h);
                r.result.mode = Some("round trip, threads, busy-spin".into());
                runs.push(r);
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
    }
    pb.finish_and_clear();
    let mut report = env.report("typed", 32, runs);
    report.notes.push(format!(
        "archived Quote payload: {} bytes (raw rows: 32 bytes)",
        std::mem::size_of::<ArchivedQuote>()
    ));
    Ok(report)
}

/// One side's sending and receiving, raw or typed.
enum Side {
    Raw {
        w: ringway_core::Writer,
        r: ringway_core::Reader,
    },
    Typed {
        p: Publisher<Quote>,
        s: Subscriber<Quote>,
    },
}

impl Side {
    fn open(out: &Stream, inp: &Stream, typed: Option<Access>) -> Result<Side> {
        Ok(match typed {
            None => Side::Raw {
                w: out.writer().map_err(sys)?,
                r: inp.reader(Start::Beginning).map_err(sys)?,
            },
            Some(access) => Side::Typed {
                p: Publisher::new(out.writer().map_err(sys)?),
                s: Subscriber::with_access(inp, Start::Beginning, access).map_err(sys)?,
            },
        })
    }

    /// Sends `q` (raw: its first 32 bytes' worth of fields).
    #[inline]
    fn send(&mut self, q: &Quote) -> Result<()> {
        match self {
            Side::Raw { w, .. } => {
                let mut buf = [0u8; 32];
                buf[..8].copy_from_slice(&q.bid_size.to_le_bytes());
                buf[8..16].copy_from_slice(&q.ts.to_le_bytes());
                buf[16..28].copy_from_slice(&q.symbol);
                w.append(&buf).map_err(sys)?;
            }
            Side::Typed { p, .. } => {
                p.send(q).map_err(sys)?;
            }
        }
        Ok(())
    }

    /// Polls one message; returns it as a `Quote` (raw: the fields the raw payload carries).
    #[inline]
    fn recv(&mut self) -> Result<Option<Quote>> {
        let mut got = None;
        match self {
            Side::Raw { r, .. } => {
                r.poll(1, |f| {
                    let p = f.payload();
                    let mut q = quote(0);
                    q.bid_size = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                    q.ts = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
                    got = Some(q);
                })
                .map_err(sys)?;
            }
            Side::Typed { s, .. } => {
                s.poll(1, |a| {
                    got = Some(Quote {
                        symbol: a.symbol,
                        bid: a.bid.to_native(),
                        ask: a.ask.to_native(),
                        bid_size: a.bid_size.to_native(),
                        ask_size: a.ask_size.to_native(),
                        ts: a.ts.to_native(),
                    })
                })
                .map_err(sys)?;
            }
        }
        Ok(got)
    }
}

fn quote(i: u64) -> Quote {
    Quote {
        symbol: *b"EURUSD\0\0\0\0\0\0",
        bid: 1.0841 + (i % 100) as f64 * 1e-5,
        ask: 1.0842 + (i % 100) as f64 * 1e-5,
        bid_size: i,
        ask_size: 1_000_000 - (i % 1000),
        ts: 0,
    }
}

fn pingpong(
    env: &mut Env,
    name: &'static str,
    pb: &indicatif::ProgressBar,
) -> Result<hdrhistogram::Histogram<u64>> {
    let typed = match name {
        "ringway-typed-quote-validated" | "ringway-typed-quote-validated-append-only" => {
            Some(Access::Validated)
        }
        // SAFETY: both streams are private to this run and written only by its Quote publishers.
        "ringway-typed-quote-unchecked" => Some(unsafe { Access::unchecked() }),
        _ => None,
    };
    let dir = env.subdir(name)?;
    // The harness's stream configuration (a ring, where validated reads copy the payload first), and an
    // append-only stream where validated reads happen in place.
    let cfg = if name.ends_with("append-only") {
        StreamConfig::default()
            .segment_size(crate::systems::ringway::SEGMENT_SIZE)
            .retention(ringway_core::Retention::default().max_segments(4))
    } else {
        crate::systems::ringway::stream_config(64)
    };
    let ping = Stream::create(&dir, "ping", &cfg).map_err(sys)?;
    let pong = Stream::create(&dir, "pong", &cfg).map_err(sys)?;
    let total = env.warmup + env.iterations;
    let (ping2, pong2) = (ping.clone(), pong.clone());
    let (core_b, timeout) = (env.core_b, env.timeout);
    let echo = std::thread::spawn(move || -> Result<crate::pinning::PinRecord> {
        let pin = pin_current("echo", core_b);
        let mut side = Side::open(&pong2, &ping2, typed)?;
        let mut spin = Spinner::new(timeout);
        let mut n = 0;
        while n < total {
            match side.recv()? {
                Some(q) => {
                    side.send(&q)?;
                    n += 1;
                }
                None => spin.spin("ping")?,
            }
        }
        Ok(pin)
    });
    env.pin("ping", env.core_a);
    let mut side = Side::open(&ping, &pong, typed)?;
    let mut hist = new_histogram();
    let timer = env.timer.clone();
    let mut spin = Spinner::new(env.timeout);
    for i in 0..total {
        let mut q = quote(i);
        let t0 = timer.raw();
        q.ts = t0;
        side.send(&q)?;
        let back = loop {
            match side.recv()? {
                Some(b) => break b,
                None => spin.spin("pong")?,
            }
        };
        let t1 = timer.raw();
        if back.bid_size != i || back.ts != t0 {
            return Err(BenchError::system(
                "ringway",
                format!("echo of {i} came back as {}", back.bid_size),
            ));
        }
        if i >= env.warmup {
            record(&mut hist, timer.nanos_between(t0, t1))?;
        }
        if i & 0xffff == 0xffff {
            pb.inc(0x10000);
        }
    }
    let pin = echo.join().map_err(|_| sys("echo thread panicked"))??;
    env.pins.push(pin);
    Ok(hist)
}
