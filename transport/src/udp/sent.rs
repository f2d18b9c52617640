//! Copies of the DATA packets sent and not yet acknowledged, so that a NAKed range is answered by
//! sending the same packets again instead of reading the journal: opening a journal reader at an
//! arbitrary position walks its segment from the start, which costs far more than the copy.
//!
//! The journal stays the retransmit buffer for everything else (a receiver resuming after an
//! outage, a range no longer held here): [`SentPackets::send_range`] answers only ranges it
//! covers completely.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::io::DatagramIo;

#[derive(Debug)]
struct Entry {
    /// Position of the first frame the packet carries.
    start: u64,
    /// Position after its last frame.
    end: u64,
    packet: Vec<u8>,
}

/// Sent packets in position order, bounded in bytes.
#[derive(Debug, Default)]
pub(crate) struct SentPackets {
    entries: VecDeque<Entry>,
    bytes: usize,
    capacity: usize,
    free: Vec<Vec<u8>>,
}

impl SentPackets {
    /// Holds at most `capacity` bytes of packets (the oldest go first).
    pub(crate) fn new(capacity: usize) -> Self {
        SentPackets {
            capacity,
            ..Default::default()
        }
    }

    /// Raises the byte bound (the receiver's window grew).
    pub(crate) fn reserve(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    /// Records a packet carrying frames `[start, end)` (the fragments of one large frame all
    /// carry the same range); packets must come in position order (when one does not, everything
    /// before it is forgotten).
    pub(crate) fn push(&mut self, start: u64, end: u64, packet: &[u8]) {
        let follows = |e: &Entry| e.end == start || (e.start == start && e.end == end);
        if self.entries.back().is_some_and(|e| !follows(e)) {
            self.clear();
        }
        while self.bytes + packet.len() > self.capacity {
            let Some(e) = self.entries.pop_front() else {
                return; // larger than the whole bound
            };
            // The other fragments of a frame go with it: a frame is answered whole or not at all.
            let frame = e.start;
            self.recycle(e);
            while self.entries.front().is_some_and(|f| f.start == frame) {
                if let Some(f) = self.entries.pop_front() {
                    self.recycle(f);
                }
            }
            if self.entries.is_empty() && start == frame {
                return; // this packet's own frame lost its first fragments
            }
        }
        let mut v = self.free.pop().unwrap_or_default();
        v.clear();
        v.extend_from_slice(packet);
        self.bytes += v.len();
        self.entries.push_back(Entry {
            start,
            end,
            packet: v,
        });
    }

    fn recycle(&mut self, e: Entry) {
        self.bytes -= e.packet.len();
        if self.free.len() < 4096 {
            self.free.push(e.packet);
        }
    }

    /// Forgets packets whose frames all lie before `acked`.
    pub(crate) fn release(&mut self, acked: u64) {
        while self.entries.front().is_some_and(|e| e.end <= acked) {
            if let Some(e) = self.entries.pop_front() {
                self.recycle(e);
            }
        }
    }

    /// Forgets everything.
    pub(crate) fn clear(&mut self) {
        while let Some(e) = self.entries.pop_front() {
            self.recycle(e);
        }
    }

    /// Sends again every packet overlapping `[start, end)` if together they cover it; returns
    /// the packets and bytes sent, or `None` (nothing sent) when they do not.
    pub(crate) fn send_range(
        &self,
        start: u64,
        end: u64,
        io: &mut dyn DatagramIo,
        to: SocketAddr,
    ) -> std::io::Result<Option<(usize, usize)>> {
        let first = self.entries.partition_point(|e| e.end <= start);
        let mut covered = match self.entries.get(first) {
            Some(e) if e.start <= start => e.start,
            _ => return Ok(None),
        };
        let mut last = first;
        for e in self.entries.range(first..) {
            if e.start >= end {
                break;
            }
            if e.start > covered {
                return Ok(None);
            }
            covered = covered.max(e.end);
            last += 1;
        }
        if covered < end {
            return Ok(None);
        }
        let mut bytes = 0;
        for e in self.entries.range(first..last) {
            io.send_to(&e.packet, to)?;
            bytes += e.packet.len();
        }
        Ok(Some((last - first, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{Backend, IoCounters};

    #[derive(Default)]
    struct Capture(Vec<Vec<u8>>);

    impl DatagramIo for Capture {
        fn send_to(&mut self, data: &[u8], _: SocketAddr) -> std::io::Result<()> {
            self.0.push(data.to_vec());
            Ok(())
        }
        fn poll(
            &mut self,
            _: std::time::Duration,
            _: &mut dyn FnMut(&[u8], SocketAddr),
        ) -> std::io::Result<usize> {
            Ok(0)
        }
        fn local_addr(&self) -> std::io::Result<SocketAddr> {
            Ok(([127, 0, 0, 1], 1).into())
        }
        fn backend(&self) -> Backend {
            Backend::Plain
        }
        fn counters(&self) -> IoCounters {
            IoCounters::default()
        }
        fn recv_buffer_size(&self) -> Option<usize> {
            None
        }
    }

    fn sent(io: &mut Capture) -> Vec<u8> {
        std::mem::take(&mut io.0)
            .into_iter()
            .map(|p| p[0])
            .collect()
    }

    #[test]
    fn answers_covered_ranges_only() {
        let to: SocketAddr = ([127, 0, 0, 1], 9).into();
        let mut s = SentPackets::new(1 << 20);
        for (i, (a, b)) in [(0, 100), (100, 200), (200, 296)].into_iter().enumerate() {
            s.push(a, b, &[i as u8; 10]);
        }
        let mut io = Capture::default();
        assert_eq!(s.send_range(150, 250, &mut io, to).unwrap(), Some((2, 20)));
        assert_eq!(sent(&mut io), vec![1, 2]);
        assert_eq!(s.send_range(0, 8, &mut io, to).unwrap(), Some((1, 10)));
        assert_eq!(sent(&mut io), vec![0]);
        assert_eq!(
            s.send_range(250, 400, &mut io, to).unwrap(),
            None,
            "past the end"
        );
        assert!(io.0.is_empty());
        s.release(200);
        assert_eq!(
            s.send_range(150, 250, &mut io, to).unwrap(),
            None,
            "released"
        );
        assert_eq!(s.send_range(200, 296, &mut io, to).unwrap(), Some((1, 10)));
        // Out of order: everything before is forgotten.
        s.push(400, 500, &[9; 10]);
        assert_eq!(s.send_range(200, 296, &mut io, to).unwrap(), None);
        // The bound drops the oldest.
        let mut small = SentPackets::new(25);
        for (i, a) in [0u64, 100, 200].into_iter().enumerate() {
            small.push(a, a + 100, &[i as u8; 10]);
        }
        assert_eq!(small.send_range(0, 50, &mut io, to).unwrap(), None);
        assert_eq!(
            small.send_range(100, 300, &mut io, to).unwrap(),
            Some((2, 20))
        );
    }

    #[test]
    fn fragments_of_a_frame_are_answered_whole_or_not_at_all() {
        let to: SocketAddr = ([127, 0, 0, 1], 9).into();
        let mut io = Capture::default();
        let mut s = SentPackets::new(1 << 20);
        s.push(0, 96, &[0; 10]);
        for f in 1..=3u8 {
            s.push(96, 4096, &[f; 10]); // three fragments of one frame
        }
        s.push(4096, 4192, &[4; 10]);
        assert_eq!(s.send_range(200, 300, &mut io, to).unwrap(), Some((3, 30)));
        assert_eq!(sent(&mut io), vec![1, 2, 3]);
        assert_eq!(s.send_range(0, 4100, &mut io, to).unwrap(), Some((5, 50)));
        assert_eq!(sent(&mut io), vec![0, 1, 2, 3, 4]);
        // A bound that evicts the first fragment evicts all of them.
        let mut small = SentPackets::new(35);
        small.push(0, 96, &[0; 10]);
        for f in 1..=3u8 {
            small.push(96, 4096, &[f; 10]);
        }
        assert_eq!(
            small.send_range(96, 200, &mut io, to).unwrap(),
            Some((3, 30))
        );
        sent(&mut io);
        small.push(4096, 4192, &[4; 10]);
        assert_eq!(small.send_range(96, 200, &mut io, to).unwrap(), None);
        assert_eq!(
            small.send_range(4096, 4100, &mut io, to).unwrap(),
            Some((1, 10))
        );
    }
}
