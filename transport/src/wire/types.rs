//! Packet types, constants and the decoder's error type.

use thiserror::Error;

/// First two bytes of every packet (`R`, `W` on the wire).
pub const MAGIC: u16 = 0x5752;
/// Protocol version carried in byte 2 (2: NAK names its receiver, for multicast).
pub const VERSION: u8 = 2;
/// Size of the common header.
pub const HEADER_LEN: usize = 16;
/// Size of the truncated HMAC-SHA256 tag appended when [`FLAG_MAC`] is set.
pub const MAC_LEN: usize = 16;
/// Header flag: a [`MAC_LEN`]-byte tag follows the body.
pub const FLAG_MAC: u16 = 1 << 0;
/// Header flag (DATA only): the packet carries one fragment of a frame too large for one packet.
pub const FLAG_FRAGMENT: u16 = 1 << 1;
/// Flags a decoder accepts; any other bit is an error.
pub const KNOWN_FLAGS: u16 = FLAG_MAC | FLAG_FRAGMENT;
/// Largest body the decoder accepts (TCP framing may batch more than one datagram's worth).
pub const MAX_BODY_LEN: usize = 1 << 20;
/// Fixed part of a DATA body before the frame bytes.
pub const DATA_FIXED_LEN: usize = 16;
/// Fixed part of a SETUP body before the stream name.
pub const SETUP_FIXED_LEN: usize = 36;
/// Most ranges one NAK may carry.
pub const MAX_NAK_RANGES: usize = 32;
/// Longest stream name carried in SETUP.
pub const MAX_NAME_LEN: usize = 255;

/// Packet type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PacketType {
    /// Sender → receiver: open or refresh a session.
    Setup = 1,
    /// Receiver → sender: accepts a session and names the resume position.
    SetupAck = 2,
    /// Sender → receiver: frames (or one fragment of a frame) at a stream position.
    Data = 3,
    /// Receiver → sender: ranges of positions missing at the receiver.
    Nak = 4,
    /// Receiver → sender: consumed position and window (flow control, acknowledgements).
    Status = 5,
    /// Sender → receiver: where the sender's tail is, sent when idle.
    Heartbeat = 6,
    /// Either side: the session ends.
    Close = 7,
    /// Either side: a session-level error the peer must react to.
    Error = 8,
}

impl PacketType {
    /// Parses a type byte.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Setup,
            2 => Self::SetupAck,
            3 => Self::Data,
            4 => Self::Nak,
            5 => Self::Status,
            6 => Self::Heartbeat,
            7 => Self::Close,
            8 => Self::Error,
            _ => return None,
        })
    }
}

/// SETUP body: everything the receiver needs to create or check its replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup<'a> {
    /// Random value echoed in the SETUP_ACK, binding the answer to this request.
    pub nonce: u64,
    /// Oldest position the sender still retains (and can retransmit).
    pub oldest: u64,
    /// The sender's current tail position.
    pub tail: u64,
    /// Segment size of the primary stream (the replica must use the same).
    pub segment_size: u32,
    /// Maximum payload size of the primary stream.
    pub max_message_size: u32,
    /// Largest datagram the sender will send.
    pub mtu: u16,
    /// Stream flags: bit 0 = frames carry CRC32C.
    pub stream_flags: u8,
    /// Name of the primary stream (1..=255 bytes of `[A-Za-z0-9._-]`).
    pub name: &'a str,
}

/// SETUP_ACK body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetupAck {
    /// The nonce of the SETUP being answered.
    pub nonce: u64,
    /// Identity of the receiver (stable for the receiver's lifetime).
    pub receiver_id: u64,
    /// Position from which the receiver needs data: its replica's next position.
    pub resume: u64,
    /// Receiver window in bytes: the sender sends no frame starting at or beyond `resume + window`.
    pub window: u32,
}

/// DATA body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Data<'a> {
    /// Stream position of the first frame carried (of the fragmented frame for fragments).
    pub position: u64,
    /// Fragment: offset of `bytes` inside the frame; zero for whole frames.
    pub frag_offset: u32,
    /// Fragment: total length of the frame; zero for whole frames.
    pub frame_len: u32,
    /// Whole frames back to back (each sized by its own length word), or one fragment.
    pub bytes: &'a [u8],
    /// Whether the packet carried [`FLAG_FRAGMENT`].
    pub fragment: bool,
}

/// One missing range `[start, end)` of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NakRange {
    /// First missing position.
    pub start: u64,
    /// First position after the gap.
    pub end: u64,
}

/// NAK body: the receiver asking and up to [`MAX_NAK_RANGES`] ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nak {
    /// Identity of the receiver (as in its STATUS): a multicast sender answers it alone, or
    /// the whole group when several receivers miss the same range.
    pub receiver_id: u64,
    /// Missing ranges in ascending order.
    pub ranges: Vec<NakRange>,
}

