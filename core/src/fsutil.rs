//! File helpers: atomic creation with permissions, names.

use crate::error::{IoContext, Result};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Path of a temporary sibling of `path`, unique to this process and thread.
pub fn temp_sibling(path: &Path) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Creates a new file with exactly `mode` (umask does not widen or narrow it).
pub fn create_file(path: &Path, mode: u32) -> Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .ctx("create", path)?;
    use std::os::unix::fs::PermissionsExt;
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .ctx("chmod", path)?;
    Ok(f)
}

/// Writes `bytes` to a temporary file, extends it with zeros to `len` bytes (if longer) and
/// renames it to `path`, so readers see all or nothing.
pub fn write_file_atomically(path: &Path, bytes: &[u8], len: u64, mode: u32) -> Result<()> {
    let tmp = temp_sibling(path);
    let mut f = create_file(&tmp, mode)?;
    f.write_all(bytes).ctx("write", &tmp)?;
    if len > bytes.len() as u64 {
        f.set_len(len).ctx("extend", &tmp)?;
    }
    f.sync_all().ctx("sync", &tmp)?;
    std::fs::rename(&tmp, path).ctx("rename into place", path)
}

/// File name of the segment starting at `position`.
pub fn segment_file_name(position: u64) -> String {
    format!("{position:020}.seg")
}

/// Parses a segment file name back into its start position.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort() {
        assert_eq!(segment_file_name(1 << 20), "00000000000001048576.seg");
        assert_eq!(
            parse_segment_file_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert_eq!(parse_segment_file_name("123.seg"), None);
        assert_eq!(parse_segment_file_name("0000000000000000000x.seg"), None);
        assert!(segment_file_name(9) < segment_file_name(10));
    }
}
