//! End to end, three `ringway` processes on loopback: `ringway up` with
//! `[replication] sync_replicas = 1`, `ringway replicate mqtt --to udp://…` and
//! `ringway receive`. A QoS 1 PUBLISH gets its PUBACK once the replica holds it (and the
//! replica does hold it); with the receiver killed, an MQTT 5 PUBLISH gets PUBACK reason 0x80
//! after the timeout instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringway_core::{Start, Stream};

/// Upper bound for anything the test waits for (a watchdog, not a performance claim).
const WAIT: Duration = Duration::from_secs(60);
const SYNC_TIMEOUT_MS: u64 = 3000;

/// Children killed when the test ends, however it ends.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ringway")
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![byte1];
    remaining_length(body.len(), &mut v);
    v.extend_from_slice(body);
    v
}

fn string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// CONNECT, clean, keep-alive 60 s; MQTT 5 when `v5`.
fn connect(id: &str, v5: bool) -> Vec<u8> {
    let mut b = Vec::new();
    string("MQTT", &mut b);
    b.extend_from_slice(&[if v5 { 5 } else { 4 }, 2, 0, 60]);
    if v5 {
        b.push(0);
    }
    string(id, &mut b);
    packet(0x10, &b)
}

/// PUBLISH QoS 1.
fn publish(topic: &str, pkid: u16, payload: &[u8], v5: bool) -> Vec<u8> {
    let mut b = Vec::new();
    string(topic, &mut b);
    b.extend_from_slice(&pkid.to_be_bytes());
    if v5 {
        b.push(0);
    }
    b.extend_from_slice(payload);
    packet(0x32, &b)
}

/// Next packet: (first byte, body).
fn recv(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut first = [0u8; 1];
    s.read_exact(&mut first).expect("a packet");
    let (mut len, mut shift) = (0usize, 0);
    loop {
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        len |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (first[0], body)
}

fn client(addr: SocketAddr, id: &str, v5: bool) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&connect(id, v5)).unwrap();
    let (first, body) = recv(&mut s);
    assert_eq!((first, body[1]), (0x20, 0), "CONNACK accepted");
    s
}

fn payloads(root: &Path) -> Vec<Vec<u8>> {
    let Ok(s) = Stream::open(root, "mqtt") else {
        return Vec::new();
    };
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut out = Vec::new();
    while r.poll(1000, |f| out.push(f.payload().to_vec())).unwrap() > 0 {}
    out
}

/// A primary node (`ringway up` with `sync_replicas`) replicated over UDP to a receiver
/// process, each in its own temporary root.
struct Node {
    primary: tempfile::TempDir,
    replica: tempfile::TempDir,
    mqtt: SocketAddr,
    /// receive, up, replicate (in that order).
    procs: Procs,
}

impl Node {
    /// `sender_flags`: extra arguments of `ringway replicate`.
    fn start(sync_replicas: usize, sender_flags: &[&str]) -> Node {
        let primary = tempfile::tempdir().unwrap();
        let replica = tempfile::tempdir().unwrap();
        let config = primary.path().join("ringway.toml");
        std::fs::write(
            &config,
            format!(
                "[replication]\nsync_replicas = {sync_replicas}\nsync_timeout_ms = {SYNC_TIMEOUT_MS}\n"
            ),
        )
        .unwrap();
        let (mqtt_port, metrics_port, udp_port) =
            (free_tcp_port(), free_tcp_port(), free_udp_port());
        let mqtt: SocketAddr = format!("127.0.0.1:{mqtt_port}").parse().unwrap();
        let udp = format!("udp://127.0.0.1:{udp_port}");
        let (pdir, rdir) = (
            primary.path().display().to_string(),
            replica.path().display().to_string(),
        );
        let mut procs = Procs(Vec::new());
        procs
            .0
            .push(spawn(&["receive", "--listen", &udp, "--dir", &rdir]));
        procs.0.push(spawn(&[
            "up",
            "--config",
            config.to_str().unwrap(),
            "--dir",
            &pdir,
            "--mqtt-listen",
            &mqtt.to_string(),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ]));
        wait_until("the gateway listens", || TcpStream::connect(mqtt).is_ok());
        wait_until("the gateway creates its stream", || {
            primary.path().join("mqtt").join("meta").exists()
        });
        let mut replicate = vec!["replicate", "mqtt", "--to", &udp, "--dir", &pdir];
        replicate.extend_from_slice(sender_flags);
        procs.0.push(spawn(&replicate));
        let acks = Stream::open(primary.path(), "mqtt").unwrap().replica_acks();
        wait_until("the sender records its receiver", || {
            !acks.entries().is_empty()
        });
        Node {
            primary,
            replica,
            mqtt,
            procs,
        }
    }
}

