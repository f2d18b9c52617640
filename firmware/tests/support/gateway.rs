//! The Ringway MQTT gateway, in-process on its own tokio runtime whose threads live in the
//! test's namespace, listening on 192.0.2.1:1883 and storing into streams under `dir`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ringway_mqtt_gateway::{Config, Gateway};
use tokio::sync::oneshot;

use super::netns::NetNs;

pub struct GatewayHandle {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), ringway_firmware::sim::SimError>>>,
    pub dir: PathBuf,
}

pub const TELEMETRY_STREAM: &str = "telemetry";
pub const COMMAND_STREAM: &str = "commands";

fn config(dir: &Path) -> Config {
    let text = format!(
        r#"
[mqtt]
listen = ["192.0.2.1:1883"]
max_packet_size = 65536

[storage]
dir = "{}"
segment_size = 4194304

[[route]]
filter = "devices/+/telemetry"
stream = "{TELEMETRY_STREAM}"
key_level = 1
payload_type = "telemetry"

[[route]]
filter = "devices/+/cmd"
stream = "{COMMAND_STREAM}"
key_level = 1
outbound_topic = "devices/{{key}}/cmd"
"#,
        dir.display()
    );
    Config::from_toml(&text).expect("gateway config")
}

impl GatewayHandle {
    pub fn start(ns: &NetNs, dir: &Path) -> Self {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let cfg = config(dir);
        let thread = ns
            .spawn_in(move || {
                // Worker threads are spawned from this thread and so share its namespace.
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                let gateway = rt.block_on(async {
                    let gw = Gateway::start(cfg).await.expect("gateway start");
                    let _ = ready_tx.send(());
                    let _ = stop_rx.await;
                    gw
                });
                // An abrupt stop: connections are cut without DISCONNECT, nothing is flushed.
                rt.shutdown_timeout(Duration::from_millis(100));
                drop(gateway);
            })
            .expect("gateway thread in the namespace");
        ready_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("gateway did not start");
        GatewayHandle {
            stop: Some(stop_tx),
            thread: Some(thread),
            dir: dir.to_path_buf(),
        }
    }

    /// Stop abruptly: the runtime and every connection are torn down.
    pub fn kill(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    pub fn restart(&mut self, ns: &NetNs) {
        self.kill();
        *self = GatewayHandle::start(ns, &self.dir);
    }
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        self.kill();
    }
}
