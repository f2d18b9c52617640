//! crossbeam-channel (in-process only): two bounded channels, one buffer handed back and forth, busy polling
//! with `try_recv`.
//!
//! As a one-directional [`Channel`] (throughput, oneway): one `bounded(4096)` channel, each message a fresh heap
//! buffer copied from the writer's staging buffer, `try_send` / `try_recv` busy-polled. There is no broadcast in
//! crossbeam-channel (a message goes to one receiver), so it takes no part in `fanout`.

use std::time::Duration;

use crossbeam_channel::{bounded, Receiver, Sender, TryRecvError, TrySendError};

use super::channel::{limits, ChanCtx, Channel, Rx, Tx};
use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

type Buf = Box<[u8]>;

/// Parent state: the ping sender and pong receiver.
pub struct Crossbeam {
    tx: Sender<Buf>,
    rx: Receiver<Buf>,
}

/// Timed side.
pub struct CrossbeamPinger {
    tx: Sender<Buf>,
    rx: Receiver<Buf>,
    buf: Option<Buf>,
    ctx: PingCtx,
}

/// Echo side.
pub struct CrossbeamEcho {
    tx: Sender<Buf>,
    rx: Receiver<Buf>,
    ctx: PingCtx,
}

fn closed() -> BenchError {
    BenchError::system("crossbeam", "channel disconnected")
}

impl PingPong for Crossbeam {
    const NAME: &'static str = "crossbeam";
    const CROSS_PROCESS: bool = false;
    type Pinger = CrossbeamPinger;
    type Echo = CrossbeamEcho;

    fn prepare(_ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let (ping_tx, ping_rx) = bounded::<Buf>(1);
        let (pong_tx, pong_rx) = bounded::<Buf>(1);
        Ok((
            Crossbeam {
                tx: ping_tx,
                rx: pong_rx,
            },
            EchoSpec {
                local: Some(Box::new((ping_rx, pong_tx))),
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<CrossbeamEcho> {
        let (rx, tx) = *spec
            .local
            .and_then(|b| b.downcast::<(Receiver<Buf>, Sender<Buf>)>().ok())
            .ok_or_else(|| {
                BenchError::system("crossbeam", "echo side needs in-process channels")
            })?;
        Ok(CrossbeamEcho {
            tx,
            rx,
            ctx: ctx.clone(),
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<CrossbeamPinger> {
        Ok(CrossbeamPinger {
            tx: self.tx,
            rx: self.rx,
            buf: Some(vec![0u8; ctx.payload].into_boxed_slice()),
            ctx: ctx.clone(),
        })
    }
}

impl Pinger for CrossbeamPinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        let mut buf = self.buf.take().ok_or_else(closed)?;
        stamp(&mut buf, seq);
        self.tx.try_send(buf).map_err(|_| closed())?;
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            match self.rx.try_recv() {
                Ok(b) => {
                    check_reply("crossbeam", &b, self.ctx.payload, seq)?;
                    self.buf = Some(b);
                    return Ok(());
                }
                Err(TryRecvError::Empty) => spin.spin("the crossbeam echo")?,
                Err(TryRecvError::Disconnected) => return Err(closed()),
            }
        }
    }
}

impl Echo for CrossbeamEcho {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            match self.rx.try_recv() {
                Ok(b) => return self.tx.try_send(b).map_err(|_| closed()),
                Err(TryRecvError::Empty) => spin.spin("a crossbeam ping")?,
                Err(TryRecvError::Disconnected) => return Err(closed()),
            }
        }
    }
}

/// Capacity of the one-directional channel.
const CHANNEL_CAPACITY: usize = 4096;

/// A writer: a sender and its staging buffer.
pub struct CrossbeamTx {
    tx: Sender<Buf>,
    buf: Vec<u8>,
    timeout: Duration,
}

/// A reader.
pub struct CrossbeamRx(Receiver<Buf>);

impl Channel for Crossbeam {
    const NAME: &'static str = "crossbeam";
    const HOW: &'static str =
        "bounded(4096), one heap buffer per message, try_send / try_recv busy-polled";
    type Shared = (Sender<Buf>, Receiver<Buf>);
    type Tx = CrossbeamTx;
    type Rx = CrossbeamRx;

    fn unsupported(ctx: &ChanCtx) -> Option<String> {
        limits(
            ctx,
            None,
            Some((
                1,
                "crossbeam-channel has no broadcast (each message goes to exactly one receiver)",
            )),
        )
    }

    fn open(_ctx: &ChanCtx) -> Result<Self::Shared> {
        Ok(bounded(CHANNEL_CAPACITY))
    }

    fn tx(shared: &Self::Shared, ctx: &ChanCtx, _index: usize) -> Result<CrossbeamTx> {
        Ok(CrossbeamTx {
            tx: shared.0.clone(),
            buf: vec![0u8; ctx.payload],
            timeout: ctx.timeout,
        })
    }

    fn rx(shared: &Self::Shared, _ctx: &ChanCtx, _index: usize) -> Result<CrossbeamRx> {
        Ok(CrossbeamRx(shared.1.clone()))
    }
}

impl Tx for CrossbeamTx {
    #[inline(always)]
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[inline(always)]
    fn send(&mut self) -> Result<()> {
        let mut msg: Buf = self.buf.as_slice().into();
        let mut spin = Spinner::new(self.timeout);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    spin.spin("room in the crossbeam channel")?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(closed()),
            }
        }
    }
}

impl Rx for CrossbeamRx {
    #[inline(always)]
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> Result<usize> {
        let mut n = 0;
        while n < max {
            match self.0.try_recv() {
                Ok(m) => f(&m),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(closed()),
            }
            n += 1;
        }
        Ok(n)
    }
}
