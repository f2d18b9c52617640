//! Engine tests on the in-memory journal over real loopback sockets.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::io::{uring_available, Backend};
use crate::journal::mem::{MemStore, MemStream};
use crate::loss::{LossConfig, LossRates};

const SEG: u32 = 64 << 10;

fn payload(i: u64) -> Vec<u8> {
    let len = if i % 300 == 299 {
        4000
    } else {
        1 + (i * 37 % 150) as usize
    };
    let mut v = vec![(i % 251) as u8; len];
    v[..len.min(8)].copy_from_slice(&i.to_le_bytes()[..len.min(8)]);
    v
}

fn backend() -> Backend {
    if uring_available().is_ok() {
        Backend::Uring
    } else {
        Backend::Plain
    }
}

struct Pair {
    stop_tx: Arc<AtomicBool>,
    stop_rx: Arc<AtomicBool>,
    tx: Option<std::thread::JoinHandle<crate::Result<()>>>,
    rx: Option<std::thread::JoinHandle<crate::Result<()>>>,
    tx_stats: Arc<SenderStats>,
    rx_stats: Arc<ReceiverStats>,
    rx_addr: std::net::SocketAddr,
}

impl Pair {
    fn stop(mut self) {
        self.stop_tx.store(true, Ordering::Relaxed);
        self.tx.take().unwrap().join().unwrap().unwrap();
        self.stop_rx.store(true, Ordering::Relaxed);
        self.rx.take().unwrap().join().unwrap().unwrap();
    }
}

fn start(
    primary: &MemStream,
    store: &MemStore,
    loss: Option<(LossRates, LossRates)>,
    key: Option<&[u8]>,
) -> Pair {
    let mut rc = ReceiverConfig::new("127.0.0.1:0".parse().unwrap());
    rc.udp.backend = backend();
    rc.window = 256 << 10;
    rc.auth = key.map(crate::auth::AuthKey::new);
    let mut sc;
    if let Some((s, r)) = loss {
        rc.loss = Some(LossConfig {
            send: r,
            recv: r,
            seed: 5,
        });
        sc = SenderConfig::new("127.0.0.1:1".parse().unwrap());
        sc.loss = Some(LossConfig {
            send: s,
            recv: s,
            seed: 6,
        });
    } else {
        sc = SenderConfig::new("127.0.0.1:1".parse().unwrap());
    }
    let mut r = UdpReceiver::new(Box::new(store.clone()), rc).unwrap();
    sc.remote = r.local_addr().unwrap();
    let sc_remote = sc.remote;
    sc.udp.backend = backend();
    sc.auth = key.map(crate::auth::AuthKey::new);
    sc.setup_interval = Duration::from_millis(10);
    let mut s = UdpSender::new(Box::new(primary.clone()), sc).unwrap();
    let (stop_tx, stop_rx) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (tx_stats, rx_stats) = (s.stats(), r.stats());
    let (a, b) = (stop_tx.clone(), stop_rx.clone());
    let rx = std::thread::spawn(move || r.run(&b));
    let tx = std::thread::spawn(move || s.run(&a));
    let rx_addr = sc_remote;
    Pair {
        stop_tx,
        stop_rx,
        tx: Some(tx),
        rx: Some(rx),
        tx_stats,
        rx_stats,
        rx_addr,
    }
}

