//! Damaged streams and bad requests: clear typed errors, never a panic, never a hang.
//!
//! Also the typed errors of normal operation that look like damage to a careless reader: lapped
//! positions (retention, ring), bad start positions, rejected configurations, and a replica
//! writer refusing frames that are not what a primary wrote.

mod common;

use common::*;
use ringway_core::frame::{CommitWord, FrameError, State};
use ringway_core::{Error, Position, Retention, Start, Stream, StreamConfig};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const SEGMENT: u64 = 64 << 10;

fn segment_file(stream: &Stream, position: u64) -> PathBuf {
    stream.dir().join(format!("{position:020}.seg"))
}

fn patch(path: &Path, off: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, off).unwrap();
}

fn read_at(path: &Path, off: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, off).unwrap();
    b
}

/// Runs `f` on another thread and fails the test if it does not return within a few seconds
/// (a walk over damaged frames must not loop forever).
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} hung on a damaged stream"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

/// A single-writer stream with `count` self-checking messages; returns the frame positions.
fn stream_with(root: &Path, cfg: &StreamConfig, count: u64) -> (Stream, Vec<u64>) {
    let stream = Stream::create(root, "s", cfg).unwrap();
    let mut w = stream.writer().unwrap();
    let positions = (0..count)
        .map(|i| w.append(&make_payload(0, i)).unwrap().get())
        .collect();
    (stream, positions)
}

/// Reads everything it can; returns the messages read and the error that stopped it, if any.
fn read_all(stream: &Stream) -> (u64, Option<Error>) {
    let mut r = match stream.reader(Start::Beginning) {
        Ok(r) => r,
        Err(e) => return (0, Some(e)),
    };
    let mut n = 0;
    loop {
        match r.poll(256, |_| n += 1) {
            Ok(0) => return (n, None),
            Ok(_) => {}
            Err(e) => return (n, Some(e)),
        }
    }
}

fn crc_cfg() -> StreamConfig {
    StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(1024)
        .crc(true)
}

#[test]
fn flipped_payload_byte_is_a_crc_mismatch_at_that_frame() {
    let root = temp_root();
    let (stream, pos) = stream_with(root.path(), &crc_cfg(), 100);
    assert!(stream.verify().unwrap().is_intact());
    let seg = segment_file(&stream, 0);
    let target = pos[37];
    let at = target + 32 + 5; // a payload byte of frame 37
    let b = read_at(&seg, at, 1)[0];
    patch(&seg, at, &[b ^ 0x10]);
    let report = stream.verify().unwrap();
    let (where_, what) = report.problem.clone().expect("damage found");
    assert_eq!(where_, Position(target), "{report:?}");
    assert!(what.contains("CRC mismatch"), "{what}");
}

#[test]
fn damaged_commit_words_are_corrupt_frame_errors_for_readers_and_verify() {
    // (what to do to frame 10's commit word, expected reader error reason)
    type Damage = fn(CommitWord) -> u64;
    let cases: [(&str, Damage); 5] = [
        ("wrong tag", |w| w.0 ^ (1 << 40)),
        ("reserved state", |w| w.0 & !(3 << 30)),
        ("length below the header", |w| {
            CommitWord::new(8, State::Data, w.tag()).0
        }),
        ("padding not a multiple of 8", |w| {
            CommitWord::new(12, State::Padding, w.tag()).0
        }),
        ("length past the segment end", |w| {
            CommitWord::new(SEGMENT as u32, State::Data, w.tag()).0
        }),
    ];
    for (name, damage) in cases {
        let root = temp_root();
        let (stream, pos) = stream_with(root.path(), &crc_cfg(), 20);
        let seg = segment_file(&stream, 0);
        let word = CommitWord(u64::from_le_bytes(
            read_at(&seg, pos[10], 8).try_into().unwrap(),
        ));
        patch(&seg, pos[10], &damage(word).to_le_bytes());
        let (n, err) = read_all(&stream);
        assert_eq!(n, 10, "{name}: frames before the damage are delivered");
        match err {
            Some(Error::CorruptFrame { position, reason }) => {
                assert_eq!(position, Position(pos[10]), "{name}");
                eprintln!("{name}: reader error: {reason}");
            }
            other => panic!("{name}: expected CorruptFrame, got {other:?}"),
        }
        let report = stream.verify().unwrap();
        let (at, what) = report.problem.expect(name);
        assert_eq!(at, Position(pos[10]), "{name}: {what}");
        // The error texts name the damage.
        let e = Error::CorruptFrame {
            position: at,
            reason: FrameError::BadState,
        };
        assert!(e.to_string().contains(&format!("position {}", pos[10])));
    }
}

