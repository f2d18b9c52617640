//! # ringway-mqtt-gateway
//!
//! An MQTT 3.1.1 and 5.0 server whose storage is the Ringway journal. Devices, Node-RED,
//! `mosquitto_pub`/`mosquitto_sub` and paho scripts publish into streams and subscribe to them;
//! every PUBLISH is appended to a stream (payload verbatim, MQTT envelope in the frame's
//! metadata, see [`meta`]) **before** it is acknowledged, and subscribers receive what *any*
//! writer appends to a routed stream.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ringway_mqtt_gateway::GatewayError> {
//! use ringway_mqtt_gateway::{Config, Gateway};
//! let mut config = Config::default();                 // MQTT on 127.0.0.1:1883, `#` -> stream `mqtt`
//! config.mqtt.listen = vec!["127.0.0.1:0".parse().unwrap()];
//! let gateway = Gateway::start(config).await?;
//! println!("listening on {:?}", gateway.mqtt_addrs());
//! gateway.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## Protocol implementation: rumqttc's codec under our own tokio server
//!
//! The packet parser and encoder are rumqttc's (`rumqttc::mqttbytes::v4` for 3.1.1,
//! `rumqttc::v5::mqttbytes::v5` for 5.0), used with `default-features = false` (no TLS stack, no
//! C library). The connection state machine, sessions, routing and storage are ours
//! ([`connection`], [`broker`], [`fanout`]). Why this and not an embedded broker:
//!
//! - **PUBACK after the append is structural here.** A connection handles the PUBLISHes of one
//!   read by appending them synchronously ([`inbound`]: one [`journal::Journal::append_batch`]
//!   per stream) and only then queues their PUBACK/PUBREC bytes, written with one `write`; no
//!   code path acknowledges before the append returned. Embedded brokers acknowledge from
//!   their own session code: rmqtt 0.24's publish hooks run inside its pipeline and its storage
//!   plugins are asynchronous message stores, so "ack only after our append" would mean relying
//!   on hook ordering internals; rumqttd 0.20 serves MQTT 5 on a separate port with gaps and
//!   rejects keep-alive 0 (a 3.1.1 violation).
//! - **Subscribers served from the journal.** Delivery reads the streams (any writer, any
//!   process), which a broker with its own in-memory router would duplicate.
//! - **Build cost.** Measured cold builds on this 2-core machine (`cargo build`, dev profile, empty
//!   target dir): rumqttc (no default features) + tokio 27 s; rmqtt 0.24 142 s (niced, on a
//!   shared machine). The gateway crate as a whole (with argon2, toml, serde) adds under 10 s.
//! - rumqttc's codec is also what our tests and the bridge use as a client, so one codec is
//!   exercised from both sides; real-client interop is checked with mosquitto and paho.
//!
//! What the codec does not do for a server is done in [`codec`]: protocol-version detection from
//! CONNECT, fixed-header flag checks, MQTT 5's two-byte DISCONNECT, refusing server-only
//! packets, and one [`codec::Inbound`] enum for both versions.
//!
//! ## Guarantees and policies
//!
//! - **QoS 0** appended, never acknowledged. **QoS 1**: PUBACK after the append; a redelivery
//!   (DUP set, same client id, packet id, topic and payload as the last one stored for that id
//!   among the client's last [`dedup::DUPLICATE_WINDOW`] QoS 1 messages) is acknowledged without
//!   a second append. The filter is rebuilt from the streams at start-up
//!   for the persistent sessions (only they can resend with DUP), so it survives restarts, and it
//!   is dropped with its session. **QoS 2**: the message is appended when the PUBLISH arrives, PUBREC
//!   follows; the packet id is remembered until PUBREL, so a resent PUBLISH is not appended twice
//!   (exactly once into the stream). Outbound QoS 1/2 follow the spec flows with a bounded
//!   inflight window (`mqtt.max_inflight`, lowered by an MQTT 5 client's Receive Maximum).
//! - **Synchronous replication** (`[replication] sync_replicas = N`, `sync_timeout_ms`, default
//!   off): a QoS 1 PUBACK or QoS 2 PUBREC is sent only once `N` replicas hold the message, as
//!   recorded by the replication senders (`ringway replicate`, any process) in the stream's
//!   replica-acknowledgement table ([`sync_replication`]). The connection keeps reading and
//!   delivering meanwhile; acknowledgements go out in the order the messages arrived, a batch
//!   waits once for its last position, a redelivery waits for the stream's tail. On timeout an
//!   MQTT 5 client gets reason 0x80 with a reason string naming the stream, the position and
//!   the replicas (the message is in the primary's journal, not confirmed replicated); an MQTT
//!   3.1.1 connection is closed unacknowledged, and the client's redelivery is recognised by the
//!   duplicate filter, not appended again (persistent sessions). Counted in
//!   `ringway_mqtt_sync_replication_waits_total` / `_timeouts_total`.
//! - **Typed routes** (`payload_type = "telemetry"`): payloads are validated as ringway-core
//!   `wire::Telemetry` records (invalid ones go to the dead-letter stream with the reason), stored
//!   with its `type_id`, and a reading already stored — same device id, boot id and sequence
//!   number, also across reconnects, new sessions and gateway restarts — is acknowledged without
//!   a second append (exactly once into the stream for firmware devices).
//! - **Storage failure**: MQTT 5 gets a negative PUBACK/PUBREC (0x80, or 0x97 when too large);
//!   a 3.1.1 client (no negative acks) is disconnected without an acknowledgement so it resends.
//! - **Denied or unroutable publishes**: MQTT 5 gets 0x87 / 0x90; 3.1.1 gets a normal PUBACK
//!   (as mosquitto does) and the message is counted in `ringway_mqtt_dropped_total`.
//! - **Back-pressure / overflow policy**: each session has a bounded queue
//!   (`mqtt.max_queued_messages`) filled by the stream tailers, which never wait. When a
//!   subscriber's queue is full, the tailers stop queueing that stream for it and the session
//!   switches to reading the stream from the journal itself, from the first message that did not
//!   fit, at the pace its client acknowledges; when it has caught up with the tailer it goes back
//!   to live delivery (the hand-over is ordered by a per-stream lock, so nothing is lost or sent
//!   twice). Publishers and other subscribers are never slowed, memory stays bounded, and a slow
//!   subscriber loses messages only if retention removes them before it reads them (counted as
//!   `ringway_mqtt_dropped_total{reason="lapped"}`; switches are counted in
//!   `ringway_mqtt_subscriber_catch_ups_total`).
//! - **Retained messages** are kept in memory and rebuilt from the streams at start-up (an empty
//!   retained payload clears the topic). Frames appended by other writers with the retain flag in
//!   their metadata count too.
//! - **Will messages** are published (through the same route/ACL/append path) when a connection
//!   ends without DISCONNECT, on keep-alive expiry, protocol error, take-over, or MQTT 5
//!   DISCONNECT 0x04; MQTT 5 will delay is honoured and cancelled by a reconnect.
//! - **Persistent sessions** (3.1.1 clean-session 0, MQTT 5 session expiry) keep subscriptions,
//!   unacknowledged outbound messages (resent with DUP on reconnect) and the pending QoS 2 ids. When such a client goes away its queue is folded back into a journal
//!   position per stream, stored as a ringway-core **named cursor** (`mqtt:<client id>`), and its
//!   subscriptions are logged in the `mqtt-sessions` stream ([`session_store`]); while offline it
//!   costs no queue memory, and on reconnect — also after a gateway restart — it is served what
//!   it missed from the journal. While it is connected its cursors are created at SUBSCRIBE and
//!   moved forward after every batch of acknowledgements (never past a message still in flight,
//!   queued or unread), so after a crash (no clean disconnect) delivery resumes at the first
//!   unacknowledged message: at least once, and only the in-flight window is sent twice.
//! - Malformed packets close only their connection (MQTT 5: DISCONNECT 0x81/0x82/0x95 first).
//! - **Keep-alive**: a connection silent for 1.5 × its keep-alive is closed (and its will
//!   published) by the broker's sweep, which runs every [`broker::KEEP_ALIVE_SWEEP`]: up to that
//!   much later than the deadline, and no timer in every connection.
//!
//! TLS (crate feature `tls`, off by default): a `[tls]` listener with rustls (ring provider),
//! optionally requiring client certificates from a configured CA ([`config::TlsConfig`]).
//!
//! Not supported (announced to MQTT 5 clients in CONNACK): topic aliases (maximum 0), shared
//! subscriptions, subscription identifiers, enhanced authentication (AUTH).

#![deny(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod auth;
pub mod bridge;
pub mod broker;
pub mod codec;
pub mod config;
pub mod connection;
pub mod dedup;
pub mod fanout;
pub mod inbound;
pub mod journal;
pub mod journal_core;
pub mod meta;
pub mod metrics;
pub mod queue;
pub mod route;
pub mod server;
pub mod session_store;
pub mod sync_replication;
#[cfg(feature = "tls")]
pub mod tls;
pub mod topic;
pub mod up;

pub use config::Config;
pub use journal::{Journal, MemoryJournal};
pub use meta::MqttMeta;
pub use server::{run, run_blocking, Gateway, GatewayError, Status};
