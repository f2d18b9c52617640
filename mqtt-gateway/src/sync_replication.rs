//! Synchronous replication: QoS 1 PUBACK and QoS 2 PUBREC wait until `replication.sync_replicas`
//! replicas hold the message.
//!
//! Replication senders (`ringway replicate`, usually another process) record what each receiver
//! acknowledged in the stream's replica-acknowledgement table, in its `meta` file
//! ([`ringway_core::ReplicaAcks`]), and wake whoever sleeps on the table's change signal (a
//! futex word in the same file). Here one watcher thread per stream reads that table, only
//! while a connection waits on the stream, and publishes the *quorum position* (the highest
//! position at least `sync_replicas` replicas hold) on a [`tokio::sync::watch`] channel.
//! A connection holds its acknowledgements (in the order the messages arrived) with the position
//! after each message as target, and keeps serving its socket meanwhile; it sends them when
//! the quorum position reaches the target, and treats them as failed at their deadline.
//!
//! **Why a thread on a futex, not a tokio interval**: the table is shared memory written by
//! another process, so there is no in-process event to await, and polling it on tokio's timer
//! wheel (1 ms resolution) would add up to a millisecond to every acknowledgement; a thread
//! polling every 100 µs (the first version) still added ~75 µs on average and woke 10,000 times
//! a second. The watcher instead sleeps in `FUTEX_WAIT` on the table's change count and a sender
//! wakes it when it records an acknowledgement, so the wait ends one wake-up after the STATUS
//! arrived and costs no CPU in between. It sleeps at most [`MAX_WAIT`] at a time (what a sender
//! without the change signal costs), and parks when no connection waits for a position the
//! replicas have not reached, or every wait's deadline has passed.
//!
//! A batch of PUBLISHes from one read waits once, for its last position: the watcher is asked for
//! the highest target, and every acknowledgement whose target the quorum position reached goes
//! out in the same write.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::thread::Thread;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::ReplicationConfig;
use crate::journal::{Journal, ReplicaProgress};

/// Longest sleep on the change signal between two reads of the table while a connection waits.
pub const MAX_WAIT: Duration = Duration::from_millis(10);
/// How long an idle watcher parks before it looks whether its stream is still wanted (the
/// gateway's shutdown also unparks it).
const IDLE_PARK: Duration = Duration::from_secs(1);

/// One stream's watcher, shared by the connections waiting on it.
pub struct StreamWatch {
    stream: Arc<str>,
    progress: Option<Arc<dyn ReplicaProgress>>,
    required: usize,
    /// Quorum position as last read (0 until read, or while fewer replicas are recorded).
    quorum: watch::Sender<u64>,
    /// The highest target any connection asked for: the watcher polls while the quorum position
    /// is below it. Only grows (`fetch_max`).
    want: AtomicU64,
    /// Until when (ns after `epoch`) someone waits: the latest deadline of any wait. Past it the
    /// watcher stops polling even if the replicas never reached `want`. Only grows.
    until_ns: AtomicU64,
    epoch: Instant,
    /// Reads of the table so far (`Relaxed`: a statistic).
    polls: AtomicU64,
    /// The watcher thread (set right after the watch is built, before anyone can wait on it).
    thread: OnceLock<Thread>,
}

impl std::fmt::Debug for StreamWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamWatch")
            .field("stream", &self.stream)
            .field("quorum", &*self.quorum.borrow())
            .finish_non_exhaustive()
    }
}

impl StreamWatch {
    /// Asks the watcher to poll until the quorum position reaches `target` or `deadline`.
    fn want(&self, target: u64, deadline: Instant) {
        let until = deadline.saturating_duration_since(self.epoch).as_nanos() as u64;
        // AcqRel: the watcher loads both (Acquire) after publishing a quorum position; either
        // it sees them and keeps polling, or the unpark below wakes it from its park.
        self.until_ns.fetch_max(until, Ordering::AcqRel);
        self.want.fetch_max(target, Ordering::AcqRel);
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// The quorum position as last read.
    pub fn quorum(&self) -> u64 {
        *self.quorum.borrow()
    }

    /// A receiver of quorum positions.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.quorum.subscribe()
    }

    /// (receiver id, position) of the replicas recorded now, for a failure's reason string.
    pub fn replicas(&self) -> Vec<(u64, u64)> {
        self.progress
            .as_ref()
            .map(|p| p.replicas())
            .unwrap_or_default()
    }