fn wait_for(store: &MemStore, name: &str, end: u64, rs: &ReceiverStats) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let at = store.get(name).map(|s| s.end()).unwrap_or(0);
        if at >= end {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("replica stuck at {at} of {end}: {rs:?}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn run_with_loss(
    n: u64,
    loss: Option<(LossRates, LossRates)>,
) -> (Arc<SenderStats>, Arc<ReceiverStats>) {
    let primary = MemStream::new("s", SEG);
    let store = MemStore::default();
    let pair = start(&primary, &store, loss, None);
    for i in 0..n {
        primary.append(&payload(i));
        if i % 5000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let end = primary.end();
    let waited = wait_for(&store, "s", end, &pair.rx_stats);
    let (ts, rs) = (pair.tx_stats.clone(), pair.rx_stats.clone());
    pair.stop();
    waited.unwrap();
    let replica = store.get("s").unwrap();
    assert_eq!(replica.end(), end);
    assert!(
        replica.bytes(0, end) == primary.bytes(0, end),
        "replica differs"
    );
    let msgs = replica.payloads().unwrap();
    assert_eq!(msgs.len() as u64, n);
    for (i, m) in msgs.iter().enumerate() {
        assert_eq!(m, &payload(i as u64));
    }
    (ts, rs)
}

#[test]
fn replicates_without_loss() {
    let (ts, _) = run_with_loss(20_000, None);
    assert_eq!(ts.sessions.load(Ordering::Relaxed), 1);
}

#[test]
fn replicates_through_5_percent_drop_duplicate_reorder() {
    let (ts, rs) = run_with_loss(
        20_000,
        Some((LossRates::uniform(0.05), LossRates::uniform(0.05))),
    );
    assert!(ts.retransmit_packets.load(Ordering::Relaxed) > 0);
    assert!(rs.duplicates.load(Ordering::Relaxed) > 0);
}

#[test]
fn replicates_through_20_percent_drop() {
    let (ts, rs) = run_with_loss(
        20_000,
        Some((LossRates::drop_only(0.2), LossRates::drop_only(0.2))),
    );
    assert!(ts.retransmit_packets.load(Ordering::Relaxed) > 0);
    assert!(rs.naks.load(Ordering::Relaxed) > 0);
}

fn spawn_receiver(
    store: &MemStore,
    at: std::net::SocketAddr,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<crate::Result<()>>) {
    let mut rc = ReceiverConfig::new(at);
    rc.udp.backend = backend();
    rc.window = 256 << 10;
    let mut r = UdpReceiver::new(Box::new(store.clone()), rc).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    (stop, std::thread::spawn(move || r.run(&s2)))
}

fn spawn_sender(
    primary: &MemStream,
    to: std::net::SocketAddr,
    key: Option<&[u8]>,
) -> (Arc<AtomicBool>, std::thread::JoinHandle<crate::Result<()>>) {
    let mut sc = SenderConfig::new(to);
    sc.udp.backend = backend();
    sc.setup_interval = Duration::from_millis(10);
    sc.auth = key.map(crate::auth::AuthKey::new);
    let mut s = UdpSender::new(Box::new(primary.clone()), sc).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    (stop, std::thread::spawn(move || s.run(&s2)))
}

fn assert_same(primary: &MemStream, store: &MemStore, name: &str, n: u64) {
    let end = primary.end();
    let replica = store.get(name).unwrap();
    assert_eq!(replica.end(), end);
    assert!(
        replica.bytes(0, end) == primary.bytes(0, end),
        "replica differs"
    );
    assert_eq!(replica.payloads().unwrap().len() as u64, n);
}

#[test]
fn authenticated_session_replicates_and_rejects_wrong_key() {
    let primary = MemStream::new("a", SEG);
    let store = MemStore::default();
    let pair = start(&primary, &store, None, Some(b"shared secret"));
    for i in 0..2000 {
        primary.append(&payload(i));
    }
    wait_for(&store, "a", primary.end(), &pair.rx_stats).unwrap();
    let intruder = MemStream::new("a", SEG);
    intruder.append(b"forged");
    let (stop, h) = spawn_sender(&intruder, pair.rx_addr, Some(b"wrong key"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pair.rx_stats.bad_mac.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < deadline, "forged SETUPs not counted");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap().unwrap();
    assert_same(&primary, &store, "a", 2000);
    assert_eq!(pair.rx_stats.sessions.load(Ordering::Relaxed), 1);
    pair.stop();
}

#[test]
fn garbage_at_the_listening_port_neither_crashes_nor_corrupts() {
    let primary = MemStream::new("g", SEG);
    let store = MemStore::default();
    let pair = start(&primary, &store, None, None);
    let target = pair.rx_addr;
    let blaster = std::thread::spawn(move || {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000u32 {
            let len = (next() % 1500) as usize;
            let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && d.len() >= 16 {
                // A plausible header: right magic and version, random type/session/length.
                d[0] = 0x57;
                d[1] = 0x52;
                d[2] = crate::wire::VERSION;
                d[3] = (next() % 9) as u8;
                d[4..8].copy_from_slice(&[0, 0, 0, 0]);
                let body = (d.len() - 16) as u32;
                d[12..16].copy_from_slice(&body.to_le_bytes());
            }
            let _ = sock.send_to(&d, target);
            if i % 500 == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    for i in 0..20_000 {
        primary.append(&payload(i));
        if i % 2000 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    blaster.join().unwrap();
    wait_for(&store, "g", primary.end(), &pair.rx_stats).unwrap();
    let rs = pair.rx_stats.clone();
    pair.stop();
    assert_same(&primary, &store, "g", 20_000);
    let rejected =
        rs.bad_packets.load(Ordering::Relaxed) + rs.unknown_session.load(Ordering::Relaxed);
    assert!(rejected > 1000, "{rs:?}");
}

#[test]
fn receiver_restarted_mid_stream_resumes_without_gaps_or_duplicates() {
    let primary = MemStream::new("r", SEG);
    let store = MemStore::default();
    // Reserve a port for the receiver's two lives.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stop_r, hr) = spawn_receiver(&store, port);
    let (stop_s, hs) = spawn_sender(&primary, port, None);
    for i in 0..10_000 {
        primary.append(&payload(i));
    }
    let half = primary.end();
    let deadline = Instant::now() + Duration::from_secs(20);
    while store.get("r").map(|s| s.end()).unwrap_or(0) < half {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(2));
    }
    stop_r.store(true, Ordering::Relaxed);
    hr.join().unwrap().unwrap();
    // Written while the receiver is down: the journal is the retransmit buffer.
    for i in 10_000..20_000 {
        primary.append(&payload(i));
    }
    std::thread::sleep(Duration::from_millis(50));
    let (stop_r, hr) = spawn_receiver(&store, port);
    for i in 20_000..25_000 {
        primary.append(&payload(i));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.get("r").map(|s| s.end()).unwrap_or(0) < primary.end() {
        assert!(
            Instant::now() < deadline,
            "no catch-up after receiver restart"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop_s.store(true, Ordering::Relaxed);
    hs.join().unwrap().unwrap();
    stop_r.store(true, Ordering::Relaxed);
    hr.join().unwrap().unwrap();
    assert_same(&primary, &store, "r", 25_000);
}

#[test]
fn sender_restarted_mid_stream_resumes() {
    let primary = MemStream::new("t", SEG);
    let store = MemStore::default();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (stop_r, hr) = spawn_receiver(&store, port);
    let (stop_s, hs) = spawn_sender(&primary, port, None);
    for i in 0..10_000 {
        primary.append(&payload(i));
    }
    std::thread::sleep(Duration::from_millis(20));
    stop_s.store(true, Ordering::Relaxed);
    hs.join().unwrap().unwrap();
    for i in 10_000..20_000 {
        primary.append(&payload(i));
    }
    let (stop_s, hs) = spawn_sender(&primary, port, None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.get("t").map(|s| s.end()).unwrap_or(0) < primary.end() {
        assert!(
            Instant::now() < deadline,
            "no catch-up after sender restart"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    stop_s.store(true, Ordering::Relaxed);
    hs.join().unwrap().unwrap();
    stop_r.store(true, Ordering::Relaxed);
    hr.join().unwrap().unwrap();
    assert_same(&primary, &store, "t", 20_000);
}

#[test]
fn synchronous_mode_waits_for_acknowledgement() {
    let primary = MemStream::new("k", SEG);
    let store = MemStore::default();
    let acks = crate::sync::AckTracker::new();
    let mut rc = ReceiverConfig::new("127.0.0.1:0".parse().unwrap());
    rc.udp.backend = backend();
    let mut r = UdpReceiver::new(Box::new(store.clone()), rc).unwrap();
    let mut sc = SenderConfig::new(r.local_addr().unwrap());
    sc.udp.backend = backend();
    sc.acks = Some(acks.clone());
    let mut s = UdpSender::new(Box::new(primary.clone()), sc).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (a, b) = (stop.clone(), stop.clone());
    let hr = std::thread::spawn(move || r.run(&a));
    let hs = std::thread::spawn(move || s.run(&b));
    for i in 0..100 {
        primary.append(&payload(i));
    }
    let p = primary.end();
    acks.wait_for(1, p, Duration::from_secs(10)).unwrap();
    assert!(
        store.get("k").unwrap().end() >= p,
        "acknowledged means written"
    );
    let err = acks.wait_for(2, p, Duration::from_millis(50)).unwrap_err();
    assert!(matches!(
        err,
        crate::sync::SyncError::Timeout {
            required: 2,
            acked: 1,
            ..
        }
    ));
    stop.store(true, Ordering::Relaxed);
    hs.join().unwrap().unwrap();
    hr.join().unwrap().unwrap();
}
