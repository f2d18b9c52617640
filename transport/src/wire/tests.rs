use super::*;
use crate::auth::AuthKey;

fn samples() -> Vec<Packet<'static>> {
    vec![
        Packet::Setup(Setup {
            nonce: 0x1122334455667788,
            oldest: 0,
            tail: 4096,
            segment_size: 1 << 20,
            max_message_size: 65536,
            mtu: 1408,
            stream_flags: 1,
            name: "orders.eu-1",
        }),
        Packet::SetupAck(SetupAck {
            nonce: 7,
            receiver_id: 9,
            resume: 128,
            window: 1 << 22,
        }),
        Packet::Data(Data {
            position: 64,
            frag_offset: 0,
            frame_len: 0,
            bytes: b"0123456789abcdef0123456789abcdef",
            fragment: false,
        }),
        Packet::Data(Data {
            position: 64,
            frag_offset: 1000,
            frame_len: 3000,
            bytes: &[5u8; 100],
            fragment: true,
        }),
        Packet::Nak(Nak {
            receiver_id: 0x1234_5678_9abc_def1,
            ranges: vec![
                NakRange { start: 8, end: 64 },
                NakRange {
                    start: 128,
                    end: 4096,
                },
            ],
        }),
        Packet::Status(Status {
            receiver_id: 3,
            position: 4096,
            highest: 8192,
            window: 65536,
        }),
        Packet::Heartbeat(Heartbeat {
            tail: 99 * 8,
            timestamp_ns: 12345,
        }),
        Packet::Close(Close { reason: 0 }),
        Packet::Error(ErrorPacket {
            code: ErrorCode::Lapped,
            a: 8,
            b: 4096,
        }),
    ]
}

#[test]
fn every_packet_type_round_trips() {
    for key in [None, Some(AuthKey::new(b"secret"))] {
        for p in samples() {
            let mut buf = Vec::new();
            encode(&p, 0xdead_beef, key.as_ref(), &mut buf).unwrap();
            let (session, q) = decode(&buf, key.as_ref()).unwrap();
            assert_eq!(session, 0xdead_beef);
            assert_eq!(p, q);
            assert_eq!(peek_packet_len(&buf).unwrap(), Some(buf.len()));
        }
    }
}

#[test]
fn every_truncation_and_extension_is_a_typed_error() {
    for p in samples() {
        let mut buf = Vec::new();
        encode(&p, 1, None, &mut buf).unwrap();
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], None).is_err(), "{p:?} cut at {cut}");
        }
        let mut longer = buf.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer, None),
            Err(WireError::TrailingBytes { extra: 1 })
        );
    }
}

#[test]
fn header_fields_are_checked() {
    let mut buf = Vec::new();
    encode(&samples()[6], 1, None, &mut buf).unwrap();
    let mut b = buf.clone();
    b[0] ^= 1;
    assert!(matches!(decode(&b, None), Err(WireError::BadMagic(_))));
    let mut b = buf.clone();
    b[2] = 1;
    assert_eq!(decode(&b, None), Err(WireError::UnsupportedVersion(1)));
    let mut b = buf.clone();
    b[3] = 99;
    assert_eq!(decode(&b, None), Err(WireError::UnknownType(99)));
    let mut b = buf.clone();
    b[4] = 0x80;
    assert_eq!(decode(&b, None), Err(WireError::BadFlags(0x80)));
    let mut b = buf.clone();
    b[4] = FLAG_FRAGMENT as u8; // fragment flag on a heartbeat
    assert!(matches!(decode(&b, None), Err(WireError::BadFlags(_))));
    let mut b = buf.clone();
    b[6] = 1;
    assert_eq!(decode(&b, None), Err(WireError::Reserved));
    let mut b = buf.clone();
    b[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode(&b, None), Err(WireError::BodyTooLong(_))));
}

