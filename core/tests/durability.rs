//! Explicit and periodic flushes record how far the stream is on storage.

use ringway_core::{Stream, StreamConfig};
use std::time::{Duration, Instant};

fn flushed(dir: &std::path::Path) -> u64 {
    // `meta` offset 280: position up to which a flush completed (docs/format.md).
    let b = std::fs::read(dir.join("d").join("meta")).unwrap();
    u64::from_le_bytes(b[280..288].try_into().unwrap())
}

#[test]
fn flush_and_periodic_flush_advance_the_flushed_position() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "d",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let mut w = s.writer().unwrap();
    w.append(b"one").unwrap();
    assert_eq!(flushed(d.path()), 0);
    w.flush().unwrap();
    let after_explicit = flushed(d.path());
    assert!(
        after_explicit >= w.next_position().get(),
        "{after_explicit}"
    );

    w.set_flush_interval(Some(Duration::from_millis(20)));
    for _ in 0..100 {
        w.append(b"more").unwrap();
    }
    let target = w.next_position().get();
    let deadline = Instant::now() + Duration::from_secs(20);
    while flushed(d.path()) < target && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        flushed(d.path()) >= target,
        "the background flush caught up"
    );
}
