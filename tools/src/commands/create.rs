//! `ringway create`.

use super::CmdError;
use crate::cli::CreateArgs;
use ringway_core::{Retention, Stream, StreamConfig};
use std::path::Path;
use std::process::ExitCode;

/// Builds a stream configuration from the command line.
pub fn config(args: &CreateArgs, multi_writer: bool) -> StreamConfig {
    let mut cfg = StreamConfig::default()
        .segment_size(args.segment_size)
        .crc(args.crc)
        .cursor_slots(args.cursor_slots)
        .multi_writer(multi_writer)
        .file_mode(if args.group { 0o660 } else { 0o600 });
    if let Some(m) = args.max_message_size {
        cfg = cfg.max_message_size(m);
    }
    if let Some(n) = args.ring {
        cfg = cfg.ring(n);
    }
    cfg.retention(Retention {
        max_segments: args.retain_segments,
        max_bytes: args.retain_bytes,
        max_age: args.retain_age,
    })
}

pub fn run(
    root: &Path,
    name: &str,
    args: &CreateArgs,
    multi_writer: bool,
) -> Result<ExitCode, CmdError> {
    let s = Stream::create(root, name, &config(args, multi_writer))?;
    println!("created stream '{}' in {}", s.name(), s.dir().display());
    Ok(ExitCode::SUCCESS)
}
