//! Plots with plotters (pure Rust: SVG and PNG backends, DejaVu Sans embedded through ab_glyph).
//!
//! - Latency by percentile: x is the percentile on a "nines" axis (log10 of 1/(1-p)), y the latency on a log
//!   axis, one curve per system, like HdrHistogram's plotter.
//! - Throughput by message size: messages/s against payload size, both on log axes.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::model::Report;
use crate::error::{BenchError, Result};

const SIZE: (u32, u32) = (1200, 750);

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // The embedded font is a valid TrueType file, so registration does not fail; if it ever did, the
        // text would be missing from the plots while the curves would still be drawn.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Plot {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Colours that stay distinguishable for up to a dozen systems.
fn colour(i: usize) -> RGBColor {
    const C: [RGBColor; 12] = [
        RGBColor(0, 0, 0),
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(188, 189, 34),
        RGBColor(23, 190, 207),
        RGBColor(90, 90, 200),
    ];
    C[i % C.len()]
}

/// One curve: (nines, latency ns) points.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
}

fn latency_curves(report: &Report) -> Vec<Curve> {
    report
        .systems
        .iter()
        .zip(&report.histograms)
        .filter_map(|(row, h)| {
            let h = h.as_ref()?;
            if h.is_empty() {
                return None;
            }
            let top = (h.len() as f64).log10();
            let points = h
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| {
                    let nines = (1.0 / (1.0 - v.quantile_iterated_to())).log10().min(top);
                    (
                        nines,
                        h.highest_equivalent(v.value_iterated_to()).max(1) as f64,
                    )
                })
                .chain([(top, h.max().max(1) as f64)])
                .collect();
            Some(Curve {
                name: row.name.clone(),
                points,
            })
        })
        .collect()
}

fn nines_label(x: &f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    match x.round() as i32 {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        3 => "99.9%".into(),
        4 => "99.99%".into(),
        5 => "99.999%".into(),
        6 => "99.9999%".into(),
        _ => format!("{p:.4}%"),
    }
}

fn ns_label(y: &f64) -> String {
    crate::report::table::fmt_ns(*y)
}

fn draw_latency<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), String> {
    let curves = latency_curves(report);
    let x_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max)
        .ceil();
    let (y_min, y_max) = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let y_min = if y_min == f64::MAX {
        1.0
    } else {
        (y_min * 0.8).max(1.0)
    };
    let y_max = y_max * 1.5;
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let m = &report.machine;
    let caption = format!(
        "{}: latency by percentile, {} B payload ({}, {} cores)",
        report.scenario, report.payload_bytes, m.cpu_model, m.cores
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..x_max, (y_min..y_max).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (log scale)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&nines_label)
        .y_label_formatter(&ns_label)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, c) in curves.into_iter().enumerate() {
        let col = colour(i);
        chart
            .draw_series(LineSeries::new(c.points, col.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(c.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn draw_throughput<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    report: &Report,
) -> std::result::Result<(), String> {
    let points = report.throughput_points();
    let mut systems: Vec<String> = Vec::new();
    for p in &points {
        if !systems.contains(&p.system) {
            systems.push(p.system.clone());
        }
    }
    let x_min = points
        .iter()
        .map(|p| p.payload_bytes as f64)
        .fold(f64::MAX, f64::min);
    let x_max = points
        .iter()
        .map(|p| p.payload_bytes as f64)
        .fold(1.0, f64::max);
    let y_min = points
        .iter()
        .map(|p| p.msgs_per_sec)
        .fold(f64::MAX, f64::min);
    let y_max = points.iter().map(|p| p.msgs_per_sec).fold(1.0, f64::max);
    let x_min = if x_min == f64::MAX { 1.0 } else { x_min * 0.8 };
    let y_min = if y_min == f64::MAX {
        1.0
    } else {
        (y_min * 0.5).max(1.0)
    };
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let m = &report.machine;
    let caption = format!(
        "{}: messages/s by payload size ({}, {} cores)",
        report.scenario, m.cpu_model, m.cores
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(
            (x_min..x_max * 1.25).log_scale(),
            (y_min..y_max * 2.0).log_scale(),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("payload bytes (log scale)")
        .y_desc("messages per second (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| crate::report::table::fmt_rate(*y))
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    for (i, name) in systems.iter().enumerate() {
        let col = colour(i + 1);
        let mut pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| &p.system == name)
            .map(|p| (p.payload_bytes as f64, p.msgs_per_sec))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(pts.clone(), col.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        chart
            .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, col.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

fn finish(path: &Path, r: std::result::Result<(), String>) -> Result<()> {
    r.map_err(|e| plot_err(path, e))
}

fn unsupported(path: &Path) -> Result<()> {
    Err(plot_err(path, "unsupported plot format (png or svg)"))
}

/// Latency-by-percentile curves of every system with a histogram, to `path` (`.png` or `.svg`).
pub fn latency_by_percentile(report: &Report, path: &Path) -> Result<()> {
    register_font();
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => finish(
            path,
            draw_latency(SVGBackend::new(path, SIZE).into_drawing_area(), report),
        ),
        Some("png") => finish(
            path,
            draw_latency(BitMapBackend::new(path, SIZE).into_drawing_area(), report),
        ),
        _ => unsupported(path),
    }
}

/// Messages/s against payload size for every system with throughput rows, to `path` (`.png` or `.svg`).
pub fn throughput_by_size(report: &Report, path: &Path) -> Result<()> {
    register_font();
    match path.extension().and_then(|e| e.to_str()) {
        Some("svg") => finish(
            path,
            draw_throughput(SVGBackend::new(path, SIZE).into_drawing_area(), report),
        ),
        Some("png") => finish(
            path,
            draw_throughput(BitMapBackend::new(path, SIZE).into_drawing_area(), report),
        ),
        _ => unsupported(path),
    }
}
