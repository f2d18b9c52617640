//! A session's bounded outbound queue: filled by the stream tailers (which never wait), drained
//! by the connection attached to the session.
//!
//! Why not a tokio `mpsc` channel: a channel allocates about 1 KiB when it is created (its
//! cache-padded shared state and a first block of 32 slots), for every session, also for the
//! many connections that never subscribe. This queue allocates nothing until the first message
//! and gives a grown buffer back once drained, so an idle connection costs only this struct; its
//! receiver waits with a single waker slot instead of a `Notify` waiter (about 100 bytes in every
//! connection's future, and a lock to register and unregister at every wake-up).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use crate::broker::Outgoing;

/// Capacity a drained queue keeps; a larger buffer (left by a burst) is freed when it empties.
const KEEP_CAPACITY: usize = 16;

/// Bounded multi-producer queue of messages owed to one session.
#[derive(Debug)]
pub struct OutQueue {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Outgoing>,
    /// The receiver waiting for the next message (one slot: only the attached connection
    /// receives). A waker left by a receive that was cancelled costs one spurious wake-up.
    waker: Option<Waker>,
}

/// The queue held `capacity` messages; the rejected one is handed back.
#[derive(Debug)]
pub struct Full(pub Outgoing);

impl OutQueue {
    /// An empty queue for at most `capacity` messages (at least 1). Allocates nothing.
    pub fn new(capacity: usize) -> Self {
        OutQueue {
            inner: Mutex::default(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `o` unless the queue is full; never waits.
    pub fn try_send(&self, o: Outgoing) -> Result<(), Full> {
        let waker = {
            let mut inner = self.lock();
            if inner.items.len() >= self.capacity {
                return Err(Full(o));
            }
            inner.items.push_back(o);
            inner.waker.take()
        };
        // Woken outside the lock, so the receiver never finds it held.
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Takes the oldest message, if any.
    pub fn try_recv(&self) -> Option<Outgoing> {
        Self::pop(&mut self.lock())
    }

    fn pop(inner: &mut Inner) -> Option<Outgoing> {
        let o = inner.items.pop_front();
        if inner.items.is_empty() && inner.items.capacity() > KEEP_CAPACITY {
            inner.items = VecDeque::new();
        }
        o
    }

    /// Takes the oldest message, or registers `cx`'s waker to be woken by the next send.
    pub fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Outgoing> {
        let mut inner = self.lock();
        if let Some(o) = Self::pop(&mut inner) {
            return Poll::Ready(o);
        }
        // Checked and registered under the same lock as `try_send` pushes, so a message sent
        // after the check finds the waker.
        match &inner.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => inner.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for and takes the oldest message. Cancel-safe: a message is only removed by the
    /// call that returns it; dropping the future loses nothing. The future is two words (no
    /// waiter node), so a connection waiting on it stays small.
    pub fn recv(&self) -> impl std::future::Future<Output = Outgoing> + '_ {
        std::future::poll_fn(move |cx| self.poll_recv(cx))
    }

    /// Position of the first queued message of `stream` (the lowest: a stream's messages are
    /// queued in order).
    pub fn first_position_of(&self, stream: &str) -> Option<u64> {
        self.lock()
            .items
            .iter()
            .find(|o| &*o.msg.stream == stream)
            .map(|o| o.msg.position)
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.lock().items.len()
    }

    /// Whether no message is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::broker::Delivery;

    fn msg(position: u64) -> Outgoing {
        Outgoing {
            msg: Arc::new(Delivery {
                stream: Arc::from("s"),
                position,
                next_position: position + 64,
                timestamp_ns: 0,
                topic: "t".into(),
                qos: 1,
                retain: false,
                payload: bytes::Bytes::from_static(b"p"),
                properties: Default::default(),
                origin: String::new(),
            }),
            qos: 1,
            retain: false,
        }
    }

    #[test]
    fn bounded_fifo_that_frees_a_grown_buffer() {
        let q = OutQueue::new(100);
        assert!(q.is_empty());
        for p in 0..100 {
            q.try_send(msg(p)).unwrap();
        }
        let Full(back) = q.try_send(msg(100)).unwrap_err();
        assert_eq!(back.msg.position, 100);
        assert_eq!(q.len(), 100);
        for p in 0..100 {
            assert_eq!(q.try_recv().unwrap().msg.position, p);
        }
        assert!(q.try_recv().is_none());
        let cap = q.lock().items.capacity();
        assert!(cap <= KEEP_CAPACITY, "drained buffer kept {cap} slots");
    }

    #[tokio::test]
    async fn recv_wakes_on_send_from_another_thread() {
        let q = Arc::new(OutQueue::new(4));
        let sender = q.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.try_send(msg(7)).unwrap();
        });
        let o = tokio::time::timeout(Duration::from_secs(10), q.recv())
            .await
            .expect("woken by the send");
        assert_eq!(o.msg.position, 7);
        t.join().unwrap();
    }

    #[tokio::test]
    async fn a_cancelled_recv_loses_nothing() {
        let q = OutQueue::new(4);
        // A receive that is polled once and dropped (as a `select!` branch that lost).
        let pending = tokio::time::timeout(Duration::from_millis(5), q.recv()).await;
        assert!(pending.is_err());
        q.try_send(msg(1)).unwrap();
        q.try_send(msg(2)).unwrap();
        assert_eq!(q.recv().await.msg.position, 1);
        assert_eq!(q.recv().await.msg.position, 2);
    }
}
