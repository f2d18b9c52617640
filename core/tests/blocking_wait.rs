//! Blocking waits: a reader blocked in the kernel is woken by a commit from another thread.

use ringway_core::{Start, Stream, StreamConfig};
use std::time::{Duration, Instant};

#[test]
fn blocked_reader_is_woken_by_a_commit() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "w",
        &StreamConfig::default().segment_size(1 << 20),
    )
    .unwrap();
    let mut r = s.reader(Start::End).unwrap();
    assert!(
        !r.wait(Duration::from_millis(20)).unwrap(),
        "nothing committed yet"
    );
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        let mut w = s2.writer().unwrap();
        for i in 0..50u32 {
            std::thread::sleep(Duration::from_millis(2));
            w.append(&i.to_le_bytes()).unwrap();
        }
    });
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 50 && Instant::now() < deadline {
        if r.wait(Duration::from_secs(5)).unwrap() {
            r.poll(usize::MAX, |f| {
                got.push(u32::from_le_bytes(f.payload().try_into().unwrap()))
            })
            .unwrap();
        }
    }
    t.join().unwrap();
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[test]
fn wait_returns_at_once_when_data_is_there() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "w",
        &StreamConfig::default().segment_size(1 << 20),
    )
    .unwrap();
    s.writer().unwrap().append(b"x").unwrap();
    let mut r = s.reader(Start::Beginning).unwrap();
    assert!(r.wait(Duration::from_secs(30)).unwrap());
}

#[test]
fn wake_readers_interrupts_a_blocked_wait() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "w",
        &StreamConfig::default().segment_size(1 << 20),
    )
    .unwrap();
    let mut r = s.reader(Start::End).unwrap();
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s2.wake_readers();
    });
    let started = Instant::now();
    assert!(!r.wait(Duration::from_secs(30)).unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "woken long before the timeout"
    );
    t.join().unwrap();
}

#[test]
fn multi_writer_commits_wake_blocked_readers() {
    let d = tempfile::tempdir().unwrap();
    let cfg = StreamConfig::default()
        .segment_size(1 << 20)
        .multi_writer(true);
    let s = Stream::create(d.path(), "m", &cfg).unwrap();
    let mut r = s.reader(Start::End).unwrap();
    let s2 = s.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        s2.writer().unwrap().append(b"m").unwrap();
    });
    assert!(r.wait(Duration::from_secs(30)).unwrap());
    t.join().unwrap();
}
