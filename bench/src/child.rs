//! The hidden `__echo` subcommand: the echo side of a two-process pingpong, started by the harness itself.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use crate::cli::EchoArgs;
use crate::error::{BenchError, Result};
use crate::scenarios::pingpong::serve;
use crate::systems::limit::Limit;
use crate::systems::pipe::Pipe;
use crate::systems::ringway::Ringway;
use crate::systems::tcp::Tcp;
use crate::systems::udp::Udp;
use crate::systems::uds::Uds;
use crate::systems::{EchoSpec, PingCtx};

/// Runs the echo side described by `args`.
pub fn run(args: &EchoArgs) -> Result<()> {
    let ctx = PingCtx {
        payload: args.payload,
        count: args.count,
        dir: args.dir.clone(),
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        wait: args.wait,
    };
    let fds = args
        .fds
        .iter()
        .map(|&fd| {
            if fd < 3 {
                return Err(BenchError::Usage(format!("--fd {fd} is a standard stream")));
            }
            // SAFETY: the parent cleared FD_CLOEXEC on exactly these descriptors for this child and passes their
            // numbers here; nothing else in this process opened or owns them, so taking ownership is sound.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = EchoSpec {
        args: args.args.clone(),
        fds,
        local: None,
    };
    let core = args.core;
    match args.system.as_str() {
        "limit" => serve::<Limit>(&ctx, spec, core),
        "limit-log" => serve::<crate::systems::limit_log::LimitLog>(&ctx, spec, core),
        "limit-2line" => serve::<crate::systems::limit_two::LimitTwo>(&ctx, spec, core),
        "ringway" => serve::<Ringway>(&ctx, spec, core),
        "uds" => serve::<Uds>(&ctx, spec, core),
        "tcp" => serve::<Tcp>(&ctx, spec, core),
        "udp" => serve::<Udp>(&ctx, spec, core),
        "pipe" => serve::<Pipe>(&ctx, spec, core),
        "ringfire" => crate::with_ringfire_size!(
            args.payload,
            T => serve::<T>(&ctx, spec, core),
            Err(BenchError::Usage(format!("ringfire: unsupported payload {}", args.payload)))
        ),
        #[cfg(feature = "iceoryx2")]
        "iceoryx2" => serve::<crate::systems::iceoryx2::Iceoryx2>(&ctx, spec, core),
        other => Err(BenchError::Usage(format!(
            "no echo side for system `{other}`"
        ))),
    }
}
