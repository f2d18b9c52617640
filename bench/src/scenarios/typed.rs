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

/// The market-data message of the scenario: the same 32-byte layout as core's `quote` example, in the
/// conventions of exchange feeds such as ITCH (8-byte symbol, prices as integers with four implied decimals,
/// 4-byte quantities), so header and quote fill one 64-byte cache line like the raw 32-byte rows.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(crate = ringway_core::typed::rkyv)]
pub struct Quote {
    /// Fixed-width symbol.
    pub symbol: [u8; 8],
    /// Best bid, in 1/10,000 of the quote currency.
    pub bid: u32,
    /// Best ask, in 1/10,000 of the quote currency.
    pub ask: u32,
    /// Bid quantity.
    pub bid_size: u32,
    /// Ask quantity.
    pub ask_size: u32,
    /// Send time.
    pub ts: u64,
}
ringway_core::message!(Quote, type_id = 0x5155_4f54, schema = 2);

/// A wider quote (12-byte symbol, `f64` prices, 8-byte quantities: 56 archived bytes), measured next to
/// [`Quote`] to show what a message that spills into a second cache line costs.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(crate = ringway_core::typed::rkyv)]
pub struct WideQuote {
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
ringway_core::message!(WideQuote, type_id = 0x5751_4f54, schema = 1);

/// What the round trip needs of a message type: build message `i`, read its sequence and stamp back, and
/// copy an archived one into a value (the echo sends back what it received).
pub trait Sample: ringway_core::typed::Message + Copy + Send + 'static {
    /// Message `i` stamped with `ts`.
    fn make(i: u64, ts: u64) -> Self;
    /// The sequence number and stamp it carries.
    fn seq_ts(&self) -> (u64, u64);
    /// The archived value as a native one.
    fn from_archived(a: &Self::Archived) -> Self;
}

impl Sample for Quote {
    #[inline]
    fn make(i: u64, ts: u64) -> Self {
        Quote {
            symbol: *b"EURUSD\0\0",
            bid: 10_841 + (i % 100) as u32,
            ask: 10_842 + (i % 100) as u32,
            bid_size: i as u32,
            ask_size: 1_000_000 - (i % 1000) as u32,
            ts,
        }
    }
    #[inline]
    fn seq_ts(&self) -> (u64, u64) {
        (self.bid_size as u64, self.ts)
    }
    #[inline]
    fn from_archived(a: &ArchivedQuote) -> Self {
        Quote {
            symbol: a.symbol,
            bid: a.bid.to_native(),
            ask: a.ask.to_native(),
            bid_size: a.bid_size.to_native(),
            ask_size: a.ask_size.to_native(),
            ts: a.ts.to_native(),
        }
    }
}

impl Sample for WideQuote {
    #[inline]
    fn make(i: u64, ts: u64) -> Self {
        WideQuote {
            symbol: *b"EURUSD\0\0\0\0\0\0",
            bid: 1.0841 + (i % 100) as f64 * 1e-5,
            ask: 1.0842 + (i % 100) as f64 * 1e-5,
            bid_size: i,
            ask_size: 1_000_000 - (i % 1000),
            ts,
        }
    }
    #[inline]
    fn seq_ts(&self) -> (u64, u64) {
        (self.bid_size, self.ts)
    }
    #[inline]
    fn from_archived(a: &ArchivedWideQuote) -> Self {
        WideQuote {
            symbol: a.symbol,
            bid: a.bid.to_native(),
            ask: a.ask.to_native(),
            bid_size: a.bid_size.to_native(),
            ask_size: a.ask_size.to_native(),
            ts: a.ts.to_native(),
        }
    }
}

fn sys(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringway", e)
}

/// The rows of the scenario, in order.
const ROWS: [&str; 6] = [
    "ringway-raw-32B",
    "ringway-typed-quote-validated",
    "ringway-typed-quote-unchecked",
    "ringway-typed-quote-validated-append-only",
    "ringway-typed-widequote-validated",
    "ringway-typed-widequote-unchecked",
];

