//! Stream positions.

use core::fmt;

/// A byte offset in a stream: where a frame starts. Monotonic and never reused.
///
/// ```
/// use ringway_core::Position;
/// let p = Position(4096);
/// assert_eq!(p.get(), 4096);
/// assert_eq!(p.to_string(), "4096");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub u64);

impl Position {
    /// The first position of every stream.
    pub const ZERO: Position = Position(0);

    /// The byte offset.
    #[inline]
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for Position {
    fn from(v: u64) -> Self {
        Position(v)
    }
}

impl From<Position> for u64 {
    fn from(p: Position) -> Self {
        p.0
    }
}
