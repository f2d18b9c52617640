//! Two anonymous pipes, one per direction.

use std::os::fd::OwnedFd;

use super::fdpair::{FdKind, FdPingPong, Framing};
use crate::error::{BenchError, Result};

/// The pipe transport.
pub struct PipeKind;

impl FdKind for PipeKind {
    const NAME: &'static str = "pipe";
    const FRAMING: Framing = Framing::Stream;
    fn pair() -> Result<((OwnedFd, OwnedFd), (OwnedFd, OwnedFd))> {
        let (ping_r, ping_w) = std::io::pipe().map_err(|e| BenchError::io("pipe", e))?;
        let (pong_r, pong_w) = std::io::pipe().map_err(|e| BenchError::io("pipe", e))?;
        Ok((
            (pong_r.into(), ping_w.into()),
            (ping_r.into(), pong_w.into()),
        ))
    }
}

/// Pipe ping-pong.
pub type Pipe = FdPingPong<PipeKind>;
