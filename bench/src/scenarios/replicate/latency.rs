//! One-way latency with one message in flight, plain UDP next to replication.
//!
//! Both measurements use two threads pinned to the two cores, busy-polling, and the same stamped payload: the
//! sending thread takes a TSC timestamp, hands the message on and spins until the receiving thread has recorded
//! it (an atomic counter), so every sample is one message crossing an idle path.
//!
//! - plain UDP: `send` on a connected non-blocking socket → `recv` busy-polled on a connected non-blocking socket.
//! - replication: `Writer::append` on the primary, then the same thread drives the `UdpSender` loop (the sender
//!   agent); the other thread drives the `UdpReceiver` loop (the receiver agent, writing the replica) and polls a
//!   ringway-core `Reader` of the replica between iterations. Two agents on two cores is the deployment this
//!   machine allows; with a separate writer and reader thread there would be four busy threads on two cores.
//!   Both agents busy-poll (`idle_wait` zero); the receiver does not coalesce receives (UDP_GRO off) and receives
//!   with direct calls in every iteration (`UdpOptions::busy_poll`), as the plain UDP receiver does.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use ringway_core::{Start, Stream, StreamConfig};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::udp::{ReceiverConfig, SenderConfig, UdpReceiver, UdpSender};

use crate::pinning::{pin_current, PinRecord};
use crate::spin::Spinner;
use crate::stats::{new_histogram, record};
use crate::systems::seq_of;
use crate::timer::Timer;

/// What one latency round needs.
#[derive(Clone)]
pub struct LatencyPlan {
    /// Payload bytes (at least 16: sequence number and send timestamp).
    pub payload: usize,
    /// Messages sent before recording.
    pub warmup: u64,
    /// Messages recorded.
    pub iterations: u64,
    /// Longest wait for the other side.
    pub timeout: Duration,
    /// The clock.
    pub timer: Timer,
    /// Core of the sending side.
    pub core_a: Option<usize>,
    /// Core of the receiving side.
    pub core_b: Option<usize>,
    /// MTU of the replication sender.
    pub mtu: usize,
}

/// A measured round: the samples and the pinning outcomes.
pub struct Measured {
    /// Receive time minus send time, ns.
    pub histogram: Histogram<u64>,
    /// Pinning of both threads.
    pub pins: Vec<PinRecord>,
    /// Socket backend (replication) or a description of the sockets (plain UDP).
    pub backend: String,
}

type Res<T> = std::result::Result<T, String>;

pub(super) fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Writes the sequence number and the send timestamp into the first 16 bytes.
pub(super) fn stamp(buf: &mut [u8], seq: u64, ts: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..16].copy_from_slice(&ts.to_le_bytes());
}

/// The receiving side's bookkeeping: checks order, records after the warm-up, releases the next send.
pub(super) struct Recorder {
    pub(super) hist: Histogram<u64>,
    pub(super) next: u64,
    warmup: u64,
    timer: Timer,
    ack: Arc<AtomicU64>,
}

impl Recorder {
    pub(super) fn new(plan: &LatencyPlan, ack: Arc<AtomicU64>) -> Self {
        Recorder {
            hist: new_histogram(),
            next: 0,
            warmup: plan.warmup,
            timer: plan.timer.clone(),
            ack,
        }
    }

    /// One received payload, read at `now`.
    pub(super) fn on_message(&mut self, payload: &[u8], now: u64) -> Res<()> {
        if payload.len() < 16 {
            return Err(format!("message of {} bytes", payload.len()));
        }
        let seq = seq_of(&payload[..8]);
        if seq != self.next {
            return Err(format!("message {seq} arrived, expected {}", self.next));
        }
        if seq >= self.warmup {
            let sent = seq_of(&payload[8..16]);
            record(&mut self.hist, self.timer.nanos_between(sent, now)).map_err(text)?;
        }
        self.next += 1;
        // Relaxed: the counter carries only itself; the sender reads nothing else the recorder wrote.
        self.ack.store(self.next, Ordering::Relaxed);
        Ok(())
    }
}

/// Spins until the receiving side has recorded `count` messages, calling `step` in between.
pub(super) fn wait_ack(
    ack: &AtomicU64,
    count: u64,
    timeout: Duration,
    mut step: impl FnMut() -> Res<()>,
) -> Res<()> {
    let mut spin = Spinner::new(timeout);
    // Relaxed: see `Recorder::on_message`.
    while ack.load(Ordering::Relaxed) < count {
        step()?;
        spin.spin("the receiving side").map_err(text)?;
    }
    Ok(())
}

pub(super) fn join<T>(h: std::thread::JoinHandle<Res<T>>, what: &str) -> Res<T> {
    h.join().map_err(|_| format!("{what} thread panicked"))?
}

