//! `ringway.toml`: the gateway's configuration. Every field has a default, so an empty file (or
//! no file) gives a working node: MQTT on `127.0.0.1:1883`, every topic routed to stream `mqtt`,
//! anonymous access allowed, metrics on `127.0.0.1:9883`. See `ringway.example.toml` in this
//! crate for a documented example.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::topic;

/// Why a configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// File that was read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (unknown keys are errors too).
    #[error("invalid config: {0}")]
    Parse(#[from] toml::de::Error),
    /// The values parse but make no sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Whole gateway configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// MQTT listener and protocol limits.
    pub mqtt: MqttConfig,
    /// Where and how streams are stored.
    pub storage: StorageConfig,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Users, passwords and ACLs.
    pub auth: AuthConfig,
    /// Inbound/outbound routes, tried in order; the first whose filter matches a published topic
    /// wins. Empty means the single route `#` → stream `mqtt`.
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// MQTT over TLS listener (needs the crate feature `tls`).
    pub tls: Option<TlsConfig>,
    /// Connections to external brokers (see [`crate::bridge`]).
    #[serde(rename = "bridge")]
    pub bridges: Vec<BridgeConfig>,
    /// Synchronous replication: QoS 1/2 acknowledgements wait for replicas.
    pub replication: ReplicationConfig,
}

/// Synchronous replication (see [`crate::sync_replication`]). One setting for the whole
/// gateway, not per route: the acknowledgements of one client go out in the order its messages
/// arrived (MQTT 4.6), so a route with a stricter requirement would hold back the others' anyway,
/// and "an acknowledged message is on N hosts" is a property of the node an operator states once.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// Replicas (receivers of `ringway replicate`, in any process) that must hold a QoS 1 or 2
    /// message before its PUBACK or PUBREC is sent; 0 turns synchronous replication off.
    /// At most 16 (the stream's replica-acknowledgement table). Default 0.
    pub sync_replicas: usize,
    /// How long an acknowledgement waits for the replicas (milliseconds). On timeout an MQTT 5
    /// client gets the acknowledgement with reason 0x80 (Unspecified error); an MQTT 3.1.1
    /// connection is closed without it, so the client sends the message again. Default 1000.
    pub sync_timeout_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            sync_replicas: 0,
            sync_timeout_ms: 1000,
        }
    }
}

/// MQTT over TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses of the TLS listeners, e.g. `["127.0.0.1:8883"]`.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain of the server.
    pub cert_file: PathBuf,
    /// PEM private key of the server (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates; when set, clients must present a certificate signed by one of them.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Seconds a client may take to complete the TLS handshake. Default 10.
    #[serde(default = "default_tls_handshake")]
    pub handshake_timeout_secs: u64,
}

fn default_tls_handshake() -> u64 {
    10
}

/// One bridge to an external broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Name (unique); the bridge's session is `$bridge/<name>`.
    pub name: String,
    /// Remote broker `host:port` (IPv6 as `[addr]:port`).
    pub address: String,
    /// Client id at the remote broker. Default `ringway-bridge-<name>`.
    #[serde(default)]
    pub client_id: Option<String>,
    /// Username at the remote broker.
    #[serde(default)]
    pub username: Option<String>,
    /// Name of the environment variable holding the remote password (never in the file).
    #[serde(default)]
    pub password_env: Option<String>,
    /// Clean session at the remote broker. Default false (persistent session).
    #[serde(default)]
    pub clean_session: bool,
    /// Keep-alive towards the remote broker, seconds (minimum 5). Default 30.
    #[serde(default = "default_bridge_keep_alive")]
    pub keep_alive_secs: u16,
    /// Remote topic filters to subscribe to; received messages are stored via the routes.
    #[serde(default)]
    pub subscribe: Vec<BridgeFilter>,
    /// Local topic filters whose messages (from any writer) are published to the remote broker.
    #[serde(default)]
    pub publish: Vec<BridgeFilter>,
}

fn default_bridge_keep_alive() -> u16 {
    30
}

