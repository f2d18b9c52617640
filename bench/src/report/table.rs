//! The terminal table: percentiles per system and each system's p50 ratio to the limit and to Ringway.

use std::fmt::Write as _;

use super::model::{Report, SystemResult};

/// Formats nanoseconds with a unit that keeps three or four significant digits.
pub fn fmt_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| fmt_ns(v as f64)).unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<u64>, b: Option<u64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.2}x", a as f64 / b as f64),
        _ => "-".into(),
    }
}

/// The p50 a ratio column divides by: the row named `name`, if it ran.
fn reference(systems: &[SystemResult], name: &str) -> Option<u64> {
    systems
        .iter()
        .find(|s| s.name == name && s.is_ok())
        .and_then(|s| s.p50_ns)
}

/// Renders the latency table of a report (rows without latency figures are listed with their status).
pub fn render(report: &Report) -> String {
    let limit = reference(&report.systems, "limit");
    let ringway = reference(&report.systems, "ringway");
    let header = [
        "system",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "mean",
        "p50/limit",
        "p50/ringway",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut skipped = Vec::new();
    for s in &report.systems {
        if !s.is_ok() {
            skipped.push(format!("{}: {}", s.name, s.status));
            continue;
        }
        if s.p50_ns.is_none() {
            continue;
        }
        rows.push(vec![
            s.name.clone(),
            opt(s.p50_ns),
            opt(s.p90_ns),
            opt(s.p99_ns),
            opt(s.p999_ns),
            opt(s.p9999_ns),
            opt(s.max_ns),
            s.mean_ns.map(fmt_ns).unwrap_or_else(|| "-".into()),
            ratio(s.p50_ns, limit),
            ratio(s.p50_ns, ringway),
        ]);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} — payload {} B, {} recorded iterations per system after {} warm-up",
        report.scenario, report.payload_bytes, report.iterations, report.warmup
    );
    if !rows.is_empty() {
        let widths: Vec<usize> = (0..header.len())
            .map(|i| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([header[i].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut l = String::from("|");
            for (i, c) in cells.iter().enumerate() {
                let pad = widths[i] - c.chars().count();
                if i == 0 {
                    let _ = write!(l, " {c}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(l, " {}{c} |", " ".repeat(pad));
                }
            }
            l
        };
        let hdr: Vec<String> = header.iter().map(|s| s.to_string()).collect();
        let _ = writeln!(out, "{}", line(&hdr));
        let sep: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        let _ = writeln!(out, "{}", line(&sep).replace(' ', "-"));
        for r in &rows {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    let tput = render_throughput(report);
    if !tput.is_empty() {
        out.push_str(&tput);
    }
    for s in skipped {
        let _ = writeln!(out, "  {s}");
    }
    for s in report.systems.iter().filter(|s| s.is_ok()) {
        if let Some(n) = &s.note {
            let _ = writeln!(out, "  note ({}): {n}", s.name);
        }
    }
    for n in &report.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    let m = &report.machine;
    let _ = writeln!(
        out,
        "  machine: {} ({} cores{}), kernel {}, pinning {}, timer {} overhead p50 {} ns",
        m.cpu_model,
        m.cores,
        if m.virtualized { ", virtualized" } else { "" },
        m.kernel,
        if m.pinning_obtained {
            "obtained"
        } else {
            "NOT obtained (see JSON)"
        },
        m.timer_overhead.source,
        m.timer_overhead.p50_ns
    );
    out
}

/// Formats a rate with an SI suffix.
pub fn fmt_rate(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.2} G", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0} ")
    }
}

fn render_throughput(report: &Report) -> String {
    let rows: Vec<&SystemResult> = report
        .systems
        .iter()
        .filter(|s| s.is_ok() && s.msgs_per_sec.is_some())
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut out = String::new();
    let _ = writeln!(out, "| system | payload | msgs/s | bytes/s | mode |");
    let _ = writeln!(out, "|---|---:|---:|---:|---|");
    for s in rows {
        let _ = writeln!(
            out,
            "| {} | {} B | {}msg/s | {}B/s | {} |",
            s.name,
            s.payload_bytes.unwrap_or(report.payload_bytes),
            fmt_rate(s.msgs_per_sec.unwrap_or(0.0)),
            fmt_rate(s.bytes_per_sec.unwrap_or(0.0)),
            s.mode.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_switch_at_ten_thousand() {
        assert_eq!(fmt_ns(123.0), "123 ns");
        assert_eq!(fmt_ns(12_345.0), "12.3 µs");
        assert_eq!(fmt_ns(45_600_000.0), "45.6 ms");
    }

    #[test]
    fn ratio_needs_both_sides() {
        assert_eq!(ratio(Some(300), Some(150)), "2.00x");
        assert_eq!(ratio(Some(300), None), "-");
        assert_eq!(ratio(Some(300), Some(0)), "-");
    }
}
