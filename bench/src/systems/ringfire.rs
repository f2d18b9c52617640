//! ringfire (its published crate): two SPSC rings in the run's /dev/shm directory, one per direction, busy
//! polling with `try_recv`. ringfire's rings carry fixed-size `Copy` items, so the payload is a `[u8; N]` and
//! only the sizes listed in [`SIZES`] are compiled in.
//!
//! As a one-directional [`Channel`] (throughput, oneway, fanout) it is one SPMC ring with lossless back-pressure
//! (the producer waits for the slowest registered reader instead of lapping it), `try_push` / `recv_status`
//! busy-polled.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use ringfire::{
    FlowControl, RecvStatus, RingConsumer, RingProducer, RingProducerBuilder, RingfireError,
};

use super::channel::{limits, take_once, ChanCtx, Channel, Rx, Tx};
use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// Payload sizes the ringfire peer supports.
pub const SIZES: &[usize] = &[
    8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536,
];

/// Ring capacity (slots) for `N`-byte items: 4096, or fewer for large items so a ring stays within 64 MiB.
const fn capacity(n: usize) -> u64 {
    let slots = (64 << 20) / n;
    if slots > 4096 {
        4096
    } else {
        slots as u64
    }
}

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError::system("ringfire", e)
}

/// Parent state for payload size `N`.
pub struct Ringfire<const N: usize> {
    ping: RingProducer<[u8; N]>,
    pong_path: PathBuf,
}

/// Timed side.
pub struct RingfirePinger<const N: usize> {
    ping: RingProducer<[u8; N]>,
    pong: RingConsumer<[u8; N]>,
    buf: [u8; N],
    ctx: PingCtx,
}

/// Echo side.
pub struct RingfireEcho<const N: usize> {
    ping: RingConsumer<[u8; N]>,
    pong: RingProducer<[u8; N]>,
    ctx: PingCtx,
}

