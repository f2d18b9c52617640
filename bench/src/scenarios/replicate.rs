//! `replicate`: stream replication over UDP loopback (`ringway-transport`), in one run:
//!
//! 1. One-way latency, primary writer → replica reader, next to a plain UDP one-way of the same payload
//!    (`latency`), in `--rounds` interleaved rounds so both see the same machine; the note gives the p50 ratio
//!    (the target: ≤ 1.3×).
//! 2. Sustained replication throughput of 64-byte messages with 0 % and 5 % of the datagrams dropped in each
//!    direction (`rate::live`).
//! 3. Catch-up rate of a receiver restarted after an outage (`rate::catch_up`).
//! 4. The same latency and 64-byte throughput over TCP loopback, on io_uring and on plain sockets (`tcp`).
//! 5. 64-byte throughput to two receivers of one UDP multicast group on loopback (`multicast`).
//!
//! Every throughput and catch-up run ends with a frame-by-frame comparison of replica and primary.

mod latency;
mod multicast;
mod rate;
mod tcp;

use crate::cli::ReplicateArgs;
use crate::error::{BenchError, Result};
use crate::report::{Report, SystemResult, SystemRun};
use crate::scenarios::Env;
use crate::stats::new_histogram;
use ringway_transport::io::Backend;

use latency::LatencyPlan;
use rate::{Rate, RatePlan, PAYLOAD};

const UDP: &str = "udp-oneway";
const REPLICATE: &str = "replicate-oneway";
const TCP_ONEWAY: [(&str, Backend); 2] = [
    ("replicate-tcp-oneway", Backend::Uring),
    ("replicate-tcp-plain-oneway", Backend::Plain),
];

