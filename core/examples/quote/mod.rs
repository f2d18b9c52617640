//! The market-data example shared by `quote_publisher` and `quote_subscriber`: the `Quote`
//! message, a deterministic quote generator (so the subscriber can check every field it
//! receives), command-line options and the two agents.
#![allow(dead_code)]

use std::error::Error;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringway_core::agent::{AgentOptions, AgentRunner, StopSignal};
use ringway_core::idle::IdleStrategy;
use ringway_core::typed::{Access, Publisher, Subscriber, TypedError};
use ringway_core::{system_now_ns, Start, Stream, StreamConfig};

/// A fixed-width instrument symbol, NUL-padded (no heap, no relative pointers), 8 bytes as in
/// exchange feeds such as ITCH.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Symbol(pub [u8; 8]);

impl Symbol {
    /// `s` truncated to 8 bytes.
    pub fn new(s: &str) -> Symbol {
        let mut b = [0u8; 8];
        let n = s.len().min(8);
        b[..n].copy_from_slice(&s.as_bytes()[..n]);
        Symbol(b)
    }
}

/// Text of an archived symbol.
pub fn symbol_str(s: &ArchivedSymbol) -> &str {
    let end = s.0.iter().position(|&b| b == 0).unwrap_or(8);
    std::str::from_utf8(&s.0[..end]).unwrap_or("?")
}

/// Prices are integers in units of 1/10,000 (four implied decimals, as in ITCH).
pub const PRICE_SCALE: f64 = 10_000.0;

/// A price as a decimal number.
pub fn price(p: u32) -> f64 {
    p as f64 / PRICE_SCALE
}

/// A top-of-book quote: 32 bytes archived, so with the 32-byte frame header it fills exactly one
/// 64-byte cache line.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Quote {
    /// Instrument.
    pub symbol: Symbol,
    /// Best bid price, in 1/10,000 (see [`price`]).
    pub bid: u32,
    /// Best ask price, in 1/10,000.
    pub ask: u32,
    /// Quantity at the bid.
    pub bid_size: u32,
    /// Quantity at the ask.
    pub ask_size: u32,
    /// Send time, ns since the Unix epoch.
    pub ts: u64,
}

ringway_core::message!(Quote, type_id = 0x5155_4f54, schema = 2);

const SYMBOLS: [&str; 4] = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD"];
const MIDS: [f64; 4] = [1.0841, 1.2702, 151.37, 2331.5];

/// Quote number `i` of the deterministic feed (its `ts` is left 0).
pub fn quote(i: u64) -> Quote {
    let k = (i % 4) as usize;
    let wiggle = ((i.wrapping_mul(2_654_435_761) >> 7) % 200) as f64 - 100.0;
    let mid = MIDS[k] * (1.0 + wiggle * 1e-5) * PRICE_SCALE;
    let half = (MIDS[k] * 5e-6 * PRICE_SCALE).max(1.0);
    Quote {
        symbol: Symbol::new(SYMBOLS[k]),
        bid: (mid - half).round() as u32,
        ask: (mid + half).round() as u32,
        bid_size: 1_000_000 + (i % 1_000_000) as u32,
        ask_size: 500_000 + (i % 1000) as u32 * 100,
        ts: 0,
    }
}

/// Whether an archived quote is quote number `i` of the feed.
pub fn matches(q: &ArchivedQuote, i: u64) -> bool {
    let e = quote(i);
    q.symbol.0 == e.symbol.0
        && q.bid.to_native() == e.bid
        && q.ask.to_native() == e.ask
        && q.bid_size.to_native() == e.bid_size
        && q.ask_size.to_native() == e.ask_size
}

/// Options of both example programs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Stream root directory.
    pub root: PathBuf,
    /// Stream name.
    pub stream: String,
    /// Quotes to send / receive before exiting.
    pub count: u64,
    /// Core to pin the agent to.
    pub core: Option<usize>,
    /// Idle strategy of the agent.
    pub idle: IdleStrategy,
    /// Publisher: quotes per second (0: as fast as possible).
    pub rate: u64,
    /// Subscriber: read from the start of the stream instead of its end.
    pub from_start: bool,
    /// Subscriber: trusted (unchecked) access instead of validation.
    pub unchecked: bool,
    /// Give up after this long.
    pub timeout: Duration,
}

impl Options {
    /// Parses `--root DIR --stream NAME --count N --core C --idle S --rate R --from-start --unchecked --timeout-secs T`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut o = Options {
            root: ringway_core::default_root(),
            stream: "quotes".into(),
            count: 100_000,
            core: None,
            idle: IdleStrategy::Backoff,
            rate: 0,
            from_start: false,
            unchecked: false,
            timeout: Duration::from_secs(60),
        };
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
            match a.as_str() {
                "--root" => o.root = value()?.into(),
                "--stream" => o.stream = value()?,
                "--count" => o.count = num(&a, &value()?)?,
                "--core" => o.core = Some(num(&a, &value()?)? as usize),
                "--idle" => o.idle = value()?.parse().map_err(|e| format!("{e}"))?,
                "--rate" => o.rate = num(&a, &value()?)?,
                "--timeout-secs" => o.timeout = Duration::from_secs(num(&a, &value()?)?),
                "--from-start" => o.from_start = true,
                "--unchecked" => o.unchecked = true,
                "-h" | "--help" => return Err(USAGE.into()),
                _ => return Err(format!("unknown argument {a}\n{USAGE}")),
            }
        }
        if o.count == 0 {
            return Err("--count must be at least 1".into());
        }
        Ok(o)
    }

    fn open(&self) -> Result<Stream, ringway_core::Error> {
        Stream::open_or_create(&self.root, &self.stream, &StreamConfig::default())
    }
}

