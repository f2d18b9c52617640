//! A real MQTT client (mosquitto_sub) inside the namespace that records every message.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::netns::NetNs;

pub struct Subscriber {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

/// One received message.
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

impl Subscriber {
    /// Subscribe to `filter` with QoS 1 and a persistent session (client id `id`), and wait
    /// until the subscription demonstrably works.
    pub fn start(ns: &NetNs, id: &str, filter: &str) -> Self {
        let mut child = ns
            .command("mosquitto_sub")
            .args(["-h", "192.0.2.1", "-q", "1", "-c", "-i", id, "-t", filter])
            .args(["-F", "%t %x"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn mosquitto_sub");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let sub = Subscriber { child, lines };
        // Readiness: publish probes until one arrives.
        let probe_topic = filter.replace(['+', '#'], "probe");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "subscriber never received a probe"
            );
            let _ = ns
                .command("mosquitto_pub")
                .args([
                    "-h",
                    "192.0.2.1",
                    "-q",
                    "1",
                    "-t",
                    &probe_topic,
                    "-m",
                    "probe",
                ])
                .status();
            std::thread::sleep(Duration::from_millis(50));
            if sub
                .lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with(&probe_topic))
            {
                break;
            }
        }
        sub
    }

    /// Messages received so far, without the readiness probes.
    pub fn messages(&self) -> Vec<Message> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let (topic, payload) = l.split_once(' ')?;
                if topic.contains("probe") {
                    return None;
                }
                Some(Message {
                    topic: topic.to_string(),
                    payload: hex(payload),
                })
            })
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