    /// Reads of the table so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Relaxed)
    }

    /// One read of the table.
    fn poll(&self) -> u64 {
        self.polls.fetch_add(1, Ordering::Relaxed);
        let q = self
            .progress
            .as_ref()
            .and_then(|p| p.quorum_position(self.required))
            .unwrap_or(0);
        self.quorum.send_if_modified(|v| {
            let changed = *v != q;
            *v = q;
            changed
        });
        q
    }
}

/// The watcher thread of one stream: ends when the last [`StreamWatch`] handle is gone.
fn watch_loop(w: Weak<StreamWatch>) {
    loop {
        let Some(s) = w.upgrade() else { return };
        let Some(progress) = s.progress.clone() else {
            // Nothing to read, ever: only wake to notice the end.
            drop(s);
            std::thread::park_timeout(IDLE_PARK);
            continue;
        };
        // Before reading the table: a record made after the read moves the count.
        let seen = progress.change_count();
        let q = s.poll();
        // Acquire: pairs with `StreamWatch::want`.
        let reached = q >= s.want.load(Ordering::Acquire);
        let now = s.epoch.elapsed().as_nanos() as u64;
        let until = s.until_ns.load(Ordering::Acquire);
        drop(s);
        if reached || now >= until {
            // Nobody waits for more (or every wait's deadline passed). A connection that asks
            // for more unparks this thread (a token set before the park makes it return at once).
            std::thread::park_timeout(IDLE_PARK);
        } else {
            let left = Duration::from_nanos(until - now);
            progress.wait_for_change(seen, left.min(MAX_WAIT));
        }
    }
}

/// An acknowledgement waiting for replicas.
#[derive(Debug, Clone)]
pub struct SyncWait {
    /// The stream's watcher.
    pub watch: Arc<StreamWatch>,
    /// Position the replicas must reach (the position after the message).
    pub target: u64,
    /// When the wait fails.
    pub deadline: Instant,
}

impl SyncWait {
    /// Whether the replicas reached the target.
    pub fn is_done(&self) -> bool {
        self.watch.quorum() >= self.target
    }

    /// Why the wait failed, for an MQTT 5 reason string.
    pub fn failure_reason(&self) -> String {
        let replicas = self.watch.replicas();
        let list: Vec<String> = replicas
            .iter()
            .map(|(id, p)| format!("{id:#x} at {p}"))
            .collect();
        format!(
            "{} of {} replicas of stream {} reached position {} in time (replicas: {})",
            replicas.iter().filter(|(_, p)| *p >= self.target).count(),
            self.watch.required,
            self.watch.stream,
            self.target,
            if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            }
        )
    }
}

/// The gateway's synchronous-replication state: configuration and one watcher per stream.
pub struct SyncReplication {
    required: usize,
    timeout: Duration,
    journal: Arc<dyn Journal>,
    /// Read-mostly (looked up for every acknowledgement): a writer only adds a stream's watch.
    watches: RwLock<HashMap<Arc<str>, Arc<StreamWatch>>>,
}

impl std::fmt::Debug for SyncReplication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncReplication")
            .field("required", &self.required)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SyncReplication {
    /// From the configuration; `None` when synchronous replication is off.
    pub fn new(cfg: &ReplicationConfig, journal: Arc<dyn Journal>) -> Option<Self> {
        (cfg.sync_replicas > 0).then(|| SyncReplication {
            required: cfg.sync_replicas,
            timeout: Duration::from_millis(cfg.sync_timeout_ms),
            journal,
            watches: RwLock::default(),
        })
    }

    /// Replicas required.
    pub fn required(&self) -> usize {
        self.required
    }

    fn watch(&self, stream: &str) -> Arc<StreamWatch> {
        if let Some(w) = self
            .watches
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            return w.clone();
        }
        let mut map = self.watches.write().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = map.get(stream) {
            return w.clone();
        }
        let progress = match self.journal.replica_progress(stream) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("stream {stream}: replica acknowledgements unavailable: {e}");
                None
            }
        };
        let name: Arc<str> = Arc::from(stream);
        let w = Arc::new(StreamWatch {
            stream: name.clone(),
            progress,
            required: self.required,
            quorum: watch::Sender::new(0),
            want: AtomicU64::new(0),
            until_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            polls: AtomicU64::new(0),
            thread: OnceLock::new(),
        });
        let weak = Arc::downgrade(&w);
        let handle = std::thread::Builder::new()
            .name(format!("sync-repl-{stream}"))
            .spawn(move || watch_loop(weak))
            .expect("spawn the synchronous-replication watcher thread");
        let _ = w.thread.set(handle.thread().clone());
        map.insert(name, w.clone());
        w
    }

    /// The wait for the message of `stream` that ends at `end` (the position after it; `None`:
    /// a redelivery of a message stored earlier, which waits for everything appended so far).
    pub fn wait_for(&self, stream: &str, end: Option<u64>) -> SyncWait {
        let watch = self.watch(stream);
        let target = end.unwrap_or_else(|| watch.progress.as_ref().map_or(u64::MAX, |p| p.tail()));
        let deadline = Instant::now() + self.timeout;
        watch.want(target, deadline);
        SyncWait {
            watch,
            target,
            deadline,
        }
    }
}

