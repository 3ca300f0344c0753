//! HdrHistogram's percentile-distribution text (`.hgrm`), as Java's
//! `Histogram.outputPercentileDistribution(out, 5, 1000.0)` prints it, so HdrHistogram's plotter
//! (and anything else that reads `.hgrm`) can load our files.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!       12.345 0.000000000000          1           1.00
//!       ...
//!      999.999 1.000000000000       1000
//! #[Mean    =      123.456, StdDeviation   =       45.678]
//! #[Max     =      999.999, Total count    =         1000]
//! #[Buckets =           22, SubBuckets     =         2048]
//! ```
//!
//! Values are recorded in ns and written in µs (the scaling ratio 1000), with 3 decimals.
//! The crate's `serialization` feature is not enabled here, and this format is plain text.

use hdrhistogram::Histogram;
use std::fmt::Write;

/// Percentile ticks per half distance to 100 %, HdrHistogram's default.
pub const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Recorded values are ns; files are in µs.
pub const SCALE: f64 = 1000.0;

/// One row of the distribution: (value in µs, quantile, cumulative count).
pub type Row = (f64, f64, u64);

/// The distribution's rows, as the quantile iterator walks it.
pub fn rows(h: &Histogram<u64>) -> Vec<Row> {
    let mut total = 0u64;
    h.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            total += v.count_since_last_iteration();
            (
                v.value_iterated_to() as f64 / SCALE,
                v.quantile_iterated_to(),
                total,
            )
        })
        .collect()
}

/// The whole `.hgrm` text for a histogram in ns.
pub fn render(h: &Histogram<u64>) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    for (value, q, total) in rows(h) {
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
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.3}, StdDeviation   = {stdev:12.3}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.3}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h)
    );
    out
}

/// Sub-buckets per bucket. The crate keeps the count private, but its counts array holds
/// `(buckets + 1) × sub_buckets / 2` slots (bucket 0 uses all of its sub-buckets).
fn sub_buckets(h: &Histogram<u64>) -> usize {
    2 * h.distinct_values() / (usize::from(h.buckets()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::new_histogram;

    fn sample() -> Histogram<u64> {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * 100).unwrap(); // 0.1 µs .. 1 ms
        }
        h
    }

    #[test]
    fn header_rows_and_footer_have_the_java_layout() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "       Value     Percentile TotalCount 1/(1-Percentile)"
        );
        assert_eq!(lines[1], "");
        // First row: the smallest value at percentile 0, count 1.
        assert_eq!(
            lines[2],
            "       0.100 0.000000000000          1           1.00"
        );
        let last_row = lines[lines.len() - 4];
        assert!(
            last_row.ends_with(" 1.000000000000      10000"),
            "{last_row:?}"
        );
        assert_eq!(
            lines[lines.len() - 3],
            "#[Mean    =      500.052, StdDeviation   =      288.675]"
        );
        assert_eq!(
            lines[lines.len() - 2],
            "#[Max     =     1000.447, Total count    =        10000]"
        );
        assert_eq!(
            lines[lines.len() - 1],
            format!(
                "#[Buckets = {:12}, SubBuckets     =         2048]",
                sample().buckets()
            )
        );
    }

    #[test]
    fn rows_are_monotonic_and_hit_the_median() {
        let h = sample();
        let rows = rows(&h);
        assert!(rows
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        let median = rows.iter().find(|r| r.1 >= 0.5).unwrap();
        assert!((median.0 - 500.0).abs() < 1.0, "{median:?}");
        assert_eq!(rows.last().map(|r| (r.1, r.2)), Some((1.0, 10_000)));
    }

    #[test]
    fn every_row_parses_back() {
        for line in render(&sample())
            .lines()
            .skip(2)
            .filter(|l| !l.starts_with('#'))
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            assert!(cols.len() == 4 || cols.len() == 3, "{line:?}");
            let q: f64 = cols[1].parse().unwrap();
            assert!((0.0..=1.0).contains(&q));
            if cols.len() == 4 {
                let inv: f64 = cols[3].parse().unwrap();
                assert!((inv - 1.0 / (1.0 - q)).abs() < 0.01 * inv);
            }
        }
    }

    #[test]
    fn empty_histogram_has_header_and_footer_only() {
        let text = render(&new_histogram());
        assert!(text.contains("Total count    =            0]"), "{text}");
    }
}
