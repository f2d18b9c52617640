//! Encoder: appends packets to a byte buffer.

use super::types::*;
use crate::auth::AuthKey;

fn put_header(out: &mut Vec<u8>, ty: PacketType, flags: u16, session: u32, body_len: u32) {
    out.extend_from_slice(&MAGIC.to_le_bytes());
    out.push(VERSION);
    out.push(ty as u8);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&session.to_le_bytes());
    out.extend_from_slice(&body_len.to_le_bytes());
}

/// Sets the body length and, with a key, the MAC flag and tag of the packet that starts at `start`.
fn finish(out: &mut Vec<u8>, start: usize, key: Option<&AuthKey>) {
    let body_len = (out.len() - start - HEADER_LEN) as u32;
    out[start + 12..start + 16].copy_from_slice(&body_len.to_le_bytes());
    if let Some(key) = key {
        let flags = u16::from_le_bytes([out[start + 4], out[start + 5]]) | FLAG_MAC;
        out[start + 4..start + 6].copy_from_slice(&flags.to_le_bytes());
        let tag = key.tag(&out[start..]);
        out.extend_from_slice(&tag);
    }
}

/// Appends `packet` for `session` to `out`, authenticated with `key` if given.
///
/// Fails only for values the decoder would reject (bad name, too many NAK ranges, oversized body),
/// so a peer never receives a packet this encoder produced and cannot read.
pub fn encode(
    packet: &Packet<'_>,
    session: u32,
    key: Option<&AuthKey>,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let start = out.len();
    let flags = match packet {
        Packet::Data(d) if d.fragment => FLAG_FRAGMENT,
        _ => 0,
    };
    put_header(out, packet.packet_type(), flags, session, 0);
    let r = encode_body(packet, out);
    if let Err(e) = r {
        out.truncate(start);
        return Err(e);
    }
    if out.len() - start - HEADER_LEN > MAX_BODY_LEN {
        let len = out.len() - start - HEADER_LEN;
        out.truncate(start);
        return Err(WireError::BodyTooLong(len));
    }
    finish(out, start, key);
    Ok(())
}

fn encode_body(packet: &Packet<'_>, out: &mut Vec<u8>) -> Result<(), WireError> {
    match packet {
        Packet::Setup(s) => {
            if !valid_name(s.name) {
                return Err(WireError::BadName);
            }
            if s.segment_size == 0 || !s.segment_size.is_power_of_two() {
                return Err(WireError::BadField("segment_size"));
            }
            out.extend_from_slice(&s.nonce.to_le_bytes());
            out.extend_from_slice(&s.oldest.to_le_bytes());
            out.extend_from_slice(&s.tail.to_le_bytes());
            out.extend_from_slice(&s.segment_size.to_le_bytes());
            out.extend_from_slice(&s.max_message_size.to_le_bytes());
            out.extend_from_slice(&s.mtu.to_le_bytes());
            out.push(s.stream_flags);
            out.push(s.name.len() as u8);
            out.extend_from_slice(s.name.as_bytes());
        }
        Packet::SetupAck(a) => {
            out.extend_from_slice(&a.nonce.to_le_bytes());
            out.extend_from_slice(&a.receiver_id.to_le_bytes());
            out.extend_from_slice(&a.resume.to_le_bytes());
            out.extend_from_slice(&a.window.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Packet::Data(d) => {
            out.extend_from_slice(&d.position.to_le_bytes());
            out.extend_from_slice(&d.frag_offset.to_le_bytes());
            out.extend_from_slice(&d.frame_len.to_le_bytes());
            out.extend_from_slice(d.bytes);
        }
        Packet::Nak(n) => {
            if n.ranges.is_empty() || n.ranges.len() > MAX_NAK_RANGES {
                return Err(WireError::BadField("nak range count"));
            }
            if n.ranges.iter().any(|r| r.start >= r.end) {
                return Err(WireError::BadField("nak range"));
            }
            out.extend_from_slice(&n.receiver_id.to_le_bytes());
            out.push(n.ranges.len() as u8);
            out.extend_from_slice(&[0u8; 7]);
            for r in &n.ranges {
                out.extend_from_slice(&r.start.to_le_bytes());
                out.extend_from_slice(&r.end.to_le_bytes());
            }
        }
        Packet::Status(s) => {
            out.extend_from_slice(&s.receiver_id.to_le_bytes());
            out.extend_from_slice(&s.position.to_le_bytes());
            out.extend_from_slice(&s.highest.to_le_bytes());
            out.extend_from_slice(&s.window.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Packet::Heartbeat(h) => {
            out.extend_from_slice(&h.tail.to_le_bytes());
            out.extend_from_slice(&h.timestamp_ns.to_le_bytes());
        }
        Packet::Close(c) => {
            out.extend_from_slice(&c.reason.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        Packet::Error(e) => {
            out.extend_from_slice(&(e.code as u16).to_le_bytes());
            out.extend_from_slice(&[0u8; 6]);
            out.extend_from_slice(&e.a.to_le_bytes());
            out.extend_from_slice(&e.b.to_le_bytes());
        }
    }
    Ok(())
}

/// Builds a DATA packet in place: frames are copied straight into the output buffer once.
#[derive(Debug)]
pub struct DataPacketBuilder {
    start: usize,
    position: u64,
    next: u64,
    frames: usize,
}

impl DataPacketBuilder {
    /// Starts a whole-frames DATA packet at `position` in `out`.
    pub fn begin(out: &mut Vec<u8>, session: u32, position: u64) -> Self {
        let start = out.len();
        put_header(out, PacketType::Data, 0, session, 0);
        out.extend_from_slice(&position.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        DataPacketBuilder {
            start,
            position,
            next: position,
            frames: 0,
        }
    }

    /// Bytes the packet occupies so far (header and body, without tag).
    pub fn len(&self, out: &[u8]) -> usize {
        out.len() - self.start
    }

    /// Whether no frame was added yet.
    pub fn is_empty(&self) -> bool {
        self.frames == 0
    }

    /// Position of the first frame.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Position after the last frame added (frames are 8-byte aligned in the stream).
    pub fn next_position(&self) -> u64 {
        self.next
    }

    /// Appends one raw frame that lies at `self.next_position()` in the stream.
    pub fn push_frame(&mut self, out: &mut Vec<u8>, raw: &[u8]) {
        out.extend_from_slice(raw);
        self.next += crate::frame::align8(raw.len() as u64);
        self.frames += 1;
    }

    /// Completes the packet (body length, optional MAC).
    pub fn finish(self, out: &mut Vec<u8>, key: Option<&AuthKey>) {
        finish(out, self.start, key);
    }
}
