//! Durable named cursors: a reader's position persisted in the stream's metadata file, like
//! Chronicle's named tailers or a Kafka consumer-group offset.
//!
//! The cursor table is 256 slots of 128 bytes at offset 4096 of `meta` (see `docs/format.md`).
//! A slot's `state` moves 0 (free) → 1 (being created) → 2 (active) → 0 (deleted). The name is
//! written while the slot is in state 1 and published by the `Release` store of state 2; lookups
//! read names only after an `Acquire` load of state 2.
//!
//! Delivery is at-least-once: the position is committed after the handler returned, so a process
//! that dies mid-batch sees the uncommitted messages again after a restart.

use crate::error::{Error, Result};
use crate::meta::CURSOR_TABLE_OFFSET;
use crate::process::{current_pid, current_start_time, is_alive};
use crate::reader::{Frame, Reader, Start};
use crate::stream::Shared;
use crate::{Position, Stream};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Longest cursor name in bytes.
pub const MAX_CURSOR_NAME: usize = 64;

const FREE: u32 = 0;
const CREATING: u32 = 1;
const ACTIVE: u32 = 2;

/// Cursor flag: retention and the ring never pass this cursor; the writer waits instead.
pub const CURSOR_BLOCKING: u32 = 1;
/// Cursor flag: the cursor was blocking but stopped holding the writer because its owner was gone.
pub const CURSOR_RELEASED: u32 = 2;

/// One slot of the cursor table (128 bytes).
#[repr(C)]
pub struct CursorSlot {
    /// 0 free, 1 being created, 2 active.
    pub state: AtomicU32,
    /// `CURSOR_*` flags.
    pub flags: AtomicU32,
    /// Committed position: the next frame to deliver.
    pub position: AtomicU64,
    /// Pid of the process reading through the cursor (0 = none).
    pub owner_pid: AtomicU32,
    /// Length of the name.
    pub name_len: AtomicU32,
    /// Start time of the owner process.
    pub owner_start: AtomicU64,
    /// Last commit or heartbeat, ns since the epoch.
    pub heartbeat_ns: AtomicU64,
    /// Incremented by every reset, so an owner notices its position was moved.
    pub generation: AtomicU64,
    /// Reserved.
    pub _reserved: [u64; 2],
    /// Name bytes (`name_len` used).
    pub name: [u8; MAX_CURSOR_NAME],
}

const _: () = assert!(std::mem::size_of::<CursorSlot>() == 128);

/// What a cursor looks like to operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CursorInfo {
    /// Cursor name.
    pub name: String,
    /// Committed position.
    pub position: Position,
    /// Holds the writer back instead of being lapped.
    pub blocking: bool,
    /// Was blocking, released because its owner was gone.
    pub released: bool,
    /// Owner process, if any.
    pub owner_pid: Option<u32>,
    /// Whether the owner is running.
    pub owner_alive: bool,
    /// Last commit, ns since the epoch.
    pub heartbeat_ns: u64,
}

/// Options of a named reader.
#[derive(Debug, Clone, Copy)]
pub struct CursorOptions {
    /// Where a cursor that does not exist yet starts.
    pub start_if_new: Start,
    /// Make the cursor blocking (back-pressure on the writer).
    pub blocking: bool,
    /// Commit automatically after this many messages (`None`: only explicit `commit`).
    pub commit_every: Option<u64>,
}

impl Default for CursorOptions {
    fn default() -> Self {
        CursorOptions {
            start_if_new: Start::Beginning,
            blocking: false,
            commit_every: Some(1),
        }
    }
}

/// The whole cursor table.
fn all_slots(s: &Shared) -> &[CursorSlot] {
    // SAFETY: `MetaFile::open` checked that the mapping is CURSOR_TABLE_OFFSET + cursor_slots ×
    // 128 bytes, so the table is in bounds; the offset is 4096-aligned; CursorSlot is valid for
    // any bit pattern and its shared fields are atomics (the name is only read after an Acquire
    // of state ACTIVE and only written in state CREATING by the slot's creator).
    unsafe {
        std::slice::from_raw_parts(
            s.meta.as_ptr().add(CURSOR_TABLE_OFFSET) as *const CursorSlot,
            s.config.cursor_slots as usize,
        )
    }
}

