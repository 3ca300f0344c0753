//! The page-cache window: how much of a log stays in the page cache behind the writer.
//!
//! Every append is a `pwrite` into the page cache, and a page the log writes for the first time
//! is memory the kernel hands it fresh. Left alone, the page cache keeps every byte ever written
//! until memory runs short, so a steady publisher is always writing into fresh memory. That is
//! the reactor's largest cost where fresh memory is dear: on a VM whose kernel hands freed memory
//! back to the host (free page reporting), the first write to such a page is a fault on the host
//! as well, and an MPUB run spent two thirds of the reactor's time in that copy
//! (`docs/benchmarks.md`, "Who touches a page first").
//!
//! # The rule
//!
//! A sync job, once its `fdatasync` has succeeded, drops from the page cache every whole segment
//! that (a) lies entirely before the first segment the job syncs, so all of it was durable before
//! the job began and its pages are clean, and (b) has at least
//! [`LogConfig::page_cache_window`](crate::storage::LogConfig) bytes of log after it (2 GiB by
//! default), and (c) is not among the segments a lagging reader asked to have read back (below).
//! Each segment leaves once, or never if (c) kept it ([`Log::segments_leaving_the_cache`]
//! remembers how far it got). The writer's next pages then come from memory the kernel just
//! freed. Nothing is lost: the bytes are on disk, and reading them faults them back in.
//!
//! # Readers behind the window
//!
//! A reader that far behind (a channel draining a backlog larger than the window) would fault
//! each page in from the disk on the loop, 4 KiB at a time (segment maps are `MADV_RANDOM`),
//! holding every connection: measured, a 5 M-message drain fell from ~4 M to ~0.9 M msg/s.
//! So after each delivery pass the broker asks [`Log::read_ahead_job`] for the reader it moved:
//! if the reader is below the part of the log the window has passed, a background job starts
//! reading the reader's segment and the next one into the page cache (`POSIX_FADV_WILLNEED` in
//! 128 KiB pieces, since the kernel reads at most its readahead size per call; each call queues
//! the reads and returns), and once the reader enters the second, the one after it, so the
//! reader finds its pages cached or already on their way a whole segment ahead. The segments
//! asked for form one run, and each is asked for once: other channels reading the same stretch
//! find theirs asked for (ten channels that each asked anew kept the helper re-walking cached
//! segments). The window does not drop a segment in that run: a reader that lags more and more
//! (consumers slower than the publishers) is in it or about to be, and without this the next
//! segment would be dropped after its read-ahead and read by faults on the loop (measured: 43 %
//! of the reactor's samples in `filemap_read_folio` with ten such channels). A segment read
//! back stays cached until retention deletes it. One read-ahead job per log is in flight at a
//! time.
//!
//! Cost on the loop: a sync job walks the segments inside the window (the window over
//! `--max-bytes-per-file`: about 21 at the defaults, more with much smaller segments) plus those
//! leaving it; a delivery pass compares its reader's offset with one number and reads a flag,
//! unless the reader is behind the window.

use std::fs::File;
use std::sync::Arc;

use super::Log;
use crate::storage::worker::{Job, JobKind};

impl Log {
    /// The whole segments a sync job built now may drop from the page cache once its sync has
    /// succeeded: those before segment `first` (the first one the job syncs) with at least the
    /// window's bytes of log after them, that have not left before (see the module docs).
    pub(super) fn segments_leaving_the_cache(&mut self, first: usize) -> Vec<Arc<File>> {
        let window = self.cfg.page_cache_window;
        let mut after: u64 = 0;
        let mut leaving = Vec::new();
        let mut evicted_below = self.evicted_below;
        for (i, seg) in self.segments.iter().enumerate().rev() {
            if seg.end() <= self.evicted_below {
                break; // this one and every older one left already
            }
            if i < first && after >= window && !self.is_read_ahead(seg.base, seg.end()) {
                leaving.push(Arc::clone(&seg.file));
                evicted_below = evicted_below.max(seg.end());
            }
            after = after.saturating_add(seg.flushed() as u64);
        }
        self.evicted_below = evicted_below;
        leaving
    }

