//! Device telemetry: a batch of sensor readings with the identity needed for deduplication.

use rkyv::{Archive, Deserialize, Serialize};

use super::WireError;

/// Maximum number of readings one [`Telemetry`] value carries.
///
/// The count is fixed so the archived size is a constant ([`TELEMETRY_WIRE_SIZE`]
/// (super::TELEMETRY_WIRE_SIZE)) and a device can size its buffers at compile time.
pub const MAX_READINGS: usize = 8;

/// A device's identity (for example derived from the MCU's unique id).
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceId(pub u64);

impl ArchivedDeviceId {
    /// The id as a native integer.
    pub fn get(&self) -> u64 {
        self.0.to_native()
    }
}

/// What a reading measures, with its unit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Quantity {
    /// Degrees Celsius.
    Temperature,
    /// Relative humidity in percent.
    Humidity,
    /// Pascal.
    Pressure,
    /// Volt.
    Voltage,
    /// Ampere.
    Current,
    /// A dimensionless count.
    Count,
    /// Application-defined quantity.
    Other,
}

/// One sensor reading.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Reading {
    /// Sensor channel on the device.
    pub channel: u16,
    /// What is measured.
    pub quantity: Quantity,
    /// The value in the quantity's unit.
    pub value: f32,
}

impl Reading {
    /// A reading of `quantity` on `channel`.
    pub const fn new(channel: u16, quantity: Quantity, value: f32) -> Self {
        Self {
            channel,
            quantity,
            value,
        }
    }

    const EMPTY: Self = Self::new(0, Quantity::Other, 0.0);
}

/// A batch of readings taken at one instant by one device.
///
/// `(device_id, boot_id, seq)` is unique per reading: `seq` increases by one for every
/// telemetry value a device produces and restarts at zero only together with a new `boot_id`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
#[rkyv(derive(Debug), bytecheck(verify))]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Telemetry {
    /// The device that took the readings.
    pub device_id: DeviceId,
    /// Identifies one run of the device's firmware (a persisted reboot counter or a random
    /// value chosen at boot), so sequence numbers restarting after a reboot are not mistaken
    /// for duplicates.
    pub boot_id: u32,
    /// Per-boot sequence number, starting at 0, increasing by one per telemetry value.
    pub seq: u64,
    /// Device uptime in milliseconds when the readings were taken.
    pub uptime_ms: u64,
    len: u8,
    readings: [Reading; MAX_READINGS],
}

impl Telemetry {
    /// An empty batch.
    pub const fn new(device_id: DeviceId, boot_id: u32, seq: u64, uptime_ms: u64) -> Self {
        Self {
            device_id,
            boot_id,
            seq,
            uptime_ms,
            len: 0,
            readings: [Reading::EMPTY; MAX_READINGS],
        }
    }

    /// A batch holding `readings` (at most [`MAX_READINGS`]).
    pub fn with_readings(
        device_id: DeviceId,
        boot_id: u32,
        seq: u64,
        uptime_ms: u64,
        readings: &[Reading],
    ) -> Result<Self, WireError> {
        let mut t = Self::new(device_id, boot_id, seq, uptime_ms);
        for r in readings {
            t.push(*r)?;
        }
        Ok(t)
    }

    /// Append one reading.
    pub fn push(&mut self, reading: Reading) -> Result<(), WireError> {
        let slot = self
            .readings
            .get_mut(usize::from(self.len))
            .ok_or(WireError::TooManyReadings)?;
        *slot = reading;
        self.len += 1;
        Ok(())
    }

    /// The readings in this batch.
    pub fn readings(&self) -> &[Reading] {
        &self.readings[..usize::from(self.len)]
    }
}

impl ArchivedTelemetry {
    /// The readings in this batch (validated access guarantees `len <= MAX_READINGS`).
    pub fn readings(&self) -> &[ArchivedReading] {
        let len = usize::from(self.len).min(MAX_READINGS);
        &self.readings[..len]
    }

    /// The sequence number as a native integer.
    pub fn seq(&self) -> u64 {
        self.seq.to_native()
    }

    /// The boot id as a native integer.
    pub fn boot_id(&self) -> u32 {
        self.boot_id.to_native()
    }

    /// The device id as a native integer.
    pub fn device_id(&self) -> u64 {
        self.device_id.get()
    }

    /// Device uptime in milliseconds.
    pub fn uptime_ms(&self) -> u64 {
        self.uptime_ms.to_native()
    }

    #[cfg(test)]
    pub(super) fn len_field(&self) -> &u8 {
        &self.len
    }
}

impl ArchivedReading {
    /// The value as a native float.
    pub fn value(&self) -> f32 {
        self.value.to_native()
    }

    /// The channel as a native integer.
    pub fn channel(&self) -> u16 {
        self.channel.to_native()
    }
}

#[derive(Debug)]
struct TooManyReadingsArchived;

impl core::fmt::Display for TooManyReadingsArchived {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("archived telemetry holds more than MAX_READINGS readings")
    }
}

impl core::error::Error for TooManyReadingsArchived {}

// SAFETY: `verify` only returns Ok when `len <= MAX_READINGS`, the one invariant of
// `ArchivedTelemetry` that its fields' own checks do not cover.
unsafe impl<C> rkyv::bytecheck::Verify<C> for ArchivedTelemetry
where
    C: rkyv::rancor::Fallible + ?Sized,
    C::Error: rkyv::rancor::Source,
{
    fn verify(&self, _context: &mut C) -> Result<(), C::Error> {
        if usize::from(self.len) > MAX_READINGS {
            rkyv::rancor::fail!(TooManyReadingsArchived);
        }
        Ok(())
    }
}
