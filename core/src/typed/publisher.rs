//! [`Publisher`]: rkyv serialization straight into claimed frames of the mapping.

use std::marker::PhantomData;
use std::time::Duration;

use rkyv::rancor;
use rkyv::ser::allocator::Arena;
use rkyv::ser::sharing::Share;
use rkyv::ser::{Positional, Serializer};

use super::message::{assert_alignment, Message};
use super::sink::ClaimSink;
use super::TypedError;
use crate::{Position, Writer};

/// Smallest first claim (an archived root is never smaller than its fixed part, so this only
/// matters for zero-sized types).
const MIN_HINT: usize = 8;

/// Publishes values of one [`Message`] type to a stream.
///
/// [`Publisher::send`] claims a frame in the mapping and serializes the value into it in place:
/// no intermediate buffer, and in steady state no heap allocation (rkyv's scratch space comes
/// from an arena the publisher keeps). The claim size is the size of the previous message; a
/// larger message is serialized once more into a claim of exactly its size.
///
/// ```
/// use ringway_core::{Stream, StreamConfig, Start};
/// use ringway_core::typed::{Publisher, Subscriber};
///
/// #[derive(rkyv::Archive, rkyv::Serialize)]
/// struct Tick { seq: u64, px: i64 }
/// ringway_core::message!(Tick, type_id = 1, schema = 1);
///
/// let root = tempfile::tempdir().unwrap();
/// let stream = Stream::create(root.path(), "ticks", &StreamConfig::default().segment_size(1 << 20)).unwrap();
/// let mut publisher = Publisher::<Tick>::new(stream.writer().unwrap());
/// publisher.send(&Tick { seq: 1, px: 10_050 }).unwrap();
///
/// let mut subscriber = Subscriber::<Tick>::new(&stream, Start::Beginning).unwrap();
/// let mut seen = Vec::new();
/// subscriber.poll(10, |tick| seen.push((tick.seq.to_native(), tick.px.to_native()))).unwrap();
/// assert_eq!(seen, [(1, 10_050)]);
/// ```
pub struct Publisher<T> {
    writer: Writer,
    arena: Arena,
    share: Share,
    hint: usize,
    _type: PhantomData<fn(&T)>,
}

impl<T> std::fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("writer", &self.writer)
            .field("type", &std::any::type_name::<T>())
            .field("claim_hint", &self.hint)
            .finish()
    }
}

impl<T> Publisher<T>
where
    T: Message,
{
    /// A publisher appending through `writer`.
    pub fn new(writer: Writer) -> Self {
        const { assert_alignment::<T>() };
        Publisher {
            writer,
            arena: Arena::new(),
            share: Share::new(),
            // The fixed part of the archived value: exact for types without out-of-line data,
            // so their frames are claimed at their final size and never truncated (a truncated
            // claim zeroes its slack, which may touch the next cache line before the commit).
            hint: MIN_HINT.max(std::mem::size_of::<T::Archived>()),
            _type: PhantomData,
        }
    }

    /// Serializes `value` into a new frame; waits while a blocking cursor holds the writer back
    /// (spinning, then yielding, then sleeping 100 µs at a time).
    pub fn send(&mut self, value: &T) -> Result<Position, TypedError> {
        let backoff = crossbeam_utils::Backoff::new();
        loop {
            match self.try_send(value) {
                Err(e) if e.is_would_block() => {
                    if backoff.is_completed() {
                        std::thread::sleep(Duration::from_micros(100));
                    } else {
                        backoff.snooze();
                    }
                }
                r => return r,
            }
        }
    }

    /// As [`Publisher::send`], but fails with `Journal(Error::WouldBlock)` under back-pressure.
    pub fn try_send(&mut self, value: &T) -> Result<Position, TypedError> {
        // First claim the size of the previous message; `exact` once the size is measured.
        let mut size = self.hint;
        let mut exact = false;
        loop {
            let mut claim = match self.writer.try_claim(size) {
                Ok(c) => c,
                // The guess exceeds the stream's limit: try the limit itself, which still fits
                // any message the stream accepts.
                Err(crate::Error::MessageTooLarge { max, .. }) if !exact && size > max => {
                    size = max;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let share = std::mem::take(&mut self.share);
            let mut ser = Serializer::new(
                ClaimSink::new(claim.payload_mut()),
                self.arena.acquire(),
                share,
            );
            let result = rkyv::api::serialize_using::<_, rancor::Error>(value, &mut ser);
            let (sink, _, mut share) = ser.into_raw_parts();
            share.clear();
            self.share = share;
            // Dropping the claim on the error paths aborts it: nothing becomes visible.
            result.map_err(TypedError::Serialize)?;
            let len = sink.pos();
            if sink.overflowed() {
                drop(claim);
                size = len;
                exact = true;
                continue;
            }
            claim.truncate(len);
            claim.set_type_id(T::TYPE_ID);
            claim.set_schema_version(T::SCHEMA_VERSION);
            let pos = claim.commit()?;
            // Next time claim what this message needed: messages of one type tend to have
            // similar sizes; a larger one costs one retry.
            self.hint = len.max(MIN_HINT);
            return Ok(pos);
        }
    }

    /// The underlying writer (for `flush`, `heartbeat`, positions).
    pub fn writer_mut(&mut self) -> &mut Writer {
        &mut self.writer
    }

    /// Gives the writer back.
    pub fn into_writer(self) -> Writer {
        self.writer
    }
}
