//! Delivery of commands received on the device's command topic to the application.

use crate::wire::{
    access_command, ArchivedCommand, DeviceId, WireBuf, WireError, COMMAND_WIRE_SIZE,
};

/// Receives commands addressed to this device.
///
/// Called from the session task while it holds the connection: keep it short (store the
/// command, signal another task) so keep-alive and acknowledgements are not delayed.
pub trait CommandHandler {
    /// A validated command for this device.
    fn on_command(&mut self, command: &ArchivedCommand);

    /// A message on the command topic that was rejected.
    fn on_rejected(&mut self, _reason: CommandRejection) {}
}

impl<F: FnMut(&ArchivedCommand)> CommandHandler for F {
    fn on_command(&mut self, command: &ArchivedCommand) {
        self(command)
    }
}

/// Why a message on the command topic was not handed to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CommandRejection {
    /// The payload is not a valid archived command.
    Invalid(WireError),
    /// The command names another device.
    WrongDevice(u64),
    /// The same command id was delivered recently (QoS 1 redelivery).
    Duplicate(u64),
}

/// Validates inbound command payloads and suppresses redeliveries of recent command ids.
pub(crate) struct CommandFilter {
    device_id: DeviceId,
    recent: [Option<u64>; 8],
    next: usize,
    buf: WireBuf<COMMAND_WIRE_SIZE>,
}

impl CommandFilter {
    pub(crate) const fn new(device_id: DeviceId) -> Self {
        Self {
            device_id,
            recent: [None; 8],
            next: 0,
            buf: WireBuf::new(),
        }
    }

    /// Validate `payload` and hand it to `handler`. Returns whether it was delivered.
    pub(crate) fn deliver<H: CommandHandler + ?Sized>(
        &mut self,
        payload: &[u8],
        handler: &mut H,
    ) -> bool {
        let outcome = self.check(payload);
        match outcome {
            Ok(()) => {
                // Cannot fail: `check` validated exactly these bytes.
                if let Ok(cmd) = access_command(&self.buf.0[..payload.len()]) {
                    handler.on_command(cmd);
                    return true;
                }
                false
            }
            Err(reason) => {
                handler.on_rejected(reason);
                false
            }
        }
    }

    fn check(&mut self, payload: &[u8]) -> Result<(), CommandRejection> {
        let bytes = self.buf.load(payload).map_err(|_| {
            CommandRejection::Invalid(WireError::WrongLength {
                expected: COMMAND_WIRE_SIZE,
                actual: payload.len(),
            })
        })?;
        let cmd = access_command(bytes).map_err(CommandRejection::Invalid)?;
        let target = cmd.device_id.get();
        if target != self.device_id.0 {
            return Err(CommandRejection::WrongDevice(target));
        }
        let id = cmd.command_id();
        if self.recent.contains(&Some(id)) {
            return Err(CommandRejection::Duplicate(id));
        }
        self.recent[self.next] = Some(id);
        self.next = (self.next + 1) % self.recent.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{encode_command, Action, Command};

    #[derive(Default)]
    struct Collect {
        ok: Vec<u64>,
        rejected: Vec<CommandRejection>,
    }

    impl CommandHandler for Collect {
        fn on_command(&mut self, command: &ArchivedCommand) {
            self.ok.push(command.command_id());
        }
        fn on_rejected(&mut self, reason: CommandRejection) {
            self.rejected.push(reason);
        }
    }

    fn encoded(device: u64, id: u64) -> Vec<u8> {
        let mut out = WireBuf::<64>::new();
        encode_command(
            &Command {
                device_id: DeviceId(device),
                command_id: id,
                action: Action::SetInterval { period_ms: 500 },
            },
            &mut out,
        )
        .unwrap()
        .to_vec()
    }

    #[test]
    fn delivers_valid_commands_and_rejects_the_rest() {
        let mut f = CommandFilter::new(DeviceId(7));
        let mut h = Collect::default();
        assert!(f.deliver(&encoded(7, 1), &mut h));
        assert!(!f.deliver(&encoded(7, 1), &mut h)); // redelivery
        assert!(!f.deliver(&encoded(8, 2), &mut h)); // other device
        assert!(!f.deliver(b"garbage", &mut h));
        assert!(!f.deliver(&[0u8; 4096], &mut h));
        assert!(f.deliver(&encoded(7, 3), &mut h));
        assert_eq!(h.ok, vec![1, 3]);
        assert_eq!(h.rejected.len(), 4);
        assert_eq!(h.rejected[0], CommandRejection::Duplicate(1));
        assert_eq!(h.rejected[1], CommandRejection::WrongDevice(8));
    }

    #[test]
    fn remembers_only_recent_ids() {
        let mut f = CommandFilter::new(DeviceId(7));
        let mut h = Collect::default();
        for id in 0..9 {
            assert!(f.deliver(&encoded(7, id), &mut h));
        }
        // Id 0 fell out of the window of eight.
        assert!(f.deliver(&encoded(7, 0), &mut h));
        assert!(!f.deliver(&encoded(7, 8), &mut h));
    }
}
