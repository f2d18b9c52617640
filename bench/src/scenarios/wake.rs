//! `wake`: blocking-wait wake-up latency. Ringway's blocking wait (the typed/agents work) does not exist yet, so
//! the scenario reports itself as skipped with that reason rather than measuring something else.

use crate::cli::CommonArgs;
use crate::error::Result;
use crate::report::{Report, SystemRun};
use crate::scenarios::Env;

/// Why the scenario cannot run yet.
pub const REASON: &str =
    "ringway-core has no blocking wait yet (it arrives with the typed messages / agents issue)";

/// Runs (skips) the scenario.
pub fn run(common: &CommonArgs) -> Result<Report> {
    let env = Env::new(common)?;
    let payload = common.payload;
    let mut report = env.report("wake", payload, vec![SystemRun::skipped("ringway", REASON)]);
    report
        .notes
        .push(format!("wake scenario skipped: {REASON}"));
    Ok(report)
}
