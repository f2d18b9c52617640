use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::io::Backend;
use crate::journal::mem::{MemStore, MemStream};

const SEG: u32 = 64 << 10;

/// Plain sockets always; io_uring too when this kernel supports it (said when it does not).
fn backends() -> Vec<Backend> {
    match uring_available() {
        Ok(()) => vec![Backend::Plain, Backend::Uring],
        Err(why) => {
            eprintln!("io_uring unavailable ({why}): testing plain sockets only");
            vec![Backend::Plain]
        }
    }
}

fn payload(i: u64) -> Vec<u8> {
    let len = if i % 400 == 399 {
        70_000
    } else {
        1 + (i * 37 % 150) as usize
    };
    vec![(i % 251) as u8; len]
}

type Handle = (Arc<AtomicBool>, JoinHandle<crate::Result<()>>);

fn receiver(store: &MemStore, at: SocketAddr, backend: Backend) -> (Handle, SocketAddr) {
    let mut cfg = TcpReceiverConfig::new(at);
    cfg.backend = backend;
    let mut r = TcpReceiver::new(Box::new(store.clone()), cfg).unwrap();
    assert_eq!(r.backend(), backend);
    let addr = r.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ((stop, std::thread::spawn(move || r.run(&s2))), addr)
}

fn sender_config(to: SocketAddr, backend: Backend) -> TcpSenderConfig {
    let mut cfg = TcpSenderConfig::new(to);
    cfg.backoff.initial = Duration::from_millis(20);
    cfg.backoff.max = Duration::from_millis(200);
    cfg.backend = backend;
    cfg
}

fn sender(
    primary: &MemStream,
    to: SocketAddr,
    backend: Backend,
) -> (Handle, Arc<crate::udp::SenderStats>) {
    let mut s = TcpSender::new(Box::new(primary.clone()), sender_config(to, backend));
    assert_eq!(s.backend(), backend);
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
    for backend in backends() {
        let primary = MemStream::new("t", SEG * 4);
        let store = MemStore::default();
        let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap(), backend);
        let (sh, _) = sender(&primary, addr, backend);
        for i in 0..20_000 {
            primary.append(&payload(i));
        }
        wait_for(&store, "t", primary.end());
        stop(sh);
        stop(rh);
        assert_same(&primary, &store, "t", 20_000);
    }
}

#[test]
fn tcp_receiver_restart_reconnects_and_resumes_without_gaps_or_duplicates() {
    for backend in backends() {
        let primary = MemStream::new("u", SEG * 4);
        let store = MemStore::default();
        let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap(), backend);
        let (sh, stats) = sender(&primary, addr, backend);
        for i in 0..10_000 {
            primary.append(&payload(i));
        }
        wait_for(&store, "u", primary.end() / 2);
        stop(rh);
        for i in 10_000..20_000 {
            primary.append(&payload(i));
        }
        std::thread::sleep(Duration::from_millis(300)); // a few failed reconnection attempts
        let (rh, _) = receiver(&store, addr, backend);
        wait_for(&store, "u", primary.end());
        stop(sh);
        stop(rh);
        assert_same(&primary, &store, "u", 20_000);
        assert!(stats.sessions.load(Ordering::Relaxed) >= 2);
    }
}

#[test]
fn tcp_garbage_connection_is_dropped_and_replication_continues() {
    for backend in backends() {
        let primary = MemStream::new("v", SEG * 4);
        let store = MemStore::default();
        let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap(), backend);
        let (sh, _) = sender(&primary, addr, backend);
        for i in 0..2000 {
            primary.append(&payload(i));
        }
        for k in 0..20u8 {
            let mut s = TcpStream::connect(addr).unwrap();
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
}

/// Forwards connections on its port to `to`. The first connection is cut (both ways) after
/// `cut_after` bytes from the sender, in the middle of whatever packet is passing; later ones are
/// forwarded whole. Returns its address and the number of connections it has seen.
fn cutting_proxy(to: SocketAddr, cut_after: usize) -> (SocketAddr, Arc<AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    std::thread::spawn(move || {
        let mut first = true;
        for down in l.incoming() {
            let Ok(mut down) = down else { return };
            let Ok(mut up) = TcpStream::connect(to) else {
                return;
            };
            let limit = if first { cut_after } else { usize::MAX };
            if first {
                d2.store(true, Ordering::Relaxed);
            }
            first = false;
            let (mut up2, mut down2) = (up.try_clone().unwrap(), down.try_clone().unwrap());
            // Receiver -> sender, whole.
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut up2, &mut down2);
                let _ = down2.shutdown(std::net::Shutdown::Both);
            });
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1000];
                let mut passed = 0usize;
                loop {
                    let n = match down.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(limit - passed),
                    };
                    if up.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    passed += n;
                    if passed >= limit {
                        break;
                    }
                }
                let _ = up.shutdown(std::net::Shutdown::Both);
                let _ = down.shutdown(std::net::Shutdown::Both);
            });
        }
    });
    (addr, done)
}

