//! Arbitrary bytes as a segment: `walk_segment` and `parse_frame` must never panic, and what
//! they return must stay inside the bytes given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_core::frame::{parse_frame, tag_for_segment, walk_segment};

fn crc(m: &[u8], p: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(m), p)
}

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    // First byte: the segment index (so the tag matches words in the input sometimes).
    let tag = tag_for_segment(u64::from(data[0] % 4));
    let bytes = &data[1..];
    let crc_fn: &dyn Fn(&[u8], &[u8]) -> u32 = &crc;
    let mut last_end = 0u64;
    match walk_segment(bytes, tag, Some(crc_fn), |off, f| {
        assert!(off >= last_end, "frames are visited in order");
        assert!(off as usize + f.raw.len() <= bytes.len());
        let _ = (f.meta(), f.payload(), f.stride());
        last_end = off + f.stride();
    }) {
        Ok(s) => assert!(s.end as usize <= bytes.len() || s.sealed),
        Err((off, _)) => assert!((off as usize) < bytes.len()),
    }
    // Every aligned offset as a frame start, with and without CRC.
    for off in (0..bytes.len()).step_by(8).take(512) {
        for c in [Some(crc_fn), None] {
            if let Ok(f) = parse_frame(&bytes[off..], tag, c) {
                assert!(f.raw.len() <= bytes.len() - off);
                let _ = (f.meta(), f.payload(), f.is_padding(), f.stride());
            }
        }
    }
});
