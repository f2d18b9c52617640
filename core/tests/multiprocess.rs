//! Several writer processes and several reader processes on one stream.
//!
//! The test binary re-executes itself for each child (`--exact child_process`), with its role in
//! the environment. Payloads are self-checking (writer id, sequence, length, checksum), so every
//! reader can tell a lost, duplicated, reordered or torn message on its own.

mod common;

use common::*;
use ringway_core::{AppendOptions, Error, Retention, Start, Stream, StreamConfig};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const STREAM: &str = "mp";
/// How long any child may run before the parent gives up on it.
const CHILD_DEADLINE: Duration = Duration::from_secs(300);

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_process() {
    let Some(role) = role() else { return };
    let root: PathBuf = env::<String>("RW_ROOT").into();
    match role.as_str() {
        "writer" => run_writer(&root),
        "reader" => run_reader(&root),
        other => panic!("unknown role {other}"),
    }
}

/// Appends `RW_COUNT` messages as writer `RW_ID`; alternates `append_with` and zero-copy claims.
/// With `RW_PACE_DIR`, stays at most `RW_PACE_BYTES` ahead of the slowest reader's progress file.
fn run_writer(root: &std::path::Path) {
    let id: u32 = env("RW_ID");
    let count: u64 = env("RW_COUNT");
    let pace: Option<(PathBuf, usize, u64)> = std::env::var("RW_PACE_DIR").ok().map(|d| {
        (
            PathBuf::from(d),
            env::<usize>("RW_PACE_READERS"),
            env::<u64>("RW_PACE_BYTES"),
        )
    });
    let stream = Stream::open(root, STREAM).expect("open stream");
    let mut w = stream.writer().expect("writer");
    let mut last = 0;
    for seq in 0..count {
        if let Some((dir, readers, ahead)) = &pace {
            if seq % 64 == 0 {
                let deadline = Instant::now() + CHILD_DEADLINE;
                while w.next_position().get() > slowest_reader(dir, *readers) + ahead {
                    assert!(Instant::now() < deadline, "readers stopped progressing");
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        let len = payload_len(id, seq);
        let pos = if seq % 2 == 0 {
            let p = make_payload(id, seq);
            let opts = AppendOptions {
                type_id: id + 1,
                schema_version: (seq % 7) as u16,
                meta: &[],
            };
            w.append_with(&opts, &p).expect("append")
        } else {
            let mut c = w.try_claim(len).expect("claim");
            fill_payload(id, seq, c.payload_mut());
            c.set_type_id(id + 1);
            c.set_schema_version((seq % 7) as u16);
            c.commit().expect("commit")
        };
        assert!(
            seq == 0 || pos.get() > last,
            "positions must grow for one writer"
        );
        last = pos.get();
    }
    println!("RESULT writer={id} count={count} last={last}");
}

/// Position the slowest reader reported (0 until every reader wrote one).
fn slowest_reader(dir: &std::path::Path, readers: usize) -> u64 {
    (0..readers)
        .map(|r| {
            std::fs::read(dir.join(format!("progress-{r}")))
                .ok()
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        })
        .min()
        .unwrap_or(0)
}

fn report_progress(dir: &std::path::Path, reader: usize, pos: u64) {
    let tmp = dir.join(format!("progress-{reader}.tmp"));
    std::fs::write(&tmp, pos.to_le_bytes()).expect("write progress");
    std::fs::rename(&tmp, dir.join(format!("progress-{reader}"))).expect("publish progress");
}

/// Reads until it has seen `RW_TOTAL` messages from `RW_WRITERS` writers, checking every one;
/// then checks that nothing but padding follows up to the stream's tail.
fn run_reader(root: &std::path::Path) {
    let writers: usize = env("RW_WRITERS");
    let total: u64 = env("RW_TOTAL");
    let pace = std::env::var("RW_PACE_DIR").ok().map(PathBuf::from);
    let reader_id: usize = env("RW_READER");
    let stream = Stream::open(root, STREAM).expect("open stream");
    let mut r = stream.reader(Start::Beginning).expect("reader");
    if let Some(dir) = &pace {
        report_progress(dir, reader_id, 0);
    }
    let mut check = SeqCheck::new(writers);
    let mut last_pos: Option<u64> = None;
    let mut idle = 0u32;
    let deadline = Instant::now() + CHILD_DEADLINE;
    while check.seen < total {
        let n = r
            .poll(256, |f| {
                let pos = f.position().get();
                assert!(last_pos.is_none_or(|l| pos > l), "positions must grow");
                last_pos = Some(pos);
                assert!(!f.is_padding());
                let (w, seq) = check.record(pos, f.payload());
                assert_eq!(f.type_id(), w + 1, "type id of writer {w} seq {seq}");
                assert_eq!(f.schema_version(), (seq % 7) as u16);
                assert_eq!(f.payload().as_ptr() as usize % 8, 0, "payload alignment");
            })
            .expect("poll");
        if n == 0 {
            assert!(
                Instant::now() < deadline,
                "reader stuck at {} after {} messages",
                r.position(),
                check.seen
            );
            idle += 1;
            if idle > 64 {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        } else {
            idle = 0;
            if let Some(dir) = &pace {
                if check.seen % 512 < n as u64 {
                    report_progress(dir, reader_id, r.position().get());
                }
            }
        }
    }
    // Exactly once: nothing but padding may follow the last expected message.
    while r.position() < stream.tail() {
        let n = r
            .poll(16, |f| {
                panic!("unexpected extra message at {}", f.position())
            })
            .expect("poll tail");
        if n == 0 {
            assert!(Instant::now() < deadline, "tail not reached");
            std::thread::yield_now();
        }
    }
    if let Some(dir) = &pace {
        report_progress(dir, reader_id, u64::MAX / 2);
    }
    println!(
        "RESULT reader={reader_id} seen={} end={}",
        check.seen,
        r.position()
    );
}

fn spawn_readers(
    root: &std::path::Path,
    readers: usize,
    writers: usize,
    total: u64,
    pace: bool,
) -> Vec<std::process::Child> {
    (0..readers)
        .map(|i| {
            let mut envs = vec![
                ("RW_ROOT", root.display().to_string()),
                ("RW_WRITERS", writers.to_string()),
                ("RW_TOTAL", total.to_string()),
                ("RW_READER", i.to_string()),
            ];
            if pace {
                envs.push(("RW_PACE_DIR", root.display().to_string()));
            }
            spawn_child("child_process", "reader", &envs)
        })
        .collect()
}

#[test]
fn four_writer_processes_three_reader_processes_one_million_messages() {
    const WRITERS: u32 = 4;
    const PER_WRITER: u64 = 250_000;
    const READERS: usize = 3;
    let total = WRITERS as u64 * PER_WRITER;
    let root = temp_root();
    let cfg = StreamConfig::default()
        .segment_size(1 << 20)
        .max_message_size(4096)
        .multi_writer(true);
    let stream = Stream::create(root.path(), STREAM, &cfg).unwrap();
    let started = Instant::now();
    let readers = spawn_readers(root.path(), READERS, WRITERS as usize, total, false);
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            spawn_child(
                "child_process",
                "writer",
                &[
                    ("RW_ROOT", root.path().display().to_string()),
                    ("RW_ID", id.to_string()),
                    ("RW_COUNT", PER_WRITER.to_string()),
                ],
            )
        })
        .collect();
    let mut all: Vec<(String, std::process::Child)> = Vec::new();
    all.extend(
        writers
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("writer {i}"), c)),
    );
    all.extend(
        readers
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("reader {i}"), c)),
    );
    let results = wait_all(all, CHILD_DEADLINE);
    let tail = stream.tail();
    for lines in &results[..WRITERS as usize] {
        assert_eq!(result_field(&lines[0], "count"), PER_WRITER);
    }
    for lines in &results[WRITERS as usize..] {
        assert_eq!(lines.len(), 1, "each reader reports once");
        assert_eq!(result_field(&lines[0], "seen"), total);
        assert_eq!(result_field(&lines[0], "end"), tail.get());
    }
    eprintln!(
        "{total} messages, {WRITERS} writer and {READERS} reader processes: {:?}",
        started.elapsed()
    );
    // The stream as a whole: intact, every message counted, nothing recovered (nobody died).
    let report = stream.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.frames, total);
    assert_eq!(report.in_progress, None);
    assert_eq!(report.end, tail);
    let stat = stream.stat().unwrap();
    assert_eq!(stat.messages, total);
    assert_eq!(stat.recovered_claims, 0);
    assert!(stat.segments > 10, "the run must roll segments: {stat:?}");
    // Every writer released its slot on exit.
    assert!(stat.writers.is_empty(), "{:?}", stat.writers);
}

