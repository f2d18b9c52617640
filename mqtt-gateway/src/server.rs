//! The running gateway: listeners, tailers, metrics endpoint, and the `run` entry point.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::config::{Config, ConfigError};
use crate::connection;
use crate::fanout::Fanout;
use crate::journal::{Journal, JournalError};
use crate::journal_core::CoreJournal;
use crate::metrics::{self, Metrics};

/// Why the gateway could not start or run.
#[derive(Debug, Error)]
pub enum GatewayError {
    /// Configuration invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The journal could not be opened or read.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The TLS certificates or key could not be loaded.
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The async runtime could not be built.
    #[error("cannot start runtime: {0}")]
    Runtime(std::io::Error),
}

/// A one-line summary of the running gateway (for `ringway up`'s status line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Open connections.
    pub connections: u64,
    /// Sessions (including offline persistent ones).
    pub sessions: usize,
    /// PUBLISH packets received.
    pub publish_in: u64,
    /// Frames appended.
    pub appended: u64,
    /// PUBLISH packets sent.
    pub publish_out: u64,
    /// Messages dropped for any reason.
    pub dropped: u64,
    /// Active subscriptions.
    pub subscriptions: u64,
    /// Retained topics.
    pub retained: u64,
    /// Synchronous replication: (replicas required, acknowledgements whose replicas did not
    /// confirm in time); `None` when off.
    pub sync: Option<(usize, u64)>,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "conns {} sessions {} subs {} retained {} | in {} stored {} out {} dropped {}",
            self.connections,
            self.sessions,
            self.subscriptions,
            self.retained,
            self.publish_in,
            self.appended,
            self.publish_out,
            self.dropped
        )?;
        if let Some((replicas, timeouts)) = self.sync {
            write!(f, " | sync {replicas} replicas, {timeouts} timeouts")?;
        }
        Ok(())
    }
}

