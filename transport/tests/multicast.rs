//! Multicast replication to several receivers: one sender namespace and three receiver
//! namespaces joined by veth pairs on a Linux bridge (created and removed by the test; needs
//! root and `ip`). Without them (or with `RINGWAY_TEST_LOOPBACK=1`) the same scenarios run over
//! loopback multicast on 127.0.0.1, and the test says so.

mod common;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use ringway_core::Stream;
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::journal::{Geometry, Replica, ReplicaStore};
use ringway_transport::loss::{LossConfig, LossRates};
use ringway_transport::sync::AckTracker;
use ringway_transport::udp::{
    MulticastOptions, ReceiverConfig, ReceiverStats, SenderConfig, SenderStats, UdpReceiver,
    UdpSender,
};

/// Namespaces `hosts[0]` (sender) and `hosts[1..]` (receivers), each with one veth whose other
/// end is a port of a bridge in namespace `bridge`; addresses `10.203.SUBNET.(i+1)/24`.
struct Lan {
    bridge: String,
    hosts: Vec<String>,
    subnet: u8,
}

impl Lan {
    fn create(tag: &str, subnet: u8, hosts: usize) -> Option<Lan> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || std::env::var_os("RINGWAY_TEST_LOOPBACK").is_some() {
            return None;
        }
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let lan = Lan {
            bridge: format!("rwbr{id}"),
            hosts: (0..hosts).map(|i| format!("rwm{i}h{id}")).collect(),
            subnet,
        };
        let br = &lan.bridge;
        let mut ok = ip(&["netns", "add", br])
            && ip(&["-n", br, "link", "add", "br0", "type", "bridge"])
            // No IGMP snooping: without a querier it would hold group traffic back.
            && ip(&["-n", br, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])
            && ip(&["-n", br, "link", "set", "br0", "up"]);
        for (i, h) in lan.hosts.iter().enumerate() {
            if !ok {
                break;
            }
            let (dev, port) = (format!("m{i}v{id}"), format!("m{i}b{id}"));
            let addr = format!("10.203.{subnet}.{}/24", i + 1);
            ok = ip(&["netns", "add", h])
                && ip(&["link", "add", &dev, "type", "veth", "peer", "name", &port])
                && ip(&["link", "set", &dev, "netns", h])
                && ip(&["link", "set", &port, "netns", br])
                && ip(&["-n", br, "link", "set", &port, "master", "br0"])
                && ip(&["-n", br, "link", "set", &port, "up"])
                && ip(&["-n", h, "addr", "add", &addr, "dev", &dev])
                && ip(&["-n", h, "link", "set", &dev, "up"])
                && ip(&["-n", h, "link", "set", "lo", "up"])
                && ip(&["-n", h, "route", "add", "224.0.0.0/4", "dev", &dev]);
        }
        if ok {
            Some(lan)
        } else {
            None // dropped: whatever was made is removed
        }
    }

    fn addr(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 203, self.subnet, host as u8 + 1)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth ends in it, and with them the pairs.
        for h in &self.hosts {
            ip(&["netns", "del", h]);
        }
        ip(&["netns", "del", &self.bridge]);
    }
}

/// Where the hosts are: namespaces on a bridge, or all on loopback.
struct Net {
    lan: Option<Lan>,
    group: SocketAddrV4,
}

impl Net {
    fn new(tag: &str, subnet: u8, receivers: usize) -> Net {
        let lan = Lan::create(tag, subnet, receivers + 1);
        match &lan {
            Some(l) => eprintln!(
                "multicast across namespaces {} (sender) and {} (receivers) on a bridge",
                l.hosts[0],
                l.hosts[1..].join(", ")
            ),
            None => eprintln!(
                "network namespaces unavailable (not root, no `ip`, or RINGWAY_TEST_LOOPBACK set): \
                 multicast over loopback (127.0.0.1, IP_MULTICAST_LOOP)"
            ),
        }
        let port = 30_000 + (std::process::id() % 20_000) as u16 + subnet as u16 * 7;
        Net {
            lan,
            group: SocketAddrV4::new(Ipv4Addr::new(239, 7, subnet, 1), port),
        }
    }

    fn ns(&self, host: usize) -> Option<String> {
        self.lan.as_ref().map(|l| l.hosts[host].clone())
    }

