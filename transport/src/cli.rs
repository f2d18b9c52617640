//! The logic of `ringway replicate` and `ringway receive`, for the CLI to call.
//!
//! Both run until `shutdown` becomes true (the CLI sets it on Ctrl-C), printing one progress line
//! per interval to `out`, then stop cleanly (the sender sends CLOSE; replicas are released).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::AuthKey;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::journal::core_stream::{CoreSource, CoreStore};
use crate::loss::{LossConfig, LossRates};
use crate::tcp::{TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig};
use crate::udp::{
    ReceiverConfig, ReceiverStats, SenderConfig, SenderStats, UdpReceiver, UdpSender,
};

/// Arguments of `ringway replicate STREAM --to udp://HOST:PORT|tcp://HOST:PORT [--dir DIR]`.
#[derive(Debug, Clone, Default)]
pub struct ReplicateArgs {
    /// Stream to ship.
    pub stream: String,
    /// `udp://HOST:PORT`, `tcp://HOST:PORT`, or a multicast group
    /// `udp://GROUP:PORT[?interface=ADDR&ttl=N&loop=0|1&min-receivers=N]`.
    pub to: String,
    /// Root directory (default: `$RINGWAY_DIR`, else `/dev/shm/ringway`).
    pub dir: Option<PathBuf>,
    /// File holding the shared secret (enables packet authentication).
    pub key_file: Option<PathBuf>,
    /// Progress line interval (default 1 s; zero disables).
    pub progress: Option<Duration>,
    /// Diagnostic: drop this fraction of packets on send and on receive (UDP only).
    pub loss: Option<f64>,
    /// UDP: the replication thread never sleeps and receives with direct calls (see
    /// [`crate::io::UdpOptions::busy_poll`]): lowest latency, one core kept busy.
    pub busy_poll: bool,
    /// UDP: after activity the replication thread looks for new frames again within 10 µs,
    /// doubling its wait up to 200 µs ([`SenderConfig::idle_wait_start`]): lower latency for
    /// request/response traffic (synchronously replicated MQTT QoS 1), more wake-ups.
    pub idle_backoff: bool,
}

/// Arguments of `ringway receive --listen udp://ADDR:PORT|tcp://ADDR:PORT [--dir DIR] [--stream NAME]`.
#[derive(Debug, Clone, Default)]
pub struct ReceiveArgs {
    /// `udp://ADDR:PORT`, `tcp://ADDR:PORT`, or a multicast group to join
    /// `udp://GROUP:PORT[?interface=ADDR]`.
    pub listen: String,
    /// Root directory for replicas.
    pub dir: Option<PathBuf>,
    /// Replica name (default: the primary's name).
    pub stream: Option<String>,
    /// File holding the shared secret.
    pub key_file: Option<PathBuf>,
    /// Progress line interval (default 1 s; zero disables).
    pub progress: Option<Duration>,
    /// Diagnostic: drop this fraction of packets on send and on receive (UDP only).
    pub loss: Option<f64>,
    /// UDP: the replication thread never sleeps and receives with direct calls (see
    /// [`crate::io::UdpOptions::busy_poll`]): lowest latency, one core kept busy.
    pub busy_poll: bool,
}

fn key(path: &Option<PathBuf>) -> Result<Option<AuthKey>> {
    match path {
        None => Ok(None),
        Some(p) => {
            let bytes = std::fs::read(p)?;
            let secret = bytes.trim_ascii();
            if secret.is_empty() {
                return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("key file {} is empty", p.display()),
                )));
            }
            Ok(Some(AuthKey::new(secret)))
        }
    }
}

/// First idle wait of a sender with `idle_backoff`.
const IDLE_BACKOFF_START: Duration = Duration::from_micros(10);

/// The UDP sender settings `replicate` gives every destination: key, loss injection, busy-poll.
fn udp_sender_config(
    remote: SocketAddr,
    auth: Option<AuthKey>,
    args: &ReplicateArgs,
) -> Result<SenderConfig> {
    let mut cfg = SenderConfig::new(remote);
    cfg.auth = auth;
    cfg.loss = loss(args.loss, 1)?;
    if args.busy_poll {
        cfg.idle_wait = Duration::ZERO;
        cfg.udp.busy_poll = true;
    }
    if args.idle_backoff {
        cfg.idle_wait_start = IDLE_BACKOFF_START;
    }
    Ok(cfg)
}

