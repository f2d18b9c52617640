//! Simulated devices: the real [`Session`] and [`Outbox`] on embassy's std executor, each with
//! its own embassy-net stack on its own TAP device.

use std::prelude::rust_2021::*;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};
use std::{eprintln, format, vec};

use embassy_executor::Executor;
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Timer};

use super::netns::NetNs;
use super::SimError;
use crate::wire::{ArchivedCommand, Command, DeviceId, Quantity, Reading};
use crate::{
    BackoffPolicy, CommandHandler, Outbox, OverflowPolicy, Session, SessionBuffers, SessionConfig,
    Stats,
};

/// Outbox capacity of a simulated device.
pub const RING: usize = 2048;
/// QoS 1 publishes a simulated device keeps in flight.
pub const WINDOW: usize = 16;
/// Devices one [`spawn_devices`] call can start (the size of the embassy task pools).
pub(super) const MAX_DEVICES: usize = 200;

/// The outbox type of a simulated device.
pub type SimOutbox = Outbox<CriticalSectionRawMutex, RING>;
type SimSession = Session<'static, CriticalSectionRawMutex, RING, WINDOW>;

/// When a simulated device submits its readings.
#[derive(Debug, Clone)]
pub enum Pace {
    /// As fast as the outbox has room (it never overflows).
    Flood,
    /// One reading per period, on a fixed schedule from the first one.
    Period(StdDuration),
    /// Closed loop: reading `i` is submitted once every counter holds at least `i` (receivers
    /// count the readings they have seen), so one reading is under way at a time.
    Gate(Vec<Arc<AtomicU64>>),
}

/// What one simulated device does.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    /// Device id (also its MQTT client id and topics).
    pub id: DeviceId,
    /// Readings to submit in total. Reading `i` has sequence number `i` and carries two
    /// values: a temperature and the count `i` (as `f32`).
    pub readings: u64,
    /// When to submit them.
    pub pace: Pace,
    /// When set, the host time just before every `Outbox::submit` is pushed here (index =
    /// sequence number).
    pub submit_log: Option<Arc<Mutex<Vec<StdInstant>>>>,
}

impl DeviceSpec {
    /// A device submitting `readings` readings at `pace`, without a submit log.
    pub fn new(id: DeviceId, readings: u64, pace: Pace) -> Self {
        DeviceSpec {
            id,
            readings,
            pace,
            submit_log: None,
        }
    }
}

/// How the simulated devices connect.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// TAP device of the first device (`rwtap{first_tap}`, IP 192.0.2.(10 + first_tap)); the
    /// others follow.
    pub first_tap: usize,
    /// Longest reconnect delay.
    pub backoff_max: StdDuration,
    /// Publish acknowledgement timeout (then the link is dropped and everything unacknowledged
    /// is resent).
    pub ack_timeout: StdDuration,
    /// MQTT keep-alive.
    pub keepalive_secs: u16,
}

impl Default for SimOptions {
    /// First TAP 0, backoff up to 1 s, ack timeout 5 s, keep-alive 10 s.
    fn default() -> Self {
        SimOptions {
            first_tap: 0,
            backoff_max: StdDuration::from_secs(1),
            ack_timeout: StdDuration::from_secs(5),
            keepalive_secs: 10,
        }
    }
}

/// A running simulated device, seen from the host.
pub struct SimDevice {
    /// Its id.
    pub id: DeviceId,
    /// Its outbox (counters: [`Outbox::stats`]).
    pub outbox: &'static SimOutbox,
    /// Commands its handler received, in order.
    pub commands: Arc<Mutex<Vec<Command>>>,
    /// What it was asked to do.
    pub spec: DeviceSpec,
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDevice")
            .field("id", &self.id)
            .field("stats", &self.outbox.stats())
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl SimDevice {
    /// Waits until every reading was submitted and acknowledged (or dropped); returns the time
    /// waited.
    pub fn wait_all_acked(&self, timeout: StdDuration) -> Result<StdDuration, SimError> {
        let start = StdInstant::now();
        loop {
            let s = self.outbox.stats();
            if done(&s, self.spec.readings) {
                return Ok(start.elapsed());
            }
            if start.elapsed() > timeout {
                return Err(SimError::Timeout(format!(
                    "device {:x}: not all readings acknowledged within {timeout:?}: {s:?}",
                    self.id.0
                )));
            }
            std::thread::sleep(StdDuration::from_millis(1));
        }
    }
}

fn done(s: &Stats, readings: u64) -> bool {
    s.submitted == readings && s.acked + s.dropped == readings
}

struct Recorder(Arc<Mutex<Vec<Command>>>);

impl CommandHandler for Recorder {
    fn on_command(&mut self, command: &ArchivedCommand) {
        // The session validated the command; deserializing a validated archive cannot fail.
        if let Ok(owned) = rkyv::deserialize::<Command, rkyv::rancor::Error>(command) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(owned);
        }
    }
}

#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn net_task(mut runner: Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn session_task(
    session: &'static mut SimSession,
    buffers: SessionBuffers<'static>,
    mut handler: Recorder,
) {
    // `run` returns only for configuration errors, which `Session::new` already checked.
    let err = session.run(buffers, &mut handler).await;
    log_session_end(err);
}

fn log_session_end(err: crate::SessionError) {
    eprintln!("simulated device: session stopped: {err:?}");
}