/// Plain UDP one-way over loopback.
pub fn plain_udp(plan: &LatencyPlan) -> Res<Measured> {
    let rx = UdpSocket::bind("127.0.0.1:0").map_err(text)?;
    let tx = UdpSocket::bind("127.0.0.1:0").map_err(text)?;
    rx.connect(tx.local_addr().map_err(text)?).map_err(text)?;
    tx.connect(rx.local_addr().map_err(text)?).map_err(text)?;
    rx.set_nonblocking(true).map_err(text)?;
    tx.set_nonblocking(true).map_err(text)?;
    let total = plan.warmup + plan.iterations;
    let ack = Arc::new(AtomicU64::new(0));
    let p = plan.clone();
    let a = ack.clone();
    let receiver = std::thread::spawn(move || -> Res<(Histogram<u64>, PinRecord)> {
        let pin = pin_current("udp-receiver", p.core_b);
        let mut rec = Recorder::new(&p, a);
        let mut buf = vec![0u8; p.payload + 1];
        let mut spin = Spinner::new(p.timeout);
        while rec.next < total {
            match rx.recv(&mut buf) {
                Ok(n) => {
                    let now = p.timer.raw();
                    if n != p.payload {
                        return Err(format!("datagram of {n} bytes"));
                    }
                    rec.on_message(&buf[..n], now)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    spin.spin("a datagram").map_err(text)?
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok((rec.hist, pin))
    });
    let pin = pin_current("udp-sender", plan.core_a);
    let mut buf = vec![0u8; plan.payload];
    let sent = (|| -> Res<()> {
        for i in 0..total {
            stamp(&mut buf, i, plan.timer.raw());
            tx.send(&buf).map_err(text)?;
            wait_ack(&ack, i + 1, plan.timeout, || Ok(()))?;
        }
        Ok(())
    })();
    let (histogram, rpin) = join(receiver, "udp receiver")?;
    sent?;
    Ok(Measured {
        histogram,
        pins: vec![pin, rpin],
        backend: "connected non-blocking sockets, send/recv".into(),
    })
}

/// Replication one-way: primary writer → sender agent → UDP loopback → receiver agent → replica reader.
pub fn replication(plan: &LatencyPlan, dir: &Path) -> Res<Measured> {
    let (proot, rroot) = (dir.join("primary"), dir.join("replica"));
    for d in [&proot, &rroot] {
        std::fs::create_dir_all(d).map_err(text)?;
    }
    const NAME: &str = "latency";
    let primary = Stream::create(
        &proot,
        NAME,
        &StreamConfig::default().segment_size(16 << 20),
    )
    .map_err(text)?;
    let mut rc = ReceiverConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    rc.idle_wait = Duration::ZERO;
    // Latency-tuned receiver: no receive coalescing (it adds a few hundred ns per datagram when
    // datagrams arrive one at a time), and busy-poll receive (direct receive calls in every
    // iteration instead of the multishot receive's wake-up path; see `UdpOptions::busy_poll`).
    rc.udp.coalesce_receive = false;
    rc.udp.busy_poll = true;
    let mut receiver =
        UdpReceiver::new(Box::new(CoreStore::new(&rroot, None)), rc).map_err(text)?;
    let mut sc = SenderConfig::new(receiver.local_addr().map_err(text)?);
    sc.idle_wait = Duration::ZERO;
    sc.mtu = plan.mtu;
    let mut sender =
        UdpSender::new(Box::new(CoreSource::new(primary.clone())), sc).map_err(text)?;
    let backend = format!("{:?}", sender.backend());
    let total = plan.warmup + plan.iterations;
    let ack = Arc::new(AtomicU64::new(0));
    let p = plan.clone();
    let a = ack.clone();
    let rdir: PathBuf = rroot.clone();
    let agent = std::thread::spawn(move || -> Res<(Histogram<u64>, PinRecord)> {
        let pin = pin_current("receiver-agent+replica-reader", p.core_b);
        let mut rec = Recorder::new(&p, a);
        let mut replica: Option<(Stream, ringway_core::Reader)> = None;
        let mut spin = Spinner::new(p.timeout);
        while rec.next < total {
            receiver.step().map_err(text)?;
            if replica.is_none() && receiver.position_of(NAME).is_some() {
                let s = Stream::open(&rdir, NAME).map_err(text)?;
                let r = s.reader(Start::Beginning).map_err(text)?;
                replica = Some((s, r));
            }
            let Some((_, reader)) = replica.as_mut() else {
                spin.spin("the replication session").map_err(text)?;
                continue;
            };
            let mut res = Ok(());
            let n = reader
                .poll(16, |f| {
                    let now = p.timer.raw();
                    if res.is_ok() {
                        res = rec.on_message(f.payload(), now);
                    }
                })
                .map_err(text)?;
            res?;
            if n == 0 {
                spin.spin("replicated messages").map_err(text)?;
            }
        }
        Ok((rec.hist, pin))
    });
    let pin = pin_current("writer+sender-agent", plan.core_a);
    let sent = (|| -> Res<()> {
        let mut writer = primary.writer().map_err(text)?;
        let stats = sender.stats();
        let mut spin = Spinner::new(plan.timeout);
        // Relaxed: a statistic, read to know the session is up; nothing else is ordered by it.
        while stats.connected.load(Ordering::Relaxed) == 0 {
            sender.step().map_err(text)?;
            spin.spin("the replication session").map_err(text)?;
        }
        let mut buf = vec![0u8; plan.payload];
        for i in 0..total {
            stamp(&mut buf, i, plan.timer.raw());
            writer.append(&buf).map_err(text)?;
            wait_ack(&ack, i + 1, plan.timeout, || sender.step().map_err(text))?;
        }
        sender.close().map_err(text)
    })();
    let (histogram, rpin) = join(agent, "receiver agent")?;
    sent?;
    Ok(Measured {
        histogram,
        pins: vec![pin, rpin],
        backend,
    })
}
