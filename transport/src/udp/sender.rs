//! The sending side: tails the primary, ships frames within the receiver's window, answers NAKs
//! by re-reading the journal, sends heartbeats when idle, and sets the session up again when the
//! receiver goes silent or forgets it.
//!
//! To a multicast group the sender sends DATA once for every receiver and keeps per-receiver
//! flow control ([`super::members`]): its window is bounded by the slowest tethered receiver,
//! NAKs are answered to the receiver that asked (unicast), or to the group when several ask for
//! the same range.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{multicast_group, sender_socket, MulticastOptions};
use super::members::Members;
use super::packer::Packer;
use super::sent::SentPackets;
use super::{now_ns, random_u64};
use crate::acks::AckSinks;
use crate::auth::AuthKey;
use crate::error::{Error, Result};
use crate::frame::align8;
use crate::idle::IdleBackoff;
use crate::io::{open_udp, Backend, DatagramIo, UdpOptions};
use crate::journal::{RawReader, Source};
use crate::loss::{LossConfig, LossyIo};
use crate::sync::AckTracker;
use crate::wire::{decode, encode, ErrorCode, ErrorPacket, Heartbeat, NakRange, Packet, Setup};

/// Sender settings.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Receiver address.
    pub remote: SocketAddr,
    /// Local address to bind (default: any address, any port, of the remote's family).
    pub bind: Option<SocketAddr>,
    /// Largest datagram sent (bytes of UDP payload).
    pub mtu: usize,
    /// Shared key: every packet carries a MAC, unauthenticated packets are dropped.
    pub auth: Option<AuthKey>,
    /// Socket options and backend.
    pub udp: UdpOptions,
    /// Fault injection (diagnostics).
    pub loss: Option<LossConfig>,
    /// SETUP is repeated this often until answered.
    pub setup_interval: Duration,
    /// A HEARTBEAT goes out after this long without DATA.
    pub heartbeat_interval: Duration,
    /// The first HEARTBEAT after DATA stops (window full or nothing new) goes out this soon, so
    /// a lost last packet is NAKed without waiting a whole heartbeat interval; while the window
    /// stays full, heartbeats repeat at this interval.
    pub tail_probe: Duration,
    /// Without any packet from the receiver for this long, the session is set up again.
    pub session_timeout: Duration,
    /// A range retransmitted less than this long ago is not retransmitted again.
    pub nak_holdoff: Duration,
    /// How long an idle loop iteration waits for packets at most (`ZERO`: busy-spin).
    pub idle_wait: Duration,
    /// The first idle iteration after work waits this long, each further one twice as long,
    /// up to `idle_wait` (default: `idle_wait`, no back-off). A short start (e.g. 10 µs) sees new
    /// frames right after a quiet moment (the next request of a request/response exchange, such
    /// as a synchronously replicated MQTT QoS 1 publish) within microseconds, and settles at
    /// `idle_wait` after a handful of wake-ups; those wake-ups compete for the CPU with the
    /// writer on a small machine (measured on 2 cores: see `docs/replication.md`).
    pub idle_wait_start: Duration,
    /// Acknowledged positions are published here (synchronous mode).
    pub acks: Option<AckTracker>,
    /// Multicast (`remote` is an IPv4 group address): interface, TTL and loopback of the
    /// datagrams sent to the group. `bind` is not used then.
    pub multicast: MulticastOptions,
    /// Multi-destination unicast: more receivers, each sent every DATA, HEARTBEAT, SETUP and
    /// CLOSE as `remote` is (one datagram per destination), with the per-receiver flow control
    /// of multicast. Empty: `remote` alone.
    pub destinations: Vec<SocketAddr>,
    /// Multicast: receivers that must answer the set-up before the sender starts (Aeron's
    /// minimum group size; at least 1). Afterwards it sends while at least one receiver bounds
    /// it.
    pub min_receivers: usize,
    /// Multicast: a receiver that holds the sender back without advancing for this long stops
    /// bounding it; it catches up from the journal and bounds it again once within its window.
    pub stall_timeout: Duration,
}

