//! Fallback stream I/O: plain non-blocking sockets, `read`/`write` until they would block, and
//! `poll(2)` to wait.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::framed::Framed;
use super::io::{configure, insert_slot, ConnId, StreamIo};
use crate::io::{Backend, IoCounters};

/// Unparsed input beyond which a connection is not read until its owner catches up.
const READ_BACKLOG: usize = 4 << 20;

struct Conn {
    stream: TcpStream,
    framed: Framed,
    /// Bytes at the front of `framed.wbuf` already written.
    wpos: usize,
    error: Option<std::io::Error>,
}

/// Plain non-blocking sockets.
pub(crate) struct PlainTcp {
    conns: Vec<Option<Conn>>,
    listener: Option<TcpListener>,
    accepted: Vec<(ConnId, SocketAddr)>,
    scratch: Box<[u8]>,
    counters: IoCounters,
}

impl PlainTcp {
    pub(crate) fn new() -> Self {
        PlainTcp {
            conns: Vec::new(),
            listener: None,
            accepted: Vec::new(),
            scratch: vec![0; 64 << 10].into_boxed_slice(),
            counters: IoCounters::default(),
        }
    }

    fn conn(&mut self, id: ConnId) -> &mut Conn {
        self.conns[id]
            .as_mut()
            .unwrap_or_else(|| panic!("connection {id} was removed"))
    }

    fn accept_all(&mut self) -> usize {
        let mut n = 0;
        loop {
            let Some(l) = &self.listener else { return n };
            self.counters.syscalls += 1;
            match l.accept() {
                Ok((s, peer)) => match configure(&s).and_then(|()| self.add(s)) {
                    Ok(id) => {
                        self.accepted.push((id, peer));
                        n += 1;
                    }
                    Err(e) => log::warn!("accepted connection from {peer} unusable: {e}"),
                },
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("accept: {e}");
                    return n;
                }
            }
        }
    }

    /// Writes what the socket takes, then reads what is there; returns the number of reads
    /// that brought bytes or ended the connection.
    fn transfer(&mut self) -> usize {
        let mut events = 0;
        for c in self.conns.iter_mut().flatten() {
            if c.error.is_some() {
                continue;
            }
            if let Err(e) = write_out(c, &mut self.counters) {
                c.error = Some(e);
                events += 1;
                continue;
            }
            while c.framed.unparsed() < READ_BACKLOG {
                self.counters.syscalls += 1;
                match c.stream.read(&mut self.scratch) {
                    Ok(0) => {
                        c.error = Some(std::io::ErrorKind::UnexpectedEof.into());
                        events += 1;
                        break;
                    }
                    Ok(n) => {
                        self.counters.received += 1;
                        c.framed.received(&self.scratch[..n]);
                        events += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        c.error = Some(e);
                        events += 1;
                        break;
                    }
                }
            }
        }
        events
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        let mut fds = Vec::with_capacity(self.conns.len() + 1);
        if let Some(l) = &self.listener {
            fds.push(libc::pollfd {
                fd: l.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            });
        }
        for c in self.conns.iter().flatten() {
            if c.error.is_some() {
                continue;
            }
            let mut events = libc::POLLIN;
            if c.framed.wbuf.len() > c.wpos {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        self.counters.syscalls += 1;
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures during the call.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Writes as much of `c`'s output as the socket takes.
fn write_out(c: &mut Conn, counters: &mut IoCounters) -> std::io::Result<()> {
    while c.wpos < c.framed.wbuf.len() {
        counters.syscalls += 1;
        match c.stream.write(&c.framed.wbuf[c.wpos..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                c.wpos += n;
                counters.sent += 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    if c.wpos == c.framed.wbuf.len() {
        c.framed.wbuf.clear();
        c.wpos = 0;
    }
    Ok(())
}

impl StreamIo for PlainTcp {
    fn add(&mut self, stream: TcpStream) -> std::io::Result<ConnId> {
        configure(&stream)?;
        let c = Conn {
            stream,
            framed: Framed::new(),
            wpos: 0,
            error: None,
        };
        Ok(insert_slot(&mut self.conns, c))
    }

    fn listen(&mut self, listener: TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        self.listener = Some(listener);
        Ok(())
    }

    fn accept(&mut self) -> Option<(ConnId, SocketAddr)> {
        self.accepted.pop()
    }

    fn framed(&mut self, id: ConnId) -> &mut Framed {
        &mut self.conn(id).framed
    }

    fn pending_write(&self, id: ConnId) -> usize {
        self.conns[id]
            .as_ref()
            .map_or(0, |c| c.framed.wbuf.len() - c.wpos)
    }

    fn error(&self, id: ConnId) -> Option<std::io::Error> {
        self.conns[id]
            .as_ref()
            .and_then(|c| c.error.as_ref())
            .map(super::io::copy_error)
    }

    fn remove(&mut self, id: ConnId) {
        self.conns[id] = None;
    }

    fn poll(&mut self, timeout: Duration) -> std::io::Result<usize> {
        let mut n = self.accept_all() + self.transfer();
        if n == 0 && !timeout.is_zero() {
            self.wait(timeout)?;
            n = self.accept_all() + self.transfer();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        for c in self.conns.iter_mut().flatten() {
            if c.error.is_none() {
                if let Err(e) = write_out(c, &mut self.counters) {
                    c.error = Some(e);
                }
            }
        }
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Plain
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
