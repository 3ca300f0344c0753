//! The main thread during a run: wait for every SUB to be answered, open publishing, time the
//! warm-up and the run, apply each mode's stop rule, and print the progress line. The worker
//! threads only read the flags this sets in [`Control`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::driver::ns_since;
use super::stats::Progress;
use super::{BenchConfig, BenchError, Control, Mode, IDLE_MS};

/// How long consumers may take to get their SUBs answered.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the main thread looks at the counters.
const TICK: Duration = Duration::from_millis(5);

/// The main thread's part: wait for the SUBs, open publishing, time the warm-up and the run,
/// decide when it is over, and print progress. Returns when the threads should stop.
pub(super) fn supervise(
    cfg: &BenchConfig,
    control: &Control,
    progress: &Progress,
    show: bool,
) -> Result<(), BenchError> {
    let consumers = if cfg.mode.consumes() {
        cfg.channels * cfg.consumer_count()
    } else {
        0
    };
    let deadline = Instant::now() + SUBSCRIBE_TIMEOUT;
    while Progress::get(&control.subscribed) < consumers as u64 {
        if control.stop.load(Ordering::Relaxed) {
            return Ok(()); // a thread failed; its error is reported by `run`
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "only {} of {consumers} SUBs were answered within {SUBSCRIBE_TIMEOUT:?}",
                Progress::get(&control.subscribed)
            )));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = ns_since(control.origin);
    if cfg.mode.publishes() {
        control
            .measure_from_ns
            .store(start + cfg.warmup_ms * 1_000_000, Ordering::Relaxed);
    }
    control.publishing.store(true, Ordering::Relaxed);
    let publish_end = start + (cfg.warmup_ms + cfg.duration_ms) * 1_000_000;
    let mut watch = Watch::new(ns_since(control.origin));
    while !control.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = ns_since(control.origin);
        let snap = Snapshot::take(progress);
        watch.observe(now, snap);
        if show {
            watch.print_progress(now, start, snap);
        }
        if cfg.count.is_none() && now >= publish_end {
            control.publishing.store(false, Ordering::Relaxed);
        }
        if finished(cfg, control, snap, &watch, now, publish_end) {
            break;
        }
    }
    if show {
        eprintln!();
    }
    Ok(())
}

/// Progress counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Snapshot {
    published: u64,
    consumed: u64,
    requeued: u64,
    sent: u64,
}

impl Snapshot {
    fn take(p: &Progress) -> Snapshot {
        Snapshot {
            published: Progress::get(&p.published),
            consumed: Progress::get(&p.consumed),
            requeued: Progress::get(&p.requeued),
            sent: Progress::get(&p.sent),
        }
    }
}

/// When the counters last moved, and what the progress line last showed.
#[derive(Debug)]
struct Watch {
    last: Snapshot,
    last_change_ns: u64,
    printed: Snapshot,
    printed_ns: u64,
}

impl Watch {
    fn new(now: u64) -> Watch {
        Watch {
            last: Snapshot::default(),
            last_change_ns: now,
            printed: Snapshot::default(),
            printed_ns: now,
        }
    }

    fn observe(&mut self, now: u64, snap: Snapshot) {
        if snap != self.last {
            self.last = snap;
            self.last_change_ns = now;
        }
    }

    fn idle_ms(&self, now: u64) -> u64 {
        now.saturating_sub(self.last_change_ns) / 1_000_000
    }

    /// One line a second, overwritten in place: rates since the previous line.
    fn print_progress(&mut self, now: u64, start: u64, snap: Snapshot) {
        if now < self.printed_ns + 1_000_000_000 {
            return;
        }
        let secs = (now - self.printed_ns) as f64 / 1e9;
        let rate = |a: u64, b: u64| (a - b) as f64 / secs;
        eprint!(
            "\r[{:>4.0}s] published {:>11.0} msg/s  consumed {:>11.0} msg/s  (total {} / {})   ",
            now.saturating_sub(start) as f64 / 1e9,
            rate(snap.published, self.printed.published),
            rate(snap.consumed, self.printed.consumed),
            snap.published,
            snap.consumed
        );
        self.printed = snap;
        self.printed_ns = now;
    }
}

/// The stop rule, per mode: publishers are done (count reached, or the duration is over and
/// every command answered), and consumers have everything sent to them or went idle.
fn finished(
    cfg: &BenchConfig,
    control: &Control,
    snap: Snapshot,
    watch: &Watch,
    now: u64,
    publish_end: u64,
) -> bool {
    let idle = watch.idle_ms(now) >= IDLE_MS;
    let publishing_over = match cfg.count {
        Some(n) if cfg.mode.publishes() => snap.sent >= n,
        _ => !control.publishing.load(Ordering::Relaxed),
    };
    match cfg.mode {
        Mode::Pub => publishing_over && (snap.published >= snap.sent || idle),
        Mode::Sub => match cfg.count {
            Some(n) => snap.consumed >= n || idle,
            None => now >= publish_end || idle,
        },
        Mode::Pubsub | Mode::E2e => {
            // A REQ'd delivery comes back: only the FIN'd ones are messages done.
            let finished = snap.consumed.saturating_sub(snap.requeued);
            let all_in = finished >= snap.sent * cfg.channels as u64;
            publishing_over && ((snap.published >= snap.sent && all_in) || idle)
        }
    }
}
