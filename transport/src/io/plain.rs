//! Fallback: a plain non-blocking UDP socket: one system call per datagram sent, one
//! `recvmmsg` per batch of received datagrams.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use super::direct::{self, BatchRecv};
use super::{Backend, DatagramIo, IoCounters};

/// Plain non-blocking UDP socket.
#[derive(Debug)]
pub struct PlainUdp {
    socket: UdpSocket,
    recv: BatchRecv,
    counters: IoCounters,
}

impl PlainUdp {
    /// Wraps a bound, non-blocking socket.
    pub fn new(socket: UdpSocket, max_datagram: usize) -> Self {
        PlainUdp {
            socket,
            recv: BatchRecv::new(max_datagram),
            counters: IoCounters::default(),
        }
    }

    fn drain(&mut self, on_recv: &mut dyn FnMut(&[u8], SocketAddr)) -> std::io::Result<usize> {
        self.recv
            .drain(self.socket.as_raw_fd(), &mut self.counters, on_recv)
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
        direct::wait_readable(self.socket.as_raw_fd(), timeout, &mut self.counters)?;
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
