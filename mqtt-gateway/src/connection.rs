//! One MQTT connection: CONNECT handshake, then a loop that reads packets, stores PUBLISHes
//! (acknowledging only after the append), and writes queued messages to the client within its
//! inflight window. Every protocol error ends only this connection.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::auth::{AuthOutcome, Identity};
use crate::broker::{
    Broker, Inflight, Outgoing, Session, SessionData, StoreOutcome, Subscription, KILL_KEEP_ALIVE,
    KILL_SHUTDOWN,
};
use crate::codec::{
    self, CodecError, ConnAckCode, ConnAckInfo, Connect, Inbound, Outbound, Publish,
    SubscribeFilter, Version, Will,
};
use crate::inbound::{Ack, InboundBatch};
use crate::journal::{CursorCommitter, JournalReader};
use crate::meta::MessageProperties;
use crate::metrics::{Drop, Metrics};
use crate::sync_replication::SyncWait;
use crate::topic;

/// A connection's [`InboundBatch`], allocated by its first PUBLISH.
type Batch<'b> = Option<Box<InboundBatch<'b>>>;

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    /// DISCONNECT received (MQTT 5 reason; 0x04 asks for the will).
    Disconnect(u8),
    /// Socket closed or failed.
    Closed,
    /// Keep-alive expired.
    KeepAlive,
    /// Malformed packet or protocol violation (MQTT 5 reason to send).
    Protocol(u8),
    /// Another connection took the session over.
    TakenOver,
    /// Gateway shutting down.
    Shutdown,
    /// A QoS > 0 message could not be stored on a 3.1.1 connection (which has no negative ack):
    /// close without acknowledging so the client retries.
    StorageFailed,
    /// Synchronous replication: the replicas did not acknowledge a QoS > 0 message of a 3.1.1
    /// connection in time: close without acknowledging so the client resends it.
    ReplicationTimeout,
}

impl Exit {
    fn publishes_will(self) -> bool {
        !matches!(self, Exit::Disconnect(r) if r != 0x04)
    }
}

fn codec_reason(e: &CodecError) -> u8 {
    match e {
        CodecError::Malformed(_) => 0x81,
        CodecError::TooLarge(_) => 0x95,
        CodecError::Protocol(_) => 0x82,
        CodecError::UnsupportedVersion(_) => 0x84,
    }
}

/// Serves one accepted TCP socket until it closes.
/// A gateway shutdown ends it through [`Broker::disconnect_all`].
pub async fn serve(broker: Arc<Broker>, socket: TcpStream) {
    let _ = socket.set_nodelay(true);
    let (rd, wr) = socket.into_split();
    serve_halves(broker, rd, wr).await;
}

/// Serves any byte stream (e.g. TLS over TCP) until it closes.
pub async fn serve_stream<S>(broker: Arc<Broker>, stream: S)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    serve_halves(broker, rd, wr).await;
}

async fn serve_halves<R, W>(broker: Arc<Broker>, mut rd: R, mut wr: W)
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    // Small at first (idle connections stay cheap); grows geometrically for large packets.
    let mut inbuf = BytesMut::with_capacity(INBUF_INITIAL);
    let max = broker.config.mqtt.max_packet_size;
    let deadline = Duration::from_secs(broker.config.mqtt.connect_timeout_secs.max(1));
    // Boxed, as the handshake below: states a connection passes only once do not size its task
    // for its whole life.
    let first = Box::pin(tokio::time::timeout(
        deadline,
        read_connect(&mut rd, &mut inbuf, max),
    ))
    .await;
    let (version, connect) = match first {
        Ok(Ok(Some(v))) => v,
        Ok(Err(CodecError::UnsupportedVersion(_))) => {
            Metrics::inc(&broker.metrics.connects_refused);
            let _ = wr.write_all(&[0x20, 2, 0, 1]).await;
            return;
        }
        Ok(Err(e)) => {
            log::debug!("bad CONNECT: {e}");
            Metrics::inc(&broker.metrics.protocol_errors);
            return;
        }
        Ok(Ok(None)) | Err(_) => return,
    };
    // Boxed: the handshake's state (CONNECT, authentication) is freed once it is done instead of
    // sizing the connection's task for its whole life.
    let mut conn = match Box::pin(handshake(&broker, version, *connect, &mut wr)).await {
        Some(c) => c,
        None => {
            Metrics::inc(&broker.metrics.connects_refused);
            return;
        }
    };
    Metrics::inc(&broker.metrics.connections);
    Metrics::inc(&broker.metrics.connections_total);
    conn.run(rd, wr, inbuf).await;
    broker.metrics.connections.fetch_sub(1, Ordering::Relaxed);
}

async fn read_connect<R: AsyncRead + Unpin>(
    rd: &mut R,
    inbuf: &mut BytesMut,
    max: usize,
) -> Result<Option<(Version, Box<Connect>)>, CodecError> {
    loop {
        if let Some(v) = codec::peek_connect_version(inbuf, max)? {
            if let Some(c) = codec::decode_connect(inbuf, v, max)? {
                return Ok(Some((v, Box::new(c))));
            }
        }
        match rd.read_buf(inbuf).await {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => {}
        }
    }
}

