//! Commands sent from host processes to a device.

use rkyv::{Archive, Deserialize, Serialize};

use super::DeviceId;

/// What a device is asked to do.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Action {
    /// Liveness check: the device answers with its next telemetry; `token` is opaque.
    Ping {
        /// Opaque value chosen by the sender.
        token: u64,
    },
    /// Change the sampling period.
    SetInterval {
        /// New period in milliseconds.
        period_ms: u32,
    },
    /// Drive an output channel (relay, DAC, PWM duty).
    SetOutput {
        /// Output channel.
        channel: u16,
        /// Value in the output's unit.
        value: f32,
    },
    /// Restart the device.
    Reboot,
}

/// A command addressed to one device.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Command {
    /// The device the command is for.
    pub device_id: DeviceId,
    /// Sender-chosen id, echoed in logs and used to drop redelivered commands.
    pub command_id: u64,
    /// What to do.
    pub action: Action,
}

impl ArchivedCommand {
    /// The command id as a native integer.
    pub fn command_id(&self) -> u64 {
        self.command_id.to_native()
    }
}
