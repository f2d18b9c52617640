//! Byte-stream I/O for the TCP path: one object moves the bytes of every connection of a sender
//! or a receiver (and accepts new ones), through io_uring when the kernel allows it, through
//! plain non-blocking sockets and `poll(2)` otherwise.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::framed::Framed;
use crate::io::{Backend, IoCounters};

/// Index of a connection inside one [`StreamIo`].
pub(crate) type ConnId = usize;

/// Moves the bytes of a set of TCP connections.
///
/// Output is encoded into [`Framed::wbuf`] of a connection and leaves at the latest with the next
/// [`StreamIo::flush`] or [`StreamIo::poll`]; input is appended to the connection's read buffer
/// by [`StreamIo::poll`]. A connection whose peer closed it, or whose socket failed, reports that
/// through [`StreamIo::error`] and moves no more bytes; the owner then removes it.
pub(crate) trait StreamIo: Send {
    /// Takes a connected socket.
    fn add(&mut self, stream: TcpStream) -> std::io::Result<ConnId>;
    /// Accepts connections on `listener` from now on; they come out of [`StreamIo::accept`].
    fn listen(&mut self, listener: TcpListener) -> std::io::Result<()>;
    /// A connection accepted since the last call, already added.
    fn accept(&mut self) -> Option<(ConnId, SocketAddr)>;
    /// The buffers of `id`.
    fn framed(&mut self, id: ConnId) -> &mut Framed;
    /// Bytes of `id` queued or in flight, not yet taken by the kernel.
    fn pending_write(&self, id: ConnId) -> usize;
    /// Why `id` is finished (the peer closed it: `UnexpectedEof`), if it is.
    fn error(&self, id: ConnId) -> Option<std::io::Error>;
    /// Stops moving bytes for `id` and releases it (at once, or once the kernel has let go of
    /// its buffers).
    fn remove(&mut self, id: ConnId);
    /// Hands queued output to the kernel and collects whatever has arrived (bytes, accepted
    /// connections, closes). When nothing has, waits up to `timeout` for something
    /// (`Duration::ZERO`: never blocks). Returns the number of events collected.
    fn poll(&mut self, timeout: Duration) -> std::io::Result<usize>;
    /// Hands queued output to the kernel now.
    fn flush(&mut self) -> std::io::Result<()>;
    /// Which backend this is (never [`Backend::Auto`]).
    fn backend(&self) -> Backend;
    /// Counters so far: `sent` counts send operations completed, `received` receive
    /// completions (each carrying as many bytes as had arrived), `syscalls` the system calls.
    fn counters(&self) -> IoCounters;
}

/// Sizes of the receive buffers of an io_uring backend.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecvBuffers {
    /// Buffers in the provided-buffer ring (a power of two).
    pub(crate) count: u16,
    /// Bytes per buffer.
    pub(crate) size: usize,
}

/// Whether the TCP path can use io_uring here: a ring can be created and it supports SEND,
/// multishot RECV and ACCEPT with provided buffers, and cancellation by file descriptor.
pub fn uring_available() -> Result<(), String> {
    crate::io::uring_tcp::probe()
}

/// Resolves [`Backend::Auto`] once, logging a warning when io_uring is unavailable.
pub(crate) fn resolve(backend: Backend) -> Backend {
    match backend {
        Backend::Auto => match uring_available() {
            Ok(()) => Backend::Uring,
            Err(why) => {
                log::warn!(
                    "io_uring unavailable for TCP ({why}); using plain non-blocking sockets"
                );
                Backend::Plain
            }
        },
        b => b,
    }
}

/// Opens the stream I/O for `backend` ([`Backend::Auto`] falls back to plain sockets, with a
/// logged warning, when io_uring is unavailable or its set-up fails).
pub(crate) fn open(backend: Backend, bufs: RecvBuffers) -> std::io::Result<Box<dyn StreamIo>> {
    match backend {
        Backend::Plain => Ok(Box::new(super::plain::PlainTcp::new())),
        Backend::Uring => Ok(Box::new(crate::io::uring_tcp::UringTcp::new(bufs)?)),
        Backend::Auto => match resolve(Backend::Auto) {
            Backend::Uring => match crate::io::uring_tcp::UringTcp::new(bufs) {
                Ok(u) => Ok(Box::new(u)),
                Err(e) => {
                    log::warn!(
                        "io_uring set-up for TCP failed ({e}); using plain non-blocking sockets"
                    );
                    Ok(Box::new(super::plain::PlainTcp::new()))
                }
            },
            _ => Ok(Box::new(super::plain::PlainTcp::new())),
        },
    }
}

/// A copy of a connection's error (it stays recorded: the connection stays finished).
pub(crate) fn copy_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Puts `item` in the first free slot of `slots` (a connection table); returns its index.
pub(crate) fn insert_slot<T>(slots: &mut Vec<Option<T>>, item: T) -> usize {
    match slots.iter().position(Option::is_none) {
        Some(i) => {
            slots[i] = Some(item);
            i
        }
        None => {
            slots.push(Some(item));
            slots.len() - 1
        }
    }
}

/// Socket options every connection gets, whichever backend moves its bytes.
pub(crate) fn configure(stream: &TcpStream) -> std::io::Result<()> {
    stream.set_nonblocking(true)?;
    stream.set_nodelay(true)
}
