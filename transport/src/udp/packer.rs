//! Packs consecutive frames into DATA packets up to the MTU; splits frames too large for one
//! packet into fragments.

use std::net::SocketAddr;
use std::ops::Range;

use super::sent::SentPackets;
use crate::auth::AuthKey;
use crate::frame::align8;
use crate::io::DatagramIo;
use crate::wire::{encode, Data, DataPacketBuilder, Packet, DATA_FIXED_LEN, HEADER_LEN, MAC_LEN};

/// One finished packet: its bytes in the buffer and the frames it carries.
#[derive(Debug)]
struct Packed {
    bytes: Range<usize>,
    start: u64,
    end: u64,
    /// Recorded in the sent-packet copies when flushed.
    keep: bool,
}

/// Builds DATA packets into one buffer and sends them in a batch.
#[derive(Debug)]
pub(crate) struct Packer {
    buf: Vec<u8>,
    packets: Vec<Packed>,
    open: Option<(usize, u64, DataPacketBuilder)>,
    /// Whether packets built from now on are kept (first transmissions) or not (retransmissions).
    keep: bool,
    session: u32,
    mtu: usize,
    key: Option<AuthKey>,
}

impl Packer {
    pub(crate) fn new(session: u32, mtu: usize, key: Option<AuthKey>) -> Self {
        Packer {
            buf: Vec::with_capacity(64 * mtu),
            packets: Vec::new(),
            open: None,
            keep: false,
            session,
            mtu,
            key,
        }
    }

    fn mac_len(&self) -> usize {
        if self.key.is_some() {
            MAC_LEN
        } else {
            0
        }
    }

    /// Packets built from now on are recorded when flushed (`true`) or not.
    pub(crate) fn set_keep(&mut self, keep: bool) {
        if keep != self.keep {
            self.close();
            self.keep = keep;
        }
    }

    /// Bytes of frame data one packet can carry.
    pub(crate) fn capacity(&self) -> usize {
        self.mtu - HEADER_LEN - DATA_FIXED_LEN - self.mac_len()
    }

    /// Adds the frame `raw` at `position`.
    pub(crate) fn add(&mut self, position: u64, raw: &[u8]) {
        let cap = self.capacity();
        if raw.len() > cap {
            self.close();
            for (i, chunk) in raw.chunks(cap).enumerate() {
                let start = self.buf.len();
                let p = Packet::Data(Data {
                    position,
                    frag_offset: (i * cap) as u32,
                    frame_len: raw.len() as u32,
                    bytes: chunk,
                    fragment: true,
                });
                // Cannot fail: a DATA body is never larger than the MTU here.
                if encode(&p, self.session, self.key.as_ref(), &mut self.buf).is_ok() {
                    self.packets.push(Packed {
                        bytes: start..self.buf.len(),
                        start: position,
                        end: position + align8(raw.len() as u64),
                        keep: self.keep,
                    });
                }
            }
            return;
        }
        let limit = self.mtu - self.mac_len();
        if let Some((_, _, b)) = &self.open {
            if b.next_position() != position || b.len(&self.buf) + raw.len() > limit {
                self.close();
            }
        }
        let (_, _, b) = self.open.get_or_insert_with(|| {
            let start = self.buf.len();
            (
                start,
                position,
                DataPacketBuilder::begin(&mut self.buf, self.session, position),
            )
        });
        b.push_frame(&mut self.buf, raw);
    }

    /// Completes the packet being filled.
    pub(crate) fn close(&mut self) {
        if let Some((at, first, b)) = self.open.take() {
            let end = b.next_position();
            b.finish(&mut self.buf, self.key.as_ref());
            self.packets.push(Packed {
                bytes: at..self.buf.len(),
                start: first,
                end,
                keep: self.keep,
            });
        }
    }

    /// Packets complete or open.
    pub(crate) fn pending(&self) -> usize {
        self.packets.len() + usize::from(self.open.is_some())
    }

    /// Sends every packet to each address of `to` (all packets to the first, then all to the
    /// next, so runs of equal-length datagrams to one address stay together), recording the
    /// kept ones in `sent` once; returns how many packets. The packets are handed to the kernel
    /// ([`DatagramIo::flush`]) before they are recorded, so copying them is not on their way.
    pub(crate) fn flush(
        &mut self,
        io: &mut dyn DatagramIo,
        to: &[SocketAddr],
        sent: &mut SentPackets,
    ) -> std::io::Result<usize> {
        self.close();
        let n = self.packets.len();
        for &addr in to {
            for p in &self.packets {
                io.send_to(&self.buf[p.bytes.clone()], addr)?;
            }
        }
        if n > 0 {
            io.flush()?;
        }
        for p in self.packets.drain(..) {
            if p.keep {
                sent.push(p.start, p.end, &self.buf[p.bytes]);
            }
        }
        self.buf.clear();
        Ok(n)
    }

    /// Appends every packet to a byte stream (TCP); returns how many.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<u8>) -> usize {
        self.close();
        let n = self.packets.len();
        out.extend_from_slice(&self.buf);
        self.packets.clear();
        self.buf.clear();
        n
    }

    /// Drops everything not yet sent.
    pub(crate) fn discard(&mut self) {
        self.open = None;
        self.packets.clear();
        self.buf.clear();
    }
}
