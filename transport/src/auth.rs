//! Optional shared-key authentication: a 16-byte truncated HMAC-SHA256 tag over header and body.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::wire::MAC_LEN;

type HmacSha256 = Hmac<Sha256>;

/// A shared secret used to authenticate every packet of a session.
#[derive(Clone)]
pub struct AuthKey {
    // Keyed state is computed once; `clone()` of it is cheaper than re-keying per packet.
    mac: HmacSha256,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthKey(..)")
    }
}

impl AuthKey {
    /// Creates a key from secret bytes (any length; 32 random bytes recommended).
    pub fn new(secret: &[u8]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
        AuthKey { mac }
    }

    /// Computes the tag over `data`.
    pub fn tag(&self, data: &[u8]) -> [u8; MAC_LEN] {
        let mut m = self.mac.clone();
        m.update(data);
        let full = m.finalize().into_bytes();
        let mut out = [0u8; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// Checks `tag` against `data` in constant time.
    pub fn verify(&self, data: &[u8], tag: &[u8]) -> bool {
        let mut m = self.mac.clone();
        m.update(data);
        m.verify_truncated_left(tag).is_ok()
    }
}