fn default_bridge_qos() -> u8 {
    1
}

/// A topic filter with a QoS, for bridges.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeFilter {
    /// Topic filter.
    pub filter: String,
    /// QoS (0-2). Default 1.
    #[serde(default = "default_bridge_qos")]
    pub qos: u8,
}

/// MQTT listener settings and per-connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// Addresses to listen on (IPv4 and/or IPv6). Default `["127.0.0.1:1883"]`.
    pub listen: Vec<SocketAddr>,
    /// Largest MQTT packet accepted (bytes, whole packet). Larger packets close the connection
    /// (MQTT 5: DISCONNECT 0x95). Default 1 MiB.
    pub max_packet_size: usize,
    /// Most simultaneous connections; further CONNECTs are refused (server unavailable / 0x97
    /// quota exceeded). Default 10000.
    pub max_connections: usize,
    /// Most unacknowledged outbound QoS 1/2 messages per connection (MQTT 5 clients may lower it
    /// with Receive Maximum). Also the Receive Maximum announced to MQTT 5 clients. Default 32.
    pub max_inflight: u16,
    /// Bound of each session's outbound queue (messages). When it is full, the session reads the
    /// overflowing stream from the journal at its own pace until it has caught up: a slow
    /// subscriber never stalls publishers or other subscribers, and memory stays bounded.
    /// Default 1000.
    pub max_queued_messages: usize,
    /// Seconds a new connection may take to send CONNECT. Default 10.
    pub connect_timeout_secs: u64,
    /// Largest keep-alive accepted from MQTT 5 clients (seconds; the server announces it via
    /// Server Keep Alive when a client asks for more or for 0). 0 = accept any. Default 0.
    pub max_keep_alive_secs: u16,
    /// Most new connections accepted per second over the whole gateway (0 = unlimited). Default 0.
    pub max_connect_rate: u32,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 1883))],
            max_packet_size: 1 << 20,
            max_connections: 10_000,
            max_inflight: 32,
            max_queued_messages: 1000,
            connect_timeout_secs: 10,
            max_keep_alive_secs: 0,
            max_connect_rate: 0,
        }
    }
}

/// Journal settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Root directory of the streams. Default: `$RINGWAY_DIR`, else `/dev/shm/ringway`.
    pub dir: Option<PathBuf>,
    /// Segment size of streams the gateway creates (power of two, 64 KiB..512 MiB). The largest
    /// message (metadata + payload) is a quarter of it. Default 16 MiB.
    pub segment_size: u64,
    /// Create routed streams in multi-writer mode so local publishers can append to them while
    /// the gateway runs. Default true.
    pub multi_writer: bool,
    /// CRC32C on every frame of streams the gateway creates. Default true.
    pub crc: bool,
    /// How often (microseconds) an idle stream is polled for frames appended by other processes.
    /// Frames appended through the gateway wake its readers at once. Default 1000.
    pub poll_interval_us: u64,
    /// Rebuild retained messages and the QoS 1 duplicate filter by reading routed streams from
    /// their oldest frame at start-up. Default true.
    pub scan_on_start: bool,
    /// Every this many milliseconds the gateway msyncs the streams it writes (0 = never; the OS
    /// writes back on its own). A process crash loses nothing that was acknowledged either way;
    /// against power loss (streams on a disk, not /dev/shm) only flushed frames are safe.
    /// Default 0.
    pub flush_interval_ms: u64,
    /// Stream holding the subscriptions of persistent sessions (their read positions are named
    /// cursors `mqtt:<client id>` on the routed streams). Default `mqtt-sessions`.
    pub sessions_stream: String,
    /// Stream receiving messages that fail a route's validation, with the reason in the
    /// metadata's user property `ringway-dead-letter-reason`. Default `mqtt-dead-letter`.
    pub dead_letter_stream: String,
    /// Named-cursor slots of streams the gateway creates: every persistent session keeps one
    /// cursor per routed stream, so this bounds the persistent sessions (1..=65536, 128 bytes of
    /// stream metadata each). Existing streams keep the number they were created with. Default
    /// 4096.
    pub cursor_slots: u32,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: None,
            segment_size: 16 << 20,
            multi_writer: true,
            crc: true,
            poll_interval_us: 1000,
            scan_on_start: true,
            flush_interval_ms: 0,
            sessions_stream: "mqtt-sessions".into(),
            dead_letter_stream: "mqtt-dead-letter".into(),
            cursor_slots: ringway_core::DEFAULT_CURSOR_SLOTS,
        }
    }
}

