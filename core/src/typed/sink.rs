//! An rkyv writer over a claimed frame that measures what does not fit instead of failing.

use rkyv::ser::{Positional, Writer};

/// Writes serialized bytes into a claimed payload region of the mapping.
///
/// When the region is too small the sink stops copying but keeps counting, so the serializer
/// runs to completion and [`ClaimSink::pos`] tells the exact size a retry must claim. The
/// serializer only ever appends (it never reads back what it wrote), so the positions it
/// computes stay right after an overflow.
#[derive(Debug)]
pub struct ClaimSink<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflowed: bool,
}

impl<'a> ClaimSink<'a> {
    /// A sink writing from the start of `buf`.
    pub fn new(buf: &'a mut [u8]) -> Self {
        ClaimSink {
            buf,
            pos: 0,
            overflowed: false,
        }
    }

    /// Whether some bytes did not fit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

impl Positional for ClaimSink<'_> {
    #[inline]
    fn pos(&self) -> usize {
        self.pos
    }
}

impl<E> Writer<E> for ClaimSink<'_> {
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        let end = self.pos + bytes.len();
        if !self.overflowed && end <= self.buf.len() {
            self.buf[self.pos..end].copy_from_slice(bytes);
        } else {
            self.overflowed = true;
        }
        self.pos = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_past_the_end() {
        let mut buf = [0u8; 4];
        let mut s = ClaimSink::new(&mut buf);
        Writer::<()>::write(&mut s, &[1, 2, 3]).unwrap();
        assert!(!s.overflowed());
        Writer::<()>::write(&mut s, &[4, 5]).unwrap();
        assert!(s.overflowed());
        assert_eq!(s.pos(), 5);
        Writer::<()>::write(&mut s, &[6]).unwrap();
        assert_eq!(s.pos(), 6);
        assert_eq!(buf, [1, 2, 3, 0]);
    }
}
