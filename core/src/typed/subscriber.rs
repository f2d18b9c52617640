//! [`Subscriber`]: archived messages handed out in place, validated or trusted.

use std::marker::PhantomData;
use std::ops::Deref;
use std::time::Duration;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::message::{assert_alignment, Message, MAX_ALIGN};
use super::source::FrameSource;
use super::TypedError;
use crate::idle::{Idler, Wait};
use crate::{Frame, Position, Reader, Start, Stream};

/// How a subscriber turns frame bytes into archived values. Chosen explicitly per subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Every payload is checked with bytecheck before the handler sees it: bounds of every
    /// relative pointer, alignment, UTF-8 of strings, enum tags. Use it for streams whose writers
    /// are not trusted: frames replicated over the network, written by devices, or by other
    /// programs. A frame that fails is reported as [`TypedError::Invalid`].
    Validated,
    /// Payloads are trusted: the handler sees the archived value without any check beyond the
    /// header's type and schema and the payload's minimum length. Build it with
    /// [`Access::unchecked`].
    Unchecked(Unchecked),
}

/// Proof that an unchecked subscriber was asked for in an `unsafe` block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unchecked(());

impl Access {
    /// Trusted access: no validation.
    ///
    /// # Safety
    ///
    /// Every frame the subscriber will read that carries the message's `TYPE_ID` and
    /// `SCHEMA_VERSION` must have been written by a [`Publisher`](super::Publisher) of a type with
    /// the same archived layout, built with the same rkyv format features, and must not be
    /// modified while a handler looks at it: in a ring stream, the subscriber must not fall a
    /// whole ring behind the writer (the lap is detected only after the handler returns), unless
    /// the archived type holds no relative pointers (no strings, vectors, boxes).
    pub unsafe fn unchecked() -> Access {
        Access::Unchecked(Unchecked(()))
    }
}

/// An archived message, borrowed from the mapping for the duration of a handler call.
pub struct Received<'a, T: rkyv::Archive> {
    value: &'a T::Archived,
    position: Position,
    timestamp_ns: u64,
    delivery_count: u32,
}

impl<T: rkyv::Archive> Deref for Received<'_, T> {
    type Target = T::Archived;
    #[inline]
    fn deref(&self) -> &T::Archived {
        self.value
    }
}

impl<'a, T: rkyv::Archive> Received<'a, T> {
    /// The archived value.
    #[inline]
    pub fn value(&self) -> &'a T::Archived {
        self.value
    }
    /// Position of the frame.
    #[inline]
    pub fn position(&self) -> Position {
        self.position
    }
    /// Commit time of the frame, ns since the Unix epoch.
    #[inline]
    pub fn timestamp_ns(&self) -> u64 {
        self.timestamp_ns
    }
    /// How many times this message has been delivered: always 1 from a reader or a named
    /// cursor; from a consumer group, more when members died while handling it (route it to a
    /// dead-letter stream past a limit, see [`GroupOptions`](crate::GroupOptions)).
    #[inline]
    pub fn delivery_count(&self) -> u32 {
        self.delivery_count
    }
}

impl<T: rkyv::Archive> std::fmt::Debug for Received<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("position", &self.position)
            .field("timestamp_ns", &self.timestamp_ns)
            .field("delivery_count", &self.delivery_count)
            .finish_non_exhaustive()
    }
}

/// Reads values of one [`Message`] type from a stream, zero-copy.
///
/// Handlers get a [`Received`] that dereferences to `&Archived<T>` pointing into the mapping.
/// Frames of another type or schema version are reported as [`TypedError::WrongType`] /
/// [`TypedError::WrongSchema`] and skipped (poll again to go on).
///
/// Ring streams recycle segments, so a frame's bytes can change under a reader that fell a
/// whole ring behind. There a [`Access::Validated`] subscriber copies each payload into a
/// buffer it reuses (no allocation in steady state) before validating it, so that what was
/// validated is what the handler reads; append-only streams never rewrite committed bytes and
/// are read in place.
pub struct Subscriber<T, S = Reader> {
    source: S,
    access: Access,
    copy: bool,
    scratch: AlignedVec<MAX_ALIGN>,
    _type: PhantomData<fn() -> T>,
}

impl<T, S: std::fmt::Debug> std::fmt::Debug for Subscriber<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("source", &self.source)
            .field("type", &std::any::type_name::<T>())
            .field("access", &self.access)
            .finish()
    }
}

impl<T> Subscriber<T, Reader>
where
    T: Message,
{
    /// A validated subscriber reading `stream` from `start`.
    pub fn new(stream: &Stream, start: Start) -> Result<Self, TypedError> {
        Self::with_access(stream, start, Access::Validated)
    }

    /// A subscriber reading `stream` from `start` with the given access mode.
    pub fn with_access(stream: &Stream, start: Start, access: Access) -> Result<Self, TypedError> {
        Ok(Self::from_source(stream, stream.reader(start)?, access))
    }
}

