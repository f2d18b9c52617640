//! iceoryx2 (its published crate, feature `iceoryx2`): two publish-subscribe services over shared memory
//! (`ping`, `pong`), `[u8]` slices, history 0, subscriber buffer 1, busy polling `receive`. Each round trip
//! loans, writes, sends and receives a sample on both sides (the timed path of a real application).
//!
//! As a one-directional [`Channel`] (throughput, oneway, fanout) it is one publish-subscribe service with one
//! publisher and one subscriber per reader, subscriber buffers of [`CHANNEL_BUFFER`] samples and the
//! `RetryUntilDelivered` back-pressure strategy (lossless: the publisher waits for a full subscriber). Each
//! endpoint thread has its own node (iceoryx2's `ipc` ports stay on the thread that made them).

use std::path::Path;

use iceoryx2::port::publisher::Publisher;
use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;
use iceoryx2::service::port_factory::publish_subscribe::PortFactory;

use super::channel::{limits, ChanCtx, Channel, Rx, Tx};
use super::{check_reply, stamp, Echo, EchoSpec, PingCtx, PingPong, Pinger};
use crate::error::{BenchError, Result};
use crate::spin::Spinner;

type Pub = Publisher<ipc::Service, [u8], ()>;
type Sub = Subscriber<ipc::Service, [u8], ()>;
type Factory = PortFactory<ipc::Service, [u8], ()>;

fn err(e: impl std::fmt::Debug) -> BenchError {
    BenchError::system("iceoryx2", format!("{e:?}"))
}

fn service(node: &Node<ipc::Service>, name: &str, create: bool) -> Result<Factory> {
    let name: ServiceName = name.try_into().map_err(err)?;
    let b = node
        .service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(1)
        .history_size(0)
        .subscriber_max_buffer_size(1)
        .enable_safe_overflow(true);
    if create {
        b.create().map_err(err)
    } else {
        b.open().map_err(err)
    }
}

/// A service-name prefix unique to this process and scratch directory.
fn tag(dir: &Path) -> String {
    format!(
        "ringway-bench/{}/{}",
        std::process::id(),
        dir.display().to_string().replace('/', "_")
    )
}

fn node() -> Result<Node<ipc::Service>> {
    set_log_level(LogLevel::Error);
    NodeBuilder::new().create::<ipc::Service>().map_err(err)
}

/// Parent state: node, services and the parent's ports.
pub struct Iceoryx2 {
    publisher: Pub,
    subscriber: Sub,
    _services: (Factory, Factory),
    _node: Node<ipc::Service>,
}

/// Timed side.
pub struct Iceoryx2Pinger {
    inner: Iceoryx2,
    buf: Vec<u8>,
    ctx: PingCtx,
}

/// Echo side.
pub struct Iceoryx2Echo {
    publisher: Pub,
    subscriber: Sub,
    ctx: PingCtx,
    _services: (Factory, Factory),
    _node: Node<ipc::Service>,
}

impl PingPong for Iceoryx2 {
    const NAME: &'static str = "iceoryx2";
    type Pinger = Iceoryx2Pinger;
    type Echo = Iceoryx2Echo;

    fn unsupported(ctx: &PingCtx) -> Option<String> {
        (ctx.payload == 0).then(|| "payload must be at least 1 byte".to_string())
    }

    fn prepare(ctx: &PingCtx) -> Result<(Self, EchoSpec)> {
        let tag = tag(&ctx.dir);
        let ping_name = format!("{tag}/ping");
        let pong_name = format!("{tag}/pong");
        let node = node()?;
        let ping = service(&node, &ping_name, true)?;
        let pong = service(&node, &pong_name, true)?;
        let publisher = ping
            .publisher_builder()
            .initial_max_slice_len(ctx.payload)
            .create()
            .map_err(err)?;
        let subscriber = pong.subscriber_builder().create().map_err(err)?;
        Ok((
            Iceoryx2 {
                publisher,
                subscriber,
                _services: (ping, pong),
                _node: node,
            },
            EchoSpec {
                args: vec![ping_name, pong_name],
                ..EchoSpec::default()
            },
        ))
    }

    fn echo(ctx: &PingCtx, spec: EchoSpec) -> Result<Iceoryx2Echo> {
        let [ping_name, pong_name] = <[String; 2]>::try_from(spec.args)
            .map_err(|_| err("echo side needs the two service names"))?;
        let node = node()?;
        let ping = service(&node, &ping_name, false)?;
        let pong = service(&node, &pong_name, false)?;
        let subscriber = ping.subscriber_builder().create().map_err(err)?;
        let publisher = pong
            .publisher_builder()
            .initial_max_slice_len(ctx.payload)
            .create()
            .map_err(err)?;
        Ok(Iceoryx2Echo {
            publisher,
            subscriber,
            ctx: ctx.clone(),
            _services: (ping, pong),
            _node: node,
        })
    }

    fn pinger(self, ctx: &PingCtx) -> Result<Iceoryx2Pinger> {
        Ok(Iceoryx2Pinger {
            inner: self,
            buf: vec![0u8; ctx.payload],
            ctx: ctx.clone(),
        })
    }
}

