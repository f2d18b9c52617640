//! One established connection of a TCP sender: the handshake, then one streaming iteration at a
//! time (STATUS in, DATA batches within the window out, HEARTBEAT when idle).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::io::{ConnId, StreamIo};
use super::sender::TcpSenderConfig;
use crate::error::{Error, Result};
use crate::frame::align8;
use crate::journal::{RawReader, Source};
use crate::udp::packer::Packer;
use crate::udp::{now_ns, random_u64, SenderStats};
use crate::wire::{decode, encode, Close, ErrorCode, Heartbeat, Packet, Setup};

/// Output queued beyond this stops packing until the kernel has taken some.
const MAX_PENDING: usize = 1 << 20;

/// How long a closing connection may take to send its CLOSE.
const LINGER: Duration = Duration::from_millis(200);

/// What a session borrows from its sender for a call.
pub(super) struct Ctx<'a> {
    pub(super) cfg: &'a TcpSenderConfig,
    pub(super) source: &'a dyn Source,
    pub(super) stats: &'a SenderStats,
    /// Session id of the sender.
    pub(super) session: u32,
}

impl Ctx<'_> {
    fn control(&self, io: &mut dyn StreamIo, id: ConnId, p: &Packet<'_>) -> Result<()> {
        let wbuf = &mut io.framed(id).wbuf;
        encode(p, self.session, self.cfg.auth.as_ref(), wbuf)?;
        Ok(())
    }
}

/// The streaming state of one connection.
pub(super) struct Session {
    /// The connection.
    pub(super) id: ConnId,
    receiver_id: u64,
    live: Box<dyn RawReader>,
    packer: Packer,
    /// End of what has been queued.
    sent: u64,
    acked: u64,
    /// The receiver's position plus its window: nothing at or beyond it is sent.
    limit: u64,
    /// A frame read past the limit, sent once the window opens.
    stash: Option<(u64, Vec<u8>)>,
    last_rx: Instant,
    last_data: Instant,
    scratch: Vec<u8>,
}

