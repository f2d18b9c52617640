//! A mosquitto broker inside the namespace, listening on 192.0.2.1:1883, with persistence so
//! a graceful restart keeps sessions and queued messages.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::netns::NetNs;

pub struct Broker {
    child: Option<Child>,
    dir: PathBuf,
    ns_name: String,
}

impl Broker {
    pub fn start(ns: &NetNs) -> Self {
        let dir = std::env::temp_dir().join(format!("{}-mosquitto", ns.name()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf = format!(
            "listener 1883 192.0.2.1\nallow_anonymous true\npersistence true\n\
             persistence_location {}/\nmax_queued_messages 0\nmax_inflight_messages 0\n\
             log_dest stderr\nlog_type error\nuser root\n",
            dir.display()
        );
        std::fs::write(dir.join("mosquitto.conf"), conf).unwrap();
        let mut b = Broker {
            child: None,
            dir,
            ns_name: ns.name().to_owned(),
        };
        b.spawn(ns);
        b
    }

    fn spawn(&mut self, ns: &NetNs) {
        let child = ns
            .command("mosquitto")
            .arg("-c")
            .arg(self.dir.join("mosquitto.conf"))
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        wait_listening(&self.ns_name);
    }

    /// Stop gracefully (SIGTERM: mosquitto writes its persistence file).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `ip netns exec` execs mosquitto, so the child pid is mosquitto's.
            // SAFETY: plain kill(2) on a pid we spawned and have not reaped yet.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self, ns: &NetNs) {
        self.stop();
        self.spawn(ns);
    }
}

fn wait_listening(ns_name: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns_name, "ss", "-Hltn", "sport = :1883"])
            .output()
            .expect("ss");
        if !out.stdout.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("mosquitto did not start listening on 192.0.2.1:1883");
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
