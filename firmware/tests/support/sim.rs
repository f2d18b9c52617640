//! Simulated devices (`ringway_firmware::sim`): the real firmware session and outbox on
//! embassy's std executor, each with its own embassy-net stack on its own TAP device.

use std::time::Duration;

#[allow(unused_imports)] // each test binary uses a part
pub use ringway_firmware::sim::{DeviceSpec, Pace, SimDevice, WINDOW};
use ringway_firmware::sim::{NetNs, SimOptions};

/// `Pace::Flood` for a zero period, else one reading per `period`.
pub fn pace(period: Duration) -> Pace {
    if period.is_zero() {
        Pace::Flood
    } else {
        Pace::Period(period)
    }
}

/// Start `specs.len()` devices (device `i` on TAP `rwtap<i>`, IP 192.0.2.(10+i)).
pub fn spawn_devices(ns: &NetNs, specs: Vec<DeviceSpec>, backoff_max: Duration) -> Vec<SimDevice> {
    spawn_devices_with(ns, specs, backoff_max, Duration::from_secs(5))
}

/// [`spawn_devices`] with a chosen acknowledgement timeout.
pub fn spawn_devices_with(
    ns: &NetNs,
    specs: Vec<DeviceSpec>,
    backoff_max: Duration,
    ack_timeout: Duration,
) -> Vec<SimDevice> {
    let options = SimOptions {
        backoff_max,
        ack_timeout,
        ..SimOptions::default()
    };
    ringway_firmware::sim::spawn_devices(ns, specs, &options).expect("simulated devices")
}
