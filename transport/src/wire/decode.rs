//! Decoder: validates every field and never panics, whatever the input bytes.

use super::types::*;
use crate::auth::AuthKey;

/// A bounds-checked little-endian reader over a body.
struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self.at.checked_add(n).ok_or(WireError::Truncated {
            need: usize::MAX,
            have: self.buf.len(),
        })?;
        let s = self.buf.get(self.at..end).ok_or(WireError::Truncated {
            need: end,
            have: self.buf.len(),
        })?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let s = self.take(8)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }
    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.at.min(self.buf.len())..];
        self.at = self.buf.len();
        s
    }
}

struct Header {
    ty: PacketType,
    flags: u16,
    session: u32,
    body_len: usize,
}

fn parse_header(buf: &[u8]) -> Result<Header, WireError> {
    if buf.len() < HEADER_LEN {
        return Err(WireError::Truncated {
            need: HEADER_LEN,
            have: buf.len(),
        });
    }
    let mut c = Cursor { buf, at: 0 };
    let magic = c.u16()?;
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    let version = c.u8()?;
    if version != VERSION {
        return Err(WireError::UnsupportedVersion(version));
    }
    let tyb = c.u8()?;
    let ty = PacketType::from_u8(tyb).ok_or(WireError::UnknownType(tyb))?;
    let flags = c.u16()?;
    if flags & !KNOWN_FLAGS != 0 || (flags & FLAG_FRAGMENT != 0 && ty != PacketType::Data) {
        return Err(WireError::BadFlags(flags));
    }
    if c.u16()? != 0 {
        return Err(WireError::Reserved);
    }
    let session = c.u32()?;
    let body_len = c.u32()? as usize;
    if body_len > MAX_BODY_LEN {
        return Err(WireError::BodyTooLong(body_len));
    }
    Ok(Header {
        ty,
        flags,
        session,
        body_len,
    })
}

/// For stream transports: the total length of the packet at the start of `buf` once its header is
/// complete (`Ok(None)` while fewer than [`HEADER_LEN`] bytes are buffered).
pub fn peek_packet_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let h = parse_header(buf)?;
    let mac = if h.flags & FLAG_MAC != 0 { MAC_LEN } else { 0 };
    Ok(Some(HEADER_LEN + h.body_len + mac))
}

/// Decodes exactly one packet occupying all of `buf`; returns its session id and body.
///
/// With `key`, the packet must carry a valid tag; without, it must carry none.
pub fn decode<'a>(buf: &'a [u8], key: Option<&AuthKey>) -> Result<(u32, Packet<'a>), WireError> {
    let h = parse_header(buf)?;
    let has_mac = h.flags & FLAG_MAC != 0;
    let total = HEADER_LEN + h.body_len + if has_mac { MAC_LEN } else { 0 };
    if buf.len() < total {
        return Err(WireError::Truncated {
            need: total,
            have: buf.len(),
        });
    }
    if buf.len() > total {
        return Err(WireError::TrailingBytes {
            extra: buf.len() - total,
        });
    }
    let signed_end = HEADER_LEN + h.body_len;
    match (key, has_mac) {
        (Some(k), true) => {
            if !k.verify(&buf[..signed_end], &buf[signed_end..total]) {
                return Err(WireError::BadMac);
            }
        }
        (Some(_), false) => return Err(WireError::MissingMac),
        (None, true) => return Err(WireError::UnexpectedMac),
        (None, false) => {}
    }
    let body = &buf[HEADER_LEN..signed_end];
    let packet = decode_body(h.ty, h.flags, body)?;
    Ok((h.session, packet))
}

fn exact(ty: PacketType, body: &[u8], len: usize) -> Result<(), WireError> {
    if body.len() != len {
        return Err(WireError::BadBodyLength {
            ty,
            len: body.len(),
        });
    }
    Ok(())
}

