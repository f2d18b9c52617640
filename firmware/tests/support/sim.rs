//! Simulated devices: the real ringway-firmware session and outbox on embassy's std executor,
//! each with its own embassy-net stack on its own TAP device inside the test's namespace.

use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, Instant as StdInstant};

use embassy_executor::Executor;
use embassy_net::{Ipv4Address, Ipv4Cidr, Runner, StackResources, StaticConfigV4};
use embassy_net_tuntap::TunTapDevice;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_time::{Duration, Timer};
use ringway_firmware::wire::{ArchivedCommand, Command, DeviceId, Quantity, Reading};
use ringway_firmware::{
    BackoffPolicy, CommandHandler, Outbox, OverflowPolicy, Session, SessionBuffers, SessionConfig,
};

use super::netns::NetNs;

pub const RING: usize = 2048;
pub const WINDOW: usize = 16;
pub type SimOutbox = Outbox<CriticalSectionRawMutex, RING>;
type Plan = (
    usize,
    &'static SimOutbox,
    Arc<Mutex<Vec<Command>>>,
    DeviceSpec,
);
type SimSession = Session<'static, CriticalSectionRawMutex, RING, WINDOW>;

/// What one simulated device does.
#[derive(Clone)]
pub struct DeviceSpec {
    pub id: DeviceId,
    /// Readings to submit in total.
    pub readings: u64,
    /// Time between readings; zero submits as fast as the outbox has room.
    pub period: StdDuration,
    /// When set, the host time of every submit is recorded here (index = sequence number).
    pub submit_log: Option<&'static Mutex<Vec<StdInstant>>>,
}

/// The test's view of a running simulated device.
pub struct SimDevice {
    pub id: DeviceId,
    pub outbox: &'static SimOutbox,
    pub commands: Arc<Mutex<Vec<Command>>>,
    pub spec: DeviceSpec,
}

impl SimDevice {
    /// Wait until every reading was acknowledged by the broker; returns the elapsed time.
    pub fn wait_all_acked(&self, timeout: StdDuration) -> StdDuration {
        let start = StdInstant::now();
        loop {
            let s = self.outbox.stats();
            if s.submitted == self.spec.readings && s.acked + s.dropped == self.spec.readings {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < timeout,
                "device {:x}: not all readings acknowledged: {s:?}",
                self.id.0
            );
            std::thread::sleep(StdDuration::from_millis(20));
        }
    }
}

struct Recorder(Arc<Mutex<Vec<Command>>>);

impl CommandHandler for Recorder {
    fn on_command(&mut self, command: &ArchivedCommand) {
        let owned: Command =
            rkyv::deserialize::<Command, rkyv::rancor::Error>(command).expect("deserialize");
        self.0.lock().unwrap().push(owned);
    }
}

#[embassy_executor::task(pool_size = 256)]
async fn net_task(mut runner: Runner<'static, TunTapDevice>) -> ! {
    runner.run().await
}

#[embassy_executor::task(pool_size = 256)]
async fn session_task(
    session: &'static mut SimSession,
    buffers: SessionBuffers<'static>,
    mut handler: Recorder,
) {
    let err = session.run(buffers, &mut handler).await;
    panic!("session stopped: {err:?}");
}

#[embassy_executor::task(pool_size = 256)]
async fn sensor_task(
    outbox: &'static SimOutbox,
    readings: u64,
    period_us: u64,
    log: Option<&'static Mutex<Vec<StdInstant>>>,
) {
    let start = embassy_time::Instant::now();
    for i in 0..readings {
        if period_us == 0 {
            while outbox.free_slots() == 0 {
                Timer::after(Duration::from_micros(200)).await;
            }
        } else {
            Timer::at(start + Duration::from_micros(i * period_us)).await;
        }
        let uptime = start.elapsed().as_millis();
        let r = [
            Reading::new(0, Quantity::Temperature, 20.0 + (i % 100) as f32 / 10.0),
            Reading::new(1, Quantity::Count, i as f32),
        ];
        if let Some(log) = log {
            log.lock().unwrap().push(StdInstant::now());
        }
        outbox.submit(uptime, &r).expect("submit");
        if period_us == 0 && i % 32 == 31 {
            embassy_futures::yield_now().await;
        }
    }
}