/// Runs the scenario.
pub fn run(common: &CommonArgs) -> Result<Report> {
    let mut env = Env::new(common)?;
    let total = env.warmup + env.iterations;
    let pb = progress(ROWS.len() as u64 * total, common.quick);
    let mut runs = Vec::new();
    for name in ROWS {
        pb.set_message(name);
        let measured = if name.contains("widequote") {
            pingpong::<WideQuote>(&mut env, name, &pb)
        } else {
            pingpong::<Quote>(&mut env, name, &pb)
        };
        match measured {
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
        "archived payloads: Quote {} bytes (one 64-byte line with the 32-byte header, like the raw 32-byte rows), \
         WideQuote {} bytes (two lines); typed rows serialize in place on both legs and the echo copies the \
         archived value back into a native one",
        std::mem::size_of::<ArchivedQuote>(),
        std::mem::size_of::<ArchivedWideQuote>()
    ));
    Ok(report)
}

/// One side's sending and receiving, raw or typed.
enum Side<T: Sample> {
    Raw {
        w: ringway_core::Writer,
        r: ringway_core::Reader,
    },
    Typed {
        p: Publisher<T>,
        s: Subscriber<T>,
    },
}

impl<T: Sample> Side<T> {
    fn open(out: &Stream, inp: &Stream, typed: Option<Access>) -> Result<Side<T>> {
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

    /// Sends `q` (raw: its sequence number and stamp in a 32-byte payload).
    #[inline]
    fn send(&mut self, q: &T) -> Result<()> {
        match self {
            Side::Raw { w, .. } => {
                let (seq, ts) = q.seq_ts();
                let mut buf = [0u8; 32];
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                buf[8..16].copy_from_slice(&ts.to_le_bytes());
                w.append(&buf).map_err(sys)?;
            }
            Side::Typed { p, .. } => {
                p.send(q).map_err(sys)?;
            }
        }
        Ok(())
    }

    /// Polls one message; returns it as a value (raw: rebuilt from the sequence number and stamp it carries).
    #[inline]
    fn recv(&mut self) -> Result<Option<T>> {
        let mut got = None;
        match self {
            Side::Raw { r, .. } => {
                r.poll(1, |f| {
                    let p = f.payload();
                    let seq = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
                    let ts = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
                    got = Some(T::make(seq, ts));
                })
                .map_err(sys)?;
            }
            Side::Typed { s, .. } => {
                s.poll(1, |a| got = Some(T::from_archived(&a)))
                    .map_err(sys)?;
            }
        }
        Ok(got)
    }
}

fn pingpong<T: Sample>(
    env: &mut Env,
    name: &'static str,
    pb: &indicatif::ProgressBar,
) -> Result<hdrhistogram::Histogram<u64>> {
    let typed = if name.contains("validated") {
        Some(Access::Validated)
    } else if name.contains("unchecked") {
        // SAFETY: both streams are private to this run and written only by this row's publishers of `T`.
        Some(unsafe { Access::unchecked() })
    } else {
        None
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
        let mut side = Side::<T>::open(&pong2, &ping2, typed)?;
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
    let mut side = Side::<T>::open(&ping, &pong, typed)?;
    let mut hist = new_histogram();
    let timer = env.timer.clone();
    let mut spin = Spinner::new(env.timeout);
    for i in 0..total {
        let t0 = timer.raw();
        side.send(&T::make(i, t0))?;
        let back = loop {
            match side.recv()? {
                Some(b) => break b,
                None => spin.spin("pong")?,
            }
        };
        let t1 = timer.raw();
        let (seq, ts) = back.seq_ts();
        // Quote carries a 32-bit quantity: compare modulo 2^32 there.
        if seq != i & sample_seq_mask::<T>() || ts != t0 {
            return Err(BenchError::system(
                "ringway",
                format!("echo of {i} came back as {seq}"),
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

/// The bits of a sequence number a message type carries back.
fn sample_seq_mask<T: Sample>() -> u64 {
    T::make(u64::MAX, 0).seq_ts().0
}
