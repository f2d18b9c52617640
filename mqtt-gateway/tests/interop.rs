//! Interop with real third-party clients against the in-process gateway: Debian's
//! `mosquitto_pub`/`mosquitto_sub` and Python paho-mqtt (`tests/interop/paho_check.py`), QoS
//! 0/1/2, retained, will and persistent sessions, MQTT 3.1.1 and 5.
//!
//! The clients are installed by `tests/interop/install.sh`. Without them these tests print why
//! and return, unless `RINGWAY_REQUIRE_INTEROP=1` is set (CI sets it), in which case a missing
//! client is a failure.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ringway_mqtt_gateway::config::{Acl, BridgeConfig, BridgeFilter, UserConfig};
use ringway_mqtt_gateway::Gateway;
use tokio::process::Command;

fn available(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when the interop clients are there; otherwise skips (or fails when required).
fn clients_present(need_paho: bool) -> bool {
    let mosquitto = available(
        "sh",
        &["-c", "command -v mosquitto_pub && command -v mosquitto_sub"],
    );
    let paho = !need_paho || available("python3", &["-c", "import paho.mqtt"]);
    if mosquitto && paho {
        return true;
    }
    let msg = "interop clients missing: run mqtt-gateway/tests/interop/install.sh";
    if std::env::var("RINGWAY_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

async fn run(cmd: &mut Command) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(40), cmd.output())
        .await
        .expect("client finished within watchdog")
        .expect("client started");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn mosq(program: &str, port: u16, version: &str) -> Command {
    let mut c = Command::new(program);
    c.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version]);
    c.kill_on_drop(true);
    c
}

