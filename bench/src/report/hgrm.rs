//! HdrHistogram's percentile-distribution text format (`.hgrm`), as written by the Java
//! `outputPercentileDistribution` and read by HdrHistogram's plotter. Values are in microseconds.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Nanoseconds per output unit (the files are in microseconds, like most published `.hgrm` files).
pub const SCALE: f64 = 1000.0;

/// Ticks per half distance to 100 %, as in the Java default.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// Renders a histogram of nanosecond samples as a percentile distribution in microseconds.
pub fn render(hist: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !hist.is_empty() {
        for v in hist.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = hist.highest_equivalent(v.value_iterated_to()) as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let sub_buckets = 1u64 << (((2.0 * 10f64.powi(i32::from(hist.sigfig()))).log2()).ceil() as u32);
    let _ = writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        hist.mean() / SCALE,
        hist.stdev() / SCALE
    );
    let _ = writeln!(
        out,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        hist.max() as f64 / SCALE,
        hist.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        hist.buckets(),
        sub_buckets
    );
    out
}

#[cfg(test)]
/// One parsed line of a `.hgrm` file: value (µs), quantile, cumulative count.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HgrmLine {
    /// Value in microseconds.
    pub value_us: f64,
    /// Quantile in 0..=1.
    pub quantile: f64,
    /// Samples at or below this value.
    pub total_count: u64,
}

#[cfg(test)]
/// Parses the data lines of a `.hgrm` file (header and `#` footer skipped).
pub fn parse(text: &str) -> Vec<HgrmLine> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let value_us = f.next()?.parse().ok()?;
            let quantile = f.next()?.parse().ok()?;
            let total_count = f.next()?.parse().ok()?;
            Some(HgrmLine {
                value_us,
                quantile,
                total_count,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_histogram, record};

    #[test]
    fn round_trips_through_the_text_format() {
        let mut h = new_histogram();
        for v in 1..=100_000u64 {
            record(&mut h, v).unwrap();
        }
        let text = render(&h);
        assert!(text.starts_with("       Value     Percentile TotalCount 1/(1-Percentile)\n\n"));
        assert!(text.contains("#[Max     ="));
        assert!(text.contains("SubBuckets     =         2048]"));
        let lines = parse(&text);
        assert!(lines.len() > 20);
        let last = lines.last().unwrap();
        assert_eq!(last.quantile, 1.0);
        assert_eq!(last.total_count, 100_000);
        // Monotonic in value, quantile and count.
        for w in lines.windows(2) {
            assert!(w[0].value_us <= w[1].value_us);
            assert!(w[0].quantile <= w[1].quantile);
            assert!(w[0].total_count <= w[1].total_count);
        }
        let median = lines.iter().find(|l| l.quantile >= 0.5).unwrap();
        assert!((49.0..=51.0).contains(&median.value_us), "{median:?}");
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let text = render(&new_histogram());
        assert!(parse(&text).is_empty());
        assert!(text.contains("Total count    =            0"));
    }
}
