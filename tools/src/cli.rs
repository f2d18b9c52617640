//! Command-line syntax.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Ringway: a low-latency shared-memory message journal.
#[derive(Debug, Parser)]
#[command(name = "ringway", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where streams live.
#[derive(Debug, clap::Args, Clone)]
pub struct DirArg {
    /// Root directory of the streams [default: $RINGWAY_DIR, else /dev/shm/ringway]
    #[arg(long, value_name = "DIR", global = true)]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    pub fn root(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(ringway_core::default_root)
    }
}

/// How a stream is created when a command creates it.
#[derive(Debug, clap::Args, Clone)]
pub struct CreateArgs {
    /// Segment size in bytes (power of two)
    #[arg(long, value_name = "BYTES", default_value_t = 16 << 20)]
    pub segment_size: u64,
    /// Largest message in bytes [default: min(1 MiB, segment size / 4)]
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<u32>,
    /// Make the stream a bounded ring of N recycled segments
    #[arg(long, value_name = "N")]
    pub ring: Option<u32>,
    /// Retention: keep at most N segments
    #[arg(long, value_name = "N")]
    pub retain_segments: Option<u32>,
    /// Retention: keep at most this many bytes
    #[arg(long, value_name = "BYTES")]
    pub retain_bytes: Option<u64>,
    /// Retention: delete segments older than this (e.g. 1h, 30m)
    #[arg(long, value_name = "AGE", value_parser = humantime::parse_duration)]
    pub retain_age: Option<std::time::Duration>,
    /// Store a CRC32C per frame
    #[arg(long)]
    pub crc: bool,
    /// Named-cursor slots: one per named reader or persistent MQTT session
    #[arg(long, value_name = "N", default_value_t = ringway_core::DEFAULT_CURSOR_SLOTS)]
    pub cursor_slots: u32,
    /// Let group members read and write the stream's files (mode 0660 instead of 0600)
    #[arg(long)]
    pub group: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Publish each stdin line as one message; prints the last position on exit
    Pub {
        /// Stream name (created with defaults if missing)
        stream: String,
        #[command(flatten)]
        dir: DirArg,
        /// Allow concurrent publishers (the stream is created as multi-writer)
        #[arg(long)]
        multi_writer: bool,
        /// User type id stored in each frame
        #[arg(long, default_value_t = 0)]
        type_id: u32,
        /// Record this MQTT topic in each frame, so MQTT subscribers of the gateway receive it
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
    },
    /// Print messages of a stream, one per line
    Tail {
        /// Stream name
        stream: String,
        #[command(flatten)]
        dir: DirArg,
        /// Where to start: start, end, a position, or an RFC 3339 time
        #[arg(long, default_value = "start", value_name = "start|end|POSITION|TIME")]
        from: String,
        /// Keep waiting for new messages
        #[arg(long, short)]
        follow: bool,
        /// Stop after N messages
        #[arg(long, short = 'n', value_name = "N")]
        count: Option<u64>,
        /// Output format
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Read from the durable cursor NAME and commit it as messages are printed
        #[arg(long, value_name = "NAME", conflicts_with = "from")]
        named: Option<String>,
    },
    /// Manage durable named cursors
    Cursor {
        #[command(subcommand)]
        action: CursorAction,
    },
    /// Show every stream: segments, bytes, positions, messages, writers
    Stat {
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Walk every frame of a stream; exit 1 at the first damaged one
    Verify {
        /// Stream name
        stream: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Create a stream with explicit settings
    Create {
        /// Stream name
        stream: String,
        #[command(flatten)]
        dir: DirArg,
        #[command(flatten)]
        create: CreateArgs,
        /// Allow concurrent writers
        #[arg(long)]
        multi_writer: bool,
    },
    /// Run the appliance: the MQTT gateway over the streams, with metrics and a status line
    Up {
        /// Configuration file (ringway.toml)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Root directory of the streams (overrides the file)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// MQTT listen address [default: 127.0.0.1:1883]
        #[arg(long, value_name = "ADDR:PORT")]
        mqtt_listen: Option<std::net::SocketAddr>,
        /// Prometheus /metrics listen address [default: 127.0.0.1:9883]
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
        /// No status line on stderr
        #[arg(long)]
        quiet: bool,
    },
    /// Replicate a stream to a receiver until interrupted
    Replicate {
        /// Stream to ship
        stream: String,
        /// udp://HOST:PORT or tcp://HOST:PORT; or an IPv4 multicast group
        /// udp://GROUP:PORT[?interface=ADDR&ttl=N&loop=0|1&min-receivers=N] (interface: local
        /// address to send from; ttl: hops, default 1; loop: deliver to receivers on this host,
        /// default 1; min-receivers: receivers that must answer before sending starts, default 1)
        #[arg(long, value_name = "URL")]
        to: String,
        #[command(flatten)]
        dir: DirArg,
        /// File holding a shared secret: authenticates the session (HMAC-SHA256)
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Diagnostic: drop this fraction of packets (0.0..=1.0, UDP)
        #[arg(long, value_name = "FRACTION")]
        loss: Option<f64>,
        /// UDP: never sleep and receive with direct system calls instead of io_uring's multishot
        /// receive (lowest latency; keeps one core busy)
        #[arg(long)]
        busy_poll: bool,
        /// UDP: after activity look for new frames again within 10 µs, doubling the wait up to
        /// 200 µs (lower latency for synchronously replicated MQTT publishes; more wake-ups)
        #[arg(long)]
        idle_backoff: bool,
    },
    /// Receive replicated streams until interrupted
    Receive {
        /// udp://ADDR:PORT or tcp://ADDR:PORT; or an IPv4 multicast group to join
        /// udp://GROUP:PORT[?interface=ADDR] (interface: local address to join on and to answer
        /// the sender from)
        #[arg(long, value_name = "URL")]
        listen: String,
        #[command(flatten)]
        dir: DirArg,
        /// Replica name [default: the primary's name]
        #[arg(long, value_name = "NAME")]
        stream: Option<String>,
        /// File holding a shared secret
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Diagnostic: drop this fraction of packets (0.0..=1.0, UDP)
        #[arg(long, value_name = "FRACTION")]
        loss: Option<f64>,
        /// UDP: never sleep and receive with direct system calls instead of io_uring's multishot
        /// receive (lowest latency; keeps one core busy)
        #[arg(long)]
        busy_poll: bool,
    },
    /// Delete a stream and all its files
    Delete {
        /// Stream name
        stream: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum CursorAction {
    /// List a stream's cursors with position, lag and owner
    List {
        /// Stream name
        stream: String,
        #[command(flatten)]
        dir: DirArg,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Move a cursor (creating it if missing)
    Reset {
        /// Stream name
        stream: String,
        /// Cursor name
        name: String,
        /// New position: start, end, a position, or an RFC 3339 time
        #[arg(long, value_name = "start|end|POSITION|TIME")]
        to: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Delete a cursor
    Delete {
        /// Stream name
        stream: String,
        /// Cursor name
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The payload as text (invalid UTF-8 replaced)
    Text,
    /// One JSON object per message
    Json,
    /// Position and payload in hex
    Hex,
}
