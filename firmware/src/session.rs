//! The device's MQTT session: connect, reconnect with backoff, publish the outbox with QoS 1,
//! deliver commands.

use embassy_futures::select::{select3, Either3};
use embassy_net::tcp::TcpSocket;
use embassy_net::{IpEndpoint, Stack};
use embassy_sync::blocking_mutex::raw::RawMutex;
use embassy_time::{with_timeout, Duration, Instant, Timer};
use minimq::{ConfigBuilder, ConnectEvent, Publication, QoS, TopicFilter, Will};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::command::{CommandFilter, CommandHandler};
use crate::fmt::{debug, info, warning};
use crate::outbox::{OpStatus, Outbox};
use crate::topics::{client_id, TopicError, Topics};
use crate::wire::{encode_telemetry, WireBuf, TELEMETRY_WIRE_SIZE};

/// How a device connects.
#[derive(Debug, Clone)]
pub struct SessionConfig<'a> {
    /// Address of the gateway (or broker).
    pub broker: IpEndpoint,
    /// Topic prefix; topics are `{prefix}/{device id}/{telemetry,cmd,status}`.
    pub topic_prefix: &'a str,
    /// MQTT client id; `None` derives `ringway-{device id}`.
    pub client_id: Option<&'a str>,
    /// User name and password, if the gateway requires them.
    pub credentials: Option<(&'a str, &'a [u8])>,
    /// MQTT keep-alive in seconds.
    pub keepalive_secs: u16,
    /// MQTT 5 session expiry: how long the gateway keeps the session (subscriptions and
    /// unacknowledged publishes) after the connection drops. 0 starts fresh every time.
    pub session_expiry_secs: u32,
    /// Reconnect delays.
    pub backoff: BackoffPolicy,
    /// Limit for establishing TCP and completing CONNECT/CONNACK.
    pub connect_timeout: Duration,
    /// A publish not acknowledged within this time is taken as a dead link: the connection is
    /// dropped and everything unacknowledged is sent again on the next one.
    pub ack_timeout: Duration,
}

impl<'a> SessionConfig<'a> {
    /// Defaults: prefix `devices`, keep-alive 30 s, session expiry 600 s, connect timeout 10 s,
    /// ack timeout 15 s.
    pub fn new(broker: IpEndpoint) -> Self {
        Self {
            broker,
            topic_prefix: "devices",
            client_id: None,
            credentials: None,
            keepalive_secs: 30,
            session_expiry_secs: 600,
            backoff: BackoffPolicy::default(),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(15),
        }
    }
}

/// Memory the session works in, owned by the application (typically `static` buffers).
pub struct SessionBuffers<'a> {
    /// TCP receive window.
    pub tcp_rx: &'a mut [u8],
    /// TCP send buffer.
    pub tcp_tx: &'a mut [u8],
    /// Largest inbound MQTT packet (commands are small; 256 bytes is plenty).
    pub mqtt_rx: &'a mut [u8],
    /// Outbound MQTT packets, including the retained copies of in-flight QoS 1 publishes:
    /// about `window * (TELEMETRY_WIRE_SIZE + topic + 16)` plus 256 bytes.
    pub mqtt_tx: &'a mut [u8],
}

/// Why the session stopped for good (everything else is retried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SessionError {
    /// The topic prefix or client id cannot be used.
    Topic(TopicError),
    /// The MQTT client rejected the configuration (client id too long, bad will, buffers).
    Config,
    /// `SessionBuffers::mqtt_tx` cannot hold one telemetry PUBLISH next to the client's
    /// reserved space.
    BuffersTooSmall {
        /// Bytes one PUBLISH needs.
        needed: usize,
        /// Largest packet the buffer can take.
        available: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum LinkError {
    TcpConnect,
    MqttConnect,
    Timeout,
    Io,
    AckTimeout,
    Encode,
}

const ONLINE: &[u8] = b"online";
const OFFLINE: &[u8] = b"offline";

/// A device's connection to the gateway, publishing from `outbox` with at most `WINDOW`
/// unacknowledged QoS 1 publishes.
pub struct Session<'a, M: RawMutex, const N: usize, const WINDOW: usize> {
    stack: Stack<'a>,
    outbox: &'a Outbox<M, N>,
    config: SessionConfig<'a>,
    topics: Topics,
}

impl<'a, M: RawMutex, const N: usize, const WINDOW: usize> Session<'a, M, N, WINDOW> {
    /// A session for the outbox's device over `stack`.
    pub fn new(
        stack: Stack<'a>,
        outbox: &'a Outbox<M, N>,
        config: SessionConfig<'a>,
    ) -> Result<Self, SessionError> {
        let topics =
            Topics::new(config.topic_prefix, outbox.device_id()).map_err(SessionError::Topic)?;
        Ok(Self {
            stack,
            outbox,
            config,
            topics,
        })
    }

