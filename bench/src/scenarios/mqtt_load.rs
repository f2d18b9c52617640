//! The QoS 1 publish load of the `mqtt` scenario: raw MQTT 3.1.1 clients on one thread of their own, the same
//! generator for every server.
//!
//! Why not rumqttc clients: a rumqttc client hands every publish through a channel to its event loop, which writes
//! and flushes it alone (one `write` per message) and wakes once per PUBACK batch; with 100 clients on this 2-core
//! machine the clients spent as much CPU as the server they measured, so the figure measured the generator. Here a
//! client keeps `window` publishes in flight and writes every free slot in one `write`, reads PUBACKs in bulk and
//! checks each one against the packet ids it has outstanding. Publishes are pre-encoded (only the packet id
//! changes), so the generator's CPU per message is small next to a server's; it is measured and reported
//! ([`LoadResult::generator_cpu`]) so a run where it is not can be recognised.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What to send.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Concurrent connections.
    pub clients: usize,
    /// Messages in total (spread evenly over the clients, rounded up).
    pub messages: u64,
    /// Unacknowledged publishes per client.
    pub window: u16,
    /// Payload bytes of every message.
    pub payload: usize,
    /// Limit for connecting and for the whole run.
    pub timeout: Duration,
}

/// What was measured.
#[derive(Debug, Clone, Copy)]
pub struct LoadResult {
    /// PUBACKs received.
    pub acked: u64,
    /// From the start signal to the last PUBACK of the last client.
    pub elapsed: Duration,
    /// CPU time (user + system) the generator thread spent over `elapsed`.
    pub generator_cpu: Duration,
}

impl LoadResult {
    /// PUBACKs per second.
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// CPU time of the calling thread.
pub fn thread_cpu() -> Duration {
    clock(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// CPU time of this process (all threads).
pub fn process_cpu() -> Duration {
    clock(libc::CLOCK_PROCESS_CPUTIME_ID)
}

fn clock(id: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we pass, which lives for the call.
    let rc = unsafe { libc::clock_gettime(id, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Connects `plan.clients` clients to `addr`, then (all connected) starts them together and waits for every PUBACK.
/// `started` is called on the caller's thread right after the start signal (e.g. to sample the server's CPU).
pub fn run(
    addr: SocketAddr,
    plan: &LoadPlan,
    started: impl FnOnce(),
) -> Result<LoadResult, String> {
    let go = Arc::new(Barrier::new(2));
    let thread_go = go.clone();
    let thread_plan = plan.clone();
    let generator = std::thread::Builder::new()
        .name("mqtt-load".into())
        .spawn(move || generate(addr, &thread_plan, &thread_go))
        .map_err(|e| format!("starting the load thread: {e}"))?;
    go.wait();
    let t0 = Instant::now();
    started();
    let outcome = generator
        .join()
        .map_err(|_| "load thread panicked".to_string())?;
    let (acked, cpu) = outcome?;
    Ok(LoadResult {
        acked,
        elapsed: t0.elapsed(),
        generator_cpu: cpu,
    })
}

/// The load thread: connects everyone, meets the caller at `go` (also when connecting failed, so it never waits
/// forever), runs the clients; (PUBACKs, CPU time spent after `go`).
fn generate(addr: SocketAddr, plan: &LoadPlan, go: &Barrier) -> Result<(u64, Duration), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            go.wait();
            return Err(format!("load runtime: {e}"));
        }
    };
    let per = plan.messages.div_ceil(plan.clients.max(1) as u64).max(1);
    let connected = rt.block_on(async {
        let mut conns = Vec::with_capacity(plan.clients);
        for i in 0..plan.clients {
            let c = tokio::time::timeout(plan.timeout, Client::connect(addr, i, plan))
                .await
                .map_err(|_| format!("client {i}: no CONNACK within {:?}", plan.timeout))??;
            conns.push(c);
        }
        Ok::<_, String>(conns)
    });
    go.wait();
    let conns = connected?;
    let cpu0 = thread_cpu();
    let timeout = plan.timeout * 4;
    let acked = rt.block_on(async {
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|c| tokio::spawn(async move { c.publish(per).await }))
            .collect();
        let mut total = 0;
        for t in tasks {
            total += tokio::time::timeout(timeout, t)
                .await
                .map_err(|_| format!("PUBACKs not all received within {timeout:?}"))?
                .map_err(|e| format!("client task: {e}"))??;
        }
        Ok::<u64, String>(total)
    })?;
    Ok((acked, thread_cpu().saturating_sub(cpu0)))
}

/// An MQTT 3.1.1 CONNECT: clean session, keep-alive `keep_alive` seconds (rumqttc's encoder).
pub fn connect_packet(id: &str, keep_alive: u16) -> Vec<u8> {
    let mut c = rumqttc::Connect::new(id);
    c.keep_alive = keep_alive;
    c.clean_session = true;
    let mut b = BytesMut::new();
    // A CONNECT with a short client id and no will or login always encodes.
    let _ = c.write(&mut b);
    b.to_vec()
}

/// A pre-encoded QoS 1 PUBLISH whose packet id is patched per message.
struct PublishTemplate {
    bytes: Vec<u8>,
    pkid_at: usize,
}

impl PublishTemplate {
    fn new(topic: &str, payload: usize) -> Self {
        let mut p = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, vec![b'x'; payload]);
        p.pkid = 1;
        let mut b = BytesMut::new();
        // A QoS 1 PUBLISH with a packet id always encodes.
        let _ = p.write(&mut b);
        let bytes = b.to_vec();
        // The packet id comes right before the payload (MQTT 3.1.1 has no properties).
        let pkid_at = bytes.len() - payload - 2;
        PublishTemplate { bytes, pkid_at }
    }

    fn push(&self, out: &mut Vec<u8>, pkid: u16) {
        let at = out.len() + self.pkid_at;
        out.extend_from_slice(&self.bytes);
        out[at..at + 2].copy_from_slice(&pkid.to_be_bytes());
    }
}

/// Packet ids outstanding (one bit per id).
struct Outstanding(Box<[u64; 1024]>);

impl Outstanding {
    fn insert(&mut self, id: u16) -> bool {
        let (w, b) = (usize::from(id) / 64, 1u64 << (id % 64));
        let fresh = self.0[w] & b == 0;
        self.0[w] |= b;
        fresh
    }

