//! UDP segmentation offload (Linux 4.18+) and receive coalescing (5.0+), as control messages.
//!
//! - Send: one buffer holding several datagrams of the same length `seg` (the last may be
//!   shorter) goes out in one SENDMSG with a `UDP_SEGMENT` control message; the kernel cuts it
//!   into datagrams (on loopback and veth it passes the whole train through the stack at once).
//! - Receive: with `UDP_GRO` on, the kernel may hand several datagrams of one train as one buffer
//!   with a `UDP_GRO` control message giving the segment length; the buffer is split back.
//!
//! Datagrams on the wire are unchanged: a receiver without GRO gets them one by one.

use std::os::fd::RawFd;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;

/// Most datagrams per segmented send (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
pub(super) const MAX_SEGMENTS: usize = 64;
/// Most bytes per segmented send (one IPv4 UDP datagram's worth of payload; also fits IPv6).
pub(super) const MAX_BYTES: usize = 65000;

/// Room for one control message carrying an int, 8-byte aligned.
pub(super) type ControlBuf = [u64; 4];

const HDR: usize = std::mem::size_of::<libc::cmsghdr>();

/// Bytes of control buffer one control message with `len` data bytes takes (CMSG_SPACE).
pub(super) const fn space(len: usize) -> usize {
    HDR + len.div_ceil(8) * 8
}

/// Writes a `UDP_SEGMENT` control message for segments of `seg` bytes; returns its length, to
/// be used as `msg_controllen`.
pub(super) fn write_segment(ctrl: &mut ControlBuf, seg: u16) -> usize {
    let hdr = libc::cmsghdr {
        cmsg_len: HDR + 2,
        cmsg_level: SOL_UDP,
        cmsg_type: UDP_SEGMENT,
    };
    let p = ctrl.as_mut_ptr().cast::<u8>();
    // SAFETY: `ctrl` is 32 bytes, 8-byte aligned (an array of u64), so it holds a cmsghdr (16
    // bytes, 8-aligned on 64-bit Linux) followed by the 2-byte segment size; both writes stay
    // inside it.
    unsafe {
        std::ptr::write(p.cast::<libc::cmsghdr>(), hdr);
        std::ptr::write_unaligned(p.add(HDR).cast::<u16>(), seg);
    }
    space(2)
}

/// The segment length of a coalesced receive, from the control bytes the kernel wrote.
pub(super) fn gro_segment(control: &[u8]) -> Option<usize> {
    let mut off = 0;
    while off + HDR <= control.len() {
        // SAFETY: HDR bytes starting at `off` lie inside `control`; read_unaligned does not need
        // alignment.
        let h =
            unsafe { std::ptr::read_unaligned(control.as_ptr().add(off).cast::<libc::cmsghdr>()) };
        let len = h.cmsg_len;
        if len < HDR || off + len > control.len() {
            return None;
        }
        if h.cmsg_level == SOL_UDP && h.cmsg_type == UDP_GRO && len >= HDR + 4 {
            let d: [u8; 4] = control[off + HDR..off + HDR + 4].try_into().ok()?;
            let seg = i32::from_ne_bytes(d);
            return (seg > 0).then_some(seg as usize);
        }
        off += len.div_ceil(8) * 8;
    }
    None
}

/// Turns on receive coalescing for `fd`; false if the kernel refuses.
pub(super) fn enable_gro(fd: RawFd) -> bool {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_round_trip_and_bad_ones_are_ignored() {
        let mut c: ControlBuf = [0; 4];
        assert_eq!(write_segment(&mut c, 1376), 24);
        let bytes: Vec<u8> = c.iter().flat_map(|w| w.to_ne_bytes()).collect();
        // A UDP_SEGMENT message is not a UDP_GRO one.
        assert_eq!(gro_segment(&bytes[..24]), None);
        let mut gro = bytes.clone();
        gro[..8].copy_from_slice(&(HDR + 4).to_ne_bytes());
        gro[12..16].copy_from_slice(&UDP_GRO.to_ne_bytes());
        gro[16..20].copy_from_slice(&1376i32.to_ne_bytes());
        assert_eq!(gro_segment(&gro[..24]), Some(1376));
        assert_eq!(gro_segment(&gro[..10]), None, "truncated header");
        let mut bad = gro.clone();
        bad[..8].copy_from_slice(&999usize.to_ne_bytes());
        assert_eq!(gro_segment(&bad[..24]), None, "length past the end");
    }
}
