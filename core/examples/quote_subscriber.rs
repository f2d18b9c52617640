//! Strategy-side subscriber: receives `Quote`s zero-copy on an agent pinned to a core, checks
//! each against the publisher's deterministic feed and reports one-way latency.
//!
//! ```text
//! cargo run --release -p ringway-core --example quote_subscriber -- --count 100000 --idle block
//! cargo run --release -p ringway-core --example quote_publisher -- --count 100000
//! ```
//! Options: `--root DIR --stream NAME --count N --core C --idle spin|yield|backoff|sleep:<us>|block
//! --from-start --unchecked --timeout-secs T`. Start it before the publisher (it reads new quotes
//! only), or pass `--from-start`.

mod quote;

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match quote::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("quote_subscriber: {e}");
            return ExitCode::from(2);
        }
    };
    match quote::run_subscriber(&opts) {
        Ok(r) => {
            println!(
                "received {} quotes from '{}' ({} mismatched), one-way latency p50 {} ns p99 {} ns, mean spread {:.2} bp",
                r.received, opts.stream, r.mismatched, r.p50_ns, r.p99_ns, r.mean_rel_spread * 1e4
            );
            if r.mismatched > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("quote_subscriber: {e}");
            ExitCode::FAILURE
        }
    }
}
