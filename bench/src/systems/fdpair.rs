//! The kernel-based peers (Unix socket, TCP, UDP, pipe) share one implementation: a pair of file descriptors per
//! side, read and written with `read(2)`/`write(2)`. In `spin` mode reads are non-blocking and retried in a busy
//! loop; in `block` mode the kernel wakes the reader.
//!
//! As a one-directional [`Channel`] (throughput, oneway) they use one direction of the pair: one `write(2)` per
//! message on a non-blocking descriptor, and non-blocking `read(2)`s busy-polled by the reader (byte streams read
//! up to 64 KiB at a time and are cut into messages; a datagram is one message).

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use super::channel::{limits, take_once, ChanCtx, Channel, Rx, Tx};
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

/// Writes one message (`write(2)` until complete; a datagram in one call), busy-retrying while the descriptor
/// would block, up to `timeout`.
fn write_msg(
    name: &'static str,
    tx: &mut File,
    framing: Framing,
    msg: &[u8],
    timeout: Duration,
) -> Result<()> {
    let len = msg.len();
    let mut off = 0;
    let mut spin = Spinner::new(timeout);
    while off < len {
        match tx.write(&msg[off..]) {
            Ok(0) => return Err(BenchError::system(name, "peer closed")),
            Ok(n) if framing == Framing::Datagram && n != len => {
                return Err(BenchError::system(name, "short datagram write"))
            }
            Ok(n) => off += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => spin.spin("socket send buffer")?,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(BenchError::io(format!("{name} write"), e)),
        }
    }
    Ok(())
}

/// Why kernel transport `K` cannot carry `payload`-byte messages, if it cannot.
fn payload_unsupported<K: FdKind>(payload: usize) -> Option<String> {
    match K::MAX_PAYLOAD {
        Some(max) if payload > max => Some(format!("payload {payload} B exceeds {max} B")),
        _ if payload == 0 => Some("payload must be at least 1 byte".into()),
        _ => None,
    }
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
        write_msg(
            self.name,
            &mut self.tx,
            self.framing,
            &self.buf[..len],
            self.ctx.timeout,
        )
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
        payload_unsupported::<K>(ctx.payload)
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

/// The two ends of one direction, each taken once by its endpoint.
pub struct FdShared {
    tx: Mutex<Option<OwnedFd>>,
    rx: Mutex<Option<OwnedFd>>,
}

/// A writer: the descriptor and its staging buffer.
pub struct FdTx {
    name: &'static str,
    tx: File,
    framing: Framing,
    buf: Vec<u8>,
    timeout: Duration,
}

/// A reader: the descriptor and the bytes read but not yet handed out (`buf[start..end]`).
pub struct FdRx {
    name: &'static str,
    rx: File,
    framing: Framing,
    payload: usize,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<K: FdKind> Channel for FdPingPong<K> {
    const NAME: &'static str = K::NAME;
    const HOW: &'static str =
        "one write(2) per message, non-blocking read(2) busy-polled (streams: up to 64 KiB per read)";
    const LOSSY: bool = matches!(K::FRAMING, Framing::Datagram);
    type Shared = FdShared;
    type Tx = FdTx;
    type Rx = FdRx;

    fn unsupported(ctx: &ChanCtx) -> Option<String> {
        payload_unsupported::<K>(ctx.payload).or_else(|| {
            limits(
                ctx,
                Some((
                    1,
                    "one descriptor per writer; the harness does not multiplex several descriptors",
                )),
                Some((1, "a socket or pipe delivers each byte to one reader")),
            )
        })
    }

    fn open(_ctx: &ChanCtx) -> Result<FdShared> {
        // The parent's send end feeds the echo side's receive end; the other direction is closed here.
        let ((_, tx), (rx, _)) = K::pair()?;
        Ok(FdShared {
            tx: Mutex::new(Some(tx)),
            rx: Mutex::new(Some(rx)),
        })
    }

    fn tx(shared: &FdShared, ctx: &ChanCtx, _index: usize) -> Result<FdTx> {
        let fd = take_once(&shared.tx, K::NAME, "the send end")?;
        set_nonblocking(&fd, true)?;
        Ok(FdTx {
            name: K::NAME,
            tx: File::from(fd),
            framing: K::FRAMING,
            buf: vec![0u8; ctx.payload],
            timeout: ctx.timeout,
        })
    }

    fn rx(shared: &FdShared, ctx: &ChanCtx, _index: usize) -> Result<FdRx> {
        let fd = take_once(&shared.rx, K::NAME, "the receive end")?;
        set_nonblocking(&fd, true)?;
        let cap = match K::FRAMING {
            // One byte more than a message, so that an oversized datagram shows instead of being truncated.
            Framing::Datagram => ctx.payload + 1,
            Framing::Stream => (2 * ctx.payload).max(64 << 10),
        };
        Ok(FdRx {
            name: K::NAME,
            rx: File::from(fd),
            framing: K::FRAMING,
            payload: ctx.payload,
            buf: vec![0u8; cap],
            start: 0,
            end: 0,
        })
    }
}

impl Tx for FdTx {
    #[inline(always)]
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[inline(always)]
    fn send(&mut self) -> Result<()> {
        write_msg(
            self.name,
            &mut self.tx,
            self.framing,
            &self.buf,
            self.timeout,
        )
    }
}

impl FdRx {
    /// One non-blocking read into the free end of the buffer; false when nothing was available.
    fn fill(&mut self) -> Result<bool> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        match self.rx.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(BenchError::system(self.name, "peer closed")),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                Ok(false)
            }
            Err(e) => Err(BenchError::io(format!("{} read", self.name), e)),
        }
    }
}

