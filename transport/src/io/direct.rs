//! Direct socket system calls: one non-blocking `sendmsg`, and batched `recvmmsg`.
//!
//! The io_uring backend uses them where they are cheaper than the ring (a lone datagram to send
//! on an idle ring; receiving on a busy-polled socket); the plain backend uses them throughout.

use std::net::SocketAddr;
use std::os::fd::RawFd;

use super::sockaddr;
use super::IoCounters;

/// Datagrams one `recvmmsg` call can return.
pub(super) const RECV_BATCH: usize = 16;

/// What a direct send came to.
pub(super) enum Sent {
    /// The kernel took the datagrams.
    Done,
    /// The socket buffer is full: try again later (or hand it to the ring, which waits).
    WouldBlock,
    /// The kernel refused it (errno).
    Failed(i32),
}

/// `sendmsg(fd, msg, MSG_DONTWAIT)`, retried on EINTR; a header without control data and with
/// one buffer goes out as the cheaper `sendto`.
///
/// # Safety
/// `msg` must be a valid header whose name, iovec and control pointers point to live memory of
/// the lengths it gives, for the duration of the call.
pub(super) unsafe fn send_msg(fd: RawFd, msg: &libc::msghdr) -> Sent {
    loop {
        let r = if msg.msg_controllen == 0 && msg.msg_iovlen == 1 {
            // SAFETY: the caller guarantees the iovec and the name are valid for the lengths
            // given; sendto only reads them and returns before we touch them again.
            unsafe {
                let iov = &*msg.msg_iov;
                libc::sendto(
                    fd,
                    iov.iov_base,
                    iov.iov_len,
                    libc::MSG_DONTWAIT,
                    msg.msg_name.cast(),
                    msg.msg_namelen,
                )
            }
        } else {
            // SAFETY: the caller guarantees `msg` and everything it points to is valid; the
            // call only reads them and returns before we touch them again.
            unsafe { libc::sendmsg(fd, msg, libc::MSG_DONTWAIT) }
        };
        if r >= 0 {
            return Sent::Done;
        }
        let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        match e {
            libc::EINTR => continue,
            libc::EAGAIN => return Sent::WouldBlock,
            e => return Sent::Failed(e),
        }
    }
}

/// A batch of receive buffers with the headers `recvmmsg` fills.
///
/// Every array is boxed and never resized, so the pointers stored in `iovs` and `msgs` (into
/// `bufs`, `iovs` and `addrs`) stay valid when the value moves.
pub(super) struct BatchRecv {
    bufs: Box<[u8]>,
    /// Bytes per buffer: the largest datagram accepted plus one, so a larger one shows as
    /// truncated.
    size: usize,
    max_datagram: usize,
    /// The iovecs `msgs` point to (read only by the kernel).
    _iovs: Box<[libc::iovec]>,
    addrs: Box<[libc::sockaddr_storage]>,
    msgs: Box<[libc::mmsghdr]>,
    /// The last drain found datagrams: the next one starts with a batch call.
    busy: bool,
}

// SAFETY: the raw pointers inside `iovs` and `msgs` point only into heap memory owned by this
// value (its boxed arrays), so moving it to another thread moves their targets with it.
unsafe impl Send for BatchRecv {}

