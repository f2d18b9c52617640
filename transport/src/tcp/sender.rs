//! TCP sender: connects, hands shakes, streams batched DATA within the receiver's window, and
//! reconnects with exponential backoff and jitter when the connection fails.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{self, ConnId, RecvBuffers, StreamIo};
use crate::auth::AuthKey;
use crate::error::{Error, Result};
use crate::frame::align8;
use crate::io::{Backend, IoCounters};
use crate::journal::{RawReader, Source};
use crate::sync::AckTracker;
use crate::udp::packer::Packer;
use crate::udp::{now_ns, random_u64, SenderStats};
use crate::wire::{decode, encode, Close, ErrorCode, Heartbeat, Packet, Setup};

/// Exponential backoff with jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Fraction of random spread around each delay (0.5: ±50 %).
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Delay before attempt `n` (0-based) with a random factor `u` in `[0, 1)`.
    pub fn delay(&self, n: u32, u: f64) -> Duration {
        let base = self.initial.as_secs_f64() * 2f64.powi(n.min(30) as i32);
        let base = base.min(self.max.as_secs_f64());
        let factor = 1.0 + self.jitter * (2.0 * u - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// TCP sender settings.
#[derive(Debug, Clone)]
pub struct TcpSenderConfig {
    /// Receiver address.
    pub remote: SocketAddr,
    /// Shared key for packet MACs.
    pub auth: Option<AuthKey>,
    /// Reconnection delays.
    pub backoff: Backoff,
    /// Connect and handshake time limit.
    pub connect_timeout: Duration,
    /// Without any packet from the receiver for this long, the connection is dropped and made again.
    pub session_timeout: Duration,
    /// A HEARTBEAT goes out after this long without DATA.
    pub heartbeat_interval: Duration,
    /// Largest DATA packet.
    pub batch_bytes: usize,
    /// Wait per idle loop iteration (`ZERO`: busy-spin).
    pub idle_wait: Duration,
    /// Acknowledged positions are published here (synchronous mode).
    pub acks: Option<AckTracker>,
    /// Socket backend ([`Backend::Auto`]: io_uring when available).
    pub backend: Backend,
}

impl TcpSenderConfig {
    /// Defaults for `remote`.
    pub fn new(remote: SocketAddr) -> Self {
        TcpSenderConfig {
            remote,
            auth: None,
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(2),
            session_timeout: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(100),
            batch_bytes: 64 << 10,
            idle_wait: Duration::from_micros(200),
            acks: None,
            backend: Backend::Auto,
        }
    }
}

/// Ships one stream to one receiver over TCP.
pub struct TcpSender {
    cfg: TcpSenderConfig,
    source: Box<dyn Source>,
    stats: Arc<SenderStats>,
    session: u32,
    rng: u64,
    /// The backend `cfg.backend` resolved to.
    backend: Backend,
    /// Set up by the first connection attempt (on the thread that runs the sender) and kept
    /// across reconnections.
    io: Option<Box<dyn StreamIo>>,
}

/// Receive buffers of a sender: only STATUS and control packets come back.
const RECV_BUFFERS: RecvBuffers = RecvBuffers {
    count: 16,
    size: 4 << 10,
};

/// How long a closing connection may take to send its CLOSE.
const LINGER: Duration = Duration::from_millis(200);

impl std::fmt::Debug for TcpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSender")
            .field("remote", &self.cfg.remote)
            .finish_non_exhaustive()
    }
}

fn fatal(e: &Error) -> bool {
    matches!(
        e,
        Error::Remote { .. } | Error::Lapped { .. } | Error::ReplicaAhead { .. }
    )
}

