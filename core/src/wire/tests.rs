//! Tests of the wire codec: round trips, aligned zero-copy access, and rejection of bad bytes.

use super::*;

fn sample() -> Telemetry {
    Telemetry::with_readings(
        DeviceId(0x0123_4567_89ab_cdef),
        7,
        41,
        123_456,
        &[
            Reading::new(0, Quantity::Temperature, 21.5),
            Reading::new(1, Quantity::Humidity, 48.25),
            Reading::new(2, Quantity::Voltage, 3.3),
        ],
    )
    .unwrap()
}

fn offset_of<T, F>(base: &T, field: &F) -> usize {
    field as *const F as usize - base as *const T as usize
}

#[test]
fn telemetry_round_trips_through_an_aligned_buffer() {
    let value = sample();
    let mut out = WireBuf::<256>::new();
    let bytes = encode_telemetry(&value, &mut out).unwrap();
    assert_eq!(bytes.len(), TELEMETRY_WIRE_SIZE);
    assert_eq!(bytes.as_ptr() as usize % WIRE_ALIGN, 0);

    let archived = access_telemetry(bytes).unwrap();
    assert_eq!(archived.device_id(), 0x0123_4567_89ab_cdef);
    assert_eq!(archived.boot_id(), 7);
    assert_eq!(archived.seq(), 41);
    assert_eq!(archived.uptime_ms(), 123_456);
    let readings = archived.readings();
    assert_eq!(readings.len(), 3);
    assert_eq!(readings[1].channel(), 1);
    assert_eq!(readings[1].quantity, ArchivedQuantity::Humidity);
    assert_eq!(readings[1].value(), 48.25);
    assert_eq!(readings[2].value(), 3.3);
}

#[test]
fn telemetry_read_from_a_copy_at_another_aligned_address() {
    // The gateway copies the payload into a journal frame: any 8-aligned address must work.
    let value = sample();
    let mut out = WireBuf::<256>::new();
    let bytes = encode_telemetry(&value, &mut out).unwrap().to_vec();
    let mut frame = WireBuf::<512>::new();
    frame.0[64..64 + bytes.len()].copy_from_slice(&bytes);
    let archived = access_telemetry(&frame.0[64..64 + bytes.len()]).unwrap();
    assert_eq!(archived.seq(), 41);
    let back: Telemetry = rkyv::deserialize::<Telemetry, rkyv::rancor::Error>(archived).unwrap();
    assert_eq!(back, value);
}

#[test]
fn misaligned_input_is_rejected() {
    let mut out = WireBuf::<256>::new();
    let bytes = encode_telemetry(&sample(), &mut out).unwrap().to_vec();
    let mut frame = WireBuf::<512>::new();
    frame.0[3..3 + bytes.len()].copy_from_slice(&bytes);
    assert_eq!(
        access_telemetry(&frame.0[3..3 + bytes.len()]).unwrap_err(),
        WireError::Misaligned { offset: 3 }
    );
}

#[test]
fn truncated_and_overlong_input_is_rejected() {
    let mut out = WireBuf::<256>::new();
    let n = encode_telemetry(&sample(), &mut out).unwrap().len();
    assert!(matches!(
        access_telemetry(&out.0[..n - 1]),
        Err(WireError::WrongLength { .. })
    ));
    assert!(matches!(
        access_telemetry(&out.0[..n + 8]),
        Err(WireError::WrongLength { .. })
    ));
    assert!(matches!(
        access_telemetry(&[]),
        Err(WireError::WrongLength { .. })
    ));
}

#[test]
fn bad_enum_tag_is_rejected() {
    let mut out = WireBuf::<256>::new();
    let n = encode_telemetry(&sample(), &mut out).unwrap().len();
    let at = {
        let archived = access_telemetry(&out.0[..n]).unwrap();
        offset_of(archived, &archived.readings()[0].quantity)
    };
    out.0[at] = 0xee;
    assert_eq!(
        access_telemetry(&out.0[..n]).unwrap_err(),
        WireError::Invalid
    );
}

