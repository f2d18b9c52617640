//! Replication over TCP: handshake with the receiver's resume position, batched DATA, STATUS for
//! flow control and acknowledgements, reconnection with exponential backoff and jitter.
//!
//! TCP delivers in order, so no NAKs are needed; after a reconnection the sender resumes at the
//! position the receiver reports, so nothing is lost or written twice. This path uses ordinary
//! non-blocking sockets with `poll(2)` (no io_uring).

mod framed;
mod receiver;
mod sender;

pub use receiver::{TcpReceiver, TcpReceiverConfig};
pub use sender::{Backoff, TcpSender, TcpSenderConfig};

#[cfg(test)]
mod tests;
