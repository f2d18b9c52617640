//! Walking every frame of a stream to check it.

use crate::error::Result;
use crate::frame::{walk_segment, FrameError};
use crate::segment::{list_segments, Segment};
use crate::{Position, Stream};

/// What [`Stream::verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: u64,
    /// Committed data frames.
    pub frames: u64,
    /// Padding frames (segment ends and recovered claims).
    pub paddings: u64,
    /// First position checked.
    pub first: Position,
    /// Position after the last committed frame.
    pub end: Position,
    /// A claim still in progress (or abandoned and not yet recovered) at the tail.
    pub in_progress: Option<Position>,
    /// The first problem: its position and what is wrong.
    pub problem: Option<(Position, String)>,
}

impl VerifyReport {
    /// `true` when no problem was found.
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

impl Stream {
    /// Walks every retained frame, checking headers, lengths, segment bounds and CRCs.
    ///
    /// Only I/O errors are returned as `Err`; damage is reported in [`VerifyReport::problem`].
    ///
    /// A live writer may recycle (ring) or delete (retention) the oldest segments while they are
    /// walked; a problem found while the first position moved is such a lap, not damage, and the
    /// walk starts again from the new first position (a few times at most).
    pub fn verify(&self) -> Result<VerifyReport> {
        const ATTEMPTS: usize = 8;
        let mut attempt = 0;
        loop {
            let first = self.shared.first_position();
            let report = self.verify_from(first)?;
            attempt += 1;
            // Acquire fence: the bytes the walk read come before this second read of the first
            // position; paired with the Release fence that orders a new first position before
            // recycling or deletion (seqlock pattern, as readers check for laps).
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            if report.is_intact() || self.shared.first_position() == first || attempt == ATTEMPTS {
                return Ok(report);
            }
        }
    }

    /// One walk of the segments from `first`.
    fn verify_from(&self, first: u64) -> Result<VerifyReport> {
        let s = &self.shared;
        let size = s.segment_size();
        let mut report = VerifyReport {
            first: Position(first),
            end: Position(first),
            ..Default::default()
        };
        let segs: Vec<u64> = list_segments(&s.dir)?
            .into_iter()
            .filter(|&p| p + size > first)
            .collect();
        let crc = |m: &[u8], p: &[u8]| crc32c::crc32c_append(crc32c::crc32c(m), p);
        let mut expect_next: Option<u64> = None;
        let mut open_end: Option<u64> = None;
        for &base in &segs {
            let index = base / size;
            if let Some(e) = expect_next {
                if index != e {
                    let pos = Position(e * size);
                    report.problem =
                        Some((pos, format!("segment file for position {pos} is missing")));
                    return Ok(report);
                }
            }
            expect_next = Some(index + 1);
            let seg = match Segment::open(&s.dir, index, size, false) {
                Ok(Some(seg)) => seg,
                Ok(None) => continue,
                Err(e) => {
                    report.problem = Some((Position(base), e.to_string()));
                    return Ok(report);
                }
            };
            report.segments += 1;
            let start = first.saturating_sub(base);
            let bytes = &seg.bytes()[start as usize..];
            match walk_segment(bytes, seg.tag(), Some(&crc), |_, _| {}) {
                Ok(summary) => {
                    if summary.frames + summary.paddings > 0 {
                        if let Some(end) = open_end {
                            let pos = Position(end);
                            report.problem = Some((pos, format!("torn frame: the stream stops at {pos} but later segments hold frames")));
                            return Ok(report);
                        }
                    }
                    report.frames += summary.frames;
                    report.paddings += summary.paddings;
                    let end = base + start + summary.end;
                    if summary.frames + summary.paddings > 0 {
                        report.end = Position(end);
                    }
                    if !summary.sealed && open_end.is_none() {
                        open_end = Some(end);
                        let rest = &seg.bytes()[(start + summary.end) as usize..];
                        if rest.len() >= 8
                            && crate::frame::parse_frame(rest, seg.tag(), None)
                                == Err(FrameError::Uncommitted)
                        {
                            report.in_progress = Some(Position(end));
                        }
                    }
                }
                Err((off, reason)) => {
                    report.problem = Some((Position(base + start + off), describe(reason)));
                    return Ok(report);
                }
            }
        }
        Ok(report)
    }
}

fn describe(e: FrameError) -> String {
    e.to_string()
}