/// The slots that may be in use: up to the table's high-water mark (version 2), so lookups in a
/// large, mostly unused table touch only the part that was ever used.
pub(crate) fn slots(s: &Shared) -> &[CursorSlot] {
    let all = all_slots(s);
    if s.meta.header().version == 1 {
        return all;
    }
    // Acquire: pairs with the creator's fetch_max, made before it publishes the slot ACTIVE.
    let high = s.meta.get().cursors.high_water.load(Ordering::Acquire) as usize;
    &all[..high.min(all.len())]
}

fn slot_name(slot: &CursorSlot) -> &[u8] {
    let len = (slot.name_len.load(Ordering::Relaxed) as usize).min(MAX_CURSOR_NAME);
    &slot.name[..len]
}

fn find(s: &Shared, name: &str) -> Option<usize> {
    slots(s).iter().position(|slot| {
        slot.state.load(Ordering::Acquire) == ACTIVE && slot_name(slot) == name.as_bytes()
    })
}

fn validate_cursor_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_CURSOR_NAME || name.bytes().any(|b| b.is_ascii_control())
    {
        return Err(Error::InvalidName(name.to_string()));
    }
    Ok(())
}

/// Finds or creates cursor `name`, returning its slot index.
fn find_or_create(s: &Shared, name: &str, start: u64, flags: u32) -> Result<usize> {
    validate_cursor_name(name)?;
    if let Some(i) = find(s, name) {
        return Ok(i);
    }
    for (i, slot) in all_slots(s).iter().enumerate() {
        if slot
            .state
            .compare_exchange(FREE, CREATING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            // AcqRel: lookups that load the mark with Acquire and then see this slot ACTIVE
            // (Release below) scan far enough to find it.
            s.meta
                .get()
                .cursors
                .high_water
                .fetch_max(i as u32 + 1, Ordering::AcqRel);
            // Another process may have created the same name meanwhile: check again while we hold
            // an unpublished slot, and give it back if so.
            if let Some(j) = find(s, name) {
                slot.state.store(FREE, Ordering::Release);
                return Ok(j);
            }
            let name_ptr = slot.name.as_ptr() as *mut u8;
            // SAFETY: in state CREATING only this process writes the slot's name; nobody reads it
            // until the Release store of ACTIVE below.
            unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), name_ptr, name.len()) };
            slot.name_len.store(name.len() as u32, Ordering::Relaxed);
            slot.position.store(start, Ordering::Relaxed);
            slot.flags.store(flags, Ordering::Relaxed);
            slot.owner_pid.store(0, Ordering::Relaxed);
            slot.heartbeat_ns
                .store(crate::clock::system_now_ns(), Ordering::Relaxed);
            // Release: publishes name, position and flags to lookups (Acquire on state).
            slot.state.store(ACTIVE, Ordering::Release);
            return Ok(i);
        }
    }
    Err(Error::InvalidConfig(format!(
        "the cursor table is full ({} cursors); delete unused cursors or create the stream \
         with more cursor slots",
        s.config.cursor_slots
    )))
}

