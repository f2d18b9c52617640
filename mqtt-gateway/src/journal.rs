//! The storage seam: what the gateway needs from a journal, as a small object-safe trait.
//!
//! Production uses [`crate::journal_core::CoreJournal`] (ringway-core streams). The protocol,
//! routing and session code only see this trait, which keeps them testable and fuzzable over the
//! in-memory [`MemoryJournal`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use thiserror::Error;

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadFrom {
    /// Oldest frame still retained.
    Beginning,
    /// Next frame to be appended.
    End,
    /// A position returned by an append or a reader.
    Position(u64),
}

/// Journal failures the gateway distinguishes.
#[derive(Debug, Error)]
pub enum JournalError {
    /// A reader asked for data that retention or the ring already removed.
    #[error("position {requested} no longer retained (oldest is {oldest})")]
    Lapped {
        /// Position asked for.
        requested: u64,
        /// Oldest position available.
        oldest: u64,
    },
    /// Payload plus metadata exceed the stream's maximum message size.
    #[error("message of {len} bytes exceeds the stream maximum of {max}")]
    TooLarge {
        /// Size attempted.
        len: usize,
        /// Stream limit.
        max: usize,
    },
    /// Anything else from the storage (I/O, corrupt stream, busy writer, ...).
    #[error("journal error on stream {stream}: {message}")]
    Storage {
        /// Stream concerned.
        stream: String,
        /// Description from the storage layer.
        message: String,
    },
}

/// One frame as seen by a reader.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Position of the frame.
    pub position: u64,
    /// Position just after the frame.
    pub next_position: u64,
    /// Append time, nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
    /// User type id of the frame (0 for untyped payloads).
    pub type_id: u32,
    /// The frame's meta bytes (see [`crate::meta`]).
    pub meta: &'a [u8],
    /// The payload, verbatim.
    pub payload: &'a [u8],
}

/// One frame of [`Journal::append_batch`].
#[derive(Debug, Clone, Copy)]
pub struct AppendItem<'a> {
    /// User type id (0 for untyped payloads).
    pub type_id: u32,
    /// Schema version of a typed payload.
    pub schema_version: u16,
    /// Meta bytes (see [`crate::meta`]).
    pub meta: &'a [u8],
    /// Payload, stored verbatim.
    pub payload: &'a [u8],
}

/// What the replicas of one stream hold, as their replication senders recorded it (read by
/// [`crate::sync_replication`]).
pub trait ReplicaProgress: Send + Sync {
    /// The highest position that at least `k` replicas hold (`None`: fewer than `k` recorded).
    fn quorum_position(&self, k: usize) -> Option<u64>;
    /// (receiver id, position) of every replica recorded.
    fn replicas(&self) -> Vec<(u64, u64)>;
    /// Position after the last committed frame of the stream.
    fn tail(&self) -> u64;
    /// A count that moves whenever a sender records something (read it before reading the
    /// positions, then pass it to [`ReplicaProgress::wait_for_change`]).
    fn change_count(&self) -> u32 {
        0
    }
    /// Sleeps until the count moved away from `seen`, or `timeout` (default: the timeout).
    fn wait_for_change(&self, _seen: u32, timeout: std::time::Duration) {
        std::thread::sleep(timeout);
    }
}

/// A storage of named streams.
pub trait Journal: Send + Sync + 'static {
    /// What the replicas of `stream` hold. `None` (the default): this storage has no
    /// replication, so no replica ever acknowledges anything.
    fn replica_progress(
        &self,
        _stream: &str,
    ) -> Result<Option<Arc<dyn ReplicaProgress>>, JournalError> {
        Ok(None)
    }

    /// Makes sure `stream` exists (creating it with the gateway's stream settings).
    fn ensure_stream(&self, stream: &str) -> Result<(), JournalError>;

    /// Appends one frame to `stream` and returns its position. When this returns, the frame is
    /// committed: visible to every reader and it survives a crash of this process.
    fn append(&self, stream: &str, meta: &[u8], payload: &[u8]) -> Result<u64, JournalError> {
        self.append_typed(stream, 0, 0, meta, payload)
    }

    /// Like [`Journal::append`] with the frame's user `type_id` and `schema_version`.
    fn append_typed(
        &self,
        stream: &str,
        type_id: u32,
        schema_version: u16,
        meta: &[u8],
        payload: &[u8],
    ) -> Result<u64, JournalError>;

    /// Appends `items` to `stream` in order, pushing each one's position to `positions` as it
    /// commits. On error the items whose positions were pushed are committed, the next one is
    /// the one that failed, and the rest were not attempted. Implementations take the stream's
    /// writer once for the whole batch.
    fn append_batch(
        &self,
        stream: &str,
        items: &[AppendItem<'_>],
        positions: &mut Vec<u64>,
    ) -> Result<(), JournalError> {
        for i in items {
            positions.push(self.append_typed(
                stream,
                i.type_id,
                i.schema_version,
                i.meta,
                i.payload,
            )?);
        }
        Ok(())
    }

    /// Opens a reader on `stream`.
    fn reader(&self, stream: &str, from: ReadFrom) -> Result<Box<dyn JournalReader>, JournalError>;

    /// Makes appended frames durable against power loss (msync); a no-op for memory journals.
    fn flush(&self) -> Result<(), JournalError>;

    /// Stores the durable named cursor `name` of `stream` at `position` (a frame boundary),
    /// creating it if needed. A position retention already removed moves it to the oldest frame.
    fn save_cursor(&self, stream: &str, name: &str, position: u64) -> Result<(), JournalError>;

    /// The position of cursor `name` on `stream`, if it exists.
    fn load_cursor(&self, stream: &str, name: &str) -> Result<Option<u64>, JournalError>;

    /// Deletes cursor `name` of `stream` (no error when it does not exist).
    fn delete_cursor(&self, stream: &str, name: &str) -> Result<(), JournalError>;

    /// Opens a committer that moves cursor `name` of `stream` forward as a consumer
    /// acknowledges, cheap enough to use for every batch of acknowledgements (unlike
    /// [`Journal::save_cursor`], which may check the position from the start of its segment).
    /// A cursor that does not exist yet is created at `if_new` (a frame boundary).
    fn cursor_committer(
        &self,
        stream: &str,
        name: &str,
        if_new: u64,
    ) -> Result<Box<dyn CursorCommitter>, JournalError>;
}

