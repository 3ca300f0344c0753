//! `corq disk-probe`: how long this disk takes to make one small record durable, measured the
//! way a topic's log does it, so strict-mode (`--sync-every=1`) figures can be set against the
//! disk's own limit.
//!
//! The log's sync path, reproduced: a segment file preallocated with `posix_fallocate` (so the
//! first write to each block converts an unwritten extent, as in a real segment), one `pwrite`
//! of an encoded record's length at the next aligned position, then `fdatasync`. Each
//! `pwrite`+`fdatasync` pair is timed. With `--threads N`, N threads do the same at once on
//! the same file (each its own stride of positions): what overlapping syncs can gain on this
//! disk (a journaling file system commits one transaction at a time; syncs that start while
//! one commits share the next).
//!
//! The implied ceiling for C closed-loop strict publishers is C ÷ p50: each publisher has one
//! PUB outstanding, and at best every PUB waits exactly one sync.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use serde::Serialize;

use crate::storage::record::encoded_len;
use crate::storage::segment::allocate;

/// Most pairs a run may time (bounds the sample buffer: 8 MB of `u64`s).
const MAX_COUNT: usize = 1_000_000;
/// Most threads `--threads` may start.
const MAX_THREADS: usize = 64;
/// The publisher counts the ceiling is printed for (the C = 1, 16, 256).
const CEILING_FOR: [u32; 3] = [1, 16, 256];

/// `corq disk-probe` options.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// directory to probe (use the corqd --data-path); a temporary file is created and removed
    #[arg(long, default_value = ".")]
    pub data_path: PathBuf,
    /// message body size in bytes (the record written is its encoded length, header included)
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// pwrite+fdatasync pairs to time (per thread)
    #[arg(long, default_value_t = 1000)]
    pub count: usize,
    /// threads syncing the same file at once (1 = the log's one-sync-at-a-time path)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// write zeros over the whole file (and fsync) before timing, so no timed write lands in
    /// an unwritten extent: what syncs would cost if segments were pre-zeroed instead of
    /// fallocated (the log does not do this; the flag measures whether it would pay)
    #[arg(long)]
    pub prezero: bool,
    /// write the figures as JSON to this file
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What a probe measured. Latencies in µs.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The directory probed.
    pub data_path: String,
    /// Bytes written per pair (an encoded record of `--size` bytes of body, aligned).
    pub record_bytes: usize,
    /// Threads syncing at once.
    pub threads: usize,
    /// Whether the file was pre-zeroed (`--prezero`) rather than only fallocated.
    pub prezero: bool,
    /// Pairs timed (all threads).
    pub count: usize,
    /// Median pwrite+fdatasync latency.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Mean.
    pub mean_us: f64,
    /// Longest.
    pub max_us: f64,
    /// Pairs completed per second of wall time (all threads).
    pub syncs_per_sec: f64,
    /// C ÷ p50 for each C in (1, 16, 256): the best strict-mode rate C closed-loop publishers
    /// can reach if every PUB waits one sync.
    pub ceiling_msgs_per_sec: Vec<(u32, f64)>,
}

/// Runs the probe and prints (and optionally writes) its report.
///
/// # Errors
/// A message naming the flag or the failing call.
pub fn main(args: &ProbeArgs) -> Result<(), String> {
    let report = probe(args)?;
    print(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| format!("--json: {e}"))?;
        std::fs::write(path, text).map_err(|e| format!("--json {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Measures: see the module docs.
///
/// # Errors
/// Out-of-range flags, or a failed file operation (named).
pub fn probe(args: &ProbeArgs) -> Result<ProbeReport, String> {
    if args.count == 0 || args.count > MAX_COUNT {
        return Err(format!("--count must be in 1..={MAX_COUNT}"));
    }
    if args.threads == 0 || args.threads > MAX_THREADS {
        return Err(format!("--threads must be in 1..={MAX_THREADS}"));
    }
    let record_bytes = encoded_len(args.size)
        .filter(|&n| n <= 64 * 1024 * 1024)
        .ok_or_else(|| "--size is too large".to_string())?;
    // Every thread has its own positions: thread t writes slots t, t+T, t+2T, ...
    let slots = (args.count * args.threads) as u64;
    let file_len = slots
        .checked_mul(record_bytes as u64)
        .ok_or("--count × --size is too large")?;
    let path = args
        .data_path
        .join(format!("disk-probe-{}.tmp", std::process::id()));
    let file = create(&path, file_len, args.prezero)?;
    let started = Instant::now();
    let result = run_threads(&file, args, record_bytes);
    let wall = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    let mut samples = result?;
    samples.sort_unstable();
    Ok(summarise(args, record_bytes, &samples, wall))
}

/// A preallocated file, as a new segment is (unwritten extents, real blocks); with `prezero`,
/// written over with zeros (written extents).
fn create(path: &Path, len: u64, prezero: bool) -> Result<File, String> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("creating {}: {e}", path.display()))?;
    allocate(&file, 0, len, None).map_err(|e| format!("fallocate {}: {e}", path.display()))?;
    if prezero {
        let zeros = vec![0u8; 1 << 20];
        let mut at = 0;
        while at < len {
            let n = (len - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)
                .map_err(|e| format!("zeroing {}: {e}", path.display()))?;
            at += n as u64;
        }
    }
    // The file's creation and size are made durable first, as a segment's are before it takes
    // records: only the data syncs are timed.
    file.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))?;
    Ok(file)
}