#[test]
fn reading_count_beyond_capacity_is_rejected() {
    let mut out = WireBuf::<256>::new();
    let n = encode_telemetry(&sample(), &mut out).unwrap().len();
    let at = {
        let archived = access_telemetry(&out.0[..n]).unwrap();
        offset_of(archived, archived.len_field())
    };
    out.0[at] = (MAX_READINGS + 1) as u8;
    assert_eq!(
        access_telemetry(&out.0[..n]).unwrap_err(),
        WireError::Invalid
    );
    out.0[at] = MAX_READINGS as u8;
    assert_eq!(
        access_telemetry(&out.0[..n]).unwrap().readings().len(),
        MAX_READINGS
    );
}

#[test]
fn every_single_byte_corruption_is_handled_without_panic() {
    let mut clean = WireBuf::<256>::new();
    let n = encode_telemetry(&sample(), &mut clean).unwrap().len();
    let mut rejected = 0;
    for i in 0..n {
        for v in [0x00u8, 0xff, 0x80, 0x07] {
            let mut buf = clean.clone();
            buf.0[i] = v;
            if access_telemetry(&buf.0[..n]).is_err() {
                rejected += 1;
            }
        }
    }
    // Enum tags and the length byte are checked, so some corruptions must be caught.
    assert!(rejected > 0);
}

#[test]
fn encode_into_a_small_buffer_fails_cleanly() {
    let mut out = WireBuf::<16>::new();
    assert_eq!(
        encode_telemetry(&sample(), &mut out).unwrap_err(),
        WireError::BufferTooSmall {
            needed: TELEMETRY_WIRE_SIZE,
            available: 16
        }
    );
}

#[test]
fn too_many_readings_is_a_typed_error() {
    let mut t = Telemetry::new(DeviceId(1), 0, 0, 0);
    for i in 0..MAX_READINGS {
        t.push(Reading::new(i as u16, Quantity::Count, i as f32))
            .unwrap();
    }
    assert_eq!(
        t.push(Reading::new(99, Quantity::Count, 0.0)),
        Err(WireError::TooManyReadings)
    );
    assert_eq!(t.readings().len(), MAX_READINGS);
}

#[test]
fn command_round_trips_and_decodes_from_unaligned_bytes() {
    let cmd = Command {
        device_id: DeviceId(42),
        command_id: 9,
        action: Action::SetOutput {
            channel: 3,
            value: 0.5,
        },
    };
    let mut out = WireBuf::<128>::new();
    let bytes = encode_command(&cmd, &mut out).unwrap();
    assert_eq!(bytes.len(), COMMAND_WIRE_SIZE);
    let archived = access_command(bytes).unwrap();
    assert_eq!(archived.command_id(), 9);
    match &archived.action {
        ArchivedAction::SetOutput { channel, value } => {
            assert_eq!(channel.to_native(), 3);
            assert_eq!(value.to_native(), 0.5);
        }
        other => panic!("unexpected action {other:?}"),
    }
    let mut shifted = [0u8; 128];
    shifted[1..1 + bytes.len()].copy_from_slice(bytes);
    assert_eq!(decode_command(&shifted[1..1 + bytes.len()]).unwrap(), cmd);
}

#[test]
fn corrupt_command_is_rejected() {
    let cmd = Command {
        device_id: DeviceId(42),
        command_id: 9,
        action: Action::Reboot,
    };
    let mut out = WireBuf::<128>::new();
    let n = encode_command(&cmd, &mut out).unwrap().len();
    let at = {
        let archived = access_command(&out.0[..n]).unwrap();
        offset_of(archived, &archived.action)
    };
    out.0[at] = 0x7f;
    assert_eq!(access_command(&out.0[..n]).unwrap_err(), WireError::Invalid);
    assert_eq!(decode_command(&out.0[..n]).unwrap_err(), WireError::Invalid);
    assert!(matches!(
        decode_command(&out.0[..n - 1]),
        Err(WireError::WrongLength { .. })
    ));
}

#[test]
fn encoded_layout_is_stable() {
    // Device and host must agree byte for byte; this pins the format of a known value.
    let mut out = WireBuf::<256>::new();
    let bytes = encode_telemetry(&sample(), &mut out).unwrap();
    assert_eq!(TELEMETRY_WIRE_SIZE, 104);
    assert_eq!(&bytes[..8], &0x0123_4567_89ab_cdef_u64.to_le_bytes());
    assert_eq!(&bytes[8..12], &7u32.to_le_bytes());
    assert_eq!(&bytes[16..24], &41u64.to_le_bytes());
    assert_eq!(&bytes[24..32], &123_456u64.to_le_bytes());
    assert_eq!(bytes[32], 3);
}
