//! Replication of 64-byte messages to two receivers through one UDP multicast group on the
//! loopback interface (`IP_MULTICAST_LOOP`): a writer appends while the sender (pinned to core A)
//! sends every DATA once to the group and both receivers write their own replica. The rate counts
//! from the first append to both replicas holding the primary's tail; both are then compared
//! with the primary frame by frame.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::udp::{
    MulticastOptions, ReceiverConfig, ReceiverStats, SenderConfig, UdpReceiver, UdpSender,
};

use super::rate::{append, streams, verify, wait_replicated, Rate, RatePlan};
use crate::pinning::{pin_current, PinRecord};

type Res<T> = std::result::Result<T, String>;

/// Receivers of the group.
pub const RECEIVERS: usize = 2;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn loopback() -> MulticastOptions {
    MulticastOptions {
        interface: Some(Ipv4Addr::LOCALHOST),
        ttl: 1,
        loopback: true,
    }
}

/// A free port for the group (the group socket binds it with SO_REUSEADDR).
fn group_addr() -> Res<SocketAddrV4> {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(text)?
        .port();
    Ok(SocketAddrV4::new(Ipv4Addr::new(239, 77, 0, 1), port))
}

type Thread = (Arc<AtomicBool>, JoinHandle<Res<PinRecord>>);

fn finish((stop, handle): Thread) -> Res<PinRecord> {
    // Relaxed: a stop flag; the join orders everything the thread did.
    stop.store(true, Ordering::Relaxed);
    handle
        .join()
        .map_err(|_| "replication thread panicked".to_string())?
}

fn spawn(
    name: &'static str,
    core: Option<usize>,
    mut body: impl FnMut(&AtomicBool) -> ringway_transport::Result<()> + Send + 'static,
) -> Thread {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let handle = std::thread::spawn(move || {
        let pin = pin_current(name, core);
        body(&s).map_err(text)?;
        Ok(pin)
    });
    (stop, handle)
}

/// Sustained replication to [`RECEIVERS`] receivers of one multicast group while a writer
/// appends `plan.messages`.
pub fn live(dir: &Path, plan: &RatePlan) -> Res<Rate> {
    let (primary, rroot) = streams(dir)?;
    let group = group_addr()?;
    let mut receivers = Vec::new();
    let mut stats: Vec<Arc<ReceiverStats>> = Vec::new();
    let mut roots = Vec::new();
    for i in 0..RECEIVERS {
        let root = rroot.join(format!("r{i}"));
        std::fs::create_dir_all(&root).map_err(text)?;
        let mut rc = ReceiverConfig::new(SocketAddr::V4(group));
        rc.multicast = loopback();
        let mut r = UdpReceiver::new(Box::new(CoreStore::new(&root, None)), rc).map_err(text)?;
        stats.push(r.stats());
        // Two cores: the receivers share core B.
        receivers.push(spawn("replication-receiver", plan.core_b, move |s| {
            r.run(s)
        }));
        roots.push(root);
    }
    let mut sc = SenderConfig::new(SocketAddr::V4(group));
    sc.multicast = loopback();
    sc.mtu = plan.mtu;
    sc.min_receivers = RECEIVERS;
    let mut s = UdpSender::new(Box::new(CoreSource::new(primary.clone())), sc).map_err(text)?;
    let sender_stats = s.stats();
    let sender = spawn("replication-sender", plan.core_a, move |st| s.run(st));
    let t0 = Instant::now();
    let written = append(&primary, plan.messages);
    let res = written.and_then(|_| {
        let end = primary.tail().0;
        for st in &stats {
            wait_replicated(st, end, plan.timeout)?;
        }
        Ok(t0.elapsed())
    });
    let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let detail = format!(
        "{} DATA packets to the group, {} retransmitted ({} to the group), {} receivers, {} duplicate frames",
        l(&sender_stats.data_packets),
        l(&sender_stats.retransmit_packets),
        l(&sender_stats.group_retransmit_packets),
        l(&sender_stats.receivers),
        stats.iter().map(|s| l(&s.duplicates)).sum::<u64>()
    );
    let mut pins = vec![finish(sender)?];
    for r in receivers {
        pins.push(finish(r)?);
    }
    let dt = res?;
    for root in &roots {
        verify(&primary, root, primary.tail().0)?;
    }
    Ok(Rate {
        msgs_per_sec: plan.messages as f64 / dt.as_secs_f64(),
        messages: plan.messages,
        detail,
        pins,
    })
}
