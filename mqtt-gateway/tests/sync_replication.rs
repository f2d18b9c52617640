//! Synchronous replication against the gateway over real sockets: a simulated replica records
//! its acknowledged position in the stream's replica-ack table through the core API (as a
//! replication sender in another process would), and the tests watch what the client gets.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use ringway_core::{ReplicaAcks, Stream};

/// Nothing arrives for this long: used only to check that an acknowledgement is withheld (a
/// lower bound on waiting, never an upper bound on speed).
const QUIET: Duration = Duration::from_millis(300);

fn sync_config(dir: &std::path::Path, timeout_ms: u64) -> ringway_mqtt_gateway::Config {
    let mut c = config(dir);
    c.replication.sync_replicas = 1;
    c.replication.sync_timeout_ms = timeout_ms;
    c
}

fn replica(dir: &std::path::Path) -> (Stream, ReplicaAcks) {
    let s = Stream::open(dir, "mqtt").expect("routed stream exists");
    let a = s.replica_acks();
    (s, a)
}

fn payloads(dir: &std::path::Path) -> Vec<Vec<u8>> {
    frames(dir, "mqtt").into_iter().map(|(_, p)| p).collect()
}

async fn nothing_within(raw: &mut Raw, d: Duration) {
    if let Ok(p) = tokio::time::timeout(d, raw.recv()).await {
        panic!("expected no packet yet, got {p:?}");
    }
}

/// CONNECT (MQTT 5, clean start, no properties).
fn connect5(id: &str) -> Vec<u8> {
    let mut b = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0];
    b.extend_from_slice(&(id.len() as u16).to_be_bytes());
    b.extend_from_slice(id.as_bytes());
    let mut v = vec![0x10];
    remaining_length(b.len(), &mut v);
    v.extend_from_slice(&b);
    v
}

