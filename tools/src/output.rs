//! Writing to stdout without panicking when the reader goes away (`ringway tail | head`).

use std::io::{self, Write};

/// Result of writing a line.
pub enum Wrote {
    Ok,
    /// stdout was closed: stop quietly.
    Closed,
}

/// Writes `line` and a newline; a closed pipe is not an error.
pub fn line(out: &mut impl Write, line: &str) -> io::Result<Wrote> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(Wrote::Ok),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(Wrote::Closed),
        Err(e) => Err(e),
    }
}
