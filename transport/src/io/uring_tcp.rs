//! TCP over io_uring: one ring moves the bytes of every connection of a sender or a receiver.
//!
//! - **Receive**: one multishot RECV per connection stays armed; for every chunk of bytes that
//!   arrives the kernel takes a buffer from a provided-buffer ring shared by all connections and
//!   posts a completion. The bytes are appended to the connection's read buffer (packets are
//!   reassembled there across buffer boundaries) and the buffer goes straight back to the ring.
//!   Nothing is re-posted per chunk.
//! - **Send**: at most one SEND per connection is in flight (two would be free to overtake each
//!   other on the same stream). Output queued while it is in flight accumulates and leaves in the
//!   next SEND, so a busy sender hands the kernel one large batch per completion. A short send
//!   is continued from where it stopped.
//! - **Accept**: one multishot ACCEPT on the listener.
//! - Submissions of one loop iteration go to the kernel in one `io_uring_enter`; the ring runs
//!   completions cooperatively (the kernel flags pending work instead of interrupting the
//!   thread), so a busy loop enters the kernel only when there is something to submit or to
//!   complete. Everything is submitted by the thread that polls, so its completions run there.
//! - **Lifetimes**: a connection removed by its owner is cancelled and kept (socket, buffers)
//!   until the kernel has completed every operation that referred to it; dropping the whole
//!   value cancels everything and waits for those completions before freeing any buffer.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;
use super::{Backend, IoCounters};
use crate::tcp::framed::Framed;
use crate::tcp::io::{configure, copy_error, insert_slot, ConnId, RecvBuffers, StreamIo};

const RING_ENTRIES: u32 = 256;
/// Buffer group id of the receive buffers.
const GROUP: u16 = 0;
/// user_data: operation kind in the top byte, connection index below.
const KIND_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;
const SEND: u64 = 1;
const RECV: u64 = 2;
const ACCEPT: u64 = 3;
const CANCEL: u64 = 4;

/// Checks that a ring can be created and supports the operations used here.
pub fn probe() -> Result<(), String> {
    let ring = IoUring::new(8).map_err(|e| format!("io_uring_setup: {e}"))?;
    let mut p = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut p)
        .map_err(|e| format!("probe: {e}"))?;
    for (code, name) in [
        (opcode::Send::CODE, "SEND"),
        (opcode::RecvMulti::CODE, "RECV"),
        (opcode::AcceptMulti::CODE, "ACCEPT"),
        (opcode::AsyncCancel2::CODE, "ASYNC_CANCEL"),
        // Multishot RECV came with Linux 6.0, as did SEND_ZC: its presence stands for it.
        (opcode::SendZc::CODE, "multishot RECV (Linux 6.0)"),
    ] {
        if !p.is_supported(code) {
            return Err(format!("{name} not supported"));
        }
    }
    Ok(())
}

fn user_data(kind: u64, index: usize) -> u64 {
    (kind << KIND_SHIFT) | index as u64
}

struct Conn {
    stream: TcpStream,
    framed: Framed,
    /// Output handed to the kernel. From the submission of a SEND until its completion the
    /// kernel reads this vector's heap buffer, so it is neither written nor resized meanwhile
    /// (new output goes to `framed.wbuf`); it is swapped with `framed.wbuf` only when no SEND
    /// is in flight.
    inflight: Vec<u8>,
    /// Bytes at the front of `inflight` the kernel has sent.
    done: usize,
    /// A SEND is in flight.
    sending: bool,
    /// The multishot RECV is armed.
    recv_armed: bool,
    error: Option<std::io::Error>,
    /// Removed by the owner: cancelled, released once `sending` and `recv_armed` are false.
    closing: bool,
}

impl Conn {
    fn live(&self) -> bool {
        !self.closing && self.error.is_none()
    }
}

/// TCP connections driven through one io_uring.
pub(crate) struct UringTcp {
    // Declared first so it is dropped first; `Drop` has already waited for every operation that
    // referenced the buffers below (see `drain_for_drop`).
    ring: IoUring,
    /// Receive buffers; registered with the ring, dropped after it.
    bufs: BufRing,
    conns: Vec<Option<Conn>>,
    listener: Option<TcpListener>,
    accept_armed: bool,
    accepted: Vec<(ConnId, SocketAddr)>,
    counters: IoCounters,
    /// The kernel flags pending completions instead of interrupting the thread.
    coop: bool,
}

// SAFETY: the raw pointers inside the buffer ring point into heap memory owned by this value, and
// the kernel's references (send buffers, receive buffers) are into heap memory owned by it too,
// so moving the whole value to another thread moves their targets with it; nothing is shared
// with other threads except the kernel, which the ring mediates.
unsafe impl Send for UringTcp {}

