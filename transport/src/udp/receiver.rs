//! The receiving side: accepts sessions, writes frames into replicas at their positions, holds
//! early frames, NAKs gaps, and reports its position and window.
//!
//! Listening on an IPv4 multicast group, the receiver joins it with a group socket (receive
//! only) and sends its SETUP_ACK, STATUS and NAK from a unicast control socket of its own, on
//! which retransmissions meant for it alone arrive.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::group::{control_socket, group_socket, multicast_group, MulticastOptions};
use super::random_u64;
use super::reorder::Reorder;
use crate::auth::AuthKey;
use crate::error::{Error, Result};
use crate::frame::{align8, check_header, for_each_frame};
use crate::io::{open_udp, Backend, DatagramIo, UdpOptions};
use crate::journal::{Geometry, Replica, ReplicaStore};
use crate::loss::{LossConfig, LossyIo};
use crate::status::StatusPolicy;
use crate::wire::{
    decode, encode, Data, ErrorCode, ErrorPacket, Nak, Packet, Setup, SetupAck, Status,
    MAX_NAK_RANGES,
};

/// NAK packets sent per session and loop iteration at most.
const NAK_PACKETS: usize = 4;

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Shared key: every packet must carry a valid MAC.
    pub auth: Option<AuthKey>,
    /// Socket options and backend.
    pub udp: UdpOptions,
    /// Fault injection (diagnostics).
    pub loss: Option<LossConfig>,
    /// Bytes past its position the receiver accepts (and the sender may send).
    pub window: u32,
    /// STATUS is sent at least this often, and whenever the position moved a quarter window.
    pub status_interval: Duration,
    /// A position that moved is acknowledged once no STATUS went out for this long, so a
    /// writer waiting for replicas (synchronous replication) hears of it soon; at most one
    /// STATUS per gap while data flows. `Duration::MAX`: only the rules above.
    pub status_progress_gap: Duration,
    /// A gap still open is NAKed again after this long.
    pub nak_interval: Duration,
    /// A session without packets for this long is closed (its replica released).
    pub session_timeout: Duration,
    /// How long a loop iteration waits for packets.
    pub idle_wait: Duration,
    /// Multicast (`listen` is an IPv4 group address): the interface to join the group on and
    /// to send control packets from (TTL and loopback are the sender's).
    pub multicast: MulticastOptions,
}

impl ReceiverConfig {
    /// Defaults for listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        ReceiverConfig {
            listen,
            auth: None,
            udp: UdpOptions::default(),
            loss: None,
            window: 4 << 20,
            status_interval: Duration::from_millis(10),
            status_progress_gap: Duration::from_micros(100),
            nak_interval: Duration::from_millis(4),
            session_timeout: Duration::from_secs(5),
            idle_wait: Duration::from_millis(1),
            multicast: MulticastOptions::default(),
        }
    }
}

/// Live counters of a receiver, each written only by the receiver thread with `Relaxed` stores:
/// independent statistics read for display, ordering nothing else.
#[derive(Debug, Default)]
pub struct ReceiverStats {
    /// Replica position of the most recently active session.
    pub position: AtomicU64,
    /// Highest position seen (end of the furthest frame or heartbeat tail).
    pub highest: AtomicU64,
    /// Frames written to replicas.
    pub frames: AtomicU64,
    /// Bytes written to replicas (aligned).
    pub bytes: AtomicU64,
    /// Frames received more than once.
    pub duplicates: AtomicU64,
    /// Frames beyond the window, dropped.
    pub beyond_window: AtomicU64,
    /// Packets that failed to decode (garbage, truncation, bad version...).
    pub bad_packets: AtomicU64,
    /// Packets with a missing or wrong MAC.
    pub bad_mac: AtomicU64,
    /// Packets for sessions this receiver does not have.
    pub unknown_session: AtomicU64,
    /// Frames that failed their header checks or that the replica refused.
    pub bad_frames: AtomicU64,
    /// NAK packets sent.
    pub naks: AtomicU64,
    /// Sessions accepted.
    pub sessions: AtomicU64,
}

