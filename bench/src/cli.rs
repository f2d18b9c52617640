//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::spin::SpinStyle;
use crate::systems::WaitMode;

/// Ringway's latency and throughput benchmark: Ringway against the physical limit and its peers, in one run.
#[derive(Debug, Parser)]
#[command(name = "ringway-bench", version, about, long_about = None)]
pub struct Cli {
    /// The scenario to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Scenarios and tools.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Round trip between two processes (or threads), pinned, busy-spin; the limit and the peers in the same run.
    Pingpong(PingpongArgs),
    /// One-way latency at a fixed send rate, corrected for coordinated omission.
    Oneway(OnewayArgs),
    /// Messages/s and bytes/s for payload sizes 8 B .. 64 KiB, one or more writers to one reader.
    Throughput(ThroughputArgs),
    /// One publisher, N subscribers: latency of the slowest and of the median subscriber per message.
    Fanout(FanoutArgs),
    /// Append latency inside a segment and across segment rolls.
    Roll(RollArgs),
    /// Blocking-wait wake-up latency next to busy-spin, and idle CPU of each.
    Wake(CommonArgs),
    /// Typed `Quote` round trip (rkyv, validated and unchecked) next to the raw 32-byte round trip.
    Typed(CommonArgs),
    /// MQTT: the Ringway gateway next to mosquitto (QoS 1 publish throughput, publish latency, RSS per idle
    /// connection).
    Mqtt(MqttArgs),
    /// Replication over UDP loopback: one-way latency primary writer -> replica reader next to plain UDP, sustained
    /// throughput at 0 % and 5 % loss, catch-up rate after a receiver outage.
    Replicate(ReplicateArgs),
    /// Compares two JSON summaries; exits 1 when p50 or p99 regressed beyond the threshold.
    Compare(CompareArgs),
    /// Echo side of a two-process pingpong (started by the harness itself).
    #[command(name = "__echo", hide = true)]
    Echo(EchoArgs),
    /// A Ringway MQTT gateway in a process of its own, for measuring its memory (started by the harness
    /// itself); prints `READY ADDR` and runs until its standard input closes.
    #[command(name = "__gateway", hide = true)]
    Gateway(GatewayArgs),
}

/// Options every scenario takes.
#[derive(Debug, Args, Clone)]
pub struct CommonArgs {
    /// Write `.hgrm` files, `SCENARIO.json` and plots into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A seconds-long smoke run (few iterations); figures are not meaningful.
    #[arg(long)]
    pub quick: bool,
    /// Recorded iterations per system (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Warm-up iterations per system, not recorded (default 100,000; 2,000 with --quick).
    #[arg(long)]
    pub warmup: Option<u64>,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 32)]
    pub payload: usize,
    /// The two cores to pin to, as `A,B` (default: the first two this process may use).
    #[arg(long, value_parser = parse_cores)]
    pub cores: Option<(usize, usize)>,
    /// Do not pin threads (reported as pinning not obtained).
    #[arg(long)]
    pub no_pin: bool,
    /// Seconds either side waits for the other before the system is reported as failed.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
}

impl CommonArgs {
    /// Recorded iterations, after `--quick`.
    pub fn iterations(&self) -> u64 {
        self.iterations
            .unwrap_or(if self.quick { 20_000 } else { 1_000_000 })
    }
    /// Warm-up iterations, after `--quick`.
    pub fn warmup(&self) -> u64 {
        self.warmup
            .unwrap_or(if self.quick { 2_000 } else { 100_000 })
    }
}

fn parse_cores(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected two cores as A,B, got `{s}`"))?;
    let a = a.trim().parse().map_err(|e| format!("core `{a}`: {e}"))?;
    let b = b.trim().parse().map_err(|e| format!("core `{b}`: {e}"))?;
    Ok((a, b))
}

/// `pingpong` options.
#[derive(Debug, Args, Clone)]
pub struct PingpongArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Run both sides as threads of this process instead of two processes.
    #[arg(long)]
    pub threads: bool,
    /// Peers to measure besides Ringway and the limit: `all`, `none`, or a list such as `ringfire,uds`.
    #[arg(long, default_value = "all")]
    pub peers: String,
    /// Rounds: every system runs once per round, in turn, with iterations/rounds recorded round trips each, and
    /// its rounds are merged. Interleaving exposes every system to the same changes of the machine (a VM's vCPU
    /// placement can change within seconds).
    #[arg(long, default_value_t = 5)]
    pub rounds: u64,
    /// How kernel-based peers (uds, tcp, udp, pipe) wait: busy-polling non-blocking reads, or blocking reads.
    #[arg(long, value_enum, default_value_t = WaitMode::Spin)]
    pub wait: WaitMode,
    /// How every waiting loop spins (every system and the limit rows alike): with a `PAUSE` per check, or back to
    /// back.
    #[arg(long, value_enum, default_value_t = SpinStyle::Pause)]
    pub spin: SpinStyle,
}

