//! MQTT packet framing for both protocol versions, on top of rumqttc's codec.
//!
//! Parsing is rumqttc's (`mqttbytes::v4` for 3.1.1, `v5::mqttbytes::v5` for 5.0); this module
//! adds what a *server* needs that a client codec leaves out: detecting the protocol version from
//! the CONNECT, checking fixed-header flags, accepting MQTT 5's two-byte DISCONNECT, refusing
//! packets a client must not send, and turning both versions into one [`Inbound`] enum so the
//! session logic is written once. Outbound PUBLISH and MQTT 5 CONNACK are encoded by rumqttc;
//! the fixed-size acknowledgements (2-5 bytes plus reason codes) are written here directly.

use bytes::{BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::QoS as QoS4;
use thiserror::Error;

use crate::meta::MessageProperties;

/// Protocol version of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V311,
    /// MQTT 5.0 (protocol level 5).
    V5,
}

/// Why bytes from a client could not be turned into a packet. Every variant closes the
/// connection (only that one).
#[derive(Debug, Error)]
pub enum CodecError {
    /// The bytes violate the packet format.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The packet is larger than the configured maximum.
    #[error("packet of {0} bytes exceeds the maximum packet size")]
    TooLarge(usize),
    /// A well-formed packet a client must not send (or not now).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// CONNECT with a protocol level other than 4 or 5.
    #[error("unsupported protocol level {0}")]
    UnsupportedVersion(u8),
}

/// A will message from CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Topic name.
    pub topic: String,
    /// Payload.
    pub payload: Bytes,
    /// QoS.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// MQTT 5 will delay interval (seconds).
    pub delay_secs: u32,
    /// MQTT 5 message properties.
    pub properties: MessageProperties,
}

/// CONNECT, both versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Protocol version.
    pub version: Version,
    /// Client identifier (may be empty).
    pub client_id: String,
    /// Clean session (3.1.1) / clean start (5).
    pub clean_start: bool,
    /// Keep alive in seconds (0 = off).
    pub keep_alive: u16,
    /// Will message.
    pub will: Option<Will>,
    /// User name.
    pub username: Option<String>,
    /// Password bytes.
    pub password: Vec<u8>,
    /// MQTT 5 session expiry interval; 3.1.1: 0 for clean sessions, `u32::MAX` otherwise.
    pub session_expiry: u32,
    /// MQTT 5 receive maximum (65535 when absent).
    pub receive_maximum: u16,
    /// MQTT 5 maximum packet size the client accepts.
    pub max_packet_size: Option<u32>,
    /// MQTT 5 extended authentication method (unsupported: refused).
    pub auth_method: Option<String>,
}

/// PUBLISH, both versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Topic name (may be empty in MQTT 5 when a topic alias is used).
    pub topic: String,
    /// QoS 0..=2.
    pub qos: u8,
    /// Retain flag.
    pub retain: bool,
    /// Duplicate flag.
    pub dup: bool,
    /// Packet identifier (0 for QoS 0).
    pub pkid: u16,
    /// Payload.
    pub payload: Bytes,
    /// MQTT 5 properties.
    pub properties: MessageProperties,
    /// MQTT 5 topic alias.
    pub topic_alias: Option<u16>,
}

/// One entry of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeFilter {
    /// Topic filter.
    pub filter: String,
    /// Maximum QoS requested.
    pub qos: u8,
    /// MQTT 5 no-local option.
    pub no_local: bool,
    /// MQTT 5 retain-as-published option.
    pub retain_as_published: bool,
    /// MQTT 5 retain handling (0 send at subscribe, 1 only for new subscriptions, 2 never).
    pub retain_handling: u8,
}