/// Prometheus endpoint settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the `/metrics` HTTP endpoint; `None` disables it. Default `127.0.0.1:9883`.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9883))),
        }
    }
}

/// Authentication and authorization.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Accept clients without a username. Default true.
    pub allow_anonymous: bool,
    /// ACL of anonymous clients.
    pub anonymous: Acl,
    /// Known users.
    pub users: Vec<UserConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            anonymous: Acl::default(),
            users: Vec::new(),
        }
    }
}

/// Topic filters a client may publish to and subscribe to. `%u` is replaced by the username and
/// `%c` by the client id. Default: everything (`#`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Acl {
    /// Filters that published topics must match.
    pub publish: Vec<String>,
    /// Filters that subscription filters must fall within.
    pub subscribe: Vec<String>,
}

impl Default for Acl {
    fn default() -> Self {
        Acl {
            publish: vec!["#".into()],
            subscribe: vec!["#".into()],
        }
    }
}

/// One user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Username as sent in CONNECT.
    pub username: String,
    /// Argon2 PHC string (`$argon2id$v=19$...`); produce one with
    /// [`crate::auth::hash_password`]. Plain-text passwords are not accepted.
    pub password_hash: String,
    /// What this user may do. Default: everything.
    #[serde(default, flatten)]
    pub acl: Acl,
}

/// One route between MQTT topics and a stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Topic filter selecting the published topics that go to `stream`.
    pub filter: String,
    /// Stream name.
    pub stream: String,
    /// Topic level (0-based) whose value is stored as the message key, e.g. 1 for
    /// `sensors/+/temperature`.
    #[serde(default)]
    pub key_level: Option<usize>,
    /// Topic under which frames of `stream` that carry no MQTT topic (written by non-MQTT
    /// writers) are delivered to subscribers. `{key}` is replaced by the frame's key and
    /// `{stream}` by the stream name; frames lacking a needed key are skipped. Default `{stream}`.
    #[serde(default)]
    pub outbound_topic: Option<String>,
    /// Largest payload accepted on this route; larger ones go to the dead-letter stream.
    #[serde(default)]
    pub max_payload_size: Option<usize>,
    /// Declared payload type. Payloads that do not validate as it go to the dead-letter stream;
    /// valid ones are stored with the type's `type_id`, and for `telemetry` a reading already
    /// stored (same device, boot id and sequence number) is acknowledged without a second append.
    #[serde(default)]
    pub payload_type: Option<PayloadType>,
}

/// Payload types a route can declare (ringway-core's `wire` module, rkyv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadType {
    /// `ringway_core::wire::Telemetry`, as sent by ringway-firmware.
    Telemetry,
}

