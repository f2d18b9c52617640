//! The replica-acknowledgement table across processes: recorders in child processes, readers in
//! the parent, the byte layout `docs/format.md` documents, and slots of dead recorders reclaimed.
//!
//! The test binary re-executes itself for each child (`--exact child_process`), with its role in
//! the environment.

mod common;

use common::*;
use ringway_core::replica_acks::{REPLICA_ACK_SLOTS, REPLICA_ACK_TABLE_OFFSET};
use ringway_core::{ReplicaAckError, Stream, StreamConfig};
use std::path::PathBuf;
use std::time::Duration;

const STREAM: &str = "acks";
const CHILD_DEADLINE: Duration = Duration::from_secs(120);
/// Positions a child records per receiver.
const STEPS: u64 = 200_000;

/// Entry point of every child process; a no-op in a normal test run.
#[test]
fn child_process() {
    let Some(role) = role() else { return };
    let root: PathBuf = env::<String>("RW_ROOT").into();
    let stream = Stream::open(&root, STREAM).expect("open stream");
    let acks = stream.replica_acks();
    let id: u64 = env("RW_ID");
    // Receiver `id` acknowledges positions id*1_000_000 + 1 ..= + STEPS, in order.
    for p in 1..=STEPS {
        acks.record(id, id * 1_000_000 + p).expect("record");
    }
    match role.as_str() {
        "signal" => {
            // Records once the parent sleeps (it says so with a file), to wake it.
            let ready: PathBuf = env::<String>("RW_READY").into();
            while !ready.exists() {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            acks.record(id, u64::MAX / 2).expect("record");
        }
        "release" => assert!(acks.release(id)),
        "crash" => {} // exits holding its slot, as a killed sender would
        other => panic!("unknown role {other}"),
    }
    println!("RESULT done=1");
}

fn create(root: &std::path::Path) -> Stream {
    Stream::create(root, STREAM, &StreamConfig::default().segment_size(1 << 16)).unwrap()
}

#[test]
fn recorders_in_other_processes_are_read_consistently() {
    let root = temp_root();
    let stream = create(root.path());
    let acks = stream.replica_acks();
    let root_s = root.path().display().to_string();
    let mut children = vec![
        (
            "release".to_string(),
            spawn_child(
                "child_process",
                "release",
                &[("RW_ROOT", root_s.clone()), ("RW_ID", "1".into())],
            ),
        ),
        (
            "crash".to_string(),
            spawn_child(
                "child_process",
                "crash",
                &[("RW_ROOT", root_s.clone()), ("RW_ID", "2".into())],
            ),
        ),
    ];
    let mut seen = [0u64; 3];
    let mut v = Vec::new();
    // Read while they record: every entry pairs a receiver with one of its own positions, and a
    // receiver's position never goes back.
    while children
        .iter_mut()
        .any(|(_, c)| c.try_wait().unwrap().is_none())
    {
        acks.snapshot(&mut v);
        for e in &v {
            let id = e.receiver_id;
            assert!(id == 1 || id == 2, "{e:?}");
            let base = id * 1_000_000;
            assert!(e.position > base && e.position <= base + STEPS, "{e:?}");
            assert!(e.position >= seen[id as usize], "{e:?} went back");
            seen[id as usize] = e.position;
            assert_ne!(e.owner_pid, std::process::id(), "recorded by a child");
        }
    }
    wait_all(children, CHILD_DEADLINE);
    // The releasing child's receiver is gone; the crashed one's acknowledgement stays (it did
    // hold those bytes) until its slot is needed.
    let v = acks.entries();
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].receiver_id, 2);
    assert_eq!(v[0].position, 2_000_000 + STEPS);
    assert_eq!(acks.acknowledged_by(2_000_000 + STEPS), 1);
    assert_eq!(acks.quorum_position(1), Some(2_000_000 + STEPS));
    // Fill the table from this (live) process: the dead recorder's slot is reclaimed for the
    // last receiver, and one more is refused with a typed error.
    for id in 100..100 + REPLICA_ACK_SLOTS as u64 {
        acks.record(id, 8).unwrap();
    }
    assert!(acks.entries().iter().all(|e| e.receiver_id != 2));
    assert_eq!(
        acks.record(999, 8),
        Err(ReplicaAckError::TableFull {
            slots: REPLICA_ACK_SLOTS
        })
    );
    assert_eq!(acks.acknowledged_by(8), REPLICA_ACK_SLOTS);
}

#[test]
fn table_bytes_match_the_documented_layout() {
    let root = temp_root();
    let stream = create(root.path());
    let meta = root.path().join(STREAM).join("meta");
    let bytes = std::fs::read(&meta).unwrap();
    // A fresh file (as every file written before the table existed) holds zeros there: no
    // acknowledgements.
    assert!(
        bytes[REPLICA_ACK_TABLE_OFFSET..REPLICA_ACK_TABLE_OFFSET + 64 * REPLICA_ACK_SLOTS]
            .iter()
            .all(|&b| b == 0)
    );
    assert!(stream.replica_acks().entries().is_empty());
    let acks = stream.replica_acks();
    acks.record(0x1122_3344_5566_7788, 4096).unwrap();
    let b = std::fs::read(&meta).unwrap();
    let word = |off: usize| u64::from_le_bytes(b[off..off + 8].try_into().unwrap());
    let slot = REPLICA_ACK_TABLE_OFFSET;
    assert_eq!(word(slot), 0x1122_3344_5566_7788, "receiver id at +0");
    assert_eq!(word(slot + 8), 4096, "position at +8");
    assert!(
        word(slot + 16) > 1_600_000_000_000_000_000,
        "updated ns at +16"
    );
    assert_eq!(
        word(slot + 24),
        u64::from(std::process::id()),
        "owner pid at +24"
    );
    assert_ne!(word(slot + 32), 0, "owner start time at +32");
    assert!(b[slot + 40..slot + 64].iter().all(|&x| x == 0), "reserved");
    // The stream still opens and works as before.
    let s2 = Stream::open(root.path(), STREAM).unwrap();
    s2.writer().unwrap().append(b"x").unwrap();
    assert_eq!(s2.replica_acks().acknowledged_by(4096), 1);
}

#[test]
fn a_record_in_another_process_wakes_a_sleeping_waiter() {
    let root = temp_root();
    let stream = create(root.path());
    let acks = stream.replica_acks();
    // A change made before the wait: no sleep at all.
    let seen = acks.change_count();
    acks.record(5, 8).unwrap();
    acks.wait_for_change(seen, Duration::from_secs(3600));
    let ready = root.path().join("ready");
    let child = spawn_child(
        "child_process",
        "signal",
        &[
            ("RW_ROOT", root.path().display().to_string()),
            ("RW_ID", "3".into()),
            ("RW_READY", ready.display().to_string()),
        ],
    );
    let watchdog = Duration::from_secs(120);
    let start = std::time::Instant::now();
    let mut seen = acks.change_count();
    std::fs::write(&ready, b"").unwrap();
    // Sleep until the child's record (STEPS records first, then the signal role's one).
    while acks.acknowledged_by(u64::MAX / 2) == 0 {
        acks.wait_for_change(seen, watchdog);
        assert!(
            start.elapsed() < watchdog,
            "not woken by the child's records"
        );
        seen = acks.change_count();
    }
    wait_child(child, "signal", CHILD_DEADLINE);
}
