//! A network namespace with a bridge at 192.0.2.1/24 and TAP devices for simulated devices,
//! deleted (with everything in it) when dropped.

use std::format;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::prelude::rust_2021::*;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;

use super::SimError;

/// Address of the bridge inside the namespace: where the gateway (or broker) listens.
pub const HOST_IP: [u8; 4] = [192, 0, 2, 1];

/// Checks that this process can create namespaces and TAP devices: root, `ip`, `/dev/net/tun`.
pub fn check_environment() -> Result<(), SimError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(SimError::NotRoot);
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err(SimError::Missing("/dev/net/tun"));
    }
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !ip.is_ok_and(|s| s.success()) {
        return Err(SimError::Missing("ip"));
    }
    Ok(())
}

/// A network namespace `rw-<tag>-<pid>` holding bridge `rwbr0` (192.0.2.1/24) and TAP devices
/// `rwtap0..` enslaved to it. Dropping it deletes the namespace.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    taps: usize,
}

fn run(cmd: &mut Command) -> Result<(), SimError> {
    let line = format!("{cmd:?}");
    let out = cmd
        .output()
        .map_err(|e| SimError::io(format!("starting {line}"), e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(SimError::Command {
            command: line,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

impl NetNs {
    /// Creates the namespace with `taps` TAP devices (a stale one of the same name, left by a
    /// killed run of this process id, is deleted first).
    pub fn create(tag: &str, taps: usize) -> Result<Self, SimError> {
        let name = format!("rw-{tag}-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run(Command::new("ip").args(["netns", "add", &name]))?;
        // From here on, dropping `ns` deletes the namespace again.
        let ns = NetNs { name, taps };
        let mut batch = String::from(
            "link set lo up\nlink add rwbr0 type bridge\naddr add 192.0.2.1/24 dev rwbr0\n\
             link set rwbr0 up\n",
        );
        for i in 0..taps {
            batch.push_str(&format!(
                "tuntap add dev rwtap{i} mode tap\nlink set rwtap{i} master rwbr0\n\
                 link set rwtap{i} up\n"
            ));
        }
        let mut child = Command::new("ip")
            .args(["-n", &ns.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| SimError::io("starting ip -batch", e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(batch.as_bytes())
                .map_err(|e| SimError::io("writing to ip -batch", e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| SimError::io("waiting for ip -batch", e))?;
        if !out.status.success() {
            return Err(SimError::Command {
                command: format!("ip -n {} -batch -", ns.name),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(ns)
    }

    /// The namespace's name (as `ip netns` lists it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of TAP devices (`rwtap0` .. `rwtap{taps-1}`).
    pub fn taps(&self) -> usize {
        self.taps
    }

    /// A command that runs inside the namespace (`ip netns exec NAME PROGRAM`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Moves the calling thread into the namespace (network namespaces are per thread; threads
    /// it spawns afterwards start in it too, and sockets it creates belong to it).
    pub fn enter_current_thread(&self) -> Result<(), SimError> {
        let path = format!("/var/run/netns/{}", self.name);
        let f =
            std::fs::File::open(&path).map_err(|e| SimError::io(format!("opening {path}"), e))?;
        // SAFETY: `f` is an open namespace file descriptor for the duration of the call, and
        // setns only changes the calling thread's network namespace.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(SimError::io("setns", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Runs `f` on a new thread inside the namespace. Everything that thread spawns (e.g. a
    /// tokio runtime's workers) lives in the namespace as well. The thread keeps the namespace
    /// alive while it runs, even after this handle deleted its name.
    pub fn spawn_in<F, T>(&self, f: F) -> Result<JoinHandle<Result<T, SimError>>, SimError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let ns =
            std::fs::File::open(&path).map_err(|e| SimError::io(format!("opening {path}"), e))?;
        std::thread::Builder::new()
            .name(format!("{}-thread", self.name))
            .spawn(move || {
                // SAFETY: `ns` is an open namespace file descriptor owned by this closure, and
                // setns only changes the calling (new) thread's network namespace.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(SimError::io("setns", std::io::Error::last_os_error()));
                }
                drop(ns);
                Ok(f())
            })
            .map_err(|e| SimError::io("spawning a thread", e))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
