//! Multicast sockets (IPv4): the sender's socket that sends to a group, and a receiver's group
//! socket (joined, bound to the group address) next to its unicast control socket.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use crate::io::{open_bound, DatagramIo, UdpOptions};

/// How multicast datagrams leave and arrive: the options of a
/// `udp://GROUP:PORT?interface=ADDR&ttl=N&loop=0|1` URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MulticastOptions {
    /// Address of the local interface to send from and to join the group on; `None` lets the
    /// kernel choose by its routes (a route for `224.0.0.0/4` must then exist).
    pub interface: Option<Ipv4Addr>,
    /// Time to live of multicast datagrams: 1 keeps them on the local network, each router on
    /// the way takes one.
    pub ttl: u32,
    /// Whether receivers on the sender's own host get the datagrams (`IP_MULTICAST_LOOP`).
    pub loopback: bool,
}

impl Default for MulticastOptions {
    fn default() -> Self {
        MulticastOptions {
            interface: None,
            ttl: 1,
            loopback: true,
        }
    }
}

/// The group address of `addr` if it is an IPv4 multicast address.
pub fn multicast_group(addr: SocketAddr) -> Option<SocketAddrV4> {
    match addr {
        SocketAddr::V4(a) if a.ip().is_multicast() => Some(a),
        _ => None,
    }
}

fn new_socket(udp: &UdpOptions) -> std::io::Result<socket2::Socket> {
    let s = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if udp.socket_buffer > 0 {
        // Best effort: the kernel caps these at net.core.{r,w}mem_max.
        let _ = s.set_recv_buffer_size(udp.socket_buffer);
        let _ = s.set_send_buffer_size(udp.socket_buffer);
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

/// The local address unicast traffic of this host uses: the interface's, or any.
fn local(opts: &MulticastOptions) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        opts.interface.unwrap_or(Ipv4Addr::UNSPECIFIED),
        0,
    ))
}

/// The sender's socket: bound to an ephemeral port on the interface (receivers send their
/// control packets there), sending to the group with the given interface, TTL and loopback.
pub(crate) fn sender_socket(
    opts: &MulticastOptions,
    udp: &UdpOptions,
) -> std::io::Result<Box<dyn DatagramIo>> {
    let s = new_socket(udp)?;
    if let Some(i) = opts.interface {
        s.set_multicast_if_v4(&i)?;
    }
    s.set_multicast_ttl_v4(opts.ttl)?;
    s.set_multicast_loop_v4(opts.loopback)?;
    s.bind(&local(opts).into())?;
    open_bound(s.into(), udp)
}

/// A receiver's group socket: bound to the group address and port (several receivers on one
/// host may bind it), member of the group on the interface. It only receives.
pub(crate) fn group_socket(
    group: SocketAddrV4,
    opts: &MulticastOptions,
    udp: &UdpOptions,
) -> std::io::Result<Box<dyn DatagramIo>> {
    let s = new_socket(udp)?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::V4(group).into())?;
    s.join_multicast_v4(group.ip(), &opts.interface.unwrap_or(Ipv4Addr::UNSPECIFIED))?;
    open_bound(s.into(), udp)
}

/// A receiver's control socket: an ephemeral port of its own, from which it sends SETUP_ACK,
/// STATUS and NAK, and on which unicast retransmissions reach it alone (several receivers on
/// one host share the group port, so it cannot tell them apart).
pub(crate) fn control_socket(
    opts: &MulticastOptions,
    udp: &UdpOptions,
) -> std::io::Result<Box<dyn DatagramIo>> {
    crate::io::open_udp(local(opts), udp)
}