const USAGE: &str = "options: --root DIR --stream NAME --count N --core C \
--idle spin|yield|backoff|sleep:<us>|block[:<ms>] --rate PER_SEC --from-start --unchecked --timeout-secs T";

fn num(flag: &str, v: &str) -> Result<u64, String> {
    v.parse()
        .map_err(|_| format!("{flag}: '{v}' is not a number"))
}

/// What the publisher did.
#[derive(Debug, Clone)]
pub struct PublisherReport {
    /// Quotes sent.
    pub sent: u64,
    /// Wall time.
    pub elapsed: Duration,
}

/// Sends `count` quotes from a pinned agent; returns when all are committed.
pub fn run_publisher(o: &Options) -> Result<PublisherReport, Box<dyn Error + Send + Sync>> {
    let stream = o.open()?;
    let mut publisher = Publisher::<Quote>::new(stream.writer()?);
    let stop = StopSignal::new();
    let done = stop.clone();
    let (count, rate) = (o.count, o.rate);
    let started = Instant::now();
    // Pacing: quote `i` is due `i / rate` seconds after the start.
    let interval_ns = 1_000_000_000u64.checked_div(rate).unwrap_or(0);
    let mut i = 0u64;
    let opts = AgentOptions::new("quote-publisher")
        .core_opt(o.core)
        .idle(o.idle)
        .stop_signal(stop);
    let agent = AgentRunner::spawn(opts, move || {
        if interval_ns > 0 && (started.elapsed().as_nanos() as u64) < interval_ns * i {
            return Ok(0);
        }
        let mut q = quote(i);
        q.ts = system_now_ns();
        publisher.send(&q)?;
        i += 1;
        if i == count {
            done.stop();
        }
        Ok::<usize, TypedError>(1)
    })?;
    let stats = wait_or_stop(agent, o.timeout)?;
    Ok(PublisherReport {
        sent: stats.work,
        elapsed: started.elapsed(),
    })
}

/// What the subscriber saw.
#[derive(Debug, Clone, Default)]
pub struct SubscriberReport {
    /// Quotes received.
    pub received: u64,
    /// Quotes whose fields differ from the feed's.
    pub mismatched: u64,
    /// One-way latency (commit clock of the writer to the handler), p50 and p99, ns.
    pub p50_ns: u64,
    /// See `p50_ns`.
    pub p99_ns: u64,
    /// Mean spread over the run, in units of the mid price (basis points * 1e-4).
    pub mean_rel_spread: f64,
}

/// Receives `count` quotes on a pinned agent, checking each against the feed.
pub fn run_subscriber(o: &Options) -> Result<SubscriberReport, Box<dyn Error + Send + Sync>> {
    let stream = o.open()?;
    let start = if o.from_start {
        Start::Beginning
    } else {
        Start::End
    };
    let access = if o.unchecked {
        // SAFETY: the example's publisher is the only writer of this stream and writes `Quote`,
        // whose archived form has no relative pointers; the stream is append-only.
        unsafe { Access::unchecked() }
    } else {
        Access::Validated
    };
    let subscriber = Subscriber::<Quote>::with_access(&stream, start, access)?;
    let stop = StopSignal::new();
    let done = stop.clone();
    let result = Arc::new(Mutex::new(None::<SubscriberReport>));
    let out = result.clone();
    let count = o.count;
    let mut latencies = Vec::with_capacity(count as usize);
    let (mut mismatched, mut spread) = (0u64, 0.0f64);
    let opts = AgentOptions::new("quote-subscriber")
        .core_opt(o.core)
        .idle(o.idle)
        .stop_signal(stop);
    let agent = AgentRunner::spawn_waiting(opts, subscriber, move |sub| {
        let limit = (count - latencies.len() as u64).min(256) as usize;
        let n = sub.poll(limit, |q| {
            let now = system_now_ns();
            if !matches(&q, latencies.len() as u64) {
                mismatched += 1;
            }
            let (bid, ask) = (price(q.bid.to_native()), price(q.ask.to_native()));
            spread += (ask - bid) / ((ask + bid) / 2.0);
            latencies.push(now.saturating_sub(q.ts.to_native()));
        })?;
        if latencies.len() as u64 == count {
            latencies.sort_unstable();
            let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
            *out.lock().expect("report lock") = Some(SubscriberReport {
                received: count,
                mismatched,
                p50_ns: pct(0.5),
                p99_ns: pct(0.99),
                mean_rel_spread: spread / count as f64,
            });
            done.stop();
        }
        Ok::<usize, TypedError>(n)
    })?;
    wait_or_stop(agent, o.timeout)?;
    let report = result.lock().expect("report lock").take();
    report.ok_or_else(|| {
        format!(
            "timed out after {:?} before receiving {count} quotes",
            o.timeout
        )
        .into()
    })
}

/// Waits for an agent to stop by itself, stopping it at the timeout.
fn wait_or_stop(
    agent: AgentRunner<TypedError>,
    timeout: Duration,
) -> Result<ringway_core::agent::AgentStats, Box<dyn Error + Send + Sync>> {
    let deadline = Instant::now() + timeout;
    while !agent.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(agent.stop()?)
}
