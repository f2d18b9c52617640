//! Finding positions by time without scanning the whole stream.

use crate::error::Result;
use crate::preparer::first_timestamp;
use crate::protocol::{self, Walked};
use crate::segment::{list_segments, Segment};
use crate::stream::Shared;

/// First frame position whose timestamp is `>= ns`, or the tail if there is none.
///
/// Binary-searches segments by their first frame's timestamp, then scans one segment.
pub(crate) fn position_for_time(s: &Shared, ns: u64) -> Result<u64> {
    let size = s.segment_size();
    let first = s.first_position();
    let segs: Vec<u64> = list_segments(&s.dir)?
        .into_iter()
        .filter(|&p| p >= first)
        .map(|p| p / size)
        .collect();
    if segs.is_empty() {
        return Ok(first);
    }
    // Last segment whose first timestamp is <= ns (segments without frames sort as "later").
    let (mut lo, mut hi) = (0usize, segs.len());
    while lo + 1 < hi {
        let mid = (lo + hi) / 2;
        match first_timestamp(s, segs[mid]) {
            Some(ts) if ts <= ns => lo = mid,
            _ => hi = mid,
        }
    }
    for &index in &segs[lo..] {
        let Some(seg) = Segment::open(&s.dir, index, size, false)? else {
            continue;
        };
        let mut off = 0;
        while off < size {
            match protocol::walk_step(&seg, off, seg.tag()) {
                Some(Walked::Data { next, .. }) => {
                    // SAFETY: observed committed with Acquire.
                    let f = unsafe { protocol::read_fields(&seg, off) };
                    if f.timestamp_ns >= ns {
                        return Ok(seg.base() + off);
                    }
                    off = next;
                }
                Some(Walked::Padding { next }) => off = next,
                // The end of the committed frames (or damage): start there.
                None => return Ok(seg.base() + off),
            }
        }
    }
    Ok((segs[segs.len() - 1] + 1) * size)
}
