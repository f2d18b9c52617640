//! ringfire (its published crate): two SPSC rings in the run's /dev/shm directory, one per direction, busy
//! polling with `try_recv`. ringfire's rings carry fixed-size `Copy` items, so the payload is a `[u8; N]` and
//! only the sizes listed in [`SIZES`] are compiled in.

use std::path::PathBuf;

use ringfire::{RingConsumer, RingProducer};

use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

/// Payload sizes the ringfire peer supports.
pub const SIZES: &[usize] = &[8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// Ring capacity (slots) per direction.
const CAPACITY: u64 = 4096;

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
        let ping = RingProducer::<[u8; N]>::create(&ping_path, CAPACITY).map_err(err)?;
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
        let pong = RingProducer::<[u8; N]>::create(&pong_path, CAPACITY).map_err(err)?;
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
            _ => $otherwise,
        }
    };
}
