//! The CLI entry points end to end: receive + replicate between ringway-core streams, stopped
//! by their shutdown flags as Ctrl-C would.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ringway_transport::cli::{receive, replicate, ReceiveArgs, ReplicateArgs};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn round_trip(scheme: &str) {
    let port = free_port();
    let url = format!("{scheme}://127.0.0.1:{port}");
    round_trip_urls(url.clone(), url);
}

fn round_trip_urls(listen: String, to: String) {
    round_trip_with(listen, to, false);
}

fn round_trip_with(listen: String, to: String, busy_poll: bool) {
    let proot = temp_root();
    let rroot = temp_root();
    let p = primary(proot.path(), "ticks");
    let mut w = p.writer().unwrap();
    for i in 0..5000 {
        w.append(&payload(i)).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let rargs = ReceiveArgs {
        listen,
        dir: Some(rroot.path().to_path_buf()),
        stream: Some("ticks-replica".into()),
        progress: Some(Duration::from_millis(100)),
        busy_poll,
        ..Default::default()
    };
    let (s1, s2) = (stop.clone(), stop.clone());
    let rx = std::thread::spawn(move || {
        let mut out = Vec::new();
        receive(&rargs, s1, &mut out).map(|_| String::from_utf8(out).unwrap())
    });
    let sargs = ReplicateArgs {
        stream: "ticks".into(),
        to,
        dir: Some(proot.path().to_path_buf()),
        progress: Some(Duration::from_millis(100)),
        busy_poll,
        ..Default::default()
    };
    let tx = std::thread::spawn(move || {
        let mut out = Vec::new();
        replicate(&sargs, s2, &mut out).map(|_| String::from_utf8(out).unwrap())
    });
    for i in 5000..10_000 {
        w.append(&payload(i)).unwrap();
    }
    let end = p.tail().0;
    wait_replica(rroot.path(), "ticks-replica", end, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(250));
    stop.store(true, Ordering::Relaxed);
    let tx_out = tx.join().unwrap().unwrap();
    let rx_out = rx.join().unwrap().unwrap();
    assert!(tx_out.contains("position "), "{tx_out}");
    assert!(rx_out.contains("position "), "{rx_out}");
    assert_identical(
        &proot.path().join("ticks"),
        &rroot.path().join("ticks-replica"),
        end,
    );
    check_replica_messages(rroot.path(), "ticks-replica", 10_000);
    // A replica refuses local writers.
    let r = ringway_core::Stream::open(rroot.path(), "ticks-replica").unwrap();
    assert!(r.writer().is_err());
}

#[test]
fn cli_udp_round_trip() {
    round_trip("udp");
}

/// `--busy-poll`: both ends spin and receive with direct calls.
#[test]
fn cli_udp_busy_poll_round_trip() {
    let url = format!("udp://127.0.0.1:{}", free_port());
    round_trip_with(url.clone(), url, true);
}

#[test]
fn cli_tcp_round_trip() {
    round_trip("tcp");
}

/// Multicast on the loopback interface (`IP_MULTICAST_LOOP`): the URL options reach the sockets.
#[test]
fn cli_udp_multicast_round_trip() {
    let port = free_port();
    round_trip_urls(
        format!("udp://239.7.9.1:{port}?interface=127.0.0.1"),
        format!("udp://239.7.9.1:{port}?interface=127.0.0.1&ttl=1&loop=1&min-receivers=1"),
    );
}

#[test]
fn cli_errors_are_typed() {
    let root = temp_root();
    let stop = Arc::new(AtomicBool::new(false));
    let mut out = Vec::new();
    let e = replicate(
        &ReplicateArgs {
            stream: "missing".into(),
            to: "udp://127.0.0.1:9".into(),
            dir: Some(root.path().to_path_buf()),
            ..Default::default()
        },
        stop.clone(),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("not found"), "{e}");
    primary(root.path(), "s");
    let e = replicate(
        &ReplicateArgs {
            stream: "s".into(),
            to: "ftp://x".into(),
            dir: Some(root.path().to_path_buf()),
            ..Default::default()
        },
        stop,
        &mut out,
    )
    .unwrap_err();
    assert!(matches!(e, ringway_transport::Error::Endpoint(_)), "{e}");
}
