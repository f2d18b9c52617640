//! The limit of a log-structured transport: like [`super::limit`], but every message goes to a fresh cache line,
//! one region per direction, as in any journal or ring (frame N+1 is the line after frame N). The regions (16 MiB
//! each, reused cyclically) live in a shared mapping in /dev/shm and are touched before timing, so no page faults
//! are measured. The gap between `limit` and `limit-log` is what writing to a new line per message costs on this
//! machine; the gap between `limit-log` and a messaging system is that system's own overhead.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::{Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// Bytes per direction.
const REGION: usize = 16 << 20;
/// Cache lines per direction.
const LINES: u64 = (REGION / 64) as u64;

/// Two regions of cache lines in a shared mapping.
pub struct LogLines {
    map: MmapMut,
}

impl LogLines {
    fn open(path: &PathBuf, create: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(|source| BenchError::File {
                path: path.clone(),
                source,
            })?;
        if create {
            file.set_len(2 * REGION as u64)
                .map_err(|source| BenchError::File {
                    path: path.clone(),
                    source,
                })?;
        }
        // SAFETY: the file is private to this run; the only other mapping is the peer side of this benchmark,
        // and every access to the mapping goes through the atomics returned by `line`.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|source| BenchError::File {
            path: path.clone(),
            source,
        })?;
        if map.len() < 2 * REGION {
            return Err(BenchError::system(
                "limit-log",
                "mapping shorter than two regions",
            ));
        }
        let lines = LogLines { map };
        // Touch every line (a relaxed load per page is enough to fault it in), so the timed part takes no fault.
        for i in (0..2 * LINES).step_by(64) {
            std::hint::black_box(lines.word(i / LINES, i % LINES).load(Ordering::Relaxed));
        }
        Ok(lines)
    }

    /// First word of line `i` of region `dir` (0 = ping, 1 = pong).
    #[inline(always)]
    fn word(&self, dir: u64, i: u64) -> &AtomicU64 {
        let off = (dir * LINES + i) as usize * 64;
        debug_assert!(off + 8 <= self.map.len());
        // SAFETY: `off` is a multiple of 64 inside the page-aligned mapping (dir < 2, i < LINES), so the pointer
        // is aligned for AtomicU64 and valid while `self.map` lives; both processes access it only atomically.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }
}

/// Parent state.
pub struct LimitLog {
    lines: LogLines,
}

/// Timed side.
pub struct LimitLogPinger {
    lines: LogLines,
    ctx: PingCtx,
}

/// Echo side.
pub struct LimitLogEcho {
    lines: LogLines,
    next: u64,
    ctx: PingCtx,
}

impl PingPong for LimitLog {
    const NAME: &'static str = "limit-log";
    type Pinger = LimitLogPinger;
    type Echo = LimitLogEcho;

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let path = ctx.dir.join("limit-log.lines");
        let lines = LogLines::open(&path, true)?;
        Ok((
            LimitLog { lines },
            EchoSpec {
                args: vec![path.display().to_string()],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<LimitLogEcho> {
        let path = PathBuf::from(spec.args.first().cloned().unwrap_or_default());
        Ok(LimitLogEcho {
            lines: LogLines::open(&path, false)?,
            next: 1,
            ctx: ctx.clone(),
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<LimitLogPinger> {
        Ok(LimitLogPinger {
            lines: self.lines,
            ctx: ctx.clone(),
        })
    }
}

impl Pinger for LimitLogPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        // Sequence numbers start at 1 and grow, so a line reused after a lap holds an older, smaller value.
        let i = seq % LINES;
        // Release/Acquire pairs with the echo side, as a journal's commit word would.
        self.lines.word(0, i).store(seq, Ordering::Release);
        let pong = self.lines.word(1, i);
        let mut spin = Spinner::new(self.ctx.timeout);
        while pong.load(Ordering::Acquire) != seq {
            spin.spin("the limit-log echo")?;
        }
        Ok(())
    }
}

impl Echo for LimitLogEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let seq = self.next;
        let i = seq % LINES;
        let ping = self.lines.word(0, i);
        let mut spin = Spinner::new(self.ctx.timeout);
        while ping.load(Ordering::Acquire) != seq {
            spin.spin("a limit-log ping")?;
        }
        self.lines.word(1, i).store(seq, Ordering::Release);
        self.next += 1;
        Ok(())
    }
}
