//! TCP sender: connects, hands shakes, streams batched DATA within the receiver's window (see
//! [`super::session`]), and reconnects with exponential backoff and jitter when the connection
//! fails.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::io::{self, RecvBuffers, StreamIo};
use super::session::{Ctx, Session};
use crate::acks::AckSinks;
use crate::auth::AuthKey;
use crate::error::{Error, Result};
use crate::io::{Backend, IoCounters};
use crate::journal::Source;
use crate::sync::AckTracker;
use crate::udp::{random_u64, SenderStats};

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
///
/// Either [`TcpSender::run`] it on a thread of its own, or drive it with [`TcpSender::step`]
/// from a loop of yours and end with [`TcpSender::close`].
pub struct TcpSender {
    cfg: TcpSenderConfig,
    source: Box<dyn Source>,
    stats: Arc<SenderStats>,
    session: u32,
    rng: u64,
    /// The backend `cfg.backend` resolved to.
    backend: Backend,
    /// Set up by the first step (on the thread that drives the sender) and kept across
    /// reconnections.
    io: Option<Box<dyn StreamIo>>,
    /// The established connection, if any.
    conn: Option<Session>,
    /// Failed attempts since the last established connection.
    attempt: u32,
    /// No connection attempt before this.
    retry_at: Option<Instant>,
    /// Where the receiver's acknowledgements go (tracker, the stream's replica-ack table).
    acks: AckSinks,
    /// The acknowledged position last handed to `acks`.
    recorded: u64,
}

/// Receive buffers of a sender: only STATUS and control packets come back.
const RECV_BUFFERS: RecvBuffers = RecvBuffers {
    count: 16,
    size: 4 << 10,
};

impl std::fmt::Debug for TcpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpSender")
            .field("remote", &self.cfg.remote)
            .field("backend", &self.backend())
            .field("connected", &self.conn.is_some())
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
    /// A sender for `source` (connects in its first [`TcpSender::step`]). [`Backend::Auto`] is
    /// resolved here: without io_uring, a warning is logged and plain sockets are used.
    pub fn new(source: Box<dyn Source>, cfg: TcpSenderConfig) -> Self {
        TcpSender {
            acks: AckSinks::new(cfg.acks.clone(), source.replica_acks()),
            recorded: 0,
            backend: io::resolve(cfg.backend),
            io: None,
            cfg,
            source,
            stats: Arc::new(SenderStats::default()),
            session: (random_u64() >> 32) as u32 | 1,
            rng: random_u64(),
            conn: None,
            attempt: 0,
            retry_at: None,
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

    /// Whether a connection is established (handshake done).
    pub fn is_connected(&self) -> bool {
        self.conn.is_some()
    }

    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Runs until `shutdown` is set, reconnecting after failures; returns only for shutdown
    /// (after sending CLOSE) or an error reconnection cannot fix (lapped resume position,
    /// replica ahead, refused replica).
    pub fn run(&mut self, shutdown: &AtomicBool) -> Result<()> {
        // Relaxed: a stop flag, ordering nothing.
        while !shutdown.load(Ordering::Relaxed) {
            self.step()?;
            if self.conn.is_none() {
                // Backing off: sleep in short slices so a shutdown is seen promptly.
                while self.retry_at.is_some_and(|t| Instant::now() < t)
                    && !shutdown.load(Ordering::Relaxed)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        self.close()
    }

    /// One iteration. Without a connection: connects and hands shakes (blocking, up to
    /// `connect_timeout` each) unless the backoff delay after a failure has not passed yet.
    /// With one: moves STATUS in and DATA out (waiting up to `idle_wait` when there is nothing
    /// new). A failed connection is dropped and retried after the backoff delay; only errors
    /// reconnection cannot fix are returned.
    pub fn step(&mut self) -> Result<()> {
        let mut io = match self.io.take() {
            Some(io) => io,
            None => io::open(self.backend, RECV_BUFFERS)?,
        };
        let r = self.step_with(&mut *io);
        self.io = Some(io);
        r
    }

    fn step_with(&mut self, io: &mut dyn StreamIo) -> Result<()> {
        let ctx = Ctx {
            cfg: &self.cfg,
            source: &*self.source,
            stats: &self.stats,
            session: self.session,
        };
        let (e, established) = match self.conn.as_mut() {
            Some(s) => match s.step(&ctx, io) {
                Ok(()) => {
                    // Off the data path: only when a STATUS moved the acknowledged position.
                    if s.acked() > self.recorded {
                        self.recorded = s.acked();
                        self.acks.update(s.receiver_id(), self.recorded);
                    }
                    return Ok(());
                }
                Err(e) => {
                    io.remove(s.id);
                    self.acks.remove(s.receiver_id());
                    self.conn = None;
                    (e, true)
                }
            },
            None => {
                if self.retry_at.is_some_and(|t| Instant::now() < t) {
                    return Ok(());
                }
                match connect(&ctx, io) {
                    Ok(s) => {
                        let resume = s.acked();
                        self.stats.sessions.fetch_add(1, Ordering::Relaxed);
                        self.stats.connected.store(1, Ordering::Relaxed);
                        self.stats.acked_position.store(resume, Ordering::Relaxed);
                        self.recorded = resume;
                        self.acks.update(s.receiver_id(), resume);
                        log::info!("connected to {}; resuming at {resume}", self.cfg.remote);
                        self.conn = Some(s);
                        self.retry_at = None;
                        return Ok(());
                    }
                    Err(e) => (e, false),
                }
            }
        };
        if fatal(&e) {
            return Err(e);
        }
        self.stats.connected.store(0, Ordering::Relaxed);
        if established {
            self.attempt = 0;
        }
        let u = self.uniform();
        let d = self.cfg.backoff.delay(self.attempt, u);
        self.attempt = self.attempt.saturating_add(1);
        log::warn!(
            "connection to {} failed ({e}); retrying in {d:?}",
            self.cfg.remote
        );
        self.retry_at = Some(Instant::now() + d);
        Ok(())
    }

    /// Sends CLOSE on the established connection, if any, and ends it.
    pub fn close(&mut self) -> Result<()> {
        let (Some(s), Some(io)) = (self.conn.take(), self.io.as_mut()) else {
            return Ok(());
        };
        let ctx = Ctx {
            cfg: &self.cfg,
            source: &*self.source,
            stats: &self.stats,
            session: self.session,
        };
        let r = s.close(&ctx, &mut **io);
        io.remove(s.id);
        self.acks.remove(s.receiver_id());
        self.stats.connected.store(0, Ordering::Relaxed);
        r
    }
}

/// Connects, adds the socket to `io` and hands shakes.
fn connect(ctx: &Ctx<'_>, io: &mut dyn StreamIo) -> Result<Session> {
    let stream = TcpStream::connect_timeout(&ctx.cfg.remote, ctx.cfg.connect_timeout)?;
    let id = io.add(stream)?;
    Session::handshake(ctx, io, id).inspect_err(|_| io.remove(id))
}