/// The machine's load averages (1, 5, 15 min) from /proc/loadavg.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Runs the scenario.
pub fn run(args: &ReplicateArgs) -> Result<Report> {
    if args.common.payload < 16 {
        return Err(BenchError::Usage(
            "replicate needs --payload of at least 16 bytes (sequence number and timestamp)".into(),
        ));
    }
    if args.rounds == 0 {
        return Err(BenchError::Usage("--rounds must be at least 1".into()));
    }
    if !(128..=65507).contains(&args.mtu) {
        return Err(BenchError::Usage("--mtu must be within 128..=65507".into()));
    }
    let quick = args.common.quick;
    let mut env = Env::new(&args.common)?;
    let mut notes = vec![format!("load average at start: {}", load())];
    let rounds = args.rounds.min(env.iterations);
    let plan = LatencyPlan {
        payload: args.common.payload,
        warmup: (env.warmup / rounds).max(1),
        iterations: env.iterations / rounds,
        timeout: env.timeout,
        timer: env.timer.clone(),
        core_a: env.core_a,
        core_b: env.core_b,
        mtu: args.mtu,
    };
    let mut udp: std::result::Result<_, String> = Ok((new_histogram(), String::new()));
    let mut rep: std::result::Result<_, String> = Ok((new_histogram(), String::new()));
    let mut tcp_rep: Vec<std::result::Result<_, String>> = TCP_ONEWAY
        .iter()
        .map(|_| Ok((new_histogram(), String::new())))
        .collect();
    for round in 0..rounds {
        if let Ok((h, mode)) = &mut udp {
            match latency::plain_udp(&plan) {
                Ok(m) => {
                    h.add(&m.histogram)
                        .map_err(|e| BenchError::system("udp", e))?;
                    *mode = m.backend;
                    env.pins.extend(m.pins);
                }
                Err(e) => udp = Err(e),
            }
        }
        if let Ok((h, mode)) = &mut rep {
            let dir = env.subdir(&format!("latency-{round}"))?;
            match latency::replication(&plan, &dir) {
                Ok(m) => {
                    h.add(&m.histogram)
                        .map_err(|e| BenchError::system("replicate", e))?;
                    *mode = m.backend;
                    env.pins.extend(m.pins);
                }
                Err(e) => rep = Err(e),
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        for ((_, backend), res) in TCP_ONEWAY.iter().zip(tcp_rep.iter_mut()) {
            if let Ok((h, mode)) = res {
                let dir = env.subdir(&format!("tcp-latency-{backend:?}-{round}"))?;
                match tcp::latency(&plan, &dir, *backend) {
                    Ok(m) => {
                        h.add(&m.histogram)
                            .map_err(|e| BenchError::system("replicate-tcp", e))?;
                        *mode = m.backend;
                        env.pins.extend(m.pins);
                    }
                    Err(e) => *res = Err(e),
                }
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    let mut runs = Vec::new();
    let mut p50s = Vec::new();
    for (name, res, how) in [
        (UDP, udp, "plain UDP loopback"),
        (
            REPLICATE,
            rep,
            "append -> sender agent -> UDP loopback -> receiver agent (GRO off, busy-poll receive) -> replica Reader",
        ),
    ] {
        match res {
            Ok((h, backend)) => {
                p50s.push(h.value_at_quantile(0.5));
                let mut r = SystemRun::measured(name, h);
                r.result.mode = Some(format!(
                    "{how}; {backend}; busy-poll, one message in flight, {rounds} rounds"
                ));
                runs.push(r);
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
    }
    if let [u, r] = p50s[..] {
        notes.push(format!(
            "replication p50 / plain UDP one-way p50 = {:.2} (target <= 1.3)",
            r as f64 / u.max(1) as f64
        ));
    }
    for ((name, _), res) in TCP_ONEWAY.iter().zip(tcp_rep) {
        match res {
            Ok((h, backend)) => {
                if let Some(u) = p50s.first() {
                    notes.push(format!(
                        "{name} p50 / plain UDP one-way p50 = {:.2}",
                        h.value_at_quantile(0.5) as f64 / (*u).max(1) as f64
                    ));
                }
                let mut r = SystemRun::measured(name, h);
                r.result.mode = Some(format!(
                    "append -> TCP sender -> TCP loopback -> TCP receiver -> replica Reader; {backend}; busy-poll, \
                     one message in flight, {rounds} rounds"
                ));
                runs.push(r);
            }
            Err(e) => runs.push(SystemRun::skipped(name, e)),
        }
    }

    let rplan = RatePlan {
        messages: args
            .messages
            .unwrap_or(if quick { 20_000 } else { 2_000_000 })
            .max(1),
        mtu: args.mtu,
        timeout: env.timeout,
        core_a: env.core_a,
        core_b: env.core_b,
    };
    let rows: [(&str, &str, f64); 3] = [
        (
            "replicate-throughput",
            "live writer, no loss (target >= 2M msgs/s)",
            0.0,
        ),
        (
            "replicate-throughput-5pct-loss",
            "live writer, 5 % of datagrams dropped each way",
            0.05,
        ),
        (
            "replicate-catchup",
            "receiver restarted after an outage, from its start",
            -1.0,
        ),
    ];
    for (name, how, drop) in rows {
        let dir = env.subdir(name)?;
        let measured = if drop < 0.0 {
            rate::catch_up(&dir, &rplan)
        } else {
            rate::live(&dir, &rplan, drop)
        };
        let _ = std::fs::remove_dir_all(&dir);
        let how = format!("{how}; MTU {}", rplan.mtu);
        runs.push(rate_row(name, &how, measured, &mut env, &mut notes));
    }
    {
        let name = "replicate-multicast-throughput";
        let dir = env.subdir(name)?;
        let measured = multicast::live(&dir, &rplan);
        let _ = std::fs::remove_dir_all(&dir);
        let how = format!(
            "live writer, no loss, one multicast group on loopback to {} receivers (rate per \
             receiver, both on core B); MTU {}",
            multicast::RECEIVERS,
            rplan.mtu
        );
        runs.push(rate_row(name, &how, measured, &mut env, &mut notes));
    }
    for (name, backend) in [
        ("replicate-tcp-throughput", Backend::Uring),
        ("replicate-tcp-plain-throughput", Backend::Plain),
    ] {
        let dir = env.subdir(name)?;
        let measured = tcp::live(&dir, &rplan, backend);
        let _ = std::fs::remove_dir_all(&dir);
        let how = format!("live writer, TCP loopback, {backend:?} sockets");
        runs.push(rate_row(name, &how, measured, &mut env, &mut notes));
    }
    notes.push(format!(
        "threads: latency sender side on core {:?}, receiver side on core {:?}; throughput sender on core {:?}, \
         receiver on core {:?}, the writer unpinned; every throughput run's replica was compared frame by frame \
         with the primary",
        env.core_a, env.core_b, env.core_a, env.core_b
    ));
    notes.push(format!("load average at end: {}", load()));
    let mut report = env.report("replicate", args.common.payload, runs);
    report.notes.extend(notes);
    Ok(report)
}

fn rate_row(
    name: &str,
    how: &str,
    measured: std::result::Result<Rate, String>,
    env: &mut Env,
    notes: &mut Vec<String>,
) -> SystemRun {
    match measured {
        Ok(r) => {
            let mut res = SystemResult::skipped(name, "");
            res.status = "ok".into();
            res.payload_bytes = Some(PAYLOAD);
            res.msgs_per_sec = Some(r.msgs_per_sec);
            res.bytes_per_sec = Some(r.msgs_per_sec * PAYLOAD as f64);
            res.samples = Some(r.messages);
            res.mode = Some(format!("{how}; {} messages", r.messages));
            notes.push(format!("{name}: {}", r.detail));
            env.pins.extend(r.pins);
            SystemRun::row(res)
        }
        Err(e) => {
            let mut res = SystemResult::skipped(name, e);
            res.payload_bytes = Some(PAYLOAD);
            SystemRun::row(res)
        }
    }
}