async fn refuse<W: AsyncWrite + Unpin>(
    wr: &mut W,
    version: Version,
    code: ConnAckCode,
    broker: &Broker,
) {
    let mut out = BytesMut::new();
    let info = ConnAckInfo {
        receive_maximum: broker.config.mqtt.max_inflight,
        max_packet_size: broker.config.mqtt.max_packet_size as u32,
        ..ConnAckInfo::default()
    };
    let _ = codec::encode(
        &Outbound::ConnAck {
            session_present: false,
            code,
            info,
        },
        version,
        &mut out,
    );
    let _ = wr.write_all(&out).await;
}

/// Validates CONNECT, authenticates, attaches the session and sends CONNACK.
async fn handshake<W: AsyncWrite + Unpin>(
    broker: &Arc<Broker>,
    version: Version,
    c: Connect,
    wr: &mut W,
) -> Option<Conn> {
    let cfg = &broker.config.mqtt;
    if broker.metrics.connections.load(Ordering::Relaxed) >= cfg.max_connections as u64 {
        refuse(wr, version, ConnAckCode::QuotaExceeded, broker).await;
        return None;
    }
    if !broker.allow_connect() {
        refuse(wr, version, ConnAckCode::RateExceeded, broker).await;
        return None;
    }
    if c.auth_method.is_some() {
        refuse(wr, version, ConnAckCode::BadAuthMethod, broker).await;
        return None;
    }
    if c.client_id.starts_with(crate::bridge::SESSION_PREFIX) {
        refuse(wr, version, ConnAckCode::BadClientId, broker).await;
        return None;
    }
    let mut assigned = None;
    let client_id = if c.client_id.is_empty() {
        if version == Version::V311 && !c.clean_start {
            refuse(wr, version, ConnAckCode::BadClientId, broker).await;
            return None;
        }
        let id = broker.assign_client_id();
        if version == Version::V5 {
            assigned = Some(id.clone());
        }
        id
    } else {
        c.client_id.clone()
    };
    if let Some(w) = &c.will {
        if !topic::valid_topic_name(&w.topic) {
            refuse(wr, version, ConnAckCode::NotAuthorized, broker).await;
            return None;
        }
    }
    let outcome = if broker.auth.needs_hashing(c.username.as_deref()) {
        let b = broker.clone();
        let (id, user, pw) = (client_id.clone(), c.username.clone(), c.password.clone());
        tokio::task::spawn_blocking(move || b.auth.check(&id, user.as_deref(), &pw))
            .await
            .unwrap_or(AuthOutcome::BadCredentials)
    } else {
        broker
            .auth
            .check(&client_id, c.username.as_deref(), &c.password)
    };
    let identity = match outcome {
        AuthOutcome::Accepted(id) => id,
        AuthOutcome::BadCredentials => {
            refuse(wr, version, ConnAckCode::BadCredentials, broker).await;
            return None;
        }
        AuthOutcome::NotAuthorized => {
            refuse(wr, version, ConnAckCode::NotAuthorized, broker).await;
            return None;
        }
    };

    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if cfg.max_keep_alive_secs > 0
        && version == Version::V5
        && (keep_alive == 0 || keep_alive > cfg.max_keep_alive_secs)
    {
        keep_alive = cfg.max_keep_alive_secs;
        server_keep_alive = Some(keep_alive);
    }
    let (session, resumed) = broker.attach(&client_id, c.clean_start);
    let (kill_tx, kill_rx) = oneshot::channel();
    let generation = {
        let mut ctl = session.ctl.lock().unwrap_or_else(|p| p.into_inner());
        ctl.kill = Some(kill_tx);
        ctl.expiry_secs = c.session_expiry;
        // Relaxed: see `Session::online`.
        session.online.store(true, Ordering::Relaxed);
        session.supervise(broker.now_ms(), keep_alive);
        // Shutting down already: end right after CONNACK (see `Broker::disconnect_all`).
        if broker.is_closing() {
            if let Some(k) = ctl.kill.take() {
                let _ = k.send(KILL_SHUTDOWN);
            }
        }
        ctl.generation
    };
    let mut out = BytesMut::new();
    let _ = codec::encode(
        &Outbound::ConnAck {
            session_present: resumed,
            code: ConnAckCode::Success,
            info: ConnAckInfo {
                assigned_client_id: assigned,
                receive_maximum: cfg.max_inflight,
                max_packet_size: cfg.max_packet_size as u32,
                server_keep_alive,
                session_expiry: None,
            },
        },
        version,
        &mut out,
    );
    Some(Conn {
        broker: broker.clone(),
        session,
        generation,
        kill_rx: Some(kill_rx),
        version,
        identity,
        will: c.will.map(Box::new),
        window: cfg.max_inflight.min(c.receive_maximum).max(1),
        client_max_packet: c.max_packet_size,
        outbuf: out,
        pending: VecDeque::new(),
        resumed,
        readers: None,
        persistent: c.session_expiry != 0,
        progress: None,
        held: None,
    })
}

