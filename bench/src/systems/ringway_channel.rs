//! Ringway as a one-directional [`Channel`]: one stream in the run's /dev/shm directory, `Writer::append` from
//! each writer, each reader busy-polling a **blocking** named cursor.
//!
//! One writer: a ring of recycled segments, the configuration a user picks for sustained rates (no file creation
//! and no page faults in steady state). Each reader's cursor is blocking, so the writer gets back-pressure instead
//! of lapping a reader (checked at segment rolls only, off the per-message path); readers commit their cursor
//! every [`COMMIT_EVERY`] messages. Several writers: a multi-writer stream, which cannot be a ring, so it is
//! append-only with a retention that holds the whole measurement.

use std::path::PathBuf;

use ringway_core::{CursorOptions, NamedReader, Retention, Start, Stream, StreamConfig, Writer};

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

/// Segments of the ring (one writer).
pub const RING_SEGMENTS: u32 = 4;

/// Messages between two commits of a reader's cursor.
pub const COMMIT_EVERY: u64 = 4096;

/// One writer: a ring. Several: an append-only multi-writer stream whose retention keeps `ctx.messages` from every
/// writer.
fn config(ctx: &ChanCtx) -> StreamConfig {
    let base = StreamConfig::default()
        .segment_size(SEGMENT_SIZE)
        .max_message_size(ctx.payload.max(64 << 10) as u32);
    if ctx.writers == 1 {
        return base.ring(RING_SEGMENTS);
    }
    let bytes = ctx.messages * ctx.writers as u64 * frame_bytes(ctx.payload);
    base.multi_writer(true)
        .retention(Retention::default().max_segments((bytes / SEGMENT_SIZE + 4) as u32))
}

/// A writer and the stream it keeps open.
pub struct RingwayTx {
    writer: Writer,
    buf: Vec<u8>,
    _stream: Stream,
}

/// A reader on its blocking cursor and the stream it keeps open.
pub struct RingwayRx {
    reader: NamedReader,
    _stream: Stream,
}

/// Name of the stream in the scratch directory.
const STREAM: &str = "channel";

impl Channel for Ringway {
    const NAME: &'static str = "ringway";
    const HOW: &'static str = "one writer: ring of 4 x 16 MiB, blocking named cursor per reader (back-pressure, \
                               commit every 4096); several writers: append-only multi-writer stream holding the run; \
                               Writer::append, NamedReader::poll busy-polled";
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

    fn rx(dir: &PathBuf, _ctx: &ChanCtx, index: usize) -> Result<RingwayRx> {
        let stream = Stream::open(dir, STREAM).map_err(err)?;
        let opts = CursorOptions {
            start_if_new: Start::Beginning,
            blocking: true,
            commit_every: Some(COMMIT_EVERY),
        };
        Ok(RingwayRx {
            reader: stream
                .named_reader(&format!("rx{index}"), opts)
                .map_err(err)?,
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
