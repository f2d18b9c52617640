//! UDP over io_uring: one multishot RECVMSG that takes a buffer from a provided-buffer ring for
//! every datagram (nothing is re-posted per datagram), and a pool of send slots (SENDMSG). Sends
//! queued during one loop iteration go to the kernel in one `io_uring_enter`; completions are
//! reaped from shared memory, and the ring runs cooperatively: the kernel flags pending receive
//! work instead of interrupting the thread, so a busy loop enters the kernel only when there is
//! something to complete or to submit.
//!
//! Two cases go around the ring because direct calls measured cheaper there: a lone datagram
//! queued on an idle ring leaves with one non-blocking `sendto`/`sendmsg` (one system call
//! either way), and a socket opened with [`super::UdpOptions::busy_poll`] receives with direct
//! non-blocking calls in every poll instead of the multishot receive.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::direct::{self, BatchRecv, Sent};
use super::gso;
use super::sockaddr;
use super::{Backend, DatagramIo, IoCounters};

/// Receive buffers in the provided-buffer ring.
const RECV_BUFFERS: u16 = 64;
/// Buffer group id of the receive buffers.
const RECV_GROUP: u16 = 0;
/// user_data of the multishot receive.
const RECV_UD: u64 = 0;
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
        // Multishot RECVMSG came with Linux 6.0, as did SEND_ZC: its presence stands for it.
        (opcode::SendZc::CODE, "multishot RECVMSG (Linux 6.0)"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("{name} not supported"));
        }
    }
    Ok(())
}

