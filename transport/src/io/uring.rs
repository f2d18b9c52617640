//! UDP over io_uring: a fixed pool of receive slots kept posted (RECVMSG) and a pool of send
//! slots (SENDMSG). Sends queued during one loop iteration and the re-posted receives go to the
//! kernel in one `io_uring_enter`; completions are reaped from shared memory without a system
//! call, so a busy loop with nothing to send makes no system calls at all.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::sockaddr;
use super::{Backend, DatagramIo, IoCounters};

const RECV_SLOTS: usize = 64;
const SEND_SLOTS: usize = 256;
const RING_ENTRIES: u32 = 512;
const SEND_BIT: u64 = 1 << 63;
const CANCEL_UD: u64 = 1 << 62;

/// Checks that a ring can be created and supports the operations used here.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("probe: {e}"))?;
    for (code, name) in [
        (opcode::RecvMsg::CODE, "RECVMSG"),
        (opcode::SendMsg::CODE, "SENDMSG"),
        (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("{name} not supported"));
        }
    }
    Ok(())
}

/// One receive or send buffer with the message header that points into it.
///
/// Slots live in a `Box<[Slot]>` that is allocated once and never resized, so the pointers in
/// `iov` and `msg` (into `buf`, `iov` and `addr` of the same slot) stay valid while the slot is
/// owned by the kernel, even when the `UringUdp` value itself moves.
struct Slot {
    buf: Box<[u8]>,
    len: usize,
    iov: libc::iovec,
    addr: libc::sockaddr_storage,
    msg: libc::msghdr,
}

impl Slot {
    fn new(size: usize) -> Self {
        Slot {
            buf: vec![0u8; size].into_boxed_slice(),
            len: 0,
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            // SAFETY: sockaddr_storage and msghdr are plain C structs for which all-zero bytes
            // is a valid (empty) value.
            addr: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            msg: unsafe { std::mem::zeroed() },
        }
    }

    /// Points the header at this slot's own buffer and address; `data_len` bytes of buffer.
    fn arm(&mut self, data_len: usize, name_len: libc::socklen_t) {
        self.iov.iov_base = self.buf.as_mut_ptr().cast();
        self.iov.iov_len = data_len;
        self.msg.msg_name = (&mut self.addr as *mut libc::sockaddr_storage).cast();
        self.msg.msg_namelen = name_len;
        self.msg.msg_iov = &mut self.iov;
        self.msg.msg_iovlen = 1;
        self.msg.msg_control = std::ptr::null_mut();
        self.msg.msg_controllen = 0;
        self.msg.msg_flags = 0;
    }
}

/// A UDP socket driven through io_uring.
pub struct UringUdp {
    // Declared first so it is dropped first; `Drop` has already waited for every operation that
    // referenced the slots below, see `drain_for_drop`.
    ring: IoUring,
    socket: UdpSocket,
    recv: Box<[Slot]>,
    send: Box<[Slot]>,
    free_send: Vec<usize>,
    /// Receive slots whose completion arrived and has not been delivered yet: (slot, result).
    ready: VecDeque<(usize, i32)>,
    recv_inflight: usize,
    send_inflight: usize,
    max_datagram: usize,
    counters: IoCounters,
}

// SAFETY: the raw pointers inside the slots point only into heap memory owned by this value (the
// boxed slot arrays), so moving the whole value to another thread moves their targets with it;
// nothing is shared with other threads except the kernel, which the ring mediates.
unsafe impl Send for UringUdp {}