/// `oneway` options.
#[derive(Debug, Args, Clone)]
pub struct OnewayArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Intended send rate, messages per second.
    #[arg(long, default_value_t = 100_000)]
    pub rate: u64,
    /// Peers to measure besides Ringway: `all`, `none`, or a list such as `ringfire,udp`.
    #[arg(long, default_value = "all")]
    pub peers: String,
}

/// `throughput` options.
#[derive(Debug, Args, Clone)]
pub struct ThroughputArgs {
    /// Common options (`--iterations` is the message count per size; `--payload` is ignored, see `--sizes`).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent writers (more than one uses a multi-writer stream).
    #[arg(long, default_value_t = 1)]
    pub writers: usize,
    /// Payload sizes in bytes (default 8,32,128,512,2048,8192,32768,65536).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Option<Vec<usize>>,
    /// Peers to measure besides Ringway: `all`, `none`, or a list such as `ringfire,tcp` (udp is reported as
    /// skipped: it has no back-pressure).
    #[arg(long, default_value = "all")]
    pub peers: String,
    /// PAUSE instructions the reader spins after a poll that found nothing, before polling again (the same for
    /// every system). 0 polls again at once: a reader at the writer's heels then fetches every line as soon as it
    /// is written. A few hundred (about 10 µs here) let the writer get ahead, so the reader finds batches.
    #[arg(long, default_value_t = 0)]
    pub reader_backoff: u32,
}

/// `fanout` options.
#[derive(Debug, Args, Clone)]
pub struct FanoutArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Subscribers.
    #[arg(long, default_value_t = 3)]
    pub subscribers: usize,
    /// Intended send rate, messages per second.
    #[arg(long, default_value_t = 50_000)]
    pub rate: u64,
    /// Peers to measure besides Ringway: `all`, `none`, or a list (fanout runs ringfire and iceoryx2; the others
    /// are reported as skipped with the reason).
    #[arg(long, default_value = "all")]
    pub peers: String,
}

/// `roll` options.
#[derive(Debug, Args, Clone)]
pub struct RollArgs {
    /// Common options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Segment size in bytes (small, so that the run crosses many rolls).
    #[arg(long, default_value_t = 1 << 20)]
    pub segment_size: u64,
}

/// `mqtt` options.
#[derive(Debug, Args, Clone)]
pub struct MqttArgs {
    /// Common options (`--iterations` is the number of latency samples per system, default 20,000; 500 with
    /// --quick; `--payload` is ignored: 64-byte payloads).
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrent publishing clients of the throughput measurement (default 100; 10 with --quick).
    #[arg(long)]
    pub clients: Option<usize>,
}

/// `replicate` options.
#[derive(Debug, Args, Clone)]
pub struct ReplicateArgs {
    /// Common options (`--iterations`/`--warmup`: latency samples per system; `--payload`: latency payload, at
    /// least 16 bytes).
    #[command(flatten)]
    pub common: CommonArgs,
    /// 64-byte messages per throughput and catch-up measurement (default 2,000,000; 20,000 with --quick).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Latency rounds: plain UDP and replication alternate, each round with iterations/rounds samples.
    #[arg(long, default_value_t = 3)]
    pub rounds: u64,
    /// Largest datagram the replication sender builds (bytes of UDP payload).
    #[arg(long, default_value_t = 1408)]
    pub mtu: usize,
}

/// `compare` options.
#[derive(Debug, Args, Clone)]
pub struct CompareArgs {
    /// The baseline summary.
    pub old: PathBuf,
    /// The new summary.
    pub new: PathBuf,
    /// Regression threshold in percent (p50 and p99; throughput rows: msgs/s drop).
    #[arg(long, default_value_t = 10.0)]
    pub threshold: f64,
}

/// Hidden gateway-process options.
#[derive(Debug, Args, Clone)]
pub struct GatewayArgs {
    /// Journal directory.
    #[arg(long)]
    pub dir: PathBuf,
}

/// Hidden echo-side options.
#[derive(Debug, Args, Clone)]
pub struct EchoArgs {
    /// System name.
    #[arg(long)]
    pub system: String,
    /// Payload bytes.
    #[arg(long)]
    pub payload: usize,
    /// Round trips to serve.
    #[arg(long)]
    pub count: u64,
    /// Scratch directory of the run.
    #[arg(long)]
    pub dir: PathBuf,
    /// Timeout in seconds.
    #[arg(long)]
    pub timeout_secs: u64,
    /// Wait mode of kernel peers.
    #[arg(long, value_enum)]
    pub wait: WaitMode,
    /// Core to pin to.
    #[arg(long)]
    pub core: Option<usize>,
    /// System-specific arguments.
    #[arg(long = "arg")]
    pub args: Vec<String>,
    /// Inherited file descriptors.
    #[arg(long = "fd")]
    pub fds: Vec<i32>,
}
