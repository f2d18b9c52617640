//! Arbitrary bytes from a client, through the packet decoder and the store path, into journal
//! frames (in-memory journal): nothing may panic, and every stored frame must decode back to the
//! topic, QoS and payload of the PUBLISH it came from.
//!
//! Input: byte 0 picks the protocol version (even: 3.1.1, odd: 5); the rest is the byte stream a
//! client sends after CONNECT. Also checks that meta decoding of arbitrary bytes never panics.
#![no_main]

use std::sync::Arc;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ringway_mqtt_gateway::auth::{AuthOutcome, Authenticator};
use ringway_mqtt_gateway::broker::{Broker, StoreOutcome};
use ringway_mqtt_gateway::codec::{self, Inbound, Version};
use ringway_mqtt_gateway::journal::{Journal, ReadFrom};
use ringway_mqtt_gateway::metrics::Metrics;
use ringway_mqtt_gateway::{Config, MemoryJournal, MqttMeta};

fuzz_target!(|data: &[u8]| {
    let _ = MqttMeta::decode(data);
    let _ = codec::peek_connect_version(data, 1 << 16);
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let version = if selector & 1 == 0 {
        Version::V311
    } else {
        Version::V5
    };
    let mut connect_buf = BytesMut::from(rest);
    let _ = codec::decode_connect(&mut connect_buf, version, 1 << 16);

    let journal = Arc::new(MemoryJournal::new(1 << 20, 1 << 16));
    let config = Config::default();
    let identity = match Authenticator::new(&config.auth).check("fuzz", None, b"") {
        AuthOutcome::Accepted(id) => id,
        other => panic!("anonymous refused: {other:?}"),
    };
    let broker = Broker::new(config, journal.clone(), Arc::new(Metrics::default()));
    let mut buf = BytesMut::from(rest);
    let mut expected = Vec::new();
    while let Ok(Some(packet)) = codec::decode(&mut buf, version, 1 << 16) {
        if let Inbound::Publish(p) = packet {
            if !ringway_mqtt_gateway::topic::valid_topic_name(&p.topic) {
                continue;
            }
            if let StoreOutcome::Stored(_) =
                broker.store("fuzz", &identity, &p, version == Version::V5, false)
            {
                expected.push((p.topic.clone(), p.qos, p.payload.to_vec()));
            }
        }
    }
    let mut reader = journal.reader("mqtt", ReadFrom::Beginning).unwrap();
    let mut got = Vec::new();
    reader
        .poll(usize::MAX, &mut |r| {
            let m = MqttMeta::decode(r.meta).expect("stored meta decodes");
            got.push((m.topic, m.qos, r.payload.to_vec()));
        })
        .unwrap();
    assert_eq!(got, expected);
});
