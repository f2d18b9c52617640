//! Replication over TCP: handshake with the receiver's resume position, batched DATA, STATUS for
//! flow control and acknowledgements, reconnection with exponential backoff and jitter.
//!
//! TCP delivers in order, so no NAKs are needed; after a reconnection the sender resumes at the
//! position the receiver reports, so nothing is lost or written twice. The bytes move through
//! io_uring (`crate::io::uring_tcp`) when the kernel allows it, else through plain non-blocking
//! sockets and `poll(2)` ([`crate::io::Backend`] chooses; `Auto` falls back with a logged
//! warning).

pub(crate) mod framed;
pub(crate) mod io;
mod plain;
mod receiver;
mod sender;
mod session;

pub use io::uring_available;
pub use receiver::{TcpReceiver, TcpReceiverConfig};
pub use sender::{Backoff, TcpSender, TcpSenderConfig};

#[cfg(test)]
mod tests;
