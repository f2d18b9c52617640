//! State shared by all connections: sessions, subscriptions, retained messages, the QoS 1
//! duplicate filter, and the store path (route → ACL → validate → append).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::auth::{Authenticator, Identity};
use crate::codec::Publish;
use crate::config::Config;
use crate::config::PayloadType;
use crate::dedup::{self, DuplicateFilter};
use crate::journal::{AppendItem, Journal, JournalError, RecordRef};
use crate::meta::{MessageProperties, MetaRef, MqttMeta};
use crate::metrics::{Drop, Metrics};
use crate::queue::OutQueue;
use crate::route::RouteTable;
use crate::session_store;
use crate::topic;
use ringway_core::wire::{
    access_telemetry, WireBuf, WireError, TELEMETRY_TYPE_ID, TELEMETRY_WIRE_SIZE,
    WIRE_SCHEMA_VERSION,
};

/// A message on its way to subscribers, shared by all of them.
#[derive(Debug)]
pub struct Delivery {
    /// Stream it was read from.
    pub stream: Arc<str>,
    /// Its position there.
    pub position: u64,
    /// Position just after it.
    pub next_position: u64,
    /// Append time (ns since the Unix epoch), for MQTT 5 message expiry.
    pub timestamp_ns: u64,
    /// Topic it is delivered under.
    pub topic: String,
    /// QoS it was published with.
    pub qos: u8,
    /// Retain flag it was published with.
    pub retain: bool,
    /// Payload, verbatim.
    pub payload: Bytes,
    /// MQTT 5 properties.
    pub properties: MessageProperties,
    /// Client id of the MQTT publisher ("" for other writers).
    pub origin: String,
}

/// One message queued for one subscriber.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The message.
    pub msg: Arc<Delivery>,
    /// QoS granted for this subscriber (min of published and subscribed).
    pub qos: u8,
    /// Retain flag to send.
    pub retain: bool,
}

/// A subscription of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS.
    pub qos: u8,
    /// MQTT 5 no-local.
    pub no_local: bool,
    /// MQTT 5 retain-as-published.
    pub retain_as_published: bool,
}

/// Outbound QoS 1/2 message awaiting acknowledgement.
#[derive(Debug, Clone)]
pub enum Inflight {
    /// PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Publish(Outgoing),
    /// PUBREL sent, waiting for PUBCOMP.
    Release,
}

/// Session data used by exactly one connection at a time (the connection holds the lock for its
/// whole life; a taking-over connection waits for it).
#[derive(Debug)]
pub struct SessionData {
    /// Outbound messages not yet acknowledged, by packet id (resent on reconnect).
    pub inflight: BTreeMap<u16, Inflight>,
    /// Inbound QoS 2 packet ids stored and PUBREC'd, waiting for PUBREL.
    /// (At most `mqtt.max_inflight` ids: a vector, which allocates nothing for clients that never
    /// publish QoS 2.)
    pub incoming_qos2: Vec<u16>,
    /// Next outbound packet id to try.
    pub next_pkid: u16,
    /// QoS 1 duplicate filter of the client's publishes (kept with the session, so a persistent
    /// session's resends after a reconnect are recognised).
    pub dedup: DuplicateFilter,
}

/// Control part of a session, under a short std mutex.
#[derive(Debug, Default)]
pub struct SessionCtl {
    /// Incremented by every connection that attaches.
    pub generation: u64,
    /// Ends the attached connection (value: MQTT 5 disconnect reason).
    pub kill: Option<oneshot::Sender<u8>>,
    /// Session expiry interval in seconds (`u32::MAX` = never).
    pub expiry_secs: u32,
}

/// Kill reason (MQTT 5 DISCONNECT reason code) telling a connection another one took its session.
pub const KILL_TAKEN_OVER: u8 = 0x8E;
/// Kill reason telling a connection the gateway shuts down.
pub const KILL_SHUTDOWN: u8 = 0x8B;
/// Kill reason telling a connection its keep-alive expired.
pub const KILL_KEEP_ALIVE: u8 = 0x8D;

/// How often [`Broker::sweep_keep_alive`] runs: a silent client is disconnected at most this
/// much later than 1.5 × its keep-alive.
pub const KEEP_ALIVE_SWEEP: std::time::Duration = std::time::Duration::from_millis(250);

/// A session: survives connections when it is persistent.
#[derive(Debug)]
pub struct Session {
    /// Client identifier.
    pub client_id: String,
    /// Exclusive per-connection data.
    pub data: tokio::sync::Mutex<SessionData>,
    /// Control data.
    pub ctl: Mutex<SessionCtl>,
    /// A connection is attached. Written under `ctl`; read by the fan-out to skip QoS 0 for
    /// offline sessions; Relaxed is enough because a stale read only affects one QoS 0 message.
    pub online: AtomicBool,
    /// Messages owed to the client: filled by the fan-out, drained only by the connection that
    /// holds `data` (the attached one).
    pub queue: OutQueue,
    subs: RwLock<Vec<Subscription>>,
    /// Retained messages already sent at SUBSCRIBE whose frames the tailer had not dispatched
    /// yet: (stream, position). The live copy is skipped so the client gets the message once,
    /// flagged retained.
    skip_live: Mutex<Vec<(Arc<str>, u64)>>,
    /// Streams on which this session's queue overflowed, with the position to resume reading
    /// from. While a stream is here the fan-out sends nothing of it to this session; the
    /// connection reads it from the journal instead ([`Broker::catch_up`]) until it reaches
    /// the tailer, then hands back to live delivery.
    lag: Mutex<StreamPositions>,
    /// The session was written to the sessions log (so its removal must be logged too).
    persisted: AtomicBool,
    /// When the attached connection last received a packet ([`Broker::now_ms`], wrapping).
    /// Written by that connection, read by the keep-alive sweep; Relaxed: a stale value only
    /// delays the sweep's decision to its next round.
    last_rx_ms: AtomicU32,
    /// How long the attached connection may stay silent (1.5 × keep-alive, ms; 0 = forever).
    /// Relaxed as `last_rx_ms`.
    silence_limit_ms: AtomicU32,
}

