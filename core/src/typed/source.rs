//! [`FrameSource`]: what a typed subscriber reads frames from.

use std::time::Duration;

use crate::{Frame, GroupMember, NamedReader, Reader, Result};

/// A sequence of committed frames a [`Subscriber`](super::Subscriber) can read: a plain
/// [`Reader`], a durable [`NamedReader`] (which commits its cursor as it goes), or a consumer
/// [`GroupMember`] (each message to one member; acknowledged when the handler returns).
pub trait FrameSource {
    /// Hands up to `limit` committed data frames to `handler`, each with its delivery count (1
    /// for the first delivery; more when a consumer group redelivers a message whose member
    /// died); returns how many.
    fn poll_frames<F: FnMut(Frame<'_>, u32)>(&mut self, limit: usize, handler: F) -> Result<usize>;
    /// Blocks until a frame is ready or `timeout` passes (see [`Reader::wait`]).
    fn wait_frames(&mut self, timeout: Duration) -> Result<bool>;
}

impl FrameSource for Reader {
    #[inline]
    fn poll_frames<F: FnMut(Frame<'_>, u32)>(
        &mut self,
        limit: usize,
        mut handler: F,
    ) -> Result<usize> {
        self.poll(limit, |f| handler(f, 1))
    }
    fn wait_frames(&mut self, timeout: Duration) -> Result<bool> {
        self.wait(timeout)
    }
}

impl FrameSource for NamedReader {
    #[inline]
    fn poll_frames<F: FnMut(Frame<'_>, u32)>(
        &mut self,
        limit: usize,
        mut handler: F,
    ) -> Result<usize> {
        self.poll(limit, |f| handler(f, 1))
    }
    fn wait_frames(&mut self, timeout: Duration) -> Result<bool> {
        self.reader_mut().wait(timeout)
    }
}

/// A typed subscriber over a consumer group sees each frame once per delivery; the delivery count
/// is not passed on (use [`GroupMember::poll`] directly where it matters).
impl FrameSource for GroupMember {
    #[inline]
    fn poll_frames<F: FnMut(Frame<'_>, u32)>(
        &mut self,
        limit: usize,
        mut handler: F,
    ) -> Result<usize> {
        self.poll(limit, |d| handler(d.frame, d.count))
    }
    fn wait_frames(&mut self, timeout: Duration) -> Result<bool> {
        self.wait(timeout)
    }
}