#[test]
fn single_writer_process_with_reader_processes_across_segment_rolls_and_retention() {
    const COUNT: u64 = 300_000;
    const READERS: usize = 2;
    const SEGMENT: u64 = 64 << 10;
    let root = temp_root();
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(1024)
        .crc(true)
        .retention(Retention::default().max_segments(8));
    let stream = Stream::create(root.path(), STREAM, &cfg).unwrap();
    let readers = spawn_readers(root.path(), READERS, 1, COUNT, true);
    // Readers publish their first progress before the writer may start (so none is lapped).
    let deadline = Instant::now() + Duration::from_secs(60);
    while (0..READERS).any(|r| !root.path().join(format!("progress-{r}")).exists()) {
        assert!(Instant::now() < deadline, "readers did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    let started = Instant::now();
    let writer = spawn_child(
        "child_process",
        "writer",
        &[
            ("RW_ROOT", root.path().display().to_string()),
            ("RW_ID", "0".to_string()),
            ("RW_COUNT", COUNT.to_string()),
            ("RW_PACE_DIR", root.path().display().to_string()),
            ("RW_PACE_READERS", READERS.to_string()),
            // Three segments ahead of the slowest reader: retention (8 segments) never laps it.
            ("RW_PACE_BYTES", (3 * SEGMENT).to_string()),
        ],
    );
    let mut all = vec![("writer".to_string(), writer)];
    all.extend(
        readers
            .into_iter()
            .enumerate()
            .map(|(i, c)| (format!("reader {i}"), c)),
    );
    let results = wait_all(all, CHILD_DEADLINE);
    let last = result_field(&results[0][0], "last");
    let tail = stream.tail();
    assert!(tail.get() > last);
    for lines in &results[1..] {
        assert_eq!(result_field(&lines[0], "seen"), COUNT);
        assert_eq!(result_field(&lines[0], "end"), tail.get());
    }
    eprintln!(
        "{COUNT} messages, single writer process, {READERS} reader processes, 64 KiB segments: {:?}",
        started.elapsed()
    );
    // Retention ran while the readers read: old segments are gone and their positions are lapped.
    let stat = stream.stat().unwrap();
    assert!(stat.deleted_segments > 100, "{stat:?}");
    assert!(
        stat.segments <= 9,
        "retention keeps 8 segments (+1 prepared): {stat:?}"
    );
    assert_eq!(stat.messages, COUNT);
    let first = stream.first_position();
    assert!(first.get() > 0);
    match stream.reader(Start::Position(ringway_core::Position(0))) {
        Err(Error::Lapped { requested, oldest }) => {
            assert_eq!(requested.get(), 0);
            assert_eq!(oldest, first);
        }
        other => panic!("expected Lapped, got {other:?}"),
    }
    // What retention kept is intact (CRC checked) and readable from the beginning.
    let report = stream.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.first, first);
    assert_eq!(report.end, tail);
    let mut r = stream.reader(Start::Beginning).unwrap();
    let mut kept = 0u64;
    let mut prev = None;
    while r
        .poll(1024, |f| {
            let (_, seq) = check_payload(f.payload()).unwrap();
            assert!(prev.is_none_or(|p| seq == p + 1));
            prev = Some(seq);
            kept += 1;
        })
        .unwrap()
        > 0
    {}
    assert_eq!(prev, Some(COUNT - 1));
    assert_eq!(kept, report.frames);
}