/// Times `count` pairs on each of `threads` threads; the samples in ns, unsorted.
fn run_threads(file: &File, args: &ProbeArgs, record_bytes: usize) -> Result<Vec<u64>, String> {
    let file = Arc::new(file.try_clone().map_err(|e| format!("dup: {e}"))?);
    let handles: Vec<_> = (0..args.threads)
        .map(|t| {
            let file = Arc::clone(&file);
            let (count, threads) = (args.count, args.threads);
            std::thread::spawn(move || time_pairs(&file, t, threads, count, record_bytes))
        })
        .collect();
    let mut all = Vec::with_capacity(args.count * args.threads);
    for h in handles {
        let samples = h
            .join()
            .map_err(|_| "a probe thread panicked".to_string())??;
        all.extend(samples);
    }
    Ok(all)
}

/// One thread's pairs: pwrite a record at its next slot, fdatasync, time both.
fn time_pairs(
    file: &File,
    thread: usize,
    threads: usize,
    count: usize,
    record_bytes: usize,
) -> Result<Vec<u64>, String> {
    // Not all zeros, like a record: a zero page could be treated specially by some storage.
    let record: Vec<u8> = (0..record_bytes).map(|i| (i % 251) as u8 + 1).collect();
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let slot = (i * threads + thread) as u64;
        let at = slot * record_bytes as u64;
        let t0 = Instant::now();
        file.write_all_at(&record, at)
            .map_err(|e| format!("pwrite: {e}"))?;
        file.sync_data().map_err(|e| format!("fdatasync: {e}"))?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    Ok(samples)
}

fn summarise(args: &ProbeArgs, record_bytes: usize, sorted: &[u64], wall: f64) -> ProbeReport {
    let us = |ns: u64| ns as f64 / 1000.0;
    let at = |q: f64| {
        let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
        us(sorted[i])
    };
    let mean = sorted.iter().map(|&n| n as f64).sum::<f64>() / sorted.len() as f64 / 1000.0;
    let p50 = at(0.5);
    ProbeReport {
        data_path: args.data_path.display().to_string(),
        record_bytes,
        threads: args.threads,
        prezero: args.prezero,
        count: sorted.len(),
        p50_us: p50,
        p99_us: at(0.99),
        mean_us: mean,
        max_us: sorted.last().map_or(0.0, |&n| us(n)),
        syncs_per_sec: sorted.len() as f64 / wall.max(1e-9),
        ceiling_msgs_per_sec: CEILING_FOR
            .iter()
            .map(|&c| (c, f64::from(c) * 1e6 / p50.max(1e-3)))
            .collect(),
    }
}

fn print(r: &ProbeReport) {
    let file = if r.prezero {
        "pre-zeroed"
    } else {
        "fallocated"
    };
    println!(
        "disk-probe {}: {} × pwrite({} B)+fdatasync on {} thread(s), {file} file",
        r.data_path, r.count, r.record_bytes, r.threads
    );
    println!(
        "  latency p50 {:.0} µs  p99 {:.0} µs  mean {:.0} µs  max {:.0} µs  ({:.0} syncs/s)",
        r.p50_us, r.p99_us, r.mean_us, r.max_us, r.syncs_per_sec
    );
    for (c, rate) in &r.ceiling_msgs_per_sec {
        println!("  strict ceiling, {c} publishers: C ÷ p50 = {rate:.0} msg/s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::record::RECORD_ALIGN;

    #[test]
    fn probe_times_every_pair_and_removes_its_file() {
        let dir = std::env::temp_dir().join(format!("corq-probe-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let args = ProbeArgs {
            data_path: dir.clone(),
            size: 200,
            count: 5,
            threads: 2,
            prezero: true,
            json: None,
        };
        let r = probe(&args).expect("probe");
        assert_eq!(r.count, 10);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
        assert_eq!(r.ceiling_msgs_per_sec.len(), 3);
        assert!(r.record_bytes >= 200 && r.record_bytes.is_multiple_of(RECORD_ALIGN));
        let left: Vec<_> = std::fs::read_dir(&dir).expect("read_dir").collect();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(left.is_empty(), "probe left {left:?}");
    }

    #[test]
    fn probe_refuses_out_of_range_flags() {
        let args = ProbeArgs {
            data_path: PathBuf::from("."),
            size: 200,
            count: 0,
            threads: 1,
            prezero: false,
            json: None,
        };
        assert!(matches!(probe(&args), Err(e) if e.contains("--count")));
    }
}