impl<const N: usize> PingPong for Ringfire<N> {
    const NAME: &'static str = "ringfire";
    type Pinger = RingfirePinger<N>;
    type Echo = RingfireEcho<N>;

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let ping_path = ctx.dir.join("ringfire-ping");
        let pong_path = ctx.dir.join("ringfire-pong");
        let ping = RingProducer::<[u8; N]>::create(&ping_path, capacity(N)).map_err(err)?;
        Ok((
            Ringfire {
                ping,
                pong_path: pong_path.clone(),
            },
            EchoSpec {
                args: vec![
                    ping_path.display().to_string(),
                    pong_path.display().to_string(),
                ],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<RingfireEcho<N>> {
        let [ping_path, pong_path] = <[String; 2]>::try_from(spec.args)
            .map_err(|_| err("echo side needs the two ring paths"))?;
        // The echo side creates the pong ring before reporting ready, so the pinger can attach to it.
        let pong = RingProducer::<[u8; N]>::create(&pong_path, capacity(N)).map_err(err)?;
        let ping = RingConsumer::<[u8; N]>::attach(&ping_path).map_err(err)?;
        Ok(RingfireEcho {
            ping,
            pong,
            ctx: ctx.clone(),
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<RingfirePinger<N>> {
        let pong = RingConsumer::<[u8; N]>::attach(&self.pong_path).map_err(err)?;
        Ok(RingfirePinger {
            ping: self.ping,
            pong,
            buf: [0u8; N],
            ctx: ctx.clone(),
        })
    }
}

impl<const N: usize> Pinger for RingfirePinger<N> {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        stamp(&mut self.buf, seq);
        self.ping.push(&self.buf);
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(reply) = self.pong.try_recv() {
                return check_reply("ringfire", &reply, N, seq);
            }
            spin.spin("the ringfire echo")?;
        }
    }
}

impl<const N: usize> Echo for RingfireEcho<N> {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(msg) = self.ping.try_recv() {
                self.pong.push(&msg);
                return Ok(());
            }
            spin.spin("a ringfire ping")?;
        }
    }
}

/// What the endpoints of one ring share: the producer (taken by the writer) and the ring's path.
pub struct RingfireShared<const N: usize> {
    producer: Mutex<Option<RingProducer<[u8; N]>>>,
    path: PathBuf,
}

/// The writer of a ring.
pub struct RingfireTx<const N: usize> {
    producer: RingProducer<[u8; N]>,
    buf: [u8; N],
    timeout: Duration,
}

/// A reader of a ring.
pub struct RingfireRx<const N: usize> {
    consumer: RingConsumer<[u8; N]>,
}

impl<const N: usize> Channel for Ringfire<N> {
    const NAME: &'static str = "ringfire";
    const HOW: &'static str =
        "SPMC ring of [u8; N], lossless back-pressure, try_push / recv_status busy-polled";
    type Shared = RingfireShared<N>;
    type Tx = RingfireTx<N>;
    type Rx = RingfireRx<N>;

    fn unsupported(ctx: &ChanCtx) -> Option<String> {
        limits(
            ctx,
            Some((1, "a ringfire SPMC ring has a single producer")),
            None,
        )
    }

    fn open(ctx: &ChanCtx) -> Result<RingfireShared<N>> {
        let path = ctx.dir.join("ringfire-channel");
        let producer = RingProducerBuilder::new(capacity(N))
            .flow_control(FlowControl::LosslessBackpressure)
            .build::<[u8; N], _>(&path)
            .map_err(err)?;
        Ok(RingfireShared {
            producer: Mutex::new(Some(producer)),
            path,
        })
    }

    fn tx(shared: &RingfireShared<N>, ctx: &ChanCtx, _index: usize) -> Result<RingfireTx<N>> {
        Ok(RingfireTx {
            producer: take_once(&shared.producer, "ringfire", "the producer")?,
            buf: [0u8; N],
            timeout: ctx.timeout,
        })
    }

    fn rx(shared: &RingfireShared<N>, _ctx: &ChanCtx, _index: usize) -> Result<RingfireRx<N>> {
        Ok(RingfireRx {
            consumer: RingConsumer::<[u8; N]>::attach(&shared.path).map_err(err)?,
        })
    }
}

impl<const N: usize> Tx for RingfireTx<N> {
    #[inline(always)]
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[inline(always)]
    fn send(&mut self) -> Result<()> {
        let mut spin = Spinner::new(self.timeout);
        loop {
            match self.producer.try_push(&self.buf) {
                Ok(()) => return Ok(()),
                Err(RingfireError::BackpressureBufferFull) => {
                    spin.spin("room in the ringfire ring")?
                }
                Err(e) => return Err(err(e)),
            }
        }
    }
}

impl<const N: usize> Rx for RingfireRx<N> {
    #[inline(always)]
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> Result<usize> {
        let mut n = 0;
        while n < max {
            match self.consumer.recv_status() {
                RecvStatus::Ok(item) => f(&item),
                RecvStatus::Empty => break,
                RecvStatus::Lapped { skipped, .. } => {
                    return Err(err(format!(
                        "reader lapped ({skipped} messages lost) despite lossless back-pressure"
                    )))
                }
            }
            n += 1;
        }
        Ok(n)
    }
}

/// Calls `$body` with the ringfire type for `$payload`, or evaluates `$otherwise` when the size is not compiled in.
#[macro_export]
macro_rules! with_ringfire_size {
    ($payload:expr, $t:ident => $body:expr, $otherwise:expr) => {
        match $payload {
            8 => {
                type $t = $crate::systems::ringfire::Ringfire<8>;
                $body
            }
            16 => {
                type $t = $crate::systems::ringfire::Ringfire<16>;
                $body
            }
            32 => {
                type $t = $crate::systems::ringfire::Ringfire<32>;
                $body
            }
            64 => {
                type $t = $crate::systems::ringfire::Ringfire<64>;
                $body
            }
            128 => {
                type $t = $crate::systems::ringfire::Ringfire<128>;
                $body
            }
            256 => {
                type $t = $crate::systems::ringfire::Ringfire<256>;
                $body
            }
            512 => {
                type $t = $crate::systems::ringfire::Ringfire<512>;
                $body
            }
            1024 => {
                type $t = $crate::systems::ringfire::Ringfire<1024>;
                $body
            }
            2048 => {
                type $t = $crate::systems::ringfire::Ringfire<2048>;
                $body
            }
            4096 => {
                type $t = $crate::systems::ringfire::Ringfire<4096>;
                $body
            }
            8192 => {
                type $t = $crate::systems::ringfire::Ringfire<8192>;
                $body
            }
            16384 => {
                type $t = $crate::systems::ringfire::Ringfire<16384>;
                $body
            }
            32768 => {
                type $t = $crate::systems::ringfire::Ringfire<32768>;
                $body
            }
            65536 => {
                type $t = $crate::systems::ringfire::Ringfire<65536>;
                $body
            }
            _ => $otherwise,
        }
    };
}