/// Packets a client may send, both versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// CONNECT.
    Connect(Box<Connect>),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(u16),
    /// PUBREC.
    PubRec(u16),
    /// PUBREL.
    PubRel(u16),
    /// PUBCOMP.
    PubComp(u16),
    /// SUBSCRIBE.
    Subscribe {
        /// Packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<SubscribeFilter>,
        /// MQTT 5 subscription identifier, if given.
        subscription_id: Option<usize>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Packet id.
        pkid: u16,
        /// Filters.
        filters: Vec<String>,
    },
    /// PINGREQ.
    PingReq,
    /// DISCONNECT (3.1.1: reason 0).
    Disconnect {
        /// MQTT 5 reason code.
        reason: u8,
        /// MQTT 5 session expiry update.
        session_expiry: Option<u32>,
    },
    /// MQTT 5 AUTH.
    Auth,
}

/// Fixed header of the packet at the front of `buf`: (first byte, header length, remaining
/// length). `Ok(None)` when the header is incomplete.
fn fixed_header(buf: &[u8], max_packet: usize) -> Result<Option<(u8, usize, usize)>, CodecError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len: usize = 0;
    let mut shift = 0;
    let mut at = 1;
    loop {
        let Some(&b) = buf.get(at) else {
            return Ok(None);
        };
        len |= ((b & 0x7f) as usize) << shift;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 21 {
            return Err(CodecError::Malformed(
                "remaining length over 4 bytes".into(),
            ));
        }
    }
    if len > max_packet {
        return Err(CodecError::TooLarge(len));
    }
    Ok(Some((first, at, len)))
}

/// Reads the protocol level of a CONNECT at the start of `buf` without consuming it. `Ok(None)`
/// means more bytes are needed.
pub fn peek_connect_version(buf: &[u8], max_packet: usize) -> Result<Option<Version>, CodecError> {
    let Some((first, at, _)) = fixed_header(buf, max_packet)? else {
        return Ok(None);
    };
    if first != 0x10 {
        return Err(CodecError::Protocol(format!(
            "first packet must be CONNECT, got type {}",
            first >> 4
        )));
    }
    // Protocol name (u16 length + bytes) then level.
    let Some(name_len) = buf.get(at..at + 2) else {
        return Ok(None);
    };
    let name_len = u16::from_be_bytes([name_len[0], name_len[1]]) as usize;
    let level_at = at + 2 + name_len;
    if name_len > 6 {
        return Err(CodecError::Malformed("bad protocol name".into()));
    }
    let Some(&level) = buf.get(level_at) else {
        return Ok(None);
    };
    let name = &buf[at + 2..level_at];
    match (name, level) {
        (b"MQTT", 4) => Ok(Some(Version::V311)),
        (b"MQTT", 5) => Ok(Some(Version::V5)),
        (b"MQTT", l) | (b"MQIsdp", l) => Err(CodecError::UnsupportedVersion(l)),
        _ => Err(CodecError::Malformed("bad protocol name".into())),
    }
}

/// Decodes one packet from the front of `buf` (consuming it); `Ok(None)` when `buf` does not yet
/// hold a whole packet. `max_packet` bounds the remaining length.
pub fn decode(
    buf: &mut BytesMut,
    version: Version,
    max_packet: usize,
) -> Result<Option<Inbound>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((byte1, header_len, remaining_len)) = fixed_header(buf, max_packet)? else {
        return Ok(None);
    };
    if buf.len() < header_len + remaining_len {
        return Ok(None);
    }
    let kind = byte1 >> 4;
    let flags = byte1 & 0x0f;
    let expected_flags = match kind {
        3 => flags, // PUBLISH: flags carry dup/qos/retain, checked by the parser
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(CodecError::Malformed(format!(
            "reserved flags {flags:#06b} on packet type {kind}"
        )));
    }
    match kind {
        1 => return Err(CodecError::Protocol("second CONNECT".into())),
        2 | 9 | 11 | 13 => {
            return Err(CodecError::Protocol(format!(
                "packet type {kind} is sent by servers only"
            )))
        }
        0 => return Err(CodecError::Malformed("packet type 0 is reserved".into())),
        _ => {}
    }
    if version == Version::V5 && kind == 14 && remaining_len == 0 {
        let _ = buf.split_to(2);
        return Ok(Some(Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        }));
    }
    match version {
        Version::V311 => decode_v4(buf, max_packet),
        Version::V5 => decode_v5(buf, max_packet),
    }
}