impl TcpSender {
    /// A sender for `source` (connects in [`TcpSender::run`]). [`Backend::Auto`] is resolved
    /// here: without io_uring, a warning is logged and plain sockets are used.
    pub fn new(source: Box<dyn Source>, cfg: TcpSenderConfig) -> Self {
        TcpSender {
            backend: io::resolve(cfg.backend),
            io: None,
            cfg,
            source,
            stats: Arc::new(SenderStats::default()),
            session: (random_u64() >> 32) as u32 | 1,
            rng: random_u64(),
        }
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<SenderStats> {
        self.stats.clone()
    }

    /// Which socket backend is in use.
    pub fn backend(&self) -> Backend {
        self.io.as_ref().map_or(self.backend, |io| io.backend())
    }

    /// System calls and socket operations so far (all connections).
    pub fn io_counters(&self) -> IoCounters {
        self.io.as_ref().map(|io| io.counters()).unwrap_or_default()
    }

    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs until `shutdown` is set, reconnecting after failures; returns only for shutdown or
    /// an error reconnection cannot fix (lapped resume position, replica ahead, refused replica).
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        let mut attempt = 0u32;
        // Relaxed: a stop flag, ordering nothing.
        while !shutdown.load(Ordering::Relaxed) {
            let mut established = false;
            match self.connection(shutdown, &mut established) {
                Ok(()) => return Ok(()),
                Err(e) if fatal(&e) => return Err(e),
                Err(e) => {
                    self.stats.connected.store(0, Ordering::Relaxed);
                    if established {
                        attempt = 0;
                    }
                    let u = self.uniform();
                    let d = self.cfg.backoff.delay(attempt, u);
                    attempt = attempt.saturating_add(1);
                    log::warn!(
                        "connection to {} failed ({e}); retrying in {d:?}",
                        self.cfg.remote
                    );
                    let until = Instant::now() + d;
                    while Instant::now() < until && !shutdown.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(5).min(d));
                    }
                }
            }
        }
        Ok(())
    }

    fn control(&self, io: &mut dyn StreamIo, id: ConnId, p: &Packet<'_>) -> Result<()> {
        encode(
            p,
            self.session,
            self.cfg.auth.as_ref(),
            &mut io.framed(id).wbuf,
        )?;
        Ok(())
    }

    /// One connection: connect, hand shake, stream until failure or `shutdown`.
    fn connection(&mut self, shutdown: &AtomicBool, established: &mut bool) -> Result<()> {
        let stream = TcpStream::connect_timeout(&self.cfg.remote, self.cfg.connect_timeout)?;
        let mut io = match self.io.take() {
            Some(io) => io,
            None => io::open(self.backend, RECV_BUFFERS)?,
        };
        let r = io.add(stream).map_err(Error::from).and_then(|id| {
            let r = self.stream(&mut *io, id, shutdown, established);
            io.remove(id);
            r
        });
        self.io = Some(io);
        r
    }

    fn stream(
        &mut self,
        io: &mut dyn StreamIo,
        id: ConnId,
        shutdown: &AtomicBool,
        established: &mut bool,
    ) -> Result<()> {
        let g = self.source.geometry();
        let nonce = random_u64();
        let oldest = self.source.oldest()?;
        let setup = Packet::Setup(Setup {
            nonce,
            oldest,
            tail: self.source.tail()?.max(oldest),
            segment_size: g.segment_size,
            max_message_size: g.max_message_size,
            mtu: 0,
            stream_flags: u8::from(g.crc),
            name: &g.name,
        });
        self.control(io, id, &setup)?;
        let deadline = Instant::now() + self.cfg.connect_timeout;
        let (receiver_id, resume, window) = loop {
            if let Some(pkt) = io.framed(id).next_packet()? {
                match decode(pkt, self.cfg.auth.as_ref())? {
                    (s, Packet::SetupAck(a)) if s == self.session && a.nonce == nonce => {
                        break (a.receiver_id, a.resume, a.window)
                    }
                    (_, Packet::Error(e)) => {
                        return Err(Error::Remote {
                            code: e.code,
                            a: e.a,
                            b: e.b,
                        })
                    }
                    _ => continue,
                }
            }
            if let Some(e) = io.error(id) {
                return Err(e.into());
            }
            if Instant::now() >= deadline {
                return Err(Error::Io(std::io::ErrorKind::TimedOut.into()));
            }
            io.poll(Duration::from_millis(10))?;
        };
        let tail = self.source.tail()?;
        if resume > tail {
            return Err(Error::ReplicaAhead {
                replica: resume,
                tail,
            });
        }
        let mut live: Box<dyn RawReader> = self.source.reader_at(resume)?;
        *established = true;
        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
        self.stats.connected.store(1, Ordering::Relaxed);
        self.stats.acked_position.store(resume, Ordering::Relaxed);
        if let Some(t) = &self.cfg.acks {
            t.update(receiver_id, resume);
        }
        log::info!("connected to {}; resuming at {resume}", self.cfg.remote);
        let mut packer = Packer::new(self.session, self.cfg.batch_bytes, self.cfg.auth.clone());
        let mut sent = resume;
        let mut acked = resume;
        let mut limit = resume + window as u64;
        let mut stash: Option<(u64, Vec<u8>)> = None;
        let mut last_rx = Instant::now();
        let mut last_data = Instant::now();
        let mut scratch = Vec::new();
        while !shutdown.load(Ordering::Relaxed) {
            let now = Instant::now();
            io.poll(Duration::ZERO)?;
            while let Some(pkt) = io.framed(id).next_packet()? {
                scratch.clear();
                scratch.extend_from_slice(pkt);
                let (s, p) = decode(&scratch, self.cfg.auth.as_ref())?;
                if s != self.session {
                    continue;
                }
                last_rx = now;
                match p {
                    Packet::Status(st) if st.receiver_id == receiver_id => {
                        if st.position > acked && st.position <= sent {
                            acked = st.position;
                            self.stats.acked_position.store(acked, Ordering::Relaxed);
                            if let Some(t) = &self.cfg.acks {
                                t.update(receiver_id, acked);
                            }
                        }
                        limit = limit.max(st.position.saturating_add(st.window as u64));
                    }
                    Packet::Error(e) if e.code != ErrorCode::UnknownSession => {
                        return Err(Error::Remote {
                            code: e.code,
                            a: e.a,
                            b: e.b,
                        })
                    }
                    Packet::Close(_) | Packet::Error(_) => {
                        return Err(Error::Io(std::io::ErrorKind::ConnectionAborted.into()))
                    }
                    _ => {}
                }
            }
            if let Some(e) = io.error(id) {
                return Err(e.into());
            }
            let before = sent;
            if io.pending_write(id) < (1 << 20) {
                if let Some((pos, raw)) = stash.take() {
                    if pos < limit {
                        packer.add(pos, &raw);
                        sent = pos + align8(raw.len() as u64);
                    } else {
                        stash = Some((pos, raw));
                    }
                }
                let mut frames = 0;
                while stash.is_none() && sent < limit && frames < 1024 {
                    let n = live.poll_raw(128, &mut |pos, raw| {
                        if stash.is_some() || pos >= limit {
                            if stash.is_none() {
                                stash = Some((pos, raw.to_vec()));
                            }
                        } else {
                            packer.add(pos, raw);
                            sent = pos + align8(raw.len() as u64);
                        }
                    })?;
                    frames += n;
                    if n == 0 {
                        break;
                    }
                }
            }
            // A stash can hold only one frame: the closure above stops packing after it, and the
            // reader never returns more than one frame past the limit per call here because the
            // loop ends as soon as the stash is set.
            let packets = packer.drain_into(&mut io.framed(id).wbuf);
            if packets > 0 {
                self.stats
                    .data_packets
                    .fetch_add(packets as u64, Ordering::Relaxed);
                self.stats.sent_position.store(sent, Ordering::Relaxed);
                last_data = now;
            } else if now.duration_since(last_data) >= self.cfg.heartbeat_interval {
                let hb = Packet::Heartbeat(Heartbeat {
                    tail: sent,
                    timestamp_ns: now_ns(),
                });
                self.control(io, id, &hb)?;
                self.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
                last_data = now;
            }
            io.flush()?;
            if now.duration_since(last_rx) >= self.cfg.session_timeout {
                return Err(Error::Io(std::io::ErrorKind::TimedOut.into()));
            }
            if sent == before && !self.cfg.idle_wait.is_zero() {
                if let Ok(t) = self.source.tail() {
                    self.stats.primary_tail.store(t, Ordering::Relaxed);
                }
                io.poll(self.cfg.idle_wait.max(Duration::from_millis(1)))?;
            }
        }
        self.control(io, id, &Packet::Close(Close { reason: 0 }))?;
        // The CLOSE is a courtesy (the receiver also notices the connection ending): give it a
        // moment to leave, no more.
        let until = Instant::now() + LINGER;
        while io.pending_write(id) > 0 && io.error(id).is_none() && Instant::now() < until {
            io.poll(Duration::from_millis(1))?;
        }
        Ok(())
    }
}
