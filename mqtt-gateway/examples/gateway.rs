//! Runs the gateway like `ringway up` does:
//! `cargo run -p ringway-mqtt-gateway --example gateway -- [--config FILE] [--dir DIR]
//! [--mqtt-listen ADDR:PORT] [--metrics-listen ADDR:PORT] [--quiet]`
//! Prints `READY <mqtt addr>` on stdout once it accepts connections (for scripts).

use std::process::ExitCode;

use ringway_mqtt_gateway::up::{load_config, UpArgs};
use ringway_mqtt_gateway::Gateway;

fn parse() -> Result<UpArgs, String> {
    let mut args = UpArgs {
        status_line: true,
        ..UpArgs::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--config" => args.config = Some(value("--config")?.into()),
            "--dir" => args.dir = Some(value("--dir")?.into()),
            "--mqtt-listen" => {
                let v = value("--mqtt-listen")?;
                args.mqtt_listen = Some(v.parse().map_err(|e| format!("--mqtt-listen {v}: {e}"))?);
            }
            "--metrics-listen" => {
                let v = value("--metrics-listen")?;
                args.metrics_listen = Some(
                    v.parse()
                        .map_err(|e| format!("--metrics-listen {v}: {e}"))?,
                );
            }
            "--quiet" => args.status_line = false,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let gateway = Gateway::start(config).await?;
        println!("READY {}", gateway.mqtt_addrs()[0]);
        if let Some(m) = gateway.metrics_addr() {
            println!("METRICS {m}");
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(ringway_mqtt_gateway::GatewayError::Runtime)?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        gateway.shutdown().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
