//! `compare OLD.json NEW.json`: flags p50/p99 regressions (and throughput drops) beyond a threshold.

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::CompareArgs;
use crate::error::{BenchError, Result};

/// The figures of one row that `compare` looks at.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// System name (plus payload for throughput rows).
    pub key: String,
    /// Median, ns.
    pub p50: Option<f64>,
    /// 99th percentile, ns.
    pub p99: Option<f64>,
    /// Messages per second.
    pub rate: Option<f64>,
}

/// One metric that changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Row key.
    pub key: String,
    /// `p50`, `p99` or `msgs/s`.
    pub metric: &'static str,
    /// Old value.
    pub old: f64,
    /// New value.
    pub new: f64,
    /// Change in percent, positive = worse.
    pub worse_pct: f64,
    /// Beyond the threshold.
    pub regression: bool,
}

/// Reads the rows with status `ok` from a summary, checking its shape.
pub fn load(path: &Path) -> Result<(String, Vec<Row>)> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::File {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses a summary's text (see [`load`]).
pub fn parse(path: &Path, text: &str) -> Result<(String, Vec<Row>)> {
    let bad = |m: &str| BenchError::BadSummary {
        path: path.to_path_buf(),
        message: m.to_string(),
    };
    let v: Value = serde_json::from_str(text).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let scenario = v
        .get("scenario")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("missing string field `scenario`"))?
        .to_string();
    let systems = v
        .get("systems")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("missing array field `systems`"))?;
    let mut rows = Vec::new();
    for s in systems {
        let name = s
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("a system without a string `name`"))?;
        let status = s
            .get("status")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(&format!("system `{name}` without a string `status`")))?;
        if status != "ok" {
            continue;
        }
        let num = |k: &str| s.get(k).and_then(Value::as_f64);
        let key = match s.get("payload_bytes").and_then(Value::as_u64) {
            Some(p) => format!("{name} @{p}B"),
            None => name.to_string(),
        };
        rows.push(Row {
            key,
            p50: num("p50_ns"),
            p99: num("p99_ns"),
            rate: num("msgs_per_sec"),
        });
    }
    Ok((scenario, rows))
}

/// Compares matching rows; a latency regression is an increase, a throughput regression a decrease.
pub fn diff(old: &[Row], new: &[Row], threshold_pct: f64) -> Vec<Change> {
    let mut out = Vec::new();
    for n in new {
        let Some(o) = old.iter().find(|o| o.key == n.key) else {
            continue;
        };
        let mut push =
            |metric: &'static str, ov: Option<f64>, nv: Option<f64>, higher_is_worse: bool| {
                if let (Some(ov), Some(nv)) = (ov, nv) {
                    if ov > 0.0 {
                        let pct = if higher_is_worse {
                            (nv - ov) / ov * 100.0
                        } else {
                            (ov - nv) / ov * 100.0
                        };
                        out.push(Change {
                            key: n.key.clone(),
                            metric,
                            old: ov,
                            new: nv,
                            worse_pct: pct,
                            regression: pct > threshold_pct,
                        });
                    }
                }
            };
        push("p50", o.p50, n.p50, true);
        push("p99", o.p99, n.p99, true);
        push("msgs/s", o.rate, n.rate, false);
    }
    out
}

/// Runs `compare`: prints every change, exits 1 if any is a regression.
pub fn run(args: &CompareArgs) -> Result<ExitCode> {
    if !(args.threshold.is_finite() && args.threshold >= 0.0) {
        return Err(BenchError::Usage(format!(
            "--threshold must be a non-negative percentage, got {}",
            args.threshold
        )));
    }
    let (s_old, old) = load(&args.old)?;
    let (s_new, new) = load(&args.new)?;
    if s_old != s_new {
        return Err(BenchError::Usage(format!(
            "cannot compare scenario `{s_old}` with scenario `{s_new}`"
        )));
    }
    let changes = diff(&old, &new, args.threshold);
    if changes.is_empty() {
        return Err(BenchError::Usage(
            "the two summaries have no system in common that ran in both".into(),
        ));
    }
    let mut regressions = 0;
    println!("{s_new}: threshold {:.1}%", args.threshold);
    for c in &changes {
        let flag = if c.regression {
            regressions += 1;
            "REGRESSION"
        } else if c.worse_pct < -args.threshold {
            "improved"
        } else {
            "ok"
        };
        println!(
            "  {:<24} {:<7} {:>14.1} -> {:>14.1}  {:>+7.1}% worse  {flag}",
            c.key, c.metric, c.old, c.new, c.worse_pct
        );
    }
    for k in old.iter().filter(|o| !new.iter().any(|n| n.key == o.key)) {
        println!("  {:<24} ran in OLD only", k.key);
    }
    if regressions > 0 {
        println!("{regressions} regression(s) beyond {:.1}%", args.threshold);
        Ok(ExitCode::from(1))
    } else {
        println!("no regression beyond {:.1}%", args.threshold);
        Ok(ExitCode::SUCCESS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(json: &str) -> Vec<Row> {
        parse(Path::new("t.json"), json).unwrap().1
    }

    #[test]
    fn latency_increase_beyond_threshold_is_a_regression() {
        let old = rows(
            r#"{"scenario":"pingpong","systems":[{"name":"ringway","status":"ok","p50_ns":100,"p99_ns":200}]}"#,
        );
        let new = rows(
            r#"{"scenario":"pingpong","systems":[{"name":"ringway","status":"ok","p50_ns":115,"p99_ns":205}]}"#,
        );
        let d = diff(&old, &new, 10.0);
        assert_eq!(d.len(), 2);
        assert!(d[0].regression && d[0].metric == "p50");
        assert!(!d[1].regression);
    }

    #[test]
    fn throughput_drop_is_a_regression_and_skipped_rows_are_ignored() {
        let old = rows(
            r#"{"scenario":"throughput","systems":[{"name":"ringway","status":"ok","payload_bytes":32,"msgs_per_sec":3.0e7},{"name":"x","status":"skipped: no"}]}"#,
        );
        let new = rows(
            r#"{"scenario":"throughput","systems":[{"name":"ringway","status":"ok","payload_bytes":32,"msgs_per_sec":2.0e7}]}"#,
        );
        assert_eq!(old.len(), 1);
        let d = diff(&old, &new, 10.0);
        assert_eq!(d.len(), 1);
        assert!(d[0].regression);
    }

    #[test]
    fn malformed_summaries_are_typed_errors() {
        for bad in [
            "",
            "[]",
            r#"{"scenario":1}"#,
            r#"{"scenario":"x"}"#,
            r#"{"scenario":"x","systems":[{"status":"ok"}]}"#,
        ] {
            assert!(
                matches!(
                    parse(Path::new("b"), bad),
                    Err(BenchError::BadSummary { .. })
                ),
                "{bad}"
            );
        }
    }
}