/// STATUS body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Identity of the receiver.
    pub receiver_id: u64,
    /// Everything before this position is in the replica.
    pub position: u64,
    /// End of the highest frame seen (gaps lie between `position` and this).
    pub highest: u64,
    /// Receiver window in bytes from `position`.
    pub window: u32,
}

/// HEARTBEAT body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// End of what the sender has sent so far.
    pub tail: u64,
    /// Sender clock, nanoseconds since the Unix epoch (informational).
    pub timestamp_ns: u64,
}

/// CLOSE body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// Reason code (0 = normal shutdown).
    pub reason: u32,
}

/// ERROR codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The receiver has no session with this id (the sender should set up again).
    UnknownSession = 1,
    /// The position the receiver needs is no longer retained (`a` = requested, `b` = oldest).
    Lapped = 2,
    /// The replica's geometry differs from the primary (`a` = replica segment size, `b` = primary's).
    GeometryMismatch = 3,
    /// The receiver cannot open or write its replica.
    ReplicaUnavailable = 4,
}

impl ErrorCode {
    /// Parses a code.
    pub fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::UnknownSession,
            2 => Self::Lapped,
            3 => Self::GeometryMismatch,
            4 => Self::ReplicaUnavailable,
            _ => return None,
        })
    }
}

/// ERROR body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorPacket {
    /// What went wrong.
    pub code: ErrorCode,
    /// First code-specific value.
    pub a: u64,
    /// Second code-specific value.
    pub b: u64,
}

/// A decoded packet body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// See [`Setup`].
    Setup(Setup<'a>),
    /// See [`SetupAck`].
    SetupAck(SetupAck),
    /// See [`Data`].
    Data(Data<'a>),
    /// See [`Nak`].
    Nak(Nak),
    /// See [`Status`].
    Status(Status),
    /// See [`Heartbeat`].
    Heartbeat(Heartbeat),
    /// See [`Close`].
    Close(Close),
    /// See [`ErrorPacket`].
    Error(ErrorPacket),
}

impl Packet<'_> {
    /// The type byte of this packet.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Setup(_) => PacketType::Setup,
            Packet::SetupAck(_) => PacketType::SetupAck,
            Packet::Data(_) => PacketType::Data,
            Packet::Nak(_) => PacketType::Nak,
            Packet::Status(_) => PacketType::Status,
            Packet::Heartbeat(_) => PacketType::Heartbeat,
            Packet::Close(_) => PacketType::Close,
            Packet::Error(_) => PacketType::Error,
        }
    }
}

/// Why a packet was rejected by the decoder (or could not be encoded).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// Fewer bytes than the header or the declared body.
    #[error("truncated packet: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes required.
        need: usize,
        /// Bytes present.
        have: usize,
    },
    /// More bytes than header + body (+ tag) in a datagram.
    #[error("packet has {extra} trailing bytes")]
    TrailingBytes {
        /// Bytes beyond the declared length.
        extra: usize,
    },
    /// Not a Ringway packet.
    #[error("bad magic {0:#06x}")]
    BadMagic(u16),
    /// A protocol version this build does not speak.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u8),
    /// Unknown packet type byte.
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    /// Flag bits this version does not define, or a flag not allowed on this type.
    #[error("bad flags {0:#06x}")]
    BadFlags(u16),
    /// Reserved field not zero.
    #[error("reserved field not zero")]
    Reserved,
    /// Declared body length larger than [`MAX_BODY_LEN`].
    #[error("body length {0} exceeds the maximum")]
    BodyTooLong(usize),
    /// Body length wrong for the packet type.
    #[error("bad body length {len} for {ty:?}")]
    BadBodyLength {
        /// Packet type.
        ty: PacketType,
        /// Declared length.
        len: usize,
    },
    /// Stream name empty, too long or with characters outside `[A-Za-z0-9._-]`.
    #[error("bad stream name")]
    BadName,
    /// A field value outside its domain (zero segment size, inverted NAK range, ...).
    #[error("bad field: {0}")]
    BadField(&'static str),
    /// Unknown ERROR code.
    #[error("unknown error code {0}")]
    UnknownErrorCode(u16),
    /// A key is configured but the packet carries no tag.
    #[error("packet is not authenticated")]
    MissingMac,
    /// The packet carries a tag but no key is configured.
    #[error("packet carries a MAC but no key is configured")]
    UnexpectedMac,
    /// Tag does not match.
    #[error("bad MAC")]
    BadMac,
}

/// Checks a stream name as carried in SETUP.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        && name != "."
        && name != ".."
}