impl Rx for FdRx {
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> Result<usize> {
        let p = self.payload;
        let mut n = 0;
        match self.framing {
            Framing::Stream => {
                if self.end - self.start < p && !self.fill()? {
                    return Ok(0);
                }
                while n < max && self.end - self.start >= p {
                    f(&self.buf[self.start..self.start + p]);
                    self.start += p;
                    n += 1;
                }
            }
            Framing::Datagram => {
                while n < max {
                    self.start = 0;
                    self.end = 0;
                    if !self.fill()? {
                        break;
                    }
                    if self.end != p {
                        return Err(BenchError::system(
                            self.name,
                            format!("datagram of {} bytes, expected {p}", self.end),
                        ));
                    }
                    f(&self.buf[..p]);
                    n += 1;
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::systems::uds::Uds;

    fn ctx(payload: usize) -> ChanCtx {
        ChanCtx {
            payload,
            messages: 3,
            writers: 1,
            readers: 1,
            dir: std::env::temp_dir(),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn a_byte_stream_is_cut_into_whole_messages() {
        let c = ctx(5);
        let shared = <Uds as Channel>::open(&c).unwrap();
        let mut tx = <Uds as Channel>::tx(&shared, &c, 0).unwrap();
        let mut rx = <Uds as Channel>::rx(&shared, &c, 0).unwrap();
        assert_eq!(rx.poll(10, |_| ()).unwrap(), 0);
        for i in 0..3u8 {
            tx.buf().fill(i);
            tx.send().unwrap();
        }
        let mut got = Vec::new();
        let mut spins = 0;
        while got.len() < 3 && spins < 1_000_000 {
            rx.poll(2, |m| got.push(m.to_vec())).unwrap();
            spins += 1;
        }
        assert_eq!(got, [vec![0u8; 5], vec![1u8; 5], vec![2u8; 5]]);
        assert!(
            <Uds as Channel>::tx(&shared, &c, 0).is_err(),
            "one writer only"
        );
    }

    #[test]
    fn several_readers_are_refused_with_the_reason() {
        let mut c = ctx(8);
        c.readers = 2;
        let why = <Uds as Channel>::unsupported(&c).unwrap();
        assert!(why.contains("one reader"), "{why}");
    }
}
