//! Senders record what their receivers acknowledge in the primary stream's replica-ack table
//! (`Stream::replica_acks`), where any process reads it: UDP unicast, UDP to several receivers
//! (the per-receiver flow control of multicast) and TCP, on loopback. The entries reach the
//! primary's tail, and a sender that closes releases them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ringway_core::Stream;
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::tcp::{TcpReceiver, TcpReceiverConfig, TcpSender, TcpSenderConfig};
use ringway_transport::udp::{ReceiverConfig, SenderConfig, SenderStats};

const WAIT: Duration = Duration::from_secs(60);

fn fill(stream: &Stream, from: u64, n: u64) -> u64 {
    let mut w = stream.writer().unwrap();
    for i in from..from + n {
        w.append(&payload(i)).unwrap();
    }
    stream.tail().0
}

/// Waits until `k` receivers in the table hold `tail`; returns the entries then.
fn wait_acked(stream: &Stream, k: usize, tail: u64) -> Vec<ringway_core::ReplicaAck> {
    let acks = stream.replica_acks();
    let deadline = Instant::now() + WAIT;
    loop {
        if acks.acknowledged_by(tail) >= k {
            return acks.entries();
        }
        assert!(
            Instant::now() < deadline,
            "table after {WAIT:?}: {:?}, waiting for {k} at {tail}",
            acks.entries()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn udp_receiver(root: &Path) -> (Running<ringway_transport::udp::ReceiverStats>, SocketAddr) {
    start_receiver(root, ReceiverConfig::new("127.0.0.1:0".parse().unwrap()))
}

fn udp_sender_config(to: SocketAddr, more: &[SocketAddr]) -> SenderConfig {
    let mut c = SenderConfig::new(to);
    c.setup_interval = Duration::from_millis(20);
    c.destinations = more.to_vec();
    c.min_receivers = 1 + more.len();
    c
}

#[test]
fn udp_unicast_receiver_reaches_the_tail_in_the_table() {
    let (proot, rroot) = (temp_root(), temp_root());
    let stream = primary(proot.path(), "s");
    let tail = fill(&stream, 0, 2000);
    let (rx, addr) = udp_receiver(rroot.path());
    let tx = start_sender(proot.path(), "s", udp_sender_config(addr, &[]));
    let entries = wait_acked(&stream, 1, tail);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].owner_pid, std::process::id());
    // New messages move the entry on: it follows the receiver, not just the set-up.
    let tail = fill(&stream, 2000, 500);
    wait_acked(&stream, 1, tail);
    assert_eq!(wait_replica(rroot.path(), "s", tail, WAIT), tail);
    // Closing the sender ends the session: the receiver no longer counts.
    tx.stop().unwrap();
    assert!(stream.replica_acks().entries().is_empty());
    rx.stop().unwrap();
}

#[test]
fn udp_to_two_receivers_records_each() {
    let (proot, r1, r2) = (temp_root(), temp_root(), temp_root());
    let stream = primary(proot.path(), "s");
    let tail = fill(&stream, 0, 1000);
    let (rx1, a1) = udp_receiver(r1.path());
    let (rx2, a2) = udp_receiver(r2.path());
    let tx = start_sender(proot.path(), "s", udp_sender_config(a1, &[a2]));
    let entries = wait_acked(&stream, 2, tail);
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_ne!(entries[0].receiver_id, entries[1].receiver_id);
    assert_eq!(stream.replica_acks().quorum_position(2), Some(tail));
    tx.stop().unwrap();
    assert!(stream.replica_acks().entries().is_empty());
    rx1.stop().unwrap();
    rx2.stop().unwrap();
}

#[test]
fn tcp_receiver_reaches_the_tail_in_the_table() {
    let (proot, rroot) = (temp_root(), temp_root());
    let stream = primary(proot.path(), "s");
    let tail = fill(&stream, 0, 2000);
    let mut r = TcpReceiver::new(
        Box::new(CoreStore::new(rroot.path(), None)),
        TcpReceiverConfig::new("127.0.0.1:0".parse().unwrap()),
    )
    .unwrap();
    let addr = r.local_addr().unwrap();
    let rx = {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let stats = r.stats();
        Running {
            handle: Some(std::thread::spawn(move || r.run(&s2))),
            stop,
            stats,
        }
    };
    let mut s = TcpSender::new(
        Box::new(CoreSource::open(proot.path(), "s").unwrap()),
        TcpSenderConfig::new(addr),
    );
    let tx: Running<SenderStats> = {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let stats = s.stats();
        Running {
            handle: Some(std::thread::spawn(move || s.run(&s2))),
            stop,
            stats,
        }
    };
    let entries = wait_acked(&stream, 1, tail);
    assert_eq!(entries.len(), 1, "{entries:?}");
    let tail = fill(&stream, 2000, 500);
    wait_acked(&stream, 1, tail);
    tx.stop().unwrap();
    assert!(stream.replica_acks().entries().is_empty());
    rx.stop().unwrap();
}
