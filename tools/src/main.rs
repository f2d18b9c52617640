//! `ringway`: the operator's command line for Ringway streams.

mod cli;
mod commands;
mod output;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringway: error: {e}");
            ExitCode::from(2)
        }
    }
}
