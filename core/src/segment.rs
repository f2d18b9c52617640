//! Segment files: creation, pre-faulting, recycling and mapping.
//!
//! A segment is a file of exactly `segment_size` bytes named after the stream position of its
//! first byte. It holds frames only (no header), so replicas can copy it byte for byte.

use crate::error::{Error, IoContext, Result};
use crate::frame::tag_for_segment;
use crate::fsutil::{create_file, segment_file_name, temp_sibling};
use crate::protocol::LogMemory;
use memmap2::{MmapOptions, MmapRaw};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Page size used for pre-faulting.
const PAGE: usize = 4096;

/// Bytes at the start of a recycled segment that recycling zeroes, so the writer starts the new
/// lap with words it knows to be clear (it keeps clearing ahead of itself from there).
pub(crate) const RECYCLE_CLEARED: u64 = 4096;

/// A mapped segment.
pub struct Segment {
    map: MmapRaw,
    index: u64,
    size: u64,
    writable: bool,
    /// Length of the prefix known to hold nothing but zeros or words of this segment's own
    /// frames: the whole segment when it was created fresh, [`RECYCLE_CLEARED`] when recycled,
    /// 0 when merely opened. The single writer clears commit words from here on before use.
    cleared: u64,
    /// Inode of the mapped file (a recycled mapping is reused only for the same file).
    ino: u64,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("index", &self.index)
            .field("size", &self.size)
            .finish()
    }
}

/// Path of segment `index` in `dir`.
pub fn segment_path(dir: &Path, index: u64, size: u64) -> PathBuf {
    dir.join(segment_file_name(index * size))
}

impl Segment {
    /// Index of the segment (its start position / segment size).
    #[inline]
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Stream position of the segment's first byte.
    #[inline]
    pub fn base(&self) -> u64 {
        self.index * self.size
    }

    /// Commit-word tag of this segment.
    #[inline]
    pub fn tag(&self) -> u32 {
        tag_for_segment(self.index)
    }

