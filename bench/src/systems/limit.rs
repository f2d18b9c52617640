//! The physical limit: one cache line bouncing between the two cores, no messaging system at all.
//!
//! The line lives in a shared mapping of a file in the run's /dev/shm directory, so the same code measures two
//! threads or two processes. The pinger stores an odd value `2*seq+1`; the echo side spins until it sees an odd
//! value `v` and stores `v+1`; the pinger spins until it sees `2*seq+2`. One round trip moves the line twice.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use super::{Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// A 64-byte-aligned word in a shared file mapping.
pub struct SharedLine {
    map: MmapMut,
}

impl SharedLine {
    /// Maps (creating if needed) the page-sized file at `path`.
    pub fn open(path: &PathBuf) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|source| BenchError::File {
                path: path.clone(),
                source,
            })?;
        file.set_len(4096).map_err(|source| BenchError::File {
            path: path.clone(),
            source,
        })?;
        // SAFETY: the file is private to this run (created in its own temporary directory); the only other
        // mapping is the peer side of this benchmark, which accesses the word solely through atomics.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(|source| BenchError::File {
            path: path.clone(),
            source,
        })?;
        Ok(SharedLine { map })
    }

    /// The word at the start of the mapping.
    #[inline(always)]
    pub fn word(&self) -> &AtomicU64 {
        self.word_of_line(0)
    }

    /// The first word of cache line `line` (0..64) of the mapping.
    #[inline(always)]
    pub fn word_of_line(&self, line: usize) -> &AtomicU64 {
        assert!(line < 64, "the mapping holds 64 lines");
        // SAFETY: the mapping is page aligned and 4096 bytes long, so `line * 64 < 4096` gives an aligned pointer
        // valid for the lifetime of `self.map`; all accesses (both processes) are atomic.
        unsafe { &*(self.map.as_ptr().add(line * 64) as *const AtomicU64) }
    }
}

/// The raw cache-line ping-pong.
pub struct Limit {
    line: SharedLine,
}

/// Timed side of the limit.
pub struct LimitPinger {
    line: SharedLine,
    ctx: PingCtx,
}

/// Echo side of the limit.
pub struct LimitEcho {
    line: SharedLine,
    ctx: PingCtx,
}

impl PingPong for Limit {
    const NAME: &'static str = "limit";
    type Pinger = LimitPinger;
    type Echo = LimitEcho;

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let path = ctx.dir.join("limit.line");
        let line = SharedLine::open(&path)?;
        line.word().store(0, Ordering::Relaxed);
        Ok((
            Limit { line },
            EchoSpec {
                args: vec![path.display().to_string()],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<LimitEcho> {
        let path = PathBuf::from(spec.args.first().cloned().unwrap_or_default());
        Ok(LimitEcho {
            line: SharedLine::open(&path)?,
            ctx: ctx.clone(),
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<LimitPinger> {
        Ok(LimitPinger {
            line: self.line,
            ctx: ctx.clone(),
        })
    }
}

impl Pinger for LimitPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let w = self.line.word();
        // Release/Acquire pair with the echo side; there is no payload, so Relaxed would do as well, but
        // Release/Acquire is what a messaging system must pay at minimum and costs nothing extra on x86.
        w.store(2 * seq + 1, Ordering::Release);
        let want = 2 * seq + 2;
        let mut spin = Spinner::new(self.ctx.timeout);
        while w.load(Ordering::Acquire) != want {
            spin.spin("the limit echo")?;
        }
        Ok(())
    }
}

impl Echo for LimitEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let w = self.line.word();
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            let v = w.load(Ordering::Acquire);
            if v & 1 == 1 {
                w.store(v + 1, Ordering::Release);
                return Ok(());
            }
            spin.spin("the limit ping")?;
        }
    }
}