/// One send buffer with the message header that points into it.
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
    /// Control message (UDP_SEGMENT) of a segmented send.
    ctrl: gso::ControlBuf,
    /// Destination of the datagrams in `buf`.
    to: Option<SocketAddr>,
    /// Length of each datagram in `buf` (the last may be shorter).
    seg: usize,
    /// Datagrams in `buf`.
    segs: usize,
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
            ctrl: [0; 4],
            to: None,
            seg: 0,
            segs: 0,
        }
    }

    /// Whether a datagram of `len` bytes to `to` can join this slot's segmented send: same
    /// destination, every datagram so far of the full segment length, not longer than it, and
    /// room left.
    fn can_append(&self, len: usize, to: SocketAddr) -> bool {
        self.to == Some(to)
            && len <= self.seg
            && self.len == self.seg * self.segs
            && self.segs < gso::MAX_SEGMENTS
            && self.len + len <= gso::MAX_BYTES.min(self.buf.len())
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

/// Send slot `i` is done with `result` (bytes sent, or a negative errno): it goes back to `free`
/// and the counters take the outcome. A failed segmented send turns `gso` off.
fn send_done(
    free: &mut Vec<usize>,
    slots: &[Slot],
    counters: &mut IoCounters,
    gso: &mut bool,
    i: usize,
    result: i32,
) {
    free.push(i);
    let segs = slots[i].segs as u64;
    if result < 0 {
        counters.send_errors += segs;
        if segs > 1 && *gso {
            // E.g. a device without checksum offload: the datagrams are lost (the protocol
            // recovers them) and sends go one by one from now on.
            log::warn!(
                "segmented UDP send failed ({}); sending datagrams one by one",
                std::io::Error::from_raw_os_error(-result)
            );
            *gso = false;
        }
    } else {
        counters.sent += segs;
        counters.segmented_sends += u64::from(segs > 1);
    }
}

/// A UDP socket driven through io_uring.
pub struct UringUdp {
    // Declared first so it is dropped first; `Drop` has already waited for every operation that
    // referenced the slots below, see `drain_for_drop`.
    ring: IoUring,
    socket: UdpSocket,
    /// Receive buffers; registered with the ring, dropped after it.
    bufs: BufRing,
    /// The header template of the multishot receive: only its name and control lengths matter
    /// (the kernel lays each datagram out in its buffer as header, address, payload). Boxed so
    /// its address stays fixed while the operation is armed.
    recv_msg: Box<libc::msghdr>,
    send: Box<[Slot]>,
    free_send: Vec<usize>,
    /// The send slot being filled (not yet handed to the ring).
    open: Option<usize>,
    /// Segmented sends are used (off after the kernel refused one).
    gso: bool,
    /// Receive coalescing is on: completions may carry several datagrams.
    gro: bool,
    /// Receive completions not delivered yet: (buffer id, bytes used in it).
    ready: VecDeque<(u16, usize)>,
    /// 1 while the multishot receive is armed.
    recv_inflight: usize,
    send_inflight: usize,
    max_datagram: usize,
    counters: IoCounters,
    /// The multishot receive has been submitted once (by the first `poll`).
    armed: bool,
    /// The kernel refused the multishot receive (errno, negative).
    recv_error: Option<i32>,
    /// The ring runs completions cooperatively: the kernel flags pending work in the submission
    /// ring instead of interrupting the thread, and `poll` enters the kernel only then.
    coop: bool,
    /// Busy-poll receive (see [`super::UdpOptions::busy_poll`]): datagrams are read with a
    /// direct `recvmmsg` in every `poll` and no multishot receive is armed.
    direct_rx: Option<BatchRecv>,
}

// SAFETY: the raw pointers inside the slots, the receive header and the buffer ring point only
// into heap memory owned by this value (boxed slots, boxed header, the ring's allocations), so moving the whole value to another thread moves their targets with it;
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
    /// Wraps a bound socket and sets up the ring. The receive is posted by the first
    /// [`DatagramIo::poll`], so that the thread that polls is the one that submitted them: the
    /// kernel completes an operation in the context of the task that submitted it.
    pub fn new(socket: UdpSocket, opts: &super::UdpOptions) -> std::io::Result<Self> {
        let max_datagram = opts.max_datagram;
        // Cooperative where the kernel allows it (see `ring::build`).
        let (ring, coop) = super::ring::build(RING_ENTRIES)?;
        // Each buffer holds the kernel's recvmsg header, the source address and the datagram,
        // plus one spare byte so a datagram larger than max_datagram shows as truncated.
        let bufs = BufRing::new(
            RECV_BUFFERS,
            std::mem::size_of::<io_uring::types::RecvMsgOut<'static>>().max(16)
                + std::mem::size_of::<libc::sockaddr_storage>()
                + gso::space(std::mem::size_of::<libc::c_int>())
                + max_datagram
                + 1,
        )?;
        bufs.register(&ring.submitter(), RECV_GROUP)?;
        // SAFETY: msghdr is a plain C struct; all-zero is a valid empty header.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        // Coalesced receives only when a buffer holds a whole train (up to 64 KiB); with
        // smaller buffers a train would be cut and lost.
        let gro = !opts.busy_poll
            && opts.coalesce_receive
            && max_datagram >= 65535
            && gso::enable_gro(socket.as_raw_fd());
        if gro {
            recv_msg.msg_controllen = gso::space(std::mem::size_of::<libc::c_int>());
        }
        let send: Box<[Slot]> = (0..SEND_SLOTS).map(|_| Slot::new(max_datagram)).collect();
        let u = UringUdp {
            ring,
            socket,
            bufs,
            recv_msg,
            send,
            free_send: (0..SEND_SLOTS).rev().collect(),
            open: None,
            gso: true,
            gro,
            ready: VecDeque::new(),
            recv_inflight: 0,
            send_inflight: 0,
            max_datagram,
            counters: IoCounters::default(),
            armed: false,
            coop,
            recv_error: None,
            direct_rx: opts.busy_poll.then(|| BatchRecv::new(max_datagram)),
        };
        Ok(u)
    }

    /// Posts the multishot receive, once (not at all when receiving directly).
    fn arm(&mut self) -> std::io::Result<()> {
        if !self.armed {
            self.armed = true;
            if self.direct_rx.is_none() {
                self.post_recv()?;
                self.submit()?;
            }
        }
        Ok(())
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
        while !super::ring::submit(&self.ring)? {
            // Completion queue full: make room, then retry.
            self.reap_cq();
        }
        Ok(())
    }

    fn post_recv(&mut self) -> std::io::Result<()> {
        let fd = self.socket.as_raw_fd();
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), &*self.recv_msg, RECV_GROUP)
            .build()
            .user_data(RECV_UD);
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
                self.send_inflight -= 1;
                send_done(
                    &mut self.free_send,
                    &self.send,
                    &mut self.counters,
                    &mut self.gso,
                    (ud & !SEND_BIT) as usize,
                    cqe.result(),
                );
            } else {
                let flags = cqe.flags();
                if !io_uring::cqueue::more(flags) {
                    // The multishot ended (no buffer left, an error, a cancel): re-armed after
                    // the next delivery has recycled buffers.
                    self.recv_inflight -= 1;
                }
                match (cqe.result(), io_uring::cqueue::buffer_select(flags)) {
                    (n, Some(bid)) if n >= 0 => self.ready.push_back((bid, n as usize)),
                    (n, Some(bid)) => {
                        // An error that still consumed a buffer: give it back.
                        log::debug!("io_uring receive error {n}");
                        self.bufs.recycle(bid);
                    }
                    (n, None) if n == -libc::ENOBUFS || n == -libc::ECANCELED => {}
                    (n, None) => {
                        log::debug!("io_uring receive error {n}");
                        if n == -libc::EINVAL {
                            self.recv_error = Some(n);
                        }
                    }
                }
            }
        }
    }

    /// Send slot `i` is done with `result` (bytes sent, or a negative errno): it is free again.
    fn sent(&mut self, i: usize, result: i32) {
        send_done(
            &mut self.free_send,
            &self.send,
            &mut self.counters,
            &mut self.gso,
            i,
            result,
        );
    }

    /// Hands the slot being filled to the kernel: one SENDMSG, segmented when it holds several
    /// datagrams.
    ///
    /// With `direct` set and the ring idle (nothing queued in the submission ring, no send in
    /// flight), the slot goes out with a direct non-blocking `sendmsg` instead: for a lone
    /// slot that is one system call either way, and the direct call skips the ring's
    /// submission and completion work (measured here: ~0.35 µs less per datagram on loopback).
    /// Several slots queued in one iteration still go to the kernel together in one
    /// `io_uring_enter`; a full socket buffer (`EAGAIN`) hands the slot to the ring, which waits
    /// for room. Order is kept: a direct send happens only when no ring send is outstanding.
    fn close_open(&mut self, direct: bool) -> std::io::Result<()> {
        let Some(i) = self.open.take() else {
            return Ok(());
        };
        let fd = self.socket.as_raw_fd();
        let slot = &mut self.send[i];
        let to = slot
            .to
            .unwrap_or_else(|| unreachable!("an open slot has a destination"));
        let name_len = sockaddr::write(&to, &mut slot.addr);
        slot.arm(slot.len, name_len);
        if slot.segs > 1 {
            let n = gso::write_segment(&mut slot.ctrl, slot.seg as u16);
            slot.msg.msg_control = slot.ctrl.as_mut_ptr().cast();
            slot.msg.msg_controllen = n;
        }
        if direct && self.send_inflight == 0 && self.ring.submission().is_empty() {
            self.counters.syscalls += 1;
            // SAFETY: `slot.msg` was just armed to point at this slot's own buffer (`len`
            // bytes), address and control buffer, all alive and unaliased during the call.
            match unsafe { direct::send_msg(fd, &slot.msg) } {
                Sent::Done => {
                    self.sent(i, 0);
                    return Ok(());
                }
                Sent::Failed(e) => {
                    self.sent(i, -e);
                    return Ok(());
                }
                Sent::WouldBlock => {}
            }
        }
        let slot = &self.send[i];
        let entry = opcode::SendMsg::new(types::Fd(fd), &slot.msg)
            .build()
            .user_data(SEND_BIT | i as u64);
        self.send_inflight += 1;
        self.push(&entry)
    }

    fn deliver(&mut self, on_recv: &mut dyn FnMut(&[u8], SocketAddr)) -> std::io::Result<usize> {
        let mut n = 0;
        while let Some((bid, len)) = self.ready.pop_front() {
            let buf = self.bufs.buffer(bid, len);
            match io_uring::types::RecvMsgOut::parse(buf, &self.recv_msg) {
                Ok(m) if m.is_payload_truncated() || m.payload_data().len() > self.max_datagram => {
                    self.counters.truncated += 1;
                }
                Ok(m) => {
                    // SAFETY: sockaddr_storage is a plain C struct; all-zero is a valid value.
                    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
                    let name = m.name_data();
                    let k = name
                        .len()
                        .min(std::mem::size_of::<libc::sockaddr_storage>());
                    // SAFETY: copies k <= size_of(sockaddr_storage) bytes into a local of that
                    // size; the source slice has at least k bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            name.as_ptr(),
                            (&mut addr as *mut libc::sockaddr_storage).cast::<u8>(),
                            k,
                        )
                    };
                    if let Some(from) = sockaddr::read(&addr, m.incoming_name_len()) {
                        let data = m.payload_data();
                        let seg = match self.gro {
                            true => gso::gro_segment(m.control_data()).unwrap_or(data.len()),
                            false => data.len(),
                        };
                        for d in data.chunks(seg.max(1)) {
                            self.counters.received += 1;
                            n += 1;
                            on_recv(d, from);
                        }
                    }
                }
                Err(()) => self.counters.truncated += 1,
            }
            self.bufs.recycle(bid);
        }
        if let Some(e) = self.recv_error {
            return Err(std::io::Error::from_raw_os_error(-e));
        }
        if self.armed && self.recv_inflight == 0 && self.direct_rx.is_none() {
            self.post_recv()?;
        }
        Ok(n)
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.counters.syscalls += 1;
        super::ring::wait(&self.ring, timeout)
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
            self.bufs.leak();
            let send = std::mem::take(&mut self.send);
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
        if let Some(i) = self.open {
            let slot = &mut self.send[i];
            if self.gso && slot.can_append(data.len(), to) {
                slot.buf[slot.len..slot.len + data.len()].copy_from_slice(data);
                slot.len += data.len();
                slot.segs += 1;
                return Ok(());
            }
            self.close_open(false)?;
        }
        while self.free_send.is_empty() {
            // All send slots are with the kernel: submit and wait for one to come back.
            self.wait(Duration::from_millis(10))?;
            self.reap_cq();
        }
        let i = self.free_send.pop().unwrap_or_else(|| unreachable!());
        let slot = &mut self.send[i];
        slot.buf[..data.len()].copy_from_slice(data);
        slot.len = data.len();
        slot.to = Some(to);
        slot.seg = data.len();
        slot.segs = 1;
        self.open = Some(i);
        Ok(())
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        self.arm()?;
        self.close_open(true)?;
        if self.coop && self.ring.submission().taskrun() {
            // Completions are pending in the kernel: one enter (with GETEVENTS) runs them and
            // submits whatever is queued.
            self.submit()?;
        }
        self.reap_cq();
        let mut n = self.deliver(on_recv)?;
        if let Some(rx) = self.direct_rx.as_mut() {
            let fd = self.socket.as_raw_fd();
            n += rx.drain(fd, &mut self.counters, on_recv)?;
            if n == 0 && !timeout.is_zero() {
                if !self.ring.submission().is_empty() {
                    self.submit()?;
                }
                direct::wait_readable(fd, timeout, &mut self.counters)?;
                if let Some(rx) = self.direct_rx.as_mut() {
                    n += rx.drain(fd, &mut self.counters, on_recv)?;
                }
            }
        } else if n == 0 && !timeout.is_zero() {
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
        self.close_open(true)?;
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
