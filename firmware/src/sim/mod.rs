//! Host simulation (feature `sim`, needs `std`): the **same** firmware session and outbox on
//! embassy's std executor, each simulated device with its own embassy-net stack on its own TAP
//! device inside a network namespace ([`NetNs`]) with a documentation-range subnet
//! (192.0.2.0/24, the host side at [`HOST_IP`]).
//!
//! Used by this crate's end-to-end tests and by the benchmark harness (`ringway-bench mqtt`).
//! Creating namespaces and TAP devices needs root, `ip` (iproute2) and `/dev/net/tun`;
//! [`check_environment`] says what is missing.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringway_firmware::sim::{spawn_devices, DeviceSpec, NetNs, Pace, SimOptions};
//! use ringway_firmware::wire::DeviceId;
//!
//! ringway_firmware::sim::check_environment()?;
//! let ns = NetNs::create("demo", 1)?;
//! // ... start a gateway listening on 192.0.2.1:1883 inside `ns` ...
//! let spec = DeviceSpec::new(DeviceId(0x42), 1_000, Pace::Period(Duration::from_millis(1)));
//! let devices = spawn_devices(&ns, vec![spec], &SimOptions::default())?;
//! devices[0].wait_all_acked(Duration::from_secs(60))?;
//! # Ok::<(), ringway_firmware::sim::SimError>(())
//! ```

use std::prelude::rust_2021::*;

mod device;
mod netns;

pub use device::{spawn_devices, DeviceSpec, Pace, SimDevice, SimOptions, SimOutbox, RING, WINDOW};
pub use netns::{check_environment, NetNs, HOST_IP};

/// Why a simulation could not be set up or did not finish.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Namespaces and TAP devices need root.
    #[error("the simulation needs root (it creates a network namespace and TAP devices)")]
    NotRoot,
    /// A required program or device node is absent.
    #[error("`{0}` not found (the simulation needs iproute2 and /dev/net/tun)")]
    Missing(&'static str),
    /// A command (`ip ...`) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        source: std::io::Error,
    },
    /// More devices than the simulation's task pools hold.
    #[error("{0} devices asked for; at most {max} per call", max = device::MAX_DEVICES)]
    TooManyDevices(usize),
    /// The namespace has fewer TAP devices than the devices asked for.
    #[error("{needed} TAP devices needed, the namespace has {have}")]
    NotEnoughTaps {
        /// TAP devices needed (`first_tap` + devices).
        needed: usize,
        /// TAP devices in the namespace.
        have: usize,
    },
    /// The embassy executor could not spawn a task.
    #[error("embassy task pool: {0}")]
    TaskPool(String),
    /// The firmware refused the session configuration.
    #[error("session configuration refused: {0:?}")]
    Session(crate::SessionError),
    /// Something expected did not happen in time.
    #[error("{0}")]
    Timeout(String),
}

impl SimError {
    fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        SimError::Io {
            context: context.into(),
            source,
        }
    }
}
