//! Market-data publisher: sends `Quote`s to a stream from an agent pinned to a core.
//!
//! ```text
//! cargo run --release -p ringway-core --example quote_subscriber -- --count 100000
//! cargo run --release -p ringway-core --example quote_publisher -- --count 100000 --rate 50000
//! ```
//! Options: `--root DIR --stream NAME --count N --core C --idle spin|yield|backoff|sleep:<us>|block
//! --rate PER_SEC --timeout-secs T` (the stream root defaults to `$RINGWAY_DIR` or /dev/shm/ringway).

mod quote;

use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = match quote::Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("quote_publisher: {e}");
            return ExitCode::from(2);
        }
    };
    match quote::run_publisher(&opts) {
        Ok(r) => {
            println!(
                "sent {} quotes to '{}' in {:.3} s ({:.0} quotes/s)",
                r.sent,
                opts.stream,
                r.elapsed.as_secs_f64(),
                r.sent as f64 / r.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("quote_publisher: {e}");
            ExitCode::FAILURE
        }
    }
}
