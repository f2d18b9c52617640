//! Datagram I/O: io_uring with batched submissions when the kernel allows it, plain
//! non-blocking sockets otherwise.

mod bufring;
mod direct;
mod gso;
mod plain;
mod ring;
mod sockaddr;
mod uring;
pub(crate) mod uring_tcp;

use std::net::SocketAddr;
use std::time::Duration;

pub use plain::PlainUdp;
pub use uring::UringUdp;

/// Which implementation moves the datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// io_uring if the probe succeeds, else plain sockets (with a logged warning).
    #[default]
    Auto,
    /// io_uring or fail.
    Uring,
    /// Plain non-blocking sockets.
    Plain,
}

/// Per-socket counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounters {
    /// Datagrams handed to the kernel.
    pub sent: u64,
    /// Datagrams received.
    pub received: u64,
    /// Sends the kernel refused (e.g. no route, buffer full); the protocol recovers them.
    pub send_errors: u64,
    /// Received datagrams larger than the receive buffer, dropped.
    pub truncated: u64,
    /// Sends that carried several datagrams at once (UDP segmentation offload).
    pub segmented_sends: u64,
    /// System calls made: `io_uring_enter`, direct `sendto`/`sendmsg`/`recvfrom`/`recvmmsg`,
    /// `poll`.
    pub syscalls: u64,
}

/// A UDP socket that queues sends and delivers received datagrams in batches.
pub trait DatagramIo: Send {
    /// Queues one datagram to `to`. It leaves at the latest on the next [`DatagramIo::poll`].
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()>;
    /// Hands queued sends to the kernel and calls `on_recv` for every datagram that has arrived.
    /// When none has, waits up to `timeout` for one (`Duration::ZERO`: never blocks).
    /// Returns the number of datagrams delivered.
    fn poll(
        &mut self,
        timeout: Duration,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize>;
    /// Hands queued sends to the kernel now, without receiving (a sender that has just queued
    /// fresh data calls this so it leaves in this loop iteration, not the next).
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
    /// The bound local address.
    fn local_addr(&self) -> std::io::Result<SocketAddr>;
    /// Which backend this is (never [`Backend::Auto`]).
    fn backend(&self) -> Backend;
    /// Counters so far.
    fn counters(&self) -> IoCounters;
    /// The kernel receive buffer size (SO_RCVBUF as reported, i.e. including overhead).
    fn recv_buffer_size(&self) -> Option<usize>;
}

/// Options for opening a socket.
#[derive(Debug, Clone)]
pub struct UdpOptions {
    /// Backend choice.
    pub backend: Backend,
    /// Largest datagram accepted (larger ones are dropped and counted).
    pub max_datagram: usize,
    /// Kernel socket buffer sizes (SO_RCVBUF / SO_SNDBUF); 0 keeps the system default.
    pub socket_buffer: usize,
    /// Let the kernel coalesce received datagrams (UDP_GRO, io_uring backend only): fewer
    /// completions under load (more throughput), a few hundred ns more per datagram when idle.
    pub coalesce_receive: bool,
    /// The owner calls [`DatagramIo::poll`] in a tight loop with a zero timeout (a thread
    /// dedicated to this socket). The io_uring backend then receives with direct non-blocking
    /// calls (`recvfrom` while idle, `recvmmsg` batches of up to 16 datagrams while datagrams
    /// keep coming) in every poll instead of arming a multishot receive: a datagram that
    /// arrives on an idle socket reaches a multishot receive through the kernel's wake-up path
    /// (poll wake, task work, completion), which costs the sending and the receiving side
    /// together ~0.5–0.9 µs more per datagram than a receive call that finds it already queued
    /// (measured on loopback). A busy-polling owner makes one system call per poll either way
    /// (the multishot ring needs an `io_uring_enter` to run its pending completions). Receive
    /// coalescing is off in this mode. Default off.
    pub busy_poll: bool,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            backend: Backend::Auto,
            max_datagram: 65536,
            socket_buffer: 8 << 20,
            coalesce_receive: true,
            busy_poll: false,
        }
    }
}

fn bind_socket(addr: SocketAddr, opts: &UdpOptions) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if opts.socket_buffer > 0 {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = s.set_recv_buffer_size(opts.socket_buffer);
        let _ = s.set_send_buffer_size(opts.socket_buffer);
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Whether io_uring can be used here: a ring can be created and it supports SENDMSG/RECVMSG.
pub fn uring_available() -> Result<(), String> {
    uring::probe()
}

/// Binds a UDP socket at `addr` with the requested backend. With [`Backend::Auto`], falls back to
/// plain sockets when io_uring is unavailable and logs a warning saying why.
pub fn open_udp(addr: SocketAddr, opts: &UdpOptions) -> std::io::Result<Box<dyn DatagramIo>> {
    open_bound(bind_socket(addr, opts)?, opts)
}

/// Drives an already configured and bound non-blocking UDP socket (multicast sockets need
/// options before `bind`) with the requested backend, falling back as [`open_udp`] does.
pub fn open_bound(
    socket: std::net::UdpSocket,
    opts: &UdpOptions,
) -> std::io::Result<Box<dyn DatagramIo>> {
    match opts.backend {
        Backend::Plain => Ok(Box::new(PlainUdp::new(socket, opts.max_datagram))),
        Backend::Uring => Ok(Box::new(UringUdp::new(socket, opts)?)),
        Backend::Auto => match uring::probe() {
            Ok(()) => match UringUdp::new(socket.try_clone()?, opts) {
                Ok(u) => Ok(Box::new(u)),
                Err(e) => {
                    log::warn!("io_uring set-up failed ({e}); using plain non-blocking sockets");
                    Ok(Box::new(PlainUdp::new(socket, opts.max_datagram)))
                }
            },
            Err(why) => {
                log::warn!("io_uring unavailable ({why}); using plain non-blocking sockets");
                Ok(Box::new(PlainUdp::new(socket, opts.max_datagram)))
            }
        },
    }
}

#[cfg(test)]
mod tests;
