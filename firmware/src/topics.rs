//! MQTT topic names of one device.

use core::fmt::Write;

use heapless::String;

use crate::wire::DeviceId;

/// Longest topic this crate builds.
pub const MAX_TOPIC_LEN: usize = 96;

/// Why topics could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TopicError {
    /// The prefix is empty, or contains a wildcard (`+`, `#`), a NUL, or an empty level.
    InvalidPrefix,
    /// A topic would be longer than [`MAX_TOPIC_LEN`].
    TooLong,
}

/// The topics a device uses: `{prefix}/{device}/telemetry` (readings, QoS 1),
/// `{prefix}/{device}/cmd` (commands, subscribed) and `{prefix}/{device}/status`
/// (retained `online`, last will `offline`). The device id is 16 lowercase hex digits.
///
/// With prefix `devices` these match the gateway's default route template `devices/{key}/cmd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// Topic readings are published on.
    pub telemetry: String<MAX_TOPIC_LEN>,
    /// Topic the device subscribes to for commands.
    pub command: String<MAX_TOPIC_LEN>,
    /// Topic of the online/offline status (also the last will's topic).
    pub status: String<MAX_TOPIC_LEN>,
}

fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && !prefix.contains(['+', '#', '\0'])
        && prefix.split('/').all(|level| !level.is_empty())
}

fn build(prefix: &str, id: DeviceId, leaf: &str) -> Result<String<MAX_TOPIC_LEN>, TopicError> {
    let mut s = String::new();
    write!(s, "{prefix}/{:016x}/{leaf}", id.0).map_err(|_| TopicError::TooLong)?;
    Ok(s)
}

impl Topics {
    /// Build the topics of device `id` under `prefix` (e.g. `devices` or `site1/devices`).
    pub fn new(prefix: &str, id: DeviceId) -> Result<Self, TopicError> {
        if !valid_prefix(prefix) {
            return Err(TopicError::InvalidPrefix);
        }
        Ok(Self {
            telemetry: build(prefix, id, "telemetry")?,
            command: build(prefix, id, "cmd")?,
            status: build(prefix, id, "status")?,
        })
    }
}

/// Format a client id `{prefix}-{device}` for the MQTT CONNECT packet.
pub fn client_id(prefix: &str, id: DeviceId) -> Result<String<64>, TopicError> {
    let mut s = String::new();
    write!(s, "{prefix}-{:016x}", id.0).map_err(|_| TopicError::TooLong)?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_device_topics() {
        let t = Topics::new("devices", DeviceId(0xabc)).unwrap();
        assert_eq!(t.telemetry.as_str(), "devices/0000000000000abc/telemetry");
        assert_eq!(t.command.as_str(), "devices/0000000000000abc/cmd");
        assert_eq!(t.status.as_str(), "devices/0000000000000abc/status");
        assert_eq!(
            client_id("rw", DeviceId(u64::MAX)).unwrap().as_str(),
            "rw-ffffffffffffffff"
        );
    }

    #[test]
    fn rejects_bad_prefixes() {
        for bad in ["", "a/+", "#", "a//b", "/a", "a/", "x\0"] {
            assert_eq!(
                Topics::new(bad, DeviceId(1)),
                Err(TopicError::InvalidPrefix),
                "{bad:?}"
            );
        }
        assert!(Topics::new("site-1/devices", DeviceId(1)).is_ok());
    }

    #[test]
    fn overlong_prefix_is_an_error() {
        let long = "p".repeat(MAX_TOPIC_LEN);
        assert_eq!(Topics::new(&long, DeviceId(1)), Err(TopicError::TooLong));
        assert_eq!(client_id(&long, DeviceId(1)), Err(TopicError::TooLong));
    }
}
