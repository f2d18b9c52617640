//! Frame layouts at segment boundaries.

mod common;

use ringway_core::{Start, Stream, StreamConfig};

/// A frame that ends exactly at a segment's end leaves no room for closing padding; readers must
/// step into the next segment instead of reading a commit word past the mapping.
#[test]
fn frames_that_fill_a_segment_exactly_are_followed_into_the_next_segment() {
    const SEGMENT: u64 = 64 << 10;
    for multi in [false, true] {
        let root = common::temp_root();
        let cfg = StreamConfig::default()
            .segment_size(SEGMENT)
            .multi_writer(multi);
        let stream = Stream::create(root.path(), "edge", &cfg).unwrap();
        let mut w = stream.writer().unwrap();
        // 32-byte header + 32-byte payload: 1024 frames fill a 64 KiB segment to the byte.
        let per_segment = SEGMENT / 64;
        let total = per_segment * 2 + 3;
        for i in 0..total {
            let pos = w.append(&[i as u8; 32]).unwrap();
            assert_eq!(pos.get(), i * 64, "frames are packed with no padding");
        }
        let mut r = stream.reader(Start::Beginning).unwrap();
        let mut seen = 0u64;
        while r
            .poll(100, |f| {
                assert_eq!(f.position().get(), seen * 64);
                assert_eq!(f.payload(), &[seen as u8; 32]);
                seen += 1;
            })
            .unwrap()
            > 0
        {}
        assert_eq!(seen, total, "multi={multi}");
        let mut r = stream.reader(Start::Beginning).unwrap();
        let mut seen = 0u64;
        while let Some(f) = r.next().unwrap() {
            assert_eq!(f.position().get(), seen * 64);
            seen += 1;
        }
        assert_eq!(seen, total, "multi={multi}");
        assert_eq!(r.position().get(), total * 64);
        // A reader may start exactly at the segment boundary, too.
        let mut r = stream
            .reader(Start::Position(ringway_core::Position(SEGMENT)))
            .unwrap();
        assert_eq!(
            r.next().unwrap().unwrap().payload(),
            &[per_segment as u8; 32]
        );
        let report = stream.verify().unwrap();
        assert!(report.is_intact(), "{report:?}");
        assert_eq!(report.frames, total);
        assert_eq!(report.end.get(), total * 64);
    }
}
