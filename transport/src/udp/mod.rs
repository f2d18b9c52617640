//! Reliable replication over UDP: NAK-driven retransmission from the journal, receiver status
//! messages for flow control, heartbeats, session set-up and time-out.

mod group;
mod members;
pub(crate) mod packer;
mod receiver;
mod reorder;
mod sender;
mod sent;

pub use group::{multicast_group, MulticastOptions};
pub use receiver::{ReceiverConfig, ReceiverStats, UdpReceiver};
pub use sender::{SenderConfig, SenderStats, UdpSender};

/// A random non-zero 64-bit value (session ids, nonces, receiver ids).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish() | 1
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
