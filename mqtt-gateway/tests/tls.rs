//! MQTT over TLS (feature `tls`), checked with mosquitto clients: server certificate verified
//! against a test CA, and client certificates required when `client_ca_file` is set.
//! Run with `cargo test -p ringway-mqtt-gateway --features tls --test tls`.
#![cfg(feature = "tls")]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use ringway_mqtt_gateway::config::TlsConfig;
use tokio::process::Command;

fn pem(name: &str) -> PathBuf {
    [env!("CARGO_MANIFEST_DIR"), "tests", "tls", name]
        .iter()
        .collect()
}

fn mosquitto_present() -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", "command -v mosquitto_pub"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = "mosquitto clients missing: run mqtt-gateway/tests/interop/install.sh";
        if std::env::var("RINGWAY_REQUIRE_INTEROP").is_ok_and(|v| v == "1") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    ok
}

async fn pub_tls(port: u16, extra: &[&str], payload: &str) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        Command::new("mosquitto_pub")
            .args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", "secure/t", "-m", payload])
            .arg("--cafile")
            .arg(pem("ca.pem"))
            .args(extra)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("mosquitto_pub finished")
    .expect("mosquitto_pub started");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_with_and_without_client_certificates() {
    if !mosquitto_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(TlsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        cert_file: pem("server.pem"),
        key_file: pem("server.key"),
        client_ca_file: None,
        handshake_timeout_secs: 5,
    });
    let g = ringway_mqtt_gateway::Gateway::start(cfg.clone())
        .await
        .unwrap();
    let port = g.tls_addrs()[0].port();
    let (ok, err) = pub_tls(port, &[], "over-tls").await;
    assert!(ok, "{err}");
    g.shutdown().await.unwrap();
    assert_eq!(frames(dir.path(), "mqtt")[0].1, b"over-tls");

    // Client certificates required.
    cfg.tls.as_mut().unwrap().client_ca_file = Some(pem("ca.pem"));
    let g = ringway_mqtt_gateway::Gateway::start(cfg).await.unwrap();
    let port = g.tls_addrs()[0].port();
    let (ok, _) = pub_tls(port, &[], "no-cert").await;
    assert!(!ok, "a client without certificate must be refused");
    let client_cert = pem("client.pem");
    let client_key = pem("client.key");
    let (ok, err) = pub_tls(
        port,
        &[
            "--cert",
            client_cert.to_str().unwrap(),
            "--key",
            client_key.to_str().unwrap(),
        ],
        "with-cert",
    )
    .await;
    assert!(ok, "{err}");
    g.shutdown().await.unwrap();
    let payloads: Vec<Vec<u8>> = frames(dir.path(), "mqtt")
        .into_iter()
        .map(|f| f.1)
        .collect();
    assert_eq!(payloads, vec![b"over-tls".to_vec(), b"with-cert".to_vec()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.tls = Some(TlsConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        cert_file: pem("missing.pem"),
        key_file: pem("server.key"),
        client_ca_file: None,
        handshake_timeout_secs: 5,
    });
    let e = ringway_mqtt_gateway::Gateway::start(cfg.clone())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("missing.pem"), "{e}");
    cfg.tls.as_mut().unwrap().cert_file = pem("server.key");
    let e = ringway_mqtt_gateway::Gateway::start(cfg).await.unwrap_err();
    assert!(e.to_string().contains("no certificate"), "{e}");
}
