//! End-to-end processing latency: publish timestamp to FIN, per channel, over a rolling window.
//!
//! nsqd keeps two quantile streams that each cover half of
//! `--e2e-processing-latency-window-time` and reports their merge; corq does the same with two
//! `hdrhistogram`s. Values are recorded in microseconds with 2 significant digits (1 % error),
//! which keeps one window at ~50 KiB per channel; they are reported in nanoseconds, as nsqd.
//! Recording never allocates: the histograms are sized up front for 1 µs .. 1 h.

use hdrhistogram::Histogram;

/// The largest latency recorded exactly (1 hour in µs); longer ones are clamped to it.
const MAX_US: u64 = 3_600_000_000;
/// Significant digits kept by the histograms.
const SIGFIG: u8 = 2;

/// Rolling e2e latency of one channel.
#[derive(Debug, Clone)]
pub struct E2eLatency {
    /// The half-window being filled.
    current: Histogram<u64>,
    /// The half-window before it.
    previous: Histogram<u64>,
    /// Monotonic ms when `current` started.
    started_ms: u64,
}

impl E2eLatency {
    /// An empty window starting at `now_ms`.
    pub fn new(now_ms: u64) -> Self {
        // cannot fail because: the bounds are constants with low >= 1, high >= 2*low, sigfig <= 5.
        let h = Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("valid histogram bounds");
        E2eLatency {
            current: h.clone(),
            previous: h,
            started_ms: now_ms,
        }
    }

    /// Records one latency in nanoseconds (negative ones, from a wall clock step, count as 0).
    pub fn record(&mut self, latency_ns: i64) {
        let us = (u64::try_from(latency_ns).unwrap_or(0) / 1000).clamp(1, MAX_US);
        // cannot fail because: `us` is clamped into the histogram's bounds.
        let _ = self.current.record(us);
    }

    /// Starts a new half-window if `window_ms / 2` has passed.
    pub fn rotate(&mut self, now_ms: u64, window_ms: u64) {
        let half = (window_ms / 2).max(1);
        let elapsed = now_ms.saturating_sub(self.started_ms);
        if elapsed < half {
            return;
        }
        std::mem::swap(&mut self.current, &mut self.previous);
        self.current.reset();
        self.started_ms = now_ms;
        // A gap longer than the whole window leaves nothing worth keeping.
        if elapsed >= window_ms {
            self.previous.reset();
        }
    }

    /// Values recorded in the window.
    pub fn count(&self) -> u64 {
        self.current.len() + self.previous.len()
    }

    /// Adds this window's values into `into` (a topic's figure merges its channels').
    pub fn merge_into(&self, into: &mut Histogram<u64>) {
        // cannot fail because: every histogram here has the same bounds.
        let _ = into.add(&self.current);
        let _ = into.add(&self.previous);
    }

    /// The window as one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut h = self.current.clone();
        let _ = h.add(&self.previous);
        h
    }
}

/// `(quantile, value in ns)` for each requested quantile of a histogram in µs.
pub fn quantiles_ns(h: &Histogram<u64>, quantiles: &[f64]) -> Vec<(f64, u64)> {
    quantiles
        .iter()
        .map(|&q| (q, h.value_at_quantile(q).saturating_mul(1000)))
        .collect()
}

/// An empty histogram with the same bounds as the windows (for merging).
pub fn empty_histogram() -> Histogram<u64> {
    // cannot fail because: constant, valid bounds (see E2eLatency::new).
    Histogram::new_with_bounds(1, MAX_US, SIGFIG).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_in_ns_reports_in_ns_within_one_percent() {
        let mut e = E2eLatency::new(0);
        for ms in 1..=100 {
            e.record(ms * 1_000_000);
        }
        let q = quantiles_ns(&e.merged(), &[0.5, 0.99, 1.0]);
        let within = |got: u64, want: u64| got.abs_diff(want) * 100 <= want;
        assert!(within(q[0].1, 50_000_000), "{q:?}");
        assert!(within(q[1].1, 99_000_000), "{q:?}");
        assert!(within(q[2].1, 100_000_000), "{q:?}");
        assert_eq!(e.count(), 100);
    }

    #[test]
    fn window_rotation_forgets_the_oldest_half() {
        let mut e = E2eLatency::new(0);
        e.record(5_000_000);
        e.rotate(299_999, 600_000);
        assert_eq!(e.count(), 1, "not yet half a window");
        e.rotate(300_000, 600_000);
        e.record(7_000_000);
        assert_eq!(e.count(), 2, "the previous half still counts");
        e.rotate(600_000, 600_000);
        assert_eq!(e.count(), 1, "the oldest half is gone");
        e.rotate(5_000_000, 600_000);
        assert_eq!(
            e.count(),
            0,
            "after a gap longer than the window nothing is left"
        );
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut e = E2eLatency::new(0);
        e.record(-5);
        e.record(i64::MAX);
        assert_eq!(e.count(), 2);
    }
}
