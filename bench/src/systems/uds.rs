//! Unix domain stream socket (a connected `socketpair`).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use super::fdpair::{FdKind, FdPingPong, Framing};
use crate::error::{BenchError, Result};

/// The Unix-socket transport.
pub struct UdsKind;

impl FdKind for UdsKind {
    const NAME: &'static str = "uds";
    const FRAMING: Framing = Framing::Stream;
    fn pair() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
        let (a, b) = UnixStream::pair().map_err(|e| BenchError::io("socketpair", e))?;
        let a2 = a.try_clone().map_err(|e| BenchError::io("dup", e))?;
        let b2 = b.try_clone().map_err(|e| BenchError::io("dup", e))?;
        Ok(((a.into(), a2.into()), (b.into(), b2.into())))
    }
}

/// Unix domain socket ping-pong.
pub type Uds = FdPingPong<UdsKind>;