impl Session {
    fn new(client_id: &str, queue: usize) -> Arc<Self> {
        Arc::new(Session {
            client_id: client_id.to_owned(),
            data: tokio::sync::Mutex::new(SessionData {
                inflight: BTreeMap::new(),
                incoming_qos2: Vec::new(),
                next_pkid: 1,
                dedup: DuplicateFilter::default(),
            }),
            ctl: Mutex::new(SessionCtl::default()),
            online: AtomicBool::new(false),
            queue: OutQueue::new(queue),
            subs: RwLock::new(Vec::new()),
            skip_live: Mutex::new(Vec::new()),
            lag: Mutex::new(StreamPositions::default()),
            persisted: AtomicBool::new(false),
            last_rx_ms: AtomicU32::new(0),
            silence_limit_ms: AtomicU32::new(0),
        })
    }

    /// Notes that the attached connection received a packet at `now_ms` ([`Broker::now_ms`]).
    pub fn touch(&self, now_ms: u32) {
        // Relaxed: see `last_rx_ms`.
        self.last_rx_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Starts keep-alive supervision of the attached connection at `now_ms`: it is told to end
    /// (kill reason [`KILL_KEEP_ALIVE`]) after `keep_alive_secs` × 1.5 without a packet
    /// (0: never).
    pub fn supervise(&self, now_ms: u32, keep_alive_secs: u16) {
        self.touch(now_ms);
        let limit = u32::from(keep_alive_secs) * 1500;
        // Relaxed: see `silence_limit_ms`.
        self.silence_limit_ms.store(limit, Ordering::Relaxed);
    }

    /// Where the session resumes reading `stream` from the journal, while its queue overflowed
    /// for that stream (or it is restored after a restart).
    pub fn lag_position(&self, stream: &str) -> Option<u64> {
        self.lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .copied()
    }

    /// True when the session reads some stream from the journal (its queue overflowed).
    pub fn is_lagging(&self) -> bool {
        !self
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Best matching subscription for `d`: (granted QoS, retain flag to send).
    fn best_match(&self, d: &Delivery) -> Option<(u8, bool)> {
        let mut best: Option<(u8, bool)> = None;
        for sub in self.subs.read().unwrap_or_else(|p| p.into_inner()).iter() {
            if sub.no_local && d.origin == self.client_id {
                continue;
            }
            if topic::matches(&d.topic, &sub.filter) {
                let q = sub.qos.min(d.qos);
                let rap = sub.retain_as_published && d.retain;
                best = Some(match best {
                    Some((bq, br)) => (bq.max(q), br || rap),
                    None => (q, rap),
                });
            }
        }
        best
    }

    /// Current subscriptions.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        self.subs.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A PUBLISH that passed the checks of [`Broker::prepare`], its meta encoded: ready to append.
#[derive(Debug)]
pub struct Prepared<'b> {
    /// Stream to append to (the route's, or the dead-letter stream).
    pub stream: &'b str,
    /// (type id, schema version) of the frame.
    typed: (u32, u16),
    /// Where its meta is in the buffer given to `prepare`.
    meta: std::ops::Range<usize>,
    /// Failed the route's validation: appended to the dead-letter stream.
    dead: bool,
    /// Identity of a telemetry reading (typed routes).
    reading: Option<ReadingId>,
    /// Fingerprint of a QoS 1 message, for the duplicate filter.
    hash: Option<u64>,
}

impl Prepared<'_> {
    /// Identity of the telemetry reading it carries (typed routes).
    pub fn reading(&self) -> Option<(u64, u32, u64)> {
        self.reading
    }

    /// The frame to append: meta from `meta_buf` (the buffer given to `prepare`), payload from `p`.
    pub fn item<'a>(&self, meta_buf: &'a [u8], p: &'a Publish) -> AppendItem<'a> {
        AppendItem {
            type_id: self.typed.0,
            schema_version: self.typed.1,
            meta: &meta_buf[self.meta.clone()],
            payload: &p.payload,
        }
    }
}

/// Positions per stream of one session (a handful of streams at most): a vector, which costs a
/// session one word less than a hash map and nothing until used.
#[derive(Debug, Default)]
pub struct StreamPositions(Vec<(Arc<str>, u64)>);

impl StreamPositions {
    /// The position recorded for `stream`.
    pub fn get(&self, stream: &str) -> Option<&u64> {
        self.0.iter().find(|(s, _)| **s == *stream).map(|(_, p)| p)
    }

    /// True when a position is recorded for `stream`.
    pub fn contains_key(&self, stream: &str) -> bool {
        self.get(stream).is_some()
    }

    /// Records `position` for `stream` (replacing any previous one).
    pub fn insert(&mut self, stream: Arc<str>, position: u64) {
        match self.0.iter_mut().find(|(s, _)| *s == stream) {
            Some(e) => e.1 = position,
            None => self.0.push((stream, position)),
        }
    }

    /// Forgets `stream`'s position.
    pub fn remove(&mut self, stream: &str) {
        self.0.retain(|(s, _)| **s != *stream);
    }

    /// True when no position is recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// (stream, position) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &u64)> {
        self.0.iter().map(|(s, p)| (s, p))
    }
}

/// Result of storing a PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOutcome {
    /// Appended at this position of this stream.
    Stored(u64),
    /// A redelivery of a message already stored: not appended again.
    Duplicate,
    /// ACL forbids the topic.
    Denied,
    /// No route matches the topic.
    NoRoute,
    /// Failed route validation; appended to the dead-letter stream.
    DeadLetter,
    /// Larger than the stream accepts.
    TooLarge,
    /// The journal failed; nothing was stored.
    Failed,
}

#[derive(Debug)]
struct RetainedEntry {
    stream: Arc<str>,
    position: u64,
    /// `None` is a tombstone (retained message cleared).
    msg: Option<Arc<Delivery>>,
}