    fn remove(&mut self, id: u16) -> bool {
        let (w, b) = (usize::from(id) / 64, 1u64 << (id % 64));
        let had = self.0[w] & b != 0;
        self.0[w] &= !b;
        had
    }
}

/// One connected client.
struct Client {
    index: usize,
    stream: TcpStream,
    template: PublishTemplate,
    window: u64,
}

impl Client {
    async fn connect(addr: SocketAddr, index: usize, plan: &LoadPlan) -> Result<Client, String> {
        let err = |what: &str, e: std::io::Error| format!("client {index}: {what}: {e}");
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| err("connect", e))?;
        stream.set_nodelay(true).map_err(|e| err("nodelay", e))?;
        stream
            .write_all(&connect_packet(&format!("bench-tp-{index}"), 60))
            .await
            .map_err(|e| err("CONNECT", e))?;
        let mut ack = [0u8; 4];
        stream
            .read_exact(&mut ack)
            .await
            .map_err(|e| err("CONNACK", e))?;
        if ack[0] != 0x20 || ack[1] != 2 || ack[3] != 0 {
            return Err(format!("client {index}: refused: {ack:?}"));
        }
        Ok(Client {
            index,
            stream,
            template: PublishTemplate::new(&format!("bench/tp/{index}"), plan.payload),
            window: u64::from(plan.window.max(1)),
        })
    }

    /// Publishes `count` messages keeping up to `window` unacknowledged; returns the PUBACKs received.
    async fn publish(mut self, count: u64) -> Result<u64, String> {
        let i = self.index;
        let mut outstanding = Outstanding(Box::new([0; 1024]));
        let mut out = Vec::with_capacity(self.template.bytes.len() * self.window as usize);
        let mut inbuf = vec![0u8; 4096];
        let (mut have, mut sent, mut acked) = (0usize, 0u64, 0u64);
        let mut next_id: u16 = 1;
        while acked < count {
            while sent < count && sent - acked < self.window {
                if !outstanding.insert(next_id) {
                    return Err(format!("client {i}: packet id {next_id} still in flight"));
                }
                self.template.push(&mut out, next_id);
                next_id = next_id.checked_add(1).unwrap_or(1);
                sent += 1;
            }
            if !out.is_empty() {
                self.stream
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("client {i}: write: {e}"))?;
                out.clear();
            }
            let n = self
                .stream
                .read(&mut inbuf[have..])
                .await
                .map_err(|e| format!("client {i}: read: {e}"))?;
            if n == 0 {
                return Err(format!(
                    "client {i}: connection closed after {acked} PUBACKs"
                ));
            }
            have += n;
            let mut at = 0;
            while have - at >= 4 {
                let p = &inbuf[at..at + 4];
                if p[0] != 0x40 || p[1] != 2 {
                    return Err(format!("client {i}: expected PUBACK, got {:02x?}", &p[..2]));
                }
                let id = u16::from_be_bytes([p[2], p[3]]);
                if !outstanding.remove(id) {
                    return Err(format!("client {i}: PUBACK for unknown packet id {id}"));
                }
                acked += 1;
                at += 4;
            }
            inbuf.copy_within(at..have, 0);
            have -= at;
        }
        let _ = self.stream.write_all(&[0xE0, 0]).await;
        Ok(acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_template_encodes_a_qos1_publish() {
        let t = PublishTemplate::new("a/b", 3);
        let mut out = Vec::new();
        t.push(&mut out, 0x1234);
        assert_eq!(
            out,
            [0x32, 10, 0, 3, b'a', b'/', b'b', 0x12, 0x34, b'x', b'x', b'x']
        );
    }

    #[test]
    fn connect_is_mqtt_311_with_a_clean_session() {
        let c = connect_packet("id", 0);
        assert_eq!(
            c,
            [0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 0, 0, 2, b'i', b'd']
        );
    }

    #[test]
    fn outstanding_ids_are_tracked_once() {
        let mut o = Outstanding(Box::new([0; 1024]));
        assert!(o.insert(65535));
        assert!(!o.insert(65535));
        assert!(o.remove(65535));
        assert!(!o.remove(65535));
    }
}
