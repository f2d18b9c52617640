//! Receiver-side ordering: frames that arrive ahead of the replica's next position wait here,
//! fragments of large frames are reassembled, and the gaps between them become NAK ranges.

use std::collections::{BTreeMap, HashMap};

use crate::frame::align8;
use crate::wire::NakRange;

/// Most frames under reassembly at once.
const MAX_ASSEMBLIES: usize = 64;

#[derive(Debug)]
struct Assembly {
    buf: Vec<u8>,
    /// Received byte ranges, sorted and merged.
    have: Vec<(u32, u32)>,
}

impl Assembly {
    fn add(&mut self, off: u32, bytes: &[u8]) {
        let end = off + bytes.len() as u32;
        self.buf[off as usize..end as usize].copy_from_slice(bytes);
        self.have.push((off, end));
        self.have.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.have.len());
        for &(s, e) in &self.have {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.have = merged;
    }

    fn complete(&self) -> bool {
        self.have.len() == 1 && self.have[0] == (0, self.buf.len() as u32)
    }
}

/// Most spare frame buffers kept for reuse.
const MAX_POOLED: usize = 65536;

/// Frames held ahead of the replica, bounded by the window.
#[derive(Debug, Default)]
pub(crate) struct Reorder {
    frames: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
    assemblies: HashMap<u64, Assembly>,
    /// Buffers of frames already written, reused for the next held frames: under loss most
    /// frames are held, and an allocation per frame would dominate the receiver.
    pool: Vec<Vec<u8>>,
}

impl Reorder {
    /// Holds `raw` at `pos` (ignored if already held).
    pub(crate) fn insert(&mut self, pos: u64, raw: &[u8]) {
        if let std::collections::btree_map::Entry::Vacant(v) = self.frames.entry(pos) {
            self.bytes += raw.len();
            let mut b = self.pool.pop().unwrap_or_default();
            b.clear();
            b.extend_from_slice(raw);
            v.insert(b);
        }
    }

    /// Returns the buffer of a frame [`Reorder::take`] handed out, for reuse.
    pub(crate) fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < MAX_POOLED {
            self.pool.push(buf);
        }
    }

    /// Removes and returns the held frame at `next`, discarding any held before it.
    pub(crate) fn take(&mut self, next: u64) -> Option<Vec<u8>> {
        while let Some(e) = self.frames.first_entry() {
            if *e.key() < next {
                self.bytes -= e.get().len();
                let b = e.remove();
                self.recycle(b);
            } else if *e.key() == next {
                let v = e.remove();
                self.bytes -= v.len();
                return Some(v);
            } else {
                return None;
            }
        }
        None
    }

    /// Adds a fragment; returns the whole frame once every byte has arrived.
    pub(crate) fn fragment(
        &mut self,
        pos: u64,
        frame_len: u32,
        off: u32,
        bytes: &[u8],
    ) -> Option<Vec<u8>> {
        if self.frames.contains_key(&pos) {
            return None;
        }
        if !self.assemblies.contains_key(&pos) && self.assemblies.len() >= MAX_ASSEMBLIES {
            return None;
        }
        let a = self.assemblies.entry(pos).or_insert_with(|| Assembly {
            buf: vec![0; frame_len as usize],
            have: Vec::new(),
        });
        if a.buf.len() != frame_len as usize {
            return None; // inconsistent with earlier fragments
        }
        a.add(off, bytes);
        if a.complete() {
            return self.assemblies.remove(&pos).map(|a| a.buf);
        }
        None
    }

    /// Forgets assemblies of frames before `next` (already written).
    pub(crate) fn prune(&mut self, next: u64) {
        self.assemblies.retain(|&p, _| p >= next);
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// Missing ranges between `from` and `highest`, at most `max`. Only held frames from `from`
    /// on are visited (plus the one before it, which may reach past `from`), so asking about the
    /// newest part of the window costs nothing for the frames held before it.
    pub(crate) fn gaps(&self, from: u64, highest: u64, max: usize) -> Vec<NakRange> {
        let mut out = Vec::new();
        let mut cursor = self
            .frames
            .range(..from)
            .next_back()
            .map_or(from, |(&p, raw)| from.max(p + align8(raw.len() as u64)));
        for (&pos, raw) in self.frames.range(from..) {
            if out.len() >= max || cursor >= highest {
                return out;
            }
            if pos > cursor {
                out.push(NakRange {
                    start: cursor,
                    end: pos.min(highest),
                });
            }
            cursor = cursor.max(pos + align8(raw.len() as u64));
        }
        if out.len() < max && cursor < highest {
            out.push(NakRange {
                start: cursor,
                end: highest,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_between_held_frames() {
        let mut r = Reorder::default();
        r.insert(64, &[0; 40]); // covers 64..104
        r.insert(200, &[0; 8]); // covers 200..208
        let g = r.gaps(0, 400, 8);
        assert_eq!(
            g,
            vec![
                NakRange { start: 0, end: 64 },
                NakRange {
                    start: 104,
                    end: 200
                },
                NakRange {
                    start: 208,
                    end: 400
                }
            ]
        );
        assert_eq!(r.gaps(0, 400, 1).len(), 1);
        // From inside a held frame, or between frames: only what lies after.
        assert_eq!(
            r.gaps(80, 400, 8),
            vec![
                NakRange {
                    start: 104,
                    end: 200
                },
                NakRange {
                    start: 208,
                    end: 400
                }
            ]
        );
        assert_eq!(
            r.gaps(150, 204, 8),
            vec![NakRange {
                start: 150,
                end: 200
            }]
        );
        assert_eq!(r.gaps(300, 300, 8), vec![]);
        assert!(r.take(0).is_none());
        assert_eq!(r.take(64).map(|v| v.len()), Some(40));
        assert_eq!(r.held_bytes(), 8);
        assert!(r.take(300).is_none(), "frames before next are discarded");
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn fragments_reassemble_in_any_order_with_duplicates() {
        let mut r = Reorder::default();
        let frame: Vec<u8> = (0..250u32).map(|i| i as u8).collect();
        let chunks: Vec<(u32, &[u8])> = frame
            .chunks(100)
            .enumerate()
            .map(|(i, c)| (i as u32 * 100, c))
            .collect();
        assert!(r.fragment(8, 250, chunks[2].0, chunks[2].1).is_none());
        assert!(r.fragment(8, 250, chunks[0].0, chunks[0].1).is_none());
        assert!(r.fragment(8, 250, chunks[0].0, chunks[0].1).is_none());
        assert!(
            r.fragment(8, 999, chunks[1].0, chunks[1].1).is_none(),
            "length mismatch ignored"
        );
        assert_eq!(r.fragment(8, 250, chunks[1].0, chunks[1].1), Some(frame));
    }
}
