//! Consumer groups: competing consumers, redelivery after a member is SIGKILLed, dead letters.

use ringway_core::{GroupOptions, Start, Stream, StreamConfig};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ROLE: &str = "RINGWAY_GROUP_TEST_ROLE";

fn spawn(role: &str, root: &Path, out: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_entry", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env("RINGWAY_TEST_ROOT", root)
        .env("RINGWAY_TEST_OUT", out)
        .spawn()
        .unwrap()
}

/// Entry point of the child processes (a no-op in the normal test run).
#[test]
fn child_entry() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let root = PathBuf::from(std::env::var("RINGWAY_TEST_ROOT").unwrap());
    let out = PathBuf::from(std::env::var("RINGWAY_TEST_OUT").unwrap());
    let s = Stream::open(&root, "jobs").unwrap();
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&out)
        .unwrap();
    match role.as_str() {
        "member" => {
            let mut m = s.group_member("workers", GroupOptions::default()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let n = m
                    .poll(1, |d| {
                        std::thread::sleep(Duration::from_micros(300));
                        // One write(2) per handled message: survives SIGKILL right after.
                        log.write_all(format!("{}\n", d.frame.position()).as_bytes())
                            .unwrap();
                    })
                    .unwrap();
                if n == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        "suicide" => {
            let mut m = s.group_member("workers", GroupOptions::default()).unwrap();
            m.poll(1, |d| {
                log.write_all(format!("{} {}\n", d.frame.position(), d.count).as_bytes())
                    .unwrap();
                // SAFETY: plain syscall; the process dies holding the message.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            })
            .unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn members_share_the_work_exactly_once_while_alive() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "jobs",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let mut w = s.writer().unwrap();
    for i in 0..5000u32 {
        w.append(&i.to_le_bytes()).unwrap();
    }
    let mut a = s.group_member("workers", GroupOptions::default()).unwrap();
    let mut b = s.group_member("workers", GroupOptions::default()).unwrap();
    let mut seen = Vec::new();
    loop {
        let n = a.poll(7, |d| seen.push(d.frame.position().get())).unwrap()
            + b.poll(5, |d| seen.push(d.frame.position().get())).unwrap();
        if n == 0 {
            break;
        }
    }
    assert_eq!(seen.len(), 5000);
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 5000, "no message delivered twice");
    assert_eq!(a.stat().acked, 5000);
}

#[test]
fn killed_members_messages_are_redelivered_and_nothing_is_lost() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "jobs",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let total = 3000u32;
    let mut w = s.writer().unwrap();
    let mut positions = Vec::new();
    for i in 0..total {
        positions.push(w.append(&i.to_le_bytes()).unwrap().get());
    }
    let outs: Vec<PathBuf> = (0..4).map(|i| d.path().join(format!("out{i}"))).collect();
    let mut children: Vec<Child> = (0..3)
        .map(|i| spawn("member", d.path(), &outs[i]))
        .collect();
    let mut kills = 0;
    for victim in children.iter_mut().take(2) {
        std::thread::sleep(Duration::from_millis(150));
        victim.kill().unwrap();
        victim.wait().unwrap();
        kills += 1;
    }
    children.push(spawn("member", d.path(), &outs[3]));
    let deadline = Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for o in &outs {
            if let Ok(t) = std::fs::read_to_string(o) {
                for l in t.lines().filter(|l| !l.is_empty()) {
                    *counts.entry(l.parse().unwrap()).or_default() += 1;
                }
            }
        }
        if counts.len() == total as usize || Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for c in &mut children {
        let _ = c.kill();
        let _ = c.wait();
    }
    let missing: Vec<_> = positions
        .iter()
        .filter(|p| !counts.contains_key(p))
        .collect();
    assert!(missing.is_empty(), "lost messages: {missing:?}");
    let dups: u32 = counts.values().map(|c| c - 1).sum();
    assert!(
        dups <= kills,
        "{dups} duplicates after {kills} kills: only unacknowledged messages repeat"
    );
}

#[test]
fn poison_message_goes_to_the_dead_letter_stream_after_max_deliveries() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "jobs",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let dlq = Stream::create(
        d.path(),
        "jobs-dlq",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let mut w = s.writer().unwrap();
    w.append(b"poison").unwrap();
    w.append(b"fine").unwrap();
    let out = d.path().join("suicides");
    for _ in 0..2 {
        let status = spawn("suicide", d.path(), &out).wait().unwrap();
        assert!(!status.success());
    }
    let log = std::fs::read_to_string(&out).unwrap();
    assert_eq!(log, "0 1\n0 2\n", "the same message, delivered twice");
    let opts = GroupOptions {
        max_deliveries: Some(2),
        dead_letter: Some(dlq.clone()),
        ..Default::default()
    };
    let mut m = s.group_member("workers", opts).unwrap();
    let mut handled = Vec::new();
    while m
        .poll(10, |d| handled.push((d.frame.payload().to_vec(), d.count)))
        .unwrap()
        > 0
    {}
    assert_eq!(handled, vec![(b"fine".to_vec(), 1)]);
    let mut r = dlq.reader(Start::Beginning).unwrap();
    assert_eq!(r.next().unwrap().unwrap().payload(), b"poison");
    assert_eq!(m.stat().dead_lettered, 1);
    assert_eq!(m.stat().redelivered, 2);
}

/// A typed job for the typed-subscriber test.
#[derive(rkyv::Archive, rkyv::Serialize, Debug, Clone, Copy, PartialEq)]
struct Job {
    id: u64,
}
ringway_core::message!(Job, type_id = 0x4a4f_4221, schema = 1);

#[test]
fn typed_subscribers_over_a_group_see_redelivery_counts() {
    use ringway_core::typed::{Access, Publisher, Subscriber};
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "jobs",
        &StreamConfig::default().segment_size(1 << 16),
    )
    .unwrap();
    let mut p = Publisher::<Job>::new(s.writer().unwrap());
    for id in 0..3 {
        p.send(&Job { id }).unwrap();
    }
    // A member takes the first job and dies holding it.
    let out = d.path().join("suicides");
    assert!(!spawn("suicide", d.path(), &out).wait().unwrap().success());
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "0 1\n");
    let member = s.group_member("workers", GroupOptions::default()).unwrap();
    let mut sub = Subscriber::<Job, _>::from_source(&s, member, Access::Validated);
    let mut got = Vec::new();
    while sub
        .poll(10, |j| got.push((j.id.to_native(), j.delivery_count())))
        .unwrap()
        > 0
    {}
    got.sort_unstable();
    assert_eq!(got, vec![(0, 2), (1, 1), (2, 1)]);
}