/// Waits until the gateway counts `n` subscriptions (so a background subscriber is ready).
async fn wait_subscriptions(g: &Gateway, n: u64) {
    let fut = async {
        while g.status().subscriptions < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("subscriber ready");
}

/// Waits until every client of the previous step is gone (a client process may exit before the
/// gateway has processed its DISCONNECT and removed its subscriptions), so subscription counts
/// read next are stable.
async fn wait_no_connections(g: &Gateway) {
    let fut = async {
        while g.status().connections > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("previous clients disconnected");
}

async fn wait_connections(g: &Gateway, n: u64) {
    let fut = async {
        while g.status().connections < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("client connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_qos_retained_will_and_sessions() {
    if !clients_present(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    let port = addr.port();
    for version in ["mqttv311", "mqttv5"] {
        // QoS 0/1/2 with a subscriber started first.
        let base = format!("mq/{version}");
        let mut sub = mosq("mosquitto_sub", port, version);
        sub.args(["-t", &format!("{base}/#"), "-q", "2", "-C", "3", "-W", "20"])
            .args(["-F", "%t %q %p"]);
        wait_no_connections(&g).await;
        let subs_before = g.status().subscriptions;
        let sub = tokio::spawn(async move { run(&mut sub).await });
        wait_subscriptions(&g, subs_before + 1).await;
        for q in 0..3 {
            let (ok, text) = run(mosq("mosquitto_pub", port, version).args([
                "-t",
                &format!("{base}/q{q}"),
                "-q",
                &q.to_string(),
                "-m",
                &format!("payload-{q}"),
            ]))
            .await;
            assert!(ok, "mosquitto_pub -q {q}: {text}");
        }
        let (ok, text) = sub.await.unwrap();
        assert!(ok, "mosquitto_sub: {text}");
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec![
                format!("{base}/q0 0 payload-0"),
                format!("{base}/q1 1 payload-1"),
                format!("{base}/q2 2 payload-2"),
            ],
            "{version}"
        );

        // Retained.
        let topic = format!("{base}/retained");
        let (ok, text) = run(mosq("mosquitto_pub", port, version)
            .args(["-t", &topic, "-q", "1", "-r", "-m", "kept"]))
        .await;
        assert!(ok, "{text}");
        let (ok, text) = run(mosq("mosquitto_sub", port, version)
            .args(["-t", &topic, "-C", "1", "-W", "10", "-F", "%r %t %p"]))
        .await;
        assert!(ok, "{text}");
        assert_eq!(text.trim(), format!("1 {topic} kept"));

        // Will: a client killed with SIGKILL.
        let will_topic = format!("{base}/will");
        wait_no_connections(&g).await;
        let subs_before = g.status().subscriptions;
        let mut watcher = mosq("mosquitto_sub", port, version);
        watcher.args(["-t", &will_topic, "-C", "1", "-W", "20", "-q", "1"]);
        let watcher = tokio::spawn(async move { run(&mut watcher).await });
        wait_subscriptions(&g, subs_before + 1).await;
        let conns_before = g.status().connections;
        let mut doomed = mosq("mosquitto_sub", port, version)
            .args(["-t", "nothing/here", "--will-topic", &will_topic])
            .args(["--will-payload", "device lost", "--will-qos", "1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        wait_connections(&g, conns_before + 1).await;
        doomed.kill().await.unwrap();
        let (ok, text) = watcher.await.unwrap();
        assert!(ok, "{text}");
        assert_eq!(text.trim(), "device lost");

        // Persistent session: subscribe, go away, messages published, come back.
        let id = format!("mosq-persist-{version}");
        let ps = format!("{base}/ps");
        let mut first = mosq("mosquitto_sub", port, version);
        first.args(["-c", "-i", &id, "-q", "1", "-t", &format!("{ps}/#"), "-E"]);
        if version == "mqttv5" {
            first.args(["-x", "300"]);
        }
        let (ok, text) = run(&mut first).await;
        assert!(ok, "{text}");
        for i in 0..2 {
            let (ok, text) = run(mosq("mosquitto_pub", port, version).args([
                "-t",
                &format!("{ps}/{i}"),
                "-q",
                "1",
                "-m",
                &format!("missed-{i}"),
            ]))
            .await;
            assert!(ok, "{text}");
        }
        let mut again = mosq("mosquitto_sub", port, version);
        again.args([
            "-c",
            "-i",
            &id,
            "-q",
            "1",
            "-t",
            &format!("{ps}/#"),
            "-C",
            "2",
        ]);
        again.args(["-W", "10"]);
        if version == "mqttv5" {
            again.args(["-x", "300"]);
        }
        let (ok, text) = run(&mut again).await;
        assert!(ok, "{text}");
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            vec!["missed-0", "missed-1"]
        );
    }
    // Everything published above is in the journal with its topic.
    let stored = frames(dir.path(), "mqtt");
    assert!(stored
        .iter()
        .any(|(m, p)| m.as_ref().is_some_and(|m| m.topic == "mq/mqttv5/q2") && p == b"payload-2"));
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_clients_authenticate_with_hashed_passwords() {
    if !clients_present(false) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.auth.allow_anonymous = false;
    cfg.auth.users = vec![UserConfig {
        username: "sensor".into(),
        password_hash: ringway_mqtt_gateway::auth::hash_password_with("s3cret", 8, 1, 1).unwrap(),
        acl: Acl {
            publish: vec!["sensors/%u/#".into()],
            subscribe: vec![],
        },
    }];
    let (g, addr) = start(cfg).await;
    let port = addr.port();
    let (ok, _) = run(mosq("mosquitto_pub", port, "mqttv311").args([
        "-t",
        "sensors/sensor/t",
        "-m",
        "1",
        "-q",
        "1",
    ]))
    .await;
    assert!(!ok, "anonymous publish must be refused");
    let (ok, _) = run(mosq("mosquitto_pub", port, "mqttv5").args([
        "-u",
        "sensor",
        "-P",
        "wrong",
        "-t",
        "sensors/sensor/t",
        "-m",
        "1",
    ]))
    .await;
    assert!(!ok, "wrong password must be refused");
    let (ok, text) = run(mosq("mosquitto_pub", port, "mqttv5").args([
        "-u",
        "sensor",
        "-P",
        "s3cret",
        "-t",
        "sensors/sensor/t",
        "-m",
        "21.5",
        "-q",
        "1",
    ]))
    .await;
    assert!(ok, "{text}");
    let stored = frames(dir.path(), "mqtt");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, b"21.5");
    g.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paho_clients_v311_and_v5() {
    if !clients_present(true) {
        return;
    }
    let script: PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "interop",
        "paho_check.py",
    ]
    .iter()
    .collect();
    let dir = tempfile::tempdir().unwrap();
    let (g, addr) = start(config(dir.path())).await;
    for scenario in ["pubsub", "retained", "will", "persistent"] {
        for proto in ["311", "5"] {
            let (ok, text) = run(Command::new("python3")
                .arg(&script)
                .args(["127.0.0.1", &addr.port().to_string(), scenario, proto])
                .kill_on_drop(true))
            .await;
            assert!(ok, "paho {scenario} {proto}: {text}");
            assert!(text.contains(&format!("ok {scenario} {proto}")), "{text}");
        }
    }
    g.shutdown().await.unwrap();
}

fn mosquitto_broker() -> Option<&'static str> {
    ["mosquitto", "/usr/sbin/mosquitto"]
        .into_iter()
        .find(|p| available("sh", &["-c", &format!("command -v {p}")]))
}

async fn start_broker(program: &str, port: u16) -> tokio::process::Child {
    let child = Command::new(program)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto starts");
    let fut = async {
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("mosquitto listening");
    child
}

/// Publishes to the remote broker every 200 ms until `local` receives the message.
async fn publish_until_received(port: u16, topic: &str, payload: &str, local: &mut Client4) {
    let fut = async {
        loop {
            let (ok, text) = run(mosq("mosquitto_pub", port, "mqttv311")
                .args(["-t", topic, "-m", payload, "-q", "1"]))
            .await;
            if ok {
                if let Ok(p) =
                    tokio::time::timeout(Duration::from_millis(200), local.next_publish()).await
                {
                    if p.topic == topic && &p.payload[..] == payload.as_bytes() {
                        return;
                    }
                }
            } else {
                eprintln!("remote publish failed (retrying): {text}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .expect("bridged message arrives");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_to_a_real_mosquitto_broker_with_reconnect() {
    if !clients_present(false) {
        return;
    }
    let Some(broker) = mosquitto_broker() else {
        let msg = "mosquitto broker missing: run mqtt-gateway/tests/interop/install.sh";
        if std::env::var("RINGWAY_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
        return;
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote = start_broker(broker, port).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.bridges = vec![BridgeConfig {
        name: "site".into(),
        address: format!("127.0.0.1:{port}"),
        client_id: None,
        username: None,
        password_env: None,
        clean_session: false,
        keep_alive_secs: 5,
        subscribe: vec![BridgeFilter {
            filter: "site/#".into(),
            qos: 1,
        }],
        publish: vec![BridgeFilter {
            filter: "cloud/#".into(),
            qos: 1,
        }],
    }];
    let (g, addr) = start(cfg).await;
    let mut local = client4(addr, "local", true).await;
    local.subscribe("site/#", rumqttc::QoS::AtLeastOnce).await;

    // Remote -> stream -> local subscriber.
    publish_until_received(port, "site/a", "from-remote", &mut local).await;
    let stored = frames(dir.path(), "mqtt");
    let m = stored
        .iter()
        .find(|(_, p)| p == b"from-remote")
        .and_then(|(m, _)| m.clone())
        .expect("bridged frame in the stream");
    assert_eq!(m.client_id, "$bridge/site");
    assert_eq!(m.topic, "site/a");

    // Local publisher -> stream -> remote subscriber (not echoed back: no-local).
    let remote_addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut remote_sub = client4(remote_addr, "remote-sub", true).await;
    remote_sub
        .subscribe("cloud/#", rumqttc::QoS::AtLeastOnce)
        .await;
    let publ = client4(addr, "local-pub", true).await;
    publ.client
        .publish("cloud/up", rumqttc::QoS::AtLeastOnce, false, "to-remote")
        .await
        .unwrap();
    let p = remote_sub.next_publish().await;
    assert_eq!(
        (p.topic.as_str(), &p.payload[..]),
        ("cloud/up", &b"to-remote"[..])
    );

    // The remote broker restarts (losing its state): the bridge reconnects and resubscribes.
    drop(remote_sub);
    drop(remote);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _remote = start_broker(broker, port).await;
    publish_until_received(port, "site/b", "after-restart", &mut local).await;
    g.shutdown().await.unwrap();
}
