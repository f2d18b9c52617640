//! Consumer groups: competing consumers over one stream, in any number of processes.
//!
//! Each message is handed to exactly one live member. A member records the position it is
//! handling in its slot *before* it advances the group's shared dispatch position, and clears it
//! when its handler returns (the acknowledgement). When a member process dies, the others find
//! its slot's in-flight position and deliver that message again with a higher delivery count, so
//! nothing is lost and only unacknowledged messages are duplicated (at-least-once). After
//! `max_deliveries` attempts a message goes to the dead-letter stream instead of the handler.
//!
//! The group's state lives in `STREAM_DIR/group.NAME`, a mapped `#[repr(C)]` file (see
//! `docs/format.md`).

use crate::error::{Error, IoContext, Result};
use crate::process::{current_pid, current_start_time, is_alive};
use crate::reader::{Frame, Reader, Start};
use crate::stream::Shared;
use crate::{AppendOptions, Position, Stream, Writer};
use memmap2::MmapRaw;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Magic of a group file.
pub const GROUP_MAGIC: [u8; 8] = *b"RWGROUP\0";
/// Group file format version.
pub const GROUP_VERSION: u32 = 1;
/// Members per group.
pub const GROUP_MEMBERS: usize = 64;
const GROUP_FILE_LEN: usize = 8192;

/// Header and shared dispatch position.
#[repr(C)]
struct GroupHeader {
    magic: [u8; 8],
    version: u32,
    members: u32,
    stream_id: u64,
    _reserved: [u8; 104],
    /// Next position to hand out (offset 128, its own line).
    dispatch: AtomicU64,
    /// Messages sent to the dead-letter stream.
    dead_lettered: AtomicU64,
    /// Messages delivered again after a member died.
    redelivered: AtomicU64,
    _pad: [u8; 104],
}

/// One member's registration (64 bytes).
#[repr(C)]
struct MemberSlot {
    pid: AtomicU32,
    _pad: u32,
    start: AtomicU64,
    heartbeat_ns: AtomicU64,
    /// Position being handled + 1 (0 = none).
    inflight: AtomicU64,
    /// Delivery count of the in-flight message.
    deliveries: AtomicU32,
    _pad2: u32,
    /// Messages acknowledged by this member.
    acked: AtomicU64,
    _reserved: [u64; 2],
}

const _: () = {
    assert!(std::mem::size_of::<GroupHeader>() == 256);
    assert!(std::mem::size_of::<MemberSlot>() == 64);
    assert!(256 + GROUP_MEMBERS * 64 <= GROUP_FILE_LEN);
};

/// Options of a group member.
#[derive(Debug, Clone, Default)]
pub struct GroupOptions {
    /// Where a new group starts (default: the beginning).
    pub start: Option<Start>,
    /// After this many deliveries a message goes to `dead_letter` instead of the handler.
    pub max_deliveries: Option<u32>,
    /// Stream that receives poison messages (its own writer is opened by the member).
    pub dead_letter: Option<Stream>,
}

/// A message handed to a group member.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// The frame.
    pub frame: Frame<'a>,
    /// 1 for the first delivery, more when a member died while handling it.
    pub count: u32,
}

/// A member of a consumer group.
pub struct GroupMember {
    map: MmapRaw,
    path: PathBuf,
    reader: Reader,
    slot: usize,
    max_deliveries: Option<u32>,
    dead_letter: Option<Writer>,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("file", &self.path)
            .field("slot", &self.slot)
            .finish()
    }
}

/// Counters of a group, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupStat {
    /// Next position to hand out.
    pub dispatch: Position,
    /// Live members.
    pub live_members: usize,
    /// Messages acknowledged by all members that ever held a slot.
    pub acked: u64,
    /// Messages delivered again after a member died.
    pub redelivered: u64,
    /// Messages sent to the dead-letter stream.
    pub dead_lettered: u64,
}

fn group_path(s: &Shared, name: &str) -> Result<PathBuf> {
    crate::stream::validate_name(name)?;
    Ok(s.dir.join(format!("group.{name}")))
}

