//! The QoS 1 duplicate filter of one client: the packet ids and fingerprints (topic and payload)
//! of its last stored messages. A PUBLISH resent with DUP whose fingerprint matches the last
//! message stored under its packet id is acknowledged without a second append.
//!
//! A connection keeps its client's filter in its session data (which it holds exclusively), so
//! the filter costs no lock and no shared cache line per message; it allocates nothing until the
//! first QoS 1 message.

use std::collections::VecDeque;
use std::hash::Hasher;

/// Fingerprint of a message's topic and payload (64-bit, not cryptographic: a collision only
/// makes the same client's own resend count as a duplicate).
pub fn fingerprint(topic: &str, payload: &[u8]) -> u64 {
    let mut h = WordHasher::default();
    h.write(topic.as_bytes());
    h.write_u64(topic.len() as u64);
    h.write(payload);
    h.finish()
}

/// A multiply-rotate hash over 8-byte words: a few cycles per word, which is what the per-message
/// path can afford (SipHash costs several times more on a 64-byte payload).
#[derive(Default, Clone, Copy)]
pub struct WordHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl WordHasher {
    #[inline]
    fn mix(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }
}

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(w) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.mix(n);
    }

    fn write_u16(&mut self, n: u16) {
        self.mix(u64::from(n));
    }

    fn finish(&self) -> u64 {
        // Final avalanche (the low bits of a product depend only on the low bits of its inputs).
        let mut x = self.0;
        x ^= x >> 32;
        x = x.wrapping_mul(K);
        x ^ (x >> 29)
    }
}

/// QoS 1 messages per client the filter remembers: a resend of one of the client's last
/// `DUPLICATE_WINDOW` stored messages is recognised. A client resends only what it has not seen
/// acknowledged, which its inflight window bounds (MQTT 5 clients by our Receive Maximum,
/// `mqtt.max_inflight`; MQTT 3.1.1 clients typically keep 10 to 100 in flight).
pub const DUPLICATE_WINDOW: usize = 1024;

/// The last [`DUPLICATE_WINDOW`] QoS 1 messages one client stored: packet id and fingerprint,
/// newest last.
///
/// Why a window and not a map from every packet id ever used: a busy client cycles through all
/// 65,535 ids, and a map that large costs a cache miss per message (it was the largest single
/// cost of the QoS 1 path); the window is a ring written in order and read only for resends.
#[derive(Debug, Default, Clone)]
pub struct DuplicateFilter {
    /// Each entry: fingerprint with its low 16 bits replaced by the packet id. Allocated on
    /// the first record (most clients never publish QoS 1); grows up to the window.
    // Boxed: one word in every session instead of four (most sessions never publish QoS 1).
    #[allow(clippy::box_collection)]
    recent: Option<Box<VecDeque<u64>>>,
}

fn entry(pkid: u16, hash: u64) -> u64 {
    (hash & !0xFFFF) | u64::from(pkid)
}

impl DuplicateFilter {
    /// True when the last message stored under `pkid` (within the window) had fingerprint
    /// `hash`.
    pub fn is_duplicate(&self, pkid: u16, hash: u64) -> bool {
        self.recent.as_ref().is_some_and(|r| {
            r.iter()
                .rev()
                .find(|e| **e as u16 == pkid)
                .is_some_and(|e| *e == entry(pkid, hash))
        })
    }

    /// Records that the message with fingerprint `hash` was stored under `pkid`.
    pub fn record(&mut self, pkid: u16, hash: u64) {
        let r = self.recent.get_or_insert_with(Box::default);
        if r.len() == DUPLICATE_WINDOW {
            r.pop_front();
        }
        r.push_back(entry(pkid, hash));
    }

    /// Messages remembered.
    pub fn len(&self) -> usize {
        self.recent.as_ref().map_or(0, |r| r.len())
    }

    /// True when nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Debug for WordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WordHasher")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_topic_and_payload_apart() {
        let a = fingerprint("a/b", b"payload");
        assert_eq!(a, fingerprint("a/b", b"payload"));
        assert_ne!(a, fingerprint("a/c", b"payload"));
        assert_ne!(a, fingerprint("a/b", b"payloae"));
        // Moving bytes between topic and payload changes the fingerprint.
        assert_ne!(fingerprint("ab", b"c"), fingerprint("a", b"bc"));
        // Trailing zero bytes count.
        assert_ne!(fingerprint("t", b"x"), fingerprint("t", b"x\0"));
        assert_ne!(fingerprint("t", b""), fingerprint("t", b"\0"));
    }

    #[test]
    fn filter_matches_only_the_last_message_of_an_id() {
        let (h1, h2) = (fingerprint("a", b"1"), fingerprint("a", b"2"));
        let mut f = DuplicateFilter::default();
        assert!(f.is_empty());
        assert!(!f.is_duplicate(1, h1));
        f.record(1, h1);
        assert!(f.is_duplicate(1, h1));
        assert!(!f.is_duplicate(1, h2));
        assert!(!f.is_duplicate(2, h1));
        f.record(1, h2);
        assert!(!f.is_duplicate(1, h1));
        assert!(f.is_duplicate(1, h2));
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn the_window_forgets_the_oldest() {
        let mut f = DuplicateFilter::default();
        for i in 0..DUPLICATE_WINDOW as u64 + 10 {
            f.record((i % 65_535) as u16 + 1, fingerprint("t", &i.to_le_bytes()));
        }
        assert_eq!(f.len(), DUPLICATE_WINDOW);
        assert!(!f.is_duplicate(1, fingerprint("t", &0u64.to_le_bytes())));
        let last = DUPLICATE_WINDOW as u64 + 9;
        assert!(f.is_duplicate(
            (last % 65_535) as u16 + 1,
            fingerprint("t", &last.to_le_bytes())
        ));
        assert!(f.is_duplicate(11, fingerprint("t", &10u64.to_le_bytes())));
    }
}
