//! Where a sender publishes what its receivers acknowledged (their STATUS positions): the
//! in-process [`AckTracker`] of synchronous mode, when configured, and the stream's replica
//! acknowledgement table in its `meta` file ([`ringway_core::ReplicaAcks`]), which any process on
//! the primary reads (the MQTT gateway waits on it before a QoS 1 PUBACK).
//!
//! Called only when a STATUS moves a receiver's position, when a session starts, and when one
//! ends: never on the data path.

use std::collections::HashSet;

use ringway_core::{ReplicaAckError, ReplicaAcks};

use crate::sync::AckTracker;

/// The acknowledgement outlets of one sender.
#[derive(Debug, Default)]
pub(crate) struct AckSinks {
    tracker: Option<AckTracker>,
    table: Option<ReplicaAcks>,
    /// Receivers recorded in the table, released when their session ends (or the sender goes).
    recorded: HashSet<u64>,
    /// Whether a full table was already reported (once per sender, not per STATUS).
    warned_full: bool,
}

impl AckSinks {
    /// Outlets: `tracker` (synchronous mode) and `table` (the source stream's, if it has one).
    pub(crate) fn new(tracker: Option<AckTracker>, table: Option<ReplicaAcks>) -> Self {
        AckSinks {
            tracker,
            table,
            recorded: HashSet::new(),
            warned_full: false,
        }
    }

    /// `receiver` holds everything before `position`.
    pub(crate) fn update(&mut self, receiver: u64, position: u64) {
        if let Some(t) = &self.tracker {
            t.update(receiver, position);
        }
        let Some(table) = &self.table else {
            return;
        };
        match table.record(receiver, position) {
            Ok(()) => {
                self.recorded.insert(receiver);
            }
            Err(e @ ReplicaAckError::TableFull { .. }) => {
                if !self.warned_full {
                    self.warned_full = true;
                    log::warn!("receiver {receiver:#x}: {e}; its acknowledgements are not shared with other processes");
                }
            }
            Err(e) => log::debug!("receiver acknowledgement not recorded: {e}"),
        }
    }

    /// `receiver`'s session ended: its acknowledgements no longer count.
    pub(crate) fn remove(&mut self, receiver: u64) {
        if let Some(t) = &self.tracker {
            t.remove(receiver);
        }
        if self.recorded.remove(&receiver) {
            if let Some(table) = &self.table {
                table.release(receiver);
            }
        }
    }

    /// Every session ended (the sender closes).
    pub(crate) fn remove_all(&mut self) {
        let ids: Vec<u64> = self.recorded.iter().copied().collect();
        for id in ids {
            self.remove(id);
        }
    }
}

impl Drop for AckSinks {
    fn drop(&mut self) {
        self.remove_all();
    }
}