fn leak_buf(n: usize) -> &'static mut [u8] {
    Box::leak(vec![0u8; n].into_boxed_slice())
}

/// Start `specs.len()` devices (device `i` on TAP `rwtap<i>`, IP 192.0.2.(10+i)) on one
/// executor thread inside `ns`.
pub fn spawn_devices(
    ns: &NetNs,
    specs: Vec<DeviceSpec>,
    backoff_max: StdDuration,
) -> Vec<SimDevice> {
    spawn_devices_with(ns, specs, backoff_max, StdDuration::from_secs(5))
}

/// [`spawn_devices`] with a chosen acknowledgement timeout.
pub fn spawn_devices_with(
    ns: &NetNs,
    specs: Vec<DeviceSpec>,
    backoff_max: StdDuration,
    ack_timeout: StdDuration,
) -> Vec<SimDevice> {
    assert!(specs.len() <= 200);
    let devices: Vec<SimDevice> = specs
        .iter()
        .map(|spec| SimDevice {
            id: spec.id,
            outbox: Box::leak(Box::new(SimOutbox::new(
                spec.id,
                1,
                OverflowPolicy::DropOldest,
            ))),
            commands: Arc::new(Mutex::new(Vec::new())),
            spec: spec.clone(),
        })
        .collect();
    let plan: Vec<Plan> = devices
        .iter()
        .enumerate()
        .map(|(i, d)| (i, d.outbox, d.commands.clone(), d.spec.clone()))
        .collect();
    let ns_ref = NetNs {
        name: ns.name.clone(),
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ns_ref.enter_current_thread();
        // The namespace handle must not delete the namespace when this thread's copy drops.
        std::mem::forget(ns_ref);
        let executor: &'static mut Executor = Box::leak(Box::new(Executor::new()));
        executor.run(move |spawner| {
            for (i, outbox, commands, spec) in plan {
                let mut tap = TunTapDevice::new(&format!("rwtap{i}")).expect("open TAP");
                tap.set_hardware_address([0x02, 0x52, 0x57, 0x00, (i >> 8) as u8, i as u8]);
                let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
                    address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 10 + i as u8), 24),
                    gateway: None,
                    dns_servers: Default::default(),
                });
                let resources = Box::leak(Box::new(StackResources::<3>::new()));
                let (stack, runner) = embassy_net::new(tap, config, resources, 0x1234 + i as u64);
                let mut cfg = SessionConfig::new((Ipv4Address::new(192, 0, 2, 1), 1883).into());
                cfg.keepalive_secs = 10;
                cfg.backoff = BackoffPolicy {
                    initial: Duration::from_millis(50),
                    max: Duration::from_micros(backoff_max.as_micros() as u64),
                    jitter_percent: 25,
                };
                cfg.connect_timeout = Duration::from_secs(3);
                cfg.ack_timeout = Duration::from_micros(ack_timeout.as_micros() as u64);
                let session: &'static mut SimSession =
                    Box::leak(Box::new(Session::new(stack, outbox, cfg).expect("session")));
                let buffers = SessionBuffers {
                    tcp_rx: leak_buf(4096),
                    tcp_tx: leak_buf(8192),
                    mqtt_rx: leak_buf(512),
                    mqtt_tx: leak_buf(8192),
                };
                spawner.spawn(net_task(runner).expect("net task"));
                spawner.spawn(
                    session_task(session, buffers, Recorder(commands)).expect("session task"),
                );
                spawner.spawn(
                    sensor_task(
                        outbox,
                        spec.readings,
                        spec.period.as_micros() as u64,
                        spec.submit_log,
                    )
                    .expect("sensor task"),
                );
            }
            let _ = ready_tx.send(());
        });
    });
    ready_rx
        .recv_timeout(StdDuration::from_secs(30))
        .expect("simulation thread did not start");
    devices
}
