//! One module per subcommand.

mod create;
mod cursor;
mod publish;
mod replication;
mod stat;
mod tail;
mod verify;

use crate::cli::{Cli, Command};
use std::process::ExitCode;

/// Error type of the commands: printed as one line by `main`.
pub type CmdError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<ExitCode, CmdError> {
    match cli.command {
        Command::Pub {
            stream,
            dir,
            multi_writer,
            type_id,
            topic,
        } => publish::run(
            &dir.root(),
            &stream,
            multi_writer,
            type_id,
            topic.as_deref(),
        ),
        Command::Up {
            config,
            dir,
            mqtt_listen,
            metrics_listen,
            quiet,
        } => {
            let args = ringway_mqtt_gateway::up::UpArgs {
                config,
                dir,
                mqtt_listen,
                metrics_listen,
                status_line: !quiet,
            };
            ringway_mqtt_gateway::up::up(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replicate {
            stream,
            to,
            dir,
            key_file,
            loss,
            busy_poll,
            idle_backoff,
        } => replication::replicate(ringway_transport::cli::ReplicateArgs {
            stream,
            to,
            dir: dir.dir,
            key_file,
            progress: None,
            loss,
            busy_poll,
            idle_backoff,
        }),
        Command::Receive {
            listen,
            dir,
            stream,
            key_file,
            loss,
            busy_poll,
        } => replication::receive(ringway_transport::cli::ReceiveArgs {
            listen,
            dir: dir.dir,
            stream,
            key_file,
            progress: None,
            loss,
            busy_poll,
        }),
        Command::Tail {
            stream,
            dir,
            from,
            follow,
            count,
            format,
            named,
        } => tail::run(
            &dir.root(),
            &stream,
            &from,
            follow,
            count,
            format,
            named.as_deref(),
        ),
        Command::Cursor { action } => cursor::run(action),
        Command::Stat { dir, json } => stat::run(&dir.root(), json),
        Command::Verify { stream, dir } => verify::run(&dir.root(), &stream),
        Command::Create {
            stream,
            dir,
            create,
            multi_writer,
        } => create::run(&dir.root(), &stream, &create, multi_writer),
        Command::Delete { stream, dir } => {
            ringway_core::Stream::delete(&dir.root(), &stream)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