impl Stream {
    /// Joins consumer group `name` (creating it if needed).
    pub fn group_member(&self, name: &str, opts: GroupOptions) -> Result<GroupMember> {
        let path = group_path(&self.shared, name)?;
        if !path.exists() {
            let start = self
                .reader(opts.start.unwrap_or(Start::Beginning))?
                .position()
                .0;
            let mut buf = vec![0u8; GROUP_FILE_LEN];
            buf[0..8].copy_from_slice(&GROUP_MAGIC);
            buf[8..12].copy_from_slice(&GROUP_VERSION.to_le_bytes());
            buf[12..16].copy_from_slice(&(GROUP_MEMBERS as u32).to_le_bytes());
            buf[16..24].copy_from_slice(&self.stream_id().to_le_bytes());
            buf[128..136].copy_from_slice(&start.to_le_bytes());
            let tmp = crate::fsutil::temp_sibling(&path);
            let mut f = crate::fsutil::create_file(&tmp, self.shared.config.file_mode)?;
            std::io::Write::write_all(&mut f, &buf).ctx("write group file", &tmp)?;
            // link() keeps the first creator's file if two processes race.
            let _ = std::fs::hard_link(&tmp, &path);
            let _ = std::fs::remove_file(&tmp);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .ctx("open group file", &path)?;
        let len = file.metadata().ctx("stat group file", &path)?.len();
        if len != GROUP_FILE_LEN as u64 {
            return Err(Error::CorruptFile {
                path,
                reason: format!("group file is {len} bytes, expected {GROUP_FILE_LEN}"),
            });
        }
        let map = MmapRaw::map_raw(&file).ctx("map group file", &path)?;
        let dead_letter = match &opts.dead_letter {
            Some(s) => Some(s.writer()?),
            None => None,
        };
        let mut m = GroupMember {
            map,
            path: path.clone(),
            reader: self.reader(Start::Beginning)?,
            slot: usize::MAX,
            max_deliveries: opts.max_deliveries,
            dead_letter,
        };
        let h = m.header();
        if h.magic != GROUP_MAGIC || h.members as usize != GROUP_MEMBERS {
            return Err(Error::CorruptFile {
                path,
                reason: "not a Ringway group file".into(),
            });
        }
        if h.version != GROUP_VERSION {
            return Err(Error::UnsupportedVersion {
                path,
                found: h.version,
                supported: GROUP_VERSION,
            });
        }
        m.slot = m.join()?;
        Ok(m)
    }
}

impl GroupMember {
    fn header(&self) -> &GroupHeader {
        // SAFETY: the mapping is GROUP_FILE_LEN bytes, page-aligned; GroupHeader is valid for any
        // bits; the shared fields are atomics and the rest is written once before the file is
        // linked into place.
        unsafe { &*(self.map.as_ptr() as *const GroupHeader) }
    }

