//! A gateway that dies without a clean shutdown (its runtime torn down: no DISCONNECT, no
//! session parked, nothing flushed) while a persistent subscriber is mid-stream.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::{config, WAIT};
use ringway_mqtt_gateway::{Config, Gateway};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};

/// A gateway on its own runtime and thread, so that it can be killed abruptly.
struct Killable {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    addr: SocketAddr,
}

impl Killable {
    fn start(config: Config) -> Self {
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let gateway = rt.block_on(async {
                let g = Gateway::start(config).await.expect("gateway starts");
                ready_tx.send(g.mqtt_addrs()[0]).unwrap();
                let _ = stop_rx.await;
                g
            });
            // Abrupt: every task is dropped where it stands before the gateway is.
            rt.shutdown_timeout(Duration::from_millis(100));
            drop(gateway);
        });
        let addr = ready_rx.recv_timeout(WAIT).expect("gateway started");
        Killable {
            stop: Some(stop),
            thread: Some(thread),
            addr,
        }
    }

    fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3.1.1 client with a persistent session that acknowledges only what the test says.
async fn manual_subscriber(
    addr: SocketAddr,
) -> (AsyncClient, mpsc::UnboundedReceiver<rumqttc::Publish>) {
    let mut o = MqttOptions::new("follower", addr.ip().to_string(), addr.port());
    o.set_clean_session(false);
    o.set_manual_acks(true);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    let (connected_tx, connected_rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut connected = Some(connected_tx);
        while let Ok(ev) = el.poll().await {
            let publish = match ev {
                Event::Incoming(Packet::Publish(p)) => p,
                Event::Incoming(Packet::ConnAck(_)) => {
                    if let Some(c) = connected.take() {
                        let _ = c.send(());
                    }
                    continue;
                }
                _ => continue,
            };
            if tx.send(publish).is_err() {
                return;
            }
        }
    });
    tokio::time::timeout(WAIT, connected_rx)
        .await
        .expect("CONNACK within watchdog")
        .unwrap();
    (client, rx)
}

/// Position of cursor `mqtt:follower` on stream `mqtt`.
fn cursor(dir: &std::path::Path) -> Option<u64> {
    let stream = ringway_core::Stream::open(dir, "mqtt").unwrap();
    stream
        .cursors()
        .into_iter()
        .find(|c| c.name == "mqtt:follower")
        .map(|c| c.position.0)
}

/// Position of the frame of stream `mqtt` whose payload is `payload`.
fn position_of(dir: &std::path::Path, payload: &str) -> u64 {
    let stream = ringway_core::Stream::open(dir, "mqtt").unwrap();
    let mut r = stream.reader(ringway_core::Start::Beginning).unwrap();
    let mut found = None;
    while found.is_none()
        && r.poll(256, |f| {
            if f.payload() == payload.as_bytes() && found.is_none() {
                found = Some(f.position().0);
            }
        })
        .unwrap()
            > 0
    {}
    found.expect("message in the stream")
}

fn number(p: &rumqttc::Publish) -> u32 {
    std::str::from_utf8(&p.payload)
        .unwrap()
        .strip_prefix("m-")
        .unwrap()
        .parse()
        .unwrap()
}

/// The persistent session's named cursor follows the acknowledgements, so a crash redelivers
/// at most the unacknowledged in-flight window, and loses nothing.
#[test]
fn crash_redelivers_only_the_unacknowledged_window() {
    const TOTAL: u32 = 200;
    const ACKED: u32 = 100;
    const WINDOW: u16 = 8;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics.listen = None;
    cfg.mqtt.max_inflight = WINDOW;
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    let mut gw = Killable::start(cfg.clone());
    let before: Vec<u32> = clients.block_on(async {
        let (sub, mut received) = manual_subscriber(gw.addr).await;
        sub.subscribe("f/#", QoS::AtLeastOnce).await.unwrap();
        // The subscription is in place once a probe comes back (SUBSCRIBE and the probe travel
        // on different connections: probe again until one arrives; late ones are skipped below).
        let mut publ = common::client4(gw.addr, "fp", true).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        let probe = loop {
            publ.client
                .publish("f/probe", QoS::AtLeastOnce, false, "m-0")
                .await
                .unwrap();
            match tokio::time::timeout(Duration::from_millis(200), received.recv()).await {
                Ok(p) => break p.unwrap(),
                Err(_) => assert!(tokio::time::Instant::now() < deadline, "no probe came back"),
            }
        };
        sub.ack(&probe).await.unwrap();
        for i in 1..=TOTAL {
            publ.client
                .publish("f/x", QoS::AtLeastOnce, false, format!("m-{i}"))
                .await
                .unwrap();
        }
        for _ in 1..=TOTAL {
            publ.wait(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
                .await;
        }
        // Acknowledge the first ACKED messages; the next WINDOW are delivered, unacknowledged.
        let mut seen = Vec::new();
        while seen.len() < (ACKED + u32::from(WINDOW)) as usize {
            let p = tokio::time::timeout(WAIT, received.recv())
                .await
                .expect("message within watchdog")
                .unwrap();
            if number(&p) == 0 {
                // A late probe.
                sub.ack(&p).await.unwrap();
                continue;
            }
            if number(&p) <= ACKED {
                sub.ack(&p).await.unwrap();
            }
            seen.push(number(&p));
        }
        // The cursor follows the acknowledgements: it reaches the first unacknowledged message
        // while the connection is up (nothing parked it).
        let first_unacked = position_of(dir.path(), &format!("m-{}", ACKED + 1));
        let deadline = std::time::Instant::now() + WAIT;
        while cursor(dir.path()) != Some(first_unacked) {
            assert!(
                std::time::Instant::now() < deadline,
                "cursor at {:?}, first unacknowledged message at {first_unacked}",
                cursor(dir.path())
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Nothing more was sent: the window is full.
        while let Ok(p) = received.try_recv() {
            if number(&p) == 0 {
                sub.ack(&p).await.unwrap();
            } else {
                seen.push(number(&p));
            }
        }
        seen
    });
    assert_eq!(
        before,
        (1..=ACKED + u32::from(WINDOW)).collect::<Vec<_>>(),
        "in order, window full"
    );
    gw.kill();

    let gw = Killable::start(cfg);
    let after: Vec<u32> = clients.block_on(async {
        let (sub, mut received) = manual_subscriber(gw.addr).await;
        let mut got = Vec::new();
        let mut distinct = HashSet::new();
        while distinct.len() < (TOTAL - ACKED) as usize {
            let p = tokio::time::timeout(WAIT, received.recv())
                .await
                .expect("every unacknowledged message redelivered within watchdog")
                .unwrap();
            sub.ack(&p).await.unwrap();
            if number(&p) == 0 {
                continue; // a probe
            }
            got.push(number(&p));
            distinct.insert(number(&p));
        }
        got
    });
    // Nothing lost: everything from the first unacknowledged message on, in order of first
    // arrival.
    let mut first = HashSet::new();
    let firsts: Vec<u32> = after.iter().copied().filter(|n| first.insert(*n)).collect();
    assert_eq!(firsts, (ACKED + 1..=TOTAL).collect::<Vec<_>>());
    // Redelivered = received before the crash and again after: only the unacknowledged window.
    let redelivered: Vec<u32> = after
        .iter()
        .copied()
        .filter(|n| before.contains(n))
        .collect();
    assert!(
        redelivered.len() <= usize::from(WINDOW),
        "redelivered {} messages: {redelivered:?}",
        redelivered.len()
    );
    assert!(
        after.iter().all(|n| *n > ACKED),
        "an acknowledged message came back: {after:?}"
    );
}
