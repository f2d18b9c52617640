//! Durable named cursors and back-pressure from blocking cursors.

use ringway_core::{CursorOptions, Error, Position, Start, Stream, StreamConfig};
use std::time::Duration;

fn payloads(r: &mut ringway_core::NamedReader, limit: usize) -> Vec<u32> {
    let mut v = Vec::new();
    r.poll(limit, |f| {
        v.push(u32::from_le_bytes(f.payload()[..4].try_into().unwrap()))
    })
    .unwrap();
    v
}

/// Stream `c` with 64 KiB segments under `dir`.
fn small_stream(dir: &std::path::Path) -> Stream {
    Stream::create(dir, "c", &StreamConfig::default().segment_size(1 << 16)).unwrap()
}

fn fill(s: &Stream, n: u32) {
    let mut w = s.writer().unwrap();
    for i in 0..n {
        w.append(&i.to_le_bytes()).unwrap();
    }
}

#[test]
fn named_reader_resumes_where_it_committed() {
    let d = tempfile::tempdir().unwrap();
    let s = small_stream(d.path());
    fill(&s, 100);
    {
        let mut r = s.named_reader("risk", CursorOptions::default()).unwrap();
        assert_eq!(payloads(&mut r, 30), (0..30).collect::<Vec<_>>());
    }
    let mut r = s.named_reader("risk", CursorOptions::default()).unwrap();
    assert_eq!(payloads(&mut r, 1000), (30..100).collect::<Vec<_>>());
    let info = &s.cursors()[0];
    assert_eq!(info.name, "risk");
    assert_eq!(info.owner_pid, Some(std::process::id()));
    assert!(info.owner_alive);
}

#[test]
fn uncommitted_messages_are_delivered_again() {
    let d = tempfile::tempdir().unwrap();
    let s = small_stream(d.path());
    fill(&s, 10);
    let opts = CursorOptions {
        commit_every: None,
        ..Default::default()
    };
    let mut r = s.named_reader("x", opts).unwrap();
    assert_eq!(payloads(&mut r, 4).len(), 4);
    r.commit();
    assert_eq!(payloads(&mut r, 3).len(), 3);
    // Simulate a crash: forget the reader so nothing more is committed.
    std::mem::forget(r);
    // The owner (this process) is alive, so the cursor is busy...
    assert!(matches!(
        s.named_reader("x", opts),
        Err(Error::CursorBusy { .. })
    ));
    // ...until an operator resets ownership by deleting and recreating at the committed position.
    let committed = s.cursors()[0].position;
    s.cursor_delete("x").unwrap();
    s.cursor_reset("x", Start::Position(committed)).unwrap();
    let mut r = s.named_reader("x", opts).unwrap();
    assert_eq!(
        payloads(&mut r, 100),
        (4..10).collect::<Vec<_>>(),
        "at-least-once: 4..7 again"
    );
}

#[test]
fn reset_and_delete() {
    let d = tempfile::tempdir().unwrap();
    let s = small_stream(d.path());
    fill(&s, 5);
    let end = s.cursor_reset("a", Start::End).unwrap();
    assert_eq!(end, s.tail());
    let mut r = s.named_reader("a", CursorOptions::default()).unwrap();
    assert!(payloads(&mut r, 10).is_empty());
    s.cursor_reset("a", Start::Beginning).unwrap();
    assert_eq!(
        payloads(&mut r, 10),
        (0..5).collect::<Vec<_>>(),
        "a live reader follows a reset"
    );
    drop(r);
    s.cursor_delete("a").unwrap();
    assert!(s.cursors().is_empty());
    assert!(matches!(
        s.cursor_delete("a"),
        Err(Error::CursorNotFound { .. })
    ));
    assert!(matches!(
        s.cursor_reset("b", Start::Position(Position(3))),
        Err(Error::BadPosition { .. })
    ));
}