impl Config {
    /// Reads and validates a config file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// The routes in effect: the configured ones, or `#` → `mqtt`.
    pub fn effective_routes(&self) -> Vec<RouteConfig> {
        if self.routes.is_empty() {
            vec![RouteConfig {
                filter: "#".into(),
                stream: "mqtt".into(),
                key_level: None,
                outbound_topic: None,
                max_payload_size: None,
                payload_type: None,
            }]
        } else {
            self.routes.clone()
        }
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.mqtt.listen.is_empty() {
            return bad("mqtt.listen must name at least one address".into());
        }
        if self.mqtt.max_packet_size < 64 || self.mqtt.max_packet_size > 256 << 20 {
            return bad("mqtt.max_packet_size must be within 64 B..256 MiB".into());
        }
        if self.mqtt.max_inflight == 0 {
            return bad("mqtt.max_inflight must be at least 1".into());
        }
        if self.mqtt.max_queued_messages == 0 {
            return bad("mqtt.max_queued_messages must be at least 1".into());
        }
        let seg = self.storage.segment_size;
        if !seg.is_power_of_two() || !(64 << 10..=512 << 20).contains(&seg) {
            return bad(
                "storage.segment_size must be a power of two within 64 KiB..512 MiB".into(),
            );
        }
        if self.mqtt.max_packet_size as u64 + crate::journal_core::META_ROOM > seg / 4 {
            return bad(format!(
                "mqtt.max_packet_size {} does not fit a stream message (at most segment_size/4 - 64 KiB = {})",
                self.mqtt.max_packet_size,
                (seg / 4).saturating_sub(crate::journal_core::META_ROOM)
            ));
        }
        let max_replicas = ringway_core::replica_acks::REPLICA_ACK_SLOTS;
        if self.replication.sync_replicas > max_replicas {
            return bad(format!(
                "replication.sync_replicas must be within 0..={max_replicas} (the slots of a stream's replica-acknowledgement table)"
            ));
        }
        if self.replication.sync_replicas > 0 && self.replication.sync_timeout_ms == 0 {
            return bad(
                "replication.sync_timeout_ms must be at least 1 when sync_replicas is set".into(),
            );
        }
        if !(1..=ringway_core::MAX_CURSOR_SLOTS).contains(&self.storage.cursor_slots) {
            return bad(format!(
                "storage.cursor_slots must be within 1..={}",
                ringway_core::MAX_CURSOR_SLOTS
            ));
        }
        for r in &self.routes {
            if !topic::valid_filter(&r.filter) {
                return bad(format!(
                    "route filter {:?} is not a valid topic filter",
                    r.filter
                ));
            }
            if !valid_stream_name(&r.stream) {
                return bad(format!("route stream name {:?} is not valid", r.stream));
            }
        }
        if !valid_stream_name(&self.storage.sessions_stream) {
            return bad("storage.sessions_stream is not a valid stream name".into());
        }
        if self
            .routes
            .iter()
            .any(|r| r.stream == self.storage.sessions_stream)
        {
            return bad("a route may not write to storage.sessions_stream".into());
        }
        if !valid_stream_name(&self.storage.dead_letter_stream) {
            return bad("storage.dead_letter_stream is not a valid stream name".into());
        }
        if let Some(tls) = &self.tls {
            if !cfg!(feature = "tls") {
                return bad(
                    "[tls] configured but this build has no TLS support (feature `tls`)".into(),
                );
            }
            if tls.listen.is_empty() {
                return bad("tls.listen must name at least one address".into());
            }
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.bridges {
            if b.name.is_empty() || b.name.contains(['/', '+', '#']) || !names.insert(&b.name) {
                return bad(format!(
                    "bridge name {:?} is empty, repeated or has / + #",
                    b.name
                ));
            }
            let port_ok = b
                .address
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if !port_ok {
                return bad(format!(
                    "bridge {}: address {:?} is not host:port",
                    b.name, b.address
                ));
            }
            for f in b.subscribe.iter().chain(&b.publish) {
                if !topic::valid_filter(&f.filter) || f.qos > 2 {
                    return bad(format!(
                        "bridge {}: bad filter {:?} / qos {}",
                        b.name, f.filter, f.qos
                    ));
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for u in &self.auth.users {
            if !seen.insert(&u.username) {
                return bad(format!("user {:?} appears twice", u.username));
            }
            if let Err(e) = argon2::PasswordHash::new(&u.password_hash) {
                return bad(format!(
                    "user {:?}: password_hash is not a PHC hash string ({e})",
                    u.username
                ));
            }
        }
        for acl in
            std::iter::once(&self.auth.anonymous).chain(self.auth.users.iter().map(|u| &u.acl))
        {
            for f in acl.publish.iter().chain(&acl.subscribe) {
                if !topic::valid_filter(f) {
                    return bad(format!("ACL filter {f:?} is not a valid topic filter"));
                }
            }
        }
        Ok(())
    }
}

/// Stream names the gateway accepts: non-empty, at most 200 bytes of `[A-Za-z0-9._-]`, not
/// starting with a dot.
pub fn valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(
            c.mqtt.listen,
            vec!["127.0.0.1:1883".parse::<SocketAddr>().unwrap()]
        );
        let routes = c.effective_routes();
        assert_eq!(routes.len(), 1);
        assert_eq!(
            (routes[0].filter.as_str(), routes[0].stream.as_str()),
            ("#", "mqtt")
        );
        assert!(c.auth.allow_anonymous);
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../ringway.example.toml");
        let c = Config::from_toml(text).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.routes[1].payload_type, Some(PayloadType::Telemetry));
        assert_eq!(c.auth.users.len(), 1);
    }

    #[test]
    fn tls_section_needs_the_feature() {
        let text =
            "[tls]\nlisten = [\"127.0.0.1:8883\"]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
        let r = Config::from_toml(text);
        if cfg!(feature = "tls") {
            assert!(r.is_ok());
        } else {
            assert!(r.unwrap_err().to_string().contains("feature `tls`"));
        }
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let e = Config::from_toml("[mqtt]\nmax_inflight = 0\n").unwrap_err();
        assert!(e.to_string().contains("max_inflight"), "{e}");
        let e = Config::from_toml("[replication]\nsync_replicas = 17\n").unwrap_err();
        assert!(e.to_string().contains("sync_replicas"), "{e}");
        let e = Config::from_toml("[replication]\nsync_replicas = 1\nsync_timeout_ms = 0\n")
            .unwrap_err();
        assert!(e.to_string().contains("sync_timeout_ms"), "{e}");
        let c = Config::from_toml("[replication]\nsync_replicas = 2\n").unwrap();
        assert_eq!(
            (c.replication.sync_replicas, c.replication.sync_timeout_ms),
            (2, 1000)
        );
        let e = Config::from_toml("[storage]\ncursor_slots = 0\n").unwrap_err();
        assert!(e.to_string().contains("cursor_slots"), "{e}");
        let e = Config::from_toml("[mqtt]\nlisten = [\"nonsense\"]\n").unwrap_err();
        assert!(matches!(e, ConfigError::Parse(_)));
        let e = Config::from_toml("[storage]\nsegment_size = 1048576\n").unwrap_err();
        assert!(
            e.to_string().contains("does not fit a stream message"),
            "{e}"
        );
        let e = Config::from_toml("[[route]]\nfilter = \"#\"\nstream = \"mqtt-sessions\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("sessions_stream"), "{e}");
        let e = Config::from_toml("[mqtt]\nbogus = 1\n").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = Config::from_toml("[[route]]\nfilter = \"a/#/b\"\nstream = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("a/#/b"), "{e}");
        let e = Config::from_toml("[[route]]\nfilter = \"#\"\nstream = \"../etc\"\n").unwrap_err();
        assert!(e.to_string().contains("stream name"), "{e}");
        let e = Config::from_toml("[[auth.users]]\nusername = \"a\"\npassword_hash = \"secret\"\n")
            .unwrap_err();
        assert!(e.to_string().contains("PHC"), "{e}");
        let e = Config::from_toml("[[bridge]]\nname = \"b\"\naddress = \"nohost\"\n").unwrap_err();
        assert!(e.to_string().contains("host:port"), "{e}");
        let c = Config::from_toml(
            "[[bridge]]\nname = \"b\"\naddress = \"10.0.0.1:1883\"\n[[bridge.subscribe]]\nfilter = \"site/#\"\n",
        )
        .unwrap();
        assert_eq!(c.bridges[0].subscribe[0].qos, 1);
        assert!(!c.bridges[0].clean_session);
        let e = Config::from_file(Path::new("/nonexistent/ringway.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
    }
}
