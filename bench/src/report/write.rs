//! Writing a report to `--out DIR`: `.hgrm` per system, `SCENARIO.json`, and the plots.

use std::path::{Path, PathBuf};

use super::model::Report;
use super::{hgrm, plot};
use crate::error::{BenchError, Result};

/// A file name fragment for a system name (letters, digits, `-`, `_`, `.`).
pub fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| BenchError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes every output file of `report` under `dir` and returns their paths.
pub fn write_all(report: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for (row, hist) in report.systems.iter().zip(&report.histograms) {
        if let Some(h) = hist {
            let path = dir.join(format!("{}-{}.hgrm", report.scenario, file_stem(&row.name)));
            write_file(&path, hgrm::render(h).as_bytes())?;
            written.push(path);
        }
    }
    let json_path = dir.join(format!("{}.json", report.scenario));
    let json = serde_json::to_string_pretty(report).map_err(|e| BenchError::BadSummary {
        path: json_path.clone(),
        message: e.to_string(),
    })?;
    write_file(&json_path, json.as_bytes())?;
    written.push(json_path);
    if report.histograms.iter().any(Option::is_some) {
        for ext in ["png", "svg"] {
            let path = dir.join(format!("{}-latency.{ext}", report.scenario));
            plot::latency_by_percentile(report, &path)?;
            written.push(path);
        }
    }
    if !report.throughput_points().is_empty() {
        for ext in ["png", "svg"] {
            let path = dir.join(format!("{}-throughput.{ext}", report.scenario));
            plot::throughput_by_size(report, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}
