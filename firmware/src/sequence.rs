//! Per-boot sequence numbering of readings.

/// Hands out `0, 1, 2, ...` for one boot of the device.
///
/// Together with the device id and the boot id it identifies a reading uniquely, which lets
/// the gateway drop QoS 1 redeliveries (exactly-once into the journal).
#[derive(Debug, Clone)]
pub struct Sequencer {
    boot_id: u32,
    next: u64,
}

impl Sequencer {
    /// Start numbering for boot `boot_id` at 0.
    pub const fn new(boot_id: u32) -> Self {
        Self { boot_id, next: 0 }
    }

    /// The boot id this sequencer numbers for.
    pub const fn boot_id(&self) -> u32 {
        self.boot_id
    }

    /// The number the next call to [`Sequencer::next_seq`] returns.
    pub const fn peek(&self) -> u64 {
        self.next
    }

    /// Take the next sequence number. Strictly increasing; a `u64` does not wrap in practice
    /// (at a million readings per second it lasts 584,000 years), and saturates if it would.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next;
        self.next = self.next.saturating_add(1);
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::Sequencer;

    #[test]
    fn strictly_increasing_from_zero() {
        let mut s = Sequencer::new(5);
        let got: Vec<u64> = (0..5).map(|_| s.next_seq()).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        assert_eq!(s.peek(), 5);
        assert_eq!(s.boot_id(), 5);
    }

    #[test]
    fn saturates_instead_of_wrapping() {
        let mut s = Sequencer {
            boot_id: 0,
            next: u64::MAX - 1,
        };
        assert_eq!(s.next_seq(), u64::MAX - 1);
        assert_eq!(s.next_seq(), u64::MAX);
        assert_eq!(s.next_seq(), u64::MAX);
    }
}
