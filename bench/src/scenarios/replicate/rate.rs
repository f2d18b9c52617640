//! Replication rates of 64-byte messages over UDP loopback, each checked frame by frame afterwards.
//!
//! - live: a writer thread appends the messages as fast as it can while the sender (pinned to core A) and the
//!   receiver (pinned to core B) run; the rate counts from the first append to the replica holding the primary's
//!   tail. Optionally with injected loss (dropped datagrams, both directions).
//! - catch-up: replication runs, the receiver is stopped (its socket closed), the messages are appended, and a new
//!   receiver starts on the same port and replica directory; the rate counts from its start to the replica holding
//!   the tail, so it includes the sender noticing the new receiver (its next heartbeat is answered with
//!   UnknownSession) and setting the session up again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_core::{Start, Stream, StreamConfig};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::loss::{LossConfig, LossRates};
use ringway_transport::udp::{
    ReceiverConfig, ReceiverStats, SenderConfig, SenderStats, UdpReceiver, UdpSender,
};

use crate::pinning::{pin_current, PinRecord};

/// Payload bytes of every message.
pub const PAYLOAD: usize = 64;
const NAME: &str = "rate";

/// What a rate measurement needs.
#[derive(Clone)]
pub struct RatePlan {
    /// Messages appended (and replicated) in the timed part.
    pub messages: u64,
    /// MTU of the sender.
    pub mtu: usize,
    /// Longest wait for the replica to catch up.
    pub timeout: Duration,
    /// Core of the sender.
    pub core_a: Option<usize>,
    /// Core of the receiver.
    pub core_b: Option<usize>,
}

/// A measured rate.
pub struct Rate {
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Messages timed.
    pub messages: u64,
    /// Counters of the run, for a note.
    pub detail: String,
    /// Pinning of the sender and receiver threads.
    pub pins: Vec<PinRecord>,
}

type Res<T> = std::result::Result<T, String>;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn loss_config(drop: f64) -> Option<LossConfig> {
    (drop > 0.0).then_some(LossConfig {
        send: LossRates::drop_only(drop),
        recv: LossRates::default(),
        seed: 0x5ca1ab1e,
    })
}

/// A thread running a receiver or a sender loop until its flag is set.
struct Agent<S> {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Res<PinRecord>>,
    stats: Arc<S>,
}

impl<S> Agent<S> {
    fn finish(self) -> Res<PinRecord> {
        // Relaxed: a stop flag; the join below orders everything the thread did.
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .join()
            .map_err(|_| "replication thread panicked".to_string())?
    }
}

fn start_receiver(
    rroot: &Path,
    listen: SocketAddr,
    drop: f64,
    core: Option<usize>,
) -> Res<(Agent<ReceiverStats>, SocketAddr)> {
    let mut rc = ReceiverConfig::new(listen);
    rc.loss = loss_config(drop);
    let mut r = UdpReceiver::new(Box::new(CoreStore::new(rroot, None)), rc).map_err(text)?;
    let addr = r.local_addr().map_err(text)?;
    let stats = r.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let pin = pin_current("replication-receiver", core);
        r.run(&s).map_err(text)?;
        Ok(pin)
    });
    Ok((
        Agent {
            stop,
            handle,
            stats,
        },
        addr,
    ))
}

fn start_sender(
    primary: &Stream,
    to: SocketAddr,
    plan: &RatePlan,
    drop: f64,
) -> Res<Agent<SenderStats>> {
    let mut sc = SenderConfig::new(to);
    sc.loss = loss_config(drop);
    sc.mtu = plan.mtu;
    let mut s = UdpSender::new(Box::new(CoreSource::new(primary.clone())), sc).map_err(text)?;
    let stats = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let core = plan.core_a;
    let handle = std::thread::spawn(move || {
        let pin = pin_current("replication-sender", core);
        s.run(&st).map_err(text)?;
        Ok(pin)
    });
    Ok(Agent {
        stop,
        handle,
        stats,
    })
}

/// Primary and replica roots under `dir`, and the primary stream (append-only, 64 MiB segments, holds the run).
pub(super) fn streams(dir: &Path) -> Res<(Stream, PathBuf)> {
    let (proot, rroot) = (dir.join("primary"), dir.join("replica"));
    for d in [&proot, &rroot] {
        std::fs::create_dir_all(d).map_err(text)?;
    }
    let primary = Stream::create(
        &proot,
        NAME,
        &StreamConfig::default().segment_size(64 << 20),
    )
    .map_err(text)?;
    Ok((primary, rroot))
}

pub(super) fn append(primary: &Stream, n: u64) -> Res<()> {
    let mut w = primary.writer().map_err(text)?;
    let mut msg = [0u8; PAYLOAD];
    for i in 0..n {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        w.append(&msg).map_err(text)?;
    }
    Ok(())
}

