//! [`Journal`] over ringway-core streams: the production storage of the gateway.
//!
//! One [`ringway_core::Writer`] per stream, opened lazily and kept behind a mutex (an append is a
//! copy into the mapping, so the critical section is short; a connection appends everything it
//! read in one go under one lock, [`Journal::append_batch`]). The stream table is read-mostly
//! (an `RwLock`), so connections on both cores look their stream up without contending.
//!
//! Streams the gateway creates use `storage.segment_size`, `storage.crc`,
//! `storage.multi_writer`, `storage.cursor_slots` (one named cursor per persistent session) and
//! a maximum message size of `mqtt.max_packet_size` plus room for the metadata; existing streams
//! are used as they are.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use ringway_core::{
    AppendOptions, CursorOptions, NamedReader, Position, Reader, ReplicaAcks, Start, Stream,
    StreamConfig, Writer,
};

use crate::config::Config;
use crate::journal::{
    AppendItem, CursorCommitter, Journal, JournalError, JournalReader, ReadFrom, RecordRef,
    ReplicaProgress,
};

/// Room reserved for MQTT metadata on top of the largest packet.
pub const META_ROOM: u64 = 64 << 10;

/// ringway-core streams under one root directory.
pub struct CoreJournal {
    root: PathBuf,
    stream_config: StreamConfig,
    streams: RwLock<HashMap<String, Arc<StreamEntry>>>,
}

struct StreamEntry {
    stream: Stream,
    writer: Mutex<Option<Writer>>,
}

impl StreamEntry {
    /// The stream's writer, locked (opened on first use).
    fn writer(&self, name: &str) -> Result<MutexGuard<'_, Option<Writer>>, JournalError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if w.is_none() {
            *w = Some(self.stream.writer().map_err(|err| storage_err(name, err))?);
        }
        Ok(w)
    }
}

/// Appends one frame with the locked writer `w` (opened by [`StreamEntry::writer`]). A storage
/// failure drops the writer, so the next append reopens it (e.g. after writer recovery).
fn append_one(
    w: &mut Option<Writer>,
    stream: &str,
    item: &AppendItem<'_>,
) -> Result<u64, JournalError> {
    let Some(writer) = w.as_mut() else {
        return Err(JournalError::Storage {
            stream: stream.to_owned(),
            message: "no writer".into(),
        });
    };
    let opts = AppendOptions {
        type_id: item.type_id,
        schema_version: item.schema_version,
        meta: item.meta,
    };
    match writer.append_with(&opts, item.payload) {
        Ok(Position(p)) => Ok(p),
        Err(err) => {
            let err = storage_err(stream, err);
            if matches!(err, JournalError::Storage { .. }) {
                *w = None;
            }
            Err(err)
        }
    }
}

impl std::fmt::Debug for CoreJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreJournal")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

fn storage_err(stream: &str, e: ringway_core::Error) -> JournalError {
    match e {
        ringway_core::Error::Lapped { requested, oldest } => JournalError::Lapped {
            requested: requested.0,
            oldest: oldest.0,
        },
        ringway_core::Error::MessageTooLarge { len, max } => JournalError::TooLarge { len, max },
        other => JournalError::Storage {
            stream: stream.to_owned(),
            message: other.to_string(),
        },
    }
}

impl CoreJournal {
    /// Opens the root named by the config (`storage.dir`, else ringway-core's default root).
    pub fn new(config: &Config) -> Result<Self, JournalError> {
        let root = config
            .storage
            .dir
            .clone()
            .unwrap_or_else(ringway_core::default_root);
        std::fs::create_dir_all(&root).map_err(|e| JournalError::Storage {
            stream: "-".into(),
            message: format!("cannot create {}: {e}", root.display()),
        })?;
        // `Config::validate` guarantees max_packet_size + META_ROOM <= segment_size / 4.
        let max_message = (config.storage.segment_size / 4).min(u64::from(u32::MAX)) as u32;
        let stream_config = StreamConfig::default()
            .segment_size(config.storage.segment_size)
            .max_message_size(max_message)
            .crc(config.storage.crc)
            .multi_writer(config.storage.multi_writer)
            .cursor_slots(config.storage.cursor_slots);
        Ok(CoreJournal {
            root,
            stream_config,
            streams: RwLock::default(),
        })
    }

    /// Root directory of the streams.
    pub fn root(&self) -> &std::path::Path {
        &self.root
    }

    fn entry(&self, name: &str) -> Result<Arc<StreamEntry>, JournalError> {
        if let Some(e) = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(e.clone());
        }
        let mut streams = self.streams.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = streams.get(name) {
            return Ok(e.clone());
        }
        let stream = Stream::open_or_create(&self.root, name, &self.stream_config)
            .map_err(|e| storage_err(name, e))?;
        let e = Arc::new(StreamEntry {
            stream,
            writer: Mutex::new(None),
        });
        streams.insert(name.to_owned(), e.clone());
        Ok(e)
    }
}

