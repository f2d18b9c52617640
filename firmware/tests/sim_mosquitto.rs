//! End-to-end: simulated devices (the real firmware session on embassy-net over TAP devices in
//! a network namespace) against a real MQTT broker (Debian's mosquitto) and a real subscriber
//! (mosquitto_sub). Needs root, iproute2 and mosquitto + mosquitto-clients.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use ringway_firmware::wire::{
    access_telemetry, encode_command, Action, Command, DeviceId, WireBuf, TELEMETRY_WIRE_SIZE,
};
use support::broker::Broker;
use support::netns::{create_ns, require_root_and_tools};
use support::sim::{pace, spawn_devices, DeviceSpec};
use support::subscriber::{Message, Subscriber};

/// Decode (validated, from an 8-aligned copy) the (device, boot, seq) of every telemetry message.
fn decode(messages: &[Message]) -> Vec<(u64, u32, u64)> {
    let mut buf = WireBuf::<TELEMETRY_WIRE_SIZE>::new();
    messages
        .iter()
        .map(|m| {
            assert!(
                m.topic.ends_with("/telemetry"),
                "unexpected topic {}",
                m.topic
            );
            let bytes = buf.load(&m.payload).expect("payload size");
            let t = access_telemetry(bytes).expect("valid telemetry");
            assert_eq!(t.readings().len(), 2);
            assert_eq!(t.readings()[1].value(), t.seq() as f32);
            (t.device_id(), t.boot_id(), t.seq())
        })
        .collect()
}

/// Sequence numbers of `device` in order of first arrival, plus how many arrived twice.
fn first_arrivals(decoded: &[(u64, u32, u64)], device: u64) -> (Vec<u64>, usize) {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    let mut dups = 0;
    for &(d, _boot, seq) in decoded {
        if d != device {
            continue;
        }
        if seen.insert(seq) {
            order.push(seq);
        } else {
            dups += 1;
        }
    }
    (order, dups)
}

/// Waits until `n` distinct readings arrived (a broker restart may deliver some twice, so the
/// number of messages alone says nothing about the last one).
fn wait_for_messages(sub: &Subscriber, n: usize, timeout: Duration) -> Vec<Message> {
    let start = std::time::Instant::now();
    loop {
        let m = sub.messages();
        let distinct: HashSet<(u64, u32, u64)> = decode(&m).into_iter().collect();
        if distinct.len() >= n || start.elapsed() > timeout {
            return m;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn one_device_delivers_10000_readings_in_order() {
    require_root_and_tools();
    let ns = create_ns("one", 1);
    let _broker = Broker::start(&ns);
    let sub = Subscriber::start(&ns, "verifier-one", "devices/+/telemetry");
    let n = 10_000;
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xd1),
            readings: n,
            pace: pace(Duration::ZERO),
            submit_log: None,
        }],
        Duration::from_secs(1),
    );
    let took = devices[0].wait_all_acked(Duration::from_secs(120)).unwrap();
    let stats = devices[0].outbox.stats();
    let messages = wait_for_messages(&sub, n as usize, Duration::from_secs(30));
    let decoded = decode(&messages);
    let (order, dups) = first_arrivals(&decoded, 0xd1);
    assert_eq!(order, (0..n).collect::<Vec<_>>(), "all readings, in order");
    assert_eq!(dups, 0, "no retransmission without a fault");
    assert_eq!(stats.dropped, 0);
    assert_eq!(stats.connects, 1);
    eprintln!(
        "one device: {n} readings acknowledged in {:.3} s ({:.0} readings/s through mosquitto); {stats:?}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

#[test]
fn broker_restart_mid_run_loses_nothing() {
    require_root_and_tools();
    let ns = create_ns("restart", 1);
    let mut broker = Broker::start(&ns);
    let sub = Subscriber::start(&ns, "verifier-restart", "devices/+/telemetry");
    // 500 readings/s; the broker is down for ~1.5 s plus the reconnect backoff, well inside
    // the outbox's capacity, so nothing may be dropped.
    let n = 4_000;
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xd2),
            readings: n,
            pace: pace(Duration::from_millis(2)),
            submit_log: None,
        }],
        Duration::from_millis(500),
    );
    let dev = &devices[0];
    while dev.outbox.stats().acked < 1_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let during = dev.outbox.stats();
    assert!(
        during.buffered > 0,
        "readings are buffered while the broker is down: {during:?}"
    );
    broker.restart(&ns);
    dev.wait_all_acked(Duration::from_secs(120)).unwrap();
    let stats = dev.outbox.stats();
    let messages = wait_for_messages(&sub, n as usize, Duration::from_secs(30));
    let decoded = decode(&messages);
    let (order, dups) = first_arrivals(&decoded, 0xd2);
    assert_eq!(stats.dropped, 0, "{stats:?}");
    assert!(stats.connects >= 2, "device reconnected: {stats:?}");
    assert_eq!(
        order,
        (0..n).collect::<Vec<_>>(),
        "no reading lost, first arrivals in order"
    );
    // mosquitto does not deduplicate: QoS 1 redeliveries reach its subscribers (the Ringway
    // gateway drops them by (device, boot, seq)). Every duplicate is a resent reading.
    eprintln!(
        "restart: buffered {} readings while down; {} duplicates at the subscriber; {stats:?}",
        during.buffered, dups
    );
}

