//! `ringway stat`.

use super::CmdError;
use ringway_core::{list_streams, system_now_ns, Stream, StreamStat};
use std::path::Path;
use std::process::ExitCode;

fn writer_text(s: &StreamStat) -> String {
    if s.writers.is_empty() {
        return "-".into();
    }
    s.writers
        .iter()
        .map(|w| format!("{}({})", w.pid, if w.alive { "alive" } else { "dead" }))
        .collect::<Vec<_>>()
        .join(",")
}

fn json(stream: &Stream, s: &StreamStat) -> serde_json::Value {
    let now = system_now_ns();
    serde_json::json!({
        "name": s.name,
        "mode": s.mode,
        "multi_writer": s.multi_writer,
        "replica": s.replica,
        "segment_size": s.segment_size,
        "segments": s.segments,
        "bytes": s.bytes,
        "first_position": s.first_position.get(),
        "last_position": s.last_position.get(),
        "messages": s.messages,
        "recovered_claims": s.recovered_claims,
        "deleted_segments": s.deleted_segments,
        "writers": s.writers.iter().map(|w| serde_json::json!({
            "pid": w.pid,
            "alive": w.alive,
            "slot": w.slot,
            "last_write_age_ms": if w.heartbeat_ns == 0 { None } else { Some(now.saturating_sub(w.heartbeat_ns) / 1_000_000) },
        })).collect::<Vec<_>>(),
        "released_cursors": s.released_cursors,
        "back_pressure_events": s.back_pressure_events,
        "cursors": stream.cursors().iter().map(|c| super::cursor::json(stream, c)).collect::<Vec<_>>(),
        "replicas": stream.replica_acks().entries().iter().map(|r| serde_json::json!({
            "receiver_id": format!("{:#x}", r.receiver_id),
            "acknowledged_position": r.position,
            "lag_bytes": s.last_position.get().saturating_sub(r.position),
            "last_ack_age_ms": now.saturating_sub(r.updated_ns) / 1_000_000,
            "sender_pid": r.owner_pid,
        })).collect::<Vec<_>>(),
    })
}

pub fn run(root: &Path, as_json: bool) -> Result<ExitCode, CmdError> {
    let mut stats = Vec::new();
    let mut failures = Vec::new();
    for name in list_streams(root)? {
        match Stream::open(root, &name).and_then(|s| s.stat().map(|st| (s, st))) {
            Ok(pair) => stats.push(pair),
            Err(e) => failures.push((name, e)),
        }
    }
    if as_json {
        let v = serde_json::json!({
            "root": root.display().to_string(),
            "streams": stats.iter().map(|(stream, st)| json(stream, st)).collect::<Vec<_>>(),
            "errors": failures.iter().map(|(n, e)| serde_json::json!({"name": n, "error": e.to_string()})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("root: {}", root.display());
        println!(
            "{:<20} {:>6} {:>5} {:>12} {:>14} {:>14} {:>12}  WRITERS",
            "STREAM", "MODE", "SEGS", "BYTES", "FIRST", "LAST", "MESSAGES"
        );
        for (stream, s) in &stats {
            println!(
                "{:<20} {:>6} {:>5} {:>12} {:>14} {:>14} {:>12}  {}",
                s.name,
                s.mode,
                s.segments,
                s.bytes,
                s.first_position,
                s.last_position,
                s.messages,
                writer_text(s)
            );
            for c in stream.cursors() {
                let (m, b) = super::cursor::lag(stream, &c);
                let owner = match c.owner_pid {
                    Some(p) => format!("{p}({})", if c.owner_alive { "alive" } else { "dead" }),
                    None => "-".into(),
                };
                let blocking = if c.blocking {
                    if c.released {
                        ", blocking (released)"
                    } else {
                        ", blocking"
                    }
                } else {
                    ""
                };
                println!(
                    "  cursor {:<18} at {:>14}  lag {m} msgs / {b} bytes  owner {owner}{blocking}",
                    c.name, c.position
                );
            }
            // What replication receivers acknowledged (recorded by `ringway replicate`).
            for r in stream.replica_acks().entries() {
                println!(
                    "  replica {:#018x} at {:>14}  lag {} bytes  sender {}",
                    r.receiver_id,
                    r.position,
                    s.last_position.get().saturating_sub(r.position),
                    r.owner_pid
                );
            }
        }
        for (n, e) in &failures {
            eprintln!("ringway: stat: {n}: {e}");
        }
    }
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
