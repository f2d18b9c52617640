//! The MQTT metadata stored in a journal frame's `meta` bytes.
//!
//! Every message the gateway appends carries, next to the verbatim payload, the MQTT envelope it
//! arrived in: topic, QoS, retain flag, client id, packet id, the routing key and the MQTT 5
//! properties that travel with an application message. Any other writer (a local publisher,
//! `ringway pub --topic T`) can write the same encoding with [`MqttMeta::encode`] so MQTT
//! subscribers receive its frames under that topic.
//!
//! # Encoding, version 1
//!
//! All integers little endian. A "str" is a `u16` byte length followed by UTF-8 bytes; "bin" the
//! same with arbitrary bytes.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | magic `b"MQ"` |
//! | 2 | 1 | version, `1` |
//! | 3 | 1 | flags: bits 0-1 QoS, bit 2 retain, bit 3 received over MQTT 5, bit 4 key present, bits 5-7 zero |
//! | 4 | 2 | packet id (0 for QoS 0 or when not received over MQTT) |
//! | 6 | str | topic |
//! | … | str | client id (empty when not written by an MQTT client) |
//! | … | str | key, only when flag bit 4 is set |
//! | … | … | properties until the end of the meta bytes |
//!
//! Each property is `id: u8`, `len: u16`, `len` value bytes. Ids are MQTT 5's own property
//! identifiers: `0x01` payload format indicator (1 byte), `0x02` message expiry interval
//! (`u32`), `0x03` content type (UTF-8), `0x08` response topic (UTF-8), `0x09` correlation data
//! (bytes), `0x26` user property (value = str name followed by the remaining bytes as the UTF-8
//! value). A decoder skips ids it does not know, so later versions can add properties without
//! bumping the version; a different layout of the fixed part bumps the version byte and old
//! decoders reject it with [`MetaError::UnsupportedVersion`].

use thiserror::Error;

/// Magic bytes at the start of the meta of an MQTT frame.
pub const MAGIC: [u8; 2] = *b"MQ";
/// Version written by [`MqttMeta::encode`].
pub const VERSION: u8 = 1;

const FLAG_RETAIN: u8 = 1 << 2;
const FLAG_V5: u8 = 1 << 3;
const FLAG_KEY: u8 = 1 << 4;
const FLAG_RESERVED: u8 = 0b1110_0000;

const PROP_PAYLOAD_FORMAT: u8 = 0x01;
const PROP_MESSAGE_EXPIRY: u8 = 0x02;
const PROP_CONTENT_TYPE: u8 = 0x03;
const PROP_RESPONSE_TOPIC: u8 = 0x08;
const PROP_CORRELATION_DATA: u8 = 0x09;
const PROP_USER: u8 = 0x26;

/// Why meta bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetaError {
    /// The meta does not start with [`MAGIC`]: the frame was not written with this encoding.
    #[error("not MQTT metadata (missing magic)")]
    NotMqtt,
    /// The version byte is one this decoder does not know.
    #[error("unsupported MQTT metadata version {0}")]
    UnsupportedVersion(u8),
    /// The bytes end before a field does.
    #[error("MQTT metadata truncated while reading {0}")]
    Truncated(&'static str),
    /// A string field is not valid UTF-8.
    #[error("MQTT metadata field {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// QoS 3 or reserved flag bits set.
    #[error("MQTT metadata has invalid flags {0:#04x}")]
    BadFlags(u8),
    /// A field is longer than its `u16` length prefix can express.
    #[error("MQTT metadata field {0} longer than 65535 bytes")]
    FieldTooLong(&'static str),
}

/// MQTT 5 properties that travel with an application message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessageProperties {
    /// Payload format indicator (0 = bytes, 1 = UTF-8).
    pub payload_format_indicator: Option<u8>,
    /// Message expiry interval in seconds, as received.
    pub message_expiry_interval: Option<u32>,
    /// Content type.
    pub content_type: Option<String>,
    /// Response topic (request/response pattern).
    pub response_topic: Option<String>,
    /// Correlation data (request/response pattern).
    pub correlation_data: Option<Vec<u8>>,
    /// User properties, in order.
    pub user_properties: Vec<(String, String)>,
}