fn loss(p: Option<f64>, seed: u64) -> Result<Option<LossConfig>> {
    match p {
        None => Ok(None),
        Some(p) if (0.0..=1.0).contains(&p) => Ok(Some(LossConfig {
            send: LossRates::drop_only(p),
            recv: LossRates::drop_only(p),
            seed,
        })),
        Some(p) => Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("loss fraction {p} outside 0..=1"),
        ))),
    }
}

fn run_with_progress(
    work: std::thread::JoinHandle<Result<()>>,
    stop: &AtomicBool,
    shutdown: &AtomicBool,
    interval: Duration,
    mut line: impl FnMut(f64) -> String,
    out: &mut dyn Write,
) -> Result<()> {
    let mut last = Instant::now();
    loop {
        // Relaxed: stop flags, ordering nothing.
        if shutdown.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
        }
        if work.is_finished() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
        if !interval.is_zero() && last.elapsed() >= interval {
            let dt = last.elapsed().as_secs_f64();
            last = Instant::now();
            let _ = writeln!(out, "{}", line(dt));
        }
    }
    work.join()
        .map_err(|_| Error::Journal("replication thread panicked".into()))?
}

fn sender_line(s: &SenderStats, prev: &AtomicU64, dt: f64) -> String {
    let acked = s.acked_position.load(Ordering::Relaxed);
    let tail = s
        .primary_tail
        .load(Ordering::Relaxed)
        .max(s.sent_position.load(Ordering::Relaxed));
    let before = prev.swap(acked, Ordering::Relaxed);
    format!(
        "position {acked} rate {:.1} MB/s lag {} bytes{}",
        (acked.saturating_sub(before)) as f64 / dt / 1e6,
        tail.saturating_sub(acked),
        if s.connected.load(Ordering::Relaxed) == 1 {
            ""
        } else {
            " (connecting)"
        }
    )
}

fn receiver_line(s: &ReceiverStats, prev: &AtomicU64, dt: f64) -> String {
    let frames = s.frames.load(Ordering::Relaxed);
    let before = prev.swap(frames, Ordering::Relaxed);
    let pos = s.position.load(Ordering::Relaxed);
    format!(
        "position {pos} rate {:.0} msg/s lag {} bytes sessions {}",
        (frames - before) as f64 / dt,
        s.highest.load(Ordering::Relaxed).saturating_sub(pos),
        s.sessions.load(Ordering::Relaxed)
    )
}