struct Session {
    peer: SocketAddr,
    name: String,
    replica: Box<dyn Replica>,
    segment_size: u64,
    next: u64,
    highest: u64,
    reorder: Reorder,
    last_rx: Instant,
    last_status: Option<Instant>,
    status_pos: u64,
    last_nak: Option<(Instant, u64)>,
}

/// Receives replicated streams over UDP.
pub struct UdpReceiver {
    cfg: ReceiverConfig,
    store: Box<dyn ReplicaStore>,
    /// The socket control packets leave from (in multicast, the unicast control socket).
    io: Box<dyn DatagramIo>,
    /// Multicast: the group socket DATA, HEARTBEAT and SETUP arrive on.
    group_io: Option<Box<dyn DatagramIo>>,
    id: u64,
    sessions: HashMap<u32, Session>,
    stats: Arc<ReceiverStats>,
    rx: Vec<u8>,
    rx_meta: Vec<(std::ops::Range<usize>, SocketAddr)>,
    out: Vec<u8>,
    pending: Vec<(SocketAddr, u32, Packet<'static>)>,
    last_unknown_reply: Option<Instant>,
}

impl std::fmt::Debug for UdpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UdpReceiver")
            .field("id", &self.id)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

impl UdpReceiver {
    /// Binds the listening socket; replicas are opened through `store`.
    pub fn new(store: Box<dyn ReplicaStore>, mut cfg: ReceiverConfig) -> Result<Self> {
        let (mut io, mut group_io) = match multicast_group(cfg.listen) {
            Some(g) => (
                control_socket(&cfg.multicast, &cfg.udp)?,
                Some(group_socket(g, &cfg.multicast, &cfg.udp)?),
            ),
            None => (open_udp(cfg.listen, &cfg.udp)?, None),
        };
        // A window larger than the kernel can buffer turns bursts into drops and NAKs. Each
        // datagram costs about twice its size in buffer accounting, and SO_RCVBUF reports
        // double the set value: a third of it is a safe share of frame bytes.
        if let Some(buf) = group_io.as_ref().unwrap_or(&io).recv_buffer_size() {
            let cap = (buf / 3).max(64 << 10) as u32;
            if cap < cfg.window {
                log::info!(
                    "receiver window {} capped to {cap} by SO_RCVBUF {buf}",
                    cfg.window
                );
                cfg.window = cap;
            }
        }
        if let Some(l) = cfg.loss {
            io = Box::new(LossyIo::new(io, l));
            group_io = group_io.map(|g| {
                let l = LossConfig {
                    seed: l.seed ^ 0x9e37_79b9_7f4a_7c15,
                    ..l
                };
                Box::new(LossyIo::new(g, l)) as Box<dyn DatagramIo>
            });
        }
        Ok(UdpReceiver {
            store,
            io,
            group_io,
            id: random_u64(),
            sessions: HashMap::new(),
            stats: Arc::new(ReceiverStats::default()),
            rx: Vec::with_capacity(256 << 10),
            rx_meta: Vec::new(),
            out: Vec::with_capacity(1024),
            pending: Vec::new(),
            last_unknown_reply: None,
            cfg,
        })
    }

    /// The bound address (useful with port 0); in multicast, the group address and port.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.group_io.as_ref().unwrap_or(&self.io).local_addr()?)
    }

    /// The address control packets leave from (in multicast, the unicast control socket).
    pub fn control_addr(&self) -> Result<SocketAddr> {
        Ok(self.io.local_addr()?)
    }

    /// Which socket backend is in use.
    pub fn backend(&self) -> Backend {
        self.io.backend()
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        self.stats.clone()
    }

    /// This receiver's identity as reported in STATUS.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Replica position of the session receiving `name`, if any.
    pub fn position_of(&self, name: &str) -> Option<u64> {
        self.sessions
            .values()
            .find(|s| s.name == name)
            .map(|s| s.next)
    }

