//! Receivers acknowledge progress within `status_progress_gap`, without waiting for the status
//! interval or a heartbeat: the acknowledged position a synchronous writer waits for follows the
//! data. Plus a measurement (ignored) of what those extra STATUS packets cost in throughput.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ringway_core::Stream;
use ringway_transport::udp::{ReceiverConfig, SenderConfig};

const HOUR: Duration = Duration::from_secs(3600);

/// A receiver whose only reason to send STATUS soon is progress (interval and quarter-window
/// rules far away), and a sender that never probes with heartbeats.
fn configs(
    progress_gap: Duration,
) -> (
    ReceiverConfig,
    impl Fn(std::net::SocketAddr) -> SenderConfig,
) {
    let mut r = ReceiverConfig::new("127.0.0.1:0".parse().unwrap());
    r.status_interval = HOUR;
    r.status_progress_gap = progress_gap;
    r.session_timeout = HOUR;
    let sender = |to| {
        let mut s = SenderConfig::new(to);
        s.setup_interval = Duration::from_millis(20);
        s.heartbeat_interval = HOUR;
        s.tail_probe = HOUR;
        s.session_timeout = HOUR;
        s
    };
    (r, sender)
}

fn acked_by_one(stream: &Stream, position: u64) -> bool {
    stream.replica_acks().acknowledged_by(position) >= 1
}

#[test]
fn progress_is_acknowledged_without_heartbeats_or_the_status_interval() {
    let (proot, rroot) = (temp_root(), temp_root());
    let stream = primary(proot.path(), "p");
    let (rcfg, scfg) = configs(Duration::from_micros(100));
    let (rx, addr) = start_receiver(rroot.path(), rcfg);
    let tx = start_sender(proot.path(), "p", scfg(addr));
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream.replica_acks().entries().is_empty() {
        assert!(Instant::now() < deadline, "session set up");
        std::thread::sleep(Duration::from_millis(2));
    }
    // Three separate messages, each acknowledged on its own (a watchdog of a minute, against an
    // hour for the interval rule).
    let mut w = stream.writer().unwrap();
    for i in 0..3 {
        w.append(&payload(i)).unwrap();
        let tail = stream.tail().0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !acked_by_one(&stream, tail) {
            assert!(
                Instant::now() < deadline,
                "message {i} not acknowledged: {:?}",
                stream.replica_acks().entries()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    tx.stop().unwrap();
    rx.stop().unwrap();
}

/// Replicates `n` messages written as fast as possible; returns msgs/s from the first append to
/// the replica holding the last.
fn throughput(progress_gap: Duration, n: u64) -> f64 {
    let (proot, rroot) = (temp_root(), temp_root());
    let stream = primary(proot.path(), "t");
    let (mut rcfg, _) = configs(progress_gap);
    rcfg.status_interval = Duration::from_millis(10);
    let (rx, addr) = start_receiver(rroot.path(), rcfg);
    let mut scfg = SenderConfig::new(addr);
    scfg.setup_interval = Duration::from_millis(20);
    let tx = start_sender(proot.path(), "t", scfg);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stream.replica_acks().entries().is_empty() {
        assert!(Instant::now() < deadline, "session set up");
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut w = stream.writer().unwrap();
    let msg = [7u8; 64];
    let start = Instant::now();
    for _ in 0..n {
        w.append(&msg).unwrap();
    }
    let end = stream.tail().0;
    wait_replica(rroot.path(), "t", end, Duration::from_secs(300));
    let rate = n as f64 / start.elapsed().as_secs_f64();
    tx.stop().unwrap();
    rx.stop().unwrap();
    rate
}

/// A measurement, not a check (`--ignored --nocapture`, optimised build): 64-byte throughput
/// with and without the progress rule, alternating, in one run.
#[test]
#[ignore]
fn measure_progress_status_cost() {
    let n = 2_000_000;
    let mut ratios = Vec::new();
    for round in 0..10 {
        let off = throughput(Duration::MAX, n);
        let on = throughput(Duration::from_micros(100), n);
        println!(
            "round {round}: without progress STATUS {off:.0} msgs/s, with (100 us gap) {on:.0} msgs/s, ratio {:.3}",
            on / off
        );
        ratios.push(on / off);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "median ratio {:.3} (min {:.3}, max {:.3})",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
