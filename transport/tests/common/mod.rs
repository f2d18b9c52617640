//! Shared harness: primary and replica streams in a temporary root, sender and receiver threads.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ringway_core::{Start, Stream, StreamConfig};
use ringway_transport::journal::core_stream::{CoreSource, CoreStore};
use ringway_transport::udp::{
    ReceiverConfig, ReceiverStats, SenderConfig, SenderStats, UdpReceiver, UdpSender,
};

pub const SEGMENT: u64 = 1 << 20;

pub fn temp_root() -> tempfile::TempDir {
    let base = Path::new("/dev/shm");
    if base.is_dir() {
        tempfile::tempdir_in(base).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

pub fn primary(root: &Path, name: &str) -> Stream {
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(16 << 10)
        .crc(true);
    Stream::create(root, name, &cfg).unwrap()
}

/// Deterministic payload `i` of varied size; every 500th is larger than one datagram.
pub fn payload(i: u64) -> Vec<u8> {
    let len = if i % 500 == 499 {
        5000
    } else {
        8 + (i * 37 % 200) as usize
    };
    let mut v = vec![(i % 251) as u8; len];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

pub struct Running<S> {
    pub stop: Arc<AtomicBool>,
    pub handle: Option<JoinHandle<ringway_transport::Result<()>>>,
    pub stats: Arc<S>,
}

impl<S> Running<S> {
    pub fn stop(mut self) -> ringway_transport::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.take().unwrap().join().unwrap()
    }
}

pub fn start_receiver(
    root: &Path,
    cfg: ReceiverConfig,
) -> (Running<ReceiverStats>, std::net::SocketAddr) {
    let mut r = UdpReceiver::new(Box::new(CoreStore::new(root, None)), cfg).unwrap();
    let addr = r.local_addr().unwrap();
    let stats = r.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || r.run(&s2));
    (
        Running {
            stop,
            handle: Some(handle),
            stats,
        },
        addr,
    )
}

pub fn start_sender(root: &Path, name: &str, cfg: SenderConfig) -> Running<SenderStats> {
    let src = CoreSource::open(root, name).unwrap();
    let mut s = UdpSender::new(Box::new(src), cfg).unwrap();
    let stats = s.stats();
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let handle = std::thread::spawn(move || s.run(&s2));
    Running {
        stop,
        handle: Some(handle),
        stats,
    }
}

/// Waits until the replica named `name` under `root` reaches `pos`.
pub fn wait_replica(root: &Path, name: &str, pos: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let at = Stream::open(root, name).map(|s| s.tail().0).unwrap_or(0);
        if at >= pos {
            return at;
        }
        assert!(
            Instant::now() < deadline,
            "replica '{name}' stuck at {at}, primary at {pos}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// Compares the segment bytes of primary and replica over `[0, end)`; returns bytes compared.
pub fn assert_identical(primary_dir: &Path, replica_dir: &Path, end: u64) -> u64 {
    assert_identical_range(primary_dir, replica_dir, 0, end)
}

/// Compares the segment bytes of primary and replica over `[from, end)` (`from` a segment
/// boundary); returns bytes compared.
pub fn assert_identical_range(primary_dir: &Path, replica_dir: &Path, from: u64, end: u64) -> u64 {
    let mut compared = 0;
    for p in segment_files(primary_dir) {
        let start: u64 = p.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        if start >= end || start < from {
            continue;
        }
        let r = replica_dir.join(p.file_name().unwrap());
        let a = std::fs::read(&p).unwrap();
        let b = std::fs::read(&r).unwrap_or_else(|e| panic!("replica lacks {}: {e}", r.display()));
        let n = (end - start).min(SEGMENT) as usize;
        if a[..n] != b[..n] {
            let first = (0..n).find(|&i| a[i] != b[i]).unwrap();
            panic!(
                "segment {start}: first difference at position {}",
                start + first as u64
            );
        }
        compared += n as u64;
    }
    assert_eq!(compared, end - from, "segments cover the replicated range");
    compared
}

/// Reads every message of the replica and checks it against `payload(i)`; returns the count.
pub fn check_replica_messages(root: &Path, name: &str, expected: u64) {
    let s = Stream::open(root, name).unwrap();
    let report = s.verify().unwrap();
    assert!(report.is_intact(), "verify: {:?}", report.problem);
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut i = 0u64;
    loop {
        let n = r
            .poll(1024, |f| {
                assert_eq!(f.payload(), &payload(i)[..], "message {i}");
                i += 1;
            })
            .unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(i, expected);
}

/// Runs `ip ARGS`; whether it succeeded.
pub fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Moves the calling thread into network namespace `name` (sockets made afterwards live there).
pub fn enter(name: &str) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
    // SAFETY: a valid namespace fd; setns affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}: {}", std::io::Error::last_os_error());
}

/// Runs `f` on a new thread, inside namespace `ns` when given.
pub fn spawn_in<F>(ns: Option<String>, f: F) -> JoinHandle<ringway_transport::Result<()>>
where
    F: FnOnce() -> ringway_transport::Result<()> + Send + 'static,
{
    std::thread::spawn(move || {
        if let Some(n) = ns {
            enter(&n);
        }
        f()
    })
}
