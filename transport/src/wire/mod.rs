//! The replication wire protocol: packet layouts, an encoder and a decoder.
//!
//! Every packet starts with a 16-byte header (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `0x5752` (bytes `R`, `W`) |
//! | 2 | 1 | protocol version ([`VERSION`]) |
//! | 3 | 1 | packet type ([`PacketType`]) |
//! | 4 | 2 | flags ([`FLAG_MAC`], [`FLAG_FRAGMENT`]); other bits must be zero |
//! | 6 | 2 | reserved, zero |
//! | 8 | 4 | session id |
//! | 12 | 4 | body length in bytes (excluding the MAC tag) |
//!
//! The body follows, then a 16-byte truncated HMAC-SHA256 tag over header and body when
//! [`FLAG_MAC`] is set. `docs/replication.md` describes every body byte by byte.

mod decode;
mod encode;
mod types;

pub use decode::{decode, peek_packet_len};
pub use encode::{encode, DataPacketBuilder};
pub use types::*;

#[cfg(test)]
mod tests;