    fn options(&self, host: usize) -> MulticastOptions {
        MulticastOptions {
            interface: Some(
                self.lan
                    .as_ref()
                    .map(|l| l.addr(host))
                    .unwrap_or(Ipv4Addr::LOCALHOST),
            ),
            ttl: 1,
            loopback: true,
        }
    }
}

struct Node<S> {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<ringway_transport::Result<()>>>,
    stats: Arc<S>,
}

impl<S> Node<S> {
    fn stop(mut self) -> ringway_transport::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

/// A replica store whose replicas pause 1 ms every `every` frames: a slow receiver.
struct SlowStore {
    inner: CoreStore,
    every: u64,
}

struct SlowReplica {
    inner: Box<dyn Replica>,
    every: u64,
    n: u64,
}

impl Replica for SlowReplica {
    fn next_position(&self) -> u64 {
        self.inner.next_position()
    }
    fn write_frame(&mut self, position: u64, raw: &[u8]) -> ringway_transport::Result<()> {
        self.n += 1;
        if self.n.is_multiple_of(self.every) {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.inner.write_frame(position, raw)
    }
}

impl ReplicaStore for SlowStore {
    fn open_from(
        &mut self,
        g: &Geometry,
        oldest: u64,
    ) -> ringway_transport::Result<Box<dyn Replica>> {
        Ok(Box::new(SlowReplica {
            inner: self.inner.open_from(g, oldest)?,
            every: self.every,
            n: 0,
        }))
    }
}

#[derive(Clone)]
struct RxSpec {
    root: PathBuf,
    loss: Option<LossConfig>,
    window: u32,
    slow_every: Option<u64>,
}

impl RxSpec {
    fn new(root: &Path) -> Self {
        RxSpec {
            root: root.to_path_buf(),
            loss: None,
            window: 4 << 20,
            slow_every: None,
        }
    }
}

fn start_rx(net: &Net, host: usize, spec: RxSpec) -> Node<ReceiverStats> {
    let mut c = ReceiverConfig::new(SocketAddr::V4(net.group));
    c.multicast = net.options(host);
    c.loss = spec.loss;
    c.window = spec.window;
    c.session_timeout = Duration::from_secs(2);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn_in(net.ns(host), move || {
        let core = CoreStore::new(&spec.root, None);
        let store: Box<dyn ReplicaStore> = match spec.slow_every {
            Some(every) => Box::new(SlowStore { inner: core, every }),
            None => Box::new(core),
        };
        let mut r = UdpReceiver::new(store, c)?;
        tx.send(r.stats()).unwrap();
        r.run(&s)
    });
    let stats = match rx.recv() {
        Ok(s) => s,
        Err(_) => panic!("receiver failed to start: {:?}", handle.join().unwrap()),
    };
    Node {
        stop,
        handle: Some(handle),
        stats,
    }
}

fn start_tx(
    net: &Net,
    proot: &Path,
    loss: Option<LossConfig>,
    min_receivers: usize,
    acks: Option<AckTracker>,
) -> Node<SenderStats> {
    let mut c = SenderConfig::new(SocketAddr::V4(net.group));
    c.multicast = net.options(0);
    c.loss = loss;
    c.min_receivers = min_receivers;
    c.acks = acks;
    c.setup_interval = Duration::from_millis(20);
    c.session_timeout = Duration::from_millis(600);
    c.stall_timeout = Duration::from_secs(30);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let pr = proot.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn_in(net.ns(0), move || {
        let mut snd = UdpSender::new(Box::new(CoreSource::open(&pr, "feed")?), c)?;
        tx.send(snd.stats()).unwrap();
        snd.run(&s)
    });
    let stats = match rx.recv() {
        Ok(s) => s,
        Err(_) => panic!("sender failed to start: {:?}", handle.join().unwrap()),
    };
    Node {
        stop,
        handle: Some(handle),
        stats,
    }
}

/// Largest frame of [`primary`] streams (header, metadata and a 16 KiB payload), rounded up.
const MAX_FRAME: u64 = (16 << 10) + 256;

fn tail_of(root: &Path) -> u64 {
    Stream::open(root, "feed").map(|s| s.tail().0).unwrap_or(0)
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn check_all(proot: &Path, roots: &[tempfile::TempDir], end: u64, n: u64) {
    for r in roots {
        wait_replica(r.path(), "feed", end, Duration::from_secs(120));
    }
    for r in roots {
        assert_identical(&proot.join("feed"), &r.path().join("feed"), end);
        check_replica_messages(r.path(), "feed", n);
    }
}

fn loss(rates: LossRates, seed: u64, send: bool) -> Option<LossConfig> {
    Some(if send {
        LossConfig {
            send: rates,
            recv: LossRates::default(),
            seed,
        }
    } else {
        LossConfig {
            send: LossRates::default(),
            recv: rates,
            seed,
        }
    })
}

/// `n` messages to three receivers, with `rates` injected on the sender's sends and on every
/// receiver's receives; synchronous mode: two receivers acknowledge the end.
fn three_receivers(tag: &str, subnet: u8, n: u64, rates: Option<LossRates>) {
    let net = Net::new(tag, subnet, 3);
    let proot = temp_root();
    let p = primary(proot.path(), "feed");
    let roots: Vec<_> = (0..3).map(|_| temp_root()).collect();
    let rxs: Vec<_> = roots
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut spec = RxSpec::new(r.path());
            spec.loss = rates.and_then(|l| loss(l, 20 + i as u64, false));
            start_rx(&net, i + 1, spec)
        })
        .collect();
    let acks = AckTracker::new();
    let tx = start_tx(
        &net,
        proot.path(),
        rates.and_then(|l| loss(l, 10, true)),
        3,
        Some(acks.clone()),
    );
    let mut w = p.writer().unwrap();
    for i in 0..n {
        w.append(&payload(i)).unwrap();
        if i % 20_000 == 19_999 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let end = p.tail().0;
    acks.wait_for(3, end, Duration::from_secs(120))
        .expect("three receivers acknowledge the end");
    check_all(proot.path(), &roots, end, n);
    let ts = tx.stats.clone();
    tx.stop().unwrap();
    for r in rxs {
        let s = r.stats.clone();
        r.stop().unwrap();
        assert_eq!(
            s.beyond_window.load(Ordering::Relaxed),
            0,
            "a receiver was overrun"
        );
    }
    eprintln!(
        "{n} messages to 3 receivers: data packets {} retransmitted {} naks {} evictions {}",
        ts.data_packets.load(Ordering::Relaxed),
        ts.retransmit_packets.load(Ordering::Relaxed),
        ts.naks.load(Ordering::Relaxed),
        ts.evictions.load(Ordering::Relaxed),
    );
    assert_eq!(ts.receivers.load(Ordering::Relaxed), 3);
    drop(net);
}

/// Loss at one receiver only: only it NAKs, and every retransmission goes to it alone (the
/// others see no duplicate). Loss on the sender's sends: every receiver misses the same
/// packets, and their NAKs are answered to the group.
#[test]
fn multicast_naks_answered_to_one_receiver_or_to_the_group() {
    for (tag, subnet, at_sender) in [("e", 5u8, false), ("f", 6, true)] {
        let net = Net::new(tag, subnet, 3);
        let proot = temp_root();
        let p = primary(proot.path(), "feed");
        let roots: Vec<_> = (0..3).map(|_| temp_root()).collect();
        let rxs: Vec<_> = roots
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut spec = RxSpec::new(r.path());
                if i == 0 && !at_sender {
                    spec.loss = loss(LossRates::drop_only(0.05), 30, false);
                }
                start_rx(&net, i + 1, spec)
            })
            .collect();
        let send_loss = if at_sender {
            loss(LossRates::drop_only(0.05), 31, true)
        } else {
            None
        };
        let tx = start_tx(&net, proot.path(), send_loss, 3, None);
        let n = 30_000;
        let mut w = p.writer().unwrap();
        for i in 0..n {
            w.append(&payload(i)).unwrap();
        }
        let end = p.tail().0;
        check_all(proot.path(), &roots, end, n);
        let ts = tx.stats.clone();
        tx.stop().unwrap();
        let dups: Vec<u64> = rxs
            .into_iter()
            .map(|r| {
                let s = r.stats.clone();
                r.stop().unwrap();
                s.duplicates.load(Ordering::Relaxed)
            })
            .collect();
        let (all, group) = (
            ts.retransmit_packets.load(Ordering::Relaxed),
            ts.group_retransmit_packets.load(Ordering::Relaxed),
        );
        eprintln!("loss at the sender: {at_sender}; retransmitted {all}, to the group {group}; duplicates per receiver {dups:?}");
        assert!(all > 0, "nothing was retransmitted");
        if at_sender {
            assert!(group > 0, "no retransmission went to the group");
        } else {
            assert_eq!(
                group, 0,
                "a retransmission for one receiver went to the group"
            );
            assert_eq!(
                &dups[1..],
                &[0, 0],
                "receivers without loss got retransmissions"
            );
        }
        drop(net);
    }
}

