//! A fresh replica of a primary that no longer holds position 0 (a ring that has lapped, or
//! retention that deleted the first segments) starts at the primary's oldest position, over UDP
//! and over TCP, and holds the same bytes from there.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringway_core::{Retention, Start, Stream, StreamConfig};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::tcp::{TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig};
use ringway_transport::udp::{ReceiverConfig, SenderConfig, UdpReceiver, UdpSender};

/// Appends messages `from..to` (payload `i` carries `i` in its first 8 bytes).
fn write(stream: &Stream, from: u64, to: u64) {
    let mut w = stream.writer().unwrap();
    for i in from..to {
        w.append(&payload(i)).unwrap();
    }
}

/// Messages of the replica: verified, consecutive, ending at message `last`; returns the first.
fn check_tail_messages(root: &Path, name: &str, last: u64) -> u64 {
    let s = Stream::open(root, name).unwrap();
    let report = s.verify().unwrap();
    assert!(report.is_intact(), "verify: {:?}", report.problem);
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut first = None;
    let mut next = 0;
    loop {
        let n = r
            .poll(1024, |f| {
                let i = u64::from_le_bytes(f.payload()[..8].try_into().unwrap());
                if first.is_none() {
                    first = Some(i);
                    next = i;
                }
                assert_eq!(f.payload(), &payload(next)[..], "message {next}");
                next += 1;
            })
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(next, last + 1, "replica ends at the primary's last message");
    first.expect("replica holds messages")
}

fn run_case(udp: bool, cfg: StreamConfig) {
    let proot = temp_root();
    let rroot = temp_root();
    let p = Stream::create(proot.path(), "lapped", &cfg).unwrap();
    // About 6 MiB of messages: the primary (4 MiB ring, or 2 segments retained) drops position 0.
    write(&p, 0, 60_000);
    let oldest = p.first_position().0;
    assert!(oldest > 0, "the primary still holds position 0");
    // A replica that exists but holds nothing (created by an earlier run) starts over too.
    if udp {
        let replica_cfg = StreamConfig::default()
            .segment_size(SEGMENT)
            .max_message_size(cfg.max_message_size)
            .crc(cfg.crc)
            .replica(true);
        Stream::create(rroot.path(), "lapped", &replica_cfg).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (rr, pr) = (rroot.path().to_path_buf(), proot.path().to_path_buf());
    let (s1, s2) = (stop.clone(), stop.clone());
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let rx = std::thread::spawn(move || {
        let store = Box::new(CoreStore::new(&rr, None));
        let any = "127.0.0.1:0".parse().unwrap();
        if udp {
            let mut r = UdpReceiver::new(store, ReceiverConfig::new(any))?;
            addr_tx.send(r.local_addr()?).unwrap();
            r.run(&s1)
        } else {
            let mut r = TcpReceiver::new(store, TcpReceiverConfig::new(any))?;
            addr_tx.send(r.local_addr()?).unwrap();
            r.run(&s1)
        }
    });
    let addr = addr_rx.recv().unwrap();
    let tx = std::thread::spawn(move || {
        let src = Box::new(CoreSource::open(&pr, "lapped")?);
        if udp {
            let mut c = SenderConfig::new(addr);
            c.setup_interval = Duration::from_millis(20);
            UdpSender::new(src, c)?.run(&s2)
        } else {
            TcpSender::new(src, TcpSenderConfig::new(addr)).run(&s2)
        }
    });
    // Live messages after the receiver joined arrive too.
    write(&p, 60_000, 61_000);
    let end = p.tail().0;
    wait_replica(rroot.path(), "lapped", end, Duration::from_secs(60));
    stop.store(true, Ordering::Relaxed);
    tx.join().unwrap().unwrap();
    rx.join().unwrap().unwrap();
    let r = Stream::open(rroot.path(), "lapped").unwrap();
    let oldest_now = p.first_position().0;
    assert!(
        r.first_position().0 >= oldest && r.first_position().0 <= oldest_now,
        "replica starts at {}, primary's oldest was {oldest}..{oldest_now}",
        r.first_position().0
    );
    assert_identical_range(
        &proot.path().join("lapped"),
        &rroot.path().join("lapped"),
        r.first_position().0,
        end,
    );
    let first = check_tail_messages(rroot.path(), "lapped", 60_999);
    assert!(first > 0, "the replica starts past message 0");
}

fn ring() -> StreamConfig {
    StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(16 << 10)
        .crc(true)
        .ring(4)
}

fn trimmed() -> StreamConfig {
    StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(16 << 10)
        .retention(Retention::default().max_segments(2))
}

#[test]
fn udp_fresh_replica_of_a_lapped_ring() {
    run_case(true, ring());
}

#[test]
fn udp_fresh_replica_of_a_retention_trimmed_primary() {
    run_case(true, trimmed());
}

#[test]
fn tcp_fresh_replica_of_a_lapped_ring() {
    run_case(false, ring());
}

#[test]
fn tcp_fresh_replica_of_a_retention_trimmed_primary() {
    run_case(false, trimmed());
}
