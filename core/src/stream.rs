//! Streams: a directory holding a metadata file and segment files.

use crate::config::StreamConfig;
use crate::error::{Error, IoContext, Result};
use crate::meta::{MetaFile, MetaHeader};
use crate::reader::{Reader, Start};
use crate::replica_acks::ReplicaAcks;
use crate::writer::Writer;
use crate::ReplicaWriter;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Name of the metadata file inside a stream directory.
pub const META_FILE: &str = "meta";

/// The default root directory: `$RINGWAY_DIR`, else `/dev/shm/ringway`.
pub fn default_root() -> PathBuf {
    match std::env::var_os("RINGWAY_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/dev/shm/ringway"),
    }
}

/// Names of the streams under `root`, sorted. A missing root holds no streams.
pub fn list_streams(root: &Path) -> Result<Vec<String>> {
    let rd = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(Error::Io {
                op: "list streams in",
                path: root.to_path_buf(),
                source: e,
            })
        }
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.ctx("list streams in", root)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().join(META_FILE).is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

pub(crate) fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidName(name.to_string()))
    }
}

/// State shared by a stream's handles in one process.
#[derive(Debug)]
pub(crate) struct Shared {
    pub name: String,
    pub dir: PathBuf,
    pub meta: MetaFile,
    pub config: StreamConfig,
}

impl Shared {
    pub fn segment_size(&self) -> u64 {
        self.config.segment_size
    }
    pub fn first_position(&self) -> u64 {
        // Acquire: pairs with the Release/fence of retention, so a reader that sees the new first
        // position also sees that older segments are gone.
        self.meta
            .get()
            .retention
            .first_position
            .load(Ordering::Acquire)
    }
}

/// A handle to a stream. Cheap to clone; writers and readers keep the stream open.
///
/// ```
/// use ringway_core::{Stream, StreamConfig, Start};
/// let root = tempfile::tempdir().unwrap();
/// let stream = Stream::create(root.path(), "quotes", &StreamConfig::default().segment_size(1 << 20)).unwrap();
/// let mut writer = stream.writer().unwrap();
/// let pos = writer.append(b"hello").unwrap();
/// let mut reader = stream.reader(Start::Beginning).unwrap();
/// let frame = reader.next().unwrap().unwrap();
/// assert_eq!((frame.position(), frame.payload()), (pos, &b"hello"[..]));
/// ```
#[derive(Debug, Clone)]
pub struct Stream {
    pub(crate) shared: Arc<Shared>,
}

impl Stream {
    /// Creates a new stream `name` under `root` (creating `root` if needed).
    pub fn create(root: &Path, name: &str, config: &StreamConfig) -> Result<Stream> {
        Self::create_at(root, name, config, 0, None)
    }

    /// Creates a stream whose first position is `first_position` (a segment boundary) and whose
    /// identity is `stream_id` (a replica keeps its primary's).
    pub fn create_at(
        root: &Path,
        name: &str,
        config: &StreamConfig,
        first_position: u64,
        stream_id: Option<u64>,
    ) -> Result<Stream> {
        validate_name(name)?;
        let config = &config.resolved();
        config.validate()?;
        if config.ring_segments.is_some() && config.multi_writer {
            return Err(Error::InvalidConfig(
                "a ring stream has a single writer; multi-writer mode needs an append-only stream"
                    .into(),
            ));
        }
        if !first_position.is_multiple_of(config.segment_size) {
            return Err(Error::InvalidConfig(format!(
                "first position {first_position} is not a segment boundary"
            )));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(root)
            .ctx("create root directory", root)?;
        let dir = root.join(name);
        if dir.exists() {
            return Err(Error::AlreadyExists {
                name: name.into(),
                dir: root.to_path_buf(),
            });
        }
        let tmp_dir = crate::fsutil::temp_sibling(&dir);
        let mut dir_mode = 0o700;
        if config.file_mode & 0o040 != 0 {
            dir_mode |= 0o050;
        }
        if config.file_mode & 0o020 != 0 {
            dir_mode |= 0o020;
        }
        std::fs::DirBuilder::new()
            .mode(dir_mode)
            .create(&tmp_dir)
            .ctx("create stream directory", &tmp_dir)?;
        let build = || -> Result<()> {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp_dir, std::fs::Permissions::from_mode(dir_mode))
                .ctx("chmod", &tmp_dir)?;
            let id = stream_id.unwrap_or_else(random_id);
            let header = MetaHeader::new(config, crate::clock::system_now_ns(), id);
            MetaFile::write_new(&tmp_dir.join(META_FILE), &header, first_position)?;
            crate::segment::Segment::create(
                &tmp_dir,
                first_position / config.segment_size,
                config.segment_size,
                config.file_mode,
            )?;
            Ok(())
        };
        if let Err(e) = build() {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            return Err(e);
        }
        // rename(2) of a directory onto an existing non-empty directory fails: one creator wins.
        if let Err(e) = std::fs::rename(&tmp_dir, &dir) {
            let _ = std::fs::remove_dir_all(&tmp_dir);
            if dir.join(META_FILE).exists() {
                return Err(Error::AlreadyExists {
                    name: name.into(),
                    dir: root.to_path_buf(),
                });
            }
            return Err(Error::Io {
                op: "rename stream directory into place",
                path: dir,
                source: e,
            });
        }
        Self::open(root, name)
    }