/// Decodes a CONNECT of the given version (the first packet of a connection).
pub fn decode_connect(
    buf: &mut BytesMut,
    version: Version,
    max_packet: usize,
) -> Result<Option<Connect>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let Some((byte1, header_len, remaining_len)) = fixed_header(buf, max_packet)? else {
        return Ok(None);
    };
    if buf.len() < header_len + remaining_len {
        return Ok(None);
    }
    if byte1 != 0x10 {
        return Err(CodecError::Protocol("first packet must be CONNECT".into()));
    }
    // Reserved bit 0 of the connect flags must be 0 [MQTT-3.1.2-3].
    let flags_at = header_len + 2 + 4 + 1;
    if buf.get(flags_at).is_some_and(|f| f & 1 != 0) {
        return Err(CodecError::Malformed("reserved connect flag set".into()));
    }
    let packet = match version {
        Version::V311 => decode_v4(buf, max_packet)?,
        Version::V5 => decode_v5(buf, max_packet)?,
    };
    match packet {
        Some(Inbound::Connect(c)) => Ok(Some(*c)),
        None => Ok(None),
        Some(_) => Err(CodecError::Protocol("first packet must be CONNECT".into())),
    }
}

fn qos4(q: QoS4) -> u8 {
    q as u8
}

fn qos5(q: QoS5) -> u8 {
    q as u8
}

fn decode_v4(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, CodecError> {
    use v4::Packet;
    let packet = match Packet::read(buf, max) {
        Ok(p) => p,
        Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(CodecError::Malformed(e.to_string())),
    };
    Ok(Some(match packet {
        Packet::Connect(c) => {
            let (username, password) = match c.login {
                Some(l) => (
                    (!l.username.is_empty()).then_some(l.username),
                    l.password.into_bytes(),
                ),
                None => (None, Vec::new()),
            };
            Inbound::Connect(Box::new(Connect {
                version: Version::V311,
                session_expiry: if c.clean_session { 0 } else { u32::MAX },
                client_id: c.client_id,
                clean_start: c.clean_session,
                keep_alive: c.keep_alive,
                will: c.last_will.map(|w| Will {
                    topic: w.topic,
                    payload: w.message,
                    qos: qos4(w.qos),
                    retain: w.retain,
                    delay_secs: 0,
                    properties: MessageProperties::default(),
                }),
                username,
                password,
                receive_maximum: u16::MAX,
                max_packet_size: None,
                auth_method: None,
            }))
        }
        Packet::Publish(p) => Inbound::Publish(Publish {
            topic: p.topic,
            qos: qos4(p.qos),
            retain: p.retain,
            dup: p.dup,
            pkid: p.pkid,
            payload: p.payload,
            properties: MessageProperties::default(),
            topic_alias: None,
        }),
        Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        Packet::Subscribe(s) => Inbound::Subscribe {
            pkid: s.pkid,
            filters: s
                .filters
                .into_iter()
                .map(|f| SubscribeFilter {
                    filter: f.path,
                    qos: qos4(f.qos),
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: 0,
                })
                .collect(),
            subscription_id: None,
        },
        Packet::Unsubscribe(u) => {
            if u.topics.is_empty() {
                return Err(CodecError::Malformed("UNSUBSCRIBE without filters".into()));
            }
            Inbound::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            }
        }
        Packet::PingReq => Inbound::PingReq,
        Packet::Disconnect => Inbound::Disconnect {
            reason: 0,
            session_expiry: None,
        },
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
            return Err(CodecError::Protocol("server-only packet".into()))
        }
    }))
}

fn props5(
    payload_format_indicator: Option<u8>,
    message_expiry_interval: Option<u32>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Bytes>,
    user_properties: Vec<(String, String)>,
) -> MessageProperties {
    MessageProperties {
        payload_format_indicator,
        message_expiry_interval,
        content_type,
        response_topic,
        correlation_data: correlation_data.map(|b| b.to_vec()),
        user_properties,
    }
}

fn utf8(b: Bytes, what: &str) -> Result<String, CodecError> {
    String::from_utf8(b.to_vec()).map_err(|_| CodecError::Malformed(format!("{what} is not UTF-8")))
}

