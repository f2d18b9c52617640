//! A network namespace with a bridge at 192.0.2.1/24 and TAP devices for simulated devices.
//! Removed (with everything in it) on drop.

use std::io::Write;
use std::process::{Command, Stdio};

/// Address of the bridge inside the namespace, where the broker/gateway listens.
pub const HOST_IP: [u8; 4] = [192, 0, 2, 1];

pub struct NetNs {
    pub name: String,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn ip");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Fail with a clear message when the environment cannot run these tests.
pub fn require_root_and_tools() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "network-namespace simulation tests need root (they create a netns and TAP devices)"
    );
    for tool in ["ip", "mosquitto", "mosquitto_sub", "mosquitto_pub"] {
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

impl NetNs {
    /// Create namespace `rw-<tag>-<pid>` with bridge `rwbr0` (192.0.2.1/24) and `taps` TAP
    /// devices `rwtap<i>` enslaved to it.
    pub fn create(tag: &str, taps: usize) -> Self {
        let name = format!("rw-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        let mut batch = String::new();
        batch.push_str("link set lo up\n");
        batch.push_str("link add rwbr0 type bridge\n");
        batch.push_str("addr add 192.0.2.1/24 dev rwbr0\n");
        batch.push_str("link set rwbr0 up\n");
        for i in 0..taps {
            batch.push_str(&format!("tuntap add dev rwtap{i} mode tap\n"));
            batch.push_str(&format!("link set rwtap{i} master rwbr0\n"));
            batch.push_str(&format!("link set rwtap{i} up\n"));
        }
        let mut child = Command::new("ip")
            .args(["-n", &ns.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ip -batch");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(batch.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ip -batch: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ns
    }

    /// A command that runs inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Move the calling thread into the namespace (network namespaces are per thread).
    pub fn enter_current_thread(&self) {
        let path = format!("/var/run/netns/{}", self.name);
        let f = std::fs::File::open(&path).expect("open netns");
        use std::os::fd::AsRawFd;
        // SAFETY: `f` is an open namespace file descriptor for the duration of the call.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
