//! `ringway-bench`: Ringway's latency and throughput benchmark harness.
//!
//! Every scenario measures Ringway together with the physical limit of the machine (a cache line bouncing between
//! the two cores) and with peers, in the same run, and writes HdrHistogram percentile files, a JSON summary and
//! plots. See `bench/README.md`.

#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod child;
mod cli;
mod compare;
mod error;
mod machine;
mod pinning;
mod report;
mod scenarios;
mod spin;
mod stats;
mod systems;
mod timer;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use error::Result;
use report::Report;

fn finish(report: Report, out: Option<&std::path::Path>) -> Result<()> {
    print!("{}", report::table::render(&report));
    if let Some(dir) = out {
        let files = report::write::write_all(&report, dir)?;
        println!("  wrote {} files to {}", files.len(), dir.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Pingpong(a) => finish(scenarios::pingpong::run(&a)?, a.common.out.as_deref())?,
        Command::Oneway(a) => finish(scenarios::oneway::run(&a)?, a.common.out.as_deref())?,
        Command::Throughput(a) => finish(scenarios::throughput::run(&a)?, a.common.out.as_deref())?,
        Command::Fanout(a) => finish(scenarios::fanout::run(&a)?, a.common.out.as_deref())?,
        Command::Roll(a) => finish(scenarios::roll::run(&a)?, a.common.out.as_deref())?,
        Command::Wake(a) => finish(scenarios::wake::run(&a)?, a.out.as_deref())?,
        Command::Typed(a) => finish(scenarios::typed::run(&a)?, a.out.as_deref())?,
        Command::Mqtt(a) => finish(scenarios::mqtt::run(&a)?, a.common.out.as_deref())?,
        Command::Replicate(a) => finish(scenarios::replicate::run(&a)?, a.common.out.as_deref())?,
        Command::Compare(a) => return compare::run(&a),
        Command::Echo(a) => child::run(&a)?,
        Command::Gateway(a) => scenarios::mqtt::gateway_process(&a)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringway-bench: {e}");
            ExitCode::from(2)
        }
    }
}
