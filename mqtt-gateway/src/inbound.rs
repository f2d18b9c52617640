//! The PUBLISHes a connection received in one read, stored together: every message is checked and
//! its meta encoded as it is decoded ([`Broker::prepare`]), then the whole run of messages for a
//! stream is appended under one lock of the stream's writer ([`Journal::append_batch`]), and only
//! then are they acknowledged, in the order received, with one write for all the PUBACKs.
//!
//! Batching changes no outcome: a message the connection must check against the ones before it
//! (a QoS 1 resend with DUP, any QoS 2 message) is stored only after everything before it, and
//! for MQTT 3.1.1 (which has no negative acknowledgement) nothing after a failed append is
//! appended, exactly as if the messages had been stored one by one.
//!
//! [`Journal::append_batch`]: crate::journal::Journal::append_batch

use std::sync::atomic::Ordering;

use ringway_core::frame::{align_up, frame_len};

use crate::broker::{Broker, Prepared, StoreOutcome};
use crate::codec::Publish;
use crate::dedup::DuplicateFilter;
use crate::journal::AppendItem;
use crate::metrics::Metrics;

/// What a stored (or refused) message is acknowledged with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack<'b> {
    /// QoS of the PUBLISH (0: nothing to send).
    pub qos: u8,
    /// Its packet id.
    pub pkid: u16,
    /// What became of it.
    pub outcome: StoreOutcome,
    /// The stream it is in: where it was appended (with the position after its frame), or,
    /// for a redelivery not appended again, the stream its route names (`None` for the end:
    /// stored earlier, somewhere before the stream's tail). `None` when it is in no stream.
    pub stored_in: Option<(&'b str, Option<u64>)>,
}

/// A message received and checked, not yet stored.
#[derive(Debug)]
struct Pending<'b> {
    publish: Publish,
    /// `Err`: not to be appended, acknowledged with this outcome.
    prepared: Result<Prepared<'b>, StoreOutcome>,
}

/// Messages of one read of one connection (see the module docs). Empty between reads; its
/// buffers are kept (and given back when a burst made them large).
#[derive(Debug, Default)]
pub struct InboundBatch<'b> {
    pending: Vec<Pending<'b>>,
    /// Encoded meta of the pending messages (each [`Prepared`] says where its own is).
    meta: Vec<u8>,
    positions: Vec<u64>,
    /// Acknowledgements owed after the last [`InboundBatch::store`], in the order received.
    done: Vec<Ack<'b>>,
    /// PUBLISH packets received per QoS, and their payload bytes, not yet counted in the metrics.
    received: [u64; 3],
    received_bytes: u64,
}

/// Buffers larger than this are freed once the batch is stored.
const KEEP_ITEMS: usize = 64;

impl<'b> InboundBatch<'b> {
    /// Nothing pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Counts a received PUBLISH (added to the metrics once per batch).
    pub fn count(&mut self, qos: u8, payload_len: usize) {
        self.received[usize::from(qos.min(2))] += 1;
        self.received_bytes += payload_len as u64;
    }