#[test]
fn bodies_with_bad_values_are_rejected() {
    let enc = |p: &Packet<'_>| {
        let mut b = Vec::new();
        encode(p, 1, None, &mut b).unwrap();
        b
    };
    // Inverted NAK range, written by hand since the encoder refuses it.
    let mut b = enc(&samples()[4]);
    b[HEADER_LEN + 16..HEADER_LEN + 24].copy_from_slice(&100u64.to_le_bytes());
    assert_eq!(decode(&b, None), Err(WireError::BadField("nak range")));
    // Stream name with a slash.
    let mut b = enc(&samples()[0]);
    let n = b.len();
    b[n - 1] = b'/';
    assert_eq!(decode(&b, None), Err(WireError::BadName));
    // Segment size not a power of two.
    let mut b = enc(&samples()[0]);
    b[HEADER_LEN + 24..HEADER_LEN + 28].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(decode(&b, None), Err(WireError::BadField("segment_size")));
    // Fragment extending past its frame.
    let mut b = enc(&samples()[3]);
    b[HEADER_LEN + 12..HEADER_LEN + 16].copy_from_slice(&1050u32.to_le_bytes());
    assert_eq!(
        decode(&b, None),
        Err(WireError::BadField("fragment outside frame"))
    );
    // Unaligned data position.
    let mut b = enc(&samples()[2]);
    b[HEADER_LEN] = 3;
    assert_eq!(
        decode(&b, None),
        Err(WireError::BadField("unaligned position"))
    );
    // Unknown error code.
    let mut b = enc(&samples()[8]);
    b[HEADER_LEN] = 77;
    assert_eq!(decode(&b, None), Err(WireError::UnknownErrorCode(77)));
    // Encoder refuses what the decoder would refuse.
    let bad = Packet::Nak(Nak {
        receiver_id: 1,
        ranges: vec![],
    });
    let mut out = vec![1, 2, 3];
    assert!(encode(&bad, 1, None, &mut out).is_err());
    assert_eq!(
        out,
        vec![1, 2, 3],
        "a failed encode leaves the buffer as it was"
    );
}

#[test]
fn mac_is_required_checked_and_bound_to_every_byte() {
    let key = AuthKey::new(b"k1");
    let other = AuthKey::new(b"k2");
    let mut buf = Vec::new();
    encode(&samples()[5], 5, Some(&key), &mut buf).unwrap();
    assert!(decode(&buf, Some(&key)).is_ok());
    assert_eq!(decode(&buf, Some(&other)), Err(WireError::BadMac));
    assert_eq!(decode(&buf, None), Err(WireError::UnexpectedMac));
    for i in 0..buf.len() {
        if (4..6).contains(&i) {
            continue; // flipping flag bits gives BadFlags/MissingMac instead
        }
        let mut b = buf.clone();
        b[i] ^= 0x10;
        assert!(decode(&b, Some(&key)).is_err(), "byte {i} not covered");
    }
    let mut plain = Vec::new();
    encode(&samples()[5], 5, None, &mut plain).unwrap();
    assert_eq!(decode(&plain, Some(&key)), Err(WireError::MissingMac));
}

#[test]
fn data_builder_matches_encode() {
    let f1 = crate::frame::make_commit_word(40, crate::frame::STATE_DATA, 1).to_le_bytes();
    let mut raw1 = vec![0u8; 40];
    raw1[..8].copy_from_slice(&f1);
    let mut out = Vec::new();
    let mut b = DataPacketBuilder::begin(&mut out, 42, 128);
    b.push_frame(&mut out, &raw1);
    b.push_frame(&mut out, &raw1);
    assert_eq!(b.next_position(), 128 + 40 + 40);
    b.finish(&mut out, None);
    let (s, p) = decode(&out, None).unwrap();
    assert_eq!(s, 42);
    let Packet::Data(d) = p else { panic!() };
    assert_eq!(d.position, 128);
    assert_eq!(d.bytes.len(), 80);
    let mut seen = vec![];
    crate::frame::for_each_frame(d.position, d.bytes, 1 << 20, |p, r| seen.push((p, r.len())))
        .unwrap();
    assert_eq!(seen, vec![(128, 40), (168, 40)]);
}

#[test]
fn pseudo_random_garbage_never_panics() {
    // Deterministic xorshift so a failure reproduces.
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let base: Vec<Vec<u8>> = samples()
        .iter()
        .map(|p| {
            let mut b = Vec::new();
            encode(p, 1, None, &mut b).unwrap();
            b
        })
        .collect();
    let key = AuthKey::new(b"x");
    for i in 0..200_000 {
        let mut b = base[i % base.len()].clone();
        let flips = 1 + next() % 4;
        for _ in 0..flips {
            let at = (next() as usize) % b.len();
            b[at] = next() as u8;
        }
        if next() % 8 == 0 {
            let cut = (next() as usize) % (b.len() + 1);
            b.truncate(cut);
        }
        let _ = decode(&b, None);
        let _ = decode(&b, Some(&key));
        let _ = peek_packet_len(&b);
        if let Ok((_, Packet::Data(d))) = decode(&b, None) {
            let _ = crate::frame::for_each_frame(d.position, d.bytes, 4096, |_, _| {});
        }
    }
}