/// A started gateway. Dropping it without [`Gateway::shutdown`] aborts its tasks.
pub struct Gateway {
    broker: Arc<Broker>,
    mqtt_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    fanout: Option<Fanout>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("mqtt_addrs", &self.mqtt_addrs)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts a gateway over ringway-core streams (must be called inside a tokio runtime).
    pub async fn start(config: Config) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let journal = CoreJournal::new(&config)?;
        Self::start_with_journal(config, Arc::new(journal)).await
    }

    /// Starts a gateway over any [`Journal`] (tests and fuzzing use the in-memory one).
    pub async fn start_with_journal(
        config: Config,
        journal: Arc<dyn Journal>,
    ) -> Result<Gateway, GatewayError> {
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let broker = Arc::new(Broker::new(config, journal, metrics.clone()));
        let mut listeners = Vec::new();
        for addr in &broker.config.mqtt.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| GatewayError::Bind {
                    addr: *addr,
                    source,
                })?;
            listeners.push(l);
        }
        let metrics_listener = match broker.config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| GatewayError::Bind { addr, source })?,
            ),
            None => None,
        };
        // Start-up scan runs on blocking threads, before the listeners accept anything.
        let b = broker.clone();
        let fanout = tokio::task::spawn_blocking(move || Fanout::start(b))
            .await
            .map_err(|e| {
                GatewayError::Journal(JournalError::Storage {
                    stream: "-".into(),
                    message: format!("tailer start-up failed: {e}"),
                })
            })??;
        let restored = broker.restore_sessions()?;
        if restored > 0 {
            log::info!("restored {restored} persistent sessions");
        }
        let (shutdown_tx, _) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut mqtt_addrs = Vec::new();
        for l in listeners {
            mqtt_addrs.push(l.local_addr().map_err(|source| GatewayError::Bind {
                addr: broker.config.mqtt.listen[0],
                source,
            })?);
            let broker = broker.clone();
            let mut shutdown = shutdown_tx.subscribe();
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        accepted = l.accept() => match accepted {
                            Ok((sock, _)) => {
                                tokio::spawn(connection::serve(broker.clone(), sock));
                            }
                            Err(e) => {
                                log::warn!("accept failed: {e}");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            }
                        }
                    }
                }
            }));
        }
        {
            let broker = broker.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(crate::broker::KEEP_ALIVE_SWEEP);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    broker.sweep_keep_alive();
                }
            }));
        }
        if broker.config.storage.flush_interval_ms > 0 {
            let every = std::time::Duration::from_millis(broker.config.storage.flush_interval_ms);
            let journal = broker.journal.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    let j = journal.clone();
                    if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.flush()).await {
                        log::error!("periodic flush failed: {e}");
                    }
                }
            }));
        }
        for b in broker.config.bridges.clone() {
            tasks.push(tokio::spawn(crate::bridge::run(
                broker.clone(),
                b,
                shutdown_tx.subscribe(),
            )));
        }
        #[allow(unused_mut)]
        let mut tls_addrs = Vec::new();
        #[cfg(feature = "tls")]
        if let Some(tls) = &broker.config.tls {
            let acceptor = crate::tls::acceptor(tls)?;
            let timeout = std::time::Duration::from_secs(tls.handshake_timeout_secs.max(1));
            for addr in &tls.listen {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| GatewayError::Bind {
                        addr: *addr,
                        source,
                    })?;
                tls_addrs.push(l.local_addr().map_err(|source| GatewayError::Bind {
                    addr: *addr,
                    source,
                })?);
                let (broker, acceptor) = (broker.clone(), acceptor.clone());
                let mut shutdown = shutdown_tx.subscribe();
                tasks.push(tokio::spawn(async move {
                    loop {
                        let accepted = tokio::select! {
                            _ = shutdown.changed() => break,
                            a = l.accept() => a,
                        };
                        let Ok((sock, peer)) = accepted else {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            continue;
                        };
                        let _ = sock.set_nodelay(true);
                        let (broker, acceptor) = (broker.clone(), acceptor.clone());
                        tokio::spawn(async move {
                            match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                                Ok(Ok(stream)) => connection::serve_stream(broker, stream).await,
                                Ok(Err(e)) => log::debug!("TLS handshake with {peer}: {e}"),
                                Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                            }
                        });
                    }
                }));
            }
        }
        let mut metrics_addr = None;
        if let Some(l) = metrics_listener {
            metrics_addr = l.local_addr().ok();
            tasks.push(tokio::spawn(metrics::serve(l, metrics)));
        }
        Ok(Gateway {
            broker,
            mqtt_addrs,
            tls_addrs,
            metrics_addr,
            shutdown_tx,
            tasks,
            fanout: Some(fanout),
        })
    }

    /// Addresses the MQTT listeners are bound to (useful with port 0).
    pub fn mqtt_addrs(&self) -> &[SocketAddr] {
        &self.mqtt_addrs
    }

    /// Addresses the TLS listeners are bound to.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// Address of the metrics endpoint, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.broker.metrics
    }

    /// Current status summary.
    pub fn status(&self) -> Status {
        let m = &self.broker.metrics;
        let g = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let dropped = [
            metrics::Drop::QueueFull,
            metrics::Drop::Lapped,
            metrics::Drop::Expired,
            metrics::Drop::NoRoute,
            metrics::Drop::AclDenied,
            metrics::Drop::ClientPacketSize,
            metrics::Drop::NoTopic,
        ]
        .iter()
        .map(|d| m.drops(*d))
        .sum();
        Status {
            connections: g(&m.connections),
            sessions: self.broker.session_count(),
            publish_in: m.publish_in.iter().map(g).sum(),
            appended: g(&m.appended),
            publish_out: g(&m.publish_out),
            dropped,
            subscriptions: g(&m.subscriptions),
            retained: g(&m.retained),
            sync: self
                .broker
                .sync
                .as_ref()
                .map(|s| (s.required(), g(&m.sync_timeouts))),
        }
    }

    /// Stops accepting, disconnects clients (MQTT 5: reason 0x8B), stops the tailers and flushes
    /// the journal.
    pub async fn shutdown(mut self) -> Result<(), GatewayError> {
        let _ = self.shutdown_tx.send(true);
        self.broker.disconnect_all();
        // Let connections write their DISCONNECT and wills and park their sessions (up to 2 s),
        // and bridges disconnect.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        while self.broker.metrics.connections.load(Ordering::Relaxed) > 0
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(mut f) = self.fanout.take() {
            tokio::task::spawn_blocking(move || f.stop()).await.ok();
        }
        self.broker.journal.flush()?;
        Ok(())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.broker.disconnect_all();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a gateway until `shutdown` completes (e.g. `tokio::signal::ctrl_c()`), then stops it
/// cleanly. Must be called inside a tokio runtime; see [`run_blocking`] otherwise.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), GatewayError> {
    let gateway = Gateway::start(config).await?;
    for a in gateway.mqtt_addrs() {
        log::info!("MQTT listening on {a}");
    }
    shutdown.await;
    gateway.shutdown().await
}

/// Builds a multi-threaded tokio runtime and runs [`run`] on it. `shutdown` is created inside the
/// runtime, so it may use tokio (e.g. `|| async { let _ = tokio::signal::ctrl_c().await; }`).
pub fn run_blocking<F, Fut>(config: Config, shutdown: F) -> Result<(), GatewayError>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ringway-mqtt")
        .build()
        .map_err(GatewayError::Runtime)?;
    rt.block_on(async move { run(config, shutdown()).await })
}
