use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::journal::mem::{MemStore, MemStream};

const SEG: u32 = 64 << 10;

fn payload(i: u64) -> Vec<u8> {
    let len = if i % 400 == 399 {
        70_000
    } else {
        1 + (i * 37 % 150) as usize
    };
    vec![(i % 251) as u8; len]
}

type Handle = (Arc<AtomicBool>, JoinHandle<crate::Result<()>>);

fn receiver(store: &MemStore, at: std::net::SocketAddr) -> (Handle, std::net::SocketAddr) {
    let mut r = TcpReceiver::new(Box::new(store.clone()), TcpReceiverConfig::new(at)).unwrap();
    let addr = r.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ((stop, std::thread::spawn(move || r.run(&s2))), addr)
}

fn sender(primary: &MemStream, to: std::net::SocketAddr) -> (Handle, Arc<crate::udp::SenderStats>) {
    let mut cfg = TcpSenderConfig::new(to);
    cfg.backoff.initial = Duration::from_millis(20);
    cfg.backoff.max = Duration::from_millis(200);
    let mut s = TcpSender::new(Box::new(primary.clone()), cfg);
    let stats = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ((stop, std::thread::spawn(move || s.run(&s2))), stats)
}

fn stop(h: Handle) {
    h.0.store(true, Ordering::Relaxed);
    h.1.join().unwrap().unwrap();
}

fn wait_for(store: &MemStore, name: &str, end: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.get(name).map(|s| s.end()).unwrap_or(0) < end {
        assert!(Instant::now() < deadline, "replica stuck");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn assert_same(primary: &MemStream, store: &MemStore, name: &str, n: usize) {
    let end = primary.end();
    let r = store.get(name).unwrap();
    assert_eq!(r.end(), end);
    assert!(r.bytes(0, end) == primary.bytes(0, end));
    assert_eq!(r.payloads().unwrap().len(), n);
}

#[test]
fn backoff_grows_exponentially_with_bounded_jitter() {
    let b = Backoff::default();
    assert_eq!(b.delay(0, 0.5), Duration::from_millis(100));
    assert_eq!(b.delay(3, 0.5), Duration::from_millis(800));
    assert_eq!(b.delay(20, 0.5), Duration::from_secs(5));
    assert_eq!(b.delay(0, 0.0), Duration::from_millis(50));
    assert!(b.delay(0, 0.999) < Duration::from_millis(150));
}

#[test]
fn tcp_replicates_including_frames_larger_than_a_packet() {
    let primary = MemStream::new("t", SEG * 4);
    let store = MemStore::default();
    let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap());
    let (sh, _) = sender(&primary, addr);
    for i in 0..20_000 {
        primary.append(&payload(i));
    }
    wait_for(&store, "t", primary.end());
    stop(sh);
    stop(rh);
    assert_same(&primary, &store, "t", 20_000);
}

#[test]
fn tcp_receiver_restart_reconnects_and_resumes_without_gaps_or_duplicates() {
    let primary = MemStream::new("u", SEG * 4);
    let store = MemStore::default();
    let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap());
    let (sh, stats) = sender(&primary, addr);
    for i in 0..10_000 {
        primary.append(&payload(i));
    }
    wait_for(&store, "u", primary.end() / 2);
    stop(rh);
    for i in 10_000..20_000 {
        primary.append(&payload(i));
    }
    std::thread::sleep(Duration::from_millis(300)); // a few failed reconnection attempts
    let (rh, _) = receiver(&store, addr);
    wait_for(&store, "u", primary.end());
    stop(sh);
    stop(rh);
    assert_same(&primary, &store, "u", 20_000);
    assert!(stats.sessions.load(Ordering::Relaxed) >= 2);
}

#[test]
fn tcp_garbage_connection_is_dropped_and_replication_continues() {
    use std::io::Write;
    let primary = MemStream::new("v", SEG * 4);
    let store = MemStore::default();
    let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap());
    let (sh, _) = sender(&primary, addr);
    for i in 0..2000 {
        primary.append(&payload(i));
    }
    for k in 0..20u8 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let junk: Vec<u8> = (0..4096u32)
            .map(|i| (i as u8).wrapping_mul(k + 7))
            .collect();
        let _ = s.write_all(&junk);
    }
    for i in 2000..4000 {
        primary.append(&payload(i));
    }
    wait_for(&store, "v", primary.end());
    stop(sh);
    stop(rh);
    assert_same(&primary, &store, "v", 4000);
}
