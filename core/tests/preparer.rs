//! The segment preparer thread: where it runs and that rolls work whether or not it keeps up.

mod common;

use ringway_core::{Retention, Start, Stream, StreamConfig};

/// CPUs a thread of this process may run on (`tid` "self": the calling thread).
fn allowed_cpus(tid: &str) -> Vec<usize> {
    let path = if tid == "self" {
        "/proc/thread-self/status".to_string()
    } else {
        format!("/proc/self/task/{tid}/status")
    };
    let status = std::fs::read_to_string(path).unwrap();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    let mut cpus = Vec::new();
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

/// Thread ids of this process's threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| {
            let tid = e.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            comm.starts_with(prefix).then_some(tid)
        })
        .collect()
}

fn pin_to(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is an online CPU number, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: valid set of the size passed; 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity");
}

/// A writer pinned to one CPU before it opens the stream hands its one-CPU mask to the threads
/// it spawns; the preparer must not stay there, or every segment it prepares preempts the writer.
#[test]
fn the_preparer_of_a_pinned_writer_runs_on_the_other_cpus() {
    let online = allowed_cpus("self");
    if online.len() < 2 {
        eprintln!("skipped: this test needs two CPUs (have {online:?})");
        return;
    }
    let writer_cpu = online[0];
    let handle = std::thread::spawn(move || {
        pin_to(writer_cpu);
        let root = common::temp_root();
        let cfg = StreamConfig::default().segment_size(64 << 10);
        let stream = Stream::create(root.path(), "pinned", &cfg).unwrap();
        let mut w = stream.writer().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The preparer names itself and moves once it runs; it may first have to wait for this
        // thread to leave the CPU they share.
        let placed = loop {
            w.append(&[1u8; 200]).unwrap();
            let preps = threads_named("ringway-prep-pi");
            assert!(
                preps.len() <= 1,
                "one preparer thread per writer: {preps:?}"
            );
            if let Some(tid) = preps.first() {
                let cpus = allowed_cpus(tid);
                if !cpus.contains(&writer_cpu) {
                    break cpus;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the preparer still may run on the writer's CPU {writer_cpu}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(!placed.is_empty());
        drop(w);
        // Joined by the drop; its /proc entry goes once the kernel has released the task.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !threads_named("ringway-prep-pi").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the preparer thread ends with its writer"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    });
    handle.join().unwrap();
}

/// A writer that rolls faster than the preparer polls (tiny segments, no pause) finds its next
/// segment not ready, waits for it, and loses or reorders nothing; the same with a ring whose
/// recycling a blocking cursor holds back.
#[test]
fn rolls_faster_than_the_preparer_polls_lose_nothing() {
    let root = common::temp_root();
    let cfg = StreamConfig::default()
        .segment_size(64 << 10)
        .retention(Retention::default().max_segments(4));
    let stream = Stream::create(root.path(), "fast", &cfg).unwrap();
    let mut r = stream.reader(Start::Beginning).unwrap();
    let mut w = stream.writer().unwrap();
    // 1,000 frames of 1 KiB: about 16 segments, rolled back to back.
    let mut expected = 0u32;
    let mut seen = 0u32;
    for i in 0..1000u32 {
        let mut payload = [0u8; 1000];
        payload[..4].copy_from_slice(&i.to_le_bytes());
        w.append(&payload).unwrap();
        // Keep up so retention never laps the reader.
        r.poll(usize::MAX, |f| {
            assert_eq!(f.payload()[..4], expected.to_le_bytes());
            expected += 1;
            seen += 1;
        })
        .unwrap();
    }
    while r.poll(usize::MAX, |_| seen += 1).unwrap() > 0 {}
    assert_eq!(seen, 1000);
    let segs = std::fs::read_dir(root.path().join("fast"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        })
        .count();
    assert!(
        segs <= 5,
        "retention keeps at most 4 segments and the prepared next one: {segs}"
    );
}

/// A reader that keeps up with a ring whose frames fill each segment exactly reaches the next
/// segment before the writer has rolled into it (no closing padding to wait on). It must wait
/// there, however far the writer gets before the reader looks again, and never report the
/// segment as missing: hundreds of back-to-back rolls with a blocking cursor in another thread.
#[test]
fn a_reader_arriving_before_the_writer_rolls_waits_for_the_segment() {
    let root = common::temp_root();
    let cfg = StreamConfig::default().segment_size(64 << 10).ring(4);
    Stream::create(root.path(), "exact", &cfg).unwrap();
    // 4,064-byte payloads make 4 KiB frames: 16 to a segment, none left over for padding, so the
    // writer rolls every few microseconds.
    const MESSAGES: u64 = 200_000;
    const PAYLOAD: usize = 4096 - 32;
    let dir = root.path().to_path_buf();
    let reader = std::thread::spawn(move || {
        let stream = Stream::open(&dir, "exact").unwrap();
        let opts = ringway_core::CursorOptions {
            start_if_new: Start::Beginning,
            blocking: true,
            commit_every: Some(256),
        };
        let mut r = stream.named_reader("rx", opts).unwrap();
        let mut next = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while next < MESSAGES {
            r.poll(4096, |f| {
                assert_eq!(f.payload()[..8], next.to_le_bytes());
                next += 1;
            })
            .unwrap_or_else(|e| panic!("reader at message {next}: {e}"));
            assert!(std::time::Instant::now() < deadline, "stuck at {next}");
        }
    });
    let stream = Stream::open(root.path(), "exact").unwrap();
    // The cursor exists before the writer starts, so it holds the ring back from the start.
    while stream.cursors().is_empty() {
        std::thread::yield_now();
    }
    let mut w = stream.writer().unwrap();
    let mut payload = vec![0u8; PAYLOAD];
    for i in 0..MESSAGES {
        payload[..8].copy_from_slice(&i.to_le_bytes());
        w.append(&payload).unwrap();
    }
    reader.join().unwrap();
}
