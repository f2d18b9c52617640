//! A small QoS 1 publish load generator (rumqttc), for comparing brokers by hand:
//! `cargo run --release -p ringway-mqtt-gateway --example load -- HOST:PORT [CLIENTS] [SECONDS] [PAYLOAD] [INFLIGHT]`
//! Each client publishes QoS 1 messages back to back with up to INFLIGHT unacknowledged; the
//! output is the number of PUBACKs received per second over the measured interval (after a 1 s
//! warm-up). The bench crate's `mqtt` scenario is the reference measurement; this is a tool.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let addr: String = arg(1, "127.0.0.1:1883".to_string());
    let clients: usize = arg(2, 100);
    let seconds: u64 = arg(3, 5);
    let payload: usize = arg(4, 64);
    let inflight: u16 = arg(5, 16);
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    let port: u16 = port.parse().expect("port");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Relaxed counters and flags: independent statistics, read after the tasks stop.
    let acks = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        for i in 0..clients {
            let mut o = MqttOptions::new(format!("load-{i}"), host, port);
            o.set_inflight(inflight);
            o.set_keep_alive(Duration::from_secs(30));
            let (client, mut el) = AsyncClient::new(o, usize::from(inflight) * 2);
            let (acks, stop, errors) = (acks.clone(), stop.clone(), errors.clone());
            let body = vec![b'x'; payload];
            tokio::spawn(async move {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if client
                        .publish(format!("load/{i}"), QoS::AtLeastOnce, false, body.clone())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                loop {
                    match el.poll().await {
                        Ok(Event::Incoming(Packet::PubAck(_))) => {
                            acks.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {}
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let a0 = acks.load(Ordering::Relaxed);
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let a1 = acks.load(Ordering::Relaxed);
        let dt = t0.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        println!(
            "clients={clients} payload={payload}B inflight={inflight} acks={} seconds={dt:.2} rate={:.0} msg/s connection_errors={}",
            a1 - a0,
            (a1 - a0) as f64 / dt,
            errors.load(Ordering::Relaxed)
        );
    });
    rt.shutdown_timeout(Duration::from_millis(100));
}