fn decode_v5(buf: &mut BytesMut, max: usize) -> Result<Option<Inbound>, CodecError> {
    use v5::Packet;
    let max32 = u32::try_from(max).unwrap_or(u32::MAX);
    let packet = match Packet::read(buf, Some(max32)) {
        Ok(p) => p,
        Err(rumqttc::v5::mqttbytes::Error::InsufficientBytes(_)) => return Ok(None),
        Err(e) => return Err(CodecError::Malformed(e.to_string())),
    };
    Ok(Some(match packet {
        Packet::Connect(c, will, login) => {
            let p = c.properties.unwrap_or_default();
            let will = match will {
                None => None,
                Some(w) => {
                    let (delay_secs, properties) = match w.properties {
                        Some(wp) => (
                            wp.delay_interval.unwrap_or(0),
                            props5(
                                wp.payload_format_indicator,
                                wp.message_expiry_interval,
                                wp.content_type,
                                wp.response_topic,
                                wp.correlation_data,
                                wp.user_properties,
                            ),
                        ),
                        None => (0, MessageProperties::default()),
                    };
                    Some(Will {
                        topic: utf8(w.topic, "will topic")?,
                        payload: w.message,
                        qos: qos5(w.qos),
                        retain: w.retain,
                        delay_secs,
                        properties,
                    })
                }
            };
            let (username, password) = match login {
                Some(l) => (
                    (!l.username.is_empty()).then_some(l.username),
                    l.password.into_bytes(),
                ),
                None => (None, Vec::new()),
            };
            if p.receive_maximum == Some(0) {
                return Err(CodecError::Protocol("receive maximum 0".into()));
            }
            Inbound::Connect(Box::new(Connect {
                version: Version::V5,
                client_id: c.client_id,
                clean_start: c.clean_start,
                keep_alive: c.keep_alive,
                will,
                username,
                password,
                session_expiry: p.session_expiry_interval.unwrap_or(0),
                receive_maximum: p.receive_maximum.unwrap_or(u16::MAX),
                max_packet_size: p.max_packet_size,
                auth_method: p.authentication_method,
            }))
        }
        Packet::Publish(p) => {
            let pp = p.properties.unwrap_or_default();
            Inbound::Publish(Publish {
                topic: utf8(p.topic, "topic")?,
                qos: qos5(p.qos),
                retain: p.retain,
                dup: p.dup,
                pkid: p.pkid,
                payload: p.payload,
                topic_alias: pp.topic_alias,
                properties: props5(
                    pp.payload_format_indicator,
                    pp.message_expiry_interval,
                    pp.content_type,
                    pp.response_topic,
                    pp.correlation_data,
                    pp.user_properties,
                ),
            })
        }
        Packet::PubAck(a) => Inbound::PubAck(a.pkid),
        Packet::PubRec(a) => Inbound::PubRec(a.pkid),
        Packet::PubRel(a) => Inbound::PubRel(a.pkid),
        Packet::PubComp(a) => Inbound::PubComp(a.pkid),
        Packet::Subscribe(s) => {
            if s.filters.is_empty() {
                return Err(CodecError::Malformed("SUBSCRIBE without filters".into()));
            }
            Inbound::Subscribe {
                pkid: s.pkid,
                subscription_id: s.properties.and_then(|p| p.id),
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| SubscribeFilter {
                        filter: f.path,
                        qos: qos5(f.qos),
                        no_local: f.nolocal,
                        retain_as_published: f.preserve_retain,
                        retain_handling: f.retain_forward_rule as u8,
                    })
                    .collect(),
            }
        }
        Packet::Unsubscribe(u) => {
            if u.filters.is_empty() {
                return Err(CodecError::Malformed("UNSUBSCRIBE without filters".into()));
            }
            Inbound::Unsubscribe {
                pkid: u.pkid,
                filters: u.filters,
            }
        }
        Packet::PingReq(_) => Inbound::PingReq,
        Packet::Disconnect(d) => Inbound::Disconnect {
            reason: d.reason_code as u8,
            session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
        },
        Packet::Auth(_) => Inbound::Auth,
        Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp(_) => {
            return Err(CodecError::Protocol("server-only packet".into()))
        }
    }))
}

