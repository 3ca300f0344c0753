//! Log benchmarks (harness = false): append throughput (single and batch-of-200), sequential
//! reads, per-append latency percentiles (hdrhistogram) and the recovery scan speed over a
//! 1 GiB log. Everything runs in the page cache with syncs disabled; segment pre-creation runs
//! on a `StorageWorker`, as in the server. Each figure is the median of `CORQ_BENCH_REPS` runs
//! (default 3). Reported, not asserted. All files live under a temp dir removed at exit.
//!
//! Run: `cargo bench --bench log`

use corq::storage::{Log, LogConfig, NewRecord, StorageWorker};
use hdrhistogram::Histogram;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Poll the log for background jobs every this many appends.
const PUMP_EVERY: u64 = 1024;
/// Bytes of records written for the recovery case.
const RECOVERY_BYTES: usize = 1 << 30;

/// A directory under /tmp removed, with its contents, on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let p = std::env::temp_dir().join(format!("corq-bench-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create bench dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg() -> LogConfig {
    // No syncs: this measures the append path in the page cache.
    LogConfig {
        sync_every: u64::MAX,
        sync_timeout_ms: u64::MAX,
        ..LogConfig::default()
    }
}

fn pump(log: &mut Log, worker: &StorageWorker) {
    for job in log.poll_jobs(0) {
        worker.submit(0, job);
    }
    while let Some((_, done)) = worker.try_recv() {
        log.apply(done);
    }
}

fn rec(body: &[u8]) -> NewRecord<'_> {
    NewRecord {
        timestamp_ns: 1,
        deliver_at_ns: 0,
        attempts: 0,
        carried_from: None,
        dead: None,
        dedup_key: &[],
        body,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn single(dir: &Path, worker: &StorageWorker, size: usize, n: u64) -> (f64, Log) {
    let mut log = Log::open(dir, cfg()).expect("open");
    let body = vec![0x5a; size];
    let t = Instant::now();
    for i in 0..n {
        black_box(log.append(&rec(&body)).expect("append"));
        if i % PUMP_EVERY == 0 {
            pump(&mut log, worker);
        }
    }
    (n as f64 / t.elapsed().as_secs_f64(), log)
}

fn batch(dir: &Path, worker: &StorageWorker, size: usize, n: u64) -> (f64, Log) {
    let mut log = Log::open(dir, cfg()).expect("open");
    let body = vec![0x5a; size];
    let recs: Vec<NewRecord<'_>> = (0..200).map(|_| rec(&body)).collect();
    let t = Instant::now();
    for i in 0..n / 200 {
        black_box(log.append_batch(&recs).expect("append_batch"));
        if i % (PUMP_EVERY / 200) == 0 {
            pump(&mut log, worker);
        }
    }
    (n as f64 / t.elapsed().as_secs_f64(), log)
}

fn reads(log: &Log) -> (f64, f64) {
    let n = log.tail();
    let t = Instant::now();
    let mut sum = 0usize;
    for o in 0..n {
        sum += log.read(o).expect("read").body.len();
    }
    let by_read = n as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for r in log.iter_from(0) {
        sum += r.body.len();
    }
    black_box(sum);
    (by_read, n as f64 / t.elapsed().as_secs_f64())
}

fn latency(dir: &Path, worker: &StorageWorker, size: usize, n: u64) -> [f64; 4] {
    let mut log = Log::open(dir, cfg()).expect("open");
    let body = vec![0x5a; size];
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram");
    for i in 0..n {
        let t = Instant::now();
        black_box(log.append(&rec(&body)).expect("append"));
        h.saturating_record(t.elapsed().as_nanos() as u64);
        if i % PUMP_EVERY == 0 {
            pump(&mut log, worker);
        }
    }
    log.destroy().expect("destroy");
    [0.5, 0.99, 0.999, 1.0].map(|q| h.value_at_quantile(q) as f64)
}

fn recovery(dir: &Path, worker: &StorageWorker, reps: usize) -> (f64, f64) {
    let body = vec![0xa5; 1024];
    let mut log = Log::open(dir, cfg()).expect("open");
    let n = RECOVERY_BYTES as u64 / 1064;
    for i in 0..n {
        log.append(&rec(&body)).expect("append");
        if i % PUMP_EVERY == 0 {
            pump(&mut log, worker);
        }
    }
    drop(log);
    let bytes = n as f64 * 1064.0;
    let mut speeds = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let log = Log::open(dir, cfg()).expect("reopen");
        let dt = t.elapsed();
        assert_eq!(log.tail(), n, "recovery lost records");
        speeds.push(bytes / dt.as_secs_f64() / 1e9);
    }
    Log::open(dir, cfg())
        .expect("reopen")
        .destroy()
        .expect("destroy");
    (bytes / 1e9, median(speeds))
}

fn main() {
    let reps: usize = std::env::var("CORQ_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let root = TempDir::new();
    let worker = StorageWorker::spawn(Box::new(|| {})).expect("worker");
    println!("corq log benchmark: median of {reps} runs, page cache, no sync, 100 MiB segments");
    for (size, n) in [(100usize, 4_000_000u64), (1024, 1_000_000)] {
        let dir = root.0.join(format!("s{size}"));
        let (mut s, mut b, mut rd, mut it) = (vec![], vec![], vec![], vec![]);
        let mut inline = [0u64; 2];
        let mut lat = [vec![], vec![], vec![], vec![]];
        for _ in 0..reps {
            let (rate, log) = single(&dir, &worker, size, n);
            s.push(rate);
            inline[0] += log.inline_creations();
            log.destroy().expect("destroy");
            let (rate, log) = batch(&dir, &worker, size, n);
            b.push(rate);
            inline[1] += log.inline_creations();
            let (r, i) = reads(&log);
            rd.push(r);
            it.push(i);
            log.destroy().expect("destroy");
            for (v, q) in lat.iter_mut().zip(latency(&dir, &worker, size, n)) {
                v.push(q);
            }
        }
        let (s, b) = (median(s), median(b));
        let mb = |rate: f64| rate * size as f64 / 1e6;
        println!("\n{size} B records, {n} per run");
        println!(
            "  append (single)   {:>7.2} M/s  {:>7.0} MB/s of bodies",
            s / 1e6,
            mb(s)
        );
        println!(
            "  append (batch 200){:>7.2} M/s  {:>7.0} MB/s of bodies",
            b / 1e6,
            mb(b)
        );
        println!(
            "  segments created inline on the append path (all runs): single {}, batch {}",
            inline[0], inline[1]
        );
        println!("  read(offset)      {:>7.2} M/s", median(rd) / 1e6);
        println!("  iter_from         {:>7.2} M/s", median(it) / 1e6);
        let [p50, p99, p999, max] = lat.map(median);
        println!("  append latency    p50 {p50:.0} ns  p99 {p99:.0} ns  p99.9 {p999:.0} ns  max {:.1} us", max / 1e3);
    }
    let t = Instant::now();
    let (gb, speed) = recovery(&root.0.join("recovery"), &worker, reps);
    println!(
        "\nrecovery scan over {gb:.2} GB of 1 KiB records: {speed:.2} GB/s (open, warm page cache)"
    );
    let _ = black_box(Duration::from_secs(0));
    eprintln!(
        "(recovery case took {:.1} s in all)",
        t.elapsed().as_secs_f64()
    );
}