#[test]
fn meta_len_longer_than_the_frame_is_rejected() {
    let root = temp_root();
    let (stream, pos) = stream_with(root.path(), &crc_cfg(), 5);
    let seg = segment_file(&stream, 0);
    patch(&seg, pos[2] + 10, &500u16.to_le_bytes());
    let (n, err) = read_all(&stream);
    assert_eq!(n, 2);
    assert!(
        matches!(err, Some(Error::CorruptFrame { position, .. }) if position == Position(pos[2])),
        "{err:?}"
    );
    assert_eq!(
        stream.verify().unwrap().problem.unwrap().0,
        Position(pos[2])
    );
}

#[test]
fn truncated_segment_file_is_a_clear_error() {
    let root = temp_root();
    let (stream, _) = stream_with(root.path(), &crc_cfg(), 3000);
    let second = segment_file(&stream, SEGMENT);
    assert!(
        stream.tail().get() > 2 * SEGMENT,
        "3000 messages span three segments"
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&second)
        .unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    let (n, err) = read_all(&stream);
    assert!(n > 0);
    match err {
        Some(Error::CorruptFile { path, reason }) => {
            assert_eq!(path, second);
            assert!(reason.contains("1000 bytes"), "{reason}");
        }
        other => panic!("expected CorruptFile, got {other:?}"),
    }
    let report = stream.verify().unwrap();
    let (at, what) = report.problem.unwrap();
    assert_eq!(at, Position(SEGMENT));
    assert!(what.contains("truncated"), "{what}");
    // A new writer must not paper over a truncated tail segment.
    let last = segment_file(&stream, stream.tail().get() / SEGMENT * SEGMENT);
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(SEGMENT / 2).unwrap();
    drop(f);
    let again = Stream::open(root.path(), "s").unwrap();
    match again.writer() {
        Err(Error::CorruptFile { path, .. }) => assert_eq!(path, last),
        other => panic!("expected CorruptFile, got {other:?}"),
    }
}