    /// Checks `publish` with [`Broker::prepare`] (its meta goes to this batch's buffer) and adds
    /// it to the batch.
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        broker: &'b Broker,
        client_id: &str,
        identity: &crate::auth::Identity,
        publish: Publish,
        v5: bool,
        qos2_duplicate: bool,
        dedup: &DuplicateFilter,
    ) {
        let mut prepared = broker.prepare(
            client_id,
            identity,
            &publish,
            v5,
            qos2_duplicate,
            Some(dedup),
            &mut self.meta,
        );
        // Two copies of one telemetry reading in the same batch: the second is a duplicate (the
        // device filter only learns of the first once it is stored).
        if let Ok(Some(id)) = prepared.as_ref().map(Prepared::reading) {
            let seen = self
                .pending
                .iter()
                .any(|q| matches!(&q.prepared, Ok(r) if r.reading() == Some(id)));
            if seen {
                Metrics::inc(&broker.metrics.duplicates_suppressed);
                prepared = Err(StoreOutcome::Duplicate);
            }
        }
        self.pending.push(Pending { publish, prepared });
    }

    /// Appends the pending messages (one [`crate::journal::Journal::append_batch`] per run of
    /// messages for the same stream), records them in `dedup`, and leaves every message's
    /// acknowledgement in [`InboundBatch::take_done`]'s list. With `stop_on_failure`, messages
    /// after a failed append are not attempted (and get no acknowledgement).
    pub fn store(
        &mut self,
        broker: &'b Broker,
        client_id: &str,
        dedup: &mut DuplicateFilter,
        stop_on_failure: bool,
    ) {
        let m = &broker.metrics;
        for (q, n) in self.received.iter_mut().enumerate() {
            if *n > 0 {
                m.publish_in[q].fetch_add(std::mem::take(n), Ordering::Relaxed);
            }
        }
        if self.received_bytes > 0 {
            m.publish_in_bytes
                .fetch_add(std::mem::take(&mut self.received_bytes), Ordering::Relaxed);
        }
        let ack = |q: &Pending<'_>, outcome| Ack {
            qos: q.publish.qos,
            pkid: q.publish.pkid,
            outcome,
            stored_in: match outcome {
                StoreOutcome::Duplicate => broker
                    .routes
                    .inbound(&q.publish.topic)
                    .map(|r| (r.stream.as_str(), None)),
                _ => None,
            },
        };
        let pending = &self.pending;
        let mut appended = 0u64;
        let mut i = 0;
        'all: while i < pending.len() {
            let stream = match &pending[i].prepared {
                Ok(p) => p.stream,
                Err(outcome) => {
                    self.done.push(ack(&pending[i], *outcome));
                    i += 1;
                    continue;
                }
            };
            // The run of appendable messages for the same stream that starts at `i`.
            let end = i + pending[i..]
                .iter()
                .take_while(|q| matches!(&q.prepared, Ok(p) if p.stream == stream))
                .count();
            let (mut retained, before) = (false, appended);
            while i < end {
                let items: Vec<AppendItem<'_>> = pending[i..end]
                    .iter()
                    .filter_map(|q| {
                        q.prepared
                            .as_ref()
                            .ok()
                            .map(|p| p.item(&self.meta, &q.publish))
                    })
                    .collect();
                self.positions.clear();
                let result = broker
                    .journal
                    .append_batch(stream, &items, &mut self.positions);
                for (&pos, item) in self.positions.iter().zip(&items) {
                    let q = &pending[i];
                    if let Ok(p) = &q.prepared {
                        let outcome = broker.stored(client_id, &q.publish, p, pos, Some(dedup));
                        let mut a = ack(q, outcome);
                        if matches!(outcome, StoreOutcome::Stored(_)) {
                            let len = frame_len(item.meta.len(), item.payload.len());
                            a.stored_in = Some((stream, Some(pos + align_up(len))));
                        }
                        self.done.push(a);
                    }
                    retained |= q.publish.retain;
                    appended += 1;
                    i += 1;
                }
                if let Err(e) = result {
                    self.done
                        .push(ack(&pending[i], broker.store_failed(stream, &e)));
                    i += 1;
                    if stop_on_failure {
                        if appended > before {
                            broker.wake_after(stream, retained);
                        }
                        break 'all;
                    }
                }
            }
            if appended > before {
                broker.wake_after(stream, retained);
            }
        }
        if appended > 0 {
            m.appended.fetch_add(appended, Ordering::Relaxed);
        }
        self.pending.clear();
        self.meta.clear();
        if self.meta.capacity() > KEEP_ITEMS * 256 {
            self.meta = Vec::new();
        }
        if self.positions.capacity() > KEEP_ITEMS {
            self.positions = Vec::new();
        }
    }

    /// The outcomes of the last [`InboundBatch::store`], in the order the messages were received.
    pub fn take_done(&mut self) -> std::vec::Drain<'_, Ack<'b>> {
        self.done.drain(..)
    }

    /// Frees the outcome list if a burst made it large (call after draining it).
    pub fn trim(&mut self) {
        if self.done.is_empty() && self.done.capacity() > KEEP_ITEMS {
            self.done = Vec::new();
        }
        if self.pending.is_empty() && self.pending.capacity() > KEEP_ITEMS {
            self.pending = Vec::new();
        }
    }
}
