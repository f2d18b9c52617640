//! Readers of CRC streams check each frame's CRC32C.

use ringway_core::frame::FrameError;
use ringway_core::{Error, Start, Stream, StreamConfig};

#[test]
fn a_flipped_payload_byte_is_reported_by_readers_of_crc_streams() {
    let d = tempfile::tempdir().unwrap();
    let s = Stream::create(
        d.path(),
        "c",
        &StreamConfig::default().segment_size(1 << 16).crc(true),
    )
    .unwrap();
    let mut w = s.writer().unwrap();
    w.append(b"first").unwrap();
    let second = w.append(b"second").unwrap();
    let seg = d.path().join("c").join("00000000000000000000.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[second.get() as usize + 33] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();

    let mut r = s.reader(Start::Beginning).unwrap();
    let mut seen = Vec::new();
    let err = r.poll(10, |f| seen.push(f.payload().to_vec())).unwrap_err();
    assert_eq!(seen, vec![b"first".to_vec()]);
    match err {
        Error::CorruptFrame {
            position,
            reason: FrameError::CrcMismatch { .. },
        } => assert_eq!(position, second),
        other => panic!("expected a CRC mismatch, got {other}"),
    }
    // An explicit opt-out reads the damaged bytes as they are.
    let mut r = s.reader(Start::Beginning).unwrap();
    r.set_crc_check(false);
    assert_eq!(r.poll(10, |_| {}).unwrap(), 2);
}