impl UringTcp {
    /// Sets up the ring and its receive buffers. Nothing is submitted before the first
    /// [`StreamIo::poll`] or [`StreamIo::flush`], so the polling thread is the submitting task.
    pub(crate) fn new(bufs: RecvBuffers) -> std::io::Result<Self> {
        // Cooperative where the kernel allows it (see `ring::build`).
        let (ring, coop) = super::ring::build(RING_ENTRIES)?;
        let ring_bufs = BufRing::new(bufs.count, bufs.size)?;
        ring_bufs.register(&ring.submitter(), GROUP)?;
        Ok(UringTcp {
            ring,
            bufs: ring_bufs,
            conns: Vec::new(),
            listener: None,
            accept_armed: false,
            accepted: Vec::new(),
            counters: IoCounters::default(),
            coop,
        })
    }

    fn push(&mut self, entry: &squeue::Entry) -> std::io::Result<()> {
        loop {
            // SAFETY: every entry pushed here references only memory that stays valid and
            // untouched until its completion is reaped: a connection's `inflight` buffer (see
            // `Conn::inflight`), the buffer ring (freed after the ring), or nothing (RECV with
            // buffer selection, ACCEPT, cancels). Connections are released only when none of
            // their operations is outstanding, and `Drop` waits for all of them.
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
            self.reap();
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        self.counters.syscalls += 1;
        super::ring::wait(&self.ring, timeout)
    }

    /// Queues the multishot ACCEPT and RECVs that are not armed.
    fn arm(&mut self) -> std::io::Result<()> {
        if !self.accept_armed {
            if let Some(l) = &self.listener {
                let e = opcode::AcceptMulti::new(types::Fd(l.as_raw_fd()))
                    .flags(libc::SOCK_CLOEXEC)
                    .build()
                    .user_data(user_data(ACCEPT, 0));
                self.accept_armed = true;
                self.push(&e)?;
            }
        }
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if c.recv_armed || !c.live() {
                continue;
            }
            c.recv_armed = true;
            let e = opcode::RecvMulti::new(types::Fd(c.stream.as_raw_fd()), GROUP)
                .build()
                .user_data(user_data(RECV, i));
            self.push(&e)?;
        }
        Ok(())
    }

    /// Queues a SEND for every connection with output and none in flight: the rest of a short
    /// send, or everything queued since the last one.
    fn start_sends(&mut self) -> std::io::Result<()> {
        for i in 0..self.conns.len() {
            let Some(c) = self.conns[i].as_mut() else {
                continue;
            };
            if c.sending || !c.live() {
                continue;
            }
            if c.done == c.inflight.len() {
                if c.framed.wbuf.is_empty() {
                    continue;
                }
                c.inflight.clear();
                c.done = 0;
                std::mem::swap(&mut c.inflight, &mut c.framed.wbuf);
            }
            let rest = &c.inflight[c.done..];
            let len = u32::try_from(rest.len()).unwrap_or(u32::MAX);
            let e = opcode::Send::new(types::Fd(c.stream.as_raw_fd()), rest.as_ptr(), len)
                .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
                .build()
                .user_data(user_data(SEND, i));
            c.sending = true;
            self.push(&e)?;
        }
        Ok(())
    }

    /// Moves completions out of the completion queue; returns how many brought bytes, a
    /// connection, or the end of one.
    fn reap(&mut self) -> usize {
        let mut events = 0;
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let ud = cqe.user_data();
            let (kind, i) = (ud >> KIND_SHIFT, (ud & INDEX_MASK) as usize);
            let res = cqe.result();
            let flags = cqe.flags();
            match kind {
                ACCEPT => {
                    if !cqueue::more(flags) {
                        self.accept_armed = false;
                    }
                    if res >= 0 {
                        // SAFETY: a successful ACCEPT returns a new descriptor that nothing else
                        // owns; the stream takes ownership of it.
                        let s = unsafe { TcpStream::from_raw_fd(res) };
                        match s.peer_addr().and_then(|peer| {
                            configure(&s)?;
                            Ok(peer)
                        }) {
                            Ok(peer) => {
                                let id = insert(&mut self.conns, s);
                                self.accepted.push((id, peer));
                                events += 1;
                            }
                            Err(e) => log::warn!("accepted connection unusable: {e}"),
                        }
                    } else if res != -libc::ECANCELED {
                        log::warn!("accept: {}", std::io::Error::from_raw_os_error(-res));
                    }
                }
                SEND => {
                    let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) else {
                        continue;
                    };
                    c.sending = false;
                    self.counters.sent += 1;
                    if res >= 0 {
                        c.done = (c.done + res as usize).min(c.inflight.len());
                    } else if c.live() {
                        c.error = Some(std::io::Error::from_raw_os_error(-res));
                        events += 1;
                    }
                }
                RECV => {
                    let bid = cqueue::buffer_select(flags);
                    if let Some(c) = self.conns.get_mut(i).and_then(Option::as_mut) {
                        if !cqueue::more(flags) {
                            c.recv_armed = false;
                        }
                        // Completions of a removed or failed connection only give their
                        // buffer back (below).
                        match (res, bid) {
                            _ if !c.live() => {}
                            (n, Some(bid)) if n > 0 => {
                                c.framed.received(self.bufs.buffer(bid, n as usize));
                                self.counters.received += 1;
                                events += 1;
                            }
                            (0, _) => {
                                c.error = Some(std::io::ErrorKind::UnexpectedEof.into());
                                events += 1;
                            }
                            // Out of buffers (re-armed once they are back) or cancelled.
                            (n, _) if n == -libc::ENOBUFS || n == -libc::ECANCELED => {}
                            (n, _) if n < 0 => {
                                c.error = Some(std::io::Error::from_raw_os_error(-n));
                                events += 1;
                            }
                            _ => {}
                        }
                    }
                    if let Some(bid) = bid {
                        self.bufs.recycle(bid);
                    }
                }
                _ => {} // CANCEL: its target's completion is what counts.
            }
        }
        drop(cq);
        // Removed connections whose operations have all completed can go now.
        for slot in &mut self.conns {
            if slot
                .as_ref()
                .is_some_and(|c| c.closing && !c.sending && !c.recv_armed)
            {
                *slot = None;
            }
        }
        events
    }

    fn outstanding(&self) -> bool {
        self.accept_armed
            || self
                .conns
                .iter()
                .flatten()
                .any(|c| c.sending || c.recv_armed)
    }

    /// Cancels every outstanding operation and waits for all of their completions, so no
    /// kernel-side reference to a buffer survives. Returns false if that could not be confirmed.
    fn drain_for_drop(&mut self) -> bool {
        if !self.outstanding() {
            return true;
        }
        for c in self.conns.iter_mut().flatten() {
            c.closing = true;
        }
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
            .build()
            .user_data(user_data(CANCEL, 0));
        if self.push(&cancel).is_err() {
            return false;
        }
        for _ in 0..1000 {
            if self.wait(Duration::from_millis(10)).is_err() {
                return false;
            }
            self.reap();
            if !self.outstanding() {
                return true;
            }
        }
        false
    }
}

