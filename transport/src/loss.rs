//! Fault injection for tests and diagnostics: drops, duplicates and reorders a configurable
//! fraction of datagrams on send and on receive, wrapping any [`DatagramIo`].

use std::net::SocketAddr;
use std::time::Duration;

use crate::io::{Backend, DatagramIo, IoCounters};

/// Fractions (0.0..=1.0) of datagrams affected in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossRates {
    /// Dropped.
    pub drop: f64,
    /// Delivered twice.
    pub duplicate: f64,
    /// Held back and delivered after the next datagram (or at the end of the current poll).
    pub reorder: f64,
}

impl LossRates {
    /// The same fraction for drop, duplicate and reorder.
    pub fn uniform(p: f64) -> Self {
        LossRates {
            drop: p,
            duplicate: p,
            reorder: p,
        }
    }

    /// Only drops.
    pub fn drop_only(p: f64) -> Self {
        LossRates {
            drop: p,
            ..Self::default()
        }
    }

    fn is_none(&self) -> bool {
        self.drop <= 0.0 && self.duplicate <= 0.0 && self.reorder <= 0.0
    }
}

/// Loss injection configuration.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossConfig {
    /// Applied to datagrams this side sends.
    pub send: LossRates,
    /// Applied to datagrams this side receives.
    pub recv: LossRates,
    /// Seed of the pseudo-random generator (same seed, same decisions).
    pub seed: u64,
}

/// What the injector did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossCounters {
    /// Datagrams dropped.
    pub dropped: u64,
    /// Datagrams duplicated.
    pub duplicated: u64,
    /// Datagrams reordered.
    pub reordered: u64,
}

/// SplitMix64: small, fast, good enough to pick datagrams.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

enum Fate {
    Drop,
    Duplicate,
    Reorder,
    Pass,
}

fn fate(rng: &mut Rng, r: &LossRates, c: &mut LossCounters) -> Fate {
    if r.is_none() {
        return Fate::Pass;
    }
    if rng.next_f64() < r.drop {
        c.dropped += 1;
        return Fate::Drop;
    }
    if rng.next_f64() < r.duplicate {
        c.duplicated += 1;
        return Fate::Duplicate;
    }
    if rng.next_f64() < r.reorder {
        c.reordered += 1;
        return Fate::Reorder;
    }
    Fate::Pass
}

/// A [`DatagramIo`] that injects faults into another.
pub struct LossyIo {
    inner: Box<dyn DatagramIo>,
    cfg: LossConfig,
    rng: Rng,
    held_send: Option<(Vec<u8>, SocketAddr)>,
    counters_send: LossCounters,
    counters_recv: LossCounters,
}

impl LossyIo {
    /// Wraps `inner`.
    pub fn new(inner: Box<dyn DatagramIo>, cfg: LossConfig) -> Self {
        LossyIo {
            inner,
            rng: Rng(cfg.seed ^ 0x5eed),
            cfg,
            held_send: None,
            counters_send: LossCounters::default(),
            counters_recv: LossCounters::default(),
        }
    }

    /// What was injected on send and on receive.
    pub fn loss_counters(&self) -> (LossCounters, LossCounters) {
        (self.counters_send, self.counters_recv)
    }

    fn release_held(&mut self) -> std::io::Result<()> {
        if let Some((d, to)) = self.held_send.take() {
            self.inner.send_to(&d, to)?;
        }
        Ok(())
    }
}

impl DatagramIo for LossyIo {
    fn send_to(&mut self, data: &[u8], to: SocketAddr) -> std::io::Result<()> {
        match fate(&mut self.rng, &self.cfg.send, &mut self.counters_send) {
            Fate::Drop => Ok(()),
            Fate::Duplicate => {
                self.inner.send_to(data, to)?;
                self.inner.send_to(data, to)?;
                self.release_held()
            }
            Fate::Reorder => {
                self.release_held()?;
                self.held_send = Some((data.to_vec(), to));
                Ok(())
            }
            Fate::Pass => {
                self.inner.send_to(data, to)?;
                self.release_held()
            }
        }
    }