fn decode_body(ty: PacketType, flags: u16, body: &[u8]) -> Result<Packet<'_>, WireError> {
    let mut c = Cursor { buf: body, at: 0 };
    Ok(match ty {
        PacketType::Setup => {
            if body.len() < SETUP_FIXED_LEN {
                return Err(WireError::BadBodyLength {
                    ty,
                    len: body.len(),
                });
            }
            let nonce = c.u64()?;
            let oldest = c.u64()?;
            let tail = c.u64()?;
            let segment_size = c.u32()?;
            let max_message_size = c.u32()?;
            let mtu = c.u16()?;
            let stream_flags = c.u8()?;
            let name_len = c.u8()? as usize;
            exact(ty, body, SETUP_FIXED_LEN + name_len)?;
            let name = std::str::from_utf8(c.take(name_len)?).map_err(|_| WireError::BadName)?;
            if !valid_name(name) {
                return Err(WireError::BadName);
            }
            if segment_size == 0 || !segment_size.is_power_of_two() {
                return Err(WireError::BadField("segment_size"));
            }
            if oldest > tail {
                return Err(WireError::BadField("oldest after tail"));
            }
            Packet::Setup(Setup {
                nonce,
                oldest,
                tail,
                segment_size,
                max_message_size,
                mtu,
                stream_flags,
                name,
            })
        }
        PacketType::SetupAck => {
            exact(ty, body, 32)?;
            let nonce = c.u64()?;
            let receiver_id = c.u64()?;
            let resume = c.u64()?;
            let window = c.u32()?;
            if c.u32()? != 0 {
                return Err(WireError::Reserved);
            }
            Packet::SetupAck(SetupAck {
                nonce,
                receiver_id,
                resume,
                window,
            })
        }
        PacketType::Data => {
            if body.len() < DATA_FIXED_LEN {
                return Err(WireError::BadBodyLength {
                    ty,
                    len: body.len(),
                });
            }
            let position = c.u64()?;
            let frag_offset = c.u32()?;
            let frame_len = c.u32()?;
            let bytes = c.rest();
            let fragment = flags & FLAG_FRAGMENT != 0;
            if !position.is_multiple_of(8) {
                return Err(WireError::BadField("unaligned position"));
            }
            if position
                .checked_add(bytes.len() as u64 + frame_len as u64)
                .is_none()
            {
                return Err(WireError::BadField("position overflow"));
            }
            if fragment {
                let end = frag_offset as u64 + bytes.len() as u64;
                if bytes.is_empty() || end > frame_len as u64 {
                    return Err(WireError::BadField("fragment outside frame"));
                }
            } else if frag_offset != 0 || frame_len != 0 {
                return Err(WireError::BadField("fragment fields on whole frames"));
            }
            Packet::Data(Data {
                position,
                frag_offset,
                frame_len,
                bytes,
                fragment,
            })
        }
        PacketType::Nak => {
            if body.len() < 16 {
                return Err(WireError::BadBodyLength {
                    ty,
                    len: body.len(),
                });
            }
            let receiver_id = c.u64()?;
            let n = c.u8()? as usize;
            if c.take(7)?.iter().any(|&b| b != 0) {
                return Err(WireError::Reserved);
            }
            if n == 0 || n > MAX_NAK_RANGES {
                return Err(WireError::BadField("nak range count"));
            }
            exact(ty, body, 16 + 16 * n)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                let start = c.u64()?;
                let end = c.u64()?;
                if start >= end {
                    return Err(WireError::BadField("nak range"));
                }
                ranges.push(NakRange { start, end });
            }
            Packet::Nak(Nak {
                receiver_id,
                ranges,
            })
        }
        PacketType::Status => {
            exact(ty, body, 32)?;
            let receiver_id = c.u64()?;
            let position = c.u64()?;
            let highest = c.u64()?;
            let window = c.u32()?;
            if c.u32()? != 0 {
                return Err(WireError::Reserved);
            }
            Packet::Status(Status {
                receiver_id,
                position,
                highest,
                window,
            })
        }
        PacketType::Heartbeat => {
            exact(ty, body, 16)?;
            Packet::Heartbeat(Heartbeat {
                tail: c.u64()?,
                timestamp_ns: c.u64()?,
            })
        }
        PacketType::Close => {
            exact(ty, body, 8)?;
            let reason = c.u32()?;
            if c.u32()? != 0 {
                return Err(WireError::Reserved);
            }
            Packet::Close(Close { reason })
        }
        PacketType::Error => {
            exact(ty, body, 24)?;
            let code = c.u16()?;
            if c.take(6)?.iter().any(|&b| b != 0) {
                return Err(WireError::Reserved);
            }
            let code = ErrorCode::from_u16(code).ok_or(WireError::UnknownErrorCode(code))?;
            Packet::Error(ErrorPacket {
                code,
                a: c.u64()?,
                b: c.u64()?,
            })
        }
    })
}
