//! Helpers shared by the integration tests: self-checking payloads, child processes, temp roots.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Smallest payload [`fill_payload`] produces.
pub const MIN_PAYLOAD: usize = 20;

/// Payload length of message `seq` of writer `writer` (20..=80 bytes, varying so frames differ in stride).
pub fn payload_len(writer: u32, seq: u64) -> usize {
    MIN_PAYLOAD + ((writer as u64 * 7 + seq * 13) % 61) as usize
}

fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn filler(writer: u32, seq: u64, i: usize) -> u8 {
    (seq as u8)
        .wrapping_mul(31)
        .wrapping_add(i as u8)
        .wrapping_add((writer as u8).wrapping_mul(17))
}

/// Fills `buf` (of any length >= [`MIN_PAYLOAD`]) with a self-checking payload:
/// writer id, sequence, length, filler bytes, and an FNV-1a checksum over everything before it.
pub fn fill_payload(writer: u32, seq: u64, buf: &mut [u8]) {
    let len = buf.len();
    assert!(len >= MIN_PAYLOAD);
    buf[0..4].copy_from_slice(&writer.to_le_bytes());
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    buf[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    for (i, b) in buf[16..len - 4].iter_mut().enumerate() {
        *b = filler(writer, seq, i);
    }
    let sum = fnv1a(&buf[..len - 4]);
    buf[len - 4..].copy_from_slice(&sum.to_le_bytes());
}

/// Builds the payload of message `seq` of `writer` with its standard length.
pub fn make_payload(writer: u32, seq: u64) -> Vec<u8> {
    let mut v = vec![0u8; payload_len(writer, seq)];
    fill_payload(writer, seq, &mut v);
    v
}

/// Checks a payload built by [`fill_payload`]; returns `(writer, seq)` or what is wrong.
pub fn check_payload(p: &[u8]) -> Result<(u32, u64), String> {
    if p.len() < MIN_PAYLOAD {
        return Err(format!("payload of {} bytes is too short", p.len()));
    }
    let len = u32::from_le_bytes(p[12..16].try_into().unwrap()) as usize;
    if len != p.len() {
        return Err(format!("payload says {len} bytes, frame holds {}", p.len()));
    }
    let sum = u32::from_le_bytes(p[len - 4..].try_into().unwrap());
    if sum != fnv1a(&p[..len - 4]) {
        return Err("payload checksum mismatch (torn or partial payload)".into());
    }
    let writer = u32::from_le_bytes(p[0..4].try_into().unwrap());
    let seq = u64::from_le_bytes(p[4..12].try_into().unwrap());
    for (i, &b) in p[16..len - 4].iter().enumerate() {
        if b != filler(writer, seq, i) {
            return Err(format!(
                "filler byte {i} of writer {writer} seq {seq} is wrong"
            ));
        }
    }
    Ok((writer, seq))
}

/// A temporary stream root, on tmpfs when available (the journal's home) so tests are fast.
pub fn temp_root() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("ringway-test-")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::Builder::new()
        .prefix("ringway-test-")
        .tempdir()
        .expect("temp dir")
}

/// Environment variable telling a re-executed test binary which child role to play.
pub const ROLE: &str = "RINGWAY_TEST_ROLE";

/// The role this process was started for, if it is a child.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Reads a required environment variable of a child and parses it.
pub fn env<T: std::str::FromStr>(key: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    std::env::var(key)
        .unwrap_or_else(|_| panic!("child needs {key}"))
        .parse()
        .unwrap_or_else(|e| panic!("bad {key}: {e:?}"))
}

/// Re-executes this test binary to run only the `#[test]` named `test` (a child entry point),
/// playing `role`, with extra environment variables.
pub fn spawn_child(test: &str, role: &str, envs: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1", "-q"])
        .env(ROLE, role)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child test process")
}

/// Waits for a child with a deadline; returns its stdout lines starting with `RESULT `.
pub fn wait_child(child: Child, what: &str, deadline: Duration) -> Vec<String> {
    wait_all(vec![(what.to_string(), child)], deadline).remove(0)
}

/// Waits for all children; as soon as one fails (or the deadline passes) kills the others and
/// panics with that child's output. Returns each child's `RESULT ` lines, in order.
pub fn wait_all(mut children: Vec<(String, Child)>, deadline: Duration) -> Vec<Vec<String>> {
    use std::io::Read;
    let start = Instant::now();
    let mut results: Vec<Option<Vec<String>>> = children.iter().map(|_| None).collect();
    loop {
        let mut failure = None;
        for (i, (what, child)) in children.iter_mut().enumerate() {
            if results[i].is_some() {
                continue;
            }
            if let Some(status) = child.try_wait().expect("wait child") {
                let mut out = String::new();
                if let Some(mut s) = child.stdout.take() {
                    let _ = s.read_to_string(&mut out);
                }
                if !status.success() {
                    failure = Some(format!("{what} failed ({status}); output:\n{out}"));
                    break;
                }
                results[i] = Some(
                    out.lines()
                        .filter_map(|l| l.strip_prefix("RESULT ").map(str::to_string))
                        .collect(),
                );
            }
        }
        if failure.is_none() && start.elapsed() > deadline {
            let late: Vec<_> = children
                .iter()
                .zip(&results)
                .filter(|(_, r)| r.is_none())
                .map(|((w, _), _)| w.clone())
                .collect();
            failure = Some(format!("{late:?} did not finish within {deadline:?}"));
        }
        if let Some(msg) = failure {
            for (_, c) in children.iter_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
            panic!("{msg}");
        }
        if results.iter().all(Option::is_some) {
            return results.into_iter().map(Option::unwrap).collect();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Parses `key=value` pairs of a `RESULT` line.
pub fn result_field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
        .parse()
        .expect("numeric field")
}

/// Per-writer sequence bookkeeping for a reader that must see every message exactly once, in order.
#[derive(Debug, Default)]
pub struct SeqCheck {
    /// Next expected sequence per writer id.
    pub next: Vec<u64>,
    /// Messages seen.
    pub seen: u64,
}

impl SeqCheck {
    /// A checker for `writers` writers, all starting at sequence 0.
    pub fn new(writers: usize) -> Self {
        SeqCheck {
            next: vec![0; writers],
            seen: 0,
        }
    }

    /// Records a payload; panics on a torn payload, a gap, a duplicate or reordering.
    pub fn record(&mut self, pos: u64, payload: &[u8]) -> (u32, u64) {
        let (w, seq) =
            check_payload(payload).unwrap_or_else(|e| panic!("bad payload at position {pos}: {e}"));
        let next = self
            .next
            .get_mut(w as usize)
            .unwrap_or_else(|| panic!("unknown writer {w} at position {pos}"));
        assert_eq!(
            seq, *next,
            "writer {w}: expected sequence {} at position {pos}, got {seq} (lost, duplicated or reordered)",
            *next
        );
        *next += 1;
        self.seen += 1;
        (w, seq)
    }
}
