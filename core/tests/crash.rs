//! Writers SIGKILLed at random points, mostly in the middle of a claim, hundreds of times.
//!
//! A child writer process appends self-checking messages through zero-copy claims whose payload
//! it fills slowly, chunk by chunk, so most kills land between claim and commit. It mirrors its
//! state in a small shared file (phase, next uncommitted sequence), which the parent reads after
//! the kill. The parent reads the stream all along and checks, per writer: no torn payload, no
//! gap, no duplicate, and every message whose commit returned survives. The next child of that
//! writer resumes at the sequence after the last one the parent found.

mod common;

use common::*;
use ringway_core::{Error, Reader, Start, Stream, StreamConfig};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const STREAM: &str = "crash";
const SEGMENT: u64 = 64 << 10;

/// Words of a child's state file.
const PHASE: usize = 0;
const NEXT: usize = 1;
const READY: usize = 2;
const STATE_LEN: usize = 64;

/// Phases a child reports: outside a claim, filling a claim's payload, committing.
const IDLE: u64 = 0;
const FILLING: u64 = 1;
const COMMITTING: u64 = 2;

#[test]
fn child_process() {
    let Some(role) = role() else { return };
    assert_eq!(role, "writer");
    run_writer(
        Path::new(&env::<String>("RW_ROOT")),
        env("RW_ID"),
        env("RW_NEXT"),
        Path::new(&env::<String>("RW_STATE")),
    );
}

/// The child's view of its state file: a shared mapping, so the values survive SIGKILL.
struct State {
    map: memmap2::MmapRaw,
}

impl State {
    fn open(path: &Path) -> State {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("state file");
        State {
            map: memmap2::MmapRaw::map_raw(&f).expect("map state"),
        }
    }
    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i * 8 + 8 <= STATE_LEN);
        // SAFETY: the mapping is STATE_LEN bytes, page-aligned, so every 8-byte word is aligned and
        // in bounds; it lives as long as `self`, and is only accessed atomically.
        unsafe { &*(self.map.as_mut_ptr().add(i * 8) as *const AtomicU64) }
    }
    fn set(&self, i: usize, v: u64) {
        // Relaxed: the parent reads the file only after the child is dead.
        self.word(i).store(v, Ordering::Relaxed);
    }
}

fn read_state(path: &Path) -> [u64; 3] {
    let f = std::fs::File::open(path).expect("state file");
    let mut b = [0u8; 24];
    f.read_exact_at(&mut b, 0).expect("read state");
    [0, 1, 2].map(|i| u64::from_le_bytes(b[i * 8..i * 8 + 8].try_into().unwrap()))
}

/// Appends forever (until killed): claims, fills the payload in 32-byte chunks with a pause
/// after each, sometimes aborts a claim and retries the same sequence, commits.
fn run_writer(root: &Path, id: u32, mut seq: u64, state: &Path) {
    let state = State::open(state);
    state.set(NEXT, seq);
    let stream = Stream::open(root, STREAM).expect("open");
    let mut w = stream.writer().expect("writer");
    state.set(READY, 1);
    let mut rng = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut aborted = false;
    let mut payload = Vec::new();
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let len = MIN_PAYLOAD + (rng % 1500) as usize;
        payload.resize(len, 0);
        fill_payload(id, seq, &mut payload);
        let mut claim = w.try_claim(len).expect("claim");
        state.set(PHASE, FILLING);
        for (i, chunk) in payload.chunks(32).enumerate() {
            claim.payload_mut()[i * 32..i * 32 + chunk.len()].copy_from_slice(chunk);
            for _ in 0..300 {
                std::hint::spin_loop();
            }
        }
        if seq % 23 == 5 && !aborted {
            // A dropped or aborted claim must never become visible.
            aborted = true;
            if seq.is_multiple_of(2) {
                claim.abort();
            } else {
                drop(claim);
            }
            state.set(PHASE, IDLE);
            continue;
        }
        state.set(PHASE, COMMITTING);
        match claim.commit() {
            Ok(_) => {
                seq += 1;
                aborted = false;
                state.set(NEXT, seq);
            }
            // Stalled past the claim timeout (a loaded machine): the message was not written.
            Err(Error::ClaimRecovered(_)) => {}
            Err(e) => panic!("commit: {e}"),
        }
        state.set(PHASE, IDLE);
    }
}

/// One writer's child process, with its state file.
struct Victim {
    id: u32,
    child: std::process::Child,
    state: PathBuf,
}

