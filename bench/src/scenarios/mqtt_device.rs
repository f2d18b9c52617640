//! The device path of the `mqtt` scenario: the real `ringway-firmware` session and outbox (its
//! `sim` module: embassy's std executor, one embassy-net stack per device on a TAP device in a
//! network namespace this run creates) against the Ringway gateway in this process, listening on
//! 192.0.2.1:1883 inside the namespace.
//!
//! 1. Readings/s one simulated device sustains into the journal: `Pace::Flood` (submit whenever
//!    the outbox has room, at most `WINDOW` QoS 1 publishes in flight); rate = readings
//!    acknowledged between the first PUBACK and the last / that time. PUBACK comes after the
//!    append, and the journal is checked afterwards to hold every reading once, in order.
//! 2. Latency, one reading at a time (a second device, `Pace::Gate`): from just before
//!    `Outbox::submit` on the device to (a) a host process reading the `&ArchivedTelemetry` in
//!    place from the journal (`telemetry` stream), (b) an MQTT subscriber (rumqttc, QoS 1,
//!    `devices/+/telemetry`) of the gateway. The next reading is submitted once both saw it.
//!
//! Needs root, `ip` and `/dev/net/tun`; otherwise the rows say `skipped: REASON`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringway_core::{Start, Stream};
use ringway_firmware::sim::{self, DeviceSpec, NetNs, Pace, SimOptions};
use ringway_firmware::wire::{access_telemetry, DeviceId, WireBuf, TELEMETRY_WIRE_SIZE};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::oneshot;

use crate::stats::{new_histogram, record};

/// Stream the telemetry route writes to.
const STREAM: &str = "telemetry";
/// Device of the throughput measurement.
const FLOOD_DEVICE: DeviceId = DeviceId(0xbe01);
/// Device of the latency measurement.
const GATED_DEVICE: DeviceId = DeviceId(0xbe02);
/// Bytes of one reading's payload (an archived `Telemetry` with two readings).
pub const READING_BYTES: usize = TELEMETRY_WIRE_SIZE;

/// What the device path measures.
pub struct DevicePlan {
    /// Readings of the throughput measurement.
    pub readings: u64,
    /// Recorded latency samples.
    pub samples: u64,
    /// Unrecorded readings before them (the first ones also wait for ARP and the connection).
    pub warmup: u64,
    /// Limit of every wait.
    pub timeout: Duration,
}

/// The device path's figures.
pub struct DeviceFigures {
    /// Readings/s one device sustained into the journal.
    pub rate: f64,
    /// Readings that rate counts.
    pub counted: u64,
    /// Device submit -> journal reader.
    pub to_journal: Histogram<u64>,
    /// Device submit -> MQTT subscriber.
    pub to_subscriber: Histogram<u64>,
}

type Res<T> = std::result::Result<T, String>;

/// Runs both measurements in a fresh namespace with the gateway's journal under `dir`.
pub fn measure(dir: &Path, plan: &DevicePlan) -> Res<DeviceFigures> {
    sim::check_environment().map_err(|e| e.to_string())?;
    let ns = NetNs::create("bench", 2).map_err(|e| e.to_string())?;
    let gateway = NsGateway::start(&ns, dir, plan.timeout)?;
    let result = (|| {
        let (rate, counted) = flood(&ns, dir, plan)?;
        let (to_journal, to_subscriber) = gated(&ns, dir, &gateway, plan)?;
        Ok(DeviceFigures {
            rate,
            counted,
            to_journal,
            to_subscriber,
        })
    })();
    gateway.stop();
    result
}

/// The gateway on a tokio runtime whose threads live in the namespace.
struct NsGateway {
    handle: tokio::runtime::Handle,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<std::result::Result<(), sim::SimError>>,
}

fn gateway_config(dir: &Path) -> Res<ringway_mqtt_gateway::Config> {
    let text = format!(
        r#"
[mqtt]
listen = ["192.0.2.1:1883"]

[storage]
dir = "{}"

[[route]]
filter = "devices/+/telemetry"
stream = "{STREAM}"
key_level = 1
payload_type = "telemetry"
"#,
        dir.display()
    );
    let mut config = ringway_mqtt_gateway::Config::from_toml(&text)
        .map_err(|e| format!("gateway config: {e}"))?;
    config.metrics.listen = None;
    Ok(config)
}

impl NsGateway {
    fn start(ns: &NetNs, dir: &Path, timeout: Duration) -> Res<NsGateway> {
        let config = gateway_config(dir)?;
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Res<tokio::runtime::Handle>>();
        let thread = ns
            .spawn_in(move || {
                // The workers are spawned from this thread, so they (and every socket their tasks
                // open) are in the namespace too.
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("tokio runtime: {e}")));
                        return;
                    }
                };
                let handle = rt.handle().clone();
                rt.block_on(async move {
                    match ringway_mqtt_gateway::Gateway::start(config).await {
                        Ok(gw) => {
                            let _ = ready_tx.send(Ok(handle));
                            let _ = stop_rx.await;
                            let _ = gw.shutdown().await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("gateway: {e}")));
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_millis(200));
            })
            .map_err(|e| e.to_string())?;
        let handle = ready_rx
            .recv_timeout(timeout)
            .map_err(|_| format!("gateway not started within {timeout:?}"))??;
        Ok(NsGateway {
            handle,
            stop,
            thread,
        })
    }

    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// Throughput of one flooding device: (readings/s, readings counted).
