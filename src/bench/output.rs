//! Writing a [`Report`] to the files the user asked for: `--json` (configuration and numbers),
//! `--hgrm` (HdrHistogram text) and `--plot` (SVG).
//!
//! `--hgrm` holds the run's main latency: receive − stamp when consumers measured it (`e2e`,
//! `pubsub`), otherwise PUB → OK. The plot draws every latency series the run has.

use std::path::{Path, PathBuf};

use super::plot::{self, Series};
use super::{hgrm, BenchError, Report};

/// Where to write what (each optional).
#[derive(Debug, Clone, Default)]
pub struct Outputs {
    /// `--json FILE`.
    pub json: Option<PathBuf>,
    /// `--hgrm FILE`.
    pub hgrm: Option<PathBuf>,
    /// `--plot FILE.svg`.
    pub plot: Option<PathBuf>,
}

/// Writes every requested file.
///
/// # Errors
/// [`BenchError::Output`] naming the file that could not be written.
pub fn write_outputs(report: &Report, out: &Outputs) -> Result<(), BenchError> {
    if let Some(path) = &out.json {
        let text = serde_json::to_string_pretty(report)
            .map_err(|e| BenchError::Output(format!("--json: {e}")))?;
        write(path, &(text + "\n"))?;
    }
    if let Some(path) = &out.hgrm {
        let h = if report.e2e_histogram.is_empty() {
            &report.ack_histogram
        } else {
            &report.e2e_histogram
        };
        write(path, &hgrm::render(h))?;
    }
    if let Some(path) = &out.plot {
        let mut series = Vec::new();
        if !report.e2e_histogram.is_empty() {
            series.push(Series {
                label: "e2e (receive − intended send)",
                histogram: &report.e2e_histogram,
            });
        }
        if !report.ack_histogram.is_empty() {
            series.push(Series {
                label: "PUB → OK",
                histogram: &report.ack_histogram,
            });
        }
        let title = format!(
            "corq bench {}: {}",
            report.config.mode.name(),
            report.config.shape()
        );
        write(path, &plot::render(&title, &series))?;
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text)
        .map_err(|e| BenchError::Output(format!("cannot write {}: {e}", path.display())))
}