/// Whether a blocking cursor still holds the writer back; releases it (and counts the event) when
/// its owner has been gone for longer than the cursor timeout.
pub(crate) fn holds_writer(s: &Shared, slot: &CursorSlot, now_ns: u64) -> bool {
    let flags = slot.flags.load(Ordering::Acquire);
    if flags & CURSOR_BLOCKING == 0 || flags & CURSOR_RELEASED != 0 {
        return false;
    }
    let pid = slot.owner_pid.load(Ordering::Acquire);
    if pid != 0 && is_alive(pid, slot.owner_start.load(Ordering::Relaxed)) {
        return true;
    }
    let idle = now_ns.saturating_sub(slot.heartbeat_ns.load(Ordering::Relaxed));
    if idle <= s.config.cursor_timeout.as_nanos() as u64 {
        return true;
    }
    if slot
        .flags
        .compare_exchange(
            flags,
            flags | CURSOR_RELEASED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .is_ok()
    {
        s.meta
            .get()
            .retention
            .released_cursors
            .fetch_add(1, Ordering::Relaxed);
    }
    false
}

/// Lowest position a blocking cursor still needs, if any holds the writer.
pub(crate) fn min_blocking_position(s: &Shared) -> Option<u64> {
    let now = crate::clock::system_now_ns();
    slots(s)
        .iter()
        .filter(|slot| slot.state.load(Ordering::Acquire) == ACTIVE && holds_writer(s, slot, now))
        .map(|slot| slot.position.load(Ordering::Acquire))
        .min()
}

impl Stream {
    /// Lists the stream's named cursors.
    pub fn cursors(&self) -> Vec<CursorInfo> {
        slots(&self.shared)
            .iter()
            .filter(|slot| slot.state.load(Ordering::Acquire) == ACTIVE)
            .map(|slot| {
                let pid = slot.owner_pid.load(Ordering::Acquire);
                let flags = slot.flags.load(Ordering::Relaxed);
                CursorInfo {
                    name: String::from_utf8_lossy(slot_name(slot)).into_owned(),
                    position: Position(slot.position.load(Ordering::Acquire)),
                    blocking: flags & CURSOR_BLOCKING != 0,
                    released: flags & CURSOR_RELEASED != 0,
                    owner_pid: (pid != 0).then_some(pid),
                    owner_alive: pid != 0
                        && is_alive(pid, slot.owner_start.load(Ordering::Relaxed)),
                    heartbeat_ns: slot.heartbeat_ns.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Moves cursor `name` to `to` (creating it if missing). A live owner notices at its next poll.
    pub fn cursor_reset(&self, name: &str, to: Start) -> Result<Position> {
        let probe = self.reader(to)?;
        let pos = probe.position().0;
        let i = find_or_create(&self.shared, name, pos, 0)?;
        let slot = &slots(&self.shared)[i];
        slot.position.store(pos, Ordering::Release);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        Ok(Position(pos))
    }

    /// Deletes cursor `name`.
    pub fn cursor_delete(&self, name: &str) -> Result<()> {
        let Some(i) = find(&self.shared, name) else {
            return Err(Error::CursorNotFound {
                stream: self.name().to_string(),
                cursor: name.to_string(),
            });
        };
        let slot = &slots(&self.shared)[i];
        slot.flags.store(0, Ordering::Relaxed);
        slot.state.store(FREE, Ordering::Release);
        Ok(())
    }

    /// Opens a reader that resumes from, and commits to, the durable cursor `name`.
    pub fn named_reader(&self, name: &str, opts: CursorOptions) -> Result<NamedReader> {
        let start = self.reader(opts.start_if_new)?.position().0;
        let flags = if opts.blocking { CURSOR_BLOCKING } else { 0 };
        let i = find_or_create(&self.shared, name, start, flags)?;
        let slot = &slots(&self.shared)[i];
        let me = current_pid();
        loop {
            let owner = slot.owner_pid.load(Ordering::Acquire);
            if owner != 0
                && owner != me
                && is_alive(owner, slot.owner_start.load(Ordering::Relaxed))
            {
                return Err(Error::CursorBusy {
                    cursor: name.to_string(),
                    pid: owner,
                });
            }
            if owner == me {
                return Err(Error::CursorBusy {
                    cursor: name.to_string(),
                    pid: owner,
                });
            }
            if slot
                .owner_pid
                .compare_exchange(owner, me, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.owner_start
                    .store(current_start_time(), Ordering::Relaxed);
                break;
            }
        }
        if opts.blocking {
            // A cursor re-opened as blocking holds the writer again.
            slot.flags.store(CURSOR_BLOCKING, Ordering::Release);
        } else {
            slot.flags.store(0, Ordering::Release);
        }
        slot.heartbeat_ns
            .store(crate::clock::system_now_ns(), Ordering::Relaxed);
        let generation = slot.generation.load(Ordering::Acquire);
        let pos = slot.position.load(Ordering::Acquire);
        let reader = match self.reader(Start::Position(Position(pos))) {
            Ok(r) => r,
            Err(e) => {
                slot.owner_pid.store(0, Ordering::Release);
                return Err(e);
            }
        };
        Ok(NamedReader {
            shared: self.shared.clone(),
            reader,
            slot: i,
            name: name.to_string(),
            generation,
            commit_every: opts.commit_every,
            uncommitted: 0,
        })
    }
}

/// A reader bound to a durable cursor. Dropping it commits what its handlers finished and
/// releases ownership.
pub struct NamedReader {
    shared: Arc<Shared>,
    reader: Reader,
    slot: usize,
    name: String,
    generation: u64,
    commit_every: Option<u64>,
    uncommitted: u64,
}

impl std::fmt::Debug for NamedReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedReader")
            .field("name", &self.name)
            .field("position", &self.reader.position())
            .finish()
    }
}

impl NamedReader {
    fn slot(&self) -> &CursorSlot {
        &slots(&self.shared)[self.slot]
    }

    /// The cursor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next position to read (may be ahead of the committed one).
    pub fn position(&self) -> Position {
        self.reader.position()
    }

    /// The underlying reader (for blocking waits).
    pub fn reader_mut(&mut self) -> &mut Reader {
        &mut self.reader
    }

    /// Follows a reset made by an operator since the last call.
    fn follow_reset(&mut self) -> Result<()> {
        let g = self.slot().generation.load(Ordering::Acquire);
        if g != self.generation {
            self.generation = g;
            let pos = self.slot().position.load(Ordering::Acquire);
            self.reader.seek(Start::Position(Position(pos)))?;
            self.uncommitted = 0;
        }
        Ok(())
    }

    /// Handles up to `limit` messages; commits per `commit_every` after handlers return, and
    /// also whenever it has caught up with the writer with messages left uncommitted (so a
    /// blocking cursor never holds a writer back over messages that were already handled, however
    /// large `commit_every` is against the stream's capacity).
    pub fn poll<F: FnMut(Frame<'_>)>(&mut self, limit: usize, mut handler: F) -> Result<usize> {
        self.follow_reset()?;
        let every = self.commit_every;
        let mut total = 0;
        while total < limit {
            let chunk = match every {
                Some(n) => (n.saturating_sub(self.uncommitted).max(1) as usize).min(limit - total),
                None => limit - total,
            };
            let n = self.reader.poll(chunk, &mut handler)?;
            total += n;
            self.uncommitted += n as u64;
            if every.is_some_and(|e| self.uncommitted >= e) {
                self.commit();
            }
            if n < chunk {
                // Caught up: nothing more is committed right now.
                if every.is_some() && self.uncommitted > 0 {
                    self.commit();
                }
                break;
            }
        }
        Ok(total)
    }

    /// Persists the reader's position (everything handled so far).
    pub fn commit(&mut self) {
        let pos = self.reader.position().0;
        let slot = self.slot();
        // Release: a process that later opens the cursor and reads this position also sees that
        // the handler's effects preceded it (for effects in shared memory).
        slot.position.store(pos, Ordering::Release);
        slot.heartbeat_ns
            .store(crate::clock::system_now_ns(), Ordering::Relaxed);
        self.uncommitted = 0;
    }
}

impl Drop for NamedReader {
    fn drop(&mut self) {
        if self.uncommitted > 0 {
            self.commit();
        }
        let slot = self.slot();
        slot.heartbeat_ns
            .store(crate::clock::system_now_ns(), Ordering::Relaxed);
        let _ =
            slot.owner_pid
                .compare_exchange(current_pid(), 0, Ordering::Release, Ordering::Relaxed);
    }
}