impl MessageProperties {
    /// True when no property is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// The MQTT envelope of one journal frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MqttMeta {
    /// MQTT topic name.
    pub topic: String,
    /// QoS the message was published with (0, 1 or 2).
    pub qos: u8,
    /// Retain flag as published.
    pub retain: bool,
    /// True when received from an MQTT 5 client.
    pub v5: bool,
    /// Packet identifier as received (0 for QoS 0 or non-MQTT writers).
    pub packet_id: u16,
    /// Client identifier of the publisher (empty for non-MQTT writers).
    pub client_id: String,
    /// Routing key taken from a topic level, when the route declares one.
    pub key: Option<String>,
    /// MQTT 5 message properties.
    pub properties: MessageProperties,
}

impl MqttMeta {
    /// Meta for a message with just a topic (what `ringway pub --topic T` writes).
    pub fn for_topic(topic: impl Into<String>) -> Self {
        MqttMeta {
            topic: topic.into(),
            ..Self::default()
        }
    }

    /// Encodes into a new vector.
    pub fn encode(&self) -> Result<Vec<u8>, MetaError> {
        let mut out = Vec::with_capacity(16 + self.topic.len() + self.client_id.len());
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Encodes, appending to `out` (which is left unchanged on error).
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        self.as_ref().encode_into(out)
    }

    /// The same fields, borrowed.
    pub fn as_ref(&self) -> MetaRef<'_> {
        MetaRef {
            topic: &self.topic,
            qos: self.qos,
            retain: self.retain,
            v5: self.v5,
            packet_id: self.packet_id,
            client_id: &self.client_id,
            key: self.key.as_deref(),
            properties: &self.properties,
        }
    }
}

/// The fields of an [`MqttMeta`], borrowed: what the gateway encodes for every PUBLISH without
/// copying the topic, client id and properties first.
#[derive(Debug, Clone, Copy)]
pub struct MetaRef<'a> {
    /// MQTT topic name.
    pub topic: &'a str,
    /// QoS the message was published with (0, 1 or 2).
    pub qos: u8,
    /// Retain flag as published.
    pub retain: bool,
    /// True when received from an MQTT 5 client.
    pub v5: bool,
    /// Packet identifier as received.
    pub packet_id: u16,
    /// Client identifier of the publisher.
    pub client_id: &'a str,
    /// Routing key taken from a topic level.
    pub key: Option<&'a str>,
    /// MQTT 5 message properties.
    pub properties: &'a MessageProperties,
}

impl MetaRef<'_> {
    /// Encodes, appending to `out` (which is left unchanged on error); the same bytes as
    /// [`MqttMeta::encode_into`].
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        if self.qos > 2 {
            return Err(MetaError::BadFlags(self.qos));
        }
        let start = out.len();
        let result = self.encode_inner(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_inner(&self, out: &mut Vec<u8>) -> Result<(), MetaError> {
        let mut flags = self.qos;
        if self.retain {
            flags |= FLAG_RETAIN;
        }
        if self.v5 {
            flags |= FLAG_V5;
        }
        if self.key.is_some() {
            flags |= FLAG_KEY;
        }
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(flags);
        out.extend_from_slice(&self.packet_id.to_le_bytes());
        put_bin(out, self.topic.as_bytes(), "topic")?;
        put_bin(out, self.client_id.as_bytes(), "client_id")?;
        if let Some(key) = &self.key {
            put_bin(out, key.as_bytes(), "key")?;
        }
        let p = &self.properties;
        if let Some(v) = p.payload_format_indicator {
            put_prop(out, PROP_PAYLOAD_FORMAT, &[v])?;
        }
        if let Some(v) = p.message_expiry_interval {
            put_prop(out, PROP_MESSAGE_EXPIRY, &v.to_le_bytes())?;
        }
        if let Some(v) = &p.content_type {
            put_prop(out, PROP_CONTENT_TYPE, v.as_bytes())?;
        }
        if let Some(v) = &p.response_topic {
            put_prop(out, PROP_RESPONSE_TOPIC, v.as_bytes())?;
        }
        if let Some(v) = &p.correlation_data {
            put_prop(out, PROP_CORRELATION_DATA, v)?;
        }
        for (name, value) in &p.user_properties {
            let mut v = Vec::with_capacity(2 + name.len() + value.len());
            put_bin(&mut v, name.as_bytes(), "user property name")?;
            v.extend_from_slice(value.as_bytes());
            put_prop(out, PROP_USER, &v)?;
        }
        Ok(())
    }
}

