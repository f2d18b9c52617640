//! TCP receiver: accepts connections, writes frames in order into replicas, reports STATUS.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{self, ConnId, RecvBuffers, StreamIo};
use crate::auth::AuthKey;
use crate::error::{Error, Result};
use crate::frame::{check_header, for_each_frame};
use crate::io::{Backend, IoCounters};
use crate::journal::{Geometry, Replica, ReplicaStore};
use crate::status::StatusPolicy;
use crate::udp::{random_u64, ReceiverStats};
use crate::wire::{decode, encode, ErrorCode, ErrorPacket, Packet, SetupAck, Status, WireError};

/// TCP receiver settings.
#[derive(Debug, Clone)]
pub struct TcpReceiverConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Shared key for packet MACs.
    pub auth: Option<AuthKey>,
    /// Bytes past its position the sender may send.
    pub window: u32,
    /// STATUS is sent at least this often, and whenever the position moved a quarter window.
    pub status_interval: Duration,
    /// A position that moved is acknowledged once no STATUS went out for this long (see the
    /// UDP receiver's setting of the same name).
    pub status_progress_gap: Duration,
    /// A connection silent for this long is closed.
    pub session_timeout: Duration,
    /// Longest wait per loop iteration.
    pub idle_wait: Duration,
    /// Socket backend ([`Backend::Auto`]: io_uring when available).
    pub backend: Backend,
}

impl TcpReceiverConfig {
    /// Defaults for `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        TcpReceiverConfig {
            listen,
            auth: None,
            window: 8 << 20,
            status_interval: Duration::from_millis(10),
            status_progress_gap: Duration::from_micros(100),
            session_timeout: Duration::from_secs(5),
            idle_wait: Duration::from_millis(1),
            backend: Backend::Auto,
        }
    }
}

fn status_policy(cfg: &TcpReceiverConfig) -> StatusPolicy {
    StatusPolicy {
        interval: cfg.status_interval,
        progress_gap: cfg.status_progress_gap,
        window: cfg.window,
    }
}

struct Active {
    session: u32,
    name: String,
    replica: Box<dyn Replica>,
    segment_size: u64,
    next: u64,
    frag: Option<(u64, Vec<u8>)>,
    last_status: Option<Instant>,
    status_pos: u64,
}

struct Conn {
    id: ConnId,
    peer: SocketAddr,
    active: Option<Active>,
    last_rx: Instant,
    /// Finished: closed once its last output (an ERROR) has left, or at this deadline.
    closing: Option<Instant>,
}

/// How long a failed connection may take to send its last packets before it is closed.
const LINGER: Duration = Duration::from_millis(200);

/// Receive buffers: the kernel fills one per chunk that arrives, shared by all connections.
const RECV_BUFFERS: RecvBuffers = RecvBuffers {
    count: 64,
    size: 64 << 10,
};

/// Receives replicated streams over TCP.
pub struct TcpReceiver {
    cfg: TcpReceiverConfig,
    io: Box<dyn StreamIo>,
    addr: SocketAddr,
    store: Box<dyn ReplicaStore>,
    conns: Vec<Conn>,
    stats: Arc<ReceiverStats>,
    id: u64,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for TcpReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpReceiver")
            .field("addr", &self.addr)
            .field("backend", &self.io.backend())
            .field("connections", &self.conns.len())
            .finish_non_exhaustive()
    }
}