fn spawn_writer(root: &Path, id: u32, next: u64, iter: usize) -> Victim {
    let state = root.join(format!("state-{iter}-{id}"));
    std::fs::write(&state, [0u8; STATE_LEN]).unwrap();
    let child = spawn_child(
        "child_process",
        "writer",
        &[
            ("RW_ROOT", root.join("streams").display().to_string()),
            ("RW_ID", id.to_string()),
            ("RW_NEXT", next.to_string()),
            ("RW_STATE", state.display().to_string()),
        ],
    );
    Victim { id, child, state }
}

/// The parent's reader: checks every message and tracks how long `poll` calls take.
struct Checker {
    reader: Reader,
    seq: SeqCheck,
    longest_poll: Duration,
}

impl Checker {
    fn poll(&mut self) -> usize {
        let t = Instant::now();
        let seq = &mut self.seq;
        let n = self
            .reader
            .poll(64, |f| {
                seq.record(f.position().get(), f.payload());
            })
            .expect("poll");
        self.longest_poll = self.longest_poll.max(t.elapsed());
        n
    }
}

/// Polls while waiting `d` (so reads overlap the child's writes).
fn read_for(c: &mut Checker, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if c.poll() == 0 {
            std::thread::yield_now();
        }
    }
}

fn wait_ready(v: &mut Victim) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while read_state(&v.state)[READY] == 0 {
        if let Some(status) = v.child.try_wait().unwrap() {
            panic!("writer {} exited before it was ready: {status}", v.id);
        }
        assert!(Instant::now() < deadline, "writer {} never got ready", v.id);
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Kills the child; returns its state (phase at the kill, next uncommitted sequence).
fn kill(mut v: Victim) -> (u32, u64, u64) {
    if let Some(status) = v.child.try_wait().unwrap() {
        panic!("writer {} exited on its own: {status}", v.id);
    }
    v.child.kill().unwrap(); // SIGKILL
    let status = v.child.wait().unwrap();
    assert!(
        !status.success(),
        "writer {} was not killed: {status}",
        v.id
    );
    let s = read_state(&v.state);
    let _ = std::fs::remove_file(&v.state);
    (v.id, s[PHASE], s[NEXT])
}

/// Every message the dead writer committed was read; at most the one it was committing when
/// killed is beyond what it recorded (the commit word was published, the state store was not).
fn check_committed_survived(c: &Checker, id: u32, phase: u64, committed_next: u64) {
    let read_next = c.seq.next[id as usize];
    if phase == COMMITTING {
        assert!(
            read_next == committed_next || read_next == committed_next + 1,
            "writer {id}: read up to {read_next}, committed up to {committed_next}"
        );
    } else {
        assert_eq!(
            read_next, committed_next,
            "writer {id} (phase {phase}): read up to {read_next}, committed up to {committed_next}"
        );
    }
}

fn rand_below(rng: &mut u64, n: u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng % n
}

#[derive(Default, Debug)]
struct Tally {
    kills: u64,
    mid_claim: u64,
    committing: u64,
}

impl Tally {
    fn add(&mut self, phase: u64) {
        self.kills += 1;
        match phase {
            FILLING => self.mid_claim += 1,
            COMMITTING => self.committing += 1,
            _ => {}
        }
    }
}

#[test]
fn single_writer_killed_mid_claim_hundreds_of_times() {
    const ITERATIONS: usize = 200;
    let dir = temp_root();
    let root = dir.path().join("streams");
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(4096)
        .crc(true)
        .claim_timeout(Duration::from_millis(100));
    let stream = Stream::create(&root, STREAM, &cfg).unwrap();
    let mut c = Checker {
        reader: stream.reader(Start::Beginning).unwrap(),
        seq: SeqCheck::new(1),
        longest_poll: Duration::ZERO,
    };
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    let mut tally = Tally::default();
    let started = Instant::now();
    for iter in 0..ITERATIONS {
        let mut v = spawn_writer(dir.path(), 0, c.seq.next[0], iter);
        wait_ready(&mut v);
        read_for(&mut c, Duration::from_micros(rand_below(&mut rng, 6000)));
        let (id, phase, committed) = kill(v);
        tally.add(phase);
        // Single writer: whatever was committed is visible now; the partial claim is not.
        while c.poll() > 0 {}
        check_committed_survived(&c, id, phase, committed);
        // The dead writer's claim never shows up, and nothing wedges: verify stops at the tail.
        if iter % 20 == 0 {
            let report = stream.verify().unwrap();
            assert!(report.is_intact(), "iteration {iter}: {report:?}");
            assert_eq!(report.end, c.reader.position(), "iteration {iter}");
        }
    }
    eprintln!(
        "single writer: {tally:?}, {} messages, {:?}, longest poll {:?}",
        c.seq.seen,
        started.elapsed(),
        c.longest_poll
    );
    assert!(
        tally.mid_claim * 2 > tally.kills,
        "most kills must land mid-claim: {tally:?}"
    );
    assert!(
        c.seq.seen > 1000,
        "children must make progress: {}",
        c.seq.seen
    );
    // A new writer recovers the tail: its first frame lands right after the last committed one,
    // and whatever the dead writer left behind was cleared.
    let end = c.reader.position();
    let mut w = stream.writer().unwrap();
    let seq = c.seq.next[0];
    let pos = w.append(&make_payload(0, seq)).unwrap();
    assert!(
        pos == end || (pos.get().is_multiple_of(SEGMENT) && pos.get() > end.get()),
        "new writer appends at {pos}, reader ended at {end}"
    );
    drop(w);
    while c.poll() > 0 {}
    assert_eq!(c.seq.next[0], seq + 1);
    let report = stream.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.in_progress, None);
    assert_eq!(report.frames, c.seq.seen);
    assert!(
        report.segments > 3,
        "the run must roll segments: {report:?}"
    );
    // A fresh reader sees exactly the same messages.
    let mut again = SeqCheck::new(1);
    let mut r = stream.reader(Start::Beginning).unwrap();
    while r
        .poll(1024, |f| {
            again.record(f.position().get(), f.payload());
        })
        .unwrap()
        > 0
    {}
    assert_eq!(again.next, c.seq.next);
}