impl Session {
    /// Sends SETUP on `id`, waits (up to `connect_timeout`) for the SETUP_ACK and opens a reader
    /// of the primary at the resume position the receiver reported.
    pub(super) fn handshake(ctx: &Ctx<'_>, io: &mut dyn StreamIo, id: ConnId) -> Result<Session> {
        let g = ctx.source.geometry();
        let nonce = random_u64();
        let oldest = ctx.source.oldest()?;
        let setup = Packet::Setup(Setup {
            nonce,
            oldest,
            tail: ctx.source.tail()?.max(oldest),
            segment_size: g.segment_size,
            max_message_size: g.max_message_size,
            mtu: 0,
            stream_flags: u8::from(g.crc),
            name: &g.name,
        });
        ctx.control(io, id, &setup)?;
        let deadline = Instant::now() + ctx.cfg.connect_timeout;
        let (receiver_id, resume, window) = loop {
            if let Some(pkt) = io.framed(id).next_packet()? {
                match decode(pkt, ctx.cfg.auth.as_ref())? {
                    (s, Packet::SetupAck(a)) if s == ctx.session && a.nonce == nonce => {
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
        let tail = ctx.source.tail()?;
        if resume > tail {
            return Err(Error::ReplicaAhead {
                replica: resume,
                tail,
            });
        }
        let live = ctx.source.reader_at(resume)?;
        let now = Instant::now();
        Ok(Session {
            id,
            receiver_id,
            live,
            packer: Packer::new(ctx.session, ctx.cfg.batch_bytes, ctx.cfg.auth.clone()),
            sent: resume,
            acked: resume,
            limit: resume + window as u64,
            stash: None,
            last_rx: now,
            last_data: now,
            scratch: Vec::new(),
        })
    }

    /// The position the receiver resumed at or has acknowledged since.
    pub(super) fn acked(&self) -> u64 {
        self.acked
    }

    /// The receiver's id.
    pub(super) fn receiver_id(&self) -> u64 {
        self.receiver_id
    }

    /// One iteration: collect what arrived (STATUS moves the window and the acknowledged
    /// position), queue new frames within the window (or a HEARTBEAT when there are none for a
    /// while) and hand them to the kernel; when nothing new was sent, wait up to `idle_wait`.
    pub(super) fn step(&mut self, ctx: &Ctx<'_>, io: &mut dyn StreamIo) -> Result<()> {
        let now = Instant::now();
        let id = self.id;
        io.poll(Duration::ZERO)?;
        while let Some(pkt) = io.framed(id).next_packet()? {
            self.scratch.clear();
            self.scratch.extend_from_slice(pkt);
            let (s, p) = decode(&self.scratch, ctx.cfg.auth.as_ref())?;
            if s != ctx.session {
                continue;
            }
            self.last_rx = now;
            match p {
                Packet::Status(st) if st.receiver_id == self.receiver_id => {
                    if st.position > self.acked && st.position <= self.sent {
                        self.acked = st.position;
                        ctx.stats
                            .acked_position
                            .store(self.acked, Ordering::Relaxed);
                    }
                    self.limit = self.limit.max(st.position.saturating_add(st.window as u64));
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
        let before = self.sent;
        if io.pending_write(id) < MAX_PENDING {
            self.pack()?;
        }
        let packets = self.packer.drain_into(&mut io.framed(id).wbuf);
        if packets > 0 {
            ctx.stats
                .data_packets
                .fetch_add(packets as u64, Ordering::Relaxed);
            ctx.stats.sent_position.store(self.sent, Ordering::Relaxed);
            self.last_data = now;
        } else if now.duration_since(self.last_data) >= ctx.cfg.heartbeat_interval {
            let hb = Packet::Heartbeat(Heartbeat {
                tail: self.sent,
                timestamp_ns: now_ns(),
            });
            ctx.control(io, id, &hb)?;
            ctx.stats.heartbeats.fetch_add(1, Ordering::Relaxed);
            self.last_data = now;
        }
        io.flush()?;
        if now.duration_since(self.last_rx) >= ctx.cfg.session_timeout {
            return Err(Error::Io(std::io::ErrorKind::TimedOut.into()));
        }
        if self.sent == before && !ctx.cfg.idle_wait.is_zero() {
            if let Ok(t) = ctx.source.tail() {
                ctx.stats.primary_tail.store(t, Ordering::Relaxed);
            }
            io.poll(ctx.cfg.idle_wait.max(Duration::from_millis(1)))?;
        }
        Ok(())
    }

    /// Packs committed frames of the primary within the window (at most 1024 per call).
    fn pack(&mut self) -> Result<()> {
        let (limit, packer, stash, sent) = (
            self.limit,
            &mut self.packer,
            &mut self.stash,
            &mut self.sent,
        );
        if let Some((pos, raw)) = stash.take() {
            if pos < limit {
                packer.add(pos, &raw);
                *sent = pos + align8(raw.len() as u64);
            } else {
                *stash = Some((pos, raw));
            }
        }
        let mut frames = 0;
        while stash.is_none() && *sent < limit && frames < 1024 {
            // A stash holds one frame: once it is set, the closure packs nothing more, and the
            // loop ends.
            let n = self.live.poll_raw(128, &mut |pos, raw| {
                if stash.is_some() || pos >= limit {
                    if stash.is_none() {
                        *stash = Some((pos, raw.to_vec()));
                    }
                } else {
                    packer.add(pos, raw);
                    *sent = pos + align8(raw.len() as u64);
                }
            })?;
            frames += n;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Queues CLOSE and gives it a moment to leave (the receiver also notices the connection
    /// ending, so no more than that).
    pub(super) fn close(&self, ctx: &Ctx<'_>, io: &mut dyn StreamIo) -> Result<()> {
        ctx.control(io, self.id, &Packet::Close(Close { reason: 0 }))?;
        let until = Instant::now() + LINGER;
        while io.pending_write(self.id) > 0 && io.error(self.id).is_none() && Instant::now() < until
        {
            io.poll(Duration::from_millis(1))?;
        }
        Ok(())
    }
}
