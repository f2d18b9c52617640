//! What replication needs from a journal, as traits: raw frame readers on the primary and an
//! append-at-position writer on the replica. [`core_stream`] implements them on ringway-core
//! streams, [`mem`] on an in-memory log used by unit tests.

pub mod core_stream;
pub mod mem;

use crate::error::Result;

/// Geometry of a stream, sent in SETUP so the replica matches the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Stream name.
    pub name: String,
    /// Segment size in bytes (power of two).
    pub segment_size: u32,
    /// Largest payload.
    pub max_message_size: u32,
    /// Whether frames carry CRC32C.
    pub crc: bool,
}

/// Reads committed frames, padding included, in position order.
pub trait RawReader: Send {
    /// Next position to read.
    fn position(&self) -> u64;
    /// Calls `f(position, raw)` for up to `limit` committed frames; returns how many.
    fn poll_raw(&mut self, limit: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize>;
}

/// The primary stream a sender ships.
pub trait Source: Send {
    /// Geometry of the stream.
    fn geometry(&self) -> Geometry;
    /// Oldest position still retained.
    fn oldest(&self) -> Result<u64>;
    /// Position after the last committed frame.
    fn tail(&self) -> Result<u64>;
    /// A reader at `position` (a frame boundary). `Error::Lapped` if no longer retained.
    fn reader_at(&self, position: u64) -> Result<Box<dyn RawReader>>;
    /// The stream's replica-acknowledgement table, where senders record what each receiver
    /// acknowledged for other processes to read (`None`: the source has none).
    fn replica_acks(&self) -> Option<ringway_core::ReplicaAcks> {
        None
    }
}

/// A replica being written by a receiver.
pub trait Replica: Send {
    /// The position the next frame must have.
    fn next_position(&self) -> u64;
    /// Writes one raw frame (header included, padding frames too) at `position`.
    fn write_frame(&mut self, position: u64, raw: &[u8]) -> Result<()>;
}

/// Opens (creating if needed) replicas by name, checking their geometry against the primary's.
pub trait ReplicaStore: Send {
    /// Opens the replica for `geometry` (whose name may be overridden by the receiver), for a
    /// primary that still retains position 0.
    fn open(&mut self, geometry: &Geometry) -> Result<Box<dyn Replica>> {
        self.open_from(geometry, 0)
    }

    /// Opens the replica for `geometry` when the primary's oldest retained position is
    /// `oldest`. A replica that does not exist yet is created starting at the segment boundary
    /// at or below `oldest` (the primary's first position is always one), so a fresh replica
    /// of a primary whose ring has lapped, or whose retention deleted its first segments, does
    /// not ask for positions the primary no longer has. An existing replica that holds nothing
    /// and starts before that boundary starts over there; one that holds frames is opened as it
    /// is (if it is behind `oldest` the sender answers `Lapped`).
    fn open_from(&mut self, geometry: &Geometry, oldest: u64) -> Result<Box<dyn Replica>>;
}

/// The segment boundary at or below `oldest`: where a fresh replica starts.
pub(crate) fn fresh_start(oldest: u64, segment_size: u32) -> u64 {
    let seg = u64::from(segment_size.max(1));
    oldest - oldest % seg
}