    /// The topics this session uses.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// Run forever: connect, publish, receive commands, and reconnect with exponential backoff
    /// whenever the link fails. Returns only for configuration errors.
    pub async fn run<H: CommandHandler>(
        &mut self,
        buffers: SessionBuffers<'_>,
        handler: &mut H,
    ) -> SessionError {
        let SessionBuffers {
            tcp_rx,
            tcp_tx,
            mqtt_rx,
            mqtt_tx,
        } = buffers;
        let derived;
        let client = match self.config.client_id {
            Some(id) => id,
            None => match client_id("ringway", self.outbox.device_id()) {
                Ok(id) => {
                    derived = id;
                    derived.as_str()
                }
                Err(e) => return SessionError::Topic(e),
            },
        };
        let mut mqtt_config =
            match ConfigBuilder::new(minimq::Buffers::new(mqtt_rx, mqtt_tx)).client_id(client) {
                Ok(c) => c
                    .keepalive_interval(self.config.keepalive_secs)
                    .session_expiry_interval(self.config.session_expiry_secs),
                Err(_) => return SessionError::Config,
            };
        if let Some((user, password)) = self.config.credentials {
            mqtt_config = match mqtt_config.auth(user, password) {
                Ok(c) => c,
                Err(_) => return SessionError::Config,
            };
        }
        let will = match Will::new(self.topics.status.as_str(), OFFLINE, &[]) {
            Ok(w) => w.retained().qos(QoS::AtLeastOnce),
            Err(_) => return SessionError::Config,
        };
        mqtt_config = match mqtt_config.will(will) {
            Ok(c) => c,
            Err(_) => return SessionError::Config,
        };
        let mut mqtt = minimq::Session::new(mqtt_config);
        // A telemetry PUBLISH must fit the client's buffers, or nothing would ever be sent.
        let publish_size = TELEMETRY_WIRE_SIZE + self.topics.telemetry.len() + 16;
        if mqtt.max_tx_packet_size() < publish_size {
            return SessionError::BuffersTooSmall {
                needed: publish_size,
                available: mqtt.max_tx_packet_size(),
            };
        }
        let mut backoff = Backoff::new(self.config.backoff, self.outbox.device_id().0);
        let mut commands = CommandFilter::new(self.outbox.device_id());
        let mut wire = WireBuf::<TELEMETRY_WIRE_SIZE>::new();

        loop {
            let result = self
                .serve(
                    &mut mqtt,
                    tcp_rx,
                    tcp_tx,
                    &mut backoff,
                    &mut commands,
                    &mut wire,
                    handler,
                )
                .await;
            let Err(e) = result;
            self.outbox.update_stats(|s| s.connection_failures += 1);
            let delay = backoff.next_delay();
            warning!(
                "link down ({:?}); reconnecting in {} ms",
                e,
                delay.as_millis()
            );
            Timer::after(delay).await;
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn serve<H: CommandHandler>(
        &mut self,
        mqtt: &mut minimq::Session<'_>,
        tcp_rx: &mut [u8],
        tcp_tx: &mut [u8],
        backoff: &mut Backoff,
        commands: &mut CommandFilter,
        wire: &mut WireBuf<TELEMETRY_WIRE_SIZE>,
        handler: &mut H,
    ) -> Result<core::convert::Infallible, LinkError> {
        // No point burning backoff attempts before the interface has link and an address.
        self.stack.wait_config_up().await;
        let mut socket = TcpSocket::new(self.stack, tcp_rx, tcp_tx);
        // A silent peer is detected by MQTT keep-alive; this bounds a stuck TCP write.
        let keepalive = u64::from(self.config.keepalive_secs.max(1));
        socket.set_timeout(Some(Duration::from_secs(keepalive * 2)));
        match with_timeout(
            self.config.connect_timeout,
            socket.connect(self.config.broker),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(LinkError::TcpConnect),
            Err(_) => return Err(LinkError::Timeout),
        }
        let mut conn = match with_timeout(self.config.connect_timeout, mqtt.connect(socket)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(_)) => return Err(LinkError::MqttConnect),
            Err(_) => return Err(LinkError::Timeout),
        };
        backoff.reset();
        self.outbox.update_stats(|s| s.connects += 1);
        let resumed = conn.connect_event() == ConnectEvent::Reconnected;
        info!("connected (session resumed: {})", resumed);
        if !resumed {
            // A fresh broker session knows nothing of earlier publishes or subscriptions.
            self.outbox.requeue_in_flight();
            conn.subscribe(&[TopicFilter::new(self.topics.command.as_str())], &[])
                .await
                .map_err(|_| LinkError::Io)?;
        }
        conn.publish(
            Publication::bytes(self.topics.status.as_str(), ONLINE)
                .qos(QoS::AtMostOnce)
                .retain(),
        )
        .await
        .map_err(|_| LinkError::Io)?;

        loop {
            let (in_flight, mut oldest) = self.outbox.reconcile(|op| {
                if conn.is_complete(op) {
                    OpStatus::Complete
                } else if conn.is_invalidated(op) {
                    OpStatus::Lost
                } else {
                    OpStatus::Pending
                }
            });
            if oldest.is_some_and(|t| t.elapsed() > self.config.ack_timeout) {
                return Err(LinkError::AckTimeout);
            }
            let mut in_flight = in_flight;
            while in_flight < WINDOW && conn.can_publish(QoS::AtLeastOnce) {
                let Some(telemetry) = self.outbox.begin_send() else {
                    break;
                };
                let Ok(bytes) = encode_telemetry(&telemetry, wire) else {
                    self.outbox.abort_send(telemetry.seq);
                    return Err(LinkError::Encode);
                };
                let published = conn
                    .publish(
                        Publication::bytes(self.topics.telemetry.as_str(), bytes)
                            .qos(QoS::AtLeastOnce),
                    )
                    .await;
                let Ok(op) = published else {
                    // The connection is unusable; a resumed session may still replay the
                    // packet if it was admitted, the gateway drops the duplicate.
                    self.outbox.abort_send(telemetry.seq);
                    return Err(LinkError::Io);
                };
                let now = Instant::now();
                self.outbox.mark_in_flight(telemetry.seq, op, now);
                oldest.get_or_insert(now);
                in_flight += 1;
            }

            // Sleep until the client has work, the application submits, or the oldest publish's
            // acknowledgement deadline passes; no periodic wake-ups while idle.
            let deadline = async {
                match oldest {
                    Some(t) => Timer::at(t + self.config.ack_timeout).await,
                    None => core::future::pending::<()>().await,
                }
            };
            match select3(conn.poll(), self.outbox.wait(), deadline).await {
                Either3::First(Ok(Some(publish))) => {
                    if publish.topic() == self.topics.command.as_str() {
                        let delivered = commands.deliver(publish.payload(), handler);
                        self.outbox.update_stats(|s| {
                            if delivered {
                                s.commands += 1
                            } else {
                                s.rejected_commands += 1
                            }
                        });
                    } else {
                        debug!("ignoring publish on unexpected topic");
                    }
                }
                Either3::First(Ok(None)) | Either3::Second(()) | Either3::Third(()) => {}
                Either3::First(Err(_)) => return Err(LinkError::Io),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OverflowPolicy;
    use crate::wire::DeviceId;
    use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
    use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
    use embassy_sync::blocking_mutex::raw::NoopRawMutex;
    // The std time driver's queue needs the executor's timer-queue hooks at link time.
    use embassy_executor as _;

    /// A network driver that never delivers anything.
    struct Silent;
    struct Tok;

    impl embassy_net_driver::RxToken for Tok {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
            f(&mut [])
        }
    }

    impl embassy_net_driver::TxToken for Tok {
        fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
            f(&mut vec![0; len])
        }
    }

    impl embassy_net_driver::Driver for Silent {
        type RxToken<'a> = Tok;
        type TxToken<'a> = Tok;
        fn receive(&mut self, _: &mut core::task::Context) -> Option<(Tok, Tok)> {
            None
        }
        fn transmit(&mut self, _: &mut core::task::Context) -> Option<Tok> {
            Some(Tok)
        }
        fn link_state(&mut self, _: &mut core::task::Context) -> LinkState {
            LinkState::Up
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::default()
        }
        fn hardware_address(&self) -> HardwareAddress {
            HardwareAddress::Ethernet([2, 0, 0, 0, 0, 1])
        }
    }

    fn run_with(mqtt_tx: usize, prefix: &'static str) -> SessionError {
        let resources = Box::leak(Box::new(StackResources::<2>::new()));
        let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(Ipv4Address::new(192, 0, 2, 9), 24),
            gateway: None,
            dns_servers: Default::default(),
        });
        let (stack, _runner) = embassy_net::new(Silent, config, resources, 1);
        let outbox: &'static Outbox<NoopRawMutex, 4> = Box::leak(Box::new(Outbox::new(
            DeviceId(1),
            0,
            OverflowPolicy::DropOldest,
        )));
        let mut cfg = SessionConfig::new((Ipv4Address::new(192, 0, 2, 1), 1883).into());
        cfg.topic_prefix = prefix;
        let mut session = match Session::<_, 4, 2>::new(stack, outbox, cfg) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let buffers = SessionBuffers {
            tcp_rx: Box::leak(vec![0; 256].into_boxed_slice()),
            tcp_tx: Box::leak(vec![0; 256].into_boxed_slice()),
            mqtt_rx: Box::leak(vec![0; 256].into_boxed_slice()),
            mqtt_tx: Box::leak(vec![0; mqtt_tx].into_boxed_slice()),
        };
        let mut handler = |_: &crate::wire::ArchivedCommand| {};
        embassy_futures::block_on(session.run(buffers, &mut handler))
    }

    #[test]
    fn too_small_mqtt_buffer_is_a_typed_error() {
        assert!(matches!(
            run_with(64, "devices"),
            SessionError::BuffersTooSmall { .. }
        ));
    }

    #[test]
    fn bad_topic_prefix_is_a_typed_error() {
        assert_eq!(
            run_with(4096, "dev/+"),
            SessionError::Topic(TopicError::InvalidPrefix)
        );
    }
}
