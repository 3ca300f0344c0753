//! What a run measures: per-thread [`Recorder`]s (counters and HDR histograms, no locks on the
//! hot path), the shared [`Progress`] counters the once-a-second line reads, and the merged
//! [`Report`] with its human summary.
//!
//! Latencies are recorded in nanoseconds (1 ns .. 1 h, 3 significant digits) and reported in
//! microseconds. Throughput counts only events at or after the end of the warm-up, over the time
//! from the end of the warm-up to the last counted event, so a drained backlog's idle tail and a
//! run's start-up are not in the rate.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

use super::BenchConfig;

/// Largest latency a histogram holds, in ns (one hour); larger values saturate to it.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;
/// Significant value digits of every histogram (0.1 % resolution).
pub const SIGFIG: u8 = 3;

/// A fresh latency histogram in ns.
pub fn new_histogram() -> Histogram<u64> {
    // cannot fail because: the bounds are constants that satisfy the crate's rules.
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG).expect("constant bounds")
}

/// Counts of one kind of event (messages acknowledged, or messages received).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    /// Messages counted (after the warm-up).
    pub msgs: u64,
    /// When the first counted message arrived, ns since the origin (0: none yet).
    pub first_ns: u64,
    /// When the last counted message arrived, ns since the origin.
    pub last_ns: u64,
}

impl Counter {
    /// Counts `n` messages seen at `now_ns` if the warm-up is over.
    #[inline]
    pub fn add(&mut self, n: u64, now_ns: u64, measure_from_ns: u64) {
        if now_ns >= measure_from_ns {
            if self.msgs == 0 {
                self.first_ns = now_ns;
            }
            self.msgs += n;
            self.last_ns = self.last_ns.max(now_ns);
        }
    }

    fn merge(&mut self, other: &Counter) {
        if other.msgs > 0 && (self.msgs == 0 || other.first_ns < self.first_ns) {
            self.first_ns = other.first_ns;
        }
        self.msgs += other.msgs;
        self.last_ns = self.last_ns.max(other.last_ns);
    }

    /// Seconds of the measured window: from the end of the warm-up (or, when nothing could
    /// arrive before it, the first message: a backlog starts flowing on its own) to the last
    /// counted message.
    fn secs(&self, measure_from_ns: u64) -> f64 {
        self.last_ns
            .saturating_sub(measure_from_ns.max(self.first_ns)) as f64
            / 1e9
    }
}

/// One thread's measurements, merged into a [`Report`] when the run ends.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The end of the warm-up, ns since the origin: earlier events are not counted.
    pub measure_from_ns: u64,
    /// Messages acknowledged by an `OK` to their PUB/MPUB.
    pub published: Counter,
    /// Messages received by consumers.
    pub consumed: Counter,
    /// Messages whose PUB/MPUB was written (sent, acknowledged or not).
    pub sent: u64,
    /// Deliveries answered REQ (`--req-ratio`), warm-up included.
    pub requeued: u64,
    /// Receive time − stamp (the intended send time in `e2e`), ns.
    pub e2e: Histogram<u64>,
    /// `OK` time − send time of each PUB/MPUB (intended send time in `e2e`), ns.
    pub ack: Histogram<u64>,
}

impl Recorder {
    /// An empty recorder for a run whose warm-up ends at `measure_from_ns`.
    pub fn new(measure_from_ns: u64) -> Recorder {
        Recorder {
            measure_from_ns,
            published: Counter::default(),
            consumed: Counter::default(),
            sent: 0,
            requeued: 0,
            e2e: new_histogram(),
            ack: new_histogram(),
        }
    }

    /// Records a latency sample if the event happened after the warm-up.
    #[inline]
    pub fn latency(hist: &mut Histogram<u64>, now_ns: u64, since_ns: u64, measure_from: u64) {
        if now_ns >= measure_from {
            hist.saturating_record(now_ns.saturating_sub(since_ns).max(1));
        }
    }

    /// Adds `other`'s counts and samples to this one.
    pub fn merge(&mut self, other: &Recorder) {
        self.published.merge(&other.published);
        self.consumed.merge(&other.consumed);
        self.sent += other.sent;
        self.requeued += other.requeued;
        // cannot fail because: every histogram has the same bounds, so adding never overflows
        // the range (counts are u64).
        self.e2e.add(&other.e2e).expect("same bounds");
        self.ack.add(&other.ack).expect("same bounds");
    }
}

/// Totals updated once per loop pass by every thread, read by the progress line and by the
/// stop conditions (`--count`, a drained topic, an `e2e` run waiting for its last message).
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages acknowledged by the server (warm-up included).
    pub published: AtomicU64,
    /// Messages received by consumers (warm-up included), redeliveries included.
    pub consumed: AtomicU64,
    /// Deliveries answered REQ (warm-up included).
    pub requeued: AtomicU64,
    /// Messages written by publishers (warm-up included).
    pub sent: AtomicU64,
}

impl Progress {
    /// Adds to a counter (relaxed: these are statistics, not synchronisation).
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A rate over the measured window.
#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    /// Messages counted after the warm-up.
    pub msgs: u64,
    /// Seconds from the end of the warm-up to the last counted message.
    pub secs: f64,
    /// `msgs / secs`.
    pub msgs_per_sec: f64,
    /// Payload MiB per second (`msgs × size / secs / 2^20`).
    pub mib_per_sec: f64,
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p99_9_us: f64,
    /// 99.99th percentile.
    pub p99_99_us: f64,
    /// Largest sample.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// The percentiles of a histogram in ns, or `None` if it has no samples.
    pub fn of(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Some(Latency {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p99_9_us: us(0.999),
            p99_99_us: us(0.9999),
            max_us: h.max() as f64 / 1e3,
            mean_us: h.mean() / 1e3,
        })
    }
}