    fn poll(
        &mut self,
        timeout: Duration,
        on_recv: &mut dyn FnMut(&[u8], SocketAddr),
    ) -> std::io::Result<usize> {
        self.release_held()?;
        let cfg = self.cfg.recv;
        let rng = &mut self.rng;
        let c = &mut self.counters_recv;
        let mut held: Option<(Vec<u8>, SocketAddr)> = None;
        let mut n = 0;
        self.inner
            .poll(timeout, &mut |d, from| match fate(rng, &cfg, c) {
                Fate::Drop => {}
                Fate::Duplicate => {
                    on_recv(d, from);
                    on_recv(d, from);
                    n += 2;
                }
                Fate::Reorder => {
                    if let Some((h, f)) = held.take() {
                        on_recv(&h, f);
                        n += 1;
                    }
                    held = Some((d.to_vec(), from));
                }
                Fate::Pass => {
                    on_recv(d, from);
                    n += 1;
                    if let Some((h, f)) = held.take() {
                        on_recv(&h, f);
                        n += 1;
                    }
                }
            })?;
        if let Some((h, f)) = held.take() {
            on_recv(&h, f);
            n += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        // A datagram held back for reordering stays held until the next send or poll.
        self.inner.flush()
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn backend(&self) -> Backend {
        self.inner.backend()
    }

    fn counters(&self) -> IoCounters {
        self.inner.counters()
    }

    fn recv_buffer_size(&self) -> Option<usize> {
        self.inner.recv_buffer_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{open_udp, UdpOptions};

    fn pair(cfg: LossConfig) -> (LossyIo, Box<dyn DatagramIo>) {
        let opts = UdpOptions {
            backend: crate::io::Backend::Plain,
            ..Default::default()
        };
        let a = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let b = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        (LossyIo::new(a, cfg), b)
    }

    fn run(cfg: LossConfig, n: u32) -> (Vec<u32>, LossCounters) {
        let (mut a, mut b) = pair(cfg);
        let to = b.local_addr().unwrap();
        let mut got = vec![];
        for i in 0..n {
            a.send_to(&i.to_le_bytes(), to).unwrap();
            if i % 50 == 49 {
                a.poll(Duration::ZERO, &mut |_, _| {}).unwrap();
                while b
                    .poll(Duration::from_millis(20), &mut |d, _| {
                        got.push(u32::from_le_bytes(d.try_into().unwrap()))
                    })
                    .unwrap()
                    > 0
                {}
            }
        }
        (got, a.loss_counters().0)
    }

    #[test]
    fn drop_fraction_is_close_to_configured() {
        let cfg = LossConfig {
            send: LossRates::drop_only(0.2),
            seed: 1,
            ..Default::default()
        };
        let (got, c) = run(cfg, 5000);
        assert_eq!(got.len() as u64, 5000 - c.dropped);
        let frac = c.dropped as f64 / 5000.0;
        assert!((0.17..0.23).contains(&frac), "{frac}");
        assert!(got.windows(2).all(|w| w[0] < w[1]), "drop only keeps order");
    }

    #[test]
    fn duplicate_and_reorder_happen() {
        let cfg = LossConfig {
            send: LossRates {
                drop: 0.0,
                duplicate: 0.1,
                reorder: 0.1,
            },
            seed: 2,
            ..Default::default()
        };
        let (got, c) = run(cfg, 2000);
        assert!(c.duplicated > 100 && c.reordered > 100, "{c:?}");
        assert_eq!(got.len() as u64, 2000 + c.duplicated);
        assert!(
            got.windows(2).any(|w| w[0] > w[1]),
            "some datagrams reordered"
        );
        assert!(
            got.windows(2).any(|w| w[0] == w[1]),
            "some datagrams duplicated"
        );
    }

    #[test]
    fn receive_side_drops() {
        let opts = UdpOptions {
            backend: crate::io::Backend::Plain,
            ..Default::default()
        };
        let a = open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap();
        let mut b = LossyIo::new(
            open_udp("127.0.0.1:0".parse().unwrap(), &opts).unwrap(),
            LossConfig {
                recv: LossRates::drop_only(0.5),
                seed: 3,
                ..Default::default()
            },
        );
        let mut a = a;
        let to = b.local_addr().unwrap();
        for i in 0..400u32 {
            a.send_to(&i.to_le_bytes(), to).unwrap();
        }
        let mut n = 0;
        while b
            .poll(Duration::from_millis(50), &mut |_, _| n += 1)
            .unwrap()
            > 0
        {}
        let dropped = b.loss_counters().1.dropped;
        assert_eq!(n + dropped, 400);
        assert!((120..280).contains(&dropped), "{dropped}");
    }
}