impl<T, S> Subscriber<T, S>
where
    T: Message,
    S: FrameSource,
{
    /// A subscriber over any frame source of `stream` (e.g. a
    /// [`NamedReader`](crate::NamedReader) for a durable cursor). The stream's configuration
    /// decides whether validated access has to copy (ring streams).
    pub fn from_source(stream: &Stream, source: S, access: Access) -> Self {
        const { assert_alignment::<T>() };
        Subscriber {
            source,
            access,
            copy: stream.config().ring_segments.is_some() && access == Access::Validated,
            scratch: AlignedVec::new(),
            _type: PhantomData,
        }
    }

    /// Handles up to `limit` messages; returns how many.
    ///
    /// A frame of the wrong type or schema, or one that fails validation, ends the call with an
    /// error after the messages before it were handled; the reader has moved past that frame.
    pub fn poll<F>(&mut self, limit: usize, mut handler: F) -> Result<usize, TypedError>
    where
        F: FnMut(Received<'_, T>),
    {
        let mut n = 0;
        while n < limit {
            let mut failed = None;
            let (access, copy) = (self.access, self.copy);
            let scratch = &mut self.scratch;
            let got = self.source.poll_frames(1, |frame, delivery_count| {
                match decode::<T>(&frame, access, copy, scratch) {
                    Ok(value) => handler(Received {
                        value,
                        position: frame.position(),
                        timestamp_ns: frame.timestamp_ns(),
                        delivery_count,
                    }),
                    Err(e) => failed = Some(e),
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            if got == 0 {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Polls, then idles with `idler` when nothing was there (blocking in the kernel for
    /// [`IdleStrategy::Block`](crate::idle::IdleStrategy::Block)); returns how many messages were handled.
    pub fn poll_idle<F>(
        &mut self,
        idler: &mut Idler,
        limit: usize,
        handler: F,
    ) -> Result<usize, TypedError>
    where
        F: FnMut(Received<'_, T>),
    {
        let n = self.poll(limit, handler)?;
        idler.idle_on(n, self)?;
        Ok(n)
    }

    /// Blocks in the kernel until a frame is ready or `timeout` passes (see [`Reader::wait`]).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, TypedError> {
        Ok(self.source.wait_frames(timeout)?)
    }

    /// The access mode.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The frame source (e.g. to seek a reader or commit a named cursor).
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    /// Gives the frame source back.
    pub fn into_source(self) -> S {
        self.source
    }
}

impl<T, S> Wait for Subscriber<T, S>
where
    T: Message,
    S: FrameSource,
{
    type Error = TypedError;
    fn wait(&mut self, timeout: Duration) -> Result<bool, TypedError> {
        Subscriber::wait(self, timeout)
    }
}

/// Checks a frame's identity and turns its payload into an archived value.
#[inline]
fn decode<'a, T>(
    frame: &Frame<'a>,
    access: Access,
    copy: bool,
    scratch: &'a mut AlignedVec<MAX_ALIGN>,
) -> Result<&'a T::Archived, TypedError>
where
    T: Message,
{
    let position = frame.position();
    if frame.type_id() != T::TYPE_ID {
        return Err(TypedError::WrongType {
            position,
            expected: T::TYPE_ID,
            found: frame.type_id(),
        });
    }
    if frame.schema_version() != T::SCHEMA_VERSION {
        return Err(TypedError::WrongSchema {
            position,
            type_id: T::TYPE_ID,
            expected: T::SCHEMA_VERSION,
            found: frame.schema_version(),
        });
    }
    let payload: &'a [u8] = frame.payload();
    match access {
        Access::Validated => {
            let bytes: &'a [u8] = if copy {
                scratch.clear();
                scratch.extend_from_slice(payload);
                scratch.as_slice()
            } else {
                payload
            };
            rkyv::api::high::access::<T::Archived, rancor::Error>(bytes)
                .map_err(|source| TypedError::Invalid { position, source })
        }
        Access::Unchecked(_) => {
            let need = std::mem::size_of::<T::Archived>();
            if payload.len() < need {
                return Err(TypedError::TooShort {
                    position,
                    len: payload.len(),
                    need,
                });
            }
            // SAFETY: the subscriber was built with `Access::unchecked`, whose contract is that
            // frames of this type id and schema were written by a publisher of the same archived
            // layout and stay unmodified while borrowed. The payload starts 8-byte aligned in the
            // mapping (frame format) and the archived root needs at most 8 (checked at compile
            // time in `from_source`); its length covers the root (checked above).
            Ok(unsafe { rkyv::api::access_unchecked::<T::Archived>(payload) })
        }
    }
}
