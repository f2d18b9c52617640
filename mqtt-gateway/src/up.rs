//! `ringway up`: the command's logic, for the CLI crate to call with parsed flags.
//!
//! `ringway up [--config FILE] [--dir DIR] [--mqtt-listen ADDR:PORT] [--metrics-listen ADDR:PORT]`
//! loads the config (every field defaulted when there is no file), lets flags override it, runs
//! until SIGINT/SIGTERM, and prints a one-line status to stderr every second.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::Config;
use crate::server::{Gateway, GatewayError};

/// Parsed `ringway up` flags.
#[derive(Debug, Clone, Default)]
pub struct UpArgs {
    /// `--config FILE`: a `ringway.toml`.
    pub config: Option<PathBuf>,
    /// `--dir DIR`: stream root (overrides `storage.dir`).
    pub dir: Option<PathBuf>,
    /// `--mqtt-listen ADDR:PORT` (overrides `mqtt.listen`).
    pub mqtt_listen: Option<SocketAddr>,
    /// `--metrics-listen ADDR:PORT` (overrides `metrics.listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Print the status line (default true in the CLI; false for scripts).
    pub status_line: bool,
}

/// Loads the configuration `ringway up` would run with.
pub fn load_config(args: &UpArgs) -> Result<Config, GatewayError> {
    let mut config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(dir) = &args.dir {
        config.storage.dir = Some(dir.clone());
    }
    if let Some(a) = args.mqtt_listen {
        config.mqtt.listen = vec![a];
    }
    if let Some(a) = args.metrics_listen {
        config.metrics.listen = Some(a);
    }
    config.validate()?;
    Ok(config)
}

/// Runs `ringway up` to completion (blocks; builds its own tokio runtime).
pub fn up(args: UpArgs) -> Result<(), GatewayError> {
    let config = load_config(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ringway-mqtt")
        .build()
        .map_err(GatewayError::Runtime)?;
    rt.block_on(async move {
        let gateway = Gateway::start(config).await?;
        for a in gateway.mqtt_addrs() {
            eprintln!("ringway up: MQTT on {a}");
        }
        if let Some(a) = gateway.metrics_addr() {
            eprintln!("ringway up: metrics on http://{a}/metrics");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(GatewayError::Runtime)?;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tick.tick() => {
                    if args.status_line {
                        eprint!("\r{}\x1b[K", gateway.status());
                    }
                }
            }
        }
        if args.status_line {
            eprintln!();
        }
        gateway.shutdown().await
    })
}