/// [`ReplicaProgress`] from a stream's replica-acknowledgement table in its `meta` file.
struct CoreReplicaProgress {
    stream: Stream,
    acks: ReplicaAcks,
}

impl ReplicaProgress for CoreReplicaProgress {
    fn quorum_position(&self, k: usize) -> Option<u64> {
        self.acks.quorum_position(k)
    }

    fn replicas(&self) -> Vec<(u64, u64)> {
        self.acks
            .entries()
            .iter()
            .map(|e| (e.receiver_id, e.position))
            .collect()
    }

    fn tail(&self) -> u64 {
        self.stream.tail().0
    }

    fn change_count(&self) -> u32 {
        self.acks.change_count()
    }

    fn wait_for_change(&self, seen: u32, timeout: std::time::Duration) {
        self.acks.wait_for_change(seen, timeout)
    }
}

impl Journal for CoreJournal {
    fn replica_progress(
        &self,
        stream: &str,
    ) -> Result<Option<Arc<dyn ReplicaProgress>>, JournalError> {
        let e = self.entry(stream)?;
        Ok(Some(Arc::new(CoreReplicaProgress {
            stream: e.stream.clone(),
            acks: e.stream.replica_acks(),
        })))
    }

    fn ensure_stream(&self, stream: &str) -> Result<(), JournalError> {
        self.entry(stream).map(|_| ())
    }

    fn append_typed(
        &self,
        stream: &str,
        type_id: u32,
        schema_version: u16,
        meta: &[u8],
        payload: &[u8],
    ) -> Result<u64, JournalError> {
        let e = self.entry(stream)?;
        let mut w = e.writer(stream)?;
        let item = AppendItem {
            type_id,
            schema_version,
            meta,
            payload,
        };
        append_one(&mut w, stream, &item)
    }

    fn append_batch(
        &self,
        stream: &str,
        items: &[AppendItem<'_>],
        positions: &mut Vec<u64>,
    ) -> Result<(), JournalError> {
        let e = self.entry(stream)?;
        let mut w = e.writer(stream)?;
        for item in items {
            positions.push(append_one(&mut w, stream, item)?);
        }
        Ok(())
    }

    fn reader(&self, stream: &str, from: ReadFrom) -> Result<Box<dyn JournalReader>, JournalError> {
        let e = self.entry(stream)?;
        let start = match from {
            ReadFrom::Beginning => Start::Beginning,
            ReadFrom::End => Start::End,
            ReadFrom::Position(p) => Start::Position(Position(p)),
        };
        let reader = e
            .stream
            .reader(start)
            .map_err(|err| storage_err(stream, err))?;
        Ok(Box::new(CoreReader {
            name: stream.to_owned(),
            reader,
        }))
    }

    fn flush(&self) -> Result<(), JournalError> {
        let streams: Vec<(String, Arc<StreamEntry>)> = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, e) in streams {
            if let Some(w) = e.writer.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                w.flush().map_err(|err| storage_err(&name, err))?;
            }
        }
        Ok(())
    }

    fn save_cursor(&self, stream: &str, name: &str, position: u64) -> Result<(), JournalError> {
        self.cursor_reset(stream, name, position)
    }

    fn load_cursor(&self, stream: &str, name: &str) -> Result<Option<u64>, JournalError> {
        let e = self.entry(stream)?;
        Ok(e.stream
            .cursors()
            .into_iter()
            .find(|c| c.name == name)
            .map(|c| c.position.0))
    }

    fn delete_cursor(&self, stream: &str, name: &str) -> Result<(), JournalError> {
        let e = self.entry(stream)?;
        match e.stream.cursor_delete(name) {
            Ok(()) | Err(ringway_core::Error::CursorNotFound { .. }) => Ok(()),
            Err(err) => Err(storage_err(stream, err)),
        }
    }

    fn cursor_committer(
        &self,
        stream: &str,
        name: &str,
        if_new: u64,
    ) -> Result<Box<dyn CursorCommitter>, JournalError> {
        let e = self.entry(stream)?;
        let opts = CursorOptions {
            start_if_new: Start::Position(Position(if_new)),
            blocking: false,
            // Committed explicitly, only at positions the consumer has acknowledged.
            commit_every: None,
        };
        let reader = e
            .stream
            .named_reader(name, opts)
            .map_err(|err| storage_err(stream, err))?;
        Ok(Box::new(CoreCommitter {
            stream: stream.to_owned(),
            reader,
        }))
    }
}

/// A named reader that walks forward to each acknowledged position and commits it: the cost of
/// a commit is the frames passed since the previous one (read in place), not a walk from the
/// start of the segment.
struct CoreCommitter {
    stream: String,
    reader: NamedReader,
}

