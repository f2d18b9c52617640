//! The segment preparer: a background thread per writer that creates (or recycles) and pre-faults
//! the next segment and applies retention, so a segment roll on the hot path is a pointer swap.
//!
//! The writer never wakes the thread when it rolls: a wake is a system call, and the woken thread
//! would compete with the writer for a core at the moment it needs it. The writer only publishes
//! which segment it wants next (an atomic store) and hands the segment it left over (a short
//! lock); the thread polls for that at a quarter of the writer's observed segment period, or of
//! the time since its last roll when that is longer (between 20 µs and 100 ms), so a writer that
//! rolls rarely is interrupted rarely. A writer that rolls before its next
//! segment is ready prepares it itself (or, if the thread is at it, waits for it spinning).
//!
//! The thread keeps off the core the writer last ran on, so that on a machine whose other cores
//! are busy it takes time from them rather than from the writer.

use crate::error::Result;
use crate::segment::{list_segments, segment_path, Segment};
use crate::stream::Shared;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// No segment wanted yet.
const NONE: u64 = u64::MAX;
/// Poll interval bounds: a quarter of the writer's segment period (or of the time since its last
/// roll, when that is longer), within these.
const MIN_POLL: Duration = Duration::from_micros(20);
const MAX_POLL: Duration = Duration::from_millis(100);
/// Segment period assumed before the writer has rolled twice.
const FIRST_PERIOD: Duration = Duration::from_millis(4);

/// State shared by the writer and its preparer thread.
struct Handoff {
    /// Index of the segment the writer wants prepared next (`NONE`: nothing yet). Written by the
    /// writer, read by the thread; Release/Acquire is not needed for data (the segment travels
    /// through `ready`, under its lock): Relaxed suffices, the value is only a request.
    wanted: AtomicU64,
    /// The prepared segment, and who is preparing one.
    ready: Mutex<Ready>,
    /// Segments the writer left, to be kept (ring) or unmapped by the thread.
    retired: Mutex<Vec<Segment>>,
    /// Periodic flush interval (`None`: off).
    flush_every: Mutex<Option<Duration>>,
    /// CPU the writer last rolled on (`u32::MAX`: unknown). Relaxed: a placement hint.
    writer_cpu: AtomicU32,
    /// Set when the writer goes away. Relaxed: the thread is unparked after it and joined.
    stop: AtomicBool,
}