/// Moves one named cursor forward (see [`Journal::cursor_committer`]).
pub trait CursorCommitter: Send {
    /// Stores `position` (a frame boundary) as the cursor's position when it is ahead of it; a
    /// position at or behind the cursor leaves it where it is.
    fn advance(&mut self, position: u64) -> Result<(), JournalError>;
}

/// A cursor over one stream.
pub trait JournalReader: Send {
    /// Hands up to `limit` committed data frames to `f`, in order; returns how many (0 = none new).
    fn poll(
        &mut self,
        limit: usize,
        f: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, JournalError>;

    /// Position of the next frame this reader will return.
    fn position(&self) -> u64;

    /// Moves the reader to the oldest retained frame (after [`JournalError::Lapped`]).
    fn skip_to_oldest(&mut self) -> Result<(), JournalError>;
}

/// Streams held in memory: for tests and fuzzing. Positions are byte offsets as in the real
/// journal (each record takes `32 + meta + payload` bytes rounded up to 8), so code that does
/// arithmetic on positions behaves the same. `max_records` emulates retention (oldest dropped).
#[derive(Debug, Default)]
pub struct MemoryJournal {
    streams: RwLock<HashMap<String, Arc<MemStream>>>,
    cursors: Arc<Mutex<HashMap<(String, String), u64>>>,
    max_message_size: usize,
    max_records: usize,
}

#[derive(Debug, Default)]
struct MemStream {
    records: Mutex<MemRecords>,
}

/// One stored record: (position, (append time ns, type id), meta, payload).
type MemRecord = (u64, (u64, u32), Arc<[u8]>, Arc<[u8]>);

#[derive(Debug, Default)]
struct MemRecords {
    /// (position, meta, payload), positions strictly increasing.
    items: std::collections::VecDeque<MemRecord>,
    next: u64,
}

impl MemoryJournal {
    /// An empty journal with the given maximum message size (meta + payload) and retention.
    pub fn new(max_message_size: usize, max_records: usize) -> Self {
        MemoryJournal {
            streams: RwLock::default(),
            cursors: Arc::default(),
            max_message_size,
            max_records: max_records.max(1),
        }
    }

    fn stream(&self, name: &str) -> Arc<MemStream> {
        if let Some(s) = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return s.clone();
        }
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Names of the streams created so far.
    pub fn stream_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        v.sort();
        v
    }
}

impl Journal for MemoryJournal {
    fn ensure_stream(&self, stream: &str) -> Result<(), JournalError> {
        self.stream(stream);
        Ok(())
    }

    fn append_typed(
        &self,
        stream: &str,
        type_id: u32,
        _schema_version: u16,
        meta: &[u8],
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        let len = meta.len() + payload.len();
        if len > self.max_message_size {
            return Err(JournalError::TooLarge {
                len,
                max: self.max_message_size,
            });
        }
        let s = self.stream(stream);
        let mut r = s.records.lock().unwrap_or_else(|p| p.into_inner());
        let pos = r.next;
        r.next += (32 + meta.len().div_ceil(8) * 8 + payload.len()).div_ceil(8) as u64 * 8;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        r.items
            .push_back((pos, (now, type_id), meta.into(), payload.into()));
        while r.items.len() > self.max_records {
            r.items.pop_front();
        }
        Ok(pos)
    }

    fn reader(&self, stream: &str, from: ReadFrom) -> Result<Box<dyn JournalReader>, JournalError> {
        let s = self.stream(stream);
        let position = {
            let r = s.records.lock().unwrap_or_else(|p| p.into_inner());
            match from {
                ReadFrom::Beginning => r.items.front().map_or(r.next, |i| i.0),
                ReadFrom::End => r.next,
                ReadFrom::Position(p) => p,
            }
        };
        Ok(Box::new(MemReader {
            stream: s,
            position,
        }))
    }

