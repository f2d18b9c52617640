//! Durable persistent sessions: their subscriptions in a small log stream (`mqtt-sessions` by
//! default), their read positions in ringway-core **named cursors** (one per session and routed
//! stream, visible with `ringway stat`).
//!
//! Log record (payload of one frame, little endian; "str" = `u16` length + UTF-8):
//! `kind: u8` (1 = snapshot, 2 = delete), `client_id: str`, then for snapshots
//! `expiry_secs: u32`, `count: u16` and `count` × (`filter: str`, `qos: u8`,
//! `options: u8` (bit 0 no-local, bit 1 retain-as-published)). At start-up the log is read from
//! the beginning; the last record of each client id wins.
//!
//! Cursor name: `mqtt:<client id>` when that fits in 64 bytes without control characters,
//! otherwise `mqtt#<16 hex digits of a hash of the client id>`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use thiserror::Error;

use crate::broker::Subscription;

const SNAPSHOT: u8 = 1;
const DELETE: u8 = 2;

/// Why a session record could not be decoded.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("corrupt session record: {0}")]
pub struct RecordError(&'static str);

/// A persistent session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSession {
    /// Client identifier.
    pub client_id: String,
    /// Session expiry interval (seconds; `u32::MAX` = never).
    pub expiry_secs: u32,
    /// Subscriptions.
    pub subscriptions: Vec<Subscription>,
}

/// One log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Full state of a session.
    Snapshot(StoredSession),
    /// The session ended.
    Delete(String),
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = s.len().min(u16::MAX as usize);
    out.extend_from_slice(&(len as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..len]);
}

impl Record {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Record::Delete(id) => {
                out.push(DELETE);
                put_str(&mut out, id);
            }
            Record::Snapshot(s) => {
                out.push(SNAPSHOT);
                put_str(&mut out, &s.client_id);
                out.extend_from_slice(&s.expiry_secs.to_le_bytes());
                let n = s.subscriptions.len().min(u16::MAX as usize);
                out.extend_from_slice(&(n as u16).to_le_bytes());
                for sub in &s.subscriptions[..n] {
                    put_str(&mut out, &sub.filter);
                    out.push(sub.qos);
                    out.push(u8::from(sub.no_local) | (u8::from(sub.retain_as_published) << 1));
                }
            }
        }
        out
    }

    /// Decodes a record.
    pub fn decode(bytes: &[u8]) -> Result<Record, RecordError> {
        let mut at = 0usize;
        let mut take = |n: usize, what: &'static str| -> Result<&[u8], RecordError> {
            let v = bytes.get(at..at + n).ok_or(RecordError(what))?;
            at += n;
            Ok(v)
        };
        let kind = take(1, "kind")?[0];
        let len = u16::from_le_bytes(
            take(2, "id length")?
                .try_into()
                .map_err(|_| RecordError("id"))?,
        );
        let id = String::from_utf8(take(len as usize, "id")?.to_vec())
            .map_err(|_| RecordError("id not UTF-8"))?;
        match kind {
            DELETE => Ok(Record::Delete(id)),
            SNAPSHOT => {
                let expiry = u32::from_le_bytes(
                    take(4, "expiry")?
                        .try_into()
                        .map_err(|_| RecordError("expiry"))?,
                );
                let n = u16::from_le_bytes(
                    take(2, "count")?
                        .try_into()
                        .map_err(|_| RecordError("count"))?,
                );
                let mut subscriptions = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    let len = u16::from_le_bytes(
                        take(2, "filter length")?
                            .try_into()
                            .map_err(|_| RecordError("filter"))?,
                    );
                    let filter = String::from_utf8(take(len as usize, "filter")?.to_vec())
                        .map_err(|_| RecordError("filter not UTF-8"))?;
                    let qos = take(1, "qos")?[0];
                    let options = take(1, "options")?[0];
                    if qos > 2 {
                        return Err(RecordError("qos"));
                    }
                    subscriptions.push(Subscription {
                        filter,
                        qos,
                        no_local: options & 1 != 0,
                        retain_as_published: options & 2 != 0,
                    });
                }
                Ok(Record::Snapshot(StoredSession {
                    client_id: id,
                    expiry_secs: expiry,
                    subscriptions,
                }))
            }
            _ => Err(RecordError("unknown kind")),
        }
    }
}

/// Folds log records into the live sessions (last record per client id wins).
pub fn replay<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> HashMap<String, StoredSession> {
    let mut sessions = HashMap::new();
    for bytes in records {
        match Record::decode(bytes) {
            Ok(Record::Snapshot(s)) => {
                sessions.insert(s.client_id.clone(), s);
            }
            Ok(Record::Delete(id)) => {
                sessions.remove(&id);
            }
            Err(e) => log::warn!("skipping {e}"),
        }
    }
    sessions
}

/// Name of the durable cursor of `client_id`'s session.
pub fn cursor_name(client_id: &str) -> String {
    let plain = format!("mqtt:{client_id}");
    if plain.len() <= 64 && !plain.chars().any(char::is_control) {
        return plain;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    client_id.hash(&mut h);
    format!("mqtt#{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_replay_keeps_the_last() {
        let s = StoredSession {
            client_id: "dev-1".into(),
            expiry_secs: u32::MAX,
            subscriptions: vec![Subscription {
                filter: "a/#".into(),
                qos: 1,
                no_local: true,
                retain_as_published: false,
            }],
        };
        let snap = Record::Snapshot(s.clone()).encode();
        assert_eq!(Record::decode(&snap).unwrap(), Record::Snapshot(s.clone()));
        let del = Record::Delete("dev-1".into()).encode();
        let other = Record::Snapshot(StoredSession {
            client_id: "dev-2".into(),
            expiry_secs: 60,
            subscriptions: vec![],
        })
        .encode();
        let live = replay([&snap[..], &other[..], &del[..]]);
        assert_eq!(live.len(), 1);
        assert!(live.contains_key("dev-2"));
        let live = replay([&del[..], &snap[..], b"\x09junk".as_slice()]);
        assert_eq!(live.get("dev-1"), Some(&s));
        for cut in 0..snap.len() {
            assert!(Record::decode(&snap[..cut]).is_err());
        }
    }

    #[test]
    fn cursor_names_fit() {
        assert_eq!(cursor_name("dev-1"), "mqtt:dev-1");
        let long = cursor_name(&"x".repeat(100));
        assert!(long.starts_with("mqtt#") && long.len() == 21);
        assert!(cursor_name("a\nb").starts_with("mqtt#"));
    }
}
