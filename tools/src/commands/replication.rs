//! `ringway replicate` and `ringway receive`: run until Ctrl-C, printing progress.

use super::CmdError;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// A flag set by SIGINT or SIGTERM.
fn shutdown_flag() -> Result<Arc<AtomicBool>, CmdError> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())?;
    }
    Ok(flag)
}

pub fn replicate(
    stream: String,
    to: String,
    dir: Option<PathBuf>,
    key_file: Option<PathBuf>,
    loss: Option<f64>,
) -> Result<ExitCode, CmdError> {
    let args = ringway_transport::cli::ReplicateArgs {
        stream,
        to,
        dir,
        key_file,
        progress: None,
        loss,
    };
    ringway_transport::cli::replicate(&args, shutdown_flag()?, &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}

pub fn receive(
    listen: String,
    dir: Option<PathBuf>,
    stream: Option<String>,
    key_file: Option<PathBuf>,
    loss: Option<f64>,
) -> Result<ExitCode, CmdError> {
    let args = ringway_transport::cli::ReceiveArgs {
        listen,
        dir,
        stream,
        key_file,
        progress: None,
        loss,
    };
    ringway_transport::cli::receive(&args, shutdown_flag()?, &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}
