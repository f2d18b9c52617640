//! Feeds arbitrary bytes to the packet decoder (with and without a key), the stream-framing peek
//! and the frame splitter a receiver runs on DATA bodies. Any panic is a bug.
//!
//! Each input is tried twice: as raw bytes, and behind a well-formed header built from its first
//! two bytes (type and flags), so the fuzzer reaches the body decoders without guessing magic
//! and lengths first.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringway_transport::auth::AuthKey;
use ringway_transport::frame::for_each_frame;
use ringway_transport::wire::{decode, encode, peek_packet_len, Packet, MAGIC, VERSION};

fn check(data: &[u8], key: &AuthKey) {
    let _ = peek_packet_len(data);
    let _ = decode(data, Some(key));
    if let Ok((session, packet)) = decode(data, None) {
        if let Packet::Data(d) = &packet {
            let _ = for_each_frame(d.position, d.bytes, 1 << 16, |_, _| {});
        }
        // Whatever decodes must re-encode to the same bytes.
        let mut out = Vec::new();
        encode(&packet, session, None, &mut out).expect("decoded packet re-encodes");
        assert_eq!(out, data);
    }
}

fuzz_target!(|data: &[u8]| {
    let key = AuthKey::new(b"fuzz");
    check(data, &key);
    if data.len() >= 2 {
        let body = &data[2..];
        let mut pkt = Vec::with_capacity(16 + body.len());
        pkt.extend_from_slice(&MAGIC.to_le_bytes());
        pkt.push(VERSION);
        pkt.push(data[0] % 9);
        pkt.extend_from_slice(&u16::from(data[1] & 2).to_le_bytes());
        pkt.extend_from_slice(&[0, 0]);
        pkt.extend_from_slice(&7u32.to_le_bytes());
        pkt.extend_from_slice(&(body.len() as u32).to_le_bytes());
        pkt.extend_from_slice(body);
        check(&pkt, &key);
    }
});