impl SenderConfig {
    /// Defaults for sending to `remote`.
    pub fn new(remote: SocketAddr) -> Self {
        SenderConfig {
            remote,
            bind: None,
            mtu: 1408,
            auth: None,
            udp: UdpOptions::default(),
            loss: None,
            setup_interval: Duration::from_millis(100),
            heartbeat_interval: Duration::from_millis(20),
            tail_probe: Duration::from_millis(1),
            session_timeout: Duration::from_secs(5),
            nak_holdoff: Duration::from_millis(2),
            idle_wait: Duration::from_micros(200),
            idle_wait_start: Duration::from_micros(200),
            acks: None,
            multicast: MulticastOptions::default(),
            destinations: Vec::new(),
            min_receivers: 1,
            stall_timeout: Duration::from_secs(5),
        }
    }
}

/// Live counters of a sender. Each is updated by the sender thread alone with `Relaxed` stores:
/// they are independent statistics, read for display, and order nothing else.
#[derive(Debug, Default)]
pub struct SenderStats {
    /// End of what has been sent.
    pub sent_position: AtomicU64,
    /// Position the receiver has acknowledged.
    pub acked_position: AtomicU64,
    /// Tail of the primary when last looked at.
    pub primary_tail: AtomicU64,
    /// DATA packets sent, first transmissions.
    pub data_packets: AtomicU64,
    /// DATA packets sent in answer to NAKs.
    pub retransmit_packets: AtomicU64,
    /// Multicast: of those, the ones sent to the whole group (several receivers missed them);
    /// the others went to one receiver.
    pub group_retransmit_packets: AtomicU64,
    /// NAK ranges received.
    pub naks: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Sessions established (1 + reconnections).
    pub sessions: AtomicU64,
    /// Packets dropped: undecodable, bad MAC, foreign session.
    pub rejected: AtomicU64,
    /// 1 while a session is established.
    pub connected: AtomicU64,
    /// Multicast: receivers known (tethered or catching up).
    pub receivers: AtomicU64,
    /// Multicast: receivers dropped for silence or untied for stalling.
    pub evictions: AtomicU64,
}

enum Phase {
    Setup { nonce: u64, last: Option<Instant> },
    Live { receiver_id: u64 },
}

/// Ships one stream to one receiver over UDP.
pub struct UdpSender {
    cfg: SenderConfig,
    source: Box<dyn Source>,
    io: Box<dyn DatagramIo>,
    session: u32,
    phase: Phase,
    live: Option<Box<dyn RawReader>>,
    rtx: Vec<Box<dyn RawReader>>,
    stash: VecDeque<(u64, Vec<u8>)>,
    sent: u64,
    acked: u64,
    limit: u64,
    /// Queued NAK ranges with the receiver that asked.
    naks: VecDeque<(NakRange, u64)>,
    /// Ranges retransmitted within the hold-off, and to whom (`None`: to `cfg.remote`, which
    /// is the group in multicast).
    recent: VecDeque<(NakRange, Instant, Option<SocketAddr>)>,
    /// Multicast or several destinations: the receivers and their flow control (`None` for
    /// one unicast receiver).
    group: Option<Members>,
    /// Where DATA, HEARTBEAT, SETUP and CLOSE go: `remote`, then `destinations`.
    targets: Vec<SocketAddr>,
    /// Nonce of the current set-up; SETUP_ACKs carrying it admit receivers.
    nonce: u64,
    /// Multicast: when a SETUP last went to a single receiver that did not know the session.
    last_join_setup: Option<Instant>,
    /// Multicast: receivers refused (their position is no longer retained) and until when.
    refused: Vec<(u64, Instant)>,
    last_data: Instant,
    /// Whether the last thing sent was DATA (the tail not yet probed).
    probe_due: bool,
    last_rx: Instant,
    packer: Packer,
    /// Copies of the packets in flight, answering NAKs without reading the journal.
    copies: SentPackets,
    out: Vec<u8>,
    rx: Vec<u8>,
    rx_ranges: Vec<(std::ops::Range<usize>, SocketAddr)>,
    stats: Arc<SenderStats>,
    idle: bool,
    /// The wait of the next idle iteration.
    backoff: IdleBackoff,
    /// The clock read at the end of the last step, after its sends: a step that received
    /// nothing and did not wait uses it as its `now` (old by one step plus whatever the caller
    /// did in between; the timers it drives are milliseconds), so fresh data goes from the
    /// journal to the socket without a clock read on the way, and an idle busy-polling loop
    /// reads the clock once per iteration (measured: 290 -> 160 ns per idle iteration).
    clock: Instant,
    /// Where receivers' acknowledgements go (tracker, the stream's replica-ack table).
    acks: AckSinks,
}