#[test]
fn multicast_three_receivers_identical() {
    three_receivers("a", 1, 100_000, None);
}

#[test]
fn multicast_three_receivers_five_percent_loss() {
    three_receivers("b", 2, 100_000, Some(LossRates::uniform(0.05)));
}

/// One receiver is stopped mid-stream: the sender drops it after the session time-out and the
/// others go on; restarted, it joins where its replica ends and catches up from the journal.
#[test]
fn multicast_receiver_evicted_then_restarted_catches_up() {
    let net = Net::new("c", 3, 3);
    let proot = temp_root();
    let p = primary(proot.path(), "feed");
    let roots: Vec<_> = (0..3).map(|_| temp_root()).collect();
    let mut rxs: Vec<_> = roots
        .iter()
        .enumerate()
        .map(|(i, r)| start_rx(&net, i + 1, RxSpec::new(r.path())))
        .collect();
    let tx = start_tx(&net, proot.path(), None, 3, None);
    let mut w = p.writer().unwrap();
    let n = 120_000;
    for i in 0..40_000 {
        w.append(&payload(i)).unwrap();
    }
    let first = p.tail().0;
    wait_replica(roots[2].path(), "feed", first, Duration::from_secs(60));
    rxs.pop().unwrap().stop().unwrap();
    let stopped_at = tail_of(roots[2].path());
    for i in 40_000..80_000 {
        w.append(&payload(i)).unwrap();
    }
    let second = p.tail().0;
    // The others go on without it once it is dropped.
    wait_until(
        "the silent receiver to be dropped",
        Duration::from_secs(30),
        || tx.stats.evictions.load(Ordering::Relaxed) >= 1,
    );
    for r in &roots[..2] {
        wait_replica(r.path(), "feed", second, Duration::from_secs(60));
    }
    assert_eq!(
        tail_of(roots[2].path()),
        stopped_at,
        "stopped receiver wrote nothing"
    );
    rxs.push(start_rx(&net, 3, RxSpec::new(roots[2].path())));
    for i in 80_000..n {
        w.append(&payload(i)).unwrap();
    }
    let end = p.tail().0;
    check_all(proot.path(), &roots, end, n);
    let ts = tx.stats.clone();
    tx.stop().unwrap();
    for r in rxs {
        r.stop().unwrap();
    }
    eprintln!(
        "evictions {} retransmitted packets {} receivers {}",
        ts.evictions.load(Ordering::Relaxed),
        ts.retransmit_packets.load(Ordering::Relaxed),
        ts.receivers.load(Ordering::Relaxed)
    );
    assert_eq!(ts.receivers.load(Ordering::Relaxed), 3, "it joined again");
    drop(net);
}