/// The outcome of a run: what `--json` writes, and what the summary prints.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The configuration, in full.
    pub config: BenchConfig,
    /// Messages acknowledged (`pub`, `pubsub`, `e2e`).
    pub published: Option<Throughput>,
    /// Messages received (`sub`, `pubsub`, `e2e`): deliveries, so with `--req-ratio` the
    /// redeliveries of REQ'd messages count too.
    pub consumed: Option<Throughput>,
    /// Deliveries answered REQ 0 instead of FIN, warm-up included (with `--req-ratio`).
    pub requeued: Option<u64>,
    /// Receive − stamp latency (`e2e`: open loop; `pubsub`: closed loop).
    pub e2e_latency: Option<Latency>,
    /// PUB/MPUB → OK latency.
    pub ack_latency: Option<Latency>,
    /// Messages written but never received (runs with publishers and consumers), warm-up included.
    pub lost: Option<u64>,
    /// The generator's own CPU use (user + system) over the run, % of one core.
    pub generator_cpu_percent: f64,
    /// The merged e2e histogram (ns), for `--hgrm` and `--plot`.
    #[serde(skip)]
    pub e2e_histogram: Histogram<u64>,
    /// The merged ack histogram (ns), for `--hgrm` and `--plot`.
    #[serde(skip)]
    pub ack_histogram: Histogram<u64>,
}

impl Report {
    /// Builds the report from the merged recorder.
    pub fn new(config: BenchConfig, rec: Recorder, cpu_percent: f64) -> Report {
        let size = config.size as f64;
        let rate = |c: &Counter| {
            let secs = c.secs(rec.measure_from_ns);
            let per_sec = if secs > 0.0 {
                c.msgs as f64 / secs
            } else {
                0.0
            };
            Throughput {
                msgs: c.msgs,
                secs,
                msgs_per_sec: per_sec,
                mib_per_sec: per_sec * size / (1024.0 * 1024.0),
            }
        };
        let (publishes, consumes) = (config.mode.publishes(), config.mode.consumes());
        Report {
            published: publishes.then(|| rate(&rec.published)),
            consumed: consumes.then(|| rate(&rec.consumed)),
            requeued: (config.req_ratio > 0.0).then_some(rec.requeued),
            e2e_latency: Latency::of(&rec.e2e),
            ack_latency: Latency::of(&rec.ack),
            lost: None,
            generator_cpu_percent: cpu_percent,
            e2e_histogram: rec.e2e,
            ack_histogram: rec.ack,
            config,
        }
    }

    /// The human summary: one line per rate, one per latency series.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let c = &self.config;
        s += &format!(
            "corq bench {}: {} B messages, topic {}, {}\n",
            c.mode.name(),
            c.size,
            c.topic,
            c.shape()
        );
        for (name, t) in [("published", &self.published), ("consumed", &self.consumed)] {
            if let Some(t) = t {
                s += &format!(
                    "{name:>10}: {:>12.0} msg/s {:>9.1} MiB/s  ({} msgs in {:.2} s)\n",
                    t.msgs_per_sec, t.mib_per_sec, t.msgs, t.secs
                );
            }
        }
        for (name, l) in [("e2e", &self.e2e_latency), ("pub→OK", &self.ack_latency)] {
            if let Some(l) = l {
                s += &format!(
                    "{name:>10}: p50 {} p90 {} p99 {} p99.9 {} p99.99 {} max {} ({} samples)\n",
                    us(l.p50_us),
                    us(l.p90_us),
                    us(l.p99_us),
                    us(l.p99_9_us),
                    us(l.p99_99_us),
                    us(l.max_us),
                    l.count
                );
            }
        }
        if let Some(n) = self.requeued {
            s += &format!("{:>10}: {n} deliveries answered REQ 0\n", "requeued");
        }
        if let Some(lost) = self.lost.filter(|&n| n > 0) {
            s += &format!("{:>10}: {lost} messages sent but not received\n", "lost");
        }
        s += &format!(
            "{:>10}: {:.0} % of one core\n",
            "generator", self.generator_cpu_percent
        );
        s
    }
}

/// A latency in µs, switching to ms/s for large values so columns stay readable.
fn us(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}s", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1}ms", v / 1e3)
    } else {
        format!("{v:.0}µs")
    }
}

/// CPU seconds (user + system) this process has used so far.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we own; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0.0;
        }
        u
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_skips_warmup() {
        let mut c = Counter::default();
        c.add(5, 10, 100);
        c.add(3, 150, 100);
        c.add(2, 120, 100);
        assert_eq!((c.msgs, c.first_ns, c.last_ns), (5, 150, 150));
        let mut d = Counter::default();
        d.add(1, 110, 100);
        d.merge(&c);
        assert_eq!((d.msgs, d.first_ns, d.last_ns), (6, 110, 150));
        assert_eq!(d.secs(100), 40e-9);
    }

    #[test]
    fn latency_in_us() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v * 1000).unwrap();
        }
        let l = Latency::of(&h).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_us - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.max_us - 1000.0).abs() < 1.0, "{l:?}");
        assert!(Latency::of(&new_histogram()).is_none());
    }

    #[test]
    fn us_units() {
        assert_eq!(us(12.4), "12µs");
        assert_eq!(us(25_000.0), "25.0ms");
        assert_eq!(us(2_500_000.0), "2.50s");
    }
}