impl std::fmt::Debug for BatchRecv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRecv")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BatchRecv {
    /// Buffers for [`RECV_BATCH`] datagrams of up to `max_datagram` bytes.
    pub(super) fn new(max_datagram: usize) -> Self {
        let size = max_datagram + 1;
        let mut bufs = vec![0u8; size * RECV_BATCH].into_boxed_slice();
        let mut iovs: Box<[libc::iovec]> = (0..RECV_BATCH)
            .map(|_| {
                // SAFETY: iovec is a plain C struct; all-zero bytes are a valid (empty) value.
                unsafe { std::mem::zeroed() }
            })
            .collect();
        let mut addrs: Box<[libc::sockaddr_storage]> = (0..RECV_BATCH)
            .map(|_| {
                // SAFETY: as above, for sockaddr_storage.
                unsafe { std::mem::zeroed() }
            })
            .collect();
        let mut msgs: Box<[libc::mmsghdr]> = (0..RECV_BATCH)
            .map(|_| {
                // SAFETY: as above, for mmsghdr (null pointers, zero lengths).
                unsafe { std::mem::zeroed() }
            })
            .collect();
        for k in 0..RECV_BATCH {
            iovs[k].iov_base = bufs[k * size..].as_mut_ptr().cast();
            iovs[k].iov_len = size;
            let h = &mut msgs[k].msg_hdr;
            h.msg_name = (&mut addrs[k] as *mut libc::sockaddr_storage).cast();
            h.msg_iov = &mut iovs[k];
            h.msg_iovlen = 1;
        }
        BatchRecv {
            bufs,
            size,
            max_datagram,
            _iovs: iovs,
            addrs,
            msgs,
            busy: false,
        }
    }

    /// Receives the datagrams queued on `fd` without blocking, calling `on_recv` for each.
    /// Returns how many were delivered. Datagrams larger than `max_datagram` are dropped and
    /// counted as truncated.
    ///
    /// After a drain that found nothing, the next one starts with a single `recvfrom`, which
    /// costs less than an empty `recvmmsg` (a busy-polling owner makes that call in every loop
    /// iteration, and its duration is part of the latency of the datagram that arrives); it
    /// returns with the one datagram it got, and the following drain reads batches with
    /// `recvmmsg` until the socket is empty again.
    pub(super) fn drain(
        &mut self,
        fd: RawFd,
        counters: &mut IoCounters,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        if !self.busy {
            let n = self.recv_one(fd, counters, on_recv)?;
            self.busy = n > 0;
            return Ok(n);
        }
        let n = self.recv_batches(fd, counters, on_recv)?;
        self.busy = n > 0;
        Ok(n)
    }

    /// One `recvfrom` into the first buffer: 1 if a datagram was delivered, else 0.
    fn recv_one(
        &mut self,
        fd: RawFd,
        counters: &mut IoCounters,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        loop {
            let mut namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            counters.syscalls += 1;
            // SAFETY: the first buffer has `size` bytes and `addrs[0]` is a sockaddr_storage
            // with its size in `namelen`; both are owned by this value and not otherwise
            // referenced during the call.
            let r = unsafe {
                libc::recvfrom(
                    fd,
                    self.bufs.as_mut_ptr().cast(),
                    self.size,
                    libc::MSG_DONTWAIT,
                    (&mut self.addrs[0] as *mut libc::sockaddr_storage).cast(),
                    &mut namelen,
                )
            };
            if r < 0 {
                if retry_after_error()? {
                    continue;
                }
                return Ok(0);
            }
            let len = r as usize;
            if len > self.max_datagram {
                counters.truncated += 1;
                continue;
            }
            let Some(from) = sockaddr::read(&self.addrs[0], namelen) else {
                continue;
            };
            counters.received += 1;
            on_recv(&self.bufs[..len], from);
            return Ok(1);
        }
    }

    /// `recvmmsg` until the socket is empty.
    fn recv_batches(
        &mut self,
        fd: RawFd,
        counters: &mut IoCounters,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        let mut n = 0;
        loop {
            for m in self.msgs.iter_mut() {
                m.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                m.msg_hdr.msg_flags = 0;
                m.msg_len = 0;
            }
            counters.syscalls += 1;
            // SAFETY: `msgs` holds RECV_BATCH headers whose name and iovec pointers point into
            // `addrs`, `iovs` and `bufs` of this value (set up in `new`, never moved: boxed),
            // with the lengths given; nothing else references them during the call.
            let r = unsafe {
                libc::recvmmsg(
                    fd,
                    self.msgs.as_mut_ptr(),
                    RECV_BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if r < 0 {
                if retry_after_error()? {
                    continue;
                }
                return Ok(n);
            }
            let got = r as usize;
            for k in 0..got {
                let m = &self.msgs[k];
                let len = m.msg_len as usize;
                if len > self.max_datagram || m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    counters.truncated += 1;
                    continue;
                }
                let Some(from) = sockaddr::read(&self.addrs[k], m.msg_hdr.msg_namelen) else {
                    continue;
                };
                counters.received += 1;
                n += 1;
                on_recv(&self.bufs[k * self.size..k * self.size + len], from);
            }
            if got < RECV_BATCH {
                return Ok(n);
            }
        }
    }
}

/// After a receive call failed: `Ok(false)` when the socket is empty, `Ok(true)` to call again
/// (interrupted, or an ICMP error from an earlier send surfacing: not ours to fail on), `Err`
/// otherwise.
fn retry_after_error() -> std::io::Result<bool> {
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) => Ok(false),
        Some(libc::EINTR) | Some(libc::ECONNREFUSED) => Ok(true),
        _ => Err(e),
    }
}

/// Waits up to `timeout` (at least 1 ms, when not zero) for `fd` to become readable.
pub(super) fn wait_readable(
    fd: RawFd,
    timeout: std::time::Duration,
    counters: &mut IoCounters,
) -> std::io::Result<()> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    counters.syscalls += 1;
    // SAFETY: pfd is a valid pollfd for the duration of the call; nfds = 1 matches.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}