    /// Hints the processor to fetch the cache line at `off` (no effect past the segment end).
    #[inline]
    pub(crate) fn prefetch(&self, off: u64) {
        if off < self.size {
            // SAFETY: `off` is inside the mapping; a prefetch is a hint that never faults.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(
                    self.map.as_ptr().add(off as usize) as *const i8,
                )
            };
        }
    }

    /// Hints the processor to fetch the cache line at `off` for writing (exclusive ownership), so
    /// a later store does not wait for it (no effect past the segment end).
    #[inline]
    pub(crate) fn prefetch_write(&self, off: u64) {
        if off < self.size {
            // SAFETY: `off` is inside the mapping; PREFETCHW is a hint that never faults, reads or
            // writes no memory and changes no flags (processors without it execute it as a NOP).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                core::arch::asm!(
                    "prefetchw [{p}]",
                    p = in(reg) self.map.as_ptr().add(off as usize),
                    options(nostack, preserves_flags, readonly)
                )
            };
        }
    }

    /// Length of the prefix known to be free of stale commit words (see the field).
    #[inline]
    pub(crate) fn cleared(&self) -> u64 {
        self.cleared
    }

    /// The whole segment as bytes.
    ///
    /// Bytes of uncommitted frames may change underneath the slice; callers interpret only
    /// frames whose commit word they observed committed.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is `size` bytes long and lives as long as `self`. Other processes may
        // write into uncommitted parts concurrently; callers only interpret committed frames.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.size as usize) }
    }

    /// A byte range of the segment (see [`Segment::bytes`] for the caveat).
    #[inline]
    pub fn slice(&self, off: u64, len: usize) -> &[u8] {
        debug_assert!(off as usize + len <= self.size as usize);
        // SAFETY: in bounds (callers pass ranges inside frames validated against the segment size).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off as usize), len) }
    }

    /// Mutable access to a range the caller owns under the protocol (claimed, uncommitted).
    ///
    /// # Safety
    /// `off + len <= size`, the segment is writable, and no other live reference covers the range.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn slice_mut(&self, off: u64, len: usize) -> &mut [u8] {
        debug_assert!(self.writable);
        debug_assert!(off as usize + len <= self.size as usize);
        // SAFETY: forwarded from the caller.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(off as usize), len) }
    }

    /// Creates segment `index` in `dir`, pre-faulted, or opens it if another writer created it first.
    pub fn create(dir: &Path, index: u64, size: u64, mode: u32) -> Result<Segment> {
        let path = segment_path(dir, index, size);
        let tmp = temp_sibling(&path);
        let file = create_file(&tmp, mode)?;
        let result = (|| {
            allocate(&file, size, &tmp)?;
            let ino = file.metadata().ctx("stat segment", &tmp)?.ino();
            let map = MmapRaw::map_raw(&file).ctx("map segment", &tmp)?;
            let seg = Segment {
                map,
                index,
                size,
                writable: true,
                // A new file reads as zeros throughout.
                cleared: size,
                ino,
            };
            seg.prefault();
            Ok(seg)
        })();
        let seg = match result {
            Ok(seg) => seg,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // link() fails with EEXIST instead of replacing: the first creator wins.
        match std::fs::hard_link(&tmp, &path) {
            Ok(()) => {
                let _ = std::fs::remove_file(&tmp);
                Ok(seg)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let _ = std::fs::remove_file(&tmp);
                Segment::open(dir, index, size, true)?.ok_or_else(|| Error::CorruptFile {
                    path: path.clone(),
                    reason: "segment vanished while being created".into(),
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(Error::Io {
                    op: "link segment into place",
                    path,
                    source: e,
                })
            }
        }
    }

    /// Reuses the file of segment `old` as segment `new`: its first page zeroed, mapped with page
    /// tables populated, renamed into place.
    ///
    /// Readers still mapping `old` see its frames vanish; they detect it through the stream's
    /// first position, which the caller must advance past `old` before calling this.
    pub fn recycle(dir: &Path, old: u64, new: u64, size: u64, mode: u32) -> Result<Segment> {
        let old_path = segment_path(dir, old, size);
        let new_path = segment_path(dir, new, size);
        let tmp = temp_sibling(&new_path);
        if std::fs::rename(&old_path, &tmp).is_err() {
            // Nothing to recycle (deleted by hand, or a fresh ring): create instead.
            return Segment::create(dir, new, size, mode);
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&tmp)
            .ctx("open segment", &tmp)?;
        let st = file.metadata().ctx("stat segment", &tmp)?;
        if st.len() != size {
            allocate(&file, size, &tmp)?;
        }
        // Populated in the kernel: the pages exist already, only page tables are filled.
        let map = MmapOptions::new()
            .populate()
            .map_raw(&file)
            .ctx("map segment", &tmp)?;
        let cleared = RECYCLE_CLEARED.min(size);
        let seg = Segment {
            map,
            index: new,
            size,
            writable: true,
            cleared,
            ino: st.ino(),
        };
        // The old lap's frames stay: their commit words carry the old lap's tag, and the writer
        // clears ahead of itself so that the commit word after each frame is zero before the frame
        // is published (see `Writer::commit_single`); a reader only ever meets zero or a word written for
        // this lap. Only the first page, where readers enter the segment and the writer starts,
        // is cleared here.
        // SAFETY: the file was renamed away from every name readers open, and the writer has not
        // been handed this segment yet, so nobody writes it; readers still mapping it only read.
        unsafe { seg.zero(0, cleared) };
        std::fs::rename(&tmp, &new_path).ctx("rename recycled segment", &new_path)?;
        Ok(seg)
    }

    /// Recycles this (writable) mapping's own file as segment `new`, keeping the mapping: no
    /// munmap, mmap or page-table population, which cost the preparer about a millisecond per
    /// 16 MiB lap. Falls back to [`Segment::recycle`] when the file under this segment's name is
    /// not the mapped one (replaced by hand).
    pub fn recycle_mapped(mut self, dir: &Path, new: u64, mode: u32) -> Result<Segment> {
        let size = self.size;
        let old_path = segment_path(dir, self.index, size);
        let new_path = segment_path(dir, new, size);
        let tmp = temp_sibling(&new_path);
        let same_file = std::fs::metadata(&old_path)
            .map(|m| m.ino() == self.ino && m.len() == size)
            .unwrap_or(false);
        if !self.writable || !same_file {
            return Segment::recycle(dir, self.index, new, size, mode);
        }
        std::fs::rename(&old_path, &tmp).ctx("rename segment for recycling", &old_path)?;
        self.index = new;
        self.cleared = RECYCLE_CLEARED.min(size);
        // SAFETY: as in `recycle`: the file was renamed away from every name readers open and the
        // writer no longer uses this segment (it retired it), so nobody writes it; readers still
        // mapping it only read and detect the lap through the first position.
        unsafe { self.zero(0, self.cleared) };
        std::fs::rename(&tmp, &new_path).ctx("rename recycled segment", &new_path)?;
        Ok(self)
    }

    /// Maps existing segment `index`, page tables populated; `Ok(None)` if the file does not exist.
    pub fn open(dir: &Path, index: u64, size: u64, writable: bool) -> Result<Option<Segment>> {
        Self::open_reusing(dir, index, size, writable, &mut Vec::new())
    }

    /// As [`Segment::open`], but reuses a mapping from `spare` when it maps the same file (a ring
    /// segment recycled under a new name): no mmap, page-table population or munmap.
    pub fn open_reusing(
        dir: &Path,
        index: u64,
        size: u64,
        writable: bool,
        spare: &mut Vec<Segment>,
    ) -> Result<Option<Segment>> {
        let path = segment_path(dir, index, size);
        let file = match std::fs::OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::Io {
                    op: "open segment",
                    path,
                    source: e,
                })
            }
        };
        let st = file.metadata().ctx("stat segment", &path)?;
        let len = st.len();
        if len != size {
            return Err(Error::CorruptFile {
                path,
                reason: format!(
                    "segment file is {len} bytes, expected {size} (truncated or foreign file)"
                ),
            });
        }
        if let Some(i) = spare
            .iter()
            .position(|m| m.ino == st.ino() && m.writable == writable && m.size == size)
        {
            let mut seg = spare.swap_remove(i);
            seg.index = index;
            seg.cleared = 0;
            return Ok(Some(seg));
        }
        let mut opts = MmapOptions::new();
        opts.populate();
        let map = if writable {
            opts.map_raw(&file)
        } else {
            opts.map_raw_read_only(&file)
        }
        .ctx("map segment", &path)?;
        Ok(Some(Segment {
            map,
            index,
            size,
            writable,
            cleared: 0,
            ino: st.ino(),
        }))
    }

    /// Touches every page so neither the writer nor the kernel faults on the hot path.
    fn prefault(&self) {
        let base = self.map.as_mut_ptr();
        let mut off = 0;
        while off < self.size as usize {
            // SAFETY: `off` is inside the mapping; the segment is fresh (all zeros) and not yet
            // visible to any reader or writer, so writing a zero changes nothing observable.
            unsafe { std::ptr::write_volatile(base.add(off), 0) };
            off += PAGE;
        }
    }

    /// msync of the range.
    pub fn flush_range(&self, off: u64, len: u64) -> Result<()> {
        self.map
            .flush_range(off as usize, len as usize)
            .map_err(|source| Error::Io {
                op: "msync segment",
                path: PathBuf::from(format!("segment {}", self.index)),
                source,
            })
    }

    #[inline]
    fn word(&self, off: u64) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.size);
        // SAFETY: `off` is 8-aligned and inside the page-aligned mapping, so the pointer is valid and
        // aligned for AtomicU64; the word lives as long as the mapping borrowed by `&self`. Other
        // processes access it only atomically (commit words are never written non-atomically).
        unsafe { &*(self.map.as_ptr().add(off as usize) as *const AtomicU64) }
    }
}

