//! The replication traits on ringway-core streams.

use std::path::PathBuf;

use ringway_core::{Position, Reader, ReplicaWriter, Start, Stream, StreamConfig};

use super::{Geometry, RawReader, Replica, ReplicaStore, Source};
use crate::error::{Error, Result};

/// A primary stream shipped by a sender.
#[derive(Debug)]
pub struct CoreSource {
    stream: Stream,
}

impl CoreSource {
    /// Opens stream `name` under `root`.
    pub fn open(root: &std::path::Path, name: &str) -> Result<Self> {
        Ok(CoreSource {
            stream: Stream::open(root, name)?,
        })
    }

    /// Wraps an open stream.
    pub fn new(stream: Stream) -> Self {
        CoreSource { stream }
    }
}

struct CoreReader {
    reader: Reader,
}

impl RawReader for CoreReader {
    fn position(&self) -> u64 {
        self.reader.position().0
    }

    fn poll_raw(&mut self, limit: usize, f: &mut dyn FnMut(u64, &[u8])) -> Result<usize> {
        Ok(self
            .reader
            .poll_raw(limit, |fr| f(fr.position().0, fr.raw()))?)
    }
}

impl Source for CoreSource {
    fn geometry(&self) -> Geometry {
        let c = self.stream.config();
        Geometry {
            name: self.stream.name().to_string(),
            segment_size: c.segment_size as u32,
            max_message_size: c.max_message_size,
            crc: c.crc,
        }
    }

    fn oldest(&self) -> Result<u64> {
        Ok(self.stream.first_position().0)
    }

    fn tail(&self) -> Result<u64> {
        Ok(self.stream.tail().0)
    }

    fn reader_at(&self, position: u64) -> Result<Box<dyn RawReader>> {
        let reader = self.stream.reader(Start::Position(Position(position)))?;
        Ok(Box::new(CoreReader { reader }))
    }

    fn replica_acks(&self) -> Option<ringway_core::ReplicaAcks> {
        Some(self.stream.replica_acks())
    }
}

struct CoreReplica {
    writer: ReplicaWriter,
}

impl Replica for CoreReplica {
    fn next_position(&self) -> u64 {
        self.writer.next_position().0
    }

    fn write_frame(&mut self, position: u64, raw: &[u8]) -> Result<()> {
        Ok(self.writer.write_frame(Position(position), raw)?)
    }
}

/// Replica streams under a root directory, created in replica mode with the primary's geometry.
#[derive(Debug, Clone)]
pub struct CoreStore {
    root: PathBuf,
    name: Option<String>,
    template: StreamConfig,
}

impl CoreStore {
    /// Replicas under `root`; `name` overrides the primary's stream name.
    pub fn new(root: impl Into<PathBuf>, name: Option<String>) -> Self {
        CoreStore {
            root: root.into(),
            name,
            template: StreamConfig::default(),
        }
    }

    /// Settings for newly created replicas other than geometry (retention, ring, file mode).
    pub fn with_template(mut self, template: StreamConfig) -> Self {
        self.template = template;
        self
    }
}

impl CoreStore {
    /// Creates replica `name` starting at `first`; if another receiver created it meanwhile,
    /// opens that one.
    fn create(&self, name: &str, cfg: &StreamConfig, first: u64) -> Result<Stream> {
        match Stream::create_at(&self.root, name, cfg, first, None) {
            Err(ringway_core::Error::AlreadyExists { .. }) => Ok(Stream::open(&self.root, name)?),
            r => Ok(r?),
        }
    }
}

impl ReplicaStore for CoreStore {
    fn open_from(&mut self, g: &Geometry, oldest: u64) -> Result<Box<dyn Replica>> {
        let name = self.name.clone().unwrap_or_else(|| g.name.clone());
        let cfg = self
            .template
            .clone()
            .segment_size(g.segment_size as u64)
            .max_message_size(g.max_message_size)
            .crc(g.crc)
            .multi_writer(false)
            .replica(true);
        let first = super::fresh_start(oldest, g.segment_size);
        let stream = match Stream::open(&self.root, &name) {
            Ok(s) => {
                let empty = s.tail() == s.first_position();
                if empty
                    && s.first_position().0 < first
                    && s.config().replica
                    && s.config().segment_size == g.segment_size as u64
                {
                    log::info!(
                        "replica '{name}' is empty and starts at {}, before the primary's oldest \
                         position {oldest}: starting it over at {first}",
                        s.first_position().0
                    );
                    drop(s);
                    Stream::delete(&self.root, &name)?;
                    self.create(&name, &cfg, first)?
                } else {
                    s
                }
            }
            Err(ringway_core::Error::NotFound { .. }) => self.create(&name, &cfg, first)?,
            Err(e) => return Err(e.into()),
        };
        let c = stream.config();
        if !c.replica {
            return Err(Error::Geometry(format!(
                "stream '{name}' exists and is not a replica"
            )));
        }
        if c.segment_size != g.segment_size as u64 {
            return Err(Error::Geometry(format!(
                "replica '{name}' has segment size {}, primary {}",
                c.segment_size, g.segment_size
            )));
        }
        Ok(Box::new(CoreReplica {
            writer: stream.replica_writer()?,
        }))
    }
}