/// CONNACK result, mapped to each version's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnAckCode {
    /// Accepted.
    Success,
    /// Protocol version not supported.
    UnsupportedVersion,
    /// Client id rejected.
    BadClientId,
    /// Server unavailable (limits).
    ServerUnavailable,
    /// Connection quota exceeded (MQTT 5 0x97; 3.1.1 server unavailable).
    QuotaExceeded,
    /// Bad user name or password.
    BadCredentials,
    /// Not authorized.
    NotAuthorized,
    /// Unsupported authentication method (MQTT 5 only).
    BadAuthMethod,
    /// Connection rate exceeded (MQTT 5 0x9F; 3.1.1 server unavailable).
    RateExceeded,
}

/// Properties announced in an MQTT 5 CONNACK.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnAckInfo {
    /// Client id assigned by the server (empty id in CONNECT).
    pub assigned_client_id: Option<String>,
    /// Receive Maximum of the server.
    pub receive_maximum: u16,
    /// Maximum Packet Size of the server.
    pub max_packet_size: u32,
    /// Server Keep Alive, when it overrides the client's value.
    pub server_keep_alive: Option<u16>,
    /// Session expiry granted, when it differs from the requested one.
    pub session_expiry: Option<u32>,
}

/// Packets the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// CONNACK.
    ConnAck {
        /// Session present flag.
        session_present: bool,
        /// Result.
        code: ConnAckCode,
        /// MQTT 5 properties.
        info: ConnAckInfo,
    },
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK with an MQTT 5 reason code (3.1.1: reason is not sent).
    PubAck(u16, u8),
    /// PUBREC with reason.
    PubRec(u16, u8),
    /// MQTT 5 PUBACK (`pubrec` false) or PUBREC with a failure reason code and a Reason String
    /// property (3.1.1: the plain acknowledgement).
    FailedAck {
        /// PUBREC instead of PUBACK.
        pubrec: bool,
        /// Packet id.
        pkid: u16,
        /// Reason code (0x80 and up).
        reason: u8,
        /// Human-readable reason (property 0x1F).
        text: String,
    },
    /// PUBREL with reason.
    PubRel(u16, u8),
    /// PUBCOMP with reason.
    PubComp(u16, u8),
    /// SUBACK with one code per filter (3.1.1 codes 0,1,2,0x80 are the same numbers).
    SubAck(u16, Vec<u8>),
    /// UNSUBACK with MQTT 5 reason codes (3.1.1 sends none).
    UnsubAck(u16, Vec<u8>),
    /// PINGRESP.
    PingResp,
    /// MQTT 5 DISCONNECT with a reason (nothing is sent to 3.1.1 clients).
    Disconnect(u8),
}

fn put_remaining_length(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.put_u8(b);
        if len == 0 {
            break;
        }
    }
}