/// Puts `stream` in the first free slot.
fn insert(conns: &mut Vec<Option<Conn>>, stream: TcpStream) -> ConnId {
    let c = Conn {
        stream,
        framed: Framed::new(),
        inflight: Vec::with_capacity(256 << 10),
        done: 0,
        sending: false,
        recv_armed: false,
        error: None,
        closing: false,
    };
    insert_slot(conns, c)
}

impl Drop for UringTcp {
    fn drop(&mut self) {
        if !self.drain_for_drop() {
            // The kernel may still read or write these buffers: leak them rather than free
            // memory it could touch. Happens only if the ring itself fails.
            self.bufs.leak();
            std::mem::forget(std::mem::take(&mut self.conns));
        }
    }
}

impl StreamIo for UringTcp {
    fn add(&mut self, stream: TcpStream) -> std::io::Result<ConnId> {
        configure(&stream)?;
        Ok(insert(&mut self.conns, stream))
    }

    fn listen(&mut self, listener: TcpListener) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        self.listener = Some(listener);
        Ok(())
    }

    fn accept(&mut self) -> Option<(ConnId, SocketAddr)> {
        self.accepted.pop()
    }

    fn framed(&mut self, id: ConnId) -> &mut Framed {
        &mut self.conns[id]
            .as_mut()
            .unwrap_or_else(|| panic!("connection {id} was removed"))
            .framed
    }

    fn pending_write(&self, id: ConnId) -> usize {
        self.conns[id]
            .as_ref()
            .map_or(0, |c| c.framed.wbuf.len() + c.inflight.len() - c.done)
    }

    fn error(&self, id: ConnId) -> Option<std::io::Error> {
        self.conns[id]
            .as_ref()
            .and_then(|c| c.error.as_ref())
            .map(copy_error)
    }

    fn remove(&mut self, id: ConnId) {
        let Some(c) = self.conns[id].as_mut() else {
            return;
        };
        if !c.sending && !c.recv_armed {
            self.conns[id] = None;
            return;
        }
        c.closing = true;
        // Ends a receive or a send stuck on a full socket buffer even before the cancel runs.
        let _ = c.stream.shutdown(std::net::Shutdown::Both);
        let cancel = opcode::AsyncCancel2::new(
            types::CancelBuilder::fd(types::Fd(c.stream.as_raw_fd())).all(),
        )
        .build()
        .user_data(user_data(CANCEL, id));
        if let Err(e) = self.push(&cancel) {
            // The shutdown above still ends both operations; the slot is released when they
            // complete.
            log::warn!("io_uring cancel: {e}");
        }
    }

    fn poll(&mut self, timeout: Duration) -> std::io::Result<usize> {
        self.arm()?;
        self.start_sends()?;
        if !self.ring.submission().is_empty() || (self.coop && self.ring.submission().taskrun()) {
            // One enter submits what is queued and runs the completions the kernel has pending.
            self.submit()?;
        }
        let mut n = self.reap();
        if n == 0 && !timeout.is_zero() {
            self.start_sends()?;
            // One system call both submits what is queued and waits for the next completion.
            self.wait(timeout)?;
            n = self.reap();
        }
        self.arm()?;
        self.start_sends()?;
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.start_sends()?;
        if !self.ring.submission().is_empty() {
            self.submit()?;
        }
        Ok(())
    }

    fn backend(&self) -> Backend {
        Backend::Uring
    }

    fn counters(&self) -> IoCounters {
        self.counters
    }
}