fn flood(ns: &NetNs, dir: &Path, plan: &DevicePlan) -> Res<(f64, u64)> {
    let n = plan.readings.max(2);
    let devices = sim::spawn_devices(
        ns,
        vec![DeviceSpec::new(FLOOD_DEVICE, n, Pace::Flood)],
        &SimOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let outbox = devices[0].outbox;
    let deadline = Instant::now() + plan.timeout * 4;
    let (t0, acked0) = loop {
        let s = outbox.stats();
        if s.acked >= 1 {
            break (Instant::now(), s.acked);
        }
        if Instant::now() > deadline {
            return Err(format!("flooding device: no PUBACK: {s:?}"));
        }
        std::thread::sleep(Duration::from_micros(100));
    };
    loop {
        let s = outbox.stats();
        if s.acked + s.dropped >= n {
            if s.dropped > 0 {
                return Err(format!("flooding device dropped readings: {s:?}"));
            }
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "flooding device: not all readings acknowledged: {s:?}"
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    let elapsed = t0.elapsed();
    // Acknowledged means appended: the journal must hold 0..n once each, in order.
    let seqs = journal_seqs(dir, FLOOD_DEVICE)?;
    if !seqs.iter().copied().eq(0..n) {
        return Err(format!(
            "journal holds {} readings of the flooding device, not 0..{n} in order",
            seqs.len()
        ));
    }
    let counted = n - acked0;
    Ok((counted as f64 / elapsed.as_secs_f64(), counted))
}

/// Sequence numbers of `device`'s readings in the journal, validated in place.
fn journal_seqs(dir: &Path, device: DeviceId) -> Res<Vec<u64>> {
    let stream = Stream::open(dir, STREAM).map_err(|e| format!("stream {STREAM}: {e}"))?;
    let mut reader = stream
        .reader(Start::Beginning)
        .map_err(|e| format!("reader: {e}"))?;
    let mut seqs = Vec::new();
    let mut bad = 0usize;
    while reader
        .poll(4096, |f| match access_telemetry(f.payload()) {
            Ok(t) if t.device_id() == device.0 => seqs.push(t.seq()),
            Ok(_) => {}
            Err(_) => bad += 1,
        })
        .map_err(|e| format!("reading the journal: {e}"))?
        > 0
    {}
    if bad > 0 {
        return Err(format!("{bad} frames in {STREAM} are not valid telemetry"));
    }
    Ok(seqs)
}

/// Latency of a gated device to the journal reader and to an MQTT subscriber.
fn gated(
    ns: &NetNs,
    dir: &Path,
    gateway: &NsGateway,
    plan: &DevicePlan,
) -> Res<(Histogram<u64>, Histogram<u64>)> {
    let warmup = plan.warmup.max(10);
    let total = warmup + plan.samples;
    let submitted: Arc<Mutex<Vec<Instant>>> =
        Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let journal_seen = Arc::new(AtomicU64::new(0));
    let sub_seen = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));

    let (sub_ready_tx, sub_ready_rx) = std::sync::mpsc::channel::<Res<()>>();
    let subscriber = gateway.handle.spawn(subscriber(
        Receiver {
            seen: sub_seen.clone(),
            submitted: submitted.clone(),
            total,
            warmup,
            stop: stop.clone(),
        },
        sub_ready_tx,
        plan.timeout,
    ));
    sub_ready_rx
        .recv_timeout(plan.timeout)
        .map_err(|_| "subscriber not ready".to_string())??;

    // Positioned at the end before the device starts: every reading of the gated device follows.
    let stream = Stream::open(dir, STREAM).map_err(|e| format!("stream {STREAM}: {e}"))?;
    let reader = stream
        .reader(Start::End)
        .map_err(|e| format!("reader: {e}"))?;
    let journal = {
        let rx = Receiver {
            seen: journal_seen.clone(),
            submitted: submitted.clone(),
            total,
            warmup,
            stop: stop.clone(),
        };
        std::thread::spawn(move || journal_reader(reader, rx))
    };

    let mut spec = DeviceSpec::new(
        GATED_DEVICE,
        total,
        Pace::Gate(vec![journal_seen.clone(), sub_seen.clone()]),
    );
    spec.submit_log = Some(submitted.clone());
    let options = SimOptions {
        first_tap: 1,
        ..SimOptions::default()
    };
    let spawned = sim::spawn_devices(ns, vec![spec], &options).map_err(|e| e.to_string());
    let waited = spawned.and_then(|_| {
        let deadline = Instant::now() + plan.timeout * 4;
        // Acquire: pairs with the receivers' Release stores (only counts are read).
        while journal_seen.load(Ordering::Acquire) < total
            || sub_seen.load(Ordering::Acquire) < total
        {
            if Instant::now() > deadline {
                return Err(format!(
                    "gated device: {} of {total} readings in the journal, {} at the subscriber",
                    journal_seen.load(Ordering::Acquire),
                    sub_seen.load(Ordering::Acquire)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    });
    // Relaxed: the flag only ends the receivers' loops; their results come back through join.
    stop.store(true, Ordering::Relaxed);
    let to_journal = journal
        .join()
        .map_err(|_| "journal reader panicked".to_string())?;
    let to_subscriber = gateway
        .handle
        .block_on(subscriber)
        .map_err(|e| format!("subscriber task: {e}"))?;
    waited?;
    Ok((to_journal?, to_subscriber?))
}

/// What a receiver of the gated device's readings shares with the run.
struct Receiver {
    /// Readings seen (the device's gate).
    seen: Arc<AtomicU64>,
    /// Submit time of every reading, by sequence number.
    submitted: Arc<Mutex<Vec<Instant>>>,
    total: u64,
    warmup: u64,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Records reading `seq` received at `now`; returns whether all readings arrived.
    fn on_reading(&self, hist: &mut Histogram<u64>, seq: u64, now: Instant) -> Res<bool> {
        let sent = self
            .submitted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(seq as usize)
            .copied()
            .ok_or_else(|| format!("reading {seq} received before it was submitted"))?;
        // Acquire/Release: see `gated`.
        let expected = self.seen.load(Ordering::Acquire);
        if seq != expected {
            return Err(format!("reading {seq} received, {expected} expected"));
        }
        if seq >= self.warmup {
            record(hist, now.duration_since(sent).as_nanos() as u64).map_err(|e| e.to_string())?;
        }
        // Release: the device's gate (see `Pace::Gate`).
        self.seen.store(seq + 1, Ordering::Release);
        Ok(seq + 1 == self.total)
    }
}

/// A host process reading the gated device's readings in place from the journal, blocking in
/// `Reader::wait` between frames (a busy spin would take one of this machine's two cores from
/// the device, the gateway and the subscriber).
fn journal_reader(mut reader: ringway_core::Reader, rx: Receiver) -> Res<Histogram<u64>> {
    let mut hist = new_histogram();
    loop {
        // Relaxed: see `gated`.
        if rx.stop.load(Ordering::Relaxed) {
            return Err("stopped before every reading arrived".into());
        }
        reader
            .wait(Duration::from_millis(50))
            .map_err(|e| format!("journal reader: {e}"))?;
        let mut got = None;
        reader
            .poll(1, |f| {
                let now = Instant::now();
                got = Some((
                    access_telemetry(f.payload()).map(|t| (t.device_id(), t.seq())),
                    now,
                ));
            })
            .map_err(|e| format!("journal reader: {e}"))?;
        let done = match got {
            Some((Ok((device, seq)), now)) if device == GATED_DEVICE.0 => {
                rx.on_reading(&mut hist, seq, now)?
            }
            Some((Err(e), _)) => return Err(format!("invalid telemetry in the journal: {e:?}")),
            Some((Ok(_), _)) | None => false,
        };
        if done {
            return Ok(hist);
        }
    }
}

/// An MQTT subscriber of `devices/+/telemetry` (QoS 1) in the namespace.
async fn subscriber(
    rx: Receiver,
    ready: std::sync::mpsc::Sender<Res<()>>,
    timeout: Duration,
) -> Res<Histogram<u64>> {
    let [a, b, c, d] = sim::HOST_IP;
    let mut o = MqttOptions::new("bench-device-subscriber", format!("{a}.{b}.{c}.{d}"), 1883);
    o.set_keep_alive(Duration::from_secs(60));
    let (client, mut el) = AsyncClient::new(o, 16);
    let subscribed = async {
        client
            .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
            .await
            .map_err(|e| format!("subscribe: {e}"))?;
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(format!("subscriber: {e}")),
            }
        }
    };
    let subscribed = tokio::time::timeout(timeout, subscribed)
        .await
        .unwrap_or_else(|_| Err("no SUBACK".into()));
    let failed = subscribed.is_err();
    let _ = ready.send(subscribed);
    if failed {
        return Err("subscriber not ready".into());
    }
    let mut hist = new_histogram();
    loop {
        // Relaxed: see `gated`.
        if rx.stop.load(Ordering::Relaxed) {
            return Err("stopped before every reading arrived".into());
        }
        let event = match tokio::time::timeout(Duration::from_millis(50), el.poll()).await {
            Ok(e) => e.map_err(|e| format!("subscriber: {e}"))?,
            Err(_) => continue,
        };
        if let Event::Incoming(Packet::Publish(p)) = event {
            let now = Instant::now();
            let mut buf = WireBuf::<TELEMETRY_WIRE_SIZE>::new();
            let t = buf
                .load(&p.payload)
                .ok()
                .and_then(|b| access_telemetry(b).ok())
                .ok_or_else(|| format!("subscriber: invalid telemetry on {}", p.topic))?;
            if t.device_id() == GATED_DEVICE.0 && rx.on_reading(&mut hist, t.seq(), now)? {
                let _ = client.disconnect().await;
                return Ok(hist);
            }
        }
    }
}