impl CursorCommitter for CoreCommitter {
    fn advance(&mut self, position: u64) -> Result<(), JournalError> {
        if position <= self.reader.position().0 {
            return Ok(());
        }
        while self.reader.position().0 < position {
            let n = self
                .reader
                .poll(1, |_| {})
                .map_err(|err| storage_err(&self.stream, err))?;
            if n == 0 {
                break; // not written yet: commit what is certain
            }
        }
        // Positions come from frames, so the walk lands on `position` exactly; never commit past it.
        if self.reader.position().0 <= position {
            self.reader.commit();
        }
        Ok(())
    }
}

impl CoreJournal {
    fn cursor_reset(&self, stream: &str, name: &str, position: u64) -> Result<(), JournalError> {
        let e = self.entry(stream)?;
        match e
            .stream
            .cursor_reset(name, Start::Position(Position(position)))
        {
            Ok(_) => Ok(()),
            Err(ringway_core::Error::Lapped { .. }) => e
                .stream
                .cursor_reset(name, Start::Beginning)
                .map(|_| ())
                .map_err(|err| storage_err(stream, err)),
            Err(err) => Err(storage_err(stream, err)),
        }
    }
}

struct CoreReader {
    name: String,
    reader: Reader,
}

impl JournalReader for CoreReader {
    fn poll(
        &mut self,
        limit: usize,
        f: &mut dyn FnMut(RecordRef<'_>),
    ) -> Result<usize, JournalError> {
        self.reader
            .poll(limit, |frame| {
                f(RecordRef {
                    position: frame.position().0,
                    next_position: frame.next_position().0,
                    timestamp_ns: frame.timestamp_ns(),
                    type_id: frame.type_id(),
                    meta: frame.meta(),
                    payload: frame.payload(),
                })
            })
            .map_err(|e| storage_err(&self.name, e))
    }

    fn position(&self) -> u64 {
        self.reader.position().0
    }

    fn skip_to_oldest(&mut self) -> Result<(), JournalError> {
        self.reader
            .seek(Start::Beginning)
            .map_err(|e| storage_err(&self.name, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_get_the_configured_cursor_slots() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.dir = Some(dir.path().to_owned());
        config.storage.segment_size = 1 << 20;
        config.mqtt.max_packet_size = 128 << 10;
        config.storage.cursor_slots = 300;
        let j = CoreJournal::new(&config).unwrap();
        j.append("s", b"", b"x").unwrap();
        // More persistent sessions than the 256 cursors streams used to have.
        for i in 0..300 {
            j.save_cursor("s", &format!("mqtt:c{i}"), 0).unwrap();
        }
        assert_eq!(j.load_cursor("s", "mqtt:c299").unwrap(), Some(0));
        assert!(
            j.save_cursor("s", "mqtt:one-too-many", 0).is_err(),
            "the table holds exactly the configured slots"
        );
    }

    #[test]
    fn appends_and_reads_back_meta_and_payload() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.storage.dir = Some(dir.path().to_owned());
        config.storage.segment_size = 1 << 20;
        config.mqtt.max_packet_size = 128 << 10;
        let j = CoreJournal::new(&config).unwrap();
        let mut rd = j.reader("s", ReadFrom::Beginning).unwrap();
        let p0 = j.append("s", b"MQmeta", b"\x00\x01payload").unwrap();
        let p1 = j.append("s", b"", b"second").unwrap();
        assert!(p1 > p0);
        let mut seen = Vec::new();
        let n = rd
            .poll(10, &mut |r| {
                seen.push((r.position, r.meta.to_vec(), r.payload.to_vec()))
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            seen[0],
            (p0, b"MQmeta".to_vec(), b"\x00\x01payload".to_vec())
        );
        assert_eq!(seen[1].2, b"second".to_vec());
        assert_eq!(rd.position(), j.append("s", b"", b"x").unwrap());
        let too_big = vec![0u8; 300 << 10];
        assert!(matches!(
            j.append("s", b"", &too_big),
            Err(JournalError::TooLarge { .. })
        ));
        j.flush().unwrap();
        assert_eq!(j.load_cursor("s", "mqtt:c1").unwrap(), None);
        j.save_cursor("s", "mqtt:c1", p1).unwrap();
        assert_eq!(j.load_cursor("s", "mqtt:c1").unwrap(), Some(p1));
        let again = CoreJournal::new(&config).unwrap();
        assert_eq!(again.load_cursor("s", "mqtt:c1").unwrap(), Some(p1));
        j.delete_cursor("s", "mqtt:c1").unwrap();
        j.delete_cursor("s", "mqtt:c1").unwrap();
        assert_eq!(again.load_cursor("s", "mqtt:c1").unwrap(), None);
    }
}
