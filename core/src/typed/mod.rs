//! Typed zero-copy messages: rkyv values serialized straight into the mapping and read in place.
//!
//! * [`Message`] gives a type a stable `TYPE_ID` and `SCHEMA_VERSION`, stored in every frame
//!   header, so a subscriber of another type gets a typed error instead of a misread.
//! * [`Publisher::send`] claims a frame and serializes into it, with no intermediate buffer and
//!   no heap allocation in steady state.
//! * [`Subscriber::poll`] hands out `&Archived<T>` pointing into the mapping, either
//!   [`Access::Validated`] (bytecheck, for untrusted writers) or unchecked (an `unsafe` choice
//!   for trusted local writers).
//!
//! # Alignment
//!
//! Every frame starts on an 8-byte boundary and its payload starts at
//! `32 + align8(meta_len)` bytes into the frame, so payloads are 8-byte aligned in the mapping
//! (segments are page-aligned mappings). rkyv positions archived data relative to the start of
//! the buffer it writes, here the payload, so every archived value with an alignment of at most
//! 8 is correctly aligned where the subscriber finds it. Root types needing more (`u128`,
//! 16-byte SIMD types) are rejected at compile time; see [`Message`] for out-of-line data.
//!
//! # Wire format
//!
//! Both sides use rkyv 0.8 with the crate's pinned format features (little endian, 32-bit
//! relative pointers, aligned primitives), so a payload is the same bytes on every host.

mod error;
mod message;
mod publisher;
mod sink;
mod source;
mod subscriber;

pub use error::TypedError;
pub use message::{FrameSerializer, FrameValidator, Message, MAX_ALIGN};
pub use publisher::Publisher;
pub use sink::ClaimSink;
pub use source::FrameSource;
pub use subscriber::{Access, Received, Subscriber, Unchecked};

/// The rkyv crate the typed layer is built on, for `#[rkyv(crate = ...)]` and archived types.
pub use rkyv;