impl TcpReceiver {
    /// Binds the listener and sets up the socket backend ([`Backend::Auto`] falls back to plain
    /// sockets, with a logged warning, when io_uring is unavailable).
    pub fn new(store: Box<dyn ReplicaStore>, cfg: TcpReceiverConfig) -> Result<Self> {
        let listener = TcpListener::bind(cfg.listen)?;
        let addr = listener.local_addr()?;
        let mut io = io::open(cfg.backend, RECV_BUFFERS)?;
        io.listen(listener)?;
        Ok(TcpReceiver {
            cfg,
            io,
            addr,
            store,
            conns: Vec::new(),
            stats: Arc::new(ReceiverStats::default()),
            id: random_u64(),
            scratch: Vec::new(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.addr)
    }

    /// Which socket backend is in use.
    pub fn backend(&self) -> Backend {
        self.io.backend()
    }

    /// System calls and socket operations so far.
    pub fn io_counters(&self) -> IoCounters {
        self.io.counters()
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<ReceiverStats> {
        self.stats.clone()
    }

    /// Runs until `shutdown` is set.
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        // Relaxed: a stop flag, ordering nothing.
        while !shutdown.load(Ordering::Relaxed) {
            self.step()?;
        }
        Ok(())
    }

    /// One iteration: take new connections, parse what arrived, write replicas, queue STATUS;
    /// then hand the output to the kernel and collect input, waiting up to `idle_wait` when
    /// none has arrived.
    pub fn step(&mut self) -> Result<()> {
        let now = Instant::now();
        while let Some((id, peer)) = self.io.accept() {
            self.conns.push(Conn {
                id,
                peer,
                active: None,
                last_rx: now,
                closing: None,
            });
        }
        for i in 0..self.conns.len() {
            if self.conns[i].closing.is_some() {
                continue;
            }
            if let Err(e) = self.service(i, now) {
                log::info!("connection from {} closed: {e}", self.conns[i].peer);
                self.conns[i].active = None;
                self.conns[i].closing = Some(now + LINGER);
            }
        }
        let io = &mut self.io;
        self.conns.retain(|c| match c.closing {
            Some(deadline)
                if io.pending_write(c.id) == 0 || io.error(c.id).is_some() || now >= deadline =>
            {
                io.remove(c.id);
                false
            }
            _ => true,
        });
        // Progress not acknowledged yet shortens the wait to when its STATUS is due.
        let status = status_policy(&self.cfg);
        let wait = self
            .conns
            .iter()
            .filter_map(|c| c.active.as_ref())
            .filter_map(|a| status.progress_wait(a.next, a.status_pos, a.last_status, now))
            .fold(self.cfg.idle_wait, Duration::min);
        self.io.poll(wait)?;
        Ok(())
    }

    fn service(&mut self, i: usize, now: Instant) -> Result<()> {
        let id = self.conns[i].id;
        loop {
            let pkt = match self.io.framed(id).next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    // The byte stream lost its framing: nothing after this can be trusted.
                    self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                    return Err(e.into());
                }
            };
            self.scratch.clear();
            self.scratch.extend_from_slice(pkt);
            let scratch = std::mem::take(&mut self.scratch);
            let r = self.packet(i, &scratch, now);
            self.scratch = scratch;
            r?;
        }
        if let Some(e) = self.io.error(id) {
            return Err(e.into());
        }
        let c = &mut self.conns[i];
        if now.duration_since(c.last_rx) >= self.cfg.session_timeout {
            return Err(Error::Io(std::io::ErrorKind::TimedOut.into()));
        }
        if let Some(a) = c.active.as_mut() {
            // Relaxed: statistics, read for progress; they order nothing.
            self.stats.position.store(a.next, Ordering::Relaxed);
            self.stats.highest.store(a.next, Ordering::Relaxed);
            let status = status_policy(&self.cfg);
            if status.due(a.next, a.status_pos, a.last_status, now) {
                let st = Packet::Status(Status {
                    receiver_id: self.id,
                    position: a.next,
                    highest: a.next,
                    window: self.cfg.window,
                });
                encode(
                    &st,
                    a.session,
                    self.cfg.auth.as_ref(),
                    &mut self.io.framed(id).wbuf,
                )?;
                a.last_status = Some(now);
                a.status_pos = a.next;
            }
        }
        Ok(())
    }

