//! Fallback: a plain non-blocking UDP socket, one system call per datagram.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::{Backend, DatagramIo, IoCounters};

/// Plain non-blocking UDP socket.
#[derive(Debug)]
pub struct PlainUdp {
    socket: UdpSocket,
    buf: Vec<u8>,
    counters: IoCounters,
}

impl PlainUdp {
    /// Wraps a bound, non-blocking socket.
    pub fn new(socket: UdpSocket, max_datagram: usize) -> Self {
        PlainUdp {
            socket,
            // One spare byte tells a datagram that filled the buffer from a larger one.
            buf: vec![0; max_datagram + 1],
            counters: IoCounters::default(),
        }
    }

    fn drain(&mut self, on_recv: &mut dyn FnMut(&[u8], SocketAddr)) -> std::io::Result<usize> {
        let mut n = 0;
        loop {
            self.counters.syscalls += 1;
            match self.socket.recv_from(&mut self.buf) {
                Ok((len, from)) => {
                    if len == self.buf.len() {
                        self.counters.truncated += 1;
                        continue;
                    }
                    self.counters.received += 1;
                    n += 1;
                    on_recv(&self.buf[..len], from);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(n),
                // ICMP errors from earlier sends surface here on some kernels; they are not ours to fail on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl DatagramIo for PlainUdp {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        self.counters.syscalls += 1;
        match self.socket.send_to(data, to) {
            Ok(_) => self.counters.sent += 1,
            // Datagrams may be lost; the protocol retransmits. Count and go on.
            Err(_) => self.counters.send_errors += 1,
        }
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        let n = self.drain(on_recv)?;
        if n > 0 || timeout.is_zero() {
            return Ok(n);
        }
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
        self.counters.syscalls += 1;
        // SAFETY: pfd is a valid pollfd for the duration of the call; nfds = 1 matches.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        self.drain(on_recv)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn backend(&self) -> Backend {
        Backend::Plain
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }

    fn recv_buffer_size(&self) -> Option<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size().ok()
    }
}