impl MqttMeta {
    /// Decodes meta bytes written by [`MqttMeta::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, MetaError> {
        let mut r = Cursor { bytes, at: 0 };
        if bytes.len() < 2 || bytes[..2] != MAGIC {
            return Err(MetaError::NotMqtt);
        }
        r.at = 2;
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(MetaError::UnsupportedVersion(version));
        }
        let flags = r.u8("flags")?;
        if flags & FLAG_RESERVED != 0 || flags & 0b11 == 3 {
            return Err(MetaError::BadFlags(flags));
        }
        let packet_id = u16::from_le_bytes(r.take(2, "packet id")?.try_into().unwrap_or([0; 2]));
        let topic = r.str("topic")?;
        let client_id = r.str("client_id")?;
        let key = if flags & FLAG_KEY != 0 {
            Some(r.str("key")?)
        } else {
            None
        };
        let mut properties = MessageProperties::default();
        while r.at < bytes.len() {
            let id = r.u8("property id")?;
            let len = r.u16("property length")? as usize;
            let value = r.take(len, "property value")?;
            match id {
                PROP_PAYLOAD_FORMAT => {
                    properties.payload_format_indicator = Some(
                        *value
                            .first()
                            .ok_or(MetaError::Truncated("payload format"))?,
                    )
                }
                PROP_MESSAGE_EXPIRY => {
                    let v: [u8; 4] = value
                        .try_into()
                        .map_err(|_| MetaError::Truncated("message expiry"))?;
                    properties.message_expiry_interval = Some(u32::from_le_bytes(v));
                }
                PROP_CONTENT_TYPE => properties.content_type = Some(utf8(value, "content type")?),
                PROP_RESPONSE_TOPIC => {
                    properties.response_topic = Some(utf8(value, "response topic")?)
                }
                PROP_CORRELATION_DATA => properties.correlation_data = Some(value.to_vec()),
                PROP_USER => {
                    let mut pr = Cursor {
                        bytes: value,
                        at: 0,
                    };
                    let name = pr.str("user property name")?;
                    let rest = &value[pr.at..];
                    properties
                        .user_properties
                        .push((name, utf8(rest, "user property value")?));
                }
                _ => {}
            }
        }
        Ok(MqttMeta {
            topic,
            qos: flags & 0b11,
            retain: flags & FLAG_RETAIN != 0,
            v5: flags & FLAG_V5 != 0,
            packet_id,
            client_id,
            key,
            properties,
        })
    }
}

/// Returns the MQTT topic recorded in `meta`, if it holds MQTT metadata (cheap: no allocation of
/// the other fields). Useful for `ringway tail --format json` (`"mqtt_topic"`).
pub fn topic_of(meta: &[u8]) -> Option<&str> {
    if meta.len() < 8 || meta[..2] != MAGIC || meta[2] != VERSION {
        return None;
    }
    let len = u16::from_le_bytes([meta[6], meta[7]]) as usize;
    meta.get(8..8 + len)
        .and_then(|b| std::str::from_utf8(b).ok())
}

/// True when `meta` is MQTT metadata with the retain flag set (cheap: reads one byte).
pub fn is_retained(meta: &[u8]) -> bool {
    meta.len() >= 4 && meta[..2] == MAGIC && meta[2] == VERSION && meta[3] & FLAG_RETAIN != 0
}

fn put_bin(out: &mut Vec<u8>, v: &[u8], what: &'static str) -> Result<(), MetaError> {
    let len = u16::try_from(v.len()).map_err(|_| MetaError::FieldTooLong(what))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(v);
    Ok(())
}

fn put_prop(out: &mut Vec<u8>, id: u8, v: &[u8]) -> Result<(), MetaError> {
    out.push(id);
    put_bin(out, v, "property")
}