/// The sender is stopped mid-stream (it sends CLOSE to the group) and a new one starts with a
/// new session: every receiver resumes where its replica ends.
#[test]
fn multicast_sender_restarted_resumes() {
    let net = Net::new("g", 7, 2);
    let proot = temp_root();
    let p = primary(proot.path(), "feed");
    let roots: Vec<_> = (0..2).map(|_| temp_root()).collect();
    let rxs: Vec<_> = roots
        .iter()
        .enumerate()
        .map(|(i, r)| start_rx(&net, i + 1, RxSpec::new(r.path())))
        .collect();
    let tx = start_tx(&net, proot.path(), None, 2, None);
    let mut w = p.writer().unwrap();
    let n = 60_000;
    for i in 0..30_000 {
        w.append(&payload(i)).unwrap();
    }
    let half = p.tail().0;
    wait_replica(roots[0].path(), "feed", half / 2, Duration::from_secs(60));
    tx.stop().unwrap();
    for i in 30_000..n {
        w.append(&payload(i)).unwrap();
    }
    let tx = start_tx(&net, proot.path(), None, 2, None);
    let end = p.tail().0;
    check_all(proot.path(), &roots, end, n);
    let sessions = tx.stats.sessions.load(Ordering::Relaxed);
    tx.stop().unwrap();
    for r in rxs {
        let s = r.stats.clone();
        r.stop().unwrap();
        assert_eq!(
            s.sessions.load(Ordering::Relaxed),
            2,
            "one session per sender"
        );
    }
    assert_eq!(sessions, 1);
    drop(net);
}

