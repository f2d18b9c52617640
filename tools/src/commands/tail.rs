//! `ringway tail`: print messages, optionally following the stream.

use super::CmdError;
use crate::cli::Format;
use crate::output::{self, Wrote};
use base64::Engine;
use ringway_core::{CursorOptions, Error, Frame, NamedReader, Position, Reader, Start, Stream};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

/// Parses `--from`.
pub fn parse_start(from: &str) -> Result<Start, CmdError> {
    match from {
        "start" | "beginning" => Ok(Start::Beginning),
        "end" => Ok(Start::End),
        s if s.bytes().all(|b| b.is_ascii_digit()) => Ok(Start::Position(Position(s.parse()?))),
        s => {
            let t = humantime::parse_rfc3339_weak(s).map_err(|e| {
                format!("--from '{s}' is neither start, end, a position nor an RFC 3339 time ({e})")
            })?;
            let ns = t
                .duration_since(std::time::UNIX_EPOCH)
                .map_err(|_| "--from time is before 1970")?
                .as_nanos();
            Ok(Start::Time(ns as u64))
        }
    }
}

fn render(frame: &Frame<'_>, format: Format) -> String {
    match format {
        Format::Text => String::from_utf8_lossy(frame.payload()).replace('\n', "\\n"),
        Format::Json => {
            let mut v = serde_json::json!({
                "position": frame.position().get(),
                "timestamp_ns": frame.timestamp_ns(),
                "type_id": frame.type_id(),
                "len": frame.payload().len(),
                "payload_b64": base64::engine::general_purpose::STANDARD.encode(frame.payload()),
            });
            if let Some(topic) = ringway_mqtt_gateway::meta::topic_of(frame.meta()) {
                v["mqtt_topic"] = topic.into();
            } else if !frame.meta().is_empty() {
                v["meta_b64"] = base64::engine::general_purpose::STANDARD
                    .encode(frame.meta())
                    .into();
            }
            v.to_string()
        }
        Format::Hex => {
            let mut s = format!("{}:", frame.position());
            for b in frame.payload() {
                s.push_str(&format!(" {b:02x}"));
            }
            s
        }
    }
}

/// Where `tail` reads from: a plain reader, or a durable cursor committed as lines are printed.
enum Source {
    Plain(Reader),
    Named(NamedReader),
}

impl Source {
    fn poll<F: FnMut(Frame<'_>)>(&mut self, limit: usize, f: F) -> ringway_core::Result<usize> {
        match self {
            Source::Plain(r) => r.poll(limit, f),
            Source::Named(r) => r.poll(limit, f),
        }
    }
    fn skip_to(&mut self, p: Position) -> ringway_core::Result<()> {
        match self {
            Source::Plain(r) => r.seek(Start::Position(p)),
            Source::Named(r) => {
                r.reader_mut().seek(Start::Position(p))?;
                r.commit();
                Ok(())
            }
        }
    }
    /// Commits what was printed and flushed.
    fn commit(&mut self) {
        if let Source::Named(r) = self {
            r.commit();
        }
    }
}

pub fn run(
    root: &Path,
    name: &str,
    from: &str,
    follow: bool,
    count: Option<u64>,
    format: Format,
    named: Option<&str>,
) -> Result<ExitCode, CmdError> {
    let stream = Stream::open(root, name)?;
    let mut source = match named {
        Some(cursor) => {
            let opts = CursorOptions {
                commit_every: None,
                ..Default::default()
            };
            Source::Named(stream.named_reader(cursor, opts)?)
        }
        None => Source::Plain(stream.reader(parse_start(from)?)?),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut printed = 0u64;
    let mut idle = 0u32;
    let limit = count.unwrap_or(u64::MAX);
    while printed < limit {
        let mut closed = false;
        let mut err = None;
        let want = (limit - printed).min(1024) as usize;
        let r = source.poll(want, |f| {
            if closed || err.is_some() {
                return;
            }
            match output::line(&mut out, &render(&f, format)) {
                Ok(Wrote::Ok) => printed += 1,
                Ok(Wrote::Closed) => closed = true,
                Err(e) => err = Some(e),
            }
        });
        if closed || out.flush().is_err() {
            // Nothing past the last flush is committed: the reader of a closed pipe saw none of it.
            std::mem::forget(source);
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(e) = err {
            std::mem::forget(source);
            return Err(format!("writing stdout: {e}").into());
        }
        match r {
            Ok(0) => {
                if !follow {
                    break;
                }
                idle = (idle + 1).min(10);
                std::thread::sleep(Duration::from_micros(50 << idle.min(5)));
            }
            Ok(_) => {
                idle = 0;
                source.commit();
            }
            Err(Error::Lapped { requested, oldest }) => {
                eprintln!("ringway: warning: lapped at {requested}; continuing from the oldest position {oldest}");
                source.skip_to(oldest)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    source.commit();
    Ok(ExitCode::SUCCESS)
}
