//! Ringway: two streams (`ping`, `pong`) in the run's /dev/shm directory, one single writer each, readers busy
//! polling `Reader::next`. Each stream is a ring of recycled segments, so a long run costs no file creation.

use std::path::PathBuf;

use ringway_core::{Reader, Start, Stream, StreamConfig, Writer};

use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// Segment size of the benchmark streams.
pub const SEGMENT_SIZE: u64 = 16 << 20;
/// Segments per ring.
pub const RING_SEGMENTS: u32 = 4;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringway", e)
}

/// The configuration the benchmark streams use for `payload` bytes per message.
pub fn stream_config(payload: usize) -> StreamConfig {
    StreamConfig::default()
        .segment_size(SEGMENT_SIZE)
        .max_message_size(payload.max(64 << 10) as u32)
        .ring(RING_SEGMENTS)
}

/// Parent state: the stream root.
pub struct Ringway {
    root: PathBuf,
}

/// Timed side: writes `ping`, reads `pong`.
pub struct RingwayPinger {
    writer: Writer,
    reader: Reader,
    buf: Vec<u8>,
    ctx: PingCtx,
    // Keep the streams open for the lifetime of the writer and reader.
    _streams: (Stream, Stream),
}

/// Echo side: reads `ping`, writes `pong`.
pub struct RingwayEcho {
    writer: Writer,
    reader: Reader,
    ctx: PingCtx,
    _streams: (Stream, Stream),
}

impl PingPong for Ringway {
    const NAME: &'static str = "ringway";
    type Pinger = RingwayPinger;
    type Echo = RingwayEcho;

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let root = ctx.dir.join("ringway");
        std::fs::create_dir_all(&root).map_err(|source| BenchError::File {
            path: root.clone(),
            source,
        })?;
        let cfg = stream_config(ctx.payload);
        Stream::create(&root, "ping", &cfg).map_err(err)?;
        Stream::create(&root, "pong", &cfg).map_err(err)?;
        Ok((
            Ringway { root: root.clone() },
            EchoSpec {
                args: vec![root.display().to_string()],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<RingwayEcho> {
        let root = PathBuf::from(spec.args.first().cloned().unwrap_or_default());
        let ping = Stream::open(&root, "ping").map_err(err)?;
        let pong = Stream::open(&root, "pong").map_err(err)?;
        let reader = ping.reader(Start::Beginning).map_err(err)?;
        let writer = pong.writer().map_err(err)?;
        Ok(RingwayEcho {
            writer,
            reader,
            ctx: ctx.clone(),
            _streams: (ping, pong),
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<RingwayPinger> {
        let ping = Stream::open(&self.root, "ping").map_err(err)?;
        let pong = Stream::open(&self.root, "pong").map_err(err)?;
        let writer = ping.writer().map_err(err)?;
        let reader = pong.reader(Start::Beginning).map_err(err)?;
        Ok(RingwayPinger {
            writer,
            reader,
            buf: vec![0u8; ctx.payload],
            ctx: ctx.clone(),
            _streams: (ping, pong),
        })
    }
}

impl Pinger for RingwayPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        stamp(&mut self.buf, seq);
        self.writer.append(&self.buf).map_err(err)?;
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(f) = self.reader.next().map_err(err)? {
                return check_reply("ringway", f.payload(), self.ctx.payload, seq);
            }
            spin.spin("the ringway echo")?;
        }
    }
}

impl Echo for RingwayEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(f) = self.reader.next().map_err(err)? {
                self.writer.append(f.payload()).map_err(err)?;
                return Ok(());
            }
            spin.spin("a ringway ping")?;
        }
    }
}
