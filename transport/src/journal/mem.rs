//! An in-memory journal with the real frame layout, for tests of the replication engines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Geometry, RawReader, Replica, ReplicaStore, Source};
use crate::error::{Error, Result};
use crate::frame::{
    align8, check_header, commit_word, make_commit_word, FRAME_HEADER_LEN, STATE_DATA,
    STATE_PADDING,
};

#[derive(Debug)]
struct Log {
    bytes: Vec<u8>,
    oldest: u64,
    segment_size: u64,
}

/// A stream held in memory: appends, raw readers, replica writes.
#[derive(Debug, Clone)]
pub struct MemStream {
    log: Arc<Mutex<Log>>,
    name: String,
}

fn lock(l: &Mutex<Log>) -> MutexGuard<'_, Log> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemStream {
    /// An empty stream.
    pub fn new(name: &str, segment_size: u32) -> Self {
        MemStream {
            log: Arc::new(Mutex::new(Log {
                bytes: Vec::new(),
                oldest: 0,
                segment_size: segment_size as u64,
            })),
            name: name.to_string(),
        }
    }

    /// Appends a data frame carrying `payload`; pads to the next segment when it does not fit.
    pub fn append(&self, payload: &[u8]) -> u64 {
        let mut l = lock(&self.log);
        let seg = l.segment_size;
        let len = (FRAME_HEADER_LEN + payload.len()) as u64;
        let mut pos = l.bytes.len() as u64;
        let room = seg - pos % seg;
        if align8(len) > room {
            let tag = crate::frame::tag_for_segment(pos / seg);
            let mut pad = vec![0u8; room as usize];
            pad[..8].copy_from_slice(&make_commit_word(room, STATE_PADDING, tag).to_le_bytes());
            l.bytes.extend_from_slice(&pad);
            pos += room;
        }
        let tag = crate::frame::tag_for_segment(pos / seg);
        let mut f = vec![0u8; align8(len) as usize];
        f[..8].copy_from_slice(&make_commit_word(len, STATE_DATA, tag).to_le_bytes());
        f[16..24].copy_from_slice(&pos.to_le_bytes()); // stands in for a timestamp
        f[FRAME_HEADER_LEN..FRAME_HEADER_LEN + payload.len()].copy_from_slice(payload);
        l.bytes.extend_from_slice(&f);
        pos
    }

    /// Forgets everything before `position` (a frame boundary), as retention would.
    pub fn retain_from(&self, position: u64) {
        lock(&self.log).oldest = position;
    }

    /// A copy of the bytes in `[from, to)`.
    pub fn bytes(&self, from: u64, to: u64) -> Vec<u8> {
        lock(&self.log).bytes[from as usize..to as usize].to_vec()
    }

    /// Position after the last frame.
    pub fn end(&self) -> u64 {
        lock(&self.log).bytes.len() as u64
    }

    /// The data payloads in order (padding skipped), checking every header.
    pub fn payloads(&self) -> Result<Vec<Vec<u8>>> {
        let l = lock(&self.log);
        let mut out = vec![];
        let mut pos = l.oldest;
        while pos < l.bytes.len() as u64 {
            let raw = &l.bytes[pos as usize..];
            let len = check_header(pos, raw, l.segment_size)?;
            if commit_word(raw).is_some_and(|c| c.state == STATE_DATA) {
                out.push(raw[FRAME_HEADER_LEN..len as usize].to_vec());
            }
            pos += align8(len);
        }
        Ok(out)
    }
}

struct MemReader {
    log: Arc<Mutex<Log>>,
    pos: u64,
}

impl RawReader for MemReader {
    fn position(&self) -> u64 {
        self.pos
    }

    fn poll_raw(&mut self, limit: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize> {
        let l = lock(&self.log);
        if self.pos < l.oldest {
            return Err(Error::Lapped {
                requested: self.pos,
                oldest: l.oldest,
            });
        }
        let mut n = 0;
        while n < limit && self.pos < l.bytes.len() as u64 {
            let raw = &l.bytes[self.pos as usize..];
            let len = check_header(self.pos, raw, l.segment_size)? as usize;
            f(self.pos, &raw[..len]);
            self.pos += align8(len as u64);
            n += 1;
        }
        Ok(n)
    }
}

impl Source for MemStream {
    fn geometry(&self) -> Geometry {
        Geometry {
            name: self.name.clone(),
            segment_size: lock(&self.log).segment_size as u32,
            max_message_size: 1 << 20,
            crc: false,
        }
    }

    fn oldest(&self) -> Result<u64> {
        Ok(lock(&self.log).oldest)
    }

    fn tail(&self) -> Result<u64> {
        Ok(self.end())
    }

    fn reader_at(&self, position: u64) -> Result<Box<dyn RawReader>> {
        let oldest = lock(&self.log).oldest;
        if position < oldest {
            return Err(Error::Lapped {
                requested: position,
                oldest,
            });
        }
        Ok(Box::new(MemReader {
            log: self.log.clone(),
            pos: position,
        }))
    }
}

impl Replica for MemStream {
    fn next_position(&self) -> u64 {
        self.end()
    }

    fn write_frame(&mut self, position: u64, raw: &[u8]) -> Result<()> {
        let mut l = lock(&self.log);
        if position != l.bytes.len() as u64 {
            return Err(Error::Journal(format!(
                "replica write at {position}, expected {}",
                l.bytes.len()
            )));
        }
        let len = check_header(position, raw, l.segment_size)?;
        if len as usize != raw.len() {
            return Err(Error::Journal("raw length differs from header".into()));
        }
        l.bytes.extend_from_slice(raw);
        let aligned = align8(len) as usize;
        l.bytes.resize(position as usize + aligned, 0);
        Ok(())
    }
}

/// Replicas kept in memory by name (shared, so tests can look at them while they are written).
#[derive(Debug, Clone, Default)]
pub struct MemStore {
    streams: Arc<Mutex<HashMap<String, MemStream>>>,
}

impl MemStore {
    /// The replica named `name`, if one was opened.
    pub fn get(&self, name: &str) -> Option<MemStream> {
        self.streams
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }
}

impl ReplicaStore for MemStore {
    fn open_from(&mut self, g: &Geometry, oldest: u64) -> Result<Box<dyn Replica>> {
        let mut m = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let s = m
            .entry(g.name.clone())
            .or_insert_with(|| MemStream::new(&g.name, g.segment_size))
            .clone();
        {
            // An empty replica starts at the primary's oldest segment boundary.
            let first = super::fresh_start(oldest, g.segment_size);
            let mut l = lock(&s.log);
            if l.bytes.len() as u64 == l.oldest && l.oldest < first {
                l.bytes.resize(first as usize, 0);
                l.oldest = first;
            }
        }
        if lock(&s.log).segment_size != g.segment_size as u64 {
            return Err(Error::Geometry(format!(
                "segment size {} vs {}",
                lock(&s.log).segment_size,
                g.segment_size
            )));
        }
        Ok(Box::new(s))
    }
}