    fn members(&self) -> &[MemberSlot] {
        // SAFETY: 256 + GROUP_MEMBERS * 64 <= GROUP_FILE_LEN (asserted); slots are atomics only.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(256) as *const MemberSlot,
                GROUP_MEMBERS,
            )
        }
    }

    fn join(&self) -> Result<usize> {
        let me = current_pid();
        for (i, m) in self.members().iter().enumerate() {
            let pid = m.pid.load(Ordering::Acquire);
            let usable = pid == 0
                || (pid != me
                    && !is_alive(pid, m.start.load(Ordering::Relaxed))
                    && m.inflight.load(Ordering::Acquire) == 0);
            if usable
                && m.pid
                    .compare_exchange(pid, me, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                m.start.store(current_start_time(), Ordering::Relaxed);
                m.heartbeat_ns
                    .store(crate::clock::system_now_ns(), Ordering::Relaxed);
                return Ok(i);
            }
        }
        Err(Error::InvalidConfig(format!(
            "consumer group {} has no free member slot ({GROUP_MEMBERS} live members)",
            self.path.display()
        )))
    }

    /// Position the group hands out next.
    pub fn dispatch_position(&self) -> Position {
        Position(self.header().dispatch.load(Ordering::Acquire))
    }

    /// Group counters.
    pub fn stat(&self) -> GroupStat {
        let h = self.header();
        GroupStat {
            dispatch: self.dispatch_position(),
            live_members: self
                .members()
                .iter()
                .filter(|m| {
                    let pid = m.pid.load(Ordering::Acquire);
                    pid != 0 && is_alive(pid, m.start.load(Ordering::Relaxed))
                })
                .count(),
            acked: self
                .members()
                .iter()
                .map(|m| m.acked.load(Ordering::Relaxed))
                .sum(),
            redelivered: h.redelivered.load(Ordering::Relaxed),
            dead_lettered: h.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Blocks until a frame is committed at the group's dispatch position or `timeout` passes
    /// (see [`Reader::wait`]); messages orphaned by dead members are not waited for.
    pub fn wait(&mut self, timeout: std::time::Duration) -> Result<bool> {
        let d = self.dispatch_position().0;
        self.reader.jump(d);
        self.reader.wait(timeout)
    }

    /// Handles up to `limit` messages, one at a time; each is acknowledged when `handler` returns.
    pub fn poll<F: FnMut(Delivery<'_>)>(&mut self, limit: usize, mut handler: F) -> Result<usize> {
        let mut n = 0;
        while n < limit {
            let (pos, count) = match self.take_orphan() {
                Some(t) => t,
                None => match self.take_next()? {
                    Some(p) => (p, 1),
                    None => break,
                },
            };
            self.deliver(pos, count, &mut handler)?;
            n += 1;
        }
        Ok(n)
    }

    /// Takes an in-flight message of a dead member, if any.
    fn take_orphan(&self) -> Option<(u64, u32)> {
        let mine = &self.members()[self.slot];
        for (i, m) in self.members().iter().enumerate() {
            if i == self.slot {
                continue;
            }
            let v = m.inflight.load(Ordering::Acquire);
            if v == 0 {
                continue;
            }
            let pid = m.pid.load(Ordering::Acquire);
            if pid != 0 && is_alive(pid, m.start.load(Ordering::Relaxed)) {
                continue;
            }
            let count = m.deliveries.load(Ordering::Relaxed).saturating_add(1);
            // Record it as ours first: if we die now, the message is in some slot either way.
            mine.deliveries.store(count, Ordering::Relaxed);
            mine.inflight.store(v, Ordering::Release);
            if m.inflight
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                self.header().redelivered.fetch_add(1, Ordering::Relaxed);
                return Some((v - 1, count));
            }
            mine.inflight.store(0, Ordering::Release);
        }
        None
    }

    /// Claims the next committed message at the dispatch position.
    fn take_next(&mut self) -> Result<Option<u64>> {
        // SAFETY: as in `header`; borrowing the mapping alone leaves `self.reader` free.
        let h = unsafe { &*(self.map.as_ptr() as *const GroupHeader) };
        // SAFETY: as in `members`.
        let members = unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(256) as *const MemberSlot,
                GROUP_MEMBERS,
            )
        };
        let dispatch = &h.dispatch;
        loop {
            let d = dispatch.load(Ordering::Acquire);
            self.reader.jump(d);
            let next = match self.reader.next_raw() {
                Ok(Some(f)) => (f.is_padding(), f.next_position().0),
                Ok(None) => return Ok(None),
                Err(Error::Lapped { oldest, .. }) => {
                    let _ =
                        dispatch.compare_exchange(d, oldest.0, Ordering::AcqRel, Ordering::Relaxed);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if next.0 {
                let _ = dispatch.compare_exchange(d, next.1, Ordering::AcqRel, Ordering::Relaxed);
                continue;
            }
            let mine = &members[self.slot];
            mine.deliveries.store(1, Ordering::Relaxed);
            // Release: the in-flight record is visible before the dispatch moves past it, so a
            // member that sees us dead also sees what we held.
            mine.inflight.store(d + 1, Ordering::Release);
            if dispatch
                .compare_exchange(d, next.1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return Ok(Some(d));
            }
            mine.inflight.store(0, Ordering::Release);
        }
    }

    fn deliver<F: FnMut(Delivery<'_>)>(
        &mut self,
        pos: u64,
        count: u32,
        handler: &mut F,
    ) -> Result<()> {
        let slot = self.slot;
        self.reader.jump(pos);
        let frame = match self.reader.next_raw()? {
            Some(f) if !f.is_padding() => f,
            _ => {
                return Err(Error::BadPosition {
                    requested: Position(pos),
                    tail: None,
                });
            }
        };
        let poison = self.max_deliveries.is_some_and(|m| count > m);
        if let (true, Some(dead_letter)) = (poison, self.dead_letter.as_mut()) {
            let opts = AppendOptions {
                type_id: frame.type_id(),
                schema_version: frame.schema_version(),
                meta: frame.meta(),
            };
            let payload = frame.payload();
            dead_letter.append_with(&opts, payload)?;
            let h = self.header();
            h.dead_lettered.fetch_add(1, Ordering::Relaxed);
        } else {
            handler(Delivery { frame, count });
        }
        let m = &self.members()[slot];
        m.acked.fetch_add(1, Ordering::Relaxed);
        m.heartbeat_ns
            .store(crate::clock::system_now_ns(), Ordering::Relaxed);
        // Release: the acknowledgement follows everything the handler did.
        m.inflight.store(0, Ordering::Release);
        Ok(())
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        let m = &self.members()[self.slot];
        if m.inflight.load(Ordering::Acquire) == 0 {
            let _ = m
                .pid
                .compare_exchange(current_pid(), 0, Ordering::Release, Ordering::Relaxed);
        }
    }
}
