//! The limit of any design with one channel per direction: like [`super::limit`], but the ping and the pong each
//! have a cache line of their own, fixed (no log). Each side writes only its own line and polls the other's, as a
//! pair of streams, rings or queues must; the gap between `limit` and `limit-2line` is what separate lines per
//! direction cost on this machine, before any messaging system adds its own.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::limit::SharedLine;
use super::{Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::Result;
use crate::spin::Spinner;

/// Line of the ping (written by the pinger); the pong line is the next one.
const PING: usize = 0;
const PONG: usize = 1;

/// Parent state.
pub struct LimitTwo {
    line: SharedLine,
}

/// Timed side: writes the ping line, polls the pong line.
pub struct LimitTwoPinger {
    line: SharedLine,
    ctx: PingCtx,
}

/// Echo side: polls the ping line, writes the pong line.
pub struct LimitTwoEcho {
    line: SharedLine,
    ctx: PingCtx,
    last: u64,
}

impl PingPong for LimitTwo {
    const NAME: &'static str = "limit-2line";
    type Pinger = LimitTwoPinger;
    type Echo = LimitTwoEcho;

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let path = ctx.dir.join("limit-2line.lines");
        let line = SharedLine::open(&path)?;
        line.word_of_line(PING).store(0, Ordering::Relaxed);
        line.word_of_line(PONG).store(0, Ordering::Relaxed);
        Ok((
            LimitTwo { line },
            EchoSpec {
                args: vec![path.display().to_string()],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<LimitTwoEcho> {
        let path = PathBuf::from(spec.args.first().cloned().unwrap_or_default());
        Ok(LimitTwoEcho {
            line: SharedLine::open(&path)?,
            ctx: ctx.clone(),
            last: 0,
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<LimitTwoPinger> {
        Ok(LimitTwoPinger {
            line: self.line,
            ctx: ctx.clone(),
        })
    }
}

impl Pinger for LimitTwoPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        // Sequence numbers start at 1 so the first ping differs from the zeroed line.
        let want = seq + 1;
        // Release/Acquire: the minimum a messaging system pays (plain moves on x86).
        self.line.word_of_line(PING).store(want, Ordering::Release);
        let pong = self.line.word_of_line(PONG);
        let mut spin = Spinner::new(self.ctx.timeout);
        while pong.load(Ordering::Acquire) != want {
            spin.spin("the limit-2line echo")?;
        }
        Ok(())
    }
}

impl Echo for LimitTwoEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let ping = self.line.word_of_line(PING);
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            let v = ping.load(Ordering::Acquire);
            if v != self.last {
                self.last = v;
                self.line.word_of_line(PONG).store(v, Ordering::Release);
                return Ok(());
            }
            spin.spin("the limit-2line ping")?;
        }
    }
}