struct Conn {
    broker: Arc<Broker>,
    session: Arc<Session>,
    generation: u64,
    kill_rx: Option<oneshot::Receiver<u8>>,
    version: Version,
    identity: Arc<Identity>,
    /// Boxed: most clients have none, and the connection's task is sized by its fields.
    will: Option<Box<Will>>,
    /// Outbound inflight window (min of our max_inflight and the client's Receive Maximum).
    window: u16,
    client_max_packet: Option<u32>,
    outbuf: BytesMut,
    /// Retained messages owed after SUBSCRIBE (not subject to queue overflow).
    pending: VecDeque<Outgoing>,
    resumed: bool,
    /// Journal readers of streams this session catches up on (allocated on first use).
    readers: Option<Box<Readers>>,
    /// The session outlives the connection (its delivery progress goes to named cursors).
    persistent: bool,
    /// Delivery progress not yet committed (persistent sessions only; allocated on first use).
    progress: Option<Box<Progress>>,
    /// Acknowledgements held back for synchronous replication, in the order the messages
    /// arrived (allocated while any is held; boxed so a connection without any pays one word).
    #[allow(clippy::box_collection)]
    held: Option<Box<VecDeque<Held>>>,
}

/// An acknowledgement not sent yet: it waits for replicas, or is queued behind one that does
/// (MQTT 4.6: PUBACKs and PUBRECs go out in the order the PUBLISHes arrived).
struct Held {
    qos: u8,
    pkid: u16,
    reason: u8,
    wait: Option<SyncWait>,
}

/// Longest reason string sent with a failed acknowledgement.
const MAX_REASON_STRING: usize = 256;

/// Delivery progress of a persistent session, committed to its named cursors after every batch
/// of acknowledgements, so a gateway crash redelivers at most what was unacknowledged.
#[derive(Default)]
struct Progress {
    /// (stream, position after the message) of messages done with since the last commit:
    /// acknowledged (QoS 1 PUBACK, QoS 2 PUBREC) or written (QoS 0).
    done: Vec<(Arc<str>, u64)>,
    /// One committer per stream, opened on first use.
    committers: HashMap<Arc<str>, Box<dyn CursorCommitter>>,
}

/// Journal readers of a catching-up session, by stream.
type Readers = HashMap<Arc<str>, Box<dyn JournalReader>>;

/// How soon a catching-up session looks at the journal again when nothing else happens.
const CATCH_UP_RECHECK: Duration = Duration::from_millis(2);

/// Frames read from the journal per catch-up step.
const CATCH_UP_BATCH: usize = 64;

enum Event {
    /// Told to end (reason: one of the broker's `KILL_*`; `None`: the sender is gone).
    Kill(Option<u8>),
    Read(std::io::Result<usize>),
    Out(Outgoing),
    /// The catch-up re-check timer fired.
    Timer,
    /// The replicas moved on, or the first held acknowledgement's deadline passed.
    Replicated,
}