#[test]
fn qos1_puback_waits_for_a_udp_replica_in_another_process() {
    let mut node = Node::start(1, &[]);
    let (primary, replica, mqtt) = (node.primary.path(), node.replica.path(), node.mqtt);
    let stream = Stream::open(primary, "mqtt").unwrap();
    let acks = stream.replica_acks();

    // QoS 1 (MQTT 3.1.1): the PUBACK comes, and by then the replica holds the message.
    let mut c = client(mqtt, "e2e-311", false);
    c.write_all(&publish("e2e/a", 1, b"replicated-1", false))
        .unwrap();
    assert_eq!(recv(&mut c), (0x40, vec![0, 1]));
    let tail = stream.tail().0;
    assert!(
        acks.acknowledged_by(tail) >= 1,
        "PUBACK before the replica acknowledged: {:?} at {tail}",
        acks.entries()
    );
    wait_until("the replica stream holds the message", || {
        payloads(replica).contains(&b"replicated-1".to_vec())
    });
    // `ringway stat` shows the replica and how far it got.
    let o = Command::new(env!("CARGO_BIN_EXE_ringway"))
        .args(["stat", "--json", "--dir"])
        .arg(primary)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let st = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "mqtt")
        .unwrap();
    let replicas = st["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 1, "{st}");
    assert!(
        replicas[0]["acknowledged_position"].as_u64().unwrap() >= tail,
        "{st}"
    );

    // Receiver gone: no replica acknowledges the next message; MQTT 5 gets 0x80 after the
    // timeout, and the message is only in the primary.
    let mut receiver = node.procs.0.remove(0);
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let mut c5 = client(mqtt, "e2e-5", true);
    c5.write_all(&publish("e2e/b", 2, b"unreplicated", true))
        .unwrap();
    let (first, body) = recv(&mut c5);
    assert_eq!((first, &body[..3]), (0x40, &[0, 2, 0x80][..]), "{body:?}");
    assert!(payloads(primary).contains(&b"unreplicated".to_vec()));
    assert!(!payloads(replica).contains(&b"unreplicated".to_vec()));
}

