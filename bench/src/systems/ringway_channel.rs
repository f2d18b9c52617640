//! Ringway as a one-directional [`Channel`]: one stream in the run's /dev/shm directory, `Writer::append` from
//! each writer (a multi-writer stream for more than one), `Reader::poll` busy-polled by each reader.
//!
//! The stream is append-only and its retention holds the whole measurement: a ring has no back-pressure (a slow
//! reader is lapped, by design), so a writer faster than its reader would lap it and a count would be wrong.

use std::path::PathBuf;

use ringway_core::{Reader, Retention, Start, Stream, StreamConfig, Writer};

use super::channel::{ChanCtx, Channel, Rx, Tx};
use super::ringway::Ringway;
use crate::error::{BenchError, Result};

/// Segment size of the stream.
pub const SEGMENT_SIZE: u64 = 16 << 20;

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringway", e)
}

/// Bytes a frame of `size` payload bytes occupies (32-byte header, 8-byte alignment).
pub fn frame_bytes(size: usize) -> u64 {
    (32 + size as u64).div_ceil(8) * 8
}

/// An append-only stream whose retention keeps `ctx.messages` from every writer.
fn config(ctx: &ChanCtx) -> StreamConfig {
    let bytes = ctx.messages * ctx.writers as u64 * frame_bytes(ctx.payload);
    StreamConfig::default()
        .segment_size(SEGMENT_SIZE)
        .max_message_size(ctx.payload.max(64 << 10) as u32)
        .multi_writer(ctx.writers > 1)
        .retention(Retention::default().max_segments((bytes / SEGMENT_SIZE + 4) as u32))
}

/// A writer and the stream it keeps open.
pub struct RingwayTx {
    writer: Writer,
    buf: Vec<u8>,
    _stream: Stream,
}

/// A reader and the stream it keeps open.
pub struct RingwayRx {
    reader: Reader,
    _stream: Stream,
}

/// Name of the stream in the scratch directory.
const STREAM: &str = "channel";

impl Channel for Ringway {
    const NAME: &'static str = "ringway";
    const HOW: &'static str =
        "append-only stream holding the run, Writer::append, Reader::poll busy-polled";
    type Shared = PathBuf;
    type Tx = RingwayTx;
    type Rx = RingwayRx;

    fn unsupported(ctx: &ChanCtx) -> Option<String> {
        super::channel::limits(ctx, None, None)
    }

    fn open(ctx: &ChanCtx) -> Result<PathBuf> {
        Stream::create(&ctx.dir, STREAM, &config(ctx)).map_err(err)?;
        Ok(ctx.dir.clone())
    }

    fn tx(dir: &PathBuf, ctx: &ChanCtx, _index: usize) -> Result<RingwayTx> {
        let stream = Stream::open(dir, STREAM).map_err(err)?;
        Ok(RingwayTx {
            writer: stream.writer().map_err(err)?,
            buf: vec![0u8; ctx.payload],
            _stream: stream,
        })
    }

    fn rx(dir: &PathBuf, _ctx: &ChanCtx, _index: usize) -> Result<RingwayRx> {
        let stream = Stream::open(dir, STREAM).map_err(err)?;
        Ok(RingwayRx {
            reader: stream.reader(Start::Beginning).map_err(err)?,
            _stream: stream,
        })
    }
}

impl Tx for RingwayTx {
    #[inline(always)]
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[inline(always)]
    fn send(&mut self) -> Result<()> {
        self.writer.append(&self.buf).map(drop).map_err(err)
    }
}

impl Rx for RingwayRx {
    #[inline(always)]
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> Result<usize> {
        self.reader
            .poll(max, |frame| f(frame.payload()))
            .map_err(err)
    }
}