fn allocate(file: &std::fs::File, size: u64, path: &Path) -> Result<()> {
    // SAFETY: plain syscall on a valid fd owned by `file`.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, size as libc::off_t) };
    if rc != 0 {
        // Filesystems without fallocate: fall back to a sparse file.
        if rc != libc::EOPNOTSUPP && rc != libc::EINVAL {
            return Err(Error::Io {
                op: "allocate segment",
                path: path.to_path_buf(),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        file.set_len(size).ctx("size segment", path)?;
    }
    Ok(())
}

// SAFETY: the mapping covers `0..size` for the lifetime of the Segment; word accessors use real
// atomics on aligned addresses; byte accessors are bounded by debug assertions and the callers'
// contracts.
unsafe impl LogMemory for Segment {
    #[inline]
    fn capacity(&self) -> u64 {
        self.size
    }
    #[inline]
    fn load(&self, off: u64, order: Ordering) -> u64 {
        self.word(off).load(order)
    }
    #[inline]
    fn store(&self, off: u64, value: u64, order: Ordering) {
        self.word(off).store(value, order)
    }
    #[inline]
    fn compare_exchange(
        &self,
        off: u64,
        current: u64,
        new: u64,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u64, u64> {
        self.word(off)
            .compare_exchange(current, new, success, failure)
    }
    #[inline]
    unsafe fn write_bytes(&self, off: u64, src: &[u8]) {
        debug_assert!(off as usize + src.len() <= self.size as usize);
        // SAFETY: in bounds per the caller's contract; the caller owns the range.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.as_ptr(),
                self.map.as_mut_ptr().add(off as usize),
                src.len(),
            )
        };
    }
    #[inline]
    unsafe fn read_bytes(&self, off: u64, dst: &mut [u8]) {
        debug_assert!(off as usize + dst.len() <= self.size as usize);
        // SAFETY: in bounds per the caller's contract; the range is committed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(off as usize),
                dst.as_mut_ptr(),
                dst.len(),
            )
        };
    }
    #[inline]
    unsafe fn zero(&self, off: u64, len: u64) {
        debug_assert!(off + len <= self.size);
        // SAFETY: in bounds per the caller's contract; the caller owns the range.
        unsafe { std::ptr::write_bytes(self.map.as_mut_ptr().add(off as usize), 0, len as usize) };
    }
}

/// Lists segment start positions in `dir`, sorted.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>> {
    let mut v = Vec::new();
    for entry in std::fs::read_dir(dir).ctx("list stream directory", dir)? {
        let entry = entry.ctx("list stream directory", dir)?;
        if let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(crate::fsutil::parse_segment_file_name)
        {
            v.push(p);
        }
    }
    v.sort_unstable();
    Ok(v)
}