/// Publish -> PUBACK round trips of one QoS 1 client, in microseconds.
fn round_trips(c: &mut TcpStream, pkid_base: u16, n: usize, out: &mut Vec<f64>) {
    for i in 0..n {
        let pkid = pkid_base + i as u16;
        let t = Instant::now();
        c.write_all(&publish("lat/x", pkid, &[7u8; 64], false))
            .unwrap();
        let (first, body) = recv(c);
        out.push(t.elapsed().as_nanos() as f64 / 1000.0);
        assert_eq!((first, &body[..]), (0x40, &pkid.to_be_bytes()[..]));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A measurement, not a check (run with `--ignored --nocapture`, on an optimised build): QoS 1
/// publish -> PUBACK latency of one MQTT 3.1.1 client with `sync_replicas = 0` and `= 1`, in
/// one run. Both nodes replicate over UDP on loopback (same processes, same load); only the
/// waiting differs. Rounds alternate between the two so machine noise hits both alike.
/// `RINGWAY_SYNC_BENCH_SENDER_FLAGS` adds `ringway replicate` flags to both senders (e.g.
/// `--idle-backoff`).
#[test]
#[ignore]
fn measure_sync_puback_latency() {
    let extra = std::env::var("RINGWAY_SYNC_BENCH_SENDER_FLAGS").unwrap_or_default();
    let flags: Vec<&str> = extra.split_whitespace().collect();
    let flags = &flags[..];
    let nodes = [Node::start(0, flags), Node::start(1, flags)];
    let mut clients: Vec<TcpStream> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| client(n.mqtt, &format!("lat-{i}"), false))
        .collect();
    let (rounds, per_round) = (40, 250);
    let mut samples = [Vec::new(), Vec::new()];
    // Warm-up round, not recorded.
    for c in clients.iter_mut() {
        round_trips(c, 1, per_round, &mut Vec::new());
    }
    for _ in 0..rounds {
        for (c, s) in clients.iter_mut().zip(samples.iter_mut()) {
            round_trips(c, 1, per_round, s);
        }
    }
    for (i, s) in samples.iter_mut().enumerate() {
        s.sort_by(f64::total_cmp);
        println!(
            "sync_replicas={i}: n={} p50={:.1}us p90={:.1}us p99={:.1}us max={:.1}us",
            s.len(),
            percentile(s, 0.5),
            percentile(s, 0.9),
            percentile(s, 0.99),
            s[s.len() - 1]
        );
    }
    println!(
        "p50 ratio sync/async: {:.2}",
        percentile(&samples[1], 0.5) / percentile(&samples[0], 0.5)
    );
}

/// `window` QoS 1 publishes written at once, then their PUBACKs read: returns how many.
fn pipelined(c: &mut TcpStream, window: u16, payload: &[u8]) -> usize {
    let mut burst = Vec::new();
    for pkid in 1..=window {
        burst.extend(publish("thr/x", pkid, payload, false));
    }
    c.write_all(&burst).unwrap();
    for pkid in 1..=window {
        let (first, body) = recv(c);
        assert_eq!((first, &body[..]), (0x40, &pkid.to_be_bytes()[..]));
    }
    usize::from(window)
}

/// A measurement, not a check (`--ignored --nocapture`, optimised build): QoS 1 throughput of
/// one MQTT 3.1.1 client keeping 16 messages in flight (written with one write, so the gateway
/// stores and acknowledges them as one batch), `sync_replicas = 0` and `= 1`, alternating rounds.
#[test]
#[ignore]
fn measure_sync_pipelined_throughput() {
    let extra = std::env::var("RINGWAY_SYNC_BENCH_SENDER_FLAGS").unwrap_or_default();
    let flags: Vec<&str> = extra.split_whitespace().collect();
    let nodes = [Node::start(0, &flags), Node::start(1, &flags)];
    let mut clients: Vec<TcpStream> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| client(n.mqtt, &format!("thr-{i}"), false))
        .collect();
    let payload = [7u8; 64];
    let (rounds, batches) = (20, 200);
    let mut rate = [Vec::new(), Vec::new()];
    for c in clients.iter_mut() {
        pipelined(c, 16, &payload);
    }
    for _ in 0..rounds {
        for (c, r) in clients.iter_mut().zip(rate.iter_mut()) {
            let t = Instant::now();
            let n: usize = (0..batches).map(|_| pipelined(c, 16, &payload)).sum();
            r.push(n as f64 / t.elapsed().as_secs_f64());
        }
    }
    for (i, r) in rate.iter_mut().enumerate() {
        r.sort_by(f64::total_cmp);
        println!(
            "sync_replicas={i}: median {:.0} msgs/s (rounds {:.0}..{:.0})",
            r[r.len() / 2],
            r[0],
            r[r.len() - 1]
        );
    }
}
