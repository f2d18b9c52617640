//! End-to-end tests: rumqttc clients (3.1.1 and 5) and raw sockets against an in-process gateway
//! on a loopback ephemeral port, over real ringway-core streams in a temporary directory.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use ringway_core::{AppendOptions, Stream};
use ringway_mqtt_gateway::config::{Acl, RouteConfig, UserConfig};
use ringway_mqtt_gateway::MqttMeta;
use rumqttc::{Event, Packet, QoS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos_0_1_2_are_stored_with_their_envelope_and_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut sub = client4(addr, "sub", true).await;
    sub.subscribe("t/#", QoS::ExactlyOnce).await;
    let publ = client4(addr, "pub", true).await;
    for (i, q) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        publ.client
            .publish(format!("t/{i}"), q, false, vec![i as u8, 0xff, 0])
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.next_publish().await;
        got.push((p.topic.clone(), p.qos as u8, p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("t/0".into(), 0, vec![0, 0xff, 0]),
            ("t/1".into(), 1, vec![1, 0xff, 0]),
            ("t/2".into(), 2, vec![2, 0xff, 0]),
        ]
    );
    let stored = frames(dir.path(), "mqtt");
    assert_eq!(stored.len(), 3);
    for (meta, payload) in &stored {
        let m = meta.as_ref().expect("MQTT meta");
        assert_eq!(m.client_id, "pub");
        assert_eq!(usize::from(m.qos), usize::from(payload[0]));
        assert_eq!(m.topic, format!("t/{}", payload[0]));
        assert!(!m.v5);
    }
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn puback_is_sent_only_after_the_frame_is_in_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("acker", true, None)).await;
    for pkid in 1..=20u16 {
        let payload = format!("m{pkid}");
        raw.send(&publish4("a/b", 1, pkid, false, false, payload.as_bytes()))
            .await;
        let (first, body) = raw.recv().await.expect("PUBACK");
        assert_eq!(first, 0x40);
        assert_eq!(u16::from_be_bytes([body[0], body[1]]), pkid);
        // The acknowledged message must already be readable by any journal reader.
        let stored = frames(dir.path(), "mqtt");
        assert_eq!(stored.len(), usize::from(pkid));
        assert_eq!(stored.last().unwrap().1, payload.as_bytes());
    }
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_properties_are_kept_in_meta_and_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut sub = client5(addr, "sub5").await;
    sub.client
        .subscribe("v5/#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    sub.wait(|e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(_))
        )
    })
    .await;
    let publ = client5(addr, "pub5").await;
    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
        content_type: Some("application/json".into()),
        user_properties: vec![("site".into(), "north".into())],
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publ.client
        .publish_with_properties(
            "v5/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            Bytes::from_static(b"{\"t\":21}"),
            props,
        )
        .await
        .unwrap();
    let ev = sub
        .wait(|e| {
            matches!(
                e,
                rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(_))
            )
        })
        .await;
    let rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::Publish(p)) = ev else {
        unreachable!()
    };
    assert_eq!(&p.topic[..], b"v5/x");
    let pp = p.properties.expect("properties forwarded");
    assert_eq!(pp.content_type.as_deref(), Some("application/json"));
    assert_eq!(pp.user_properties, vec![("site".into(), "north".into())]);
    let stored = frames(dir.path(), "mqtt");
    let m = stored[0].0.clone().unwrap();
    assert!(m.v5);
    assert_eq!(
        m.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(m.properties.payload_format_indicator, Some(1));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_appended_by_other_writers_reach_mqtt_subscribers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.routes = vec![
        RouteConfig {
            filter: "devices/+/cmd".into(),
            stream: "commands".into(),
            key_level: Some(1),
            outbound_topic: Some("devices/{key}/cmd".into()),
            max_payload_size: None,
            payload_type: None,
        },
        RouteConfig {
            filter: "#".into(),
            stream: "mqtt".into(),
            key_level: None,
            outbound_topic: None,
            max_payload_size: None,
            payload_type: None,
        },
    ];
    let (g, addr) = start(cfg).await;
    let mut sub = client4(addr, "dev7", true).await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    // A local process appends directly to the streams (multi-writer streams).
    let mqtt = Stream::open(dir.path(), "mqtt").unwrap();
    let mut w = mqtt.writer().unwrap();
    let meta = MqttMeta::for_topic("local/x").encode().unwrap();
    w.append_with(
        &AppendOptions {
            type_id: 0,
            schema_version: 0,
            meta: &meta,
        },
        b"with-topic",
    )
    .unwrap();
    w.append(b"no-meta").unwrap();
    let cmds = Stream::open(dir.path(), "commands").unwrap();
    let mut cw = cmds.writer().unwrap();
    let keyed = MqttMeta {
        key: Some("dev7".into()),
        ..MqttMeta::default()
    }
    .encode()
    .unwrap();
    cw.append_with(
        &AppendOptions {
            type_id: 0,
            schema_version: 0,
            meta: &keyed,
        },
        b"reboot",
    )
    .unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let p = sub.next_publish().await;
        got.push((p.topic, p.payload.to_vec()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![
            ("devices/dev7/cmd".into(), b"reboot".to_vec()),
            ("local/x".into(), b"with-topic".to_vec()),
            ("mqtt".into(), b"no-meta".to_vec()),
        ]
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_pick_streams_and_record_keys_and_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.routes = vec![
        RouteConfig {
            filter: "sensors/+/temperature".into(),
            stream: "temps".into(),
            key_level: Some(1),
            outbound_topic: None,
            max_payload_size: Some(8),
            payload_type: None,
        },
        RouteConfig {
            filter: "#".into(),
            stream: "rest".into(),
            key_level: None,
            outbound_topic: None,
            max_payload_size: None,
            payload_type: None,
        },
    ];
    let (g, addr) = start(cfg).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("d7", true, None)).await;
    raw.send(&publish4(
        "sensors/d7/temperature",
        1,
        1,
        false,
        false,
        b"21.5",
    ))
    .await;
    raw.recv().await.unwrap();
    raw.send(&publish4("other/thing", 1, 2, false, false, b"x"))
        .await;
    raw.recv().await.unwrap();
    raw.send(&publish4(
        "sensors/d7/temperature",
        1,
        3,
        false,
        false,
        b"way too long",
    ))
    .await;
    raw.recv().await.unwrap();
    let temps = frames(dir.path(), "temps");
    assert_eq!(temps.len(), 1);
    assert_eq!(temps[0].0.as_ref().unwrap().key.as_deref(), Some("d7"));
    assert_eq!(temps[0].1, b"21.5");
    let rest = frames(dir.path(), "rest");
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0.as_ref().unwrap().key, None);
    let dead = frames(dir.path(), "mqtt-dead-letter");
    assert_eq!(dead.len(), 1);
    let m = dead[0].0.as_ref().unwrap();
    assert_eq!(m.topic, "sensors/d7/temperature");
    assert!(m
        .properties
        .user_properties
        .iter()
        .any(|(k, v)| k == "ringway-dead-letter-reason" && v.contains("exceeds")));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_survive_a_restart_and_can_be_cleared() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("r", true, None)).await;
    raw.send(&publish4("state/a", 1, 1, false, true, b"on"))
        .await;
    raw.recv().await.unwrap();
    raw.send(&publish4("state/b", 1, 2, false, true, b"off"))
        .await;
    raw.recv().await.unwrap();
    raw.send(&publish4("state/b", 1, 3, false, true, b"")).await;
    raw.recv().await.unwrap();
    drop(raw);
    g.shutdown().await.unwrap();

    let (g, addr) = start(config(dir.path())).await;
    let mut sub = client4(addr, "late", true).await;
    sub.subscribe("state/#", QoS::AtLeastOnce).await;
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..], p.retain),
        ("state/a", &b"on"[..], true)
    );
    // Live messages on an established subscription carry retain = 0 (3.1.1 3.3.1-9).
    let publ = client4(addr, "p", true).await;
    publ.client
        .publish("state/c", QoS::AtLeastOnce, true, "live")
        .await
        .unwrap();
    let p = sub.next_publish().await;
    assert_eq!((p.topic.as_str(), p.retain), ("state/c", false));
    // state/b was cleared: nothing else arrives.
    let extra = tokio::time::timeout(Duration::from_millis(300), sub.next_publish()).await;
    assert!(extra.is_err(), "unexpected message {extra:?}");
    assert_eq!(g.status().retained, 2);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_on_abnormal_close_only() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut sub = client4(addr, "watcher", true).await;
    sub.subscribe("status/#", QoS::AtLeastOnce).await;

    let mut polite = Raw::connect(addr).await;
    polite
        .handshake(&connect4(
            "polite",
            true,
            Some(("status/polite", b"gone", 1, false)),
        ))
        .await;
    polite.send(&[0xE0, 0]).await; // DISCONNECT: no will
    assert!(polite.recv().await.is_none());

    let mut rude = Raw::connect(addr).await;
    rude.handshake(&connect4(
        "rude",
        true,
        Some(("status/rude", b"lost", 1, false)),
    ))
    .await;
    drop(rude); // socket closed without DISCONNECT
    let p = sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("status/rude", &b"lost"[..])
    );
    let stored = frames(dir.path(), "mqtt");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0.as_ref().unwrap().client_id, "rude");
    assert_eq!(
        g.metrics().wills.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_are_stored_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("dup", false, None)).await;
    // QoS 1: the PUBACK is "lost" (client reconnects) and the message resent with DUP.
    raw.send(&publish4("q/1", 1, 9, false, false, b"once"))
        .await;
    raw.recv().await.unwrap();
    drop(raw);
    let mut raw = Raw::connect(addr).await;
    assert!(
        raw.handshake(&connect4("dup", false, None)).await,
        "session present"
    );
    raw.send(&publish4("q/1", 1, 9, true, false, b"once")).await;
    let (first, _) = raw.recv().await.unwrap();
    assert_eq!(first, 0x40);
    // Same packet id reused later for a new message (no DUP): stored.
    raw.send(&publish4("q/1", 1, 9, false, false, b"twice"))
        .await;
    raw.recv().await.unwrap();
    // QoS 2: PUBLISH resent before PUBREL, then PUBREL.
    raw.send(&publish4("q/2", 2, 10, false, false, b"exactly"))
        .await;
    assert_eq!(raw.recv().await.unwrap().0, 0x50);
    raw.send(&publish4("q/2", 2, 10, true, false, b"exactly"))
        .await;
    assert_eq!(raw.recv().await.unwrap().0, 0x50);
    raw.send(&[0x62, 2, 0, 10]).await;
    let (first, body) = raw.recv().await.unwrap();
    assert_eq!((first, body), (0x70, vec![0, 10]));
    let payloads: Vec<Vec<u8>> = frames(dir.path(), "mqtt")
        .into_iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(
        payloads,
        vec![b"once".to_vec(), b"twice".to_vec(), b"exactly".to_vec()]
    );
    assert_eq!(
        g.metrics()
            .duplicates_suppressed
            .load(std::sync::atomic::Ordering::Relaxed),
        2
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_duplicate_filter_survives_a_gateway_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("dev", false, None)).await;
    raw.send(&publish4("x", 1, 77, false, false, b"reading"))
        .await;
    raw.recv().await.unwrap();
    drop(raw);
    g.shutdown().await.unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("dev", false, None)).await;
    raw.send(&publish4("x", 1, 77, true, false, b"reading"))
        .await;
    assert_eq!(raw.recv().await.unwrap().0, 0x40);
    assert_eq!(frames(dir.path(), "mqtt").len(), 1);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_packets_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut good = Raw::connect(addr).await;
    good.handshake(&connect4("good", true, None)).await;
    let cases: Vec<Vec<u8>> = vec![
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        connect4("bad", true, None)
            .into_iter()
            .chain([0x60, 2, 0, 1]) // PUBREL with reserved flags 0
            .collect(),
        connect4("bad2", true, None)
            .into_iter()
            .chain([0x32, 3, 0, 1, b'a']) // truncated QoS 1 PUBLISH body
            .collect(),
        connect4("bad3", true, None)
            .into_iter()
            .chain(publish4("a/+", 0, 0, false, false, b"x")) // wildcard topic
            .collect(),
    ];
    for bytes in cases {
        let mut bad = Raw::connect(addr).await;
        bad.send(&bytes).await;
        // Reads the CONNACK if any, then the close.
        loop {
            match bad.recv().await {
                None => break,
                Some((0x20, _)) => continue,
                Some(other) => panic!("unexpected {other:?}"),
            }
        }
    }
    good.send(&publish4("still/alive", 1, 1, false, false, b"ok"))
        .await;
    assert_eq!(good.recv().await.unwrap().0, 0x40);
    let m = scrape(g.metrics_addr().unwrap()).await;
    assert!(sample(&m, "ringway_mqtt_protocol_errors_total") >= 4, "{m}");
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_never_stalls_publishers_and_catches_up_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.mqtt.max_queued_messages = 50;
    cfg.mqtt.max_inflight = 2;
    let (g, addr) = start(cfg).await;
    // Subscribes with QoS 1 and then neither reads nor acknowledges anything for a while.
    let mut slow = Raw::connect(addr).await;
    slow.handshake(&connect4("slow", true, None)).await;
    slow.send(&subscribe4(1, "load/#", 1)).await;
    assert_eq!(slow.recv().await.unwrap().0, 0x90);
    let mut fast = client4(addr, "fast", true).await;
    fast.subscribe("load/#", QoS::AtMostOnce).await;
    let mut publ = Raw::connect(addr).await;
    publ.handshake(&connect4("loader", true, None)).await;
    let n = 300u16;
    for i in 1..=n {
        let payload = format!("{i:0>600}");
        publ.send(&publish4("load/x", 1, i, false, false, payload.as_bytes()))
            .await;
        assert_eq!(publ.recv().await.unwrap().0, 0x40, "PUBACK {i}");
    }
    for _ in 0..n {
        fast.next_publish().await;
    }
    assert!(
        g.metrics()
            .lagging
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0,
        "the slow subscriber overflowed its queue"
    );
    assert_eq!(frames(dir.path(), "mqtt").len(), usize::from(n));
    // Now the slow subscriber reads and acknowledges: it gets every message, in order, the
    // ones beyond its queue read back from the journal.
    let mut next = 1u16;
    while next <= n {
        let (first, body) = slow.recv().await.expect("publish");
        assert_eq!(first & 0xF0, 0x30, "PUBLISH");
        let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
        let pkid = [body[2 + topic_len], body[3 + topic_len]];
        let payload = &body[4 + topic_len..];
        assert_eq!(
            payload,
            format!("{next:0>600}").as_bytes(),
            "message {next} in order"
        );
        slow.send(&[0x40, 2, pkid[0], pkid[1]]).await;
        next += 1;
    }
    assert_eq!(
        g.metrics()
            .drops(ringway_mqtt_gateway::metrics::Drop::QueueFull),
        0
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_receives_what_it_missed_while_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut c = client4(addr, "persist", false).await;
    c.subscribe("p/#", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let publ = client4(addr, "pp", true).await;
    for i in 0..3 {
        publ.client
            .publish(format!("p/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    publ.client
        .publish("p/q0", QoS::AtMostOnce, false, "dropped while offline")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut c = client4(addr, "persist", false).await;
    let mut topics = Vec::new();
    for _ in 0..3 {
        topics.push(c.next_publish().await.topic);
    }
    assert_eq!(topics, vec!["p/0", "p/1", "p/2"]);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_and_acls() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![UserConfig {
        username: "alice".into(),
        password_hash: ringway_mqtt_gateway::auth::hash_password_with("pw", 8, 1, 1).unwrap(),
        acl: Acl {
            publish: vec!["alice/#".into()],
            subscribe: vec!["alice/#".into()],
        },
    }];
    let (g, addr) = start(cfg).await;
    // Anonymous and wrong password are refused in CONNACK.
    let mut anon = Raw::connect(addr).await;
    anon.send(&connect4("anon", true, None)).await;
    assert_eq!(anon.recv().await.unwrap(), (0x20, vec![0, 5]));
    let mut bad = Raw::connect(addr).await;
    bad.send(&connect4_login("a1", "alice", "wrong")).await;
    assert_eq!(bad.recv().await.unwrap(), (0x20, vec![0, 4]));
    let mut unknown = Raw::connect(addr).await;
    unknown.send(&connect4_login("a1", "mallory", "pw")).await;
    assert_eq!(unknown.recv().await.unwrap(), (0x20, vec![0, 4]));
    let mut o = rumqttc::v5::MqttOptions::new("a2", addr.ip().to_string(), addr.port());
    o.set_credentials("alice", "pw");
    let mut ok = client5_with(o).await;
    ok.wait(|e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(c))
                if c.code == rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
        )
    })
    .await;
    ok.client
        .publish(
            "bob/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "no",
        )
        .await
        .unwrap();
    ok.wait(|e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(a))
                if a.reason == rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
        )
    })
    .await;
    ok.client
        .subscribe("#", rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
        .await
        .unwrap();
    ok.wait(|e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::SubAck(a))
                if a.return_codes == vec![rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::NotAuthorized]
        )
    })
    .await;
    ok.client
        .publish(
            "alice/x",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            false,
            "yes",
        )
        .await
        .unwrap();
    ok.wait(|e| {
        matches!(
            e,
            rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(a))
                if a.reason == rumqttc::v5::mqttbytes::v5::PubAckReason::Success
        )
    })
    .await;
    let stored = frames(dir.path(), "mqtt");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, b"yes");
    let m = scrape(g.metrics_addr().unwrap()).await;
    assert_eq!(
        sample(&m, "ringway_mqtt_dropped_total{reason=\"acl_denied\"}"),
        1
    );
    assert_eq!(sample(&m, "ringway_mqtt_subscribe_denied_total"), 1);
    assert!(
        sample(&m, "ringway_mqtt_connects_refused_total") >= 2,
        "{m}"
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_same_client_id_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut first = Raw::connect(addr).await;
    first.handshake(&connect4("same", true, None)).await;
    let mut second = Raw::connect(addr).await;
    second.handshake(&connect4("same", true, None)).await;
    assert!(first.recv().await.is_none(), "first connection closed");
    second.send(&[0xC0, 0]).await;
    assert_eq!(second.recv().await.unwrap(), (0xD0, vec![]));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.mqtt.max_connections = 2;
    let (g, addr) = start(cfg).await;
    let mut a = Raw::connect(addr).await;
    a.handshake(&connect4("a", true, None)).await;
    let mut b = Raw::connect(addr).await;
    b.handshake(&connect4("b", true, None)).await;
    let mut c = Raw::connect(addr).await;
    c.send(&connect4("c", true, None)).await;
    assert_eq!(c.recv().await.unwrap(), (0x20, vec![0, 3]));
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = Raw::connect(addr).await;
    d.handshake(&connect4("d", true, None)).await;
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rumqttc_event_loop_sees_acks_for_every_qos() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut c = client4(addr, "acks", true).await;
    c.client
        .publish("k", QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    c.wait(|e| matches!(e, Event::Incoming(Packet::PubAck(_))))
        .await;
    c.client
        .publish("k", QoS::ExactlyOnce, false, "2")
        .await
        .unwrap();
    c.wait(|e| matches!(e, Event::Incoming(Packet::PubComp(_))))
        .await;
    assert_eq!(frames(dir.path(), "mqtt").len(), 2);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_session_beyond_its_queue_is_replayed_from_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.mqtt.max_queued_messages = 5;
    let (g, addr) = start(cfg).await;
    let mut c = client4(addr, "away", false).await;
    c.subscribe("feed/#", QoS::AtLeastOnce).await;
    c.client.disconnect().await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut publ = Raw::connect(addr).await;
    publ.handshake(&connect4("feeder", true, None)).await;
    for i in 1..=40u16 {
        publ.send(&publish4(
            "feed/x",
            1,
            i,
            false,
            false,
            i.to_string().as_bytes(),
        ))
        .await;
        publ.recv().await.unwrap();
    }
    let mut c = client4(addr, "away", false).await;
    for i in 1..=40u16 {
        let p = c.next_publish().await;
        assert_eq!(&p.payload[..], i.to_string().as_bytes());
    }
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v5_message_expiry_drops_stale_messages_and_counts_down() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::Event as E5;
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let opts = || {
        let mut o = rumqttc::v5::MqttOptions::new("expiring", addr.ip().to_string(), addr.port());
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(300));
        o
    };
    let mut sub = client5_with(opts()).await;
    sub.wait(|e| matches!(e, E5::Incoming(P5::ConnAck(_))))
        .await;
    sub.client
        .subscribe("exp/#", Q5::AtLeastOnce)
        .await
        .unwrap();
    sub.wait(|e| matches!(e, E5::Incoming(P5::SubAck(_)))).await;
    sub.client.disconnect().await.unwrap();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut publ = client5(addr, "exp-pub").await;
    publ.wait(|e| matches!(e, E5::Incoming(P5::ConnAck(_))))
        .await;
    for (topic, secs) in [("exp/short", 1), ("exp/long", 100)] {
        let props = PublishProperties {
            message_expiry_interval: Some(secs),
            ..Default::default()
        };
        publ.client
            .publish_with_properties(topic, Q5::AtLeastOnce, false, "x", props)
            .await
            .unwrap();
        publ.wait(|e| matches!(e, E5::Incoming(P5::PubAck(_))))
            .await;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut sub = client5_with(opts()).await;
    let ev = sub
        .wait(|e| matches!(e, E5::Incoming(P5::Publish(_))))
        .await;
    let E5::Incoming(P5::Publish(p)) = ev else {
        unreachable!()
    };
    assert_eq!(
        &p.topic[..],
        b"exp/long",
        "the 1 s message expired while offline"
    );
    let remaining = p.properties.unwrap().message_expiry_interval.unwrap();
    assert!(
        (50..=98).contains(&remaining),
        "remaining lifetime {remaining}"
    );
    assert_eq!(
        g.metrics()
            .drops(ringway_mqtt_gateway::metrics::Drop::Expired),
        1
    );
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_sessions_survive_a_gateway_restart_via_named_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut c = client4(addr, "durable", false).await;
    c.subscribe("d/#", QoS::AtLeastOnce).await;
    let publ = client4(addr, "dp", true).await;
    publ.client
        .publish("d/0", QoS::AtLeastOnce, false, "before")
        .await
        .unwrap();
    assert_eq!(&c.next_publish().await.payload[..], b"before");
    c.client.disconnect().await.unwrap();
    drop(c);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("dp2", true, None)).await;
    for i in 1..=3u16 {
        raw.send(&publish4(
            "d/x",
            1,
            i,
            false,
            false,
            format!("missed-{i}").as_bytes(),
        ))
        .await;
        raw.recv().await.unwrap();
    }
    drop(raw);
    drop(publ);
    g.shutdown().await.unwrap();
    // The position is a named cursor on the stream, visible to any ringway-core user.
    let stream = ringway_core::Stream::open(dir.path(), "mqtt").unwrap();
    assert!(stream.cursors().iter().any(|c| c.name == "mqtt:durable"));

    let (g, addr) = start(config(dir.path())).await;
    assert_eq!(g.status().sessions, 1, "session restored");
    let mut c = client4(addr, "durable", false).await;
    for i in 1..=3 {
        let p = c.next_publish().await;
        assert_eq!(&p.payload[..], format!("missed-{i}").as_bytes());
    }
    // A clean session ends it: log entry and cursor are removed.
    c.client.disconnect().await.unwrap();
    drop(c);
    let mut clean = Raw::connect(addr).await;
    clean.handshake(&connect4("durable", true, None)).await;
    clean.send(&[0xE0, 0]).await;
    assert!(clean.recv().await.is_none());
    g.shutdown().await.unwrap();
    let stream = ringway_core::Stream::open(dir.path(), "mqtt").unwrap();
    assert!(!stream.cursors().iter().any(|c| c.name == "mqtt:durable"));
    let (g, _) = start(config(dir.path())).await;
    assert_eq!(g.status().sessions, 0);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_binary_payloads_pass_through_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.storage.segment_size = 4 << 20;
    cfg.mqtt.max_packet_size = 512 << 10;
    let (g, addr) = start(cfg).await;
    let mut sub = Raw::connect(addr).await;
    sub.handshake(&connect4("big-sub", true, None)).await;
    sub.send(&subscribe4(1, "big", 0)).await;
    assert_eq!(sub.recv().await.unwrap().0, 0x90);
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut publ = Raw::connect(addr).await;
    publ.handshake(&connect4("big-pub", true, None)).await;
    publ.send(&publish4("big", 1, 1, false, false, &payload))
        .await;
    assert_eq!(publ.recv().await.unwrap().0, 0x40);
    let (first, body) = sub.recv().await.unwrap();
    assert_eq!(first, 0x30);
    assert_eq!(&body[2 + 3..], &payload[..]);
    assert_eq!(frames(dir.path(), "mqtt")[0].1, payload);
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_expiry_closes_the_connection_and_publishes_the_will() {
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let mut watcher = client4(addr, "ka-watch", true).await;
    watcher.subscribe("ka/#", QoS::AtLeastOnce).await;
    let mut silent = Raw::connect(addr).await;
    silent
        .handshake(&connect4_ka(
            "silent",
            true,
            Some(("ka/silent", b"timed out", 1, false)),
            1,
        ))
        .await;
    // No PINGREQ: the server closes after 1.5 x keep-alive.
    assert!(silent.recv().await.is_none());
    let p = watcher.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("ka/silent", &b"timed out"[..])
    );
    // Keep-alive 0 (3.1.1: no timeout) is accepted.
    let mut zero = Raw::connect(addr).await;
    zero.handshake(&connect4_ka("zero", true, None, 0)).await;
    zero.send(&[0xC0, 0]).await;
    assert_eq!(zero.recv().await.unwrap(), (0xD0, vec![]));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_rate_limit_refuses_bursts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.mqtt.max_connect_rate = 3;
    let (g, addr) = start(cfg).await;
    let mut refused = 0;
    for i in 0..12 {
        let mut c = Raw::connect(addr).await;
        c.send(&connect4(&format!("burst-{i}"), true, None)).await;
        let (first, body) = c.recv().await.unwrap();
        assert_eq!(first, 0x20);
        if body[1] == 3 {
            refused += 1;
        } else {
            assert_eq!(body[1], 0);
        }
    }
    // At most 3 per one-second window: all 12 could only pass if the burst took over 3 s.
    assert!(refused >= 1, "some CONNECTs of the burst were refused");
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_routes_validate_payloads_and_store_each_reading_once() {
    use ringway_core::wire::{
        encode_telemetry, DeviceId, Quantity, Reading, Telemetry, WireBuf, TELEMETRY_TYPE_ID,
        TELEMETRY_WIRE_SIZE,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.routes = vec![RouteConfig {
        filter: "devices/+/telemetry".into(),
        stream: "telemetry".into(),
        key_level: Some(1),
        outbound_topic: None,
        max_payload_size: None,
        payload_type: Some(ringway_mqtt_gateway::config::PayloadType::Telemetry),
    }];
    let (g, addr) = start(cfg).await;
    let reading = |seq: u64| {
        let mut t = Telemetry::new(DeviceId(42), 7, seq, 1000 + seq);
        t.push(Reading::new(0, Quantity::Temperature, 21.5))
            .unwrap();
        let mut buf = WireBuf::<TELEMETRY_WIRE_SIZE>::new();
        encode_telemetry(&t, &mut buf).unwrap().to_vec()
    };
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("device-42", true, None)).await;
    let topic = "devices/42/telemetry";
    let mut pkid = 0;
    for seq in [0u64, 1, 1, 2, 0] {
        // seq 1 and 0 sent again as new publishes (e.g. after the device rebooted its session)
        pkid += 1;
        raw.send(&publish4(topic, 1, pkid, false, false, &reading(seq)))
            .await;
        assert_eq!(raw.recv().await.unwrap().0, 0x40);
    }
    raw.send(&publish4(topic, 1, 99, false, false, b"not telemetry"))
        .await;
    assert_eq!(raw.recv().await.unwrap().0, 0x40);
    let stored = frames(dir.path(), "telemetry");
    assert_eq!(stored.len(), 3, "readings 0, 1, 2 once each");
    let s = ringway_core::Stream::open(dir.path(), "telemetry").unwrap();
    let mut r = s.reader(ringway_core::Start::Beginning).unwrap();
    r.poll(10, |f| assert_eq!(f.type_id(), TELEMETRY_TYPE_ID))
        .unwrap();
    let dead = frames(dir.path(), "mqtt-dead-letter");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].1, b"not telemetry");
    g.shutdown().await.unwrap();
    // The per-device filter is rebuilt from the stream after a restart.
    let mut cfg = config(dir.path());
    cfg.routes = vec![RouteConfig {
        filter: "devices/+/telemetry".into(),
        stream: "telemetry".into(),
        key_level: Some(1),
        outbound_topic: None,
        max_payload_size: None,
        payload_type: Some(ringway_mqtt_gateway::config::PayloadType::Telemetry),
    }];
    let (g, addr) = start(cfg).await;
    let mut raw = Raw::connect(addr).await;
    raw.handshake(&connect4("device-42", true, None)).await;
    raw.send(&publish4(topic, 1, 1, false, false, &reading(2)))
        .await;
    raw.recv().await.unwrap();
    raw.send(&publish4(topic, 1, 2, false, false, &reading(3)))
        .await;
    raw.recv().await.unwrap();
    assert_eq!(frames(dir.path(), "telemetry").len(), 4);
    g.shutdown().await.unwrap();
}