    fn packet(&mut self, i: usize, bytes: &[u8], now: Instant) -> Result<()> {
        let (session, p) = match decode(bytes, self.cfg.auth.as_ref()) {
            Ok(x) => x,
            Err(e @ (WireError::BadMac | WireError::MissingMac | WireError::UnexpectedMac)) => {
                self.stats.bad_mac.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
            Err(e) => {
                self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        self.conns[i].last_rx = now;
        match p {
            Packet::Setup(s) => {
                let g = Geometry {
                    name: s.name.to_string(),
                    segment_size: s.segment_size,
                    max_message_size: s.max_message_size,
                    crc: s.stream_flags & 1 != 0,
                };
                // Another connection for this stream is a sender that reconnected before its
                // old connection timed out: close the old one and release its replica.
                self.conns[i].active = None;
                for (j, c) in self.conns.iter_mut().enumerate() {
                    if j != i && c.active.as_ref().is_some_and(|a| a.name == g.name) {
                        c.active = None;
                        c.closing = Some(now);
                    }
                }
                let replica = match self.store.open_from(&g, s.oldest) {
                    Ok(r) => r,
                    Err(e) => {
                        let code = match e {
                            Error::Geometry(_) => ErrorCode::GeometryMismatch,
                            _ => ErrorCode::ReplicaUnavailable,
                        };
                        let ep = Packet::Error(ErrorPacket { code, a: 0, b: 0 });
                        let wbuf = &mut self.io.framed(self.conns[i].id).wbuf;
                        encode(&ep, session, self.cfg.auth.as_ref(), wbuf)?;
                        return Err(e);
                    }
                };
                let next = replica.next_position();
                self.stats.sessions.fetch_add(1, Ordering::Relaxed);
                let c = &mut self.conns[i];
                let ack = Packet::SetupAck(SetupAck {
                    nonce: s.nonce,
                    receiver_id: self.id,
                    resume: next,
                    window: self.cfg.window,
                });
                encode(
                    &ack,
                    session,
                    self.cfg.auth.as_ref(),
                    &mut self.io.framed(c.id).wbuf,
                )?;
                c.active = Some(Active {
                    session,
                    name: g.name,
                    replica,
                    segment_size: s.segment_size as u64,
                    next,
                    frag: None,
                    last_status: None,
                    status_pos: next,
                });
            }
            Packet::Data(d) => {
                let stats = &self.stats;
                let Some(a) = self.conns[i]
                    .active
                    .as_mut()
                    .filter(|a| a.session == session)
                else {
                    stats.unknown_session.fetch_add(1, Ordering::Relaxed);
                    return Err(Error::Io(std::io::ErrorKind::InvalidData.into()));
                };
                if d.fragment {
                    let (pos, buf) = a.frag.get_or_insert_with(|| (d.position, Vec::new()));
                    if *pos != d.position || d.frag_offset as usize != buf.len() {
                        return Err(Error::Io(std::io::ErrorKind::InvalidData.into()));
                    }
                    buf.extend_from_slice(d.bytes);
                    if buf.len() == d.frame_len as usize {
                        let (pos, buf) = a.frag.take().unwrap_or_default();
                        check_header(pos, &buf, a.segment_size)?;
                        write(a, stats, pos, &buf)?;
                    }
                } else {
                    let mut res = Ok(());
                    for_each_frame(d.position, d.bytes, a.segment_size, |pos, raw| {
                        if res.is_ok() {
                            res = write(a, stats, pos, raw);
                        }
                    })?;
                    res?;
                }
            }
            Packet::Heartbeat(_) => {}
            Packet::Close(_) => {
                return Err(Error::Io(std::io::ErrorKind::ConnectionAborted.into()));
            }
            _ => {
                self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }
}

fn write(a: &mut Active, stats: &ReceiverStats, pos: u64, raw: &[u8]) -> Result<()> {
    if pos < a.next {
        stats.duplicates.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    if pos > a.next {
        // TCP is ordered: a gap means the sender is broken. Reconnecting resumes correctly.
        return Err(Error::Io(std::io::ErrorKind::InvalidData.into()));
    }
    a.replica.write_frame(pos, raw)?;
    let next = a.replica.next_position();
    stats.frames.fetch_add(1, Ordering::Relaxed);
    stats.bytes.fetch_add(next - pos, Ordering::Relaxed);
    a.next = next;
    Ok(())
}