impl Conn {
    async fn run<R, W>(&mut self, mut rd: R, mut wr: W, mut inbuf: BytesMut)
    where
        R: AsyncRead + Unpin + Send,
        W: AsyncWrite + Unpin + Send,
    {
        let session = self.session.clone();
        // Wait for a connection we took over to release the session data.
        let data = Box::pin(tokio::time::timeout(
            Duration::from_secs(10),
            session.data.lock(),
        ))
        .await;
        let mut data = match data {
            Ok(d) => d,
            Err(_) => {
                let _ = wr.write_all(&self.outbuf).await;
                Box::pin(self.finish(Exit::Protocol(0x89), &mut wr)).await;
                return;
            }
        };
        if self.resumed {
            self.resend_inflight(&mut data);
        }
        // Take-over, shutdown and keep-alive expiry all arrive here (the broker's sweep watches
        // the keep-alive, so the connection carries no timer of its own).
        let mut kill_rx = self.kill_rx.take().unwrap_or_else(|| oneshot::channel().1);
        let mut burst = false;
        // The catch-up re-check timer, allocated only while catching up.
        let mut recheck: Option<Pin<Box<tokio::time::Sleep>>> = None;
        let max = self.broker.config.mqtt.max_packet_size;
        let broker = self.broker.clone();
        // Allocated by the first PUBLISH (many connections only subscribe).
        let mut batch: Batch<'_> = None;
        let exit = 'conn: loop {
            // Handle every complete packet received so far (also bytes that came with CONNECT);
            // the PUBLISHes among them are stored together, then acknowledged.
            loop {
                match codec::decode(&mut inbuf, self.version, max) {
                    Ok(None) => break,
                    Ok(Some(packet)) => {
                        if let Err(exit) = self.on_packet(&broker, &mut batch, &mut data, packet) {
                            // Messages received before the failing packet are still stored.
                            let _ = self.store_batch(&broker, &mut batch, &mut data);
                            break 'conn exit;
                        }
                    }
                    Err(e) => {
                        let _ = self.store_batch(&broker, &mut batch, &mut data);
                        log::debug!("client {}: {e}", self.session.client_id);
                        Metrics::inc(&self.broker.metrics.protocol_errors);
                        break 'conn Exit::Protocol(codec_reason(&e));
                    }
                }
            }
            if let Err(exit) = self.store_batch(&broker, &mut batch, &mut data) {
                break 'conn exit;
            }
            if let Err(exit) = self.release_held(&mut data) {
                break 'conn exit;
            }
            size_input_buffer(&mut inbuf, burst);
            // Drain what can be sent: owed retained messages, then the queue.
            while data.inflight.len() < usize::from(self.window) {
                if let Some(o) = self.pending.pop_front() {
                    self.send_publish(&mut data, o, false);
                } else if let Some(o) = session.queue.try_recv() {
                    self.send_publish(&mut data, o, false);
                } else if self.session.is_lagging() {
                    // The queue overflowed earlier: read the rest from the journal.
                    let more = self.broker.catch_up(
                        &self.session,
                        self.readers.get_or_insert_with(Box::default),
                        CATCH_UP_BATCH,
                    );
                    if more.is_empty() {
                        break;
                    }
                    self.pending.extend(more);
                } else {
                    break;
                }
                if self.outbuf.len() > 64 << 10 {
                    break;
                }
            }
            if !self.outbuf.is_empty() {
                if wr.write_all(&self.outbuf).await.is_err() {
                    break Exit::Closed;
                }
                self.outbuf.clear();
                if burst {
                    release_idle_buffer(&mut self.outbuf, 0);
                } else {
                    // Quiet: hold no buffer while waiting.
                    self.outbuf = BytesMut::new();
                }
            }
            self.commit_progress(&data);
            let can_send =
                data.inflight.len() < usize::from(self.window) && self.pending.is_empty();
            // While catching up from the journal, look again shortly even if nothing else
            // happens (the tailer may still be dispatching up to where the reader is).
            if data.inflight.len() < usize::from(self.window) && self.session.is_lagging() {
                if recheck.is_none() {
                    recheck = Some(Box::pin(tokio::time::sleep(CATCH_UP_RECHECK)));
                }
            } else {
                recheck = None;
            }
            // The first held acknowledgement waits for its replicas (release_held sent every
            // one before it); the wait ends when they reach it or at its deadline. Boxed: the
            // wait's timer would otherwise size every connection's task.
            let mut sync_wait = self
                .held
                .as_ref()
                .and_then(|h| h.front())
                .and_then(|h| h.wait.as_ref())
                .map(|w| {
                    let (mut rx, target) = (w.watch.subscribe(), w.target);
                    let deadline = tokio::time::Instant::from_std(w.deadline);
                    Box::pin(async move {
                        let _ =
                            tokio::time::timeout_at(deadline, rx.wait_for(|q| *q >= target)).await;
                    })
                });
            let event = tokio::select! {
                r = &mut kill_rx => Event::Kill(r.ok()),
                _ = async { sync_wait.as_mut().expect("guarded").await }, if sync_wait.is_some() => Event::Replicated,
                r = rd.read_buf(&mut inbuf) => Event::Read(r),
                o = session.queue.recv(), if can_send => Event::Out(o),
                _ = async { recheck.as_mut().expect("guarded").await }, if recheck.is_some() => Event::Timer,
            };
            match event {
                Event::Kill(Some(KILL_SHUTDOWN)) => break Exit::Shutdown,
                Event::Kill(Some(KILL_KEEP_ALIVE)) => break Exit::KeepAlive,
                Event::Kill(_) => break Exit::TakenOver,
                Event::Timer => recheck = None,
                Event::Replicated => {}
                Event::Out(o) => self.send_publish(&mut data, o, false),
                Event::Read(Ok(0)) | Event::Read(Err(_)) => break Exit::Closed,
                Event::Read(Ok(n)) => {
                    self.session.touch(broker.now_ms());
                    // A read that filled the buffer probably left more in the socket.
                    burst = n >= QUIET_READ || inbuf.len() == inbuf.capacity();
                }
            }
        };
        if !self.outbuf.is_empty() && !matches!(exit, Exit::Closed) {
            let _ = wr.write_all(&self.outbuf).await;
            self.outbuf.clear();
        }
        // Release the cursors (a connection taking the session over opens them again).
        self.progress = None;
        let persistent_and_mine = {
            let ctl = self.session.ctl.lock().unwrap_or_else(|p| p.into_inner());
            ctl.generation == self.generation && ctl.expiry_secs != 0
        };
        if persistent_and_mine {
            self.broker.park_session(&self.session, &mut data);
        }
        drop(data);
        // Boxed (as the wait for the session above): states the connection passes only once do
        // not size its task for its whole life.
        Box::pin(self.finish(exit, &mut wr)).await;
    }

    /// Ends the connection: DISCONNECT to MQTT 5 clients, will, session expiry.
    async fn finish<W: AsyncWrite + Unpin>(&mut self, exit: Exit, wr: &mut W) {
        let reason = match exit {
            Exit::TakenOver => Some(0x8E),
            Exit::KeepAlive => Some(0x8D),
            Exit::Shutdown => Some(0x8B),
            Exit::Protocol(r) => Some(r),
            Exit::StorageFailed | Exit::ReplicationTimeout => Some(0x80),
            Exit::Disconnect(_) | Exit::Closed => None,
        };
        if let Some(r) = reason {
            let mut out = BytesMut::new();
            let _ = codec::encode(&Outbound::Disconnect(r), self.version, &mut out);
            let _ = wr.write_all(&out).await;
        }
        let _ = wr.shutdown().await;
        let expiry = {
            let mut ctl = self.session.ctl.lock().unwrap_or_else(|p| p.into_inner());
            if ctl.generation != self.generation {
                None // taken over: the new connection owns the session now
            } else {
                ctl.kill = None;
                // Relaxed: see `Session::online`.
                self.session.online.store(false, Ordering::Relaxed);
                Some(ctl.expiry_secs)
            }
        };
        if exit.publishes_will() {
            if let Some(will) = self.will.take() {
                self.publish_will(*will, expiry.unwrap_or(0));
            }
        }
        match expiry {
            Some(0) => self.broker.remove_session(&self.session),
            Some(u32::MAX) | None => {}
            Some(secs) => {
                let (broker, session, generation) =
                    (self.broker.clone(), self.session.clone(), self.generation);
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(u64::from(secs))).await;
                    let same = session
                        .ctl
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .generation
                        == generation;
                    if same {
                        broker.remove_session(&session);
                    }
                });
            }
        }
    }

    fn publish_will(&self, will: Will, session_expiry: u32) {
        let p = Publish {
            topic: will.topic,
            qos: will.qos,
            retain: will.retain,
            dup: false,
            pkid: 0,
            payload: will.payload,
            properties: will.properties,
            topic_alias: None,
        };
        let (broker, client_id, identity, v5) = (
            self.broker.clone(),
            self.session.client_id.clone(),
            self.identity.clone(),
            self.version == Version::V5,
        );
        let delay = will.delay_secs.min(session_expiry);
        if delay == 0 {
            Metrics::inc(&broker.metrics.wills);
            let _ = broker.store(&client_id, &identity, &p, v5, false);
            return;
        }
        let (session, generation) = (self.session.clone(), self.generation);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let reconnected = session
                .ctl
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .generation
                != generation;
            if !reconnected {
                Metrics::inc(&broker.metrics.wills);
                let _ = broker.store(&client_id, &identity, &p, v5, false);
            }
        });
    }

    fn out(&mut self, packet: Outbound) {
        let _ = codec::encode(&packet, self.version, &mut self.outbuf);
    }

    fn resend_inflight(&mut self, data: &mut SessionData) {
        let items: Vec<(u16, Inflight)> =
            data.inflight.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (pkid, item) in items {
            match item {
                Inflight::Publish(o) => {
                    if !self.encode_publish(&o, pkid, true) {
                        data.inflight.remove(&pkid); // expired or too large for the client now
                    }
                }
                Inflight::Release => self.out(Outbound::PubRel(pkid, 0)),
            }
        }
    }

    fn encode_publish(&mut self, o: &Outgoing, pkid: u16, dup: bool) -> bool {
        let mut properties = if self.version == Version::V5 {
            o.msg.properties.clone()
        } else {
            MessageProperties::default()
        };
        // MQTT 5 message expiry: drop expired messages, send the remaining lifetime (3.3.2.3.3).
        if let Some(expiry) = o.msg.properties.message_expiry_interval {
            let age = crate::broker::now_ns().saturating_sub(o.msg.timestamp_ns) / 1_000_000_000;
            let age = u32::try_from(age).unwrap_or(u32::MAX);
            if age >= expiry {
                self.broker.metrics.dropped(Drop::Expired);
                return false;
            }
            if self.version == Version::V5 {
                properties.message_expiry_interval = Some(expiry - age);
            }
        }
        let p = Publish {
            topic: o.msg.topic.clone(),
            qos: o.qos,
            retain: o.retain,
            dup,
            pkid,
            payload: o.msg.payload.clone(),
            properties,
            topic_alias: None,
        };
        let start = self.outbuf.len();
        if codec::encode(&Outbound::Publish(p), self.version, &mut self.outbuf).is_err() {
            self.outbuf.truncate(start);
            return false;
        }
        if self
            .client_max_packet
            .is_some_and(|m| self.outbuf.len() - start > m as usize)
        {
            self.outbuf.truncate(start);
            self.broker.metrics.dropped(Drop::ClientPacketSize);
            return false;
        }
        Metrics::inc(&self.broker.metrics.publish_out);
        true
    }

    fn send_publish(&mut self, data: &mut SessionData, o: Outgoing, dup: bool) {
        let pkid = if o.qos > 0 {
            let mut id = data.next_pkid;
            loop {
                if id == 0 {
                    id = 1;
                }
                if !data.inflight.contains_key(&id) {
                    break;
                }
                id = id.wrapping_add(1);
            }
            data.next_pkid = id.wrapping_add(1);
            id
        } else {
            0
        };
        if self.encode_publish(&o, pkid, dup) {
            if o.qos > 0 {
                data.inflight.insert(pkid, Inflight::Publish(o));
            } else {
                self.done(&o);
            }
        }
    }

    /// Notes that the client is done with `o` (see [`Progress::done`]).
    fn done(&mut self, o: &Outgoing) {
        if self.persistent {
            self.progress
                .get_or_insert_with(Box::default)
                .done
                .push((o.msg.stream.clone(), o.msg.next_position));
        }
    }

    /// Moves the session's named cursors past what the client is done with, but never past a
    /// message still owed to it on the same stream: in flight, waiting to be sent, queued, or
    /// still to be read from the journal.
    fn commit_progress(&mut self, data: &SessionData) {
        let Some(progress) = self.progress.as_mut() else {
            return;
        };
        if progress.done.is_empty() {
            return;
        }
        let mut reached: Vec<(Arc<str>, u64)> = Vec::new();
        for (stream, pos) in progress.done.drain(..) {
            match reached.iter_mut().find(|(s, _)| *s == stream) {
                Some(r) => r.1 = r.1.max(pos),
                None => reached.push((stream, pos)),
            }
        }
        for (stream, mut target) in reached {
            for item in data.inflight.values() {
                if let Inflight::Publish(o) = item {
                    if o.msg.stream == stream {
                        target = target.min(o.msg.position);
                    }
                }
            }
            for o in self.pending.iter().filter(|o| o.msg.stream == stream) {
                target = target.min(o.msg.position);
            }
            for owed in [
                self.session.queue.first_position_of(&stream),
                self.session.lag_position(&stream),
            ]
            .into_iter()
            .flatten()
            {
                target = target.min(owed);
            }
            let committer = match progress.committers.entry(stream.clone()) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let name = crate::session_store::cursor_name(&self.session.client_id);
                    match self.broker.journal.cursor_committer(&stream, &name, target) {
                        Ok(c) => v.insert(c),
                        Err(e) => {
                            // E.g. still owned by a connection this one took over: next batch.
                            log::debug!("cursor {name} on {stream}: {e}");
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = committer.advance(target) {
                log::warn!("cursor of {} on {stream}: {e}", self.session.client_id);
                progress.committers.remove(&stream);
            }
        }
    }

    /// Handles one packet. A PUBLISH joins `batch`; any other packet is handled after the
    /// messages before it are stored and acknowledged.
    fn on_packet<'b>(
        &mut self,
        broker: &'b Broker,
        batch: &mut Batch<'b>,
        data: &mut SessionData,
        packet: Inbound,
    ) -> Result<(), Exit> {
        if let Inbound::Publish(p) = packet {
            return self.on_publish(broker, batch, data, p);
        }
        self.store_batch(broker, batch, data)?;
        match packet {
            Inbound::Publish(_) => {}
            Inbound::PubAck(id) => {
                if matches!(data.inflight.get(&id), Some(Inflight::Publish(o)) if o.qos == 1) {
                    if let Some(Inflight::Publish(o)) = data.inflight.remove(&id) {
                        self.done(&o);
                    }
                }
            }
            Inbound::PubRec(id) => {
                let known = matches!(data.inflight.get(&id), Some(Inflight::Publish(o)) if o.qos == 2)
                    || matches!(data.inflight.get(&id), Some(Inflight::Release));
                if known {
                    // After PUBREC the message itself is never sent again (only PUBREL).
                    if let Some(Inflight::Publish(o)) = data.inflight.insert(id, Inflight::Release)
                    {
                        self.done(&o);
                    }
                    self.out(Outbound::PubRel(id, 0));
                } else {
                    self.out(Outbound::PubRel(id, 0x92));
                }
            }
            Inbound::PubComp(id) => {
                if matches!(data.inflight.get(&id), Some(Inflight::Release)) {
                    data.inflight.remove(&id);
                }
            }
            Inbound::PubRel(id) => {
                let known = data.incoming_qos2.iter().position(|i| *i == id);
                let reason = if let Some(i) = known {
                    data.incoming_qos2.swap_remove(i);
                    0
                } else {
                    0x92
                };
                self.out(Outbound::PubComp(id, reason));
            }
            Inbound::Subscribe {
                pkid,
                filters,
                subscription_id,
            } => self.on_subscribe(pkid, filters, subscription_id.is_some()),
            Inbound::Unsubscribe { pkid, filters } => {
                let codes = filters
                    .iter()
                    .map(|f| {
                        if self.broker.unsubscribe(&self.session, f) {
                            0
                        } else {
                            0x11
                        }
                    })
                    .collect();
                self.out(Outbound::UnsubAck(pkid, codes));
                self.broker.persist_session(&self.session);
            }
            Inbound::PingReq => self.out(Outbound::PingResp),
            Inbound::Disconnect {
                reason,
                session_expiry,
            } => {
                if let Some(e) = session_expiry {
                    let mut ctl = self.session.ctl.lock().unwrap_or_else(|p| p.into_inner());
                    if ctl.expiry_secs == 0 && e != 0 {
                        Metrics::inc(&self.broker.metrics.protocol_errors);
                        return Err(Exit::Protocol(0x82));
                    }
                    ctl.expiry_secs = e;
                }
                return Err(Exit::Disconnect(reason));
            }
            Inbound::Auth => {
                Metrics::inc(&self.broker.metrics.protocol_errors);
                return Err(Exit::Protocol(0x82));
            }
            Inbound::Connect(_) => {
                Metrics::inc(&self.broker.metrics.protocol_errors);
                return Err(Exit::Protocol(0x82));
            }
        }
        Ok(())
    }

    /// Checks a PUBLISH and adds it to `batch`. A QoS 1 resend (DUP) is checked against
    /// everything stored before it and a QoS 2 message changes the session's QoS 2 state with its
    /// acknowledgement, so these are stored on their own, after what is pending.
    fn on_publish<'b>(
        &mut self,
        broker: &'b Broker,
        batch: &mut Batch<'b>,
        data: &mut SessionData,
        p: Publish,
    ) -> Result<(), Exit> {
        let m = &broker.metrics;
        batch
            .get_or_insert_with(Box::default)
            .count(p.qos, p.payload.len());
        if p.topic_alias.is_some() {
            // We announce Topic Alias Maximum 0.
            Metrics::inc(&m.protocol_errors);
            return Err(Exit::Protocol(0x94));
        }
        if !topic::valid_topic_name(&p.topic) {
            Metrics::inc(&m.protocol_errors);
            return Err(Exit::Protocol(0x90));
        }
        if p.qos == 2
            && !data.incoming_qos2.contains(&p.pkid)
            && data.incoming_qos2.len() >= usize::from(broker.config.mqtt.max_inflight)
        {
            Metrics::inc(&m.protocol_errors);
            return Err(Exit::Protocol(0x93));
        }
        let alone = p.qos == 2 || p.dup;
        if alone {
            self.store_batch(broker, batch, data)?;
        }
        let dup2 = p.qos == 2 && data.incoming_qos2.contains(&p.pkid);
        let v5 = self.version == Version::V5;
        batch.get_or_insert_with(Box::default).add(
            broker,
            &self.session.client_id,
            &self.identity,
            p,
            v5,
            dup2,
            &data.dedup,
        );
        if alone {
            self.store_batch(broker, batch, data)?;
        }
        Ok(())
    }

    /// Stores the pending PUBLISHes of `batch` and queues their acknowledgements.
    fn store_batch<'b>(
        &mut self,
        broker: &'b Broker,
        batch: &mut Batch<'b>,
        data: &mut SessionData,
    ) -> Result<(), Exit> {
        let Some(batch) = batch.as_mut() else {
            return Ok(());
        };
        let v5 = self.version == Version::V5;
        // MQTT 3.1.1 has no negative acknowledgement: after a failed append nothing more is
        // stored, the connection closes and the client resends.
        batch.store(broker, &self.session.client_id, &mut data.dedup, !v5);
        let mut result = Ok(());
        for ack in batch.take_done() {
            if result.is_ok() {
                result = self.acknowledge(data, ack);
            }
        }
        batch.trim();
        result
    }

    /// Queues the acknowledgement of one stored (or refused) PUBLISH.
    fn acknowledge(&mut self, data: &mut SessionData, ack: Ack) -> Result<(), Exit> {
        let v5 = self.version == Version::V5;
        let reason = match ack.outcome {
            StoreOutcome::Stored(_) | StoreOutcome::Duplicate => 0,
            StoreOutcome::Denied => 0x87,
            StoreOutcome::NoRoute => 0x90,
            StoreOutcome::DeadLetter => 0x99,
            StoreOutcome::TooLarge => 0x97,
            StoreOutcome::Failed => 0x80,
        };
        let not_stored = matches!(ack.outcome, StoreOutcome::Failed | StoreOutcome::TooLarge);
        if ack.qos > 0 && not_stored && !v5 {
            return Err(Exit::StorageFailed);
        }
        if ack.qos == 0 {
            return Ok(());
        }
        if ack.qos == 2 && (reason == 0 || !v5) && !data.incoming_qos2.contains(&ack.pkid) {
            data.incoming_qos2.push(ack.pkid);
        }
        // Synchronous replication: a message in a stream is acknowledged once enough replicas
        // hold it (a redelivery: everything appended so far).
        let wait = match (&self.broker.sync, ack.outcome, ack.stored_in) {
            (
                Some(sync),
                StoreOutcome::Stored(_) | StoreOutcome::Duplicate,
                Some((stream, end)),
            ) => {
                Metrics::inc(&self.broker.metrics.sync_waits);
                Some(sync.wait_for(stream, end))
            }
            _ => None,
        };
        if wait.is_some() || self.held.is_some() {
            // Every held acknowledgement is a message the client still has in flight: an MQTT 5
            // client may have no more than our Receive Maximum, a 3.1.1 client no more than its
            // packet ids.
            let limit = if v5 {
                usize::from(self.broker.config.mqtt.max_inflight)
            } else {
                usize::from(u16::MAX)
            };
            if self.held.as_ref().is_some_and(|h| h.len() >= limit) {
                Metrics::inc(&self.broker.metrics.protocol_errors);
                return Err(Exit::Protocol(0x93));
            }
            self.held.get_or_insert_with(Box::default).push_back(Held {
                qos: ack.qos,
                pkid: ack.pkid,
                reason,
                wait,
            });
        } else {
            self.send_ack(ack.qos, ack.pkid, reason);
        }
        Ok(())
    }

    fn send_ack(&mut self, qos: u8, pkid: u16, reason: u8) {
        if qos == 1 {
            self.out(Outbound::PubAck(pkid, reason));
        } else {
            self.out(Outbound::PubRec(pkid, reason));
        }
    }

    /// Sends the held acknowledgements whose replicas caught up, in order, up to the first that
    /// still waits. One whose deadline passed fails: MQTT 5 gets it with reason 0x80 and a
    /// reason string; a 3.1.1 connection ends without it (the client resends, and the duplicate
    /// filter keeps the stream exactly-once).
    fn release_held(&mut self, data: &mut SessionData) -> Result<(), Exit> {
        let Some(mut held) = self.held.take() else {
            return Ok(());
        };
        let now = std::time::Instant::now();
        let mut result = Ok(());
        while let Some(h) = held.front() {
            let failed = match &h.wait {
                Some(w) if !w.is_done() => {
                    if now < w.deadline {
                        break;
                    }
                    Some(w.failure_reason())
                }
                _ => None,
            };
            let Some(h) = held.pop_front() else { break };
            let Some(text) = failed else {
                self.send_ack(h.qos, h.pkid, h.reason);
                continue;
            };
            Metrics::inc(&self.broker.metrics.sync_timeouts);
            log::warn!(
                "client {}: packet {}: {text}",
                self.session.client_id,
                h.pkid
            );
            if self.version != Version::V5 {
                result = Err(Exit::ReplicationTimeout);
                held.clear();
                break;
            }
            if h.qos == 2 {
                // A PUBREC with a failure code ends the exchange: no PUBREL follows.
                data.incoming_qos2.retain(|i| *i != h.pkid);
            }
            let mut text = text;
            if text.len() > MAX_REASON_STRING {
                let mut cut = MAX_REASON_STRING;
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            let fits = self
                .client_max_packet
                .is_none_or(|m| m as usize >= text.len() + 16);
            if fits {
                self.out(Outbound::FailedAck {
                    pubrec: h.qos == 2,
                    pkid: h.pkid,
                    reason: 0x80,
                    text,
                });
            } else {
                self.send_ack(h.qos, h.pkid, 0x80);
            }
        }
        if !held.is_empty() {
            self.held = Some(held);
        }
        result
    }

    fn on_subscribe(&mut self, pkid: u16, filters: Vec<SubscribeFilter>, has_sub_id: bool) {
        if self.persistent {
            self.broker.ensure_cursors(&self.session);
        }
        let v5 = self.version == Version::V5;
        let fail = |code: u8| if v5 { code } else { 0x80 };
        let mut codes = Vec::with_capacity(filters.len());
        for f in filters {
            if has_sub_id && v5 {
                codes.push(0xA1);
                continue;
            }
            if !topic::valid_filter(&f.filter) {
                codes.push(fail(0x8F));
                continue;
            }
            if f.filter.starts_with("$share/") {
                codes.push(fail(0x9E));
                continue;
            }
            if !self.identity.may_subscribe(&f.filter) {
                Metrics::inc(&self.broker.metrics.subscribe_denied);
                codes.push(fail(0x87));
                continue;
            }
            let qos = f.qos.min(2);
            let (_, retained) = self.broker.subscribe(
                &self.session,
                Subscription {
                    filter: f.filter.clone(),
                    qos,
                    no_local: f.no_local,
                    retain_as_published: f.retain_as_published,
                },
                f.retain_handling,
            );
            codes.push(qos);
            for msg in retained {
                let q = qos.min(msg.qos);
                self.pending.push_back(Outgoing {
                    msg,
                    qos: q,
                    retain: true,
                });
            }
        }
        self.out(Outbound::SubAck(pkid, codes));
        self.broker.persist_session(&self.session);
    }
}

