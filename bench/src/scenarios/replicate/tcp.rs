//! Replication over TCP loopback (`ringway_transport::tcp`), measured as the UDP rows are, on a given socket
//! backend (io_uring or plain sockets):
//!
//! - one-way latency with one message in flight: `Writer::append`, then the same thread steps the `TcpSender`
//!   (busy-polling) until the other thread, which steps the `TcpReceiver` and polls a Reader of the replica, has
//!   recorded the message;
//! - the sustained rate of 64-byte messages with a live writer, sender and receiver on threads of their own
//!   (default waits), ending with a frame-by-frame comparison of replica and primary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringway_core::{Start, Stream, StreamConfig};
use ringway_transport::io::{Backend, IoCounters};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::tcp::{TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig};
use ringway_transport::udp::ReceiverStats;

use super::latency::{join, stamp, text, wait_ack, LatencyPlan, Measured, Recorder};
use super::rate::{append, streams, verify, wait_replicated, Rate, RatePlan};
use crate::pinning::{pin_current, PinRecord};
use crate::spin::Spinner;

type Res<T> = std::result::Result<T, String>;

fn receiver(rroot: &Path, backend: Backend, idle_wait: Option<Duration>) -> Res<TcpReceiver> {
    let mut rc = TcpReceiverConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)));
    rc.backend = backend;
    if let Some(w) = idle_wait {
        rc.idle_wait = w;
    }
    TcpReceiver::new(Box::new(CoreStore::new(rroot, None)), rc).map_err(text)
}

fn sender(
    primary: &Stream,
    to: SocketAddr,
    backend: Backend,
    idle_wait: Option<Duration>,
) -> TcpSender {
    let mut sc = TcpSenderConfig::new(to);
    sc.backend = backend;
    if let Some(w) = idle_wait {
        sc.idle_wait = w;
    }
    TcpSender::new(Box::new(CoreSource::new(primary.clone())), sc)
}

/// TCP one-way: primary writer → sender (stepped by the writer's thread) → TCP loopback → receiver (stepped by
/// the reader's thread) → replica reader. Both sides busy-poll (`idle_wait` zero).
pub fn latency(plan: &LatencyPlan, dir: &Path, backend: Backend) -> Res<Measured> {
    const NAME: &str = "latency";
    let (proot, rroot) = (dir.join("primary"), dir.join("replica"));
    for d in [&proot, &rroot] {
        std::fs::create_dir_all(d).map_err(text)?;
    }
    let primary = Stream::create(
        &proot,
        NAME,
        &StreamConfig::default().segment_size(16 << 20),
    )
    .map_err(text)?;
    let mut receiver = receiver(&rroot, backend, Some(Duration::ZERO))?;
    let mut sender = sender(
        &primary,
        receiver.local_addr().map_err(text)?,
        backend,
        Some(Duration::ZERO),
    );
    let used = format!("{:?}", sender.backend());
    let total = plan.warmup + plan.iterations;
    let ack = Arc::new(AtomicU64::new(0));
    let p = plan.clone();
    let a = ack.clone();
    let rdir: PathBuf = rroot.clone();
    let rstats = receiver.stats();
    let agent = std::thread::spawn(move || -> Res<(Histogram<u64>, PinRecord)> {
        let pin = pin_current("tcp-receiver+replica-reader", p.core_b);
        let mut rec = Recorder::new(&p, a);
        let mut replica: Option<(Stream, ringway_core::Reader)> = None;
        let mut spin = Spinner::new(p.timeout);
        while rec.next < total {
            receiver.step().map_err(text)?;
            // Relaxed: a statistic; the replica exists once a session was set up (it is opened before the count).
            if replica.is_none() && rstats.sessions.load(Ordering::Relaxed) > 0 {
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
    let pin = pin_current("tcp-writer+sender", plan.core_a);
    let sent = (|| -> Res<()> {
        let mut writer = primary.writer().map_err(text)?;
        let mut spin = Spinner::new(plan.timeout);
        while !sender.is_connected() {
            sender.step().map_err(text)?;
            spin.spin("the TCP connection").map_err(text)?;
        }
        let mut buf = vec![0u8; plan.payload];
        for i in 0..total {
            stamp(&mut buf, i, plan.timer.raw());
            writer.append(&buf).map_err(text)?;
            wait_ack(&ack, i + 1, plan.timeout, || sender.step().map_err(text))?;
        }
        sender.close().map_err(text)
    })();
    let (histogram, rpin) = join(agent, "TCP receiver")?;
    sent?;
    Ok(Measured {
        histogram,
        pins: vec![pin, rpin],
        backend: used,
    })
}

/// A thread running a sender or receiver loop until its flag is set; returns its pinning and I/O counters.
struct Agent {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Res<(PinRecord, IoCounters)>>,
}

impl Agent {
    fn finish(self) -> Res<(PinRecord, IoCounters)> {
        // Relaxed: a stop flag; the join orders everything the thread did.
        self.stop.store(true, Ordering::Relaxed);
        join(self.handle, "TCP replication")
    }
}

/// Sustained TCP replication of `plan.messages` 64-byte messages while a writer appends them.
pub fn live(dir: &Path, plan: &RatePlan, backend: Backend) -> Res<Rate> {
    let (primary, rroot) = streams(dir)?;
    let mut r = receiver(&rroot, backend, None)?;
    let rstats: Arc<ReceiverStats> = r.stats();
    let mut s = sender(&primary, r.local_addr().map_err(text)?, backend, None);
    let sstats = s.stats();
    let (rstop, sstop) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (rs, ss) = (rstop.clone(), sstop.clone());
    let (core_a, core_b) = (plan.core_a, plan.core_b);
    let rx = Agent {
        stop: rstop,
        handle: std::thread::spawn(move || {
            let pin = pin_current("tcp-receiver", core_b);
            r.run(&rs).map_err(text)?;
            Ok((pin, r.io_counters()))
        }),
    };
    let tx = Agent {
        stop: sstop,
        handle: std::thread::spawn(move || {
            let pin = pin_current("tcp-sender", core_a);
            s.run(&ss).map_err(text)?;
            Ok((pin, s.io_counters()))
        }),
    };
    let t0 = Instant::now();
    let writer = {
        let p = primary.clone();
        let n = plan.messages;
        std::thread::spawn(move || append(&p, n))
    };
    let res = join(writer, "writer").and_then(|_| {
        wait_replicated(&rstats, primary.tail().0, plan.timeout)?;
        Ok(t0.elapsed())
    });
    let (spin, sio) = tx.finish()?;
    let (rpin, rio) = rx.finish()?;
    let dt = res?;
    verify(&primary, &rroot, primary.tail().0)?;
    // Relaxed: statistics, read after the threads were joined.
    let packets = sstats.data_packets.load(Ordering::Relaxed);
    Ok(Rate {
        msgs_per_sec: plan.messages as f64 / dt.as_secs_f64(),
        messages: plan.messages,
        detail: format!(
            "{backend:?}: {packets} DATA packets; sender {} system calls ({} sends), receiver {} system calls \
             ({} receive completions) for {} messages",
            sio.syscalls, sio.sent, rio.syscalls, rio.received, plan.messages
        ),
        pins: vec![spin, rpin],
    })
}