/// Shared gateway state.
pub struct Broker {
    /// Configuration in effect.
    pub config: Config,
    /// Storage.
    pub journal: Arc<dyn Journal>,
    /// Synchronous replication (`None`: acknowledgements follow the append).
    pub sync: Option<crate::sync_replication::SyncReplication>,
    /// Routes.
    pub routes: RouteTable,
    /// Credentials and ACLs.
    pub auth: Authenticator,
    /// Counters.
    pub metrics: Arc<Metrics>,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    /// Sessions with at least one subscription: the fan-out's copy-on-write snapshot, rebuilt
    /// (under `sessions`) whenever subscriptions or sessions change.
    subscribers: RwLock<Arc<Vec<Arc<Session>>>>,
    retained: RwLock<HashMap<String, RetainedEntry>>,
    /// QoS 1 duplicate filters of clients that store without a session here (bridges), and,
    /// between the start-up scan and [`Broker::restore_sessions`], of every client.
    dedup: Mutex<HashMap<String, DuplicateFilter>>,
    /// Per device: readings already stored (firmware sequence numbers).
    devices: Mutex<HashMap<u64, SeqWindow>>,
    wakers: RwLock<HashMap<String, std::thread::Thread>>,
    /// Per stream: every frame below this position has been dispatched by its tailer.
    dispatched: RwLock<HashMap<String, Arc<AtomicU64>>>,
    /// Per stream: held by the tailer while it dispatches a frame and advances `dispatched`,
    /// and by a catching-up session while it decides to hand back to live delivery, so the two
    /// never interleave (no frame lost or sent twice at the hand-over).
    dispatch_locks: RwLock<HashMap<String, Arc<Mutex<()>>>>,
    next_client_number: AtomicU64,
    /// (start of the current one-second window, CONNECTs admitted in it).
    connect_window: Mutex<(std::time::Instant, u32)>,
    /// Origin of [`Broker::now_ms`].
    epoch: std::time::Instant,
    /// Set by [`Broker::disconnect_all`]: connections attaching afterwards end at once.
    closing: AtomicBool,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker").finish_non_exhaustive()
    }
}

/// (device id, boot id, sequence number) of a telemetry reading.
type ReadingId = (u64, u32, u64);

/// Validates a payload as a `ringway_core::wire::Telemetry` and returns its identity.
fn telemetry_id(payload: &[u8]) -> Result<ReadingId, WireError> {
    let mut buf = WireBuf::<TELEMETRY_WIRE_SIZE>::new();
    let t = access_telemetry(buf.load(payload)?)?;
    Ok((t.device_id(), t.boot_id(), t.seq()))
}

/// The sequence numbers of one device's current boot that were stored: everything up to
/// `base`, plus a bitmap of the 256 numbers after it. Readings of an older boot, or more than
/// 256 behind the newest, count as already stored (the firmware sends its outbox in order and
/// retransmits only within its window).
#[derive(Debug, Clone, Default)]
pub struct SeqWindow {
    boot: u32,
    /// Every sequence number below `base` has been stored.
    base: u64,
    bits: [u64; 4],
    started: bool,
}

impl SeqWindow {
    fn contains(&self, boot: u32, seq: u64) -> bool {
        if !self.started || boot != self.boot {
            return false;
        }
        if seq < self.base {
            return true;
        }
        let off = seq - self.base;
        off < 256 && self.bits[(off / 64) as usize] & (1 << (off % 64)) != 0
    }

    fn insert(&mut self, boot: u32, seq: u64) {
        if !self.started || boot != self.boot {
            *self = SeqWindow {
                boot,
                base: seq,
                bits: [0; 4],
                started: true,
            };
        }
        if seq < self.base {
            return;
        }
        // Slide so that `seq` fits in the window.
        while seq - self.base >= 256 {
            self.shift(64);
        }
        let off = seq - self.base;
        self.bits[(off / 64) as usize] |= 1 << (off % 64);
        // Advance over a complete prefix.
        while self.bits[0] == u64::MAX {
            self.shift(64);
        }
    }

    fn shift(&mut self, n: u64) {
        debug_assert_eq!(n, 64);
        self.bits = [self.bits[1], self.bits[2], self.bits[3], 0];
        self.base += 64;
    }
}