    /// Segments ending at or below this offset have left the page cache, or are leaving it
    /// with the sync job built last; it moves each time the window drops one. Bytes read from
    /// them since may have come back from the disk (see `broker::topic::VerifyEpoch`).
    pub fn cache_dropped_below(&self) -> u64 {
        self.evicted_below
    }

    /// Whether the segment `base..end` is among those read-backs asked for: a reader is in
    /// it or about to be, so the window keeps it.
    fn is_read_ahead(&self, base: u64, end: u64) -> bool {
        base < self.read_ahead.end && self.read_ahead.start < end
    }

    /// A background job that starts reading into the page cache the segment holding `reader`
    /// (a channel's cursor) and the one after it, leaving out those asked for before, or `None`
    /// when the reader is inside the window, both were asked for already, or a read-ahead is
    /// in flight. The segments asked for form one run (`read_ahead`): a reader inside it only
    /// extends it, so channels reading the same stretch ask for each segment once; a reader
    /// outside it (a rewind, or a channel far from the others) starts a new run.
    pub fn read_ahead_job(&mut self, reader: u64) -> Option<Job> {
        if reader >= self.evicted_below || self.read_ahead_in_flight {
            return None;
        }
        let i = self.segment_for(reader)?;
        let past_next = self.segments.len().min(i + 2);
        let wanted_end = self.segments[past_next - 1].end();
        let first = if self.read_ahead.contains(&reader) {
            if wanted_end <= self.read_ahead.end {
                return None;
            }
            let asked_end = self.read_ahead.end;
            i + self.segments[i..past_next]
                .iter()
                .position(|s| s.end() > asked_end)?
        } else {
            self.read_ahead.start = self.segments[i].base;
            i
        };
        self.read_ahead.end = wanted_end;
        let files = self.segments[first..past_next]
            .iter()
            .map(|s| (Arc::clone(&s.file), s.flushed() as u64))
            .collect();
        self.read_ahead_in_flight = true;
        Some(Job {
            log_id: self.id,
            kind: JobKind::ReadAhead { files },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::TempDir;
    use crate::storage::worker::DoneKind;
    use crate::storage::{LogConfig, NewRecord};
    use std::time::{Duration, Instant};

    const BODY: usize = 1000;

    /// A log of 1 MiB segments with a 2 MiB window, `records` records of [`BODY`] bytes (the
    /// i-th filled with `i as u8`), all of them synced.
    fn synced_log(tmp: &TempDir, records: u64) -> Log {
        let cfg = LogConfig {
            max_bytes_per_file: 1 << 20,
            page_cache_window: 2 << 20,
            ..LogConfig::default()
        };
        let mut log = Log::open(tmp.path(), cfg).expect("open");
        for i in 0..records {
            log.append(&NewRecord::message(1, 0, &[i as u8; BODY]))
                .expect("append");
        }
        log.sync_blocking().expect("sync");
        log
    }

    /// Appends `records` more records of zeros and syncs them: the window moves with the sync.
    fn append_and_sync(log: &mut Log, records: usize) {
        for _ in 0..records {
            log.append(&NewRecord::message(1, 0, &[0; BODY]))
                .expect("append");
        }
        log.sync_blocking().expect("sync");
    }

    /// Whether every written page of segment `i` is in the page cache.
    fn cached(log: &Log, i: usize) -> bool {
        let seg = &log.segments[i];
        seg.cached(0, seg.flushed())
    }

    /// Bytes of log after segment `i`.
    fn after(log: &Log, i: usize) -> u64 {
        log.segments[i + 1..]
            .iter()
            .map(|s| s.flushed() as u64)
            .sum()
    }

    #[test]
    fn a_sync_drops_the_segments_behind_the_window_and_keeps_the_rest() {
        let tmp = TempDir::new("window");
        let mut log = synced_log(&tmp, 8000);
        assert!(log.segments.len() >= 6, "{} segments", log.segments.len());
        assert!(
            (0..log.segments.len()).all(|i| cached(&log, i)),
            "the first sync had nothing durable before it to drop"
        );
        // The next sync starts at the active segment: everything before it was durable.
        append_and_sync(&mut log, 1);
        for i in 0..log.segments.len() {
            let behind = after(&log, i) >= 2 << 20;
            assert_eq!(
                cached(&log, i),
                !behind,
                "segment {i} of {}",
                log.segments.len()
            );
        }
        // Nothing is lost: every record reads back intact, the dropped ones from the disk.
        for i in 0..8000u64 {
            let rec = log.read(i).expect("read");
            assert_eq!(rec.body, &[i as u8; BODY][..], "record {i}");
        }
        // A segment leaves once: the next sync has nothing to drop.
        assert!(log
            .segments_leaving_the_cache(log.segments.len() - 1)
            .is_empty());
    }

    #[test]
    fn a_reader_behind_the_window_gets_its_segment_and_the_next_read_ahead() {
        let tmp = TempDir::new("window-ahead");
        let mut log = synced_log(&tmp, 8000);
        append_and_sync(&mut log, 1);
        assert!(
            !cached(&log, 0) && !cached(&log, 1),
            "dropped by the window"
        );
        // A reader inside the window needs nothing.
        assert!(log.read_ahead_job(log.tail() - 1).is_none());
        // A reader in the first segment: it and the next one are read ahead.
        let job = log.read_ahead_job(10).expect("behind the window");
        let JobKind::ReadAhead { files } = &job.kind else {
            panic!("not a read-ahead job: {job:?}");
        };
        assert_eq!(files.len(), 2);
        assert!(
            log.read_ahead_job(20).is_none(),
            "one job in flight per log"
        );
        let done = job.run();
        assert!(matches!(done.kind, DoneKind::ReadAhead));
        log.apply(done);
        // The reads were queued, not waited for: wait (boundedly) for the pages to arrive.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(cached(&log, 0) && cached(&log, 1)) {
            assert!(Instant::now() < deadline, "read-ahead never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Still in the first segment asked for: no second job.
        assert!(log.read_ahead_job(20).is_none());
        // In the second one: only the one after it is asked for, a segment ahead.
        let second = log.segments[1].base;
        let job = log
            .read_ahead_job(second)
            .expect("entered the second segment");
        let JobKind::ReadAhead { files } = &job.kind else {
            panic!("not a read-ahead job: {job:?}");
        };
        assert_eq!(files.len(), 1);
        assert_eq!(log.read_ahead, 0..log.segments[2].end());
        log.apply(job.run());
        // A second channel behind the first asks for nothing: its segments were asked for.
        assert!(log.read_ahead_job(30).is_none());
        assert!(log.read_ahead_job(second + 5).is_none());
        // A reader far from the run (a rewind) starts a new one.
        let far = log.segments[4].base;
        assert!(far < log.evicted_below, "segment 4 was dropped");
        let job = log.read_ahead_job(far).expect("outside the run");
        let JobKind::ReadAhead { files } = &job.kind else {
            panic!("not a read-ahead job: {job:?}");
        };
        assert_eq!(files.len(), 2);
        assert_eq!(log.read_ahead, far..log.segments[5].end());
    }

    #[test]
    fn the_window_keeps_the_segments_a_reader_asked_for() {
        let tmp = TempDir::new("window-keeps");
        let mut log = synced_log(&tmp, 8000);
        append_and_sync(&mut log, 1);
        // The first segment still inside the window, and the one before it (dropped).
        let kept = (0..log.segments.len())
            .find(|&i| cached(&log, i))
            .expect("a cached segment");
        assert!(kept >= 1, "the window dropped something");
        // A reader in the dropped one asks for it and for `kept`, which is still cached.
        let reader = log.segments[kept - 1].base;
        let job = log.read_ahead_job(reader).expect("behind the window");
        log.apply(job.run());
        // The writer moves the window past `kept`: `kept` stays, the segments after it leave.
        append_and_sync(&mut log, 3000);
        append_and_sync(&mut log, 1);
        assert!(
            after(&log, kept + 1) >= 2 << 20,
            "the window passed kept + 1"
        );
        assert!(
            cached(&log, kept),
            "a segment a reader asked for was dropped"
        );
        assert!(
            !cached(&log, kept + 1),
            "the segment after it was not dropped"
        );
    }
}