/// Bytes of a variable byte integer.
fn varint_len(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

fn ack(out: &mut BytesMut, byte1: u8, pkid: u16, reason: u8, version: Version) {
    out.put_u8(byte1);
    if version == Version::V5 && reason != 0 {
        out.put_u8(3);
        out.put_u16(pkid);
        out.put_u8(reason);
    } else {
        out.put_u8(2);
        out.put_u16(pkid);
    }
}

fn to_qos5(q: u8) -> QoS5 {
    match q {
        0 => QoS5::AtMostOnce,
        1 => QoS5::AtLeastOnce,
        _ => QoS5::ExactlyOnce,
    }
}

fn to_qos4(q: u8) -> QoS4 {
    match q {
        0 => QoS4::AtMostOnce,
        1 => QoS4::AtLeastOnce,
        _ => QoS4::ExactlyOnce,
    }
}

/// Appends the encoding of `packet` to `out`. Returns the encoded size (0 when nothing is sent
/// for this version, e.g. DISCONNECT to a 3.1.1 client).
pub fn encode(
    packet: &Outbound,
    version: Version,
    out: &mut BytesMut,
) -> Result<usize, CodecError> {
    let start = out.len();
    match packet {
        Outbound::ConnAck {
            session_present,
            code,
            info,
        } => match version {
            Version::V311 => {
                let c = match code {
                    ConnAckCode::Success => 0,
                    ConnAckCode::UnsupportedVersion => 1,
                    ConnAckCode::BadClientId => 2,
                    ConnAckCode::ServerUnavailable
                    | ConnAckCode::QuotaExceeded
                    | ConnAckCode::RateExceeded => 3,
                    ConnAckCode::BadCredentials => 4,
                    ConnAckCode::NotAuthorized | ConnAckCode::BadAuthMethod => 5,
                };
                out.put_slice(&[0x20, 2, *session_present as u8, c]);
            }
            Version::V5 => {
                use v5::ConnectReturnCode as C;
                let code = match code {
                    ConnAckCode::Success => C::Success,
                    ConnAckCode::UnsupportedVersion => C::UnsupportedProtocolVersion,
                    ConnAckCode::BadClientId => C::ClientIdentifierNotValid,
                    ConnAckCode::ServerUnavailable => C::ServerUnavailable,
                    ConnAckCode::QuotaExceeded => C::QuotaExceeded,
                    ConnAckCode::BadCredentials => C::BadUserNamePassword,
                    ConnAckCode::NotAuthorized => C::NotAuthorized,
                    ConnAckCode::BadAuthMethod => C::BadAuthenticationMethod,
                    ConnAckCode::RateExceeded => C::ConnectionRateExceeded,
                };
                let props = v5::ConnAckProperties {
                    session_expiry_interval: info.session_expiry,
                    receive_max: Some(info.receive_maximum),
                    max_qos: None,
                    retain_available: Some(1),
                    max_packet_size: Some(info.max_packet_size),
                    assigned_client_identifier: info.assigned_client_id.clone(),
                    topic_alias_max: Some(0),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: Some(1),
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: info.server_keep_alive,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                };
                v5::ConnAck {
                    session_present: *session_present,
                    code,
                    properties: Some(props),
                }
                .write(out)
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            }
        },
        Outbound::Publish(p) => match version {
            Version::V311 => {
                v4::Publish {
                    dup: p.dup,
                    qos: to_qos4(p.qos),
                    retain: p.retain,
                    topic: p.topic.clone(),
                    pkid: p.pkid,
                    payload: p.payload.clone(),
                }
                .write(out)
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            }
            Version::V5 => {
                let mp = &p.properties;
                let properties = (!mp.is_empty()).then(|| v5::PublishProperties {
                    payload_format_indicator: mp.payload_format_indicator,
                    message_expiry_interval: mp.message_expiry_interval,
                    topic_alias: None,
                    response_topic: mp.response_topic.clone(),
                    correlation_data: mp.correlation_data.clone().map(Bytes::from),
                    user_properties: mp.user_properties.clone(),
                    subscription_identifiers: Vec::new(),
                    content_type: mp.content_type.clone(),
                });
                v5::Publish {
                    dup: p.dup,
                    qos: to_qos5(p.qos),
                    retain: p.retain,
                    topic: Bytes::copy_from_slice(p.topic.as_bytes()),
                    pkid: p.pkid,
                    payload: p.payload.clone(),
                    properties,
                }
                .write(out)
                .map_err(|e| CodecError::Malformed(e.to_string()))?;
            }
        },
        Outbound::PubAck(id, r) => ack(out, 0x40, *id, *r, version),
        Outbound::PubRec(id, r) => ack(out, 0x50, *id, *r, version),
        Outbound::FailedAck {
            pubrec,
            pkid,
            reason,
            text,
        } => {
            let byte1 = if *pubrec { 0x50 } else { 0x40 };
            if version == Version::V5 {
                let props = 3 + text.len();
                out.put_u8(byte1);
                put_remaining_length(out, 3 + varint_len(props) + props);
                out.put_u16(*pkid);
                out.put_u8(*reason);
                put_remaining_length(out, props);
                out.put_u8(0x1F);
                out.put_u16(text.len() as u16);
                out.put_slice(text.as_bytes());
            } else {
                ack(out, byte1, *pkid, *reason, version);
            }
        }
        Outbound::PubRel(id, r) => ack(out, 0x62, *id, *r, version),
        Outbound::PubComp(id, r) => ack(out, 0x70, *id, *r, version),
        Outbound::SubAck(id, codes) => {
            out.put_u8(0x90);
            let props = usize::from(version == Version::V5);
            put_remaining_length(out, 2 + props + codes.len());
            out.put_u16(*id);
            if props == 1 {
                out.put_u8(0);
            }
            out.put_slice(codes);
        }
        Outbound::UnsubAck(id, codes) => {
            out.put_u8(0xB0);
            match version {
                Version::V311 => {
                    out.put_u8(2);
                    out.put_u16(*id);
                }
                Version::V5 => {
                    put_remaining_length(out, 3 + codes.len());
                    out.put_u16(*id);
                    out.put_u8(0);
                    out.put_slice(codes);
                }
            }
        }
        Outbound::PingResp => out.put_slice(&[0xD0, 0]),
        Outbound::Disconnect(reason) => {
            if version == Version::V5 {
                out.put_slice(&[0xE0, 1, *reason]);
            }
        }
    }
    Ok(out.len() - start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_bytes(version: u8, flags: u8) -> Vec<u8> {
        let mut v = vec![0x10, 0];
        v.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', version, flags, 0, 60]);
        if version == 5 {
            v.push(0); // properties
        }
        v.extend_from_slice(&[0, 2, b'c', b'1']);
        v[1] = (v.len() - 2) as u8;
        v
    }

    #[test]
    fn detects_version_and_decodes_connect() {
        for (level, version) in [(4u8, Version::V311), (5, Version::V5)] {
            let raw = connect_bytes(level, 0b10);
            for cut in 0..raw.len() {
                // Partial CONNECTs ask for more bytes, never fail.
                let v = peek_connect_version(&raw[..cut], 1024).unwrap();
                assert!(v.is_none() || v == Some(version));
            }
            assert_eq!(peek_connect_version(&raw, 1024).unwrap(), Some(version));
            let mut buf = BytesMut::from(&raw[..]);
            let c = decode_connect(&mut buf, version, 1024).unwrap().unwrap();
            assert_eq!(c.client_id, "c1");
            assert!(c.clean_start);
            assert_eq!(c.keep_alive, 60);
            assert!(buf.is_empty());
        }
        assert!(matches!(
            peek_connect_version(&connect_bytes(3, 0), 1024),
            Err(CodecError::UnsupportedVersion(3))
        ));
        assert!(matches!(
            peek_connect_version(&[0x30, 0], 1024),
            Err(CodecError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&connect_bytes(4, 0b11)[..]);
        assert!(matches!(
            decode_connect(&mut buf, Version::V311, 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn rejects_bad_flags_and_server_packets() {
        // PUBREL with flags 0 instead of 0b0010.
        let mut buf = BytesMut::from(&[0x60u8, 2, 0, 1][..]);
        assert!(matches!(
            decode(&mut buf, Version::V311, 1024),
            Err(CodecError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&[0xD0u8, 0][..]);
        assert!(matches!(
            decode(&mut buf, Version::V311, 1024),
            Err(CodecError::Protocol(_))
        ));
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0x7f][..]);
        assert!(matches!(
            decode(&mut buf, Version::V311, 1024),
            Err(CodecError::TooLarge(_))
        ));
        let mut buf = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(decode(&mut buf, Version::V311, usize::MAX).is_err());
    }

    #[test]
    fn v5_short_disconnect_and_publish() {
        let mut buf = BytesMut::from(&[0xE0u8, 0, 0xC0, 0][..]);
        assert_eq!(
            decode(&mut buf, Version::V5, 1024).unwrap(),
            Some(Inbound::Disconnect {
                reason: 0,
                session_expiry: None
            })
        );
        assert_eq!(
            decode(&mut buf, Version::V5, 1024).unwrap(),
            Some(Inbound::PingReq)
        );
        // PUBLISH QoS 1 topic "a/b" id 7 with content type "t" then payload "hi".
        let mut raw = vec![
            0x32, 0, 0, 3, b'a', b'/', b'b', 0, 7, 4, 0x03, 0, 1, b't', b'h', b'i',
        ];
        raw[1] = (raw.len() - 2) as u8;
        let mut buf = BytesMut::from(&raw[..]);
        let Some(Inbound::Publish(p)) = decode(&mut buf, Version::V5, 1024).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(
            (p.topic.as_str(), p.qos, p.pkid, &p.payload[..]),
            ("a/b", 1, 7, &b"hi"[..])
        );
        assert_eq!(p.properties.content_type.as_deref(), Some("t"));
    }

    #[test]
    fn encodes_acks_for_both_versions() {
        let mut out = BytesMut::new();
        encode(&Outbound::PubAck(5, 0), Version::V5, &mut out).unwrap();
        encode(&Outbound::PubAck(5, 0x87), Version::V5, &mut out).unwrap();
        encode(&Outbound::PubAck(5, 0x87), Version::V311, &mut out).unwrap();
        encode(&Outbound::SubAck(9, vec![1, 0x80]), Version::V5, &mut out).unwrap();
        encode(&Outbound::SubAck(9, vec![1, 0x80]), Version::V311, &mut out).unwrap();
        assert_eq!(
            encode(&Outbound::Disconnect(0x8E), Version::V311, &mut out).unwrap(),
            0
        );
        assert_eq!(
            &out[..],
            &[
                0x40, 2, 0, 5, 0x40, 3, 0, 5, 0x87, 0x40, 2, 0, 5, 0x90, 5, 0, 9, 0, 1, 0x80, 0x90,
                4, 0, 9, 1, 0x80
            ][..]
        );
    }

    #[test]
    fn failed_acks_carry_a_reason_string_rumqttc_parses() {
        for pubrec in [false, true] {
            let mut out = BytesMut::new();
            let text = "0 of 1 replicas reached position 64".to_string();
            let a = Outbound::FailedAck {
                pubrec,
                pkid: 7,
                reason: 0x80,
                text: text.clone(),
            };
            encode(&a, Version::V5, &mut out).unwrap();
            match v5::Packet::read(&mut out, Some(1024)).unwrap() {
                v5::Packet::PubAck(p) if !pubrec => {
                    assert_eq!((p.pkid, p.reason), (7, v5::PubAckReason::UnspecifiedError));
                    let props = p.properties.expect("properties");
                    assert_eq!(props.reason_string.as_deref(), Some(text.as_str()));
                }
                v5::Packet::PubRec(p) if pubrec => {
                    assert_eq!((p.pkid, p.reason), (7, v5::PubRecReason::UnspecifiedError));
                    let props = p.properties.expect("properties");
                    assert_eq!(props.reason_string.as_deref(), Some(text.as_str()));
                }
                other => panic!("{other:?}"),
            }
            assert!(out.is_empty());
            // 3.1.1 has no negative acknowledgement: the plain one.
            encode(&a, Version::V311, &mut out).unwrap();
            assert_eq!(&out[..], &[if pubrec { 0x50 } else { 0x40 }, 2, 0, 7][..]);
        }
    }

    #[test]
    fn publish_round_trips_through_the_parser() {
        for version in [Version::V311, Version::V5] {
            let p = Publish {
                topic: "x/y".into(),
                qos: 2,
                retain: true,
                dup: false,
                pkid: 300,
                payload: Bytes::from_static(b"\x00\xffbin"),
                properties: if version == Version::V5 {
                    MessageProperties {
                        user_properties: vec![("k".into(), "v".into())],
                        ..Default::default()
                    }
                } else {
                    MessageProperties::default()
                },
                topic_alias: None,
            };
            let mut out = BytesMut::new();
            encode(&Outbound::Publish(p.clone()), version, &mut out).unwrap();
            let back = decode(&mut out, version, 1024).unwrap();
            assert_eq!(back, Some(Inbound::Publish(p)));
        }
    }
}