/// A receiver that writes slowly bounds the sender: no receiver gets further ahead of it than
/// its window, and none is overrun.
#[test]
fn multicast_slow_receiver_bounds_the_sender() {
    let net = Net::new("d", 4, 2);
    let proot = temp_root();
    let p = primary(proot.path(), "feed");
    let roots: Vec<_> = (0..2).map(|_| temp_root()).collect();
    let window = 128 << 10;
    let mut slow = RxSpec::new(roots[1].path());
    slow.window = window;
    slow.slow_every = Some(100);
    let rxs = [
        start_rx(&net, 1, RxSpec::new(roots[0].path())),
        start_rx(&net, 2, slow),
    ];
    let tx = start_tx(&net, proot.path(), None, 2, None);
    let mut w = p.writer().unwrap();
    let n = 100_000;
    for i in 0..n {
        w.append(&payload(i)).unwrap();
    }
    let end = p.tail().0;
    let mut samples = 0;
    let mut held_back = 0;
    while tail_of(roots[1].path()) < end {
        // Fast first: the slow one's position only grows, so fast <= slow + window holds for
        // the slow position read after it.
        let fast = tail_of(roots[0].path());
        let slow = tail_of(roots[1].path());
        // A frame starting inside the window may end past it.
        assert!(
            fast <= slow + window as u64 + MAX_FRAME,
            "fast receiver at {fast}, slow one at {slow}: more than its window apart"
        );
        samples += 1;
        if fast < end {
            held_back += 1;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!("{samples} samples, the fast receiver was held back in {held_back}");
    assert!(
        held_back > 0,
        "the slow receiver never held the fast one back"
    );
    check_all(proot.path(), &roots, end, n);
    tx.stop().unwrap();
    for r in rxs {
        let s = r.stats.clone();
        r.stop().unwrap();
        assert_eq!(s.beyond_window.load(Ordering::Relaxed), 0, "overrun");
    }
    drop(net);
}

/// Multi-destination unicast: one sender, three unicast receivers on loopback, every DATA sent
/// to each, the same per-receiver flow control; 5 % loss on the sender's sends.
#[test]
fn multi_destination_unicast_three_receivers_with_loss() {
    let proot = temp_root();
    let p = primary(proot.path(), "feed");
    let roots: Vec<_> = (0..3).map(|_| temp_root()).collect();
    let started: Vec<_> = roots
        .iter()
        .map(|r| {
            let mut c = ReceiverConfig::new("127.0.0.1:0".parse().unwrap());
            c.session_timeout = Duration::from_secs(2);
            start_receiver(r.path(), c)
        })
        .collect();
    let addrs: Vec<SocketAddr> = started.iter().map(|(_, a)| *a).collect();
    let mut c = SenderConfig::new(addrs[0]);
    c.destinations = addrs[1..].to_vec();
    c.min_receivers = 3;
    c.setup_interval = Duration::from_millis(20);
    c.loss = loss(LossRates::uniform(0.05), 40, true);
    let tx = start_sender(proot.path(), "feed", c);
    let n = 50_000;
    let mut w = p.writer().unwrap();
    for i in 0..n {
        w.append(&payload(i)).unwrap();
    }
    let end = p.tail().0;
    check_all(proot.path(), &roots, end, n);
    let ts = tx.stats.clone();
    tx.stop().unwrap();
    for (r, _) in started {
        let s = r.stats.clone();
        r.stop().unwrap();
        assert_eq!(s.beyond_window.load(Ordering::Relaxed), 0, "overrun");
    }
    assert_eq!(ts.receivers.load(Ordering::Relaxed), 3);
    assert!(ts.retransmit_packets.load(Ordering::Relaxed) > 0);
}
