//! Recovery of claims abandoned by writers that died between claim and commit.

use crate::error::Result;
use crate::frame::CommitWord;
use crate::protocol::{self, LogMemory};
use crate::segment::Segment;
use crate::stream::Shared;
use std::sync::atomic::Ordering;

/// Turns the unpublished frame or hole at stream position `pos` into padding.
///
/// `claimed_len` is the length from a "claimed" commit word (`Some(0)` for a poisoned word left by
/// an interrupted recovery), or `None` for a zero word below the claim tail.
pub(crate) fn recover_at(s: &Shared, pos: u64, claimed_len: Option<u32>) -> Result<bool> {
    let size = s.segment_size();
    let index = pos / size;
    let off = pos % size;
    let Some(seg) = Segment::open(&s.dir, index, size, true)? else {
        return Ok(false);
    };
    let tag = seg.tag();
    let claim_tail = s.meta.get().claim.claim_tail.load(Ordering::Acquire);
    let limit = claim_tail.saturating_sub(seg.base()).min(size);
    let done = match claimed_len {
        Some(len) if len > 0 => protocol::abandon_claim(&seg, off, len, tag),
        Some(_) => {
            // A recovery died after poisoning: extend over its poisoned words and publish.
            let mut end = off + 8;
            while end < limit && seg.load(end, Ordering::Relaxed) == CommitWord::POISON.0 {
                end += 8;
            }
            let pad = CommitWord::new((end - off) as u32, crate::frame::State::Padding, tag).0;
            seg.compare_exchange(
                off,
                CommitWord::POISON.0,
                pad,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
        }
        None => protocol::pad_hole(&seg, off, limit.max(off + 8), tag).is_some(),
    };
    if done {
        s.meta
            .get()
            .retention
            .recovered_claims
            .fetch_add(1, Ordering::Relaxed);
    }
    Ok(done)
}
