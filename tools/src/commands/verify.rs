//! `ringway verify`.

use super::CmdError;
use ringway_core::Stream;
use std::path::Path;
use std::process::ExitCode;

pub fn run(root: &Path, name: &str) -> Result<ExitCode, CmdError> {
    let stream = Stream::open(root, name)?;
    let r = stream.verify()?;
    if let Some((pos, what)) = &r.problem {
        eprintln!("ringway: verify: stream '{name}' is damaged at position {pos}: {what}");
        println!(
            "{name}: DAMAGED at {pos}: {what} ({} frames intact before it)",
            r.frames
        );
        return Ok(ExitCode::from(1));
    }
    println!(
        "{name}: OK: {} frames, {} padding, {} segments, positions {}..{}",
        r.frames, r.paddings, r.segments, r.first, r.end
    );
    if let Some(p) = r.in_progress {
        println!("{name}: note: a claim at position {p} is not committed (in progress, or abandoned by a dead writer)");
    }
    Ok(ExitCode::SUCCESS)
}