/// What the thread hands over, under the `ready` lock.
#[derive(Default)]
struct Ready {
    /// The prepared segment and its index (or why it could not be prepared).
    prepared: Option<(u64, Result<Segment>)>,
    /// Set while the thread or the writer prepares a segment, so the other does not start the
    /// same one.
    busy: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves plain data behind: keep going with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Handle to the preparer thread.
pub(crate) struct Preparer {
    handoff: Arc<Handoff>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Preparer {
    pub fn spawn(shared: Arc<Shared>) -> Preparer {
        let handoff = Arc::new(Handoff {
            wanted: AtomicU64::new(NONE),
            ready: Mutex::new(Ready::default()),
            retired: Mutex::new(Vec::new()),
            flush_every: Mutex::new(None),
            writer_cpu: AtomicU32::new(current_cpu()),
            stop: AtomicBool::new(false),
        });
        let h = handoff.clone();
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ringway-prep-{}", shared.name))
            .spawn(move || run(&s, &h))
            .ok();
        Preparer {
            handoff,
            thread,
            shared,
        }
    }

    /// Asks for segment `index` to be made ready. Makes no system call: the thread sees the
    /// request on its next poll.
    pub fn request(&mut self, index: u64) {
        self.handoff.wanted.store(index, Ordering::Relaxed);
        self.handoff
            .writer_cpu
            .store(current_cpu(), Ordering::Relaxed);
    }

    /// Asks for segment `index` and wakes the thread at once (outside the hot path: a new writer).
    pub fn request_now(&mut self, index: u64) {
        self.request(index);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Sets the periodic background flush.
    pub fn flush_every(&mut self, interval: Option<Duration>) {
        *lock(&self.handoff.flush_every) = interval;
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// Hands a segment the writer no longer uses to the thread (kept for recycling or unmapped).
    pub fn retire(&mut self, seg: Segment) {
        if self.thread.is_some() {
            lock(&self.handoff.retired).push(seg);
        }
    }

    /// Takes segment `index`: the prepared one if ready; if the thread is preparing it, waits
    /// for it (spinning: the thread is running); else prepares it on the calling thread. A writer
    /// that rolls faster than the thread prepares (both CPUs busy, small segments) thus pays the
    /// preparation itself instead of waiting for the thread to be scheduled.
    pub fn take(&mut self, index: u64) -> Result<Segment> {
        let h = &*self.handoff;
        if self.thread.is_some() {
            let mut spins = 0u32;
            loop {
                let mut ready = lock(&h.ready);
                if matches!(&ready.prepared, Some((i, _)) if *i == index) {
                    match ready.prepared.take() {
                        // Back-pressure seen earlier may have cleared: prepare again below.
                        Some((_, Err(crate::Error::WouldBlock { .. }))) | None => {}
                        Some((_, r)) => return r,
                    }
                }
                if !ready.busy {
                    // Prepare it here. Only once it is ready does the thread move on to the one
                    // after it (never past a segment refused for back-pressure): `wanted` changes
                    // under the lock, before `busy` clears.
                    ready.busy = true;
                    drop(ready);
                    let r = prepare(&self.shared, index, &mut Vec::new());
                    let mut ready = lock(&h.ready);
                    if r.is_ok() {
                        h.wanted.store(index + 1, Ordering::Relaxed);
                    }
                    ready.busy = false;
                    return r;
                }
                drop(ready);
                if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                    break; // the thread died while busy: prepare here
                }
                spins += 1;
                if spins < 1000 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        prepare(&self.shared, index, &mut Vec::new())
    }
}

impl Drop for Preparer {
    fn drop(&mut self) {
        self.handoff.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// The preparer thread's loop.
fn run(s: &Shared, h: &Handoff) {
    // Mappings of segments the writer left, kept so a ring segment's file can be recycled
    // without mapping it again (at most one lap of them).
    let mut mapped: Vec<Segment> = Vec::new();
    let keep = s.config.ring_segments.unwrap_or(0) as usize;
    let mut last_flush = Instant::now();
    let mut placement = Placement::new();
    let mut last_wanted = NONE;
    let mut last_change = Instant::now();
    let mut period = FIRST_PERIOD;
    while !h.stop.load(Ordering::Relaxed) {
        // Taken out first: unmapping happens here, not while the writer may wait for the lock.
        let retired: Vec<Segment> = lock(&h.retired).drain(..).collect();
        for seg in retired {
            if keep == 0 {
                continue; // dropped: unmapped here, off the writer's path
            }
            mapped.push(seg);
            if mapped.len() > keep {
                let oldest = (0..mapped.len())
                    .min_by_key(|&i| mapped[i].index())
                    .unwrap_or(0);
                mapped.swap_remove(oldest);
            }
        }
        // Read under the lock: a writer that prepares a segment itself moves `wanted` on under it.
        let wanted = {
            let _ready = lock(&h.ready);
            h.wanted.load(Ordering::Relaxed)
        };
        if wanted != last_wanted {
            let now = Instant::now();
            if last_wanted != NONE {
                // Segment period, smoothed (the writer may roll several times between polls).
                let steps = wanted.saturating_sub(last_wanted).max(1) as u32;
                period = (period * 3 + (now - last_change) / steps) / 4;
            }
            last_wanted = wanted;
            last_change = now;
        }
        if wanted != NONE {
            let start = {
                let mut ready = lock(&h.ready);
                let stale = h.wanted.load(Ordering::Relaxed) == wanted
                    && match &ready.prepared {
                        Some((i, Ok(_))) => *i != wanted,
                        // Retry back-pressure on every poll: the blocking cursor may have moved on.
                        Some((_, Err(_))) => true,
                        None => true,
                    };
                let start = stale && !ready.busy;
                if start {
                    ready.busy = true;
                }
                start
            };
            if start {
                let r = prepare(s, wanted, &mut mapped);
                // A segment prepared earlier and never taken (the writer went another way) is
                // replaced, and unmapped after the lock is released; its file stays a valid
                // empty segment that a later writer opens.
                let old = {
                    let mut ready = lock(&h.ready);
                    ready.busy = false;
                    ready.prepared.replace((wanted, r))
                };
                drop(old);
            }
        }
        let flush_every = *lock(&h.flush_every);
        if let Some(d) = flush_every {
            if last_flush.elapsed() >= d {
                flush_current(s);
                last_flush = Instant::now();
            }
        }
        placement.avoid(h.writer_cpu.load(Ordering::Relaxed));
        // Few wake-ups: each one takes a moment from whatever runs on the CPU it lands on.
        let mut wait = (period.max(last_change.elapsed()) / 4).clamp(MIN_POLL, MAX_POLL);
        if let Some(d) = flush_every {
            wait = wait.min(d.saturating_sub(last_flush.elapsed()).max(MIN_POLL));
        }
        std::thread::park_timeout(wait);
    }
}

/// The CPU the calling thread runs on (`u32::MAX` if unknown).
fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    if c < 0 {
        u32::MAX
    } else {
        c as u32
    }
}

/// Keeps the preparer thread off the writer's CPU when there is another one it may use.
struct Placement {
    /// CPUs the thread may run on: the online ones (a writer pinned before the thread was
    /// spawned passes its own one-CPU mask on to it; that mask is not kept).
    allowed: Vec<usize>,
    avoiding: u32,
}

impl Placement {
    fn new() -> Placement {
        // SAFETY: sysconf has no preconditions.
        let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let n = usize::try_from(n)
            .unwrap_or(1)
            .min(libc::CPU_SETSIZE as usize);
        Placement {
            allowed: (0..n).collect(),
            avoiding: u32::MAX - 1,
        }
    }

    /// Keeps the calling thread off `cpu` (if another CPU is allowed).
    fn avoid(&mut self, cpu: u32) {
        if cpu == self.avoiding || self.allowed.len() < 2 {
            return;
        }
        self.avoiding = cpu;
        self.apply(cpu);
    }

    /// Lets the calling thread run on the allowed CPUs except `except`.
    fn apply(&self, except: u32) {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let mut any = false;
        for &c in &self.allowed {
            if c as u32 != except {
                // SAFETY: c < CPU_SETSIZE (bounded in `new`).
                unsafe { libc::CPU_SET(c, &mut set) };
                any = true;
            }
        }
        if any {
            // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this thread. A
            // refusal (a cgroup that excludes those CPUs) leaves the placement as it was.
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
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
