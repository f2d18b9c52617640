//! TCP over loopback (127.0.0.1, `TCP_NODELAY`).

use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;

use super::fdpair::{FdKind, FdPingPong, Framing};
use crate::error::{BenchError, Result};

/// The TCP transport.
pub struct TcpKind;

impl FdKind for TcpKind {
    const NAME: &'static str = "tcp";
    const FRAMING: Framing = Framing::Stream;
    fn pair() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| BenchError::io("tcp bind", e))?;
        let addr = l
            .local_addr()
            .map_err(|e| BenchError::io("tcp local_addr", e))?;
        let a = TcpStream::connect(addr).map_err(|e| BenchError::io("tcp connect", e))?;
        let (b, _) = l.accept().map_err(|e| BenchError::io("tcp accept", e))?;
        for s in [&a, &b] {
            s.set_nodelay(true)
                .map_err(|e| BenchError::io("TCP_NODELAY", e))?;
        }
        let a2 = a.try_clone().map_err(|e| BenchError::io("dup", e))?;
        let b2 = b.try_clone().map_err(|e| BenchError::io("dup", e))?;
        Ok(((a.into(), a2.into()), (b.into(), b2.into())))
    }
}

/// TCP loopback ping-pong.
pub type Tcp = FdPingPong<TcpKind>;
