//! A provided-buffer ring (Linux 5.19+) for multishot receive: one armed RECVMSG picks a buffer
//! from this ring for every datagram, so nothing is re-posted per datagram.
//!
//! Ownership: a buffer belongs to the kernel from the moment its entry is published in the ring
//! (the tail store) until the completion naming its buffer id is reaped; then it belongs to us
//! until [`BufRing::recycle`] publishes it again. We read a buffer only in between.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// The buffer ring and its buffers, in two page-aligned allocations that never move.
pub(super) struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    size: usize,
    count: u16,
    tail: u16,
}

impl BufRing {
    /// `count` (a power of two, at most 32768) buffers of `size` bytes each, all published.
    pub(super) fn new(count: u16, size: usize) -> std::io::Result<Self> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_string());
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(bad("buffer ring: bad count or size"));
        }
        let entries_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|_| bad("buffer ring layout"))?;
        let bufs_layout = Layout::from_size_align(count as usize * size, 4096)
            .map_err(|_| bad("buffer layout"))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if entries.is_null() || bufs.is_null() {
            // SAFETY: each pointer, when not null, came from the matching allocation just above.
            unsafe {
                if !entries.is_null() {
                    dealloc(entries.cast(), entries_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(std::io::Error::from(std::io::ErrorKind::OutOfMemory));
        }
        let mut r = BufRing {
            entries,
            entries_layout,
            bufs,
            bufs_layout,
            size,
            count,
            tail: 0,
        };
        for bid in 0..count {
            r.push(bid);
        }
        r.publish();
        Ok(r)
    }

    /// Registers the ring with `submitter` as buffer group `bgid`.
    pub(super) fn register(&self, submitter: &Submitter<'_>, bgid: u16) -> std::io::Result<()> {
        // SAFETY: the entries live in an allocation of `count` entries that is freed only when
        // this value drops, which happens after the io_uring that uses it (see `UringUdp`'s
        // field order and `Drop`).
        unsafe { submitter.register_buf_ring_with_flags(self.entries as u64, self.count, bgid, 0) }
    }

    /// The first `len` bytes of buffer `bid`, which the caller has just been handed by a
    /// completion (so the kernel is done with it until it is recycled).
    pub(super) fn buffer(&self, bid: u16, len: usize) -> &[u8] {
        let bid = bid & (self.count - 1);
        let len = len.min(self.size);
        // SAFETY: the range lies inside the buffer allocation (bid < count, len <= size); the
        // kernel does not write this buffer until `recycle` publishes it again, which needs
        // `&mut self` and so cannot happen while the returned slice lives.
        unsafe { std::slice::from_raw_parts(self.bufs.add(bid as usize * self.size), len) }
    }

    /// Writes the entry for buffer `bid` at the tail (not yet visible to the kernel).
    fn push(&mut self, bid: u16) {
        let bid = bid & (self.count - 1);
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: idx < count, inside the entries allocation. The slot at the tail is free: at
        // most `count` buffers exist and each is published at most once, so the kernel has
        // consumed whatever entry was here before. The tail field the kernel reads overlays
        // entry 0's reserved word, which `set_*` never touches.
        let e = unsafe { &mut *self.entries.add(idx) };
        // SAFETY: bid < count: the address lies inside the buffer allocation.
        e.set_addr(unsafe { self.bufs.add(bid as usize * self.size) } as u64);
        e.set_len(self.size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Makes every pushed entry visible to the kernel.
    fn publish(&self) {
        // SAFETY: `entries` points at entry 0 of an initialised ring; `tail` returns the address
        // of its reserved field, which the kernel reads as the ring tail. It is a naturally
        // aligned u16, so viewing it as an AtomicU16 is sound.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        // Release: the entry contents written by `push` must be visible before the kernel (which
        // loads the tail with acquire semantics) can see the new tail.
        tail.store(self.tail, Ordering::Release);
    }

    /// Hands buffer `bid` back to the kernel.
    pub(super) fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }
}

impl BufRing {
    /// Gives up the memory without freeing it (the kernel might still write to it).
    pub(super) fn leak(&mut self) {
        self.entries = std::ptr::null_mut();
        self.bufs = std::ptr::null_mut();
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.entries.is_null() {
            return; // leaked
        }
        // SAFETY: both pointers came from `alloc_zeroed` with these layouts; the owner drops
        // this only after the ring that referenced them is gone (or leaks it).
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
