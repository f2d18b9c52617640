//! The kernel-based peers (Unix socket, TCP, UDP, pipe) share one implementation: a pair of file descriptors per
//! side, read and written with `read(2)`/`write(2)`. In `spin` mode reads are non-blocking and retried in a busy
//! loop; in `block` mode the kernel wakes the reader.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger, WaitMode};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// How message boundaries are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A byte stream: a message is `payload` bytes, read until complete.
    Stream,
    /// Datagrams: one read is one message.
    Datagram,
}

/// One kernel transport: how to make the two connected ends.
pub trait FdKind {
    /// Row name.
    const NAME: &'static str;
    /// Message boundaries.
    const FRAMING: Framing;
    /// Largest payload the transport carries in one message, if limited.
    const MAX_PAYLOAD: Option<usize> = None;
    /// Creates `(parent_rx, parent_tx)` and `(echo_rx, echo_tx)`.
    fn pair() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))>;
}

/// Sets or clears `O_NONBLOCK`.
pub fn set_nonblocking(fd: &impl AsRawFd, on: bool) -> Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, reading then writing its status flags; no memory is passed.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(BenchError::io(
            "fcntl(F_GETFL)",
            std::io::Error::last_os_error(),
        ));
    }
    let new = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, new) } < 0 {
        return Err(BenchError::io(
            "fcntl(F_SETFL)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// One side of a kernel transport.
pub struct FdEndpoint {
    name: &'static str,
    rx: File,
    tx: File,
    framing: Framing,
    buf: Vec<u8>,
    ctx: PingCtx,
}

impl FdEndpoint {
    fn new(
        name: &'static str,
        rx: OwnedFd,
        tx: OwnedFd,
        framing: Framing,
        ctx: &PingCtx,
    ) -> Result<Self> {
        let spin = ctx.wait == WaitMode::Spin;
        set_nonblocking(&rx, spin)?;
        set_nonblocking(&tx, spin)?;
        Ok(FdEndpoint {
            name,
            rx: File::from(rx),
            tx: File::from(tx),
            framing,
            buf: vec![0u8; ctx.payload.max(1)],
            ctx: ctx.clone(),
        })
    }

    fn send(&mut self, len: usize) -> Result<()> {
        let mut off = 0;
        let mut spin = Spinner::new(self.ctx.timeout);
        while off < len {
            match self.tx.write(&self.buf[off..len]) {
                Ok(0) => return Err(BenchError::system(self.name, "peer closed")),
                Ok(n) if self.framing == Framing::Datagram && n != len => {
                    return Err(BenchError::system(self.name, "short datagram write"))
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => spin.spin("socket send buffer")?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::io(format!("{} write", self.name), e)),
            }
        }
        Ok(())
    }

    fn recv(&mut self, len: usize, what: &str) -> Result<()> {
        let mut off = 0;
        let mut spin = Spinner::new(self.ctx.timeout);
        while off < len {
            match self.rx.read(&mut self.buf[off..len]) {
                Ok(0) => return Err(BenchError::system(self.name, "peer closed")),
                Ok(n) if self.framing == Framing::Datagram => {
                    if n != len {
                        return Err(BenchError::system(
                            self.name,
                            format!("datagram of {n} bytes, expected {len}"),
                        ));
                    }
                    off = n;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => spin.spin(what)?,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::io(format!("{} read", self.name), e)),
            }
        }
        Ok(())
    }
}

/// Parent state of a kernel transport `K`.
pub struct FdPingPong<K: FdKind> {
    rx: OwnedFd,
    tx: OwnedFd,
    _kind: PhantomData<K>,
}

/// Timed side.
pub struct FdPinger(FdEndpoint);

/// Echo side.
pub struct FdEcho(FdEndpoint);

impl<K: FdKind> PingPong for FdPingPong<K> {
    const NAME: &'static str = K::NAME;
    type Pinger = FdPinger;
    type Echo = FdEcho;

    fn unsupported(ctx: &PingCtx) -> Option<String> {
        match K::MAX_PAYLOAD {
            Some(max) if ctx.payload > max => {
                Some(format!("payload {} B exceeds {max} B", ctx.payload))
            }
            _ if ctx.payload == 0 => Some("payload must be at least 1 byte".into()),
            _ => None,
        }
    }

    fn prepare(_ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let ((rx, tx), (erx, etx)) = K::pair()?;
        Ok((
            FdPingPong {
                rx,
                tx,
                _kind: PhantomData,
            },
            EchoSpec {
                fds: vec![erx, etx],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<FdEcho> {
        let mut fds = spec.fds.into_iter();
        let (Some(rx), Some(tx)) = (fds.next(), fds.next()) else {
            return Err(BenchError::system(
                K::NAME,
                "echo side needs two file descriptors",
            ));
        };
        Ok(FdEcho(FdEndpoint::new(K::NAME, rx, tx, K::FRAMING, ctx)?))
    }

    fn pinger(self, ctx: &PingCtx) -> Result<FdPinger> {
        Ok(FdPinger(FdEndpoint::new(
            K::NAME,
            self.rx,
            self.tx,
            K::FRAMING,
            ctx,
        )?))
    }
}

impl Pinger for FdPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let e = &mut self.0;
        let len = e.ctx.payload;
        stamp(&mut e.buf[..len], seq);
        e.send(len)?;
        e.recv(len, "the echo")?;
        check_reply(e.name, &e.buf[..len], len, seq)
    }
}

impl Echo for FdEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let len = self.0.ctx.payload;
        self.0.recv(len, "a ping")?;
        self.0.send(len)
    }
}