#[test]
fn bad_metadata_files_are_clear_errors() {
    let root = temp_root();
    let stream = Stream::create(root.path(), "s", &crc_cfg()).unwrap();
    let meta = stream.dir().join("meta");
    let good = std::fs::read(&meta).unwrap();
    drop(stream);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("short", good[..100].to_vec()),
        ("zeroed", vec![0u8; good.len()]),
        ("garbage", {
            let mut rng = 7u64;
            (0..good.len())
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect()
        }),
        ("flipped header byte", {
            let mut m = good.clone();
            m[16] ^= 1; // segment size
            m
        }),
        ("longer", {
            let mut m = good.clone();
            m.extend_from_slice(&[0; 10]);
            m
        }),
    ];
    for (name, bytes) in cases {
        std::fs::write(&meta, &bytes).unwrap();
        match Stream::open(root.path(), "s") {
            Err(Error::CorruptFile { path, reason }) => {
                assert_eq!(path, meta, "{name}");
                eprintln!("{name}: {reason}");
            }
            other => panic!("{name}: expected CorruptFile, got {other:?}"),
        }
    }
    let mut newer = good.clone();
    newer[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&meta, &newer).unwrap();
    match Stream::open(root.path(), "s") {
        Err(Error::UnsupportedVersion {
            found, supported, ..
        }) => assert_eq!((found, supported), (3, 2)),
        other => panic!("expected UnsupportedVersion, got {other:?}"),
    }
    std::fs::write(&meta, &good).unwrap();
    assert!(Stream::open(root.path(), "s").is_ok());
    std::fs::remove_file(&meta).unwrap();
    assert!(matches!(
        Stream::open(root.path(), "s"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn missing_middle_segment_is_reported() {
    let root = temp_root();
    let (stream, _) = stream_with(root.path(), &crc_cfg(), 6000);
    assert!(segment_file(&stream, 3 * SEGMENT).exists());
    std::fs::remove_file(segment_file(&stream, SEGMENT)).unwrap();
    let report = stream.verify().unwrap();
    let (at, what) = report.problem.unwrap();
    assert_eq!(at, Position(SEGMENT));
    assert!(what.contains("missing"), "{what}");
    // A reader must not take the gap for the end of the stream.
    let (n, err) = within_deadline("reader", {
        let stream = stream.clone();
        move || read_all(&stream)
    });
    assert!(n > 0);
    assert!(
        matches!(err, Some(Error::CorruptFile { .. })),
        "reader stopped at the gap without an error: {err:?}"
    );
}

#[test]
fn random_garbage_over_segments_never_panics_or_hangs() {
    let mut rng = 0x1234_5678_9abc_def1_u64;
    for round in 0..40u64 {
        let root = temp_root();
        let cfg = crc_cfg().multi_writer(round % 2 == 1);
        let (stream, _) = stream_with(root.path(), &cfg, 1500);
        let seg = segment_file(&stream, 0);
        // Garbage: a run of random bytes somewhere, or random words with the right tag so the
        // damage looks like frames.
        let start = (rng % (SEGMENT / 8)) * 8;
        let len = 8 + (rng >> 20) % 4096;
        let mut junk = Vec::new();
        for i in 0..len / 8 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let w = if round % 3 == 0 && i % 4 == 0 {
                (rng & 0xffff_ffff) | (1 << 32) // tag of segment 0
            } else {
                rng
            };
            junk.extend_from_slice(&w.to_le_bytes());
        }
        let end = (start + junk.len() as u64).min(SEGMENT);
        patch(&seg, start, &junk[..(end - start) as usize]);
        let s2 = stream.clone();
        within_deadline("verify, readers and a writer", move || {
            let _ = s2.verify().unwrap();
            let _ = read_all(&s2);
            for p in [start, start + 8, end, 4096] {
                if let Ok(mut r) = s2.reader(Start::Position(Position(p))) {
                    let _ = r.poll(100, |_| {});
                }
            }
            if let Ok(mut r) = s2.reader(Start::Time(ringway_core::system_now_ns() - 1)) {
                let _ = r.poll(100, |_| {});
            }
            let mut r = s2.reader(Start::Beginning).unwrap();
            while let Ok(Some(_)) = r.next_raw() {}
        });
    }
}

#[test]
fn garbage_at_the_tail_does_not_wedge_a_new_writer() {
    // Words with the segment's tag but impossible lengths, where a new writer looks for the tail.
    let tag = 1u32;
    for word in [
        CommitWord::new(0, State::Data, tag),
        CommitWord::new(0, State::Padding, tag),
        CommitWord::new(12, State::Padding, tag),
        CommitWord::new(31, State::Data, tag),
    ] {
        let root = temp_root();
        let (stream, pos) = stream_with(root.path(), &crc_cfg(), 10);
        let tail = stream.tail().get();
        drop(stream);
        let seg = root.path().join("s").join(format!("{:020}.seg", 0));
        patch(&seg, tail, &word.0.to_le_bytes());
        let root_path = root.path().to_path_buf();
        let p5 = pos[5];
        within_deadline("writer recovery, seeks", move || {
            let stream = Stream::open(&root_path, "s").unwrap();
            let _ = stream.reader(Start::Position(Position(tail + 64)));
            let _ = stream.reader(Start::Time(u64::MAX));
            let _ = stream.verify().unwrap();
            let mut w = stream.writer().unwrap();
            w.append(b"after").unwrap();
            let mut r = stream.reader(Start::Position(Position(p5))).unwrap();
            let mut n = 0;
            while r.poll(100, |_| n += 1).unwrap() > 0 {}
            assert_eq!(n, 6);
        });
    }
}

#[test]
fn retention_deleted_positions_are_lapped() {
    let root = temp_root();
    let cfg = crc_cfg().retention(Retention::default().max_segments(3));
    let stream = Stream::create(root.path(), "s", &cfg).unwrap();
    let mut early = stream.reader(Start::Beginning).unwrap();
    assert!(early.next().unwrap().is_none());
    let mut w = stream.writer().unwrap();
    let mut i = 0;
    while stream.first_position().get() < 3 * SEGMENT {
        w.append(&make_payload(0, i)).unwrap();
        i += 1;
    }
    // The writer's background thread may still be preparing the next segment (and applying
    // retention once more); dropping the writer waits for it, so the first position stays put.
    drop(w);
    let first = stream.first_position();
    // Retention advances the first position before it unlinks the files (in the writer's
    // background thread): wait for the unlink so the reader below meets a missing segment.
    let seg1 = root.path().join("s").join(format!("{:020}.seg", SEGMENT));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seg1.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    match stream.reader(Start::Position(Position(8 * 100))) {
        Err(Error::Lapped { requested, oldest }) => {
            assert_eq!((requested, oldest), (Position(800), first));
        }
        other => panic!("expected Lapped, got {other:?}"),
    }
    // A reader that still maps a deleted segment may finish it (its bytes are intact: deletion
    // unlinks, it does not overwrite); at the next deleted segment it is told it was lapped.
    let mut check = SeqCheck::new(1);
    let lapped = loop {
        match early.poll(64, |f| {
            check.record(f.position().get(), f.payload());
        }) {
            Ok(n) => assert!(n > 0, "stopped without Lapped at {}", early.position()),
            Err(e) => break e,
        }
    };
    match lapped {
        Error::Lapped { requested, oldest } => {
            assert!(requested < oldest);
            assert!(requested.get() <= SEGMENT, "{requested}");
            assert_eq!(oldest, first);
        }
        other => panic!("expected Lapped, got {other:?}"),
    }
    // Readers from the beginning start at the oldest retained frame.
    let mut r = stream.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().position(), first);
    let (_, err) = read_all(&stream);
    assert!(err.is_none());
    assert!(stream.verify().unwrap().is_intact());
}

#[test]
fn ring_laps_are_reported_never_stale_bytes() {
    let root = temp_root();
    let cfg = crc_cfg().ring(2);
    let stream = Stream::create(root.path(), "s", &cfg).unwrap();
    let mut w = stream.writer().unwrap();
    let mut slow = stream.reader(Start::Beginning).unwrap();
    let mut seq = 0u64;
    for _ in 0..50 {
        w.append(&make_payload(0, seq)).unwrap();
        seq += 1;
    }
    let mut check = SeqCheck::new(1);
    slow.poll(10, |f| {
        check.record(f.position().get(), f.payload());
    })
    .unwrap();
    // The writer goes round the ring twice.
    while w.next_position().get() < 5 * SEGMENT {
        w.append(&make_payload(0, seq)).unwrap();
        seq += 1;
    }
    // Let the writer's background thread finish recycling the next segment (see above).
    drop(w);
    let first = stream.first_position();
    assert!(first.get() >= 3 * SEGMENT, "ring keeps 2 segments: {first}");
    let mut lapped = false;
    loop {
        match slow.poll(64, |f| {
            check.record(f.position().get(), f.payload());
        }) {
            Ok(0) => break,
            Ok(_) => {}
            Err(Error::Lapped { requested, oldest }) => {
                assert!(requested < oldest);
                assert_eq!(oldest, first);
                lapped = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(lapped, "a reader two laps behind must be told");
    assert_eq!(check.seen, 10, "no stale frame was delivered after the lap");
    let mut r = stream.reader(Start::Beginning).unwrap();
    let f = r.next().unwrap().unwrap();
    assert_eq!(f.position(), first);
    let (n, err) = read_all(&stream);
    assert!(err.is_none() && n > 0, "{err:?}");
    assert!(stream.verify().unwrap().is_intact());
    let segments = stream.stat().unwrap().segments;
    assert!(
        (2..=3).contains(&segments),
        "2 ring segments (+ the prepared one): {segments}"
    );
}

#[test]
fn start_from_position_time_and_end() {
    let root = temp_root();
    let stream = Stream::create(root.path(), "s", &crc_cfg()).unwrap();
    let mut w = stream.writer().unwrap();
    let mut positions = Vec::new();
    for batch in 0..5u64 {
        for i in 0..1000 {
            positions.push(w.append(&make_payload(0, batch * 1000 + i)).unwrap());
        }
        std::thread::sleep(Duration::from_millis(3));
    }
    // Position: the frame itself; not a boundary: BadPosition; misaligned: BadPosition.
    let mut r = stream.reader(Start::Position(positions[2345])).unwrap();
    assert_eq!(
        check_payload(r.next().unwrap().unwrap().payload()).unwrap(),
        (0, 2345)
    );
    for bad in [positions[2345].get() + 8, positions[2345].get() + 3] {
        assert!(
            matches!(
                stream.reader(Start::Position(Position(bad))),
                Err(Error::BadPosition { .. })
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        stream.reader(Start::Position(Position(50 * SEGMENT))),
        Err(Error::BadPosition { .. })
    ));
    // Time: the first frame at or after the timestamp, found across segments.
    let mut stamps = Vec::new();
    let mut all = stream.reader(Start::Beginning).unwrap();
    while let Some(f) = all.next().unwrap() {
        stamps.push((f.timestamp_ns(), f.position()));
    }
    assert!(
        stamps.windows(2).all(|p| p[0].0 <= p[1].0),
        "timestamps grow"
    );
    for k in [0usize, 1000, 3000, 4999] {
        let (ts, pos) = stamps[k];
        let want = stamps.iter().find(|s| s.0 >= ts).unwrap().1;
        let mut r = stream.reader(Start::Time(ts)).unwrap();
        let f = r.next().unwrap().unwrap();
        assert_eq!(f.position(), want, "k={k}");
        assert!(pos >= want);
    }
    let mut r = stream.reader(Start::Time(0)).unwrap();
    assert_eq!(r.next().unwrap().unwrap().position(), positions[0]);
    let mut r = stream.reader(Start::Time(stamps[4999].0 + 1)).unwrap();
    assert!(r.next().unwrap().is_none());
    assert_eq!(r.position(), stream.tail());
    // End: only what comes next.
    let mut r = stream.reader(Start::End).unwrap();
    assert!(r.next().unwrap().is_none());
    w.append(&make_payload(0, 5000)).unwrap();
    assert_eq!(
        check_payload(r.next().unwrap().unwrap().payload()).unwrap(),
        (0, 5000)
    );
}

#[test]
fn rejected_configurations() {
    let root = temp_root();
    let bad = [
        ("multi-writer ring", crc_cfg().ring(4).multi_writer(true)),
        (
            "segment not a power of two",
            crc_cfg().segment_size(100_000),
        ),
        ("segment too small", crc_cfg().segment_size(4096)),
        (
            "message larger than half a segment",
            crc_cfg().max_message_size(40_000),
        ),
        ("ring of one", crc_cfg().ring(1)),
        (
            "retention of one",
            crc_cfg().retention(Retention::default().max_segments(1)),
        ),
        ("file mode without owner rw", crc_cfg().file_mode(0o400)),
    ];
    for (name, cfg) in bad {
        match Stream::create(root.path(), "s", &cfg) {
            Err(Error::InvalidConfig(msg)) => eprintln!("{name}: {msg}"),
            other => panic!("{name}: expected InvalidConfig, got {other:?}"),
        }
        assert!(
            !root.path().join("s").exists(),
            "{name}: nothing left behind"
        );
    }
    for name in ["", ".hidden", "a/b", "x y"] {
        assert!(matches!(
            Stream::create(root.path(), name, &crc_cfg()),
            Err(Error::InvalidName(_))
        ));
    }
    let s = Stream::create(root.path(), "s", &crc_cfg()).unwrap();
    assert!(matches!(
        Stream::create(root.path(), "s", &crc_cfg()),
        Err(Error::AlreadyExists { .. })
    ));
    let mut w = s.writer().unwrap();
    assert!(matches!(s.writer(), Err(Error::WriterBusy { .. })));
    assert!(matches!(
        w.append(&[0u8; 1025]),
        Err(Error::MessageTooLarge {
            len: 1025,
            max: 1024
        })
    ));
    assert!(matches!(
        w.try_claim(5000),
        Err(Error::MessageTooLarge { .. })
    ));
}

#[test]
fn replica_writer_rejects_bad_frames() {
    let root = temp_root();
    let cfg = crc_cfg();
    let primary = Stream::create(root.path(), "p", &cfg).unwrap();
    let replica = Stream::create(root.path(), "r", &cfg.clone().replica(true)).unwrap();
    assert!(matches!(replica.writer(), Err(Error::ReadOnlyReplica(_))));
    assert!(matches!(
        primary.replica_writer(),
        Err(Error::NotAReplica(_))
    ));
    let mut w = primary.writer().unwrap();
    for i in 0..3000 {
        w.append(&make_payload(0, i)).unwrap();
    }
    let mut frames: Vec<(Position, Vec<u8>)> = Vec::new();
    let mut r = primary.reader(Start::Beginning).unwrap();
    while r
        .poll_raw(256, |f| frames.push((f.position(), f.raw().to_vec())))
        .unwrap()
        > 0
    {}
    let mut rw = replica.replica_writer().unwrap();
    assert!(matches!(
        replica.replica_writer(),
        Err(Error::WriterBusy { .. })
    ));
    let expect_corrupt = |rw: &mut ringway_core::ReplicaWriter, pos: Position, raw: &[u8]| match rw
        .write_frame(pos, raw)
    {
        Err(Error::CorruptFrame { position, reason }) => {
            assert_eq!(position, pos);
            reason
        }
        other => panic!("expected CorruptFrame, got {other:?}"),
    };
    let (p0, f0) = frames[0].clone();
    // Flipped payload byte: CRC mismatch.
    let mut bad = f0.clone();
    bad[40] ^= 1;
    let reason = expect_corrupt(&mut rw, p0, &bad);
    assert!(
        matches!(reason, FrameError::CrcMismatch { .. }),
        "{reason:?}"
    );
    // Truncated, or with trailing bytes: the length word disagrees.
    expect_corrupt(&mut rw, p0, &f0[..f0.len() - 1]);
    let mut longer = f0.clone();
    longer.extend_from_slice(&[0; 8]);
    expect_corrupt(&mut rw, p0, &longer);
    expect_corrupt(&mut rw, p0, &f0[..4]);
    // A frame of the second segment (other tag) at a first-segment position.
    let (_, other) = frames
        .iter()
        .find(|(p, _)| p.get() >= SEGMENT)
        .cloned()
        .unwrap();
    assert!(matches!(
        expect_corrupt(&mut rw, p0, &other),
        FrameError::WrongTag { .. }
    ));
    // An uncommitted claim word.
    let mut claimed = f0.clone();
    let word = CommitWord(u64::from_le_bytes(f0[..8].try_into().unwrap()));
    claimed[..8].copy_from_slice(
        &CommitWord::new(word.len(), State::Claimed, word.tag())
            .0
            .to_le_bytes(),
    );
    expect_corrupt(&mut rw, p0, &claimed);
    // Out of order.
    assert!(matches!(
        rw.write_frame(frames[1].0, &frames[1].1),
        Err(Error::BadPosition { .. })
    ));
    assert_eq!(rw.next_position(), Position(0), "nothing was written");
    // The real frames go through, byte for byte, padding included.
    for (p, raw) in &frames {
        rw.write_frame(*p, raw).unwrap();
    }
    let mut a = primary.reader(Start::Beginning).unwrap();
    let mut b = replica.reader(Start::Beginning).unwrap();
    let mut n = 0;
    loop {
        let x = a.next().unwrap().map(|f| (f.position(), f.raw().to_vec()));
        let y = b.next().unwrap().map(|f| (f.position(), f.raw().to_vec()));
        assert_eq!(x, y);
        if x.is_none() {
            break;
        }
        n += 1;
    }
    assert_eq!(n, 3000);
    assert!(replica.verify().unwrap().is_intact());
}
