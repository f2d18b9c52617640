//! UDP over loopback: two connected datagram sockets on 127.0.0.1.

use std::net::UdpSocket;
use std::os::fd::OwnedFd;

use super::fdpair::{FdKind, FdPingPong, Framing};
use crate::error::{BenchError, Result};

/// The UDP transport.
pub struct UdpKind;

impl FdKind for UdpKind {
    const NAME: &'static str = "udp";
    const FRAMING: Framing = Framing::Datagram;
    const MAX_PAYLOAD: Option<usize> = Some(65_507);
    fn pair() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
        let a = UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::io("udp bind", e))?;
        let b = UdpSocket::bind("127.0.0.1:0").map_err(|e| BenchError::io("udp bind", e))?;
        let aa = a
            .local_addr()
            .map_err(|e| BenchError::io("udp local_addr", e))?;
        let ba = b
            .local_addr()
            .map_err(|e| BenchError::io("udp local_addr", e))?;
        a.connect(ba)
            .map_err(|e| BenchError::io("udp connect", e))?;
        b.connect(aa)
            .map_err(|e| BenchError::io("udp connect", e))?;
        let a2 = a.try_clone().map_err(|e| BenchError::io("dup", e))?;
        let b2 = b.try_clone().map_err(|e| BenchError::io("dup", e))?;
        Ok(((a.into(), a2.into()), (b.into(), b2.into())))
    }
}

/// UDP loopback ping-pong.
pub type Udp = FdPingPong<UdpKind>;