    /// Opens an existing stream.
    pub fn open(root: &Path, name: &str) -> Result<Stream> {
        validate_name(name)?;
        let dir = root.join(name);
        let meta_path = dir.join(META_FILE);
        if !meta_path.exists() {
            return Err(Error::NotFound {
                name: name.into(),
                dir: root.to_path_buf(),
            });
        }
        let meta = MetaFile::open(&meta_path)?;
        let config = meta.header().config();
        Ok(Stream {
            shared: Arc::new(Shared {
                name: name.into(),
                dir,
                meta,
                config,
            }),
        })
    }

    /// Opens the stream, creating it with `config` if it does not exist.
    pub fn open_or_create(root: &Path, name: &str, config: &StreamConfig) -> Result<Stream> {
        match Self::open(root, name) {
            Err(Error::NotFound { .. }) => match Self::create(root, name, config) {
                Err(Error::AlreadyExists { .. }) => Self::open(root, name),
                r => r,
            },
            r => r,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The stream's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The configuration the stream was created with.
    pub fn config(&self) -> &StreamConfig {
        &self.shared.config
    }

    /// The stream's random identity.
    pub fn stream_id(&self) -> u64 {
        self.shared.meta.header().stream_id
    }

    /// Oldest readable position.
    pub fn first_position(&self) -> crate::Position {
        crate::Position(self.shared.first_position())
    }

    /// Position after the last frame (the next append's position when nothing is in flight).
    pub fn tail(&self) -> crate::Position {
        let m = self.shared.meta.get();
        let p = if self.shared.config.multi_writer {
            m.claim.claim_tail.load(Ordering::Acquire)
        } else {
            m.writer.tail.load(Ordering::Acquire)
        };
        crate::Position(p)
    }

    /// Wakes every reader of this stream blocked in [`crate::Reader::wait`] (in any process), e.g.
    /// so an agent being stopped notices at once. Woken readers return `false` if nothing was
    /// committed.
    pub fn wake_readers(&self) {
        let n = &self.shared.meta.get().notify;
        n.futex.fetch_add(1, Ordering::Release);
        crate::notify::futex_wake(&n.futex);
    }

    /// Opens the stream's writer (exclusive unless the stream is multi-writer).
    pub fn writer(&self) -> Result<Writer> {
        Writer::open(self.shared.clone())
    }

    /// Opens the replication writer of a replica stream.
    pub fn replica_writer(&self) -> Result<ReplicaWriter> {
        ReplicaWriter::open(self.shared.clone())
    }

    /// The stream's replica-acknowledgement table (what replication receivers hold; see
    /// [`ReplicaAcks`]).
    pub fn replica_acks(&self) -> ReplicaAcks {
        ReplicaAcks::new(self.shared.clone())
    }

    /// Opens a reader.
    pub fn reader(&self, start: Start) -> Result<Reader> {
        Reader::open(self.shared.clone(), start)
    }

    /// Deletes the stream directory and everything in it.
    pub fn delete(root: &Path, name: &str) -> Result<()> {
        validate_name(name)?;
        let dir = root.join(name);
        if !dir.join(META_FILE).exists() {
            return Err(Error::NotFound {
                name: name.into(),
                dir: root.to_path_buf(),
            });
        }
        std::fs::remove_dir_all(&dir).ctx("delete stream", &dir)
    }
}

fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::clock::system_now_ns());
    h.write_u32(std::process::id());
    h.finish()
}
