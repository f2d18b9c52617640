//! Feeds arbitrary bytes to the packet decoder (with and without a key), the stream-framing peek
//! and the frame splitter a receiver runs on DATA bodies. Any panic is a bug.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_transport::auth::AuthKey;
use ringway_transport::frame::for_each_frame;
use ringway_transport::wire::{decode, encode, peek_packet_len, Packet};

fuzz_target!(|data: &[u8]| {
    let _ = peek_packet_len(data);
    let key = AuthKey::new(b"fuzz");
    let _ = decode(data, Some(&key));
    if let Ok((session, packet)) = decode(data, None) {
        if let Packet::Data(d) = &packet {
            let _ = for_each_frame(d.position, d.bytes, 1 << 16, |_, _| {});
        }
        // Whatever decodes must re-encode to the same bytes.
        let mut out = Vec::new();
        encode(&packet, session, None, &mut out).expect("decoded packet re-encodes");
        assert_eq!(out, data);
    }
});