#[test]
fn tcp_connection_cut_mid_packet_resumes_without_gaps_or_duplicates() {
    for backend in backends() {
        let primary = MemStream::new("w", SEG * 4);
        let store = MemStore::default();
        for i in 0..20_000 {
            primary.append(&payload(i));
        }
        let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap(), backend);
        // 100,003 bytes: past the handshake, inside some DATA packet, not on a frame boundary.
        let (proxy, cut) = cutting_proxy(addr, 100_003);
        let (sh, stats) = sender(&primary, proxy, backend);
        wait_for(&store, "w", primary.end());
        stop(sh);
        stop(rh);
        assert!(cut.load(Ordering::Relaxed));
        assert!(stats.sessions.load(Ordering::Relaxed) >= 2, "reconnected");
        assert_same(&primary, &store, "w", 20_000);
    }
}

#[test]
fn tcp_sender_survives_a_receiver_that_answers_garbage() {
    for backend in backends() {
        let primary = MemStream::new("x", SEG * 4);
        for i in 0..3000 {
            primary.append(&payload(i));
        }
        // A listener that answers every connection with junk and closes it.
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = fake.local_addr().unwrap();
        let served = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let served2 = served.clone();
        let junk = std::thread::spawn(move || {
            for s in fake.incoming().take(3) {
                let mut s = s.unwrap();
                let _ = s.write_all(&[0x5a; 300]);
                let mut b = [0u8; 256];
                let _ = s.read(&mut b);
                served2.fetch_add(1, Ordering::Relaxed);
            }
            drop(fake); // the port is free again for the real receiver
        });
        let (sh, stats) = sender(&primary, addr, backend);
        junk.join().unwrap();
        assert_eq!(served.load(Ordering::Relaxed), 3);
        assert_eq!(stats.sessions.load(Ordering::Relaxed), 0);
        let store = MemStore::default();
        let (rh, _) = receiver(&store, addr, backend);
        wait_for(&store, "x", primary.end());
        stop(sh);
        stop(rh);
        assert_same(&primary, &store, "x", 3000);
    }
}

#[test]
fn tcp_sender_driven_by_step_replicates_and_closes() {
    for backend in backends() {
        let primary = MemStream::new("z", SEG * 4);
        let store = MemStore::default();
        let (rh, addr) = receiver(&store, "127.0.0.1:0".parse().unwrap(), backend);
        let mut s = TcpSender::new(Box::new(primary.clone()), sender_config(addr, backend));
        assert!(!s.is_connected());
        for i in 0..5000 {
            primary.append(&payload(i));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.get("z").map(|r| r.end()).unwrap_or(0) < primary.end() {
            s.step().unwrap();
            assert!(Instant::now() < deadline, "replica stuck");
        }
        assert!(s.is_connected());
        s.close().unwrap();
        assert!(!s.is_connected());
        assert_eq!(s.stats().sessions.load(Ordering::Relaxed), 1);
        stop(rh);
        assert_same(&primary, &store, "z", 5000);
    }
}

#[test]
fn uring_stream_of_many_messages_takes_far_fewer_system_calls_than_messages() {
    if let Err(why) = uring_available() {
        eprintln!("io_uring unavailable ({why}): nothing to count");
        return;
    }
    let n = 100_000u64;
    let primary = MemStream::new("y", 1 << 20);
    for i in 0..n {
        primary.append(&[(i % 251) as u8; 64]);
    }
    let store = MemStore::default();
    let mut rc = TcpReceiverConfig::new("127.0.0.1:0".parse().unwrap());
    rc.backend = Backend::Uring;
    // Idle waits end at the first completion anyway; long ones keep a slow (debug, loaded) run
    // from counting a wake-up per millisecond of idleness as if it were work.
    rc.idle_wait = Duration::from_millis(50);
    let mut r = TcpReceiver::new(Box::new(store.clone()), rc).unwrap();
    let addr = r.local_addr().unwrap();
    let rstop = Arc::new(AtomicBool::new(false));
    let rs = rstop.clone();
    let rh = std::thread::spawn(move || r.run(&rs).map(|()| r));
    let mut sc = sender_config(addr, Backend::Uring);
    sc.idle_wait = Duration::from_millis(50);
    let mut s = TcpSender::new(Box::new(primary.clone()), sc);
    let sstop = Arc::new(AtomicBool::new(false));
    let ss = sstop.clone();
    let sh = std::thread::spawn(move || s.run(&ss).map(|()| s));
    wait_for(&store, "y", primary.end());
    sstop.store(true, Ordering::Relaxed);
    let s = sh.join().unwrap().unwrap();
    rstop.store(true, Ordering::Relaxed);
    let r = rh.join().unwrap().unwrap();
    assert_same(&primary, &store, "y", n as usize);
    let (sc, rc) = (s.io_counters(), r.io_counters());
    eprintln!("{n} messages: sender {sc:?}, receiver {rc:?}");
    // Counts, not times: a send carries a batch of ~64 KiB DATA packets and a receive completion
    // whatever has arrived, so both sides enter the kernel far less often than once a message.
    assert!(sc.syscalls * 20 < n, "sender: {sc:?}");
    assert!(rc.syscalls * 20 < n, "receiver: {rc:?}");
    assert!(sc.sent > 0 && rc.received > 0);
}