#[test]
fn multi_writers_killed_mid_claim_have_their_claims_recovered_by_readers() {
    const ITERATIONS: usize = 100;
    const TIMEOUT: Duration = Duration::from_millis(50);
    let dir = temp_root();
    let root = dir.path().join("streams");
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .max_message_size(4096)
        .crc(true)
        .multi_writer(true)
        .claim_timeout(TIMEOUT);
    let stream = Stream::create(&root, STREAM, &cfg).unwrap();
    let mut c = Checker {
        reader: stream.reader(Start::Beginning).unwrap(),
        seq: SeqCheck::new(2),
        longest_poll: Duration::ZERO,
    };
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut tally = Tally::default();
    let mut longest_drain = Duration::ZERO;
    let started = Instant::now();
    for iter in 0..ITERATIONS {
        let mut a = spawn_writer(dir.path(), 0, c.seq.next[0], iter);
        let mut b = spawn_writer(dir.path(), 1, c.seq.next[1], iter);
        wait_ready(&mut a);
        wait_ready(&mut b);
        read_for(&mut c, Duration::from_micros(rand_below(&mut rng, 5000)));
        let first = kill(a);
        read_for(&mut c, Duration::from_micros(rand_below(&mut rng, 3000)));
        let second = kill(b);
        let killed = Instant::now();
        // Both writers are dead: readers must get past their abandoned claims (holes or
        // "claimed" words) once the claim timeout passes, without ever blocking in poll.
        while c.reader.position() < stream.tail() {
            if c.poll() == 0 {
                assert!(
                    killed.elapsed() < TIMEOUT * 10 + Duration::from_secs(5),
                    "iteration {iter}: reader stuck at {} (tail {})",
                    c.reader.position(),
                    stream.tail()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        longest_drain = longest_drain.max(killed.elapsed());
        for (id, phase, committed) in [first, second] {
            tally.add(phase);
            check_committed_survived(&c, id, phase, committed);
        }
        if iter % 20 == 0 {
            let report = stream.verify().unwrap();
            assert!(report.is_intact(), "iteration {iter}: {report:?}");
            assert_eq!(report.in_progress, None, "iteration {iter}");
        }
    }
    let stat = stream.stat().unwrap();
    eprintln!(
        "multi-writer: {tally:?}, {} messages, {} claims recovered, {:?}, longest poll {:?}, longest drain after kill {:?}",
        c.seq.seen,
        stat.recovered_claims,
        started.elapsed(),
        c.longest_poll,
        longest_drain
    );
    assert!(
        tally.mid_claim * 2 > tally.kills,
        "most kills must land mid-claim: {tally:?}"
    );
    assert!(
        stat.recovered_claims >= tally.mid_claim,
        "every claim abandoned mid-fill is recovered: {stat:?} {tally:?}"
    );
    // A poll never waits for the timeout; it returns and lets the caller retry.
    assert!(
        c.longest_poll < Duration::from_secs(1),
        "poll blocked for {:?}",
        c.longest_poll
    );
    let report = stream.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!(report.in_progress, None);
    assert_eq!(report.frames, c.seq.seen);
    assert!(report.paddings >= stat.recovered_claims);
    let mut again = SeqCheck::new(2);
    let mut r = stream.reader(Start::Beginning).unwrap();
    while r
        .poll(1024, |f| {
            again.record(f.position().get(), f.payload());
        })
        .unwrap()
        > 0
    {}
    assert_eq!(again.next, c.seq.next);
    // Live writers still work on the recovered stream.
    let mut w = stream.writer().unwrap();
    w.append(&make_payload(0, c.seq.next[0])).unwrap();
    while c.poll() == 0 {}
    assert_eq!(c.seq.next[0], again.next[0] + 1);
}

/// A writer that died between advancing the claim tail and publishing its "claimed" word leaves a
/// hole of zeros (a kill rarely lands in that window, so it is made by hand here): readers wait for
/// the claim timeout, then pad the hole and read on; the live writer's later frames survive.
#[test]
fn hole_left_between_claim_and_publish_is_padded_after_the_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(100);
    let dir = temp_root();
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .multi_writer(true)
        .claim_timeout(TIMEOUT);
    let stream = Stream::create(dir.path(), STREAM, &cfg).unwrap();
    let mut w = stream.writer().unwrap();
    for seq in 0..3 {
        w.append(&make_payload(0, seq)).unwrap();
    }
    // The dead writer's claim: 64 bytes of claim tail that nobody will ever publish.
    let meta = ringway_core::meta::MetaFile::open(&stream.dir().join("meta")).unwrap();
    let hole = meta.get().claim.claim_tail.fetch_add(64, Ordering::AcqRel);
    for seq in 3..6 {
        w.append(&make_payload(0, seq)).unwrap();
    }
    let mut check = SeqCheck::new(1);
    let mut r = stream.reader(Start::Beginning).unwrap();
    let t0 = Instant::now();
    while check.seen < 6 {
        r.poll(16, |f| {
            check.record(f.position().get(), f.payload());
        })
        .unwrap();
        if check.seen == 3 {
            assert_eq!(r.position().get(), hole, "the reader waits at the hole");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "hole never recovered"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        t0.elapsed() >= TIMEOUT,
        "the hole is recovered only after the timeout"
    );
    assert_eq!(stream.stat().unwrap().recovered_claims, 1);
    let report = stream.verify().unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.frames, report.paddings), (6, 1));
}

/// A live writer that stalls past the claim timeout loses its claim to a reader's recovery and is
/// told so by `commit`; the message is not in the stream.
#[test]
fn stalled_live_claim_is_recovered_and_its_commit_fails() {
    const TIMEOUT: Duration = Duration::from_millis(50);
    let dir = temp_root();
    let cfg = StreamConfig::default()
        .segment_size(SEGMENT)
        .multi_writer(true)
        .claim_timeout(TIMEOUT);
    let stream = Stream::create(dir.path(), STREAM, &cfg).unwrap();
    let mut w = stream.writer().unwrap();
    let mut r = stream.reader(Start::Beginning).unwrap();
    let mut claim = w.try_claim(64).unwrap();
    fill_payload(0, 0, claim.payload_mut());
    let t0 = Instant::now();
    while stream.stat().unwrap().recovered_claims == 0 {
        assert_eq!(r.poll(16, |_| panic!("nothing is committed")).unwrap(), 0);
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "claim never recovered"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(t0.elapsed() >= TIMEOUT);
    assert!(matches!(claim.commit(), Err(Error::ClaimRecovered(p)) if p.get() == 0));
    w.append(&make_payload(0, 1)).unwrap();
    let mut seen = Vec::new();
    while r
        .poll(16, |f| seen.push(check_payload(f.payload()).unwrap().1))
        .unwrap()
        == 0
    {}
    assert_eq!(
        seen,
        vec![1],
        "the recovered claim's bytes never reach a reader"
    );
    assert!(stream.verify().unwrap().is_intact());
}