impl Pinger for Iceoryx2Pinger {
    #[inline(always)]
    fn round_trip(&mut self, seq: u64) -> Result<()> {
        stamp(&mut self.buf, seq);
        let sample = self
            .inner
            .publisher
            .loan_slice_uninit(self.buf.len())
            .map_err(err)?;
        sample.write_from_slice(&self.buf).send().map_err(err)?;
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(reply) = self.inner.subscriber.receive().map_err(err)? {
                return check_reply("iceoryx2", reply.payload(), self.ctx.payload, seq);
            }
            spin.spin("the iceoryx2 echo")?;
        }
    }
}

impl Echo for Iceoryx2Echo {
    #[inline(always)]
    fn echo_one(&mut self) -> Result<()> {
        let mut spin = Spinner::new(self.ctx.timeout);
        loop {
            if let Some(msg) = self.subscriber.receive().map_err(err)? {
                let sample = self
                    .publisher
                    .loan_slice_uninit(msg.payload().len())
                    .map_err(err)?;
                sample.write_from_slice(msg.payload()).send().map_err(err)?;
                return Ok(());
            }
            spin.spin("an iceoryx2 ping")?;
        }
    }
}

/// Samples each subscriber's buffer holds in the one-directional channel.
pub const CHANNEL_BUFFER: usize = 256;

/// The one-directional service, opened or created (endpoints are built one at a time by the driver).
fn channel_service(node: &Node<ipc::Service>, name: &str, readers: usize) -> Result<Factory> {
    let name: ServiceName = name.try_into().map_err(err)?;
    node.service_builder(&name)
        .publish_subscribe::<[u8]>()
        .max_publishers(1)
        .max_subscribers(readers.max(1))
        .history_size(0)
        .subscriber_max_buffer_size(CHANNEL_BUFFER)
        .enable_safe_overflow(false)
        .open_or_create()
        .map_err(err)
}

/// The publisher of the channel, with its node and service.
pub struct Iceoryx2Tx {
    publisher: Pub,
    buf: Vec<u8>,
    _service: Factory,
    _node: Node<ipc::Service>,
}

/// A subscriber of the channel, with its node and service.
pub struct Iceoryx2Rx {
    subscriber: Sub,
    _service: Factory,
    _node: Node<ipc::Service>,
}

impl Channel for Iceoryx2 {
    const NAME: &'static str = "iceoryx2";
    const HOW: &'static str = "publish-subscribe, subscriber buffer 256, RetryUntilDelivered, \
                               loan_slice_uninit + write_from_slice + send / receive busy-polled";
    type Shared = String;
    type Tx = Iceoryx2Tx;
    type Rx = Iceoryx2Rx;

    fn unsupported(ctx: &ChanCtx) -> Option<String> {
        limits(
            ctx,
            Some((1, "the harness measures iceoryx2 with one publisher")),
            None,
        )
    }

    fn open(ctx: &ChanCtx) -> Result<String> {
        Ok(format!("{}/channel", tag(&ctx.dir)))
    }

    fn tx(name: &String, ctx: &ChanCtx, _index: usize) -> Result<Iceoryx2Tx> {
        let node = node()?;
        let service = channel_service(&node, name, ctx.readers)?;
        let publisher = service
            .publisher_builder()
            .initial_max_slice_len(ctx.payload)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .map_err(err)?;
        Ok(Iceoryx2Tx {
            publisher,
            buf: vec![0u8; ctx.payload],
            _service: service,
            _node: node,
        })
    }

    fn rx(name: &String, ctx: &ChanCtx, _index: usize) -> Result<Iceoryx2Rx> {
        let node = node()?;
        let service = channel_service(&node, name, ctx.readers)?;
        let subscriber = service
            .subscriber_builder()
            .buffer_size(CHANNEL_BUFFER)
            .create()
            .map_err(err)?;
        Ok(Iceoryx2Rx {
            subscriber,
            _service: service,
            _node: node,
        })
    }
}

impl Tx for Iceoryx2Tx {
    #[inline(always)]
    fn buf(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    #[inline(always)]
    fn send(&mut self) -> Result<()> {
        let sample = self
            .publisher
            .loan_slice_uninit(self.buf.len())
            .map_err(err)?;
        sample.write_from_slice(&self.buf).send().map_err(err)?;
        Ok(())
    }
}

impl Rx for Iceoryx2Rx {
    /// A subscriber connects to the publisher's connection on its first look at its queue; until then the
    /// publisher discards what does not fit the buffer even under `RetryUntilDelivered`.
    fn settle(&mut self) -> Result<()> {
        self.subscriber.has_samples().map(drop).map_err(err)
    }

    #[inline(always)]
    fn poll<F: FnMut(&[u8])>(&mut self, max: usize, mut f: F) -> Result<usize> {
        let mut n = 0;
        while n < max {
            match self.subscriber.receive().map_err(err)? {
                Some(sample) => f(sample.payload()),
                None => break,
            }
            n += 1;
        }
        Ok(n)
    }
}