impl std::fmt::Debug for UdpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpSender")
            .field("session", &self.session)
            .field("sent", &self.sent)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

mod membership;

const LIVE_BATCH: usize = 64;

/// Bytes of sent-packet copies kept for a receiver window of `window` bytes: the window (frames
/// in flight) plus packet overhead and slack.
fn copies_bound(window: u32) -> usize {
    window as usize + window as usize / 8 + (256 << 10)
}
const MAX_QUEUED_NAKS: usize = 1024;
/// Bytes retransmitted per loop iteration at most, so live data and control traffic keep moving.
const RTX_BUDGET: usize = 256 << 10;

impl UdpSender {
    /// Binds the socket (io_uring or fallback) for shipping `source`.
    pub fn new(source: Box<dyn Source>, cfg: SenderConfig) -> Result<Self> {
        let bind = cfg.bind.unwrap_or(if cfg.remote.is_ipv4() {
            "0.0.0.0:0".parse().unwrap_or_else(|_| unreachable!())
        } else {
            "[::]:0".parse().unwrap_or_else(|_| unreachable!())
        });
        if cfg.mtu < 128 || cfg.mtu > 65507 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "mtu must be within 128..=65507",
            )));
        }
        let mut udp = cfg.udp.clone();
        udp.max_datagram = udp.max_datagram.max(cfg.mtu);
        let multicast = multicast_group(cfg.remote).is_some();
        let group = (multicast || !cfg.destinations.is_empty()).then(Members::default);
        let mut targets = vec![cfg.remote];
        targets.extend(cfg.destinations.iter().copied());
        let mut io = if multicast {
            sender_socket(&cfg.multicast, &udp)?
        } else {
            open_udp(bind, &udp)?
        };
        if let Some(l) = cfg.loss {
            io = Box::new(LossyIo::new(io, l));
        }
        let session = (random_u64() >> 32) as u32 | 1;
        let now = Instant::now();
        let nonce = random_u64();
        Ok(UdpSender {
            acks: AckSinks::new(cfg.acks.clone(), source.replica_acks()),
            packer: Packer::new(session, cfg.mtu, cfg.auth.clone()),
            copies: SentPackets::new(0),
            source,
            io,
            session,
            phase: Phase::Setup { nonce, last: None },
            group,
            targets,
            nonce,
            last_join_setup: None,
            refused: Vec::new(),
            live: None,
            rtx: Vec::new(),
            stash: VecDeque::new(),
            sent: 0,
            acked: 0,
            limit: 0,
            naks: VecDeque::new(),
            recent: VecDeque::new(),
            last_data: now,
            probe_due: false,
            last_rx: now,
            out: Vec::with_capacity(512),
            rx: Vec::with_capacity(64 << 10),
            rx_ranges: Vec::new(),
            stats: Arc::new(SenderStats::default()),
            idle: false,
            backoff: IdleBackoff::new(cfg.idle_wait_start, cfg.idle_wait),
            clock: now,
            cfg,
        })
    }

    /// Live counters (shareable with a progress printer).
    pub fn stats(&self) -> Arc<SenderStats> {
        self.stats.clone()
    }

    /// Which socket backend is in use.
    pub fn backend(&self) -> Backend {
        self.io.backend()
    }

    /// Local socket address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.io.local_addr()?)
    }

    /// Position acknowledged by the receiver (multicast: by every receiver bounding the sender).
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Runs until `shutdown` is set (then sends CLOSE) or a fatal error.
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        // Relaxed: the flag carries no data; seeing it one iteration late is harmless.
        while !shutdown.load(Ordering::Relaxed) {
            self.step()?;
        }
        self.close()
    }

    /// Tells the receiver the session ends.
    pub fn close(&mut self) -> Result<()> {
        // Every receiver's session ends with this one.
        self.acks.remove_all();
        if matches!(self.phase, Phase::Live { .. }) {
            self.send_control(&Packet::Close(crate::wire::Close { reason: 0 }))?;
            self.io.poll(Duration::ZERO, &mut |_, _| {})?;
        }
        Ok(())
    }

    fn send_control(&mut self, p: &Packet<'_>) -> Result<()> {
        for i in 0..self.targets.len() {
            self.send_control_to(p, self.targets[i])?;
        }
        Ok(())
    }

    /// Tells the receiver at `to` that `requested` is no longer retained.
    fn send_lapped(&mut self, requested: u64, oldest: u64, to: SocketAddr) -> Result<()> {
        let p = Packet::Error(ErrorPacket {
            code: ErrorCode::Lapped,
            a: requested,
            b: oldest,
        });
        self.send_control_to(&p, to)
    }

    fn send_control_to(&mut self, p: &Packet<'_>, to: SocketAddr) -> Result<()> {
        self.out.clear();
        encode(p, self.session, self.cfg.auth.as_ref(), &mut self.out)?;
        self.io.send_to(&self.out, to)?;
        Ok(())
    }

    /// One loop iteration: receive, react, send. Waits when the previous iteration found
    /// nothing to do: `idle_wait_start`, doubling with every further idle iteration up to
    /// `idle_wait`.
    pub fn step(&mut self) -> Result<()> {
        let timeout = if self.idle {
            self.backoff.wait()
        } else {
            Duration::ZERO
        };
        self.rx.clear();
        self.rx_ranges.clear();
        let (rx, ranges) = (&mut self.rx, &mut self.rx_ranges);
        let got = self.io.poll(timeout, &mut |d, from| {
            let s = rx.len();
            rx.extend_from_slice(d);
            ranges.push((s..rx.len(), from));
        })?;
        let now = if got > 0 || !timeout.is_zero() {
            Instant::now()
        } else {
            self.clock
        };
        let ranges = std::mem::take(&mut self.rx_ranges);
        for (r, from) in &ranges {
            let rx = std::mem::take(&mut self.rx);
            let res = self.handle(&rx[r.clone()], *from, now);
            self.rx = rx;
            res?;
        }
        self.rx_ranges = ranges;
        let mut work = got > 0;
        match self.phase {
            Phase::Setup { nonce, last } => {
                let quorum = self.cfg.min_receivers.max(1);
                if let Some(g) = self.group.as_mut() {
                    // A receiver that answered and went silent before the quorum does not count.
                    let e = g.expire(now, self.cfg.session_timeout, Duration::MAX, self.sent);
                    for id in e.dropped {
                        log::info!("receiver {id:#x} silent while setting up: dropped");
                    }
                }
                if self.group.as_ref().is_some_and(|g| g.len() >= quorum) {
                    self.establish_group(now)?;
                    work = true;
                } else if last.is_none_or(|t| now.duration_since(t) >= self.cfg.setup_interval) {
                    self.send_setup(nonce)?;
                    self.phase = Phase::Setup {
                        nonce,
                        last: Some(now),
                    };
                }
            }
            Phase::Live { .. } => {
                let rtx = self.retransmit(now)?;
                work |= rtx;
                work |= self.ship_live()?;
                let n = self
                    .packer
                    .flush(&mut *self.io, &self.targets, &mut self.copies)?;
                if n > 0 || rtx {
                    // Fresh data leaves now rather than with the next iteration's poll: one
                    // submission for the whole batch either way, minus one loop of latency.
                    self.io.flush()?;
                    self.last_data = now;
                    self.probe_due = true;
                    work = true;
                } else {
                    let wait = if self.probe_due {
                        self.cfg.tail_probe
                    } else {
                        self.cfg.heartbeat_interval
                    };
                    if now.duration_since(self.last_data) >= wait {
                        let hb = Packet::Heartbeat(Heartbeat {
                            tail: self.sent,
                            timestamp_ns: now_ns(),
                        });
                        self.send_control(&hb)?;
                        self.io.flush()?;
                        self.last_data = now;
                        // While the window is full, keep probing: the receiver answers each
                        // heartbeat with a STATUS, so a lost STATUS costs one probe interval.
                        self.probe_due = self.sent >= self.limit || !self.stash.is_empty();
                        self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if self.group.is_some() {
                    self.expire_members(now);
                } else if now.duration_since(self.last_rx) >= self.cfg.session_timeout {
                    log::warn!(
                        "receiver {} silent for {:?}; setting the session up again",
                        self.cfg.remote,
                        self.cfg.session_timeout
                    );
                    self.restart_setup();
                }
            }
        }
        self.idle = !work;
        if work {
            self.backoff.reset();
        }
        self.clock = Instant::now();
        Ok(())
    }

    fn restart_setup(&mut self) {
        if let (Phase::Live { receiver_id }, None) = (&self.phase, &self.group) {
            self.acks.remove(*receiver_id);
        }
        self.nonce = random_u64();
        self.phase = Phase::Setup {
            nonce: self.nonce,
            last: None,
        };
        self.stats.connected.store(0, Ordering::Relaxed);
        self.packer.discard();
        self.copies.clear();
    }

    fn send_setup(&mut self, nonce: u64) -> Result<()> {
        for i in 0..self.targets.len() {
            self.send_setup_to(nonce, self.targets[i])?;
        }
        Ok(())
    }

    fn send_setup_to(&mut self, nonce: u64, to: SocketAddr) -> Result<()> {
        let g = self.source.geometry();
        let oldest = self.source.oldest()?;
        let tail = self.source.tail()?.max(oldest);
        let p = Packet::Setup(Setup {
            nonce,
            oldest,
            tail,
            segment_size: g.segment_size,
            max_message_size: g.max_message_size,
            mtu: self.cfg.mtu as u16,
            stream_flags: u8::from(g.crc),
            name: &g.name,
        });
        self.send_control_to(&p, to)?;
        self.io.poll(Duration::ZERO, &mut |_, _| {})?;
        Ok(())
    }

    fn handle(&mut self, d: &[u8], from: SocketAddr, now: Instant) -> Result<()> {
        let (session, p) = match decode(d, self.cfg.auth.as_ref()) {
            Ok(x) => x,
            Err(e) => {
                log::debug!("dropped packet: {e}");
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        if session != self.session {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if self.group.is_some() {
            return self.handle_group(p, from, now);
        }
        match p {
            Packet::SetupAck(a) => {
                let current = match self.phase {
                    Phase::Setup { nonce, .. } => nonce == a.nonce,
                    Phase::Live { .. } => false,
                };
                if current {
                    self.establish(a.receiver_id, a.resume, a.window, now)?;
                }
            }
            Packet::Status(s) => {
                if let Phase::Live { receiver_id } = self.phase {
                    if s.receiver_id == receiver_id {
                        self.last_rx = now;
                        if s.position > self.acked && s.position <= self.sent {
                            self.acked = s.position;
                            self.copies.release(s.position);
                            self.stats
                                .acked_position
                                .store(s.position, Ordering::Relaxed);
                            self.acks.update(receiver_id, s.position);
                        }
                        let lim = s.position.saturating_add(s.window as u64);
                        if s.position <= self.sent && lim > self.limit {
                            self.limit = lim;
                            self.copies.reserve(copies_bound(s.window));
                        }
                    }
                }
            }
            Packet::Nak(n) => {
                if matches!(self.phase, Phase::Live { .. }) {
                    self.last_rx = now;
                    self.stats
                        .naks
                        .fetch_add(n.ranges.len() as u64, Ordering::Relaxed);
                    for r in n.ranges {
                        if self.naks.len() < MAX_QUEUED_NAKS {
                            self.naks.push_back((r, n.receiver_id));
                        }
                    }
                }
            }
            Packet::Error(e) => match e.code {
                ErrorCode::UnknownSession => {
                    if matches!(self.phase, Phase::Live { .. }) {
                        log::info!("receiver lost the session; setting it up again");
                        self.restart_setup();
                    }
                }
                code => {
                    return Err(Error::Remote {
                        code,
                        a: e.a,
                        b: e.b,
                    });
                }
            },
            Packet::Close(_) => {
                if matches!(self.phase, Phase::Live { .. }) {
                    self.restart_setup();
                }
            }
            _ => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn establish(
        &mut self,
        receiver_id: u64,
        resume: u64,
        window: u32,
        now: Instant,
    ) -> Result<()> {
        let tail = self.source.tail()?;
        if resume > tail {
            return Err(Error::ReplicaAhead {
                replica: resume,
                tail,
            });
        }
        let live = match self.source.reader_at(resume) {
            Ok(r) => r,
            Err(Error::Lapped { requested, oldest }) => {
                let p = Packet::Error(ErrorPacket {
                    code: ErrorCode::Lapped,
                    a: requested,
                    b: oldest,
                });
                self.send_control(&p)?;
                self.io.poll(Duration::ZERO, &mut |_, _| {})?;
                return Err(Error::Lapped { requested, oldest });
            }
            Err(e) => return Err(e),
        };
        self.live = Some(live);
        self.rtx.clear();
        self.stash.clear();
        self.naks.clear();
        self.recent.clear();
        self.packer.discard();
        self.copies.clear();
        self.copies.reserve(copies_bound(window));
        self.sent = resume;
        self.acked = resume;
        self.limit = resume.saturating_add(window as u64);
        self.last_rx = now;
        self.last_data = now;
        self.phase = Phase::Live { receiver_id };
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        self.stats.connected.store(1, Ordering::Relaxed);
        self.stats.acked_position.store(resume, Ordering::Relaxed);
        self.stats.sent_position.store(resume, Ordering::Relaxed);
        if self.group.is_none() {
            self.acks.update(receiver_id, resume);
        }
        log::info!(
            "session {:#x} established with {} (receiver {receiver_id:#x}), resuming at {resume}",
            self.session,
            self.cfg.remote
        );
        Ok(())
    }

    /// Reads new frames from the primary while they start inside the receiver's window.
    fn ship_live(&mut self) -> Result<bool> {
        let Some(live) = self.live.as_mut() else {
            return Ok(false);
        };
        let before = self.sent;
        self.packer.set_keep(true);
        let before_packets = self.packer.pending();
        while let Some((pos, _)) = self.stash.front() {
            if *pos >= self.limit {
                break;
            }
            let (pos, raw) = self.stash.pop_front().unwrap_or_else(|| unreachable!());
            self.packer.add(pos, &raw);
            self.sent = pos + align8(raw.len() as u64);
        }
        let mut frames = 0;
        while self.stash.is_empty() && self.sent < self.limit && frames < 4 * LIVE_BATCH {
            let (packer, stash, sent, limit) = (
                &mut self.packer,
                &mut self.stash,
                &mut self.sent,
                self.limit,
            );
            let n = match live.poll_raw(LIVE_BATCH, &mut |pos, raw| {
                if !stash.is_empty() || pos >= limit {
                    stash.push_back((pos, raw.to_vec()));
                } else {
                    packer.add(pos, raw);
                    *sent = pos + align8(raw.len() as u64);
                }
            }) {
                Ok(n) => n,
                Err(e) => {
                    // Whatever was packed from a lapped read may be torn: send none of it.
                    self.packer.discard();
                    return Err(e);
                }
            };
            frames += n;
            if n == 0 {
                break;
            }
        }
        let packets = self.packer.pending().saturating_sub(before_packets) as u64;
        if self.sent != before {
            self.stats.sent_position.store(self.sent, Ordering::Relaxed);
            self.stats
                .data_packets
                .fetch_add(packets, Ordering::Relaxed);
        }
        if frames == 0 {
            // Idle: refresh the tail for progress reports.
            if let Ok(t) = self.source.tail() {
                self.stats.primary_tail.store(t, Ordering::Relaxed);
            }
        }
        Ok(self.sent != before)
    }

    /// The first sub-range of `[start, end)` not covered by a recent retransmission that
    /// reached `to` (the rest, if any, is queued again for receiver `who`).
    fn uncovered(
        &mut self,
        mut start: u64,
        end: u64,
        to: Option<SocketAddr>,
        who: u64,
    ) -> Option<(u64, u64)> {
        let reached = |d: &Option<SocketAddr>| d.is_none() || *d == to;
        loop {
            if start >= end {
                return None;
            }
            // A recent range containing `start` moves it past that range.
            if let Some(e) = self
                .recent
                .iter()
                .filter(|(q, _, d)| reached(d) && q.start <= start && q.end > start)
                .map(|(q, _, _)| q.end)
                .max()
            {
                start = e;
                continue;
            }
            // Otherwise stop at the next recent range that begins inside.
            let stop = self
                .recent
                .iter()
                .filter(|(q, _, d)| reached(d) && q.start > start && q.start < end)
                .map(|(q, _, _)| q.start)
                .min();
            return match stop {
                Some(s) => {
                    if self.naks.len() < MAX_QUEUED_NAKS {
                        self.naks.push_front((NakRange { start: s, end }, who));
                    }
                    Some((start, s))
                }
                None => Some((start, end)),
            };
        }
    }

    /// Index of a retransmission reader positioned exactly at `start`: the pooled reader with
    /// the largest position not after `start`, moved forward over the frames in between, or a
    /// new one (opening a reader maps a segment, so the pool keeps a few). `None` when `start`
    /// is not a frame boundary (a confused or hostile NAK).
    fn rtx_reader(&mut self, start: u64, to: SocketAddr) -> Result<Option<usize>> {
        const POOL: usize = 4;
        let best = self
            .rtx
            .iter()
            .enumerate()
            .filter(|(_, r)| r.position() <= start)
            .max_by_key(|(_, r)| r.position())
            .map(|(i, _)| i);
        let k = match best {
            Some(k) => k,
            None => {
                let r = match self.source.reader_at(start) {
                    Ok(r) => r,
                    Err(Error::Lapped { requested, oldest }) => {
                        self.send_lapped(requested, oldest, to)?;
                        return Err(Error::Lapped { requested, oldest });
                    }
                    Err(e) => {
                        log::debug!("ignoring NAK at {start}: {e}");
                        return Ok(None);
                    }
                };
                if self.rtx.len() >= POOL {
                    // Evict the reader furthest behind: NAKs move forward with the receiver.
                    if let Some(i) = (0..self.rtx.len()).min_by_key(|&i| self.rtx[i].position()) {
                        self.rtx.swap_remove(i);
                    }
                }
                self.rtx.push(r);
                self.rtx.len() - 1
            }
        };
        let r = &mut self.rtx[k];
        while r.position() < start {
            if r.poll_raw(1, &mut |_, _| {})? == 0 {
                return Ok(None);
            }
        }
        if r.position() != start {
            log::debug!("ignoring NAK at {start}: not a frame boundary");
            self.rtx.swap_remove(k);
            return Ok(None);
        }
        Ok(Some(k))
    }

    /// Answers queued NAKs from the journal.
    fn retransmit(&mut self, now: Instant) -> Result<bool> {
        while let Some((_, t, _)) = self.recent.front() {
            if now.duration_since(*t) > self.cfg.nak_holdoff {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        let mut budget = RTX_BUDGET;
        let mut any = false;
        self.packer.set_keep(false);
        self.naks
            .make_contiguous()
            .sort_unstable_by_key(|(r, _)| r.start);
        while budget > 0 {
            let Some((r, who)) = self.naks.pop_front() else {
                break;
            };
            let Some((floor, ceiling, to)) = self.nak_scope(r, who) else {
                continue;
            };
            let start = r.start.max(floor);
            let end = r.end.min(ceiling);
            if start >= end {
                continue;
            }
            // Only the parts not retransmitted within the hold-off: a NAK repeated while the
            // retransmission is in flight, or one overlapping an earlier NAK, costs nothing.
            let Some((start, end)) = self.uncovered(start, end, to, who) else {
                continue;
            };
            self.recent.push_back((NakRange { start, end }, now, to));
            let dest = to.unwrap_or(self.cfg.remote);
            if let Some((packets, bytes)) = self.resend_copies(start, end, to)? {
                budget = budget.saturating_sub(bytes);
                self.count_retransmits(packets as u64, to);
                any = true;
                continue;
            }
            let k = match self.rtx_reader(start, dest) {
                Ok(Some(k)) => k,
                Ok(None) => continue,
                Err(Error::Lapped { requested, oldest }) if self.group.is_some() => {
                    // One receiver too far behind does not stop the others.
                    log::warn!(
                        "receiver {who:#x} needs {requested}, no longer retained (oldest \
                         {oldest}): dropped"
                    );
                    self.refuse(who, now);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if to.is_some() && self.packer.pending() > 0 {
                // Packets for the group packed earlier in this loop go to the group.
                self.packer
                    .flush(&mut *self.io, &self.targets, &mut self.copies)?;
            }
            let rtx = &mut self.rtx[k];
            let before = self.packer.pending();
            loop {
                let pos = rtx.position();
                if pos >= end || budget == 0 {
                    break;
                }
                let packer = &mut self.packer;
                let b = &mut budget;
                let n = match rtx.poll_raw(16, &mut |pos, raw| {
                    if pos < end {
                        packer.add(pos, raw);
                        *b = b.saturating_sub(raw.len());
                    }
                }) {
                    Ok(n) => n,
                    Err(e) => {
                        self.packer.discard();
                        self.rtx.clear();
                        return Err(e);
                    }
                };
                if n == 0 {
                    break;
                }
            }
            // Retransmitted data goes out in its own packets, ahead of new data.
            self.packer.close();
            let packets = self.packer.pending().saturating_sub(before) as u64;
            if to.is_some() {
                // To one receiver: these packets leave now, the ones for the group later.
                self.packer
                    .flush(&mut *self.io, &[dest], &mut self.copies)?;
            }
            self.count_retransmits(packets, to);
            any = true;
        }
        Ok(any)
    }

    /// Sends the kept copies covering `[start, end)` to `to`, or to every target; `None` when
    /// the copies do not cover the range.
    fn resend_copies(
        &mut self,
        start: u64,
        end: u64,
        to: Option<SocketAddr>,
    ) -> Result<Option<(usize, usize)>> {
        if let Some(a) = to {
            return Ok(self.copies.send_range(start, end, &mut *self.io, a)?);
        }
        let mut total = None;
        for &t in &self.targets {
            let Some((p, b)) = self.copies.send_range(start, end, &mut *self.io, t)? else {
                return Ok(total);
            };
            let (tp, tb) = total.unwrap_or((0, 0));
            total = Some((tp + p, tb + b));
        }
        Ok(total)
    }

    fn count_retransmits(&self, packets: u64, to: Option<SocketAddr>) {
        self.stats
            .retransmit_packets
            .fetch_add(packets, Ordering::Relaxed);
        if to.is_none() && self.group.is_some() {
            self.stats
                .group_retransmit_packets
                .fetch_add(packets, Ordering::Relaxed);
        }
    }
}