#[embassy_executor::task(pool_size = MAX_DEVICES)]
async fn sensor_task(outbox: &'static SimOutbox, spec: DeviceSpec) {
    let start = embassy_time::Instant::now();
    for i in 0..spec.readings {
        match &spec.pace {
            Pace::Flood => {
                while outbox.free_slots() == 0 {
                    Timer::after(Duration::from_micros(200)).await;
                }
            }
            Pace::Period(p) => {
                Timer::at(start + Duration::from_micros(i * p.as_micros() as u64)).await;
            }
            Pace::Gate(counters) => {
                // Acquire: pairs with the receivers' Release stores; a counter is only a count,
                // no other data is handed over through it.
                while counters.iter().any(|c| c.load(Ordering::Acquire) < i) {
                    Timer::after(Duration::from_micros(20)).await;
                }
            }
        }
        let uptime = start.elapsed().as_millis();
        let r = [
            Reading::new(0, Quantity::Temperature, 20.0 + (i % 100) as f32 / 10.0),
            Reading::new(1, Quantity::Count, i as f32),
        ];
        if let Some(log) = &spec.submit_log {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(StdInstant::now());
        }
        // Two readings always fit a telemetry record.
        let _ = outbox.submit(uptime, &r);
        if matches!(spec.pace, Pace::Flood) && i % 32 == 31 {
            embassy_futures::yield_now().await;
        }
    }
}

fn leak_buf(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

fn duration(d: StdDuration) -> Duration {
    Duration::from_micros(d.as_micros().min(u128::from(u64::MAX)) as u64)
}

/// Starts `specs.len()` devices on one executor thread inside `ns`: device `i` on TAP
/// `rwtap{first_tap + i}` with IP 192.0.2.(10 + first_tap + i), connecting to
/// [`HOST_IP`](super::HOST_IP):1883. The devices run until the process ends (their memory is
/// leaked: embassy tasks need `'static` state).
pub fn spawn_devices(
    ns: &NetNs,
    specs: Vec<DeviceSpec>,
    options: &SimOptions,
) -> Result<Vec<SimDevice>, SimError> {
    let last = options.first_tap + specs.len();
    if specs.len() > MAX_DEVICES || last > 240 {
        return Err(SimError::TooManyDevices(specs.len()));
    }
    if last > ns.taps() {
        return Err(SimError::NotEnoughTaps {
            needed: last,
            have: ns.taps(),
        });
    }
    let devices: Vec<SimDevice> = specs
        .into_iter()
        .map(|spec| SimDevice {
            id: spec.id,
            outbox: Box::leak(Box::new(SimOutbox::new(
                spec.id,
                1,
                OverflowPolicy::DropOldest,
            ))),
            commands: Arc::new(Mutex::new(Vec::new())),
            spec,
        })
        .collect();
    let plan: Vec<(usize, &'static SimOutbox, Recorder, DeviceSpec)> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            (
                options.first_tap + i,
                d.outbox,
                Recorder(d.commands.clone()),
                d.spec.clone(),
            )
        })
        .collect();
    let options = options.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), SimError>>();
    let _thread = ns.spawn_in(move || {
        let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
        executor.run(move |spawner| {
            let started = (|| {
                for (tap_index, outbox, recorder, spec) in plan {
                    let name = format!("rwtap{tap_index}");
                    let mut tap = TunTapDevice::new(&name)
                        .map_err(|e| SimError::io(format!("opening TAP {name}"), e))?;
                    tap.set_hardware_address([
                        0x02,
                        0x52,
                        0x57,
                        0x00,
                        (tap_index >> 8) as u8,
                        tap_index as u8,
                    ]);
                    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
                        address: Ipv4Cidr::new(
                            Ipv4Address::new(192, 0, 2, 10 + tap_index as u8),
                            24,
                        ),
                        gateway: None,
                        dns_servers: Default::default(),
                    });
                    let resources = Box::leak(Box::new(StackResources::<3>::new()));
                    let (stack, runner) =
                        embassy_net::new(tap, config, resources, 0x1234 + tap_index as u64);
                    let [a, b, c, d] = super::HOST_IP;
                    let mut cfg = SessionConfig::new((Ipv4Address::new(a, b, c, d), 1883).into());
                    cfg.keepalive_secs = options.keepalive_secs;
                    cfg.backoff = BackoffPolicy {
                        initial: Duration::from_millis(50),
                        max: duration(options.backoff_max),
                        jitter_percent: 25,
                    };
                    cfg.connect_timeout = Duration::from_secs(3);
                    cfg.ack_timeout = duration(options.ack_timeout);
                    let session: &'static mut SimSession = Box::leak(Box::new(
                        Session::new(stack, outbox, cfg).map_err(SimError::Session)?,
                    ));
                    let buffers = SessionBuffers {
                        tcp_rx: leak_buf(4096),
                        tcp_tx: leak_buf(8192),
                        mqtt_rx: leak_buf(512),
                        mqtt_tx: leak_buf(8192),
                    };
                    let spawn_err = |e| SimError::TaskPool(format!("{e:?}"));
                    spawner.spawn(net_task(runner).map_err(spawn_err)?);
                    spawner.spawn(session_task(session, buffers, recorder).map_err(spawn_err)?);
                    spawner.spawn(sensor_task(outbox, spec).map_err(spawn_err)?);
                }
                Ok(())
            })();
            let _ = ready_tx.send(started);
        })
    })?;
    match ready_rx.recv_timeout(StdDuration::from_secs(30)) {
        Ok(Ok(())) => Ok(devices),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SimError::Timeout(
            "the simulation thread did not start within 30 s".into(),
        )),
    }
}
