//! End-to-end: simulated devices (the real firmware session on embassy-net over TAP devices in
//! a network namespace) against the Ringway MQTT gateway; a host process reads
//! `&ArchivedTelemetry` zero-copy out of the journal. Needs root and iproute2.

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ringway_core::{AppendOptions, Start, Stream, StreamConfig};
use ringway_firmware::wire::{
    access_telemetry, encode_command, Action, Command, DeviceId, WireBuf, COMMAND_TYPE_ID,
    WIRE_SCHEMA_VERSION,
};
use ringway_mqtt_gateway::MqttMeta;
use support::gateway::{GatewayHandle, COMMAND_STREAM, TELEMETRY_STREAM};
use support::netns::{create_ns, require_root_and_tools};
use support::sim::{pace, spawn_devices, DeviceSpec};

/// (device, boot, seq) of every telemetry frame in the stream, read and validated in place.
fn read_journal(dir: &std::path::Path) -> Vec<(u64, u32, u64)> {
    let stream = Stream::open(dir, TELEMETRY_STREAM).expect("telemetry stream");
    let mut reader = stream.reader(Start::Beginning).unwrap();
    let mut out = Vec::new();
    loop {
        let n = reader
            .poll(4096, |f| {
                // Zero copy: the archived value is read straight out of the mapping.
                let t = access_telemetry(f.payload()).expect("valid telemetry in the journal");
                assert_eq!(t.readings()[1].value(), t.seq() as f32);
                out.push((t.device_id(), t.boot_id(), t.seq()));
            })
            .unwrap();
        if n == 0 {
            if out.is_empty() {
                eprintln!(
                    "empty read at {:?}; files: {:?}",
                    reader.position(),
                    std::fs::read_dir(dir.join(TELEMETRY_STREAM)).map(|d| d
                        .filter_map(|e| e.ok())
                        .map(|e| (e.file_name(), e.metadata().map(|m| m.len()).unwrap_or(0)))
                        .collect::<Vec<_>>())
                );
            }
            return out;
        }
    }
}

fn wait_journal(dir: &std::path::Path, n: usize) -> Vec<(u64, u32, u64)> {
    let start = Instant::now();
    loop {
        let v = read_journal(dir);
        if v.len() >= n || start.elapsed() > Duration::from_secs(30) {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn seqs_of(v: &[(u64, u32, u64)], device: u64) -> Vec<u64> {
    v.iter().filter(|r| r.0 == device).map(|r| r.2).collect()
}

fn tempdir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("rw-fw-{tag}"))
        .tempdir()
        .unwrap()
}

#[test]
fn gateway_journal_receives_10000_readings_in_order() {
    require_root_and_tools();
    let ns = create_ns("gw1", 1);
    let dir = tempdir("gw1");
    let _gw = GatewayHandle::start(&ns, dir.path());
    let n = 10_000u64;
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xe1),
            readings: n,
            pace: pace(Duration::ZERO),
            submit_log: None,
        }],
        Duration::from_secs(1),
    );
    let took = devices[0].wait_all_acked(Duration::from_secs(120)).unwrap();
    let stats = devices[0].outbox.stats();
    // PUBACK comes after the append: everything acknowledged is already in the journal.
    let journal = read_journal(dir.path());
    assert_eq!(seqs_of(&journal, 0xe1), (0..n).collect::<Vec<_>>());
    assert_eq!(stats.dropped, 0);
    eprintln!(
        "gateway: {n} readings device -> journal in {:.3} s = {:.0} readings/s; {stats:?}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

/// The gateway is killed and restarted while the device publishes.
fn kill_and_restart(tag: &str, device: u64, n: u64, period: Duration) -> KillOutcome {
    require_root_and_tools();
    let ns = create_ns(tag, 1);
    let dir = tempdir(tag);
    let mut gw = GatewayHandle::start(&ns, dir.path());
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(device),
            readings: n,
            pace: pace(period),
            submit_log: None,
        }],
        Duration::from_millis(500),
    );
    let dev = &devices[0];
    while dev.outbox.stats().acked < 1_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    gw.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let during = dev.outbox.stats();
    assert!(
        during.buffered > 0,
        "readings buffered while the gateway is down: {during:?}"
    );
    gw.restart(&ns);
    dev.wait_all_acked(Duration::from_secs(120)).unwrap();
    let stats = dev.outbox.stats();
    let journal = wait_journal(dir.path(), n as usize);
    let seqs = seqs_of(&journal, device);
    let mut seen = HashSet::new();
    let first_arrivals: Vec<u64> = seqs.iter().copied().filter(|s| seen.insert(*s)).collect();
    let duplicates: Vec<u64> = {
        let mut once = HashSet::new();
        seqs.iter().copied().filter(|s| !once.insert(*s)).collect()
    };
    eprintln!(
        "gateway restart: buffered {} while down; journal holds {} frames for {} readings, \
         duplicates {:?}; {stats:?}",
        during.buffered,
        seqs.len(),
        seen.len(),
        &duplicates[..duplicates.len().min(20)]
    );
    assert_eq!(stats.dropped, 0);
    assert!(stats.connects >= 2, "device reconnected: {stats:?}");
    assert_eq!(seen.len() as u64, n, "no reading lost");
    assert!(
        first_arrivals.iter().copied().eq(0..n),
        "readings stored in order of first arrival"
    );
    KillOutcome { duplicates }
}

struct KillOutcome {
    duplicates: Vec<u64>,
}

#[test]
fn gateway_killed_and_restarted_mid_run() {
    // 500 readings/s: mostly idle link, readings pile up in the outbox while it is down.
    kill_and_restart("gw2", 0xe2, 4_000, Duration::from_millis(2));
}

