//! `--plot FILE.svg`: latency by percentile, drawn the way HdrHistogram's plotter draws it.
//! The x axis is `log10(1 / (1 − percentile))`, so 90 %, 99 %, 99.9 % … are evenly spaced and
//! the tail gets as much room as the median; the y axis is linear latency. Hand-written SVG (no
//! dependency), one polyline per series, opened in any browser.

use hdrhistogram::Histogram;
use std::fmt::Write;

use super::hgrm;

/// Canvas size and plot margins, px.
const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 60.0;
/// The x axis never goes past 99.9999 % (6 nines): beyond it HDR rows are the max anyway.
const MAX_NINES: f64 = 6.0;
/// Series colours, in order.
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// One line on the plot: a label and a histogram in ns.
#[derive(Debug)]
pub struct Series<'a> {
    /// Legend text, e.g. "e2e" or "pub→OK".
    pub label: &'a str,
    /// The samples, in ns.
    pub histogram: &'a Histogram<u64>,
}

/// Points (x = nines, y = µs) of one histogram; the 100 % row sits at the right edge.
fn points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    hgrm::rows(h)
        .into_iter()
        .map(|(us, q, _)| {
            let nines = if q < 1.0 {
                (1.0 / (1.0 - q)).log10().min(MAX_NINES)
            } else {
                MAX_NINES
            };
            (nines, us)
        })
        .collect()
}

/// A round axis maximum at or above `v` (1, 2 or 5 × 10^k).
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * mag)
}

/// The x-axis label for `n` nines: 0 %, 90 %, 99 %, 99.9 % …
fn nines_label(n: usize) -> String {
    match n {
        0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        _ => format!("99.{}%", "9".repeat(n - 2)),
    }
}

/// The plot area's scales: data ranges mapped to pixels.
struct Axes {
    xmax: f64,
    ymax: f64,
}

impl Axes {
    const PW: f64 = WIDTH - LEFT - RIGHT;
    const PH: f64 = HEIGHT - TOP - BOTTOM;

    fn sx(&self, x: f64) -> f64 {
        LEFT + x / self.xmax * Self::PW
    }

    fn sy(&self, y: f64) -> f64 {
        TOP + Self::PH - y / self.ymax * Self::PH
    }
}

/// Renders the plot. `title` goes on top (e.g. the mode and rate).
pub fn render(title: &str, series: &[Series<'_>]) -> String {
    let all: Vec<Vec<(f64, f64)>> = series.iter().map(|s| points(s.histogram)).collect();
    let axes = Axes {
        xmax: all.iter().flatten().map(|p| p.0).fold(2.0, f64::max).ceil(),
        ymax: nice_ceiling(all.iter().flatten().map(|p| p.1).fold(0.0, f64::max)),
    };
    let mut s = String::new();
    // Writing to a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="25" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    draw_grid(&mut s, &axes);
    for (i, (ser, pts)) in series.iter().zip(&all).enumerate() {
        draw_series(&mut s, &axes, i, ser.label, pts);
    }
    s.push_str("</svg>\n");
    s
}

/// Grid lines, tick labels and axis titles.
fn draw_grid(s: &mut String, axes: &Axes) {
    let (pw, ph) = (Axes::PW, Axes::PH);
    for i in 0..=(axes.xmax as usize) {
        let x = axes.sx(i as f64);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            TOP + ph,
            TOP + ph + 18.0,
            nines_label(i)
        );
    }
    for i in 0..=5 {
        let v = axes.ymax * f64::from(i) / 5.0;
        let y = axes.sy(v);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 4.0,
            trim(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 15.0
    );
    let _ = writeln!(
        s,
        r#"<text x="20" y="{:.1}" text-anchor="middle" transform="rotate(-90 20 {:.1})">latency (µs)</text>"#,
        TOP + ph / 2.0,
        TOP + ph / 2.0
    );
}

/// Series `i`: its polyline and its legend entry.
fn draw_series(s: &mut String, axes: &Axes, i: usize, label: &str, pts: &[(f64, f64)]) {
    let colour = COLOURS[i % COLOURS.len()];
    let coords: Vec<String> = pts
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", axes.sx(x), axes.sy(y)))
        .collect();
    let _ = writeln!(
        s,
        r#"<polyline class="series" data-label="{}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
        escape(label),
        coords.join(" ")
    );
    let ly = TOP + 16.0 + 18.0 * i as f64;
    let _ = writeln!(
        s,
        r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
        LEFT + 12.0,
        LEFT + 36.0,
        LEFT + 42.0,
        ly + 4.0,
        escape(label)
    );
}

/// An axis value without trailing zeros.
fn trim(v: f64) -> String {
    let t = format!("{v:.3}");
    t.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// XML text escaping for titles and labels.
fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::new_histogram;

    fn hist(scale: u64) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v * scale).unwrap();
        }
        h
    }

    #[test]
    fn svg_is_well_formed_and_has_each_series() {
        let (a, b) = (hist(100), hist(300));
        let svg = render(
            "e2e <50k/s> & more",
            &[
                Series {
                    label: "e2e",
                    histogram: &a,
                },
                Series {
                    label: "pub→OK",
                    histogram: &b,
                },
            ],
        );
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("e2e &lt;50k/s&gt; &amp; more"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"data-label="e2e""#) && svg.contains(r#"data-label="pub→OK""#));
        // Every opened element is self-closed or closed: count tags.
        let opens = svg.matches("<text").count();
        assert_eq!(opens, svg.matches("</text>").count());
        assert!(svg.contains(">99.9%<") && svg.contains(">90%<"));
        // No NaN/inf coordinates.
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn axis_helpers() {
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(nice_ceiling(1001.0), 2000.0);
        assert_eq!(nines_label(4), "99.99%");
        assert_eq!(trim(2.5), "2.5");
        assert_eq!(trim(200.0), "200");
    }

    #[test]
    fn empty_series_still_renders() {
        let h = new_histogram();
        let svg = render(
            "empty",
            &[Series {
                label: "e2e",
                histogram: &h,
            }],
        );
        assert!(svg.contains("<polyline") && !svg.contains("NaN"));
    }
}
