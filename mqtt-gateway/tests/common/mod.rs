//! Shared helpers: an in-process gateway on a loopback ephemeral port over a temporary stream
//! root, rumqttc clients, and a raw-socket client for byte-exact protocol tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use ringway_core::{Start, Stream};
use ringway_mqtt_gateway::{Config, Gateway, MqttMeta};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Upper bound for anything a test waits for (a watchdog, not a performance claim).
pub const WAIT: Duration = Duration::from_secs(10);

pub fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::default();
    c.mqtt.listen = vec!["127.0.0.1:0".parse().unwrap()];
    c.metrics.listen = Some("127.0.0.1:0".parse().unwrap());
    c.storage.dir = Some(dir.to_owned());
    c.storage.segment_size = 1 << 20;
    c.mqtt.max_packet_size = 128 << 10;
    c.storage.poll_interval_us = 200;
    c
}

pub async fn start(config: Config) -> (Gateway, SocketAddr) {
    let g = Gateway::start(config).await.expect("gateway starts");
    let a = g.mqtt_addrs()[0];
    (g, a)
}

/// Every frame of `stream`: (decoded meta if MQTT, payload).
pub fn frames(dir: &std::path::Path, stream: &str) -> Vec<(Option<MqttMeta>, Vec<u8>)> {
    let s = Stream::open(dir, stream).expect("stream exists");
    let mut r = s.reader(Start::Beginning).unwrap();
    let mut out = Vec::new();
    while r
        .poll(1000, |f| {
            out.push((MqttMeta::decode(f.meta()).ok(), f.payload().to_vec()))
        })
        .unwrap()
        > 0
    {}
    out
}

/// A rumqttc 3.1.1 client whose events are forwarded to a channel.
pub struct Client4 {
    pub client: rumqttc::AsyncClient,
    pub events: mpsc::UnboundedReceiver<rumqttc::Event>,
}

pub async fn client4(addr: SocketAddr, id: &str, clean: bool) -> Client4 {
    let mut o = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    o.set_clean_session(clean);
    o.set_keep_alive(Duration::from_secs(30));
    let (client, mut el) = rumqttc::AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut c = Client4 { client, events: rx };
    c.wait(|e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))))
        .await;
    c
}

impl Client4 {
    pub async fn wait<F: Fn(&rumqttc::Event) -> bool>(&mut self, f: F) -> rumqttc::Event {
        let fut = async {
            loop {
                match self.events.recv().await {
                    Some(e) if f(&e) => return e,
                    Some(_) => {}
                    None => panic!("client event loop ended"),
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("event within watchdog")
    }

    pub async fn next_publish(&mut self) -> rumqttc::Publish {
        match self
            .wait(|e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::Publish(_))))
            .await
        {
            rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => p,
            _ => unreachable!(),
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: rumqttc::QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        self.wait(|e| matches!(e, rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))))
            .await;
    }
}

/// A rumqttc MQTT 5 client.
pub struct Client5 {
    pub client: rumqttc::v5::AsyncClient,
    pub events: mpsc::UnboundedReceiver<rumqttc::v5::Event>,
}

pub async fn client5(addr: SocketAddr, id: &str) -> Client5 {
    let o = rumqttc::v5::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    client5_with(o).await
}