/// `ringway replicate`: ships `args.stream` to the receiver until `shutdown`.
pub fn replicate(
    args: &ReplicateArgs,
    shutdown: Arc<AtomicBool>,
    out: &mut dyn Write,
) -> Result<()> {
    let root = args.dir.clone().unwrap_or_else(ringway_core::default_root);
    let source = Box::new(CoreSource::open(&root, &args.stream)?);
    let endpoint = Endpoint::parse(&args.to)?;
    let auth = key(&args.key_file)?;
    let interval = args.progress.unwrap_or(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let prev = AtomicU64::new(0);
    match endpoint {
        Endpoint::Udp(addr) => {
            let cfg = udp_sender_config(addr, auth, args)?;
            let mut s = UdpSender::new(source, cfg)?;
            let _ = writeln!(
                out,
                "replicating '{}' to udp://{addr} ({:?} sockets)",
                args.stream,
                s.backend()
            );
            let stats = s.stats();
            let st = stop.clone();
            let h = std::thread::spawn(move || s.run(&st));
            run_with_progress(
                h,
                &stop,
                &shutdown,
                interval,
                |dt| sender_line(&stats, &prev, dt),
                out,
            )
        }
        Endpoint::Multicast(m) => {
            let mut cfg = udp_sender_config(SocketAddr::V4(m.group), auth, args)?;
            cfg.multicast = m.options;
            cfg.min_receivers = m.min_receivers;
            let mut s = UdpSender::new(source, cfg)?;
            let _ = writeln!(
                out,
                "replicating '{}' to multicast group udp://{} from {} ({:?} sockets, at least {} receivers)",
                args.stream,
                m.group,
                s.local_addr()?,
                s.backend(),
                m.min_receivers
            );
            let stats = s.stats();
            let st = stop.clone();
            let h = std::thread::spawn(move || s.run(&st));
            run_with_progress(
                h,
                &stop,
                &shutdown,
                interval,
                |dt| {
                    format!(
                        "{} receivers {}",
                        sender_line(&stats, &prev, dt),
                        stats.receivers.load(Ordering::Relaxed)
                    )
                },
                out,
            )
        }
        Endpoint::Tcp(addr) => {
            let mut cfg = TcpSenderConfig::new(addr);
            cfg.auth = auth;
            let mut s = TcpSender::new(source, cfg);
            let _ = writeln!(out, "replicating '{}' to tcp://{addr}", args.stream);
            let stats = s.stats();
            let st = stop.clone();
            let h = std::thread::spawn(move || s.run(&st));
            run_with_progress(
                h,
                &stop,
                &shutdown,
                interval,
                |dt| sender_line(&stats, &prev, dt),
                out,
            )
        }
    }
}

/// `ringway receive`: writes replicas under `args.dir` until `shutdown`.
pub fn receive(args: &ReceiveArgs, shutdown: Arc<AtomicBool>, out: &mut dyn Write) -> Result<()> {
    let root = args.dir.clone().unwrap_or_else(ringway_core::default_root);
    std::fs::create_dir_all(&root)?;
    let store = Box::new(CoreStore::new(&root, args.stream.clone()));
    let endpoint = Endpoint::parse(&args.listen)?;
    let auth = key(&args.key_file)?;
    let interval = args.progress.unwrap_or(Duration::from_secs(1));
    let stop = Arc::new(AtomicBool::new(false));
    let prev = AtomicU64::new(0);
    let udp = match endpoint {
        Endpoint::Udp(addr) => Ok((addr, None)),
        Endpoint::Multicast(m) => {
            if m.options.ttl != 1 || !m.options.loopback || m.min_receivers != 1 {
                // ttl, loop and min-receivers are the sender's.
                return Err(Error::Endpoint(args.listen.clone()));
            }
            Ok((SocketAddr::V4(m.group), Some(m.options)))
        }
        Endpoint::Tcp(addr) => Err(addr),
    };
    match udp {
        Ok((addr, group)) => {
            let mut cfg = ReceiverConfig::new(addr);
            cfg.auth = auth;
            cfg.loss = loss(args.loss, 2)?;
            if args.busy_poll {
                cfg.idle_wait = Duration::ZERO;
                cfg.udp.busy_poll = true;
            }
            if let Some(options) = group {
                cfg.multicast = options;
            }
            let mut r = UdpReceiver::new(store, cfg)?;
            let _ = writeln!(
                out,
                "listening on udp://{} ({:?} sockets), replicas in {}",
                r.local_addr()?,
                r.backend(),
                root.display()
            );
            let stats = r.stats();
            let st = stop.clone();
            let h = std::thread::spawn(move || r.run(&st));
            run_with_progress(
                h,
                &stop,
                &shutdown,
                interval,
                |dt| receiver_line(&stats, &prev, dt),
                out,
            )
        }
        Err(addr) => {
            let mut cfg = TcpReceiverConfig::new(addr);
            cfg.auth = auth;
            let mut r = TcpReceiver::new(store, cfg)?;
            let _ = writeln!(
                out,
                "listening on tcp://{}, replicas in {}",
                r.local_addr()?,
                root.display()
            );
            let stats = r.stats();
            let st = stop.clone();
            let h = std::thread::spawn(move || r.run(&st));
            run_with_progress(
                h,
                &stop,
                &shutdown,
                interval,
                |dt| receiver_line(&stats, &prev, dt),
                out,
            )
        }
    }
}