fn utf8(v: &[u8], what: &'static str) -> Result<String, MetaError> {
    String::from_utf8(v.to_vec()).map_err(|_| MetaError::NotUtf8(what))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], MetaError> {
        let end = self.at.checked_add(n).ok_or(MetaError::Truncated(what))?;
        let v = self
            .bytes
            .get(self.at..end)
            .ok_or(MetaError::Truncated(what))?;
        self.at = end;
        Ok(v)
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, MetaError> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, MetaError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn str(&mut self, what: &'static str) -> Result<String, MetaError> {
        let len = self.u16(what)? as usize;
        utf8(self.take(len, what)?, what)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> MqttMeta {
        MqttMeta {
            topic: "sensors/dev-7/temperature".into(),
            qos: 2,
            retain: true,
            v5: true,
            packet_id: 4711,
            client_id: "dev-7".into(),
            key: Some("dev-7".into()),
            properties: MessageProperties {
                payload_format_indicator: Some(1),
                message_expiry_interval: Some(60),
                content_type: Some("application/json".into()),
                response_topic: Some("replies/dev-7".into()),
                correlation_data: Some(vec![0, 1, 2, 255]),
                user_properties: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
            },
        }
    }

    #[test]
    fn round_trips_every_field() {
        let m = full();
        let bytes = m.encode().unwrap();
        assert_eq!(MqttMeta::decode(&bytes).unwrap(), m);
        assert_eq!(topic_of(&bytes), Some("sensors/dev-7/temperature"));
        assert!(is_retained(&bytes));
        assert!(!is_retained(&MqttMeta::for_topic("t").encode().unwrap()));
        assert!(!is_retained(b"MQ"));
    }

    #[test]
    fn minimal_topic_meta_is_small() {
        let bytes = MqttMeta::for_topic("a/b").encode().unwrap();
        assert_eq!(bytes.len(), 6 + 2 + 3 + 2);
        let m = MqttMeta::decode(&bytes).unwrap();
        assert_eq!(m.topic, "a/b");
        assert_eq!(m.key, None);
        assert!(m.properties.is_empty());
    }

    #[test]
    fn rejects_foreign_and_broken_meta() {
        assert_eq!(MqttMeta::decode(b""), Err(MetaError::NotMqtt));
        assert_eq!(MqttMeta::decode(b"XX\x01"), Err(MetaError::NotMqtt));
        assert_eq!(
            MqttMeta::decode(b"MQ\x02\x00\x00\x00\x00\x00\x00\x00"),
            Err(MetaError::UnsupportedVersion(2))
        );
        assert_eq!(
            MqttMeta::decode(b"MQ\x01\x03\x00\x00"),
            Err(MetaError::BadFlags(3))
        );
        let bytes = full().encode().unwrap();
        for cut in 0..bytes.len() {
            // Every strict prefix either fails cleanly or decodes a shorter property list.
            let _ = MqttMeta::decode(&bytes[..cut]);
        }
        assert!(matches!(
            MqttMeta::decode(&bytes[..10]),
            Err(MetaError::Truncated(_))
        ));
        let mut bad = MqttMeta::for_topic("x").encode().unwrap();
        bad[8] = 0xff;
        assert_eq!(MqttMeta::decode(&bad), Err(MetaError::NotUtf8("topic")));
        assert_eq!(topic_of(&bad), None);
    }

    #[test]
    fn unknown_properties_are_skipped() {
        let mut bytes = MqttMeta::for_topic("t").encode().unwrap();
        bytes.extend_from_slice(&[0x7f, 2, 0, 9, 9]);
        bytes.extend_from_slice(&[PROP_CONTENT_TYPE, 1, 0, b'x']);
        let m = MqttMeta::decode(&bytes).unwrap();
        assert_eq!(m.properties.content_type.as_deref(), Some("x"));
    }

    #[test]
    fn oversized_field_is_an_error_and_leaves_buffer_alone() {
        let m = MqttMeta::for_topic("t".repeat(70_000));
        let mut out = vec![1, 2, 3];
        assert_eq!(
            m.encode_into(&mut out),
            Err(MetaError::FieldTooLong("topic"))
        );
        assert_eq!(out, vec![1, 2, 3]);
    }
}