/// Wall-clock time in ns since the Unix epoch (0 if the clock is before 1970).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Broker {
    /// Builds the shared state.
    pub fn new(config: Config, journal: Arc<dyn Journal>, metrics: Arc<Metrics>) -> Self {
        let routes = RouteTable::new(&config.effective_routes());
        let auth = Authenticator::new(&config.auth);
        let sync =
            crate::sync_replication::SyncReplication::new(&config.replication, journal.clone());
        Broker {
            config,
            sync,
            journal,
            routes,
            auth,
            metrics,
            sessions: Mutex::default(),
            subscribers: RwLock::default(),
            retained: RwLock::default(),
            dedup: Mutex::default(),
            devices: Mutex::default(),
            wakers: RwLock::default(),
            dispatched: RwLock::default(),
            dispatch_locks: RwLock::default(),
            next_client_number: AtomicU64::new(1),
            connect_window: Mutex::new((std::time::Instant::now(), 0)),
            epoch: std::time::Instant::now(),
            closing: AtomicBool::new(false),
        }
    }

    /// Milliseconds since the broker was built, wrapping every 49.7 days (compare with
    /// `wrapping_sub`): the keep-alive clock.
    pub fn now_ms(&self) -> u32 {
        self.epoch.elapsed().as_millis() as u32
    }

    /// Tells every attached connection to end (gateway shutdown, MQTT 5 reason 0x8B); a
    /// connection attaching afterwards sees [`Broker::is_closing`] and ends too.
    pub fn disconnect_all(&self) {
        // SeqCst (with the `ctl` lock below and in the handshake): either this loop finds the
        // attaching connection's kill sender, or that connection sees the flag after installing
        // it.
        self.closing.store(true, Ordering::SeqCst);
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for s in sessions {
            let kill = s.ctl.lock().unwrap_or_else(|p| p.into_inner()).kill.take();
            if let Some(k) = kill {
                let _ = k.send(KILL_SHUTDOWN);
            }
        }
    }

    /// True once [`Broker::disconnect_all`] was called.
    pub fn is_closing(&self) -> bool {
        // SeqCst: see `disconnect_all`.
        self.closing.load(Ordering::SeqCst)
    }

    /// One round of keep-alive supervision: tells every attached connection that has been
    /// silent for longer than its limit to end. The gateway runs it every
    /// [`KEEP_ALIVE_SWEEP`], instead of a timer in every connection (a timer is over 100 bytes
    /// in each connection's state, and resetting it costs a lock of the timer wheel).
    pub fn sweep_keep_alive(&self) {
        let now = self.now_ms();
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let expired: Vec<Arc<Session>> = sessions
            .values()
            .filter(|s| {
                // Relaxed: see the fields.
                let limit = s.silence_limit_ms.load(Ordering::Relaxed);
                limit > 0
                    && s.online.load(Ordering::Relaxed)
                    && now.wrapping_sub(s.last_rx_ms.load(Ordering::Relaxed)) > limit
            })
            .cloned()
            .collect();
        drop(sessions);
        for s in expired {
            let kill = s.ctl.lock().unwrap_or_else(|p| p.into_inner()).kill.take();
            if let Some(k) = kill {
                let _ = k.send(KILL_KEEP_ALIVE);
            }
        }
    }

    /// Admits one CONNECT under `mqtt.max_connect_rate` (per second; 0 = unlimited).
    pub fn allow_connect(&self) -> bool {
        let limit = self.config.mqtt.max_connect_rate;
        if limit == 0 {
            return true;
        }
        let mut w = self
            .connect_window
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(w.0) >= std::time::Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 < limit {
            w.1 += 1;
            true
        } else {
            false
        }
    }

    /// Registers the thread that tails `stream`, to wake it after local appends.
    pub fn set_waker(&self, stream: &str, thread: std::thread::Thread) {
        self.wakers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(stream.to_owned(), thread);
    }

    fn wake(&self, stream: &str) {
        if let Some(t) = self
            .wakers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            t.unpark();
        }
    }

    /// A fresh client identifier for MQTT 5 clients that sent an empty one.
    pub fn assign_client_id(&self) -> String {
        // Relaxed: only uniqueness matters, which the atomic increment gives in any ordering.
        format!(
            "ringway-{}-{}",
            std::process::id(),
            self.next_client_number.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Finds or creates the session for `client_id`. With `clean_start` any previous session is
    /// discarded. Returns the session and whether a previous one was resumed. Any connection
    /// still attached to the previous session is told to end (`takeover_reason`).
    pub fn attach(&self, client_id: &str, clean_start: bool) -> (Arc<Session>, bool) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = sessions.get(client_id) {
            let mut ctl = existing.ctl.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(kill) = ctl.kill.take() {
                let _ = kill.send(KILL_TAKEN_OVER);
            }
            ctl.generation += 1;
            drop(ctl);
            if !clean_start {
                return (existing.clone(), true);
            }
            let old = existing.clone();
            let n = old.subs.read().unwrap_or_else(|p| p.into_inner()).len();
            self.metrics
                .subscriptions
                .fetch_sub(n as u64, Ordering::Relaxed);
            self.forget_session(&old);
        }
        let session = Session::new(client_id, self.config.mqtt.max_queued_messages);
        session
            .ctl
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .generation = 1;
        sessions.insert(client_id.to_owned(), session.clone());
        self.rebuild_subscribers(&sessions);
        (session, false)
    }

    fn rebuild_subscribers(&self, sessions: &HashMap<String, Arc<Session>>) {
        let v: Vec<Arc<Session>> = sessions
            .values()
            .filter(|s| !s.subs.read().unwrap_or_else(|p| p.into_inner()).is_empty())
            .cloned()
            .collect();
        *self.subscribers.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(v);
    }

    fn refresh_subscribers(&self) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        self.rebuild_subscribers(&sessions);
    }

    /// True when at least one session subscribes to something.
    pub fn has_subscribers(&self) -> bool {
        !self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Removes `session` from the registry if it is still the registered one for its client id.
    pub fn remove_session(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if sessions
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.client_id);
            let n = session.subs.read().unwrap_or_else(|p| p.into_inner()).len();
            self.metrics
                .subscriptions
                .fetch_sub(n as u64, Ordering::Relaxed);
            self.rebuild_subscribers(&sessions);
            // Under `sessions`: see `log_session`.
            self.forget_session(session);
        }
    }

    /// Logs the subscriptions of a persistent session (expiry > 0) in the sessions stream, if it
    /// is still the registered session of its client id.
    pub fn persist_session(&self, session: &Session) {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if Self::registered(&sessions, session) {
            self.log_session(session);
        }
    }

    fn registered(sessions: &HashMap<String, Arc<Session>>, session: &Session) -> bool {
        sessions
            .get(&session.client_id)
            .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), session))
    }

    /// Appends the session's record. Callers hold `sessions`, so records of one client id are
    /// logged in the order its sessions were registered and removed.
    fn log_session(&self, session: &Session) {
        let expiry = session
            .ctl
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .expiry_secs;
        if expiry == 0 && !session.persisted.load(Ordering::Relaxed) {
            return;
        }
        let record = if expiry == 0 {
            session_store::Record::Delete(session.client_id.clone())
        } else {
            session_store::Record::Snapshot(session_store::StoredSession {
                client_id: session.client_id.clone(),
                expiry_secs: expiry,
                subscriptions: session.subscriptions(),
            })
        };
        match self
            .journal
            .append(&self.config.storage.sessions_stream, &[], &record.encode())
        {
            // Relaxed: only this flag is communicated, and only to later calls on this session.
            Ok(_) => session.persisted.store(expiry != 0, Ordering::Relaxed),
            Err(e) => log::error!("cannot log session {}: {e}", session.client_id),
        }
    }

    /// Logs the end of a persisted session and deletes its cursors.
    fn forget_session(&self, session: &Session) {
        // Relaxed: see `persist_session`.
        if !session.persisted.swap(false, Ordering::Relaxed) {
            return;
        }
        let record = session_store::Record::Delete(session.client_id.clone()).encode();
        if let Err(e) = self
            .journal
            .append(&self.config.storage.sessions_stream, &[], &record)
        {
            log::error!("cannot log end of session {}: {e}", session.client_id);
        }
        let name = session_store::cursor_name(&session.client_id);
        for stream in self.routes.streams() {
            if let Err(e) = self.journal.delete_cursor(stream, &name) {
                log::warn!("cannot delete cursor {name} on {stream}: {e}");
            }
        }
    }

    /// A persistent session's connection ends: fold its queue back into journal positions
    /// (so it costs no memory while offline and nothing is lost), and store them, including
    /// unacknowledged messages, in its named cursors.
    pub fn park_session(&self, session: &Session, data: &mut SessionData) {
        // Lock order: sessions, then dispatch locks (never the reverse anywhere).
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if !Self::registered(&sessions, session) {
            return; // taken over or removed meanwhile: the new owner decides
        }
        let mut streams: Vec<&String> = self.routes.streams().iter().collect();
        streams.sort();
        let locks: Vec<Arc<Mutex<()>>> = streams.iter().map(|s| self.dispatch_lock(s)).collect();
        let _guards: Vec<_> = locks
            .iter()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut queued: HashMap<Arc<str>, u64> = HashMap::new();
        while let Some(o) = session.queue.try_recv() {
            let e = queued.entry(o.msg.stream.clone()).or_insert(u64::MAX);
            *e = (*e).min(o.msg.position);
        }
        let name = session_store::cursor_name(&session.client_id);
        let mut lag = session.lag.lock().unwrap_or_else(|p| p.into_inner());
        for stream in streams {
            let key: Arc<str> = Arc::from(stream.as_str());
            let mut resume = self.dispatched(stream);
            if let Some(p) = lag.get(&key) {
                resume = resume.min(*p);
            }
            if let Some(p) = queued.get(&key) {
                resume = resume.min(*p);
            }
            lag.insert(key.clone(), resume);
            let durable = data
                .inflight
                .values()
                .filter_map(|i| match i {
                    Inflight::Publish(o) if o.msg.stream == key => Some(o.msg.position),
                    _ => None,
                })
                .fold(resume, u64::min);
            if let Err(e) = self.journal.save_cursor(stream, &name, durable) {
                log::error!("cannot store cursor {name} on {stream}: {e}");
            }
        }
        drop(lag);
        self.log_session(session);
        drop(sessions);
    }

    /// Start-up: recreates the persistent sessions logged in the sessions stream, offline,
    /// positioned at their named cursors. Call after the tailers' start-up scan.
    pub fn restore_sessions(self: &Arc<Self>) -> Result<usize, JournalError> {
        let mut reader = self.journal.reader(
            &self.config.storage.sessions_stream,
            crate::journal::ReadFrom::Beginning,
        )?;
        let mut records: Vec<Vec<u8>> = Vec::new();
        while reader.poll(1024, &mut |r| records.push(r.payload.to_vec()))? > 0 {}
        let stored = session_store::replay(records.iter().map(Vec::as_slice));
        let count = stored.len();
        for (client_id, s) in stored {
            let session = Session::new(&client_id, self.config.mqtt.max_queued_messages);
            session.persisted.store(true, Ordering::Relaxed);
            {
                let mut ctl = session.ctl.lock().unwrap_or_else(|p| p.into_inner());
                ctl.generation = 1;
                ctl.expiry_secs = s.expiry_secs;
            }
            let n = s.subscriptions.len() as u64;
            *session.subs.write().unwrap_or_else(|p| p.into_inner()) = s.subscriptions;
            self.metrics.subscriptions.fetch_add(n, Ordering::Relaxed);
            let name = session_store::cursor_name(&client_id);
            {
                let mut lag = session.lag.lock().unwrap_or_else(|p| p.into_inner());
                for stream in self.routes.streams() {
                    let at = self
                        .journal
                        .load_cursor(stream, &name)?
                        .unwrap_or_else(|| self.dispatched(stream));
                    lag.insert(Arc::from(stream.as_str()), at);
                }
            }
            if s.expiry_secs != u32::MAX {
                let (broker, session) = (self.clone(), session.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(u64::from(s.expiry_secs)))
                        .await;
                    let never_came_back = session
                        .ctl
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .generation
                        == 1;
                    if never_came_back {
                        broker.remove_session(&session);
                    }
                });
            }
            let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
            sessions.insert(client_id, session);
        }
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        self.rebuild_subscribers(&sessions);
        // The start-up scan saw every publisher in the streams; only clients with a persistent
        // session (and bridges) can resend with DUP after the restart: each session gets its own
        // filter, bridges' stay here, the rest is dropped.
        let mut dedup = self.dedup.lock().unwrap_or_else(|p| p.into_inner());
        for (client, filter) in std::mem::take(&mut *dedup) {
            if let Some(session) = sessions.get(&client) {
                // Just created, offline: nobody else holds its data.
                if let Ok(mut data) = session.data.try_lock() {
                    data.dedup = filter;
                }
            } else if client.starts_with(crate::bridge::SESSION_PREFIX) {
                dedup.insert(client, filter);
            }
        }
        Ok(count)
    }

    /// True when `session` is still the registered session of its client id.
    pub fn is_current(&self, session: &Arc<Session>) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&session.client_id)
            .is_some_and(|s| Arc::ptr_eq(s, session))
    }

    /// Number of registered sessions (online or not).
    pub fn session_count(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The tailer of `stream` has dispatched every frame below `position`.
    pub fn set_dispatched(&self, stream: &str, position: u64) {
        let cell = self
            .dispatched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .cloned();
        let cell = match cell {
            Some(c) => c,
            None => self
                .dispatched
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(stream.to_owned())
                .or_default()
                .clone(),
        };
        // Relaxed: readers compare under the session's `subs` lock, which `dispatch` also takes
        // before this store is made, so the lock orders the two.
        cell.store(position, Ordering::Relaxed);
    }

    /// The lock that orders dispatching of `stream` with catch-up hand-overs.
    pub fn dispatch_lock(&self, stream: &str) -> Arc<Mutex<()>> {
        if let Some(l) = self
            .dispatch_locks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
        {
            return l.clone();
        }
        self.dispatch_locks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(stream.to_owned())
            .or_default()
            .clone()
    }

    /// One catch-up step for a session whose queue overflowed: reads up to `limit` frames of one
    /// lagging stream from the journal (`readers` caches one reader per stream for the calling
    /// connection) and returns the messages for this session. When the reader has reached what
    /// the tailer dispatched, the stream goes back to live delivery.
    pub fn catch_up(
        &self,
        session: &Session,
        readers: &mut HashMap<Arc<str>, Box<dyn crate::journal::JournalReader>>,
        limit: usize,
    ) -> Vec<Outgoing> {
        let Some((stream, from)) = session
            .lag
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .next()
            .map(|(k, v)| (k.clone(), *v))
        else {
            return Vec::new();
        };
        let lock = self.dispatch_lock(&stream);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let stale = readers.get(&stream).is_none_or(|r| r.position() != from);
        if stale {
            match self
                .journal
                .reader(&stream, crate::journal::ReadFrom::Position(from))
            {
                Ok(r) => {
                    readers.insert(stream.clone(), r);
                }
                Err(e) => {
                    log::error!("catch-up reader on {stream}: {e}");
                    return Vec::new();
                }
            }
        }
        let Some(reader) = readers.get_mut(&stream) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut records = Vec::new();
        let polled = reader.poll(limit, &mut |r| {
            if let Some(d) = self.delivery_of(&stream, &r) {
                records.push(d);
            }
        });
        if let Err(crate::journal::JournalError::Lapped { requested, oldest }) = polled {
            log::warn!(
                "session {}: lapped on {stream} at {requested}",
                session.client_id
            );
            self.metrics.dropped(Drop::Lapped);
            let _ = reader.skip_to_oldest();
            let _ = oldest;
        }
        for d in records {
            if let Some((qos, retain)) = session.best_match(&d) {
                out.push(Outgoing {
                    msg: d,
                    qos,
                    retain,
                });
            }
        }
        let position = reader.position();
        let mut lag = session.lag.lock().unwrap_or_else(|p| p.into_inner());
        if position == self.dispatched(&stream) {
            lag.remove(&stream);
            readers.remove(&stream);
        } else {
            lag.insert(stream, position);
        }
        out
    }

    /// Creates the named cursors a persistent session does not have yet, at the positions the
    /// tailers have dispatched up to: everything after them is owed to the session, so a crash
    /// before its first acknowledgement resumes there. Call before adding subscriptions.
    pub fn ensure_cursors(&self, session: &Session) {
        let name = session_store::cursor_name(&session.client_id);
        for stream in self.routes.streams() {
            if let Ok(None) = self.journal.load_cursor(stream, &name) {
                if let Err(e) = self
                    .journal
                    .save_cursor(stream, &name, self.dispatched(stream))
                {
                    log::error!("cannot create cursor {name} on {stream}: {e}");
                }
            }
        }
    }

    fn dispatched(&self, stream: &str) -> u64 {
        self.dispatched
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(stream)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Adds or replaces a subscription. Returns whether it is new (not a replacement) and, when
    /// `retain_handling` asks for it (0 always, 1 only for new subscriptions), the retained
    /// messages to send now.
    pub fn subscribe(
        &self,
        session: &Session,
        sub: Subscription,
        retain_handling: u8,
    ) -> (bool, Vec<Arc<Delivery>>) {
        let mut subs = session.subs.write().unwrap_or_else(|p| p.into_inner());
        let filter = sub.filter.clone();
        let is_new = if let Some(existing) = subs.iter_mut().find(|s| s.filter == sub.filter) {
            *existing = sub;
            false
        } else {
            subs.push(sub);
            Metrics::inc(&self.metrics.subscriptions);
            true
        };
        let mut retained = Vec::new();
        if retain_handling == 0 || (retain_handling == 1 && is_new) {
            retained = self.retained_matching(&filter);
            let mut skip = session.skip_live.lock().unwrap_or_else(|p| p.into_inner());
            skip.retain(|(stream, pos)| *pos >= self.dispatched(stream));
            for d in &retained {
                let key = (d.stream.clone(), d.position);
                if d.position >= self.dispatched(&d.stream) && !skip.contains(&key) {
                    skip.push(key);
                }
            }
        }
        drop(subs);
        if is_new {
            self.refresh_subscribers();
        }
        (is_new, retained)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&self, session: &Session, filter: &str) -> bool {
        let mut subs = session.subs.write().unwrap_or_else(|p| p.into_inner());
        let before = subs.len();
        subs.retain(|s| s.filter != filter);
        let removed = subs.len() != before;
        if removed {
            self.metrics.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
        drop(subs);
        if removed {
            self.refresh_subscribers();
        }
        removed
    }

    /// Retained messages whose topic matches `filter`.
    pub fn retained_matching(&self, filter: &str) -> Vec<Arc<Delivery>> {
        let retained = self.retained.read().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<Arc<Delivery>> = retained
            .iter()
            .filter(|(t, _)| topic::matches(t, filter))
            .filter_map(|(_, e)| e.msg.clone())
            .collect();
        v.sort_by(|a, b| a.topic.cmp(&b.topic));
        v
    }

    fn set_retained(&self, d: &Arc<Delivery>) {
        let mut retained = self.retained.write().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = retained.get(&d.topic) {
            if *e.stream == *d.stream && e.position >= d.position {
                return; // already saw this or a newer retained message for the topic
            }
        }
        let msg = (!d.payload.is_empty()).then(|| d.clone());
        retained.insert(
            d.topic.clone(),
            RetainedEntry {
                stream: d.stream.clone(),
                position: d.position,
                msg,
            },
        );
        let live = retained.values().filter(|e| e.msg.is_some()).count();
        self.metrics.retained.store(live as u64, Ordering::Relaxed);
    }

    /// Stores a PUBLISH (or will, or bridged message) from `client_id`: ACL, route, duplicate
    /// check against the gateway-wide filter of clients without a session of their own here,
    /// validation, append. Returns only after the append committed (or failed). Connections use
    /// [`Broker::prepare`] and [`Broker::stored`] with their session's filter instead.
    pub fn store(
        &self,
        client_id: &str,
        identity: &Identity,
        p: &Publish,
        v5: bool,
        qos2_duplicate: bool,
    ) -> StoreOutcome {
        let mut meta = Vec::new();
        let prepared = {
            let dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
            self.prepare(
                client_id,
                identity,
                p,
                v5,
                qos2_duplicate,
                dedup.get(client_id),
                &mut meta,
            )
        };
        let prepared = match prepared {
            Ok(prep) => prep,
            Err(outcome) => return outcome,
        };
        let item = prepared.item(&meta, p);
        match self.journal.append_typed(
            prepared.stream,
            item.type_id,
            item.schema_version,
            item.meta,
            item.payload,
        ) {
            Ok(pos) => {
                Metrics::inc(&self.metrics.appended);
                let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
                let filter = match (prepared.hash, p.pkid) {
                    (Some(_), 1..) => Some(dedup.entry(client_id.to_owned()).or_default()),
                    _ => None,
                };
                let outcome = self.stored(client_id, p, &prepared, pos, filter);
                drop(dedup);
                self.wake_after(prepared.stream, p.retain);
                outcome
            }
            Err(e) => self.store_failed(prepared.stream, &e),
        }
    }

    /// Checks and encodes a PUBLISH from `client_id` for appending: ACL, route, duplicate check
    /// (QoS 2 resends: `qos2_duplicate`; QoS 1 resends with DUP: against `dedup`), route
    /// validation (dead-letter on failure). The frame's meta is appended to `meta_buf`. `Err` is
    /// the outcome of a message that is not to be appended.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare<'b>(
        &'b self,
        client_id: &str,
        identity: &Identity,
        p: &Publish,
        v5: bool,
        qos2_duplicate: bool,
        dedup: Option<&DuplicateFilter>,
        meta_buf: &mut Vec<u8>,
    ) -> Result<Prepared<'b>, StoreOutcome> {
        if !identity.may_publish(&p.topic) {
            self.metrics.dropped(Drop::AclDenied);
            return Err(StoreOutcome::Denied);
        }
        let Some(route) = self.routes.inbound(&p.topic) else {
            self.metrics.dropped(Drop::NoRoute);
            return Err(StoreOutcome::NoRoute);
        };
        if qos2_duplicate {
            Metrics::inc(&self.metrics.duplicates_suppressed);
            return Err(StoreOutcome::Duplicate);
        }
        let hash = (p.qos == 1).then(|| dedup::fingerprint(&p.topic, &p.payload));
        if let (Some(h), true, Some(d)) = (hash, p.dup, dedup) {
            if d.is_duplicate(p.pkid, h) {
                Metrics::inc(&self.metrics.duplicates_suppressed);
                return Err(StoreOutcome::Duplicate);
            }
        }
        let mut dead_reason = None;
        if let Some(max) = route.max_payload_size {
            if p.payload.len() > max {
                dead_reason = Some(format!(
                    "payload of {} bytes exceeds route limit {max}",
                    p.payload.len()
                ));
            }
        }
        let mut typed = (0, 0);
        let mut reading = None;
        if let (None, Some(PayloadType::Telemetry)) = (&dead_reason, route.payload_type) {
            match telemetry_id(&p.payload) {
                Ok(id) => {
                    if self.device_seen(id) {
                        Metrics::inc(&self.metrics.duplicates_suppressed);
                        return Err(StoreOutcome::Duplicate);
                    }
                    typed = (TELEMETRY_TYPE_ID, WIRE_SCHEMA_VERSION);
                    reading = Some(id);
                }
                Err(e) => {
                    dead_reason = Some(format!("payload is not a valid telemetry record: {e}"));
                }
            }
        }
        let key = route.key_level.and_then(|l| topic::level(&p.topic, l));
        let dead_properties;
        let mut properties = &p.properties;
        if let Some(reason) = &dead_reason {
            let mut props = p.properties.clone();
            props
                .user_properties
                .push(("ringway-dead-letter-reason".into(), reason.clone()));
            dead_properties = props;
            properties = &dead_properties;
        }
        let start = meta_buf.len();
        let meta = MetaRef {
            topic: &p.topic,
            qos: p.qos,
            retain: p.retain,
            v5,
            packet_id: p.pkid,
            client_id,
            key,
            properties,
        };
        if meta.encode_into(meta_buf).is_err() {
            return Err(StoreOutcome::TooLarge);
        }
        let dead = dead_reason.is_some();
        Ok(Prepared {
            stream: if dead {
                &self.config.storage.dead_letter_stream
            } else {
                &route.stream
            },
            typed,
            meta: start..meta_buf.len(),
            dead,
            reading,
            hash,
        })
    }

    /// Bookkeeping after `prepared` (the PUBLISH `p`) was appended at `pos`: counters, the
    /// device's stored readings, the duplicate filter (`dedup`), the retained set. Returns the
    /// outcome to acknowledge with. The caller wakes the tailer ([`Broker::wake_after`]), once
    /// per batch.
    pub fn stored(
        &self,
        client_id: &str,
        p: &Publish,
        prepared: &Prepared<'_>,
        pos: u64,
        dedup: Option<&mut DuplicateFilter>,
    ) -> StoreOutcome {
        if prepared.dead {
            Metrics::inc(&self.metrics.dead_letters);
            return StoreOutcome::DeadLetter;
        }
        if let Some(id) = prepared.reading {
            self.device_record(id);
        }
        // Packet id 0 is a will (never resent with DUP).
        if let (Some(h), Some(d), 1..) = (prepared.hash, dedup, p.pkid) {
            d.record(p.pkid, h);
        }
        if p.retain {
            let d = Arc::new(Delivery {
                stream: Arc::from(prepared.stream),
                position: pos,
                next_position: pos + 1,
                timestamp_ns: now_ns(),
                topic: p.topic.clone(),
                qos: p.qos,
                retain: true,
                payload: p.payload.clone(),
                properties: p.properties.clone(),
                origin: client_id.to_owned(),
            });
            self.set_retained(&d);
        }
        StoreOutcome::Stored(pos)
    }

    /// Wakes the tailer of `stream` after appends to it. Without subscribers the tailer only
    /// looks at retained frames; it picks the others up at its next poll
    /// (`storage.poll_interval_us`) instead of costing a thread wake-up per batch.
    pub fn wake_after(&self, stream: &str, retained: bool) {
        if retained || self.has_subscribers() {
            self.wake(stream);
        }
    }

    /// The outcome of a failed append to `stream`.
    pub fn store_failed(&self, stream: &str, e: &JournalError) -> StoreOutcome {
        Metrics::inc(&self.metrics.append_errors);
        match e {
            JournalError::TooLarge { .. } => StoreOutcome::TooLarge,
            e => {
                log::error!("append to {stream} failed: {e}");
                StoreOutcome::Failed
            }
        }
    }

    /// Turns a frame of `stream` into a delivery (topic from its meta or the route template).
    pub fn delivery_of(&self, stream: &Arc<str>, r: &RecordRef<'_>) -> Option<Arc<Delivery>> {
        let (topic, qos, retain, properties, origin) = match MqttMeta::decode(r.meta) {
            Ok(m) => {
                let topic = if m.topic.is_empty() {
                    self.routes.outbound_topic(stream, m.key.as_deref())
                } else {
                    topic::valid_topic_name(&m.topic).then_some(m.topic)
                };
                (topic, m.qos, m.retain, m.properties, m.client_id)
            }
            Err(_) => (
                self.routes.outbound_topic(stream, None),
                0,
                false,
                MessageProperties::default(),
                String::new(),
            ),
        };
        let Some(topic) = topic else {
            self.metrics.dropped(Drop::NoTopic);
            return None;
        };
        Some(Arc::new(Delivery {
            stream: stream.clone(),
            position: r.position,
            next_position: r.next_position,
            timestamp_ns: r.timestamp_ns,
            topic,
            qos,
            retain,
            payload: Bytes::copy_from_slice(r.payload),
            properties,
            origin,
        }))
    }

    fn device_seen(&self, (device, boot, seq): ReadingId) -> bool {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&device)
            .is_some_and(|w| w.contains(boot, seq))
    }

    fn device_record(&self, (device, boot, seq): ReadingId) {
        self.devices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(device)
            .or_default()
            .insert(boot, seq);
    }

    /// Start-up scan of one frame: rebuilds retained messages and the duplicate filter.
    pub fn scan_frame(&self, stream: &Arc<str>, r: &RecordRef<'_>) {
        if r.type_id == TELEMETRY_TYPE_ID {
            if let Ok(id) = telemetry_id(r.payload) {
                self.device_record(id);
            }
        }
        let Ok(m) = MqttMeta::decode(r.meta) else {
            return;
        };
        if m.qos == 1 && !m.client_id.is_empty() {
            self.dedup
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(m.client_id.clone())
                .or_default()
                .record(m.packet_id, dedup::fingerprint(&m.topic, r.payload));
        }
        if m.retain {
            if let Some(d) = self.delivery_of(stream, r) {
                self.set_retained(&d);
            }
        }
    }

    /// Hands a live frame to every matching subscriber without ever blocking.
    pub fn dispatch(&self, d: Arc<Delivery>) {
        if d.retain {
            self.set_retained(&d);
        }
        let sessions = self
            .subscribers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for s in sessions.iter() {
            let Some((qos, retain)) = s.best_match(&d) else {
                continue;
            };
            {
                let mut skip = s.skip_live.lock().unwrap_or_else(|p| p.into_inner());
                let at = skip
                    .iter()
                    .position(|(st, pos)| *pos == d.position && *st == d.stream);
                if let Some(i) = at {
                    skip.swap_remove(i);
                    continue; // already sent as a retained message at SUBSCRIBE
                }
            }
            // Relaxed: see `Session::online`.
            if qos == 0 && !s.online.load(Ordering::Relaxed) {
                continue;
            }
            let mut lag = s.lag.lock().unwrap_or_else(|p| p.into_inner());
            if lag.contains_key(&d.stream) {
                continue; // the session reads this stream from the journal
            }
            let out = Outgoing {
                msg: d.clone(),
                qos,
                retain,
            };
            if s.queue.try_send(out).is_err() {
                lag.insert(d.stream.clone(), d.position);
                Metrics::inc(&self.metrics.lagging);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_window_tracks_stored_readings_per_boot() {
        let mut w = SeqWindow::default();
        assert!(!w.contains(1, 5));
        w.insert(1, 5);
        assert!(w.contains(1, 5));
        assert!(
            w.contains(1, 4),
            "below the first reading of a boot counts as stored"
        );
        assert!(!w.contains(1, 6));
        for seq in 6..1000 {
            assert!(!w.contains(1, seq));
            w.insert(1, seq);
            assert!(w.contains(1, seq));
        }
        assert!(w.contains(1, 10));
        // A gap stays open until filled.
        w.insert(1, 1002);
        assert!(!w.contains(1, 1001));
        assert!(w.contains(1, 1002));
        w.insert(1, 1001);
        assert!(w.contains(1, 1001));
        // A new boot starts over.
        assert!(!w.contains(2, 0));
        w.insert(2, 0);
        assert!(w.contains(2, 0) && !w.contains(1, 5));
    }
}