/// Initial capacity of a connection's input buffer.
const INBUF_INITIAL: usize = 256;

/// A buffer larger than this is given back once empty (it grew for a large packet or a burst).
const KEEP_BUFFER: usize = 4 << 10;

/// A read shorter than this (a PINGREQ, an acknowledgement, one small message) that did not fill
/// the buffer counts as the connection being quiet; a longer one as a burst that may go on.
const QUIET_READ: usize = 256;

/// Input buffer room kept for a connection in a burst.
const BURST_BUFFER: usize = 4 << 10;

/// Sizes the (processed) input buffer before the next read: a quiet connection keeps none (its
/// next read allocates a small one), so thousands of idle connections hold no buffers; one in a
/// burst gets room for many packets per read.
fn size_input_buffer(buf: &mut BytesMut, burst: bool) {
    if !burst {
        if buf.is_empty() {
            *buf = BytesMut::new();
        }
    } else if buf.is_empty() && buf.capacity() > 4 * BURST_BUFFER {
        // It grew for a large packet: back to the burst size.
        *buf = BytesMut::with_capacity(BURST_BUFFER);
    } else {
        buf.reserve(BURST_BUFFER);
    }
}

/// Frees an empty buffer that grew past [`KEEP_BUFFER`], keeping `keep` bytes of capacity, so
/// a connection that was busy once does not hold its peak memory while idle.
fn release_idle_buffer(buf: &mut BytesMut, keep: usize) {
    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
        *buf = BytesMut::with_capacity(keep);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::broker::Broker;
    use crate::{Config, MemoryJournal};

    /// Every connection's task holds the state of `serve`, also while idle: it must not grow
    /// back (it was 1.4 KB with a keep-alive timer, a shutdown waiter and a queue waiter of its
    /// own; the keep-alive is now swept by the broker and the waiters are a few words; the
    /// acknowledgements held for synchronous replication cost one word, boxed).
    #[test]
    fn an_idle_connection_task_stays_small() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let c = tokio::net::TcpStream::connect(l.local_addr().unwrap())
                .await
                .unwrap();
            let journal = Arc::new(MemoryJournal::new(1 << 20, 100));
            let broker = Arc::new(Broker::new(Config::default(), journal, Default::default()));
            let f = super::serve(broker, c);
            let size = std::mem::size_of_val(&f);
            assert!(size <= 712, "the connection future is {size} bytes");
        });
    }
}
