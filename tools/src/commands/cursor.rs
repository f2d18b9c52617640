//! `ringway cursor list|reset|delete`.

use super::tail::parse_start;
use super::CmdError;
use crate::cli::CursorAction;
use ringway_core::{system_now_ns, CursorInfo, Stream};
use std::process::ExitCode;

/// Lag of a cursor behind the stream's tail: (messages, bytes).
pub fn lag(stream: &Stream, c: &CursorInfo) -> (u64, u64) {
    let tail = stream.tail().get();
    let bytes = tail.saturating_sub(c.position.get());
    let messages = stream.count_messages_from(c.position).unwrap_or(0);
    (messages, bytes)
}

/// A cursor as JSON, as `stat --json` and `cursor list --json` print it.
pub fn json(stream: &Stream, c: &CursorInfo) -> serde_json::Value {
    let (lag_messages, lag_bytes) = lag(stream, c);
    serde_json::json!({
        "name": c.name,
        "position": c.position.get(),
        "lag_messages": lag_messages,
        "lag_bytes": lag_bytes,
        "blocking": c.blocking,
        "released": c.released,
        "owner_pid": c.owner_pid,
        "owner_alive": c.owner_alive,
        "last_commit_age_ms": system_now_ns().saturating_sub(c.heartbeat_ns) / 1_000_000,
    })
}

pub fn run(action: CursorAction) -> Result<ExitCode, CmdError> {
    match action {
        CursorAction::List {
            stream,
            dir,
            json: as_json,
        } => {
            let s = Stream::open(&dir.root(), &stream)?;
            let cursors = s.cursors();
            if as_json {
                let v: Vec<_> = cursors.iter().map(|c| json(&s, c)).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<24} {:>14} {:>12} {:>14} {:>9}  OWNER",
                    "CURSOR", "POSITION", "LAG_MSGS", "LAG_BYTES", "BLOCKING"
                );
                for c in &cursors {
                    let (m, b) = lag(&s, c);
                    let owner = match c.owner_pid {
                        Some(p) => format!("{p}({})", if c.owner_alive { "alive" } else { "dead" }),
                        None => "-".into(),
                    };
                    let blocking = match (c.blocking, c.released) {
                        (true, false) => "yes",
                        (true, true) => "released",
                        _ => "no",
                    };
                    println!(
                        "{:<24} {:>14} {:>12} {:>14} {:>9}  {owner}",
                        c.name, c.position, m, b, blocking
                    );
                }
            }
        }
        CursorAction::Reset {
            stream,
            name,
            to,
            dir,
        } => {
            let s = Stream::open(&dir.root(), &stream)?;
            let p = s.cursor_reset(&name, parse_start(&to)?)?;
            println!("cursor '{name}' of '{stream}' now at {p}");
        }
        CursorAction::Delete { stream, name, dir } => {
            let s = Stream::open(&dir.root(), &stream)?;
            s.cursor_delete(&name)?;
            println!("cursor '{name}' of '{stream}' deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}
