//! The simulation's network namespace (`ringway_firmware::sim::NetNs`), with the checks these
//! tests need.

use std::process::{Command, Stdio};

pub use ringway_firmware::sim::NetNs;

/// Fail with a clear message when the environment cannot run these tests.
pub fn require_root_and_tools() {
    if let Err(e) = ringway_firmware::sim::check_environment() {
        panic!("network-namespace simulation tests cannot run: {e}");
    }
    for tool in ["mosquitto", "mosquitto_sub", "mosquitto_pub"] {
        let found = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            found,
            "`{tool}` not found: apt-get install iproute2 mosquitto mosquitto-clients"
        );
    }
}

/// A namespace `rw-<tag>-<pid>` with `taps` TAP devices.
pub fn create_ns(tag: &str, taps: usize) -> NetNs {
    NetNs::create(tag, taps).expect("network namespace")
}
