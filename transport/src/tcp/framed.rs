//! A non-blocking TCP connection carrying wire packets back to back (the header's body length
//! frames them), with read and write buffers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::Duration;

use crate::wire::{peek_packet_len, WireError};

/// Framed packet connection.
#[derive(Debug)]
pub(crate) struct Framed {
    pub(crate) stream: TcpStream,
    rbuf: Vec<u8>,
    rstart: usize,
    pub(crate) wbuf: Vec<u8>,
    wpos: usize,
}

/// Outcome of reading.
pub(crate) enum ReadState {
    Open,
    Closed,
}

impl Framed {
    pub(crate) fn new(stream: TcpStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Framed {
            stream,
            rbuf: Vec::with_capacity(256 << 10),
            rstart: 0,
            wbuf: Vec::with_capacity(256 << 10),
            wpos: 0,
        })
    }

    /// Reads whatever is available.
    pub(crate) fn fill(&mut self) -> std::io::Result<ReadState> {
        if self.rstart > 0 && self.rstart == self.rbuf.len() {
            self.rbuf.clear();
            self.rstart = 0;
        } else if self.rstart > (1 << 20) {
            self.rbuf.drain(..self.rstart);
            self.rstart = 0;
        }
        let mut tmp = [0u8; 64 << 10];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(0) => return Ok(ReadState::Closed),
                Ok(n) => {
                    self.rbuf.extend_from_slice(&tmp[..n]);
                    if self.rbuf.len() - self.rstart > (4 << 20) {
                        return Ok(ReadState::Open);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(ReadState::Open),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next complete packet's bytes, if buffered. A malformed header poisons the stream.
    pub(crate) fn next_packet(&mut self) -> Result<Option<&[u8]>, WireError> {
        let avail = &self.rbuf[self.rstart..];
        match peek_packet_len(avail)? {
            Some(n) if avail.len() >= n => {
                let s = self.rstart;
                self.rstart += n;
                Ok(Some(&self.rbuf[s..s + n]))
            }
            _ => Ok(None),
        }
    }

    /// Bytes queued and not yet written.
    pub(crate) fn pending_write(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes as much as the socket takes.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }

    /// Waits until readable (or writable, when output is pending) or `timeout`.
    pub(crate) fn wait(&self, timeout: Duration) -> std::io::Result<()> {
        let mut events = libc::POLLIN;
        if self.pending_write() > 0 {
            events |= libc::POLLOUT;
        }
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        Ok(())
    }
}
