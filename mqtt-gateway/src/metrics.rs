//! Gateway counters and their Prometheus text rendering, plus the tiny HTTP responder that
//! serves them on `/metrics`.
//!
//! Every counter is a relaxed atomic: each is an independent statistic read only for reporting,
//! so no ordering with other memory is needed; a scrape may see counters from slightly different
//! instants, which Prometheus tolerates.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Why a message was not delivered or not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// A subscriber's bounded queue was full (only for sessions that cannot read the journal;
    /// normally a full queue makes the session catch up from the journal instead).
    QueueFull,
    /// A subscriber catching up from the journal was lapped by retention.
    Lapped,
    /// The MQTT 5 message expiry interval passed before delivery.
    Expired,
    /// No route matches the published topic.
    NoRoute,
    /// The publisher's ACL forbids the topic.
    AclDenied,
    /// The message exceeds the subscriber's maximum packet size.
    ClientPacketSize,
    /// A frame of a routed stream has no usable topic.
    NoTopic,
}

const DROPS: [(Drop, &str); 7] = [
    (Drop::Expired, "expired"),
    (Drop::QueueFull, "queue_full"),
    (Drop::Lapped, "lapped"),
    (Drop::NoRoute, "no_route"),
    (Drop::AclDenied, "acl_denied"),
    (Drop::ClientPacketSize, "client_max_packet_size"),
    (Drop::NoTopic, "no_topic"),
];

/// All gateway counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Connections currently open (after CONNACK success).
    pub connections: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// CONNECTs refused (auth, limits, protocol).
    pub connects_refused: AtomicU64,
    /// PUBLISH packets received, by QoS.
    pub publish_in: [AtomicU64; 3],
    /// Payload bytes received in PUBLISH packets.
    pub publish_in_bytes: AtomicU64,
    /// Frames appended to the journal.
    pub appended: AtomicU64,
    /// Appends that failed.
    pub append_errors: AtomicU64,
    /// PUBLISH packets sent to subscribers.
    pub publish_out: AtomicU64,
    /// QoS 1/2 redeliveries recognised and not appended again.
    pub duplicates_suppressed: AtomicU64,
    /// Messages sent to the dead-letter stream.
    pub dead_letters: AtomicU64,
    /// QoS 1/2 acknowledgements that waited for replicas (synchronous replication).
    pub sync_waits: AtomicU64,
    /// Of those, the ones whose replicas did not acknowledge in time.
    pub sync_timeouts: AtomicU64,
    /// SUBSCRIBE filters refused by ACL.
    pub subscribe_denied: AtomicU64,
    /// Connections closed because of a malformed packet or protocol violation.
    pub protocol_errors: AtomicU64,
    /// Will messages published.
    pub wills: AtomicU64,
    drops: [AtomicU64; 7],
    /// Times a session's queue overflowed and it switched to reading the journal.
    pub lagging: AtomicU64,
    /// Current number of subscriptions (gauge).
    pub subscriptions: AtomicU64,
    /// Current number of retained topics (gauge).
    pub retained: AtomicU64,
}

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one dropped message.
    pub fn dropped(&self, why: Drop) {
        let i = DROPS.iter().position(|(d, _)| *d == why).unwrap_or(0);
        Self::inc(&self.drops[i]);
    }

    /// Current value of a drop counter.
    pub fn drops(&self, why: Drop) -> u64 {
        let i = DROPS.iter().position(|(d, _)| *d == why).unwrap_or(0);
        self.drops[i].load(Ordering::Relaxed)
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self) -> String {
        let mut s = String::with_capacity(2048);
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut one = |name: &str, kind: &str, help: &str, v: u64| {
            let _ = write!(
                s,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        };
        one(
            "ringway_mqtt_connections",
            "gauge",
            "Open MQTT connections.",
            g(&self.connections),
        );
        one(
            "ringway_mqtt_connections_total",
            "counter",
            "MQTT connections accepted.",
            g(&self.connections_total),
        );
        one(
            "ringway_mqtt_connects_refused_total",
            "counter",
            "CONNECTs refused.",
            g(&self.connects_refused),
        );
        one(
            "ringway_mqtt_publish_in_bytes_total",
            "counter",
            "Payload bytes received.",
            g(&self.publish_in_bytes),
        );
        one(
            "ringway_mqtt_appended_total",
            "counter",
            "Frames appended to the journal.",
            g(&self.appended),
        );
        one(
            "ringway_mqtt_append_errors_total",
            "counter",
            "Journal appends that failed.",
            g(&self.append_errors),
        );
        one(
            "ringway_mqtt_publish_out_total",
            "counter",
            "PUBLISH packets sent to subscribers.",
            g(&self.publish_out),
        );
        one(
            "ringway_mqtt_duplicates_suppressed_total",
            "counter",
            "Redeliveries not appended again.",
            g(&self.duplicates_suppressed),
        );
        one(
            "ringway_mqtt_dead_letters_total",
            "counter",
            "Messages sent to the dead-letter stream.",
            g(&self.dead_letters),
        );
        one(
            "ringway_mqtt_sync_replication_waits_total",
            "counter",
            "QoS 1/2 acknowledgements that waited for replicas.",
            g(&self.sync_waits),
        );
        one(
            "ringway_mqtt_sync_replication_timeouts_total",
            "counter",
            "Acknowledgements whose replicas did not confirm within replication.sync_timeout_ms.",
            g(&self.sync_timeouts),
        );
        one(
            "ringway_mqtt_subscribe_denied_total",
            "counter",
            "Subscriptions refused by ACL.",
            g(&self.subscribe_denied),
        );
        one(
            "ringway_mqtt_protocol_errors_total",
            "counter",
            "Connections closed for malformed packets or protocol violations.",
            g(&self.protocol_errors),
        );
        one(
            "ringway_mqtt_wills_total",
            "counter",
            "Will messages published.",
            g(&self.wills),
        );
        one(
            "ringway_mqtt_subscriptions",
            "gauge",
            "Active subscriptions.",
            g(&self.subscriptions),
        );
        one(
            "ringway_mqtt_retained_messages",
            "gauge",
            "Retained topics.",
            g(&self.retained),
        );
        let _ = write!(
            s,
            "# HELP ringway_mqtt_publish_in_total PUBLISH packets received.\n# TYPE ringway_mqtt_publish_in_total counter\n"
        );
        for (q, c) in self.publish_in.iter().enumerate() {
            let _ = writeln!(s, "ringway_mqtt_publish_in_total{{qos=\"{q}\"}} {}", g(c));
        }
        let _ = write!(
            s,
            "# HELP ringway_mqtt_dropped_total Messages not stored or not delivered, by reason.\n# TYPE ringway_mqtt_dropped_total counter\n"
        );
        for (i, (_, name)) in DROPS.iter().enumerate() {
            let _ = writeln!(
                s,
                "ringway_mqtt_dropped_total{{reason=\"{name}\"}} {}",
                g(&self.drops[i])
            );
        }
        s
    }
}