    fn flush(&self) -> Result<(), JournalError> {
        Ok(())
    }

    fn save_cursor(&self, stream: &str, name: &str, position: u64) -> Result<(), JournalError> {
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((stream.to_owned(), name.to_owned()), position);
        Ok(())
    }

    fn load_cursor(&self, stream: &str, name: &str) -> Result<Option<u64>, JournalError> {
        Ok(self
            .cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(stream.to_owned(), name.to_owned()))
            .copied())
    }

    fn delete_cursor(&self, stream: &str, name: &str) -> Result<(), JournalError> {
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(stream.to_owned(), name.to_owned()));
        Ok(())
    }

    fn cursor_committer(
        &self,
        stream: &str,
        name: &str,
        if_new: u64,
    ) -> Result<Box<dyn CursorCommitter>, JournalError> {
        let key = (stream.to_owned(), name.to_owned());
        self.cursors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_insert(if_new);
        Ok(Box::new(MemCommitter {
            cursors: self.cursors.clone(),
            key,
        }))
    }
}

struct MemCommitter {
    cursors: Arc<Mutex<HashMap<(String, String), u64>>>,
    key: (String, String),
}

impl CursorCommitter for MemCommitter {
    fn advance(&mut self, position: u64) -> Result<(), JournalError> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|p| p.into_inner());
        let at = cursors.entry(self.key.clone()).or_insert(position);
        *at = (*at).max(position);
        Ok(())
    }
}

struct MemReader {
    stream: Arc<MemStream>,
    position: u64,
}

impl JournalReader for MemReader {
    fn poll(
        &mut self,
        limit: usize,
        f: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, JournalError> {
        // Copy out under the lock, call back outside it.
        let batch: Vec<(u64, MemRecord)> = {
            let r = self
                .stream
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some(front) = r.items.front() {
                if self.position < front.0 {
                    return Err(JournalError::Lapped {
                        requested: self.position,
                        oldest: front.0,
                    });
                }
            }
            let start = r.items.partition_point(|i| i.0 < self.position);
            let mut out = Vec::new();
            for i in start..r.items.len().min(start + limit) {
                let next = r.items.get(i + 1).map_or(r.next, |n| n.0);
                let (p, t, m, d) = &r.items[i];
                out.push((next, (*p, *t, m.clone(), d.clone())));
            }
            out
        };
        for (next_position, (position, (timestamp_ns, type_id), meta, payload)) in &batch {
            f(RecordRef {
                position: *position,
                next_position: *next_position,
                timestamp_ns: *timestamp_ns,
                type_id: *type_id,
                meta,
                payload,
            });
            self.position = *next_position;
        }
        Ok(batch.len())
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn skip_to_oldest(&mut self) -> Result<(), JournalError> {
        let r = self
            .stream
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.position = r.items.front().map_or(r.next, |i| i.0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_journal_reads_in_order_and_laps() {
        let j = MemoryJournal::new(100, 3);
        let mut rd = j.reader("s", ReadFrom::Beginning).unwrap();
        let p0 = j.append("s", b"m", b"a").unwrap();
        let p1 = j.append("s", b"", b"bb").unwrap();
        assert!(p1 > p0);
        let mut seen = Vec::new();
        assert_eq!(
            rd.poll(10, &mut |r| seen.push(r.payload.to_vec())).unwrap(),
            2
        );
        assert_eq!(seen, vec![b"a".to_vec(), b"bb".to_vec()]);
        assert_eq!(rd.poll(10, &mut |_| {}).unwrap(), 0);
        for _ in 0..5 {
            j.append("s", b"", b"x").unwrap();
        }
        let mut old = j.reader("s", ReadFrom::Position(p0)).unwrap();
        assert!(matches!(
            old.poll(1, &mut |_| {}),
            Err(JournalError::Lapped { .. })
        ));
        old.skip_to_oldest().unwrap();
        assert_eq!(old.poll(10, &mut |_| {}).unwrap(), 3);
        assert!(matches!(
            j.append("s", &[0; 50], &[0; 51]),
            Err(JournalError::TooLarge { len: 101, max: 100 })
        ));
    }

    #[test]
    fn memory_committer_only_moves_forward() {
        let j = MemoryJournal::new(100, 10);
        let mut c = j.cursor_committer("s", "c", 40).unwrap();
        assert_eq!(j.load_cursor("s", "c").unwrap(), Some(40));
        c.advance(80).unwrap();
        c.advance(48).unwrap();
        assert_eq!(j.load_cursor("s", "c").unwrap(), Some(80));
        // An existing cursor keeps its position.
        j.cursor_committer("s", "c", 8).unwrap();
        assert_eq!(j.load_cursor("s", "c").unwrap(), Some(80));
    }
}
