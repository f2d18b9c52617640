//! QoS 1 retransmission: a server that accepts the device's connection but never acknowledges
//! its publishes. The device must give up on the link after its acknowledgement timeout,
//! reconnect, and send every unacknowledged reading again, in order. Needs root and iproute2.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringway_firmware::wire::{access_telemetry, DeviceId, WireBuf, TELEMETRY_WIRE_SIZE};
use support::netns::{create_ns, require_root_and_tools};
use support::sim::{pace, spawn_devices_with, DeviceSpec};

fn read_varint(s: &mut TcpStream) -> std::io::Result<usize> {
    let mut value = 0usize;
    for shift in (0..28).step_by(7) {
        let mut b = [0u8];
        s.read_exact(&mut b)?;
        value |= usize::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(std::io::Error::other("bad varint"))
}

fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8];
    s.read_exact(&mut h)?;
    let len = read_varint(s)?;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((h[0], body))
}

/// The sequence number in a QoS 1 MQTT 5 telemetry PUBLISH, and its packet id.
fn telemetry_of(body: &[u8]) -> Option<(u64, [u8; 2])> {
    let tlen = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = std::str::from_utf8(&body[2..2 + tlen]).ok()?;
    if !topic.ends_with("/telemetry") {
        return None;
    }
    let pid = [body[2 + tlen], body[3 + tlen]];
    let props = usize::from(body[4 + tlen]); // small property sections fit one varint byte
    let payload = &body[5 + tlen + props..];
    let mut buf = WireBuf::<TELEMETRY_WIRE_SIZE>::new();
    let t = access_telemetry(buf.load(payload).ok()?).ok()?;
    Some((t.seq(), pid))
}

/// Serve connections: the first one never acknowledges a publish, later ones do.
fn serve(listener: TcpListener, log: Arc<Mutex<Vec<Vec<u64>>>>) {
    for (index, conn) in listener.incoming().enumerate() {
        let Ok(mut s) = conn else { return };
        log.lock().unwrap().push(Vec::new());
        let log = log.clone();
        std::thread::spawn(move || {
            while let Ok((header, body)) = read_packet(&mut s) {
                let reply: Vec<u8> = match header >> 4 {
                    1 => vec![0x20, 0x03, 0x00, 0x00, 0x00], // CONNACK, new session
                    8 => vec![0x90, 0x04, body[0], body[1], 0x00, 0x01], // SUBACK QoS 1
                    12 => vec![0xd0, 0x00],                  // PINGRESP
                    3 => match telemetry_of(&body) {
                        Some((seq, pid)) => {
                            log.lock().unwrap()[index].push(seq);
                            if index == 0 {
                                continue; // swallow: never PUBACK on the first connection
                            }
                            vec![0x40, 0x02, pid[0], pid[1]]
                        }
                        None => continue,
                    },
                    _ => continue,
                };
                if s.write_all(&reply).is_err() {
                    return;
                }
            }
        });
    }
}

#[test]
fn unacknowledged_publishes_are_sent_again_after_the_ack_timeout() {
    require_root_and_tools();
    let ns = create_ns("ack", 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    {
        let (tx, rx) = std::sync::mpsc::channel();
        let log = log.clone();
        ns.spawn_in(move || {
            let listener = TcpListener::bind("192.0.2.1:1883").expect("bind in namespace");
            tx.send(()).unwrap();
            serve(listener, log);
        })
        .expect("server thread in the namespace");
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    let n = 5;
    let devices = spawn_devices_with(
        &ns,
        vec![DeviceSpec {
            id: DeviceId(0xa1),
            readings: n,
            pace: pace(Duration::from_millis(1)),
            submit_log: None,
        }],
        Duration::from_millis(200),
        Duration::from_secs(1),
    );
    let start = Instant::now();
    devices[0].wait_all_acked(Duration::from_secs(30)).unwrap();
    let stats = devices[0].outbox.stats();
    let log = log.lock().unwrap().clone();
    eprintln!(
        "after {:?}: per-connection seqs {log:?}; {stats:?}",
        start.elapsed()
    );
    assert!(log.len() >= 2, "device reconnected");
    assert_eq!(
        log[0],
        (0..n).collect::<Vec<_>>(),
        "first connection saw every reading"
    );
    assert_eq!(
        log[1],
        (0..n).collect::<Vec<_>>(),
        "all of them resent, in order"
    );
    assert_eq!(stats.retransmitted, n);
    assert_eq!(stats.acked, n);
    assert_eq!(stats.connects, 2);
}