    /// Runs until `shutdown` is set.
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        // Relaxed: a stop flag; one extra iteration is harmless.
        while !shutdown.load(Ordering::Relaxed) {
            self.step()?;
        }
        Ok(())
    }

    /// One loop iteration: waits up to `idle_wait` for packets, handles them, sends NAK/STATUS.
    pub fn step(&mut self) -> Result<()> {
        // Busy-polling (a poll that never waits), the clock is read before receiving, so no
        // clock read lies between a datagram's arrival and its frames reaching the replica;
        // after a poll that may have waited it is read then.
        let early = self.cfg.idle_wait.is_zero().then(Instant::now);
        self.rx.clear();
        self.rx_meta.clear();
        // Multicast: while a gap is open, retransmissions come to the control socket.
        let gap = self.group_io.is_some() && self.sessions.values().any(|s| s.highest > s.next);
        // Progress not acknowledged yet shortens the wait to when its STATUS is due.
        let wait = self.wait(early);
        let (rx, meta) = (&mut self.rx, &mut self.rx_meta);
        let mut on_recv = |d: &[u8], from| {
            let s = rx.len();
            rx.extend_from_slice(d);
            meta.push((s..rx.len(), from));
        };
        match self.group_io.as_mut() {
            None => {
                self.io.poll(wait, &mut on_recv)?;
            }
            Some(g) => {
                // Two sockets: take what both hold; when neither holds anything, wait on the
                // one the next packet most likely comes to.
                let n = g.poll(Duration::ZERO, &mut on_recv)?
                    + self.io.poll(Duration::ZERO, &mut on_recv)?;
                if n == 0 {
                    if gap {
                        self.io.poll(wait, &mut on_recv)?;
                    } else {
                        g.poll(wait, &mut on_recv)?;
                    }
                }
            }
        }
        let now = early.unwrap_or_else(Instant::now);
        let rx = std::mem::take(&mut self.rx);
        let meta = std::mem::take(&mut self.rx_meta);
        for (r, from) in &meta {
            self.handle(&rx[r.clone()], *from, now)?;
        }
        self.rx = rx;
        self.rx_meta = meta;
        self.timers(now)?;
        Ok(())
    }

    fn status_policy(&self) -> StatusPolicy {
        StatusPolicy {
            interval: self.cfg.status_interval,
            progress_gap: self.cfg.status_progress_gap,
            window: self.cfg.window,
        }
    }

    /// How long the next poll may wait: `idle_wait`, or less when a session's progress must be
    /// acknowledged sooner.
    fn wait(&self, now: Option<Instant>) -> Duration {
        let idle = self.cfg.idle_wait;
        if idle.is_zero() || self.sessions.is_empty() {
            return idle;
        }
        let now = now.unwrap_or_else(Instant::now);
        let policy = self.status_policy();
        self.sessions
            .values()
            .filter_map(|s| policy.progress_wait(s.next, s.status_pos, s.last_status, now))
            .fold(idle, Duration::min)
    }

    fn send(&mut self, to: SocketAddr, session: u32, p: &Packet<'_>) -> Result<()> {
        self.out.clear();
        encode(p, session, self.cfg.auth.as_ref(), &mut self.out)?;
        self.io.send_to(&self.out, to)?;
        Ok(())
    }

    fn handle(&mut self, d: &[u8], from: SocketAddr, now: Instant) -> Result<()> {
        let (session, p) = match decode(d, self.cfg.auth.as_ref()) {
            Ok(x) => x,
            Err(
                crate::wire::WireError::BadMac
                | crate::wire::WireError::MissingMac
                | crate::wire::WireError::UnexpectedMac,
            ) => {
                self.stats.bad_mac.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => {
                log::debug!("dropped packet from {from}: {e}");
                self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        if let Packet::Setup(s) = &p {
            return self.on_setup(session, s, from, now);
        }
        let Some(sess) = self.sessions.get_mut(&session) else {
            self.stats.unknown_session.fetch_add(1, Ordering::Relaxed);
            if matches!(p, Packet::Data(_) | Packet::Heartbeat(_))
                && self
                    .last_unknown_reply
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_millis(20))
            {
                self.last_unknown_reply = Some(now);
                let e = Packet::Error(ErrorPacket {
                    code: ErrorCode::UnknownSession,
                    a: 0,
                    b: 0,
                });
                self.send(from, session, &e)?;
            }
            return Ok(());
        };
        sess.last_rx = now;
        sess.peer = from;
        match p {
            Packet::Data(d) => Self::on_data(sess, &self.stats, self.cfg.window, &d),
            Packet::Heartbeat(h) => {
                // A heartbeat tail beyond anything plausible is ignored rather than NAKed.
                if h.tail > sess.highest && h.tail - sess.next <= 1 << 40 {
                    sess.highest = h.tail;
                }
                // A heartbeat is the sender probing (idle or window full): answer at once, so a
                // lost STATUS does not hold it back for a whole status interval.
                sess.last_status = None;
            }
            Packet::Close(_) => {
                log::info!("session {session:#x} ({}) closed by sender", sess.name);
                self.sessions.remove(&session);
            }
            Packet::Error(e) => {
                log::warn!(
                    "sender of '{}' reported {:?} ({}, {})",
                    sess.name,
                    e.code,
                    e.a,
                    e.b
                );
            }
            _ => {
                self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn on_setup(
        &mut self,
        session: u32,
        s: &Setup<'_>,
        from: SocketAddr,
        now: Instant,
    ) -> Result<()> {
        if !self.sessions.contains_key(&session) {
            // A new session for a stream already being received replaces the old one (the
            // sender restarted): release that replica first.
            let g = Geometry {
                name: s.name.to_string(),
                segment_size: s.segment_size,
                max_message_size: s.max_message_size,
                crc: s.stream_flags & 1 != 0,
            };
            self.sessions.retain(|_, x| x.name != g.name);
            let replica = match self.store.open_from(&g, s.oldest) {
                Ok(r) => r,
                Err(e) => {
                    log::warn!("cannot open replica for '{}': {e}", g.name);
                    let code = match e {
                        Error::Geometry(_) => ErrorCode::GeometryMismatch,
                        _ => ErrorCode::ReplicaUnavailable,
                    };
                    let p = Packet::Error(ErrorPacket { code, a: 0, b: 0 });
                    return self.send(from, session, &p);
                }
            };
            let next = replica.next_position();
            log::info!(
                "session {session:#x} from {from}: stream '{}' resumes at {next}",
                g.name
            );
            self.stats.sessions.fetch_add(1, Ordering::Relaxed);
            self.sessions.insert(
                session,
                Session {
                    peer: from,
                    name: g.name,
                    replica,
                    segment_size: s.segment_size as u64,
                    next,
                    highest: next,
                    reorder: Reorder::default(),
                    last_rx: now,
                    last_status: None,
                    status_pos: next,
                    last_nak: None,
                },
            );
        }
        let Some(sess) = self.sessions.get_mut(&session) else {
            return Ok(());
        };
        sess.last_rx = now;
        sess.peer = from;
        let ack = Packet::SetupAck(SetupAck {
            nonce: s.nonce,
            receiver_id: self.id,
            resume: sess.next,
            window: self.cfg.window,
        });
        self.send(from, session, &ack)
    }

    fn on_data(sess: &mut Session, stats: &ReceiverStats, window: u32, d: &Data<'_>) {
        let window = window as u64;
        if d.fragment {
            if d.position < sess.next {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if d.position - sess.next >= window
                || (d.frame_len as u64) > sess.segment_size
                || (d.frame_len as usize) < crate::frame::FRAME_HEADER_LEN
            {
                stats.beyond_window.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if let Some(frame) =
                sess.reorder
                    .fragment(d.position, d.frame_len, d.frag_offset, d.bytes)
            {
                match check_header(d.position, &frame, sess.segment_size) {
                    Ok(len) if len == frame.len() as u64 => {
                        Self::accept(sess, stats, window, d.position, &frame)
                    }
                    _ => {
                        stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            return;
        }
        let seg = sess.segment_size;
        let r = for_each_frame(d.position, d.bytes, seg, |pos, raw| {
            Self::accept(sess, stats, window, pos, raw)
        });
        if let Err(e) = r {
            log::debug!("bad frame in DATA: {e}");
            stats.bad_frames.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn accept(sess: &mut Session, stats: &ReceiverStats, window: u64, pos: u64, raw: &[u8]) {
        let end = pos + align8(raw.len() as u64);
        if pos < sess.next {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if pos - sess.next >= window {
            stats.beyond_window.fetch_add(1, Ordering::Relaxed);
            // A receiver far behind the group (joined late, back after an outage) learns here
            // that its whole window is missing, and NAKs it.
            sess.highest = sess.highest.max(sess.next + window);
            return;
        }
        sess.highest = sess.highest.max(end);
        if pos > sess.next {
            sess.reorder.insert(pos, raw);
            return;
        }
        if !Self::write(sess, stats, pos, raw) {
            return;
        }
        while let Some(f) = sess.reorder.take(sess.next) {
            let p = sess.next;
            let ok = Self::write(sess, stats, p, &f);
            sess.reorder.recycle(f);
            if !ok {
                break;
            }
        }
        sess.reorder.prune(sess.next);
    }

    fn write(sess: &mut Session, stats: &ReceiverStats, pos: u64, raw: &[u8]) -> bool {
        match sess.replica.write_frame(pos, raw) {
            Ok(()) => {
                let next = sess.replica.next_position();
                stats.frames.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(next - pos, Ordering::Relaxed);
                sess.next = next;
                true
            }
            Err(e) => {
                log::warn!("replica '{}' refused frame at {pos}: {e}", sess.name);
                stats.bad_frames.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    fn timers(&mut self, now: Instant) -> Result<()> {
        let timeout = self.cfg.session_timeout;
        self.sessions.retain(|id, s| {
            let keep = now.duration_since(s.last_rx) < timeout;
            if !keep {
                log::info!("session {id:#x} ({}) timed out", s.name);
            }
            keep
        });
        // Reused between iterations: a quiet loop allocates nothing.
        let mut out = std::mem::take(&mut self.pending);
        let status = self.status_policy();
        for (&id, s) in self.sessions.iter_mut() {
            Self::nak(s, id, self.id, now, &self.cfg, &self.stats, &mut out);
            if status.due(s.next, s.status_pos, s.last_status, now) {
                out.push((
                    s.peer,
                    id,
                    Packet::Status(Status {
                        receiver_id: self.id,
                        position: s.next,
                        highest: s.highest,
                        window: self.cfg.window,
                    }),
                ));
                s.last_status = Some(now);
                s.status_pos = s.next;
            }
            self.stats.position.store(s.next, Ordering::Relaxed);
            self.stats.highest.store(s.highest, Ordering::Relaxed);
        }
        let mut res = Ok(());
        for (to, id, p) in out.drain(..) {
            if res.is_ok() {
                res = self.send(to, id, &p);
            }
        }
        self.pending = out;
        res
    }

    /// Queues NAKs for `s`. Gaps that opened beyond everything NAKed so far are NAKed at once;
    /// every `nak_interval` the gaps from the replica's position on are NAKed again (lost NAKs,
    /// lost retransmissions), up to [`NAK_PACKETS`] packets of [`MAX_NAK_RANGES`] ranges each.
    fn nak(
        s: &mut Session,
        id: u32,
        receiver_id: u64,
        now: Instant,
        cfg: &ReceiverConfig,
        stats: &ReceiverStats,
        out: &mut Vec<(SocketAddr, u32, Packet<'static>)>,
    ) {
        if s.highest <= s.next {
            s.last_nak = None;
            return;
        }
        let (from, periodic) = match s.last_nak {
            None => (s.next, true),
            Some((t, _)) if now.duration_since(t) >= cfg.nak_interval => (s.next, true),
            Some((_, covered)) => (covered.max(s.next), false),
        };
        let mut cursor = from;
        for _ in 0..NAK_PACKETS {
            if cursor >= s.highest {
                break;
            }
            let ranges = s.reorder.gaps(cursor, s.highest, MAX_NAK_RANGES);
            let Some(last) = ranges.last() else {
                break;
            };
            let full = ranges.len() == MAX_NAK_RANGES;
            cursor = last.end;
            out.push((
                s.peer,
                id,
                Packet::Nak(Nak {
                    receiver_id,
                    ranges,
                }),
            ));
            stats.naks.fetch_add(1, Ordering::Relaxed);
            if !full {
                break;
            }
        }
        let covered = match s.last_nak {
            Some((_, c)) => c.max(cursor),
            None => cursor,
        };
        // Only the periodic round restarts the clock: a stream of new gaps must not postpone
        // the repeat of older ones.
        let t = match s.last_nak {
            Some((t, _)) if !periodic => t,
            _ => now,
        };
        s.last_nak = Some((t, covered));
    }
}
