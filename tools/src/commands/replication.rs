//! `ringway replicate` and `ringway receive`: run until Ctrl-C, printing progress.

use super::CmdError;
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

pub fn replicate(args: ringway_transport::cli::ReplicateArgs) -> Result<ExitCode, CmdError> {
    ringway_transport::cli::replicate(&args, shutdown_flag()?, &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}

pub fn receive(args: ringway_transport::cli::ReceiveArgs) -> Result<ExitCode, CmdError> {
    ringway_transport::cli::receive(&args, shutdown_flag()?, &mut std::io::stderr())?;
    Ok(ExitCode::SUCCESS)
}