impl std::fmt::Debug for UringUdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringUdp")
            .field("socket", &self.socket)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl UringUdp {
    /// Wraps a bound socket, sets up the ring and posts all receive slots.
    pub fn new(socket: UdpSocket, max_datagram: usize) -> std::io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(RING_ENTRIES * 4)
            .build(RING_ENTRIES)?;
        let recv: Box<[Slot]> = (0..RECV_SLOTS)
            .map(|_| Slot::new(max_datagram + 1))
            .collect();
        let send: Box<[Slot]> = (0..SEND_SLOTS).map(|_| Slot::new(max_datagram)).collect();
        let mut u = UringUdp {
            ring,
            socket,
            recv,
            send,
            free_send: (0..SEND_SLOTS).rev().collect(),
            ready: VecDeque::new(),
            recv_inflight: 0,
            send_inflight: 0,
            max_datagram,
            counters: IoCounters::default(),
        };
        for i in 0..RECV_SLOTS {
            u.post_recv(i)?;
        }
        u.submit()?;
        Ok(u)
    }

    fn push(&mut self, entry: &squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: every entry pushed here references a slot of `self.recv`/`self.send` (or
            // nothing, for cancels); those slots are not touched by us until their completion is
            // reaped, and they outlive the ring (see `Drop`).
            let pushed = unsafe { self.ring.submission().push(entry) };
            if pushed.is_ok() {
                return Ok(());
            }
            self.submit()?;
        }
    }

    fn submit(&mut self) -> std::io::Result<()> {
        self.counters.syscalls += 1;
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // Completion queue full: make room, then retry.
                    self.reap_cq();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn post_recv(&mut self, i: usize) -> std::io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let slot = &mut self.recv[i];
        let cap = slot.buf.len();
        slot.arm(
            cap,
            std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        );
        let entry = opcode::RecvMsg::new(types::Fd(fd), &mut slot.msg)
            .build()
            .user_data(i as u64);
        self.recv_inflight += 1;
        self.push(&entry)
    }

    /// Moves completions out of the completion queue: send slots are freed, receive results
    /// are queued in `ready` for delivery.
    fn reap_cq(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            if ud == CANCEL_UD {
                continue;
            }
            if ud & SEND_BIT != 0 {
                let i = (ud & !SEND_BIT) as usize;
                self.send_inflight -= 1;
                self.free_send.push(i);
                if cqe.result() < 0 {
                    self.counters.send_errors += 1;
                } else {
                    self.counters.sent += 1;
                }
            } else {
                self.recv_inflight -= 1;
                self.ready.push_back((ud as usize, cqe.result()));
            }
        }
    }

    fn deliver(&mut self, on_recv: &mut dyn FnMut(&[u8], SocketAddr)) -> std::io::Result<usize> {
        let mut n = 0;
        while let Some((i, res)) = self.ready.pop_front() {
            if res >= 0 {
                let slot = &self.recv[i];
                let len = res as usize;
                if slot.msg.msg_flags & libc::MSG_TRUNC != 0 || len > self.max_datagram {
                    self.counters.truncated += 1;
                } else if let Some(from) = sockaddr::read(&slot.addr, slot.msg.msg_namelen) {
                    self.counters.received += 1;
                    n += 1;
                    // The kernel finished with this slot (its completion was reaped), so reading
                    // the buffer is ordinary safe code.
                    on_recv(&slot.buf[..len], from);
                }
            }
            // Errors (e.g. ICMP-reported ECONNREFUSED) are transient for UDP: re-post.
            self.post_recv(i)?;
        }
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        self.counters.syscalls += 1;
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Cancels every outstanding operation and waits for all of their completions, so no
    /// kernel-side reference to a slot survives. Returns false if that could not be confirmed.
    fn drain_for_drop(&mut self) -> bool {
        let fd = self.socket.as_raw_fd();
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(CANCEL_UD);
        if self.push(&cancel).is_err() {
            return false;
        }
        for _ in 0..1000 {
            if self.recv_inflight == 0 && self.send_inflight == 0 {
                return true;
            }
            if self.wait(Duration::from_millis(10)).is_err() {
                return false;
            }
            self.reap_cq();
        }
        self.recv_inflight == 0 && self.send_inflight == 0
    }
}

impl Drop for UringUdp {
    fn drop(&mut self) {
        if !self.drain_for_drop() {
            // The kernel may still write into the slots: leak them rather than free memory it
            // could touch. Happens only if the ring itself fails.
            let recv = std::mem::take(&mut self.recv);
            let send = std::mem::take(&mut self.send);
            std::mem::forget(recv);
            std::mem::forget(send);
        }
    }
}

impl DatagramIo for UringUdp {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        if data.len() > self.max_datagram {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "datagram larger than max_datagram",
            ));
        }
        while self.free_send.is_empty() {
            // All send slots are with the kernel: submit and wait for one to come back.
            self.wait(Duration::from_millis(10))?;
            self.reap_cq();
        }
        let i = self.free_send.pop().unwrap_or_else(|| unreachable!());
        let fd = self.socket.as_raw_fd();
        let slot = &mut self.send[i];
        slot.buf[..data.len()].copy_from_slice(data);
        slot.len = data.len();
        let name_len = sockaddr::write(&to, &mut slot.addr);
        slot.arm(data.len(), name_len);
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
            .build()
            .user_data(SEND_BIT | i as u64);
        self.send_inflight += 1;
        self.push(&entry)
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        self.reap_cq();
        let mut n = self.deliver(on_recv)?;
        if n == 0 && !timeout.is_zero() {
            // One system call both submits what is queued and waits for the next completion.
            self.wait(timeout)?;
            self.reap_cq();
            n = self.deliver(on_recv)?;
        }
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        Ok(())
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn backend(&self) -> Backend {
        Backend::Uring
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }

    fn recv_buffer_size(&self) -> Option<usize> {
        socket2::SockRef::from(&self.socket).recv_buffer_size().ok()
    }
}