#[test]
fn gateway_killed_with_publishes_in_flight() {
    // As fast as the link allows: the in-flight window is full when the gateway dies, so
    // unacknowledged publishes must be sent again on the new connection.
    let outcome = kill_and_restart("gw5", 0xe5, 20_000, Duration::ZERO);
    // Only readings that were in flight at the kill may be stored twice.
    assert!(outcome.duplicates.len() <= support::sim::WINDOW);
}

/// Exactly-once into the journal across a gateway crash: after a restart the device's MQTT
/// session is new, so resent readings carry new packet ids; the telemetry route drops them by
/// `(device_id, boot_id, seq)`.
#[test]
fn gateway_stores_each_reading_once_across_a_kill() {
    let outcome = kill_and_restart("gw6", 0xe6, 20_000, Duration::ZERO);
    assert_eq!(outcome.duplicates, Vec::<u64>::new());
}

#[test]
fn command_appended_to_a_stream_reaches_the_device() {
    require_root_and_tools();
    let ns = create_ns("gw3", 1);
    let dir = tempdir("gw3");
    let _gw = GatewayHandle::start(&ns, dir.path());
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xe3),
            readings: 20,
            pace: pace(Duration::from_millis(1)),
            submit_log: None,
        }],
        Duration::from_secs(1),
    );
    devices[0].wait_all_acked(Duration::from_secs(60)).unwrap();
    // The device subscribed before its first publish was acknowledged; append the command as
    // any local process would (a trading process, not an MQTT client).
    let cmd = Command {
        device_id: DeviceId(0xe3),
        command_id: 5,
        action: Action::SetOutput {
            channel: 2,
            value: 1.5,
        },
    };
    let mut buf = WireBuf::<64>::new();
    let payload = encode_command(&cmd, &mut buf).unwrap();
    let stream = Stream::open_or_create(
        dir.path(),
        COMMAND_STREAM,
        &StreamConfig::default()
            .segment_size(4 << 20)
            .multi_writer(true),
    )
    .unwrap();
    let mut writer = stream.writer().unwrap();
    let meta = MqttMeta::for_topic("devices/00000000000000e3/cmd")
        .encode()
        .unwrap();
    writer
        .append_with(
            &AppendOptions {
                type_id: COMMAND_TYPE_ID,
                schema_version: WIRE_SCHEMA_VERSION,
                meta: &meta,
            },
            payload,
        )
        .unwrap();
    let start = Instant::now();
    while devices[0].commands.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "command not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(devices[0].commands.lock().unwrap().as_slice(), &[cmd]);
}

#[test]
fn hundred_devices_through_the_gateway() {
    require_root_and_tools();
    let count = 100usize;
    let ns = create_ns("gw4", count);
    let dir = tempdir("gw4");
    let _gw = GatewayHandle::start(&ns, dir.path());
    let per_device = 100u64;
    let specs = (0..count as u64)
        .map(|i| DeviceSpec {
            id: DeviceId(0x2000 + i),
            readings: per_device,
            pace: pace(Duration::from_millis(5)),
            submit_log: None,
        })
        .collect();
    let devices = spawn_devices(&ns, specs, Duration::from_secs(2));
    for d in &devices {
        d.wait_all_acked(Duration::from_secs(180)).unwrap();
    }
    let journal = read_journal(dir.path());
    for d in &devices {
        assert_eq!(
            seqs_of(&journal, d.id.0),
            (0..per_device).collect::<Vec<_>>(),
            "{:x}",
            d.id.0
        );
    }
    assert_eq!(journal.len(), count * per_device as usize);
}

/// Latency from `Outbox::submit` on the device to a host process reading the reading out of
/// the journal, at a steady 200 readings/s. Printed, not asserted (figures belong to benches).
#[test]
fn latency_device_submit_to_journal_reader() {
    require_root_and_tools();
    let ns = create_ns("gw7", 1);
    let dir = tempdir("gw7");
    let _gw = GatewayHandle::start(&ns, dir.path());
    let n = 2_000u64;
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(n as usize)));
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xe7),
            readings: n,
            pace: pace(Duration::from_millis(5)),
            submit_log: Some(log.clone()),
        }],
        Duration::from_secs(1),
    );
    // The gateway creates the stream on the first publish.
    let start = Instant::now();
    let stream = loop {
        match Stream::open(dir.path(), TELEMETRY_STREAM) {
            Ok(s) => break s,
            Err(_) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "stream never created"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    };
    let mut reader = stream.reader(Start::Beginning).unwrap();
    let mut arrivals = vec![None; n as usize];
    let mut got = 0;
    while got < n as usize {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "readings missing"
        );
        let k = reader
            .poll(256, |f| {
                let now = Instant::now();
                let t = access_telemetry(f.payload()).expect("valid telemetry");
                arrivals[t.seq() as usize] = Some(now);
            })
            .unwrap();
        got += k;
        if k == 0 {
            std::thread::yield_now();
        }
    }
    devices[0].wait_all_acked(Duration::from_secs(30)).unwrap();
    let submitted = log.lock().unwrap();
    // Steady state only: skip readings submitted before the first one reached the journal
    // (they waited for the interface, ARP and the MQTT connection).
    let first = arrivals.iter().flatten().min().copied().expect("arrivals");
    let mut lat: Vec<Duration> = arrivals
        .iter()
        .zip(submitted.iter())
        .filter(|(_, s)| **s > first)
        .map(|(a, s)| a.expect("every reading arrived").duration_since(*s))
        .collect();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
    eprintln!(
        "latency submit -> journal reader over {} readings at 200/s: p50 {:?} p99 {:?} max {:?}",
        lat.len(),
        pct(0.50),
        pct(0.99),
        lat[lat.len() - 1]
    );
}
