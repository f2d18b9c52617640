//! The result of a run, in the shape written to `DIR/SCENARIO.json`.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::machine::Machine;
use crate::stats::Summary;

/// Status string of a system that ran.
pub const STATUS_OK: &str = "ok";

/// One row of the summary: a system's figures, or why it was skipped.
///
/// Latency fields are `null` for a skipped system and for throughput-only rows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SystemResult {
    /// `limit`, `ringway`, a peer's name, or a scenario-specific variant (`ringway-uncorrected`, ...).
    pub name: String,
    /// `ok` or `skipped: REASON`.
    pub status: String,
    /// Median, ns.
    pub p50_ns: Option<u64>,
    /// 90th percentile, ns.
    pub p90_ns: Option<u64>,
    /// 99th percentile, ns.
    pub p99_ns: Option<u64>,
    /// 99.9th percentile, ns.
    pub p999_ns: Option<u64>,
    /// 99.99th percentile, ns.
    pub p9999_ns: Option<u64>,
    /// Largest sample, ns.
    pub max_ns: Option<u64>,
    /// Mean, ns.
    pub mean_ns: Option<f64>,
    /// Recorded samples (warm-up excluded).
    pub samples: Option<u64>,
    /// How the two sides ran: `processes`, `threads`, ...
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub mode: Option<String>,
    /// Payload of this row when it differs from the run's (throughput rows).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub payload_bytes: Option<usize>,
    /// Messages per second (throughput rows).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub msgs_per_sec: Option<f64>,
    /// Payload bytes per second (throughput rows).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes_per_sec: Option<f64>,
    /// Anything a reader of the figures must know (e.g. lapped readers, drift of the limit).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub note: Option<String>,
}

impl SystemResult {
    /// A row for a system that ran, with its percentiles.
    pub fn ok(name: impl Into<String>, summary: &Summary) -> Self {
        SystemResult {
            name: name.into(),
            status: STATUS_OK.to_string(),
            p50_ns: Some(summary.p50_ns),
            p90_ns: Some(summary.p90_ns),
            p99_ns: Some(summary.p99_ns),
            p999_ns: Some(summary.p999_ns),
            p9999_ns: Some(summary.p9999_ns),
            max_ns: Some(summary.max_ns),
            mean_ns: Some(summary.mean_ns),
            samples: Some(summary.samples),
            mode: None,
            payload_bytes: None,
            msgs_per_sec: None,
            bytes_per_sec: None,
            note: None,
        }
    }

    /// A row for a system that did not run, with the reason.
    pub fn skipped(name: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        SystemResult {
            name: name.into(),
            status: format!("skipped: {reason}"),
            p50_ns: None,
            p90_ns: None,
            p99_ns: None,
            p999_ns: None,
            p9999_ns: None,
            max_ns: None,
            mean_ns: None,
            samples: None,
            mode: None,
            payload_bytes: None,
            msgs_per_sec: None,
            bytes_per_sec: None,
            note: None,
        }
    }

    /// Whether the system ran.
    pub fn is_ok(&self) -> bool {
        self.status == STATUS_OK
    }
}

/// A row plus its full histogram (kept for the `.hgrm` file and the plot, never serialized into the JSON).
#[derive(Debug)]
pub struct SystemRun {
    /// The summary row.
    pub result: SystemResult,
    /// Every recorded sample, when the system ran a latency measurement.
    pub histogram: Option<Histogram<u64>>,
}

impl SystemRun {
    /// A system that ran: row and histogram.
    pub fn measured(name: &str, histogram: Histogram<u64>) -> Self {
        SystemRun {
            result: SystemResult::ok(name, &Summary::of(&histogram)),
            histogram: Some(histogram),
        }
    }

    /// A system that did not run.
    pub fn skipped(name: &str, reason: impl std::fmt::Display) -> Self {
        SystemRun {
            result: SystemResult::skipped(name, reason),
            histogram: None,
        }
    }

    /// A row without a histogram (throughput).
    pub fn row(result: SystemResult) -> Self {
        SystemRun {
            result,
            histogram: None,
        }
    }
}

/// One throughput measurement, for the throughput plot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ThroughputPoint {
    /// The system.
    pub system: String,
    /// Payload size.
    pub payload_bytes: usize,
    /// Messages per second.
    pub msgs_per_sec: f64,
}

/// The whole result of one scenario run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    /// `pingpong`, `oneway`, ...
    pub scenario: String,
    /// Payload size used by the latency rows.
    pub payload_bytes: usize,
    /// Recorded iterations per system (warm-up excluded).
    pub iterations: u64,
    /// Warm-up iterations per system, not recorded.
    pub warmup: u64,
    /// The command line of the run.
    pub command: String,
    /// The machine and the run's conditions.
    pub machine: Machine,
    /// One row per system (and variant).
    pub systems: Vec<SystemResult>,
    /// Remarks on the run as a whole (warnings about drift, skipped parts).
    #[serde(default)]
    pub notes: Vec<String>,
    /// Histograms, parallel to `systems` (not serialized).
    #[serde(skip)]
    pub histograms: Vec<Option<Histogram<u64>>>,
}

impl Report {
    /// Builds a report from the runs of a scenario.
    pub fn new(
        scenario: &str,
        payload_bytes: usize,
        iterations: u64,
        warmup: u64,
        machine: Machine,
        runs: Vec<SystemRun>,
    ) -> Self {
        let (systems, histograms) = runs.into_iter().map(|r| (r.result, r.histogram)).unzip();
        Report {
            scenario: scenario.to_string(),
            payload_bytes,
            iterations,
            warmup,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            machine,
            systems,
            notes: Vec::new(),
            histograms,
        }
    }

    /// The throughput points of this report (rows that carry `msgs_per_sec`).
    pub fn throughput_points(&self) -> Vec<ThroughputPoint> {
        self.systems
            .iter()
            .filter(|s| s.is_ok())
            .filter_map(|s| {
                Some(ThroughputPoint {
                    system: s.name.clone(),
                    payload_bytes: s.payload_bytes?,
                    msgs_per_sec: s.msgs_per_sec?,
                })
            })
            .collect()
    }
}
