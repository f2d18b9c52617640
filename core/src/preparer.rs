//! The segment preparer: a background thread per writer that creates (or recycles) and pre-faults
//! the next segment and applies retention, so a segment roll on the hot path is a pointer swap.

use crate::error::Result;
use crate::segment::{list_segments, segment_path, Segment};
use crate::stream::Shared;
use std::sync::atomic::{fence, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

enum Request {
    /// Prepare segment `index` (the writer just entered `index - 1`).
    Prepare(u64),
    /// Unmap a segment the writer left (munmap off the hot path).
    Retire(Segment),
    /// Flush written data to storage every interval (`None`: stop).
    FlushEvery(Option<std::time::Duration>),
}

/// Handle to the preparer thread.
pub(crate) struct Preparer {
    tx: Option<Sender<Request>>,
    rx: Receiver<(u64, Result<Segment>)>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    pending: Option<u64>,
}

impl Preparer {
    pub fn spawn(shared: Arc<Shared>) -> Preparer {
        let (tx, req_rx) = channel::<Request>();
        let (done_tx, rx) = channel();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringway-prep-{}", shared.name))
            .spawn(move || {
                // Mappings of segments the writer left, kept in a ring so the segment's file can
                // be recycled without mapping it again (at most one lap of them).
                let mut mapped: Vec<Segment> = Vec::new();
                let keep = s.config.ring_segments.unwrap_or(0) as usize;
                let mut flush_every: Option<std::time::Duration> = None;
                let mut last_flush = std::time::Instant::now();
                loop {
                    let req = match flush_every {
                        None => match req_rx.recv() {
                            Ok(r) => Some(r),
                            Err(_) => return,
                        },
                        Some(d) => {
                            let wait = d.saturating_sub(last_flush.elapsed());
                            match req_rx.recv_timeout(wait) {
                                Ok(r) => Some(r),
                                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
                                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                            }
                        }
                    };
                    match req {
                        Some(Request::Prepare(index)) => {
                            let r = prepare(&s, index, &mut mapped);
                            if done_tx.send((index, r)).is_err() {
                                return;
                            }
                        }
                        Some(Request::Retire(seg)) if keep > 0 => {
                            mapped.push(seg);
                            if mapped.len() > keep {
                                // Drop (unmap) the oldest.
                                let oldest = (0..mapped.len())
                                    .min_by_key(|&i| mapped[i].index())
                                    .unwrap_or(0);
                                mapped.swap_remove(oldest);
                            }
                        }
                        Some(Request::Retire(seg)) => drop(seg),
                        Some(Request::FlushEvery(d)) => flush_every = d,
                        None => {}
                    }
                    if flush_every.is_some_and(|d| last_flush.elapsed() >= d) {
                        flush_current(&s);
                        last_flush = std::time::Instant::now();
                    }
                }
            })
            .ok();
        Preparer {
            tx: Some(tx),
            rx,
            thread,
            shared,
            pending: None,
        }
    }

    /// Asks for segment `index` to be made ready.
    pub fn request(&mut self, index: u64) {
        if self.pending == Some(index) {
            return;
        }
        if let Some(tx) = &self.tx {
            if self.thread.is_some() && tx.send(Request::Prepare(index)).is_ok() {
                self.pending = Some(index);
            }
        }
    }

    /// Sets the periodic background flush.
    pub fn flush_every(&mut self, interval: Option<std::time::Duration>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request::FlushEvery(interval));
        }
    }

    /// Hands a segment the writer no longer uses to the thread for unmapping.
    pub fn retire(&mut self, seg: Segment) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Request::Retire(seg));
        }
    }

    /// Takes segment `index`: the prepared one if ready (waiting for it if requested), else
    /// prepares it synchronously.
    pub fn take(&mut self, index: u64) -> Result<Segment> {
        if self.pending == Some(index) {
            self.pending = None;
            while let Ok((i, r)) = self.rx.recv() {
                if i == index {
                    match r {
                        // Back-pressure seen earlier may have cleared: check again below.
                        Err(crate::Error::WouldBlock { .. }) => break,
                        r => return r,
                    }
                }
            }
        }
        prepare(&self.shared, index, &mut Vec::new())
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes the current and previous segment's dirty pages and the metadata to storage
/// (`fdatasync` on the files: it covers pages dirtied through any mapping of them).
fn flush_current(s: &Shared) {
    let meta = s.meta.get();
    let current = meta.retention.current_segment.load(Ordering::Acquire);
    let tail = meta
        .writer
        .tail
        .load(Ordering::Acquire)
        .max(meta.claim.claim_tail.load(Ordering::Acquire));
    for index in [current.saturating_sub(1), current] {
        let path = segment_path(&s.dir, index, s.config.segment_size);
        if let Ok(f) = std::fs::File::open(&path) {
            let _ = f.sync_data();
        }
    }
    if let Ok(f) = std::fs::File::open(s.meta.path()) {
        let _ = f.sync_data();
    }
    meta.writer.flushed.fetch_max(tail, Ordering::AcqRel);
}

/// Creates or recycles segment `index` and applies retention for a writer about to enter it;
/// `mapped` holds mappings of segments the writer left, reused when their file is recycled.
fn prepare(s: &Shared, index: u64, mapped: &mut Vec<Segment>) -> Result<Segment> {
    let cfg = &s.config;
    let size = cfg.segment_size;
    let meta = s.meta.get();
    if let Some(ring) = cfg.ring_segments {
        let ring = ring as u64;
        if index >= ring {
            let old = index - ring;
            if let Ok(Some(existing)) = Segment::open(&s.dir, index, size, true) {
                // Already prepared by an earlier writer that died before entering it.
                return Ok(existing);
            }
            check_cursors(s, (old + 1) * size)?;
            advance_first_position(s, (old + 1) * size);
            meta.retention
                .deleted_segments
                .fetch_add(1, Ordering::Relaxed);
            if let Some(i) = mapped.iter().position(|m| m.index() == old) {
                return mapped
                    .swap_remove(i)
                    .recycle_mapped(&s.dir, index, cfg.file_mode);
            }
            return Segment::recycle(&s.dir, old, index, size, cfg.file_mode);
        }
        return Segment::create(&s.dir, index, size, cfg.file_mode);
    }
    let delete = plan_retention(s, index)?;
    let seg = Segment::create(&s.dir, index, size, cfg.file_mode)?;
    delete_segments(s, &delete);
    Ok(seg)
}

/// Fails with `WouldBlock` if a blocking cursor still needs positions below `first`.
fn check_cursors(s: &Shared, first: u64) -> Result<()> {
    match crate::cursor::min_blocking_position(s) {
        Some(p) if p < first => {
            s.meta
                .get()
                .retention
                .back_pressure_events
                .fetch_add(1, Ordering::Relaxed);
            Err(crate::Error::WouldBlock {
                cursor_position: crate::Position(p),
            })
        }
        _ => Ok(()),
    }
}

/// Publishes a new first position before segments below it are deleted or recycled.
fn advance_first_position(s: &Shared, first: u64) {
    let prev = s
        .meta
        .get()
        .retention
        .first_position
        .fetch_max(first, Ordering::Release);
    if prev < first {
        // Release fence: readers validate a frame by reading its bytes, then `fence(Acquire)`,
        // then the first position; if they saw any byte changed by the zeroing or deletion that
        // follows, they also see the new first position (seqlock pattern).
        fence(Ordering::Release);
    }
}

/// Deletes the oldest segments beyond the retention limits, keeping `current` and the one before
/// (for replicas, which follow their primary and take no back-pressure).
pub(crate) fn apply_retention(s: &Shared, current: u64) {
    if let Ok(delete) = plan_retention(s, current) {
        delete_segments(s, &delete);
    }
}

/// Deletes the segments starting at `positions` after advancing the first position past them.
fn delete_segments(s: &Shared, positions: &[u64]) {
    let Some(&last) = positions.last() else {
        return;
    };
    let size = s.config.segment_size;
    advance_first_position(s, last + size);
    for &p in positions {
        if std::fs::remove_file(segment_path(&s.dir, p / size, size)).is_ok() {
            s.meta
                .get()
                .retention
                .deleted_segments
                .fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Start positions of the segments retention deletes when the writer enters segment `current`
/// (which counts against the limits). The segment being entered and the one before always stay.
///
/// Fails with `WouldBlock` when the limits are exceeded but a blocking cursor still needs the
/// segments that would have to go.
fn plan_retention(s: &Shared, current: u64) -> Result<Vec<u64>> {
    let r = s.config.retention;
    if r.max_segments.is_none() && r.max_bytes.is_none() && r.max_age.is_none() {
        return Ok(Vec::new());
    }
    let size = s.config.segment_size;
    let mut segs = list_segments(&s.dir)?;
    segs.retain(|&p| p / size < current);
    segs.push(current * size);
    let now = crate::clock::system_now_ns();
    let mut delete = 0usize;
    let keep_min = 2usize;
    while segs.len() - delete > keep_min {
        let n = segs.len() - delete;
        let over_count = r.max_segments.is_some_and(|m| n > m as usize);
        let over_bytes = r.max_bytes.is_some_and(|b| n as u64 * size > b);
        let over_age = r.max_age.is_some_and(|age| {
            // A segment is as old as the first frame of the segment after it (when it was sealed).
            let next = segs[delete] / size + 1;
            first_timestamp(s, next)
                .is_some_and(|ts| now.saturating_sub(ts) > age.as_nanos() as u64)
        });
        if over_count || over_bytes || over_age {
            delete += 1;
        } else {
            break;
        }
    }
    if delete == 0 {
        return Ok(Vec::new());
    }
    check_cursors(s, segs[delete])?;
    Ok(segs[..delete].to_vec())
}

/// Timestamp of the first data frame of segment `index`, if it has one.
pub(crate) fn first_timestamp(s: &Shared, index: u64) -> Option<u64> {
    let seg = Segment::open(&s.dir, index, s.config.segment_size, false).ok()??;
    let mut off = 0;
    while off < s.config.segment_size {
        match crate::protocol::walk_step(&seg, off, seg.tag())? {
            crate::protocol::Walked::Data { .. } => {
                // SAFETY: observed committed with Acquire.
                return Some(unsafe { crate::protocol::read_fields(&seg, off) }.timestamp_ns);
            }
            crate::protocol::Walked::Padding { next } => off = next,
        }
    }
    None
}