pub async fn client5_with(o: rumqttc::v5::MqttOptions) -> Client5 {
    let (client, mut el) = rumqttc::v5::AsyncClient::new(o, 100);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match el.poll().await {
                Ok(ev) => {
                    if tx.send(ev).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Client5 { client, events: rx }
}

impl Client5 {
    pub async fn wait<F: Fn(&rumqttc::v5::Event) -> bool>(&mut self, f: F) -> rumqttc::v5::Event {
        let fut = async {
            loop {
                match self.events.recv().await {
                    Some(e) if f(&e) => return e,
                    Some(_) => {}
                    None => panic!("client event loop ended"),
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("event within watchdog")
    }
}

/// Raw MQTT over a socket, for byte-exact tests.
pub struct Raw {
    pub sock: TcpStream,
    buf: Vec<u8>,
}

pub fn remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        out.push(b);
        if len == 0 {
            break;
        }
    }
}

fn packet(byte1: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![byte1];
    remaining_length(body.len(), &mut v);
    v.extend_from_slice(body);
    v
}

fn string(s: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s);
}

/// CONNECT (3.1.1) with optional will (topic, payload, qos, retain), keep-alive 30 s.
pub fn connect4(id: &str, clean: bool, will: Option<(&str, &[u8], u8, bool)>) -> Vec<u8> {
    connect4_ka(id, clean, will, 30)
}

/// CONNECT (3.1.1) with an explicit keep-alive in seconds.
pub fn connect4_ka(
    id: &str,
    clean: bool,
    will: Option<(&str, &[u8], u8, bool)>,
    keep_alive: u16,
) -> Vec<u8> {
    let mut b = Vec::new();
    string(b"MQTT", &mut b);
    b.push(4);
    let mut flags = if clean { 2 } else { 0 };
    if let Some((_, _, q, r)) = will {
        flags |= 4 | (q << 3) | if r { 0x20 } else { 0 };
    }
    b.push(flags);
    b.extend_from_slice(&keep_alive.to_be_bytes());
    string(id.as_bytes(), &mut b);
    if let Some((t, p, _, _)) = will {
        string(t.as_bytes(), &mut b);
        string(p, &mut b);
    }
    packet(0x10, &b)
}

/// CONNECT (3.1.1, clean) with username and password.
pub fn connect4_login(id: &str, user: &str, pass: &str) -> Vec<u8> {
    let mut b = Vec::new();
    string(b"MQTT", &mut b);
    b.push(4);
    b.push(0xC2);
    b.extend_from_slice(&30u16.to_be_bytes());
    string(id.as_bytes(), &mut b);
    string(user.as_bytes(), &mut b);
    string(pass.as_bytes(), &mut b);
    packet(0x10, &b)
}

pub fn publish4(
    topic: &str,
    qos: u8,
    pkid: u16,
    dup: bool,
    retain: bool,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    string(topic.as_bytes(), &mut b);
    if qos > 0 {
        b.extend_from_slice(&pkid.to_be_bytes());
    }
    b.extend_from_slice(payload);
    packet(
        0x30 | (u8::from(dup) << 3) | (qos << 1) | u8::from(retain),
        &b,
    )
}

pub fn subscribe4(pkid: u16, filter: &str, qos: u8) -> Vec<u8> {
    let mut b = pkid.to_be_bytes().to_vec();
    string(filter.as_bytes(), &mut b);
    b.push(qos);
    packet(0x82, &b)
}

impl Raw {
    pub async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            sock: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.unwrap();
    }

    /// Next whole packet: (first byte, body). `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<(u8, Vec<u8>)> {
        let fut = async {
            loop {
                if self.buf.len() >= 2 {
                    let mut len = 0usize;
                    let mut shift = 0;
                    let mut at = 1;
                    let mut complete = false;
                    while at < self.buf.len() {
                        let b = self.buf[at];
                        len |= ((b & 0x7f) as usize) << shift;
                        at += 1;
                        if b & 0x80 == 0 {
                            complete = true;
                            break;
                        }
                        shift += 7;
                    }
                    if complete && self.buf.len() >= at + len {
                        let first = self.buf[0];
                        let body = self.buf[at..at + len].to_vec();
                        self.buf.drain(..at + len);
                        return Some((first, body));
                    }
                }
                let mut chunk = [0u8; 4096];
                match self.sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .expect("packet within watchdog")
    }

    /// CONNECTs and checks CONNACK accepted; returns the session-present flag.
    pub async fn handshake(&mut self, connect: &[u8]) -> bool {
        self.send(connect).await;
        let (first, body) = self.recv().await.expect("CONNACK");
        assert_eq!(first, 0x20);
        assert_eq!(body[1], 0, "CONNACK return code");
        body[0] == 1
    }
}

/// GET /metrics.
pub async fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Value of one sample line in a scrape.
pub fn sample(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} not in metrics"))
        .trim()
        .parse()
        .unwrap()
}
