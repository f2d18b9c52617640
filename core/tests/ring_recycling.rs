//! Recycled ring segments keep the previous lap's bytes; readers must never take them for frames,
//! even when those bytes are crafted to look like commit words of the next lap.

use ringway_core::frame::{tag_for_segment, CommitWord, State};
use ringway_core::{Start, Stream, StreamConfig};

const SEG: u64 = 64 << 10;

#[test]
fn stale_bytes_shaped_like_next_lap_commit_words_are_never_read() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(SEG)
        .ring(2)
        .max_message_size(8192);
    let s = Stream::create(d.path(), "r", &cfg).unwrap();
    let mut w = s.writer().unwrap();
    let mut follower = s.reader(Start::Beginning).unwrap();
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    // Each lap's payload forges commit words for the segment the file will hold two laps later.
    for lap in 0..12u64 {
        let forged_for = |pos: u64| tag_for_segment(pos / SEG + 2);
        let mut i = 0u32;
        let start_segment = w.next_position().get() / SEG;
        while w.next_position().get() / SEG == start_segment
            || w.next_position().get().is_multiple_of(SEG) && i == 0
        {
            let size = if lap % 2 == 0 {
                4000
            } else {
                24 + (i as usize % 5) * 8
            };
            let word = CommitWord::new(40, State::Data, forged_for(w.next_position().get()))
                .0
                .to_le_bytes();
            let mut payload: Vec<u8> = word.iter().copied().cycle().take(size).collect();
            payload[..4].copy_from_slice(&i.to_le_bytes());
            let pos = w.append(&payload).unwrap();
            expected.push((pos.get(), payload));
            i += 1;
            follower
                .poll(usize::MAX, |f| {
                    seen.push((f.position().get(), f.payload().to_vec()))
                })
                .unwrap();
        }
    }
    follower
        .poll(usize::MAX, |f| {
            seen.push((f.position().get(), f.payload().to_vec()))
        })
        .unwrap();
    assert_eq!(seen.len(), expected.len());
    assert!(
        seen == expected,
        "the follower read exactly the committed frames"
    );
    let v = s.verify().unwrap();
    assert!(v.is_intact(), "{v:?}");
    // A new writer (crash recovery path) finds the tail in a recycled segment.
    let tail = w.next_position();
    drop(w);
    assert_eq!(s.writer().unwrap().next_position(), tail);
}