impl Drop for SyncReplication {
    fn drop(&mut self) {
        // The watcher threads end once their last handle is gone; wake them to notice.
        let map = std::mem::take(self.watches.get_mut().unwrap_or_else(|p| p.into_inner()));
        for (_, w) in map {
            let t = w.thread.get().cloned();
            drop(w);
            if let Some(t) = t {
                t.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal_core::CoreJournal;

    fn setup(required: usize) -> (tempfile::TempDir, Arc<CoreJournal>, SyncReplication) {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.storage.dir = Some(dir.path().to_path_buf());
        cfg.storage.segment_size = 1 << 20;
        let j = Arc::new(CoreJournal::new(&cfg).unwrap());
        let rc = ReplicationConfig {
            sync_replicas: required,
            sync_timeout_ms: 60_000,
        };
        let s = SyncReplication::new(&rc, j.clone()).unwrap();
        (dir, j, s)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wait_ends_when_enough_replicas_hold_the_position() {
        let (dir, j, sync) = setup(2);
        let pos = j.append("s", b"", b"hello").unwrap();
        let end = j.replica_progress("s").unwrap().unwrap().tail();
        assert!(end > pos);
        let w = sync.wait_for("s", Some(end));
        assert!(!w.is_done());
        let mut rx = w.watch.subscribe();
        let acks = ringway_core::Stream::open(dir.path(), "s")
            .unwrap()
            .replica_acks();
        acks.record(1, end).unwrap();
        acks.record(2, end - 8).unwrap();
        // One replica at the end, one short of it: not yet.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!w.is_done(), "{}", w.failure_reason());
        assert!(
            w.failure_reason().contains("1 of 2 replicas"),
            "{}",
            w.failure_reason()
        );
        acks.record(2, end).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|q| *q >= end))
            .await
            .expect("quorum published")
            .unwrap();
        assert!(w.is_done());
        // A redelivery waits for the tail, which both hold.
        assert!(sync.wait_for("s", None).target == end);
    }

    #[test]
    fn the_watcher_stops_polling_once_every_wait_expired() {
        let (_dir, j, _) = setup(1);
        j.append("s", b"", b"x").unwrap();
        let rc = ReplicationConfig {
            sync_replicas: 1,
            sync_timeout_ms: 100,
        };
        let sync = SyncReplication::new(&rc, j.clone()).unwrap();
        let w = sync.wait_for("s", Some(u64::MAX - 1));
        // While the wait lasts the watcher polls (no replica ever acknowledges).
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.watch.polls() < 3 {
            assert!(
                Instant::now() < deadline,
                "the watcher polls while someone waits"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // After the deadline it parks: over 100 ms, at most the parked thread's periodic
        // look (every second) and the iteration that noticed the deadline, instead of one read
        // per MAX_WAIT (10) or more.
        while Instant::now() < w.deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(20));
        let before = w.watch.polls();
        std::thread::sleep(Duration::from_millis(100));
        let polled = w.watch.polls() - before;
        assert!(polled <= 3, "{polled} polls with nobody waiting");
        // A new wait wakes it again.
        let again = sync.wait_for("s", Some(u64::MAX - 1));
        let deadline = Instant::now() + Duration::from_secs(30);
        while again.watch.polls() < before + polled + 3 {
            assert!(Instant::now() < deadline, "a new wait wakes the watcher");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn off_when_no_replicas_are_required() {
        let j: Arc<dyn Journal> = Arc::new(crate::journal::MemoryJournal::new(100, 10));
        assert!(SyncReplication::new(&ReplicationConfig::default(), j).is_none());
    }

    #[test]
    fn a_storage_without_replication_never_acknowledges() {
        let j: Arc<dyn Journal> = Arc::new(crate::journal::MemoryJournal::new(100, 10));
        let rc = ReplicationConfig {
            sync_replicas: 1,
            sync_timeout_ms: 10,
        };
        let s = SyncReplication::new(&rc, j).unwrap();
        let w = s.wait_for("s", Some(8));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!w.is_done());
        assert!(w.failure_reason().contains("replicas: none"));
    }
}