/// Serves `GET /metrics` on `listener` until the task is aborted. Anything else gets 404; a
/// request that does not arrive within 5 s, or is larger than 8 KiB, is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 8192];
            let mut n = 0;
            let read = async {
                while n < buf.len() {
                    let got = sock.read(&mut buf[n..]).await.ok()?;
                    if got == 0 {
                        return None;
                    }
                    n += got;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        return Some(());
                    }
                }
                None
            };
            if tokio::time::timeout(std::time::Duration::from_secs(5), read)
                .await
                .ok()
                .flatten()
                .is_none()
            {
                return;
            }
            let line = buf[..n].split(|b| *b == b'\r').next().unwrap_or(&[]);
            let ok = line.starts_with(b"GET /metrics ") || line.starts_with(b"GET /metrics?");
            let response = if ok {
                let body = metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = sock.write_all(response.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        Metrics::inc(&m.publish_in[1]);
        m.dropped(Drop::QueueFull);
        m.dropped(Drop::QueueFull);
        let text = m.render();
        assert!(
            text.contains("ringway_mqtt_publish_in_total{qos=\"1\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("ringway_mqtt_dropped_total{reason=\"queue_full\"} 2\n"));
        assert_eq!(m.drops(Drop::QueueFull), 2);
        for line in text.lines() {
            assert!(
                line.starts_with('#') || line.split(' ').count() == 2,
                "{line}"
            );
        }
    }
}