/// PUBLISH (MQTT 5, no properties).
fn publish5(topic: &str, qos: u8, pkid: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = (topic.len() as u16).to_be_bytes().to_vec();
    b.extend_from_slice(topic.as_bytes());
    b.extend_from_slice(&pkid.to_be_bytes());
    b.push(0);
    b.extend_from_slice(payload);
    let mut v = vec![0x30 | (qos << 1)];
    remaining_length(b.len(), &mut v);
    v.extend_from_slice(&b);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_waits_until_a_replica_holds_the_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(sync_config(dir.path(), 60_000)).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("sync-a", true, None)).await;
    // Three QoS 1 messages in one write: stored together, acknowledged together.
    let mut burst = Vec::new();
    for (i, p) in [b"m1", b"m2", b"m3"].iter().enumerate() {
        burst.extend(publish4("t/a", 1, 10 + i as u16, false, false, &p[..]));
    }
    raw.send(&burst).await;
    // Appended at once, acknowledged only once a replica holds them.
    let deadline = tokio::time::Instant::now() + WAIT;
    while payloads(dir.path()).len() < 3 {
        assert!(tokio::time::Instant::now() < deadline, "not appended");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nothing_within(&mut raw, QUIET).await;
    let (stream, acks) = replica(dir.path());
    let tail = stream.tail().0;
    // A replica short of the last message does not release the batch's last PUBACK.
    acks.record(0x51, tail - 8).unwrap();
    let mut got = Vec::new();
    while let Ok(Some(p)) = tokio::time::timeout(QUIET, raw.recv()).await {
        got.push(p);
    }
    assert!(got.len() < 3, "{got:?}");
    acks.record(0x51, tail).unwrap();
    while got.len() < 3 {
        got.push(raw.recv().await.expect("PUBACK"));
    }
    // In the order received.
    assert_eq!(
        got,
        vec![
            (0x40, vec![0, 10]),
            (0x40, vec![0, 11]),
            (0x40, vec![0, 12])
        ]
    );
    assert_eq!(g.metrics().sync_waits.load(Ordering::Relaxed), 3);
    assert_eq!(g.metrics().sync_timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(g.status().sync, Some((1, 0)));
    assert!(g
        .status()
        .to_string()
        .ends_with("| sync 1 replicas, 0 timeouts"));
    // QoS 0 needs no acknowledgement and QoS 2's PUBREC waits the same way.
    raw.send(&publish4("t/a", 2, 20, false, false, b"q2")).await;
    nothing_within(&mut raw, QUIET).await;
    acks.record(0x51, stream.tail().0).unwrap();
    assert_eq!(raw.recv().await, Some((0x50, vec![0, 20])));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_gets_a_failure_reason_code_after_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    // Long enough for the watcher thread to be scheduled on a loaded machine (the second
    // message must succeed), short enough for the first one's timeout to come soon.
    let (g, addr) = start(sync_config(dir.path(), 2000)).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect5("sync-v5")).await;
    let (first, body) = raw.recv().await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0));
    raw.send(&publish5("t/b", 1, 7, b"unreplicated")).await;
    // No replica: PUBACK with 0x80 and a reason string naming the stream and position.
    let (first, body) = raw.recv().await.expect("PUBACK");
    assert_eq!(first, 0x40);
    assert_eq!(&body[..3], &[0, 7, 0x80]);
    let text = String::from_utf8_lossy(&body[3..]);
    assert!(
        text.contains("0 of 1 replicas of stream mqtt") && text.contains("replicas: none"),
        "{text}"
    );
    // QoS 2 the same way: PUBREC 0x80, which ends the exchange (a PUBREL finds no packet id).
    raw.send(&publish5("t/b", 2, 9, b"unreplicated-2")).await;
    let (first, body) = raw.recv().await.expect("PUBREC");
    assert_eq!((first, &body[..3]), (0x50, &[0, 9, 0x80][..]));
    raw.send(&[0x62, 2, 0, 9]).await;
    assert_eq!(raw.recv().await, Some((0x70, vec![0, 9, 0x92])));
    // The messages are in the primary's journal (the failure says they are not replicated).
    assert_eq!(
        payloads(dir.path()),
        vec![b"unreplicated".to_vec(), b"unreplicated-2".to_vec()]
    );
    let m = scrape(g.metrics_addr().unwrap()).await;
    assert_eq!(
        sample(&m, "ringway_mqtt_sync_replication_timeouts_total"),
        2
    );
    // The connection stays usable; with a replica in place the next one succeeds.
    let (stream, acks) = replica(dir.path());
    acks.record(0x52, stream.tail().0 + 4096).unwrap();
    raw.send(&publish5("t/b", 1, 8, b"replicated")).await;
    assert_eq!(raw.recv().await, Some((0x40, vec![0, 8])));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt311_is_closed_unacknowledged_and_the_redelivery_is_not_appended_twice() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(sync_config(dir.path(), 200)).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("sync-311", false, None)).await;
    raw.send(&publish4("t/c", 1, 5, false, false, b"once"))
        .await;
    // No negative PUBACK in 3.1.1: the connection closes without one.
    assert_eq!(raw.recv().await, None);
    assert_eq!(g.metrics().sync_timeouts.load(Ordering::Relaxed), 1);
    assert_eq!(payloads(dir.path()), vec![b"once".to_vec()]);
    // The replica catches up; the client reconnects to its session and resends with DUP.
    let (stream, acks) = replica(dir.path());
    acks.record(0x53, stream.tail().0).unwrap();
    let mut raw = Raw::connect(addr).await;
    assert!(raw.handshake(&connect4("sync-311", false, None)).await);
    raw.send(&publish4("t/c", 1, 5, true, false, b"once")).await;
    assert_eq!(raw.recv().await, Some((0x40, vec![0, 5])));
    // Exactly once in the stream.
    assert_eq!(payloads(dir.path()), vec![b"once".to_vec()]);
    assert!(g.metrics().duplicates_suppressed.load(Ordering::Relaxed) >= 1);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mqtt5_client_past_receive_maximum_while_acks_are_held_is_disconnected() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = sync_config(dir.path(), 60_000);
    c.mqtt.max_inflight = 2;
    let (g, addr) = start(c).await;
    let mut raw = Raw::connect(addr).await;
    raw.send(&connect5("sync-max")).await;
    let (first, body) = raw.recv().await.expect("CONNACK");
    assert_eq!((first, body[1]), (0x20, 0));
    // Two held acknowledgements are the client's whole window; a third message exceeds our
    // Receive Maximum (2).
    let mut burst = Vec::new();
    for pkid in 1..=3 {
        burst.extend(publish5("t/m", 1, pkid, b"x"));
    }
    raw.send(&burst).await;
    assert_eq!(raw.recv().await, Some((0xE0, vec![0x93])));
    assert_eq!(raw.recv().await, None);
    g.shutdown().await.unwrap();
}