#[test]
fn command_reaches_the_device_handler() {
    require_root_and_tools();
    let ns = create_ns("cmd", 1);
    let _broker = Broker::start(&ns);
    let devices = spawn_devices(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xd3),
            readings: 10,
            pace: pace(Duration::from_millis(1)),
            submit_log: None,
        }],
        Duration::from_secs(1),
    );
    devices[0].wait_all_acked(Duration::from_secs(60)).unwrap();
    let cmd = Command {
        device_id: DeviceId(0xd3),
        command_id: 77,
        action: Action::SetInterval { period_ms: 250 },
    };
    let mut out = WireBuf::<64>::new();
    let bytes = encode_command(&cmd, &mut out).unwrap();
    let file = std::env::temp_dir().join(format!("{}-cmd.bin", ns.name()));
    std::fs::write(&file, bytes).unwrap();
    let status = ns
        .command("mosquitto_pub")
        .args([
            "-h",
            "192.0.2.1",
            "-q",
            "1",
            "-t",
            "devices/00000000000000d3/cmd",
            "-f",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(status.success());
    // A command for another device and garbage on the same topic must be rejected.
    let _ = ns
        .command("mosquitto_pub")
        .args([
            "-h",
            "192.0.2.1",
            "-q",
            "1",
            "-t",
            "devices/00000000000000d3/cmd",
            "-m",
            "junk",
        ])
        .status();
    let start = std::time::Instant::now();
    while devices[0].commands.lock().unwrap().is_empty()
        || devices[0].outbox.stats().rejected_commands == 0
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "command not delivered"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&file);
    assert_eq!(devices[0].commands.lock().unwrap().as_slice(), &[cmd]);
    assert_eq!(devices[0].outbox.stats().rejected_commands, 1);
}

#[test]
fn hundred_devices_at_once() {
    require_root_and_tools();
    let count = 100;
    let ns = create_ns("fleet", count);
    let _broker = Broker::start(&ns);
    let sub = Subscriber::start(&ns, "verifier-fleet", "devices/+/telemetry");
    let per_device = 200;
    let specs: Vec<DeviceSpec> = (0..count as u64)
        .map(|i| DeviceSpec {
            id: DeviceId(0x1000 + i),
            readings: per_device,
            pace: pace(Duration::from_millis(5)),
            submit_log: None,
        })
        .collect();
    let devices = spawn_devices(&ns, specs, Duration::from_secs(2));
    for d in &devices {
        d.wait_all_acked(Duration::from_secs(180)).unwrap();
    }
    let total = count * per_device as usize;
    let messages = wait_for_messages(&sub, total, Duration::from_secs(30));
    let decoded = decode(&messages);
    for d in &devices {
        let (order, _dups) = first_arrivals(&decoded, d.id.0);
        assert_eq!(
            order,
            (0..per_device).collect::<Vec<_>>(),
            "device {:x}",
            d.id.0
        );
        assert_eq!(d.outbox.stats().dropped, 0);
    }
    let topics: HashSet<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(
        topics.len(),
        count,
        "each device publishes on its own topic"
    );
}