/// Waits until the receiver's replica position reaches `end`.
pub(super) fn wait_replicated(stats: &ReceiverStats, end: u64, timeout: Duration) -> Res<()> {
    let t0 = Instant::now();
    // Relaxed: a statistic written by the receiver thread; only its value is needed here.
    while stats.position.load(Ordering::Relaxed) < end {
        if t0.elapsed() > timeout {
            return Err(format!(
                "replica at {} of {end} after {timeout:?}",
                stats.position.load(Ordering::Relaxed)
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

/// Compares every frame of the replica with the primary up to `end`: same positions, same bytes.
pub(super) fn verify(primary: &Stream, rroot: &Path, end: u64) -> Res<()> {
    let replica = Stream::open(rroot, NAME).map_err(text)?;
    let mut a = primary.reader(Start::Beginning).map_err(text)?;
    let mut b = replica.reader(Start::Beginning).map_err(text)?;
    loop {
        let (fa, fb) = (a.next_raw().map_err(text)?, b.next_raw().map_err(text)?);
        match (fa, fb) {
            (Some(x), Some(y)) => {
                if x.position() != y.position() || x.raw() != y.raw() {
                    return Err(format!("replica differs at {}", x.position().0));
                }
                if x.next_position().0 >= end {
                    return Ok(());
                }
            }
            (x, y) => {
                return Err(format!(
                    "replica ended early (primary frame: {}, replica frame: {})",
                    x.is_some(),
                    y.is_some()
                ))
            }
        }
    }
}

fn detail(s: &SenderStats, r: &ReceiverStats) -> String {
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    format!(
        "{} DATA packets, {} retransmitted, {} NAK packets, {} duplicate frames, {} sessions",
        l(&s.data_packets),
        l(&s.retransmit_packets),
        l(&r.naks),
        l(&r.duplicates),
        l(&s.sessions)
    )
}

/// Stops both agents, checks the replica and turns the timed span `res` into a rate.
fn conclude(
    primary: &Stream,
    rroot: &Path,
    plan: &RatePlan,
    sender: Agent<SenderStats>,
    receiver: Agent<ReceiverStats>,
    res: Res<Duration>,
) -> Res<Rate> {
    let detail = detail(&sender.stats, &receiver.stats);
    let pins = vec![sender.finish()?, receiver.finish()?];
    let dt = res?;
    verify(primary, rroot, primary.tail().0)?;
    Ok(Rate {
        msgs_per_sec: plan.messages as f64 / dt.as_secs_f64(),
        messages: plan.messages,
        detail,
        pins,
    })
}

/// Sustained replication while a writer appends, with `drop` of the datagrams lost in each direction.
pub fn live(dir: &Path, plan: &RatePlan, drop: f64) -> Res<Rate> {
    let (primary, rroot) = streams(dir)?;
    let (receiver, addr) = start_receiver(
        &rroot,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        drop,
        plan.core_b,
    )?;
    let sender = start_sender(&primary, addr, plan, drop)?;
    let t0 = Instant::now();
    let writer = {
        let p = primary.clone();
        let n = plan.messages;
        std::thread::spawn(move || append(&p, n))
    };
    let written = writer
        .join()
        .map_err(|_| "writer thread panicked".to_string())?;
    let res = written.and_then(|_| {
        wait_replicated(&receiver.stats, primary.tail().0, plan.timeout)?;
        Ok(t0.elapsed())
    });
    conclude(&primary, &rroot, plan, sender, receiver, res)
}

/// Catch-up of a receiver that was down while `plan.messages` were appended.
pub fn catch_up(dir: &Path, plan: &RatePlan) -> Res<Rate> {
    let (primary, rroot) = streams(dir)?;
    let (first, addr) = start_receiver(
        &rroot,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        0.0,
        plan.core_b,
    )?;
    let sender = start_sender(&primary, addr, plan, 0.0)?;
    // Some replication before the outage, so the receiver resumes from a position of its own.
    append(&primary, (plan.messages / 10).max(1))?;
    wait_replicated(&first.stats, primary.tail().0, plan.timeout)?;
    first.finish()?;
    append(&primary, plan.messages)?;
    // The sender notices nothing yet: its heartbeats go to a closed port.
    std::thread::sleep(Duration::from_millis(50));
    let t0 = Instant::now();
    let (second, _) = start_receiver(&rroot, addr, 0.0, plan.core_b)?;
    let res = wait_replicated(&second.stats, primary.tail().0, plan.timeout).map(|_| t0.elapsed());
    conclude(&primary, &rroot, plan, sender, second, res)
}
