//! The buffers of one TCP connection carrying wire packets back to back (the header's body
//! length frames them): received bytes not yet parsed, and output not yet handed to the kernel.
//! Which system calls move the bytes is the business of a [`super::io::StreamIo`] backend.

use crate::wire::{peek_packet_len, WireError};

/// Unparsed bytes beyond this are compacted to the front of the read buffer.
const COMPACT_AT: usize = 1 << 20;

/// Read and write buffers of one connection.
#[derive(Debug, Default)]
pub(crate) struct Framed {
    rbuf: Vec<u8>,
    rstart: usize,
    /// Encoded packets waiting to be handed to the kernel; senders append here.
    pub(crate) wbuf: Vec<u8>,
}

impl Framed {
    pub(crate) fn new() -> Self {
        Framed {
            rbuf: Vec::with_capacity(256 << 10),
            rstart: 0,
            wbuf: Vec::with_capacity(256 << 10),
        }
    }

    /// Appends received bytes. A packet may straddle several calls: the bytes are kept until
    /// [`Framed::next_packet`] finds a whole one.
    pub(crate) fn received(&mut self, bytes: &[u8]) {
        if self.rstart > 0 && self.rstart == self.rbuf.len() {
            self.rbuf.clear();
            self.rstart = 0;
        } else if self.rstart > COMPACT_AT {
            self.rbuf.drain(..self.rstart);
            self.rstart = 0;
        }
        self.rbuf.extend_from_slice(bytes);
    }

    /// Bytes received and not yet returned as packets.
    pub(crate) fn unparsed(&self) -> usize {
        self.rbuf.len() - self.rstart
    }

    /// The next complete packet's bytes, if buffered. A malformed header poisons the stream.
    pub(crate) fn next_packet(&mut self) -> Result<Option<&[u8]>, WireError> {
        let avail = &self.rbuf[self.rstart..];
        match peek_packet_len(avail)? {
            Some(n) if avail.len() >= n => {
                let s = self.rstart;
                self.rstart += n;
                Ok(Some(&self.rbuf[s..s + n]))
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode, Heartbeat, Packet};

    #[test]
    fn packets_straddling_receive_boundaries_are_reassembled() {
        let mut wire = Vec::new();
        for i in 0..50u64 {
            let hb = Packet::Heartbeat(Heartbeat {
                tail: i * 8,
                timestamp_ns: i,
            });
            encode(&hb, 7, None, &mut wire).unwrap();
        }
        // Every chunk size from 1 byte up cuts packets at different places.
        for chunk in [1usize, 3, 7, 31, 32, 33, 1000] {
            let mut f = Framed::new();
            let mut tails = Vec::new();
            for c in wire.chunks(chunk) {
                f.received(c);
                while let Some(p) = f.next_packet().unwrap() {
                    match crate::wire::decode(p, None).unwrap().1 {
                        Packet::Heartbeat(h) => tails.push(h.tail),
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            assert_eq!(tails, (0..50u64).map(|i| i * 8).collect::<Vec<_>>());
            assert_eq!(f.unparsed(), 0);
        }
    }

    #[test]
    fn a_malformed_header_is_an_error() {
        let mut f = Framed::new();
        f.received(&[0xff; 64]);
        assert!(f.next_packet().is_err());
    }
}