#[test]
fn blocking_cursor_holds_a_ring_writer_and_lapped_readers_get_lapped() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default().segment_size(1 << 16).ring(3);
    let s = Stream::create(d.path(), "ring", &cfg).unwrap();
    let mut slow = s
        .named_reader(
            "slow",
            CursorOptions {
                blocking: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut plain = s.reader(Start::Beginning).unwrap();
    let mut w = s.writer().unwrap();
    let payload = [7u8; 1000];
    let mut written = 0u32;
    let err = loop {
        match w.try_append(&payload) {
            Ok(_) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 10_000, "the ring never pushed back");
    };
    assert!(matches!(err, Error::WouldBlock { .. }), "{err}");
    assert!(written > 100);
    // The slow consumer catches up; the writer can go on.
    let mut consumed = 0;
    while consumed < written as usize {
        consumed += slow
            .poll(usize::MAX, |f| assert_eq!(f.payload(), &payload[..]))
            .unwrap();
    }
    // Two more segments fit before the ring would overwrite what the cursor has not read.
    for _ in 0..written / 2 {
        w.try_append(&payload).unwrap();
    }
    // A non-blocking reader left at the start was lapped: an error naming the oldest position.
    match plain.poll(usize::MAX, |_| {}) {
        Err(Error::Lapped { requested, oldest }) => assert!(oldest > requested),
        other => panic!("expected Lapped, got {other:?}"),
    }
    let stat = s.stat().unwrap();
    assert!(stat.back_pressure_events >= 1);
}

#[test]
fn blocking_cursor_without_owner_is_released_after_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(1 << 16)
        .ring(2)
        .cursor_timeout(Duration::from_millis(200));
    let s = Stream::create(d.path(), "ring", &cfg).unwrap();
    drop(
        s.named_reader(
            "gone",
            CursorOptions {
                blocking: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut w = s.writer().unwrap();
    let payload = [1u8; 4000];
    let mut blocked = false;
    for _ in 0..200 {
        match w.try_append(&payload) {
            Ok(_) => {}
            Err(Error::WouldBlock { .. }) => {
                blocked = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        blocked,
        "the ownerless cursor holds the writer within its timeout"
    );
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..200 {
        w.try_append(&payload).unwrap();
    }
    let stat = s.stat().unwrap();
    assert_eq!(stat.released_cursors, 1);
    assert!(s.cursors()[0].released);
}

#[test]
fn blocking_cursor_holds_retention() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(1 << 16)
        .retention(ringway_core::Retention::default().max_segments(3));
    let s = Stream::create(d.path(), "ret", &cfg).unwrap();
    let _hold = s
        .named_reader(
            "hold",
            CursorOptions {
                blocking: true,
                ..Default::default()
            },
        )
        .unwrap();
    let mut w = s.writer().unwrap();
    let mut n = 0;
    let err = loop {
        match w.try_append(&[0u8; 2000]) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
        assert!(n < 10_000);
    };
    assert!(matches!(err, Error::WouldBlock { .. }));
    assert_eq!(
        s.first_position(),
        Position(0),
        "nothing the cursor needs was deleted"
    );
}

#[test]
fn a_blocking_cursor_that_commits_rarely_still_lets_the_writer_go_round_the_ring() {
    // The ring holds ~190 messages of 1000 bytes; the cursor commits every 10,000. A reader that has
    // caught up commits what it handled, so the writer is never held back by handled messages.
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default().segment_size(1 << 16).ring(3);
    let s = Stream::create(d.path(), "ring", &cfg).unwrap();
    let opts = CursorOptions {
        blocking: true,
        commit_every: Some(10_000),
        ..Default::default()
    };
    let mut r = s.named_reader("rare", opts).unwrap();
    const N: u32 = 2_000;
    let writer = {
        let s = s.clone();
        std::thread::spawn(move || {
            let mut w = s.writer().unwrap();
            let mut payload = [0u8; 1000];
            for i in 0..N {
                payload[..4].copy_from_slice(&i.to_le_bytes());
                w.append(&payload).unwrap();
            }
        })
    };
    let mut next = 0u32;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while next < N {
        assert!(
            std::time::Instant::now() < deadline,
            "stuck at {next}: the writer is held back by handled messages"
        );
        r.poll(usize::MAX, |f| {
            assert_eq!(
                u32::from_le_bytes(f.payload()[..4].try_into().unwrap()),
                next
            );
            next += 1;
        })
        .unwrap();
    }
    writer.join().unwrap();
}

/// A persistent-session server keeps one cursor per client: thousands per stream.
#[test]
fn thousands_of_named_cursors_fit_and_survive_reopening() {
    let d = tempfile::tempdir().unwrap();
    let s = small_stream(d.path());
    fill(&s, 3000);
    for i in 0..3000u32 {
        let mut r = s
            .named_reader(&format!("session-{i}"), CursorOptions::default())
            .unwrap();
        // Cursor i consumes i messages.
        if i > 0 {
            assert_eq!(payloads(&mut r, i as usize).len(), i as usize);
        }
    }
    drop(s);
    let s = Stream::open(d.path(), "c").unwrap();
    assert_eq!(s.cursors().len(), 3000);
    for i in [0u32, 1, 255, 256, 257, 1000, 2999] {
        let mut r = s
            .named_reader(&format!("session-{i}"), CursorOptions::default())
            .unwrap();
        assert_eq!(payloads(&mut r, 1), vec![i], "cursor session-{i}");
    }
    // A deleted cursor's slot is reused; names stay unique.
    s.cursor_delete("session-7").unwrap();
    s.named_reader("late", CursorOptions::default()).unwrap();
    assert_eq!(s.cursors().len(), 3000);
}

#[test]
fn a_full_cursor_table_is_a_clear_error() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(1 << 16)
        .cursor_slots(3);
    let s = Stream::create(d.path(), "c", &cfg).unwrap();
    for name in ["a", "b", "c"] {
        s.named_reader(name, CursorOptions::default()).unwrap();
    }
    // An existing name still opens.
    s.named_reader("b", CursorOptions::default()).unwrap();
    match s.named_reader("d", CursorOptions::default()) {
        Err(e) => assert!(
            e.to_string().contains("cursor table is full (3 cursors)"),
            "{e}"
        ),
        Ok(_) => panic!("a fourth cursor in a table of three"),
    }
    assert!(StreamConfig::default().cursor_slots(0).validate().is_err());
    assert!(StreamConfig::default()
        .cursor_slots(1 << 20)
        .validate()
        .is_err());
}

/// CRC32C (Castagnoli), bitwise: enough for re-sealing a forged header.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Streams written before the cursor table became sizeable (format version 1: 256 slots, no
/// count in the header) still open, with their 256 slots.
#[test]
fn version_1_streams_open_with_their_256_cursor_slots() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(1 << 16)
        .cursor_slots(256);
    let s = Stream::create(d.path(), "old", &cfg).unwrap();
    fill(&s, 10);
    drop(s);
    let meta = d.path().join("old").join("meta");
    let mut m = std::fs::read(&meta).unwrap();
    assert_eq!(m.len(), 4096 + 256 * 128);
    m[8..12].copy_from_slice(&1u32.to_le_bytes());
    m[88..92].copy_from_slice(&0u32.to_le_bytes());
    let crc = crc32c(&m[..124]);
    m[124..128].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&meta, &m).unwrap();
    let s = Stream::open(d.path(), "old").unwrap();
    assert_eq!(s.config().cursor_slots, 256);
    let mut r = s.named_reader("x", CursorOptions::default()).unwrap();
    assert_eq!(payloads(&mut r, 100), (0..10).collect::<Vec<_>>());
    for i in 1..256 {
        s.named_reader(&format!("c{i}"), CursorOptions::default())
            .unwrap();
    }
    assert!(s
        .named_reader("one-too-many", CursorOptions::default())
        .is_err());
}
