//! Replication over UDP on loopback between ringway-core streams: loss, restarts, garbage.

mod common;

use std::time::Duration;

use common::*;
use ringway_transport::io::{uring_available, Backend};
use ringway_transport::loss::{LossConfig, LossRates};
use ringway_transport::udp::{ReceiverConfig, SenderConfig};

fn fast_receiver(loss: Option<LossConfig>, backend: Backend) -> ReceiverConfig {
    let mut c = ReceiverConfig::new("127.0.0.1:0".parse().unwrap());
    c.loss = loss;
    c.udp.backend = backend;
    c.session_timeout = Duration::from_secs(2);
    c
}

fn fast_sender(
    to: std::net::SocketAddr,
    loss: Option<LossConfig>,
    backend: Backend,
) -> SenderConfig {
    let mut c = SenderConfig::new(to);
    c.loss = loss;
    c.udp.backend = backend;
    c.session_timeout = Duration::from_secs(1);
    c.setup_interval = Duration::from_millis(20);
    c
}

/// Writes `n` messages while replication runs; checks the replica byte for byte.
fn replicate(n: u64, send: LossRates, recv: LossRates, backend: Backend) {
    let proot = temp_root();
    let rroot = temp_root();
    let p = primary(proot.path(), "orders");
    let loss_s = Some(LossConfig {
        send,
        recv: LossRates::default(),
        seed: 11,
    });
    let loss_r = Some(LossConfig {
        send: LossRates::default(),
        recv,
        seed: 12,
    });
    let (rx, addr) = start_receiver(rroot.path(), fast_receiver(loss_r, backend));
    let tx = start_sender(proot.path(), "orders", fast_sender(addr, loss_s, backend));
    let mut w = p.writer().unwrap();
    for i in 0..n {
        w.append(&payload(i)).unwrap();
        if i % 20_000 == 19_999 {
            // Let the sender's window move now and then, as a real publisher would.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let end = p.tail().0;
    wait_replica(rroot.path(), "orders", end, Duration::from_secs(120));
    let txs = tx.stats.clone();
    tx.stop().unwrap();
    let rxs = rx.stats.clone();
    rx.stop().unwrap();
    let bytes = assert_identical(
        &proot.path().join("orders"),
        &rroot.path().join("orders"),
        end,
    );
    check_replica_messages(rroot.path(), "orders", n);
    eprintln!(
        "{n} messages, {bytes} bytes identical; naks {} retransmitted packets {} duplicates {} sessions {}",
        txs.naks.load(std::sync::atomic::Ordering::Relaxed),
        txs.retransmit_packets.load(std::sync::atomic::Ordering::Relaxed),
        rxs.duplicates.load(std::sync::atomic::Ordering::Relaxed),
        txs.sessions.load(std::sync::atomic::Ordering::Relaxed),
    );
}

fn backend() -> Backend {
    match uring_available() {
        Ok(()) => Backend::Uring,
        Err(why) => {
            eprintln!("io_uring unavailable ({why}): testing the plain-socket fallback");
            Backend::Plain
        }
    }
}

#[test]
fn no_loss_replica_is_identical() {
    replicate(
        100_000,
        LossRates::default(),
        LossRates::default(),
        backend(),
    );
}

#[test]
fn five_percent_loss_duplication_reordering_both_ways() {
    replicate(
        100_000,
        LossRates::uniform(0.05),
        LossRates::uniform(0.05),
        backend(),
    );
}

#[test]
fn twenty_percent_loss_replica_is_identical() {
    replicate(
        100_000,
        LossRates::drop_only(0.2),
        LossRates::drop_only(0.2),
        backend(),
    );
}

#[test]
fn plain_socket_fallback_replicates_with_loss() {
    replicate(
        30_000,
        LossRates::uniform(0.05),
        LossRates::drop_only(0.05),
        Backend::Plain,
    );
}

/// The figure: a million messages at 0 %, 5 % and 20 % loss. Run by `.ci/run`
/// with `--ignored` (about a minute on two cores).
#[test]
#[ignore]
fn million_messages_at_0_5_20_percent_loss() {
    replicate(
        1_000_000,
        LossRates::default(),
        LossRates::default(),
        backend(),
    );
    replicate(
        1_000_000,
        LossRates::uniform(0.05),
        LossRates::uniform(0.05),
        backend(),
    );
    replicate(
        1_000_000,
        LossRates::drop_only(0.2),
        LossRates::drop_only(0.2),
        backend(),
    );
}
