//! [`Log`]: one topic's segmented log. Owns the segment list, offset assignment, reads by
//! offset, iteration, retention, and the state machine of background jobs (sync policy and
//! segment pre-creation). Blocking work is never done here on the hot path: it is handed out
//! as [`Job`]s (see `worker.rs`), except for the documented inline fallbacks.
//!
//! # Durability
//!
//! - Interval (`sync_every > 1`): a sync job is produced once `sync_every` records are
//!   unsynced, or once unsynced records have waited `sync_timeout_ms` (measured from the first
//!   `poll_jobs` call that saw them), whichever comes first.
//! - Strict (`sync_every == 1`): a sync job is produced whenever records are unsynced and no
//!   sync is in flight; it covers every append made before it was produced (group commit).
//!   [`Log::durable_offset`] tells which offsets are on stable storage.
//! - A failed sync poisons the log: appends return [`StorageError::Failed`]; reads still work.

use super::record::{self, RECORD_ALIGN, RECORD_HEADER_LEN};
use super::recovery;
use super::segment::{PreparedSegment, Segment, PREALLOC_SUFFIX, SEGMENT_HEADER_LEN};
use super::worker::{DoneKind, Job, JobDone, JobKind};
use super::{LogConfig, NewRecord, Record, StorageError};
use ::log::{debug, error, info, warn};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Source of [`Log`] instance ids, so a job result is never applied to the wrong log.
static NEXT_LOG_ID: AtomicU64 = AtomicU64::new(1);
/// After a failed pre-creation (e.g. disk full), wait this long before trying again.
const PREPARE_RETRY_MS: u64 = 1000;

/// A topic's log. See the module docs of `storage` for the file map and `docs/storage-format.md`.
pub struct Log {
    dir: PathBuf,
    /// Kept open so a sync job can fsync the directory after segment installs.
    dir_file: Arc<File>,
    cfg: LogConfig,
    id: u64,
    /// In offset order; never empty; the last one is the active (appended-to) segment.
    segments: Vec<Segment>,
    /// Next offset to assign.
    tail: u64,
    /// Every offset below this is on stable storage.
    durable: u64,
    /// Target of the sync job in flight, if any.
    sync_in_flight: Option<u64>,
    /// When `poll_jobs` first saw the current unsynced records (for `sync_timeout_ms`).
    unsynced_since_ms: Option<u64>,
    /// A segment was installed (renamed) since the last sync: fsync the directory too.
    dir_dirty: bool,
    /// Pre-created segments waiting to be installed.
    ready: Vec<PreparedSegment>,
    prepare_in_flight: bool,
    /// Set by a failed pre-creation; `poll_jobs` turns it into a retry time.
    prepare_failed: bool,
    prepare_retry_at_ms: u64,
    /// Counter for unique `.prealloc` names.
    prealloc_seq: u64,
    /// Why the log is poisoned, if it is.
    failed: Option<String>,
    /// Records lost to recovery cuts.
    recovery_lost: u64,
    /// Offsets seen failing verification (holes found at recovery, CRC failures on read), so
    /// each is counted and logged once however often it is read.
    bad: RefCell<BTreeSet<u64>>,
    /// Test seam: when set, segment allocation fails with ENOSPC.
    alloc_fault: Option<Arc<AtomicBool>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("head", &self.head())
            .field("tail", &self.tail)
            .field("durable", &self.durable)
            .field("segments", &self.segments.len())
            .field("failed", &self.failed)
            .finish()
    }
}

fn validate(cfg: &LogConfig) -> Result<(), StorageError> {
    let min = (SEGMENT_HEADER_LEN + record::encoded_len(0).unwrap_or(0)) as u64;
    if cfg.max_bytes_per_file < min || cfg.max_bytes_per_file > u64::from(u32::MAX) {
        let got = cfg.max_bytes_per_file;
        return Err(StorageError::Config(format!(
            "--max-bytes-per-file {got} must be in {min}..={}",
            u32::MAX
        )));
    }
    if cfg.sync_every == 0 {
        return Err(StorageError::Config(
            "--sync-every must be at least 1".into(),
        ));
    }
    Ok(())
}

impl Log {
    /// Opens (creating it if missing) the log in `dir` and recovers it: see `recovery.rs` for
    /// the policy. Blocks (directory scan, CRC of every record, possibly a segment creation).
    ///
    /// # Errors
    /// `Config` for out-of-range settings, `Io` naming the path, `Corruption` for a garbage
    /// segment header or overlapping segments.
    pub fn open(dir: &Path, cfg: LogConfig) -> Result<Log, StorageError> {
        validate(&cfg)?;
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io(dir, "create_dir", e))?;
        let rec = recovery::recover(dir, cfg.max_bytes_per_file)?;
        let dir_file = File::open(dir).map_err(|e| StorageError::io(dir, "open", e))?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            dir_file: Arc::new(dir_file),
            cfg,
            id: NEXT_LOG_ID.fetch_add(1, Ordering::Relaxed),
            segments: rec.segments,
            tail: 0,
            durable: 0,
            sync_in_flight: None,
            unsynced_since_ms: None,
            dir_dirty: false,
            ready: Vec::new(),
            prepare_in_flight: false,
            prepare_failed: false,
            prepare_retry_at_ms: 0,
            prealloc_seq: 0,
            failed: None,
            recovery_lost: rec.corrupt,
            bad: RefCell::new(rec.holes.into_iter().collect()),
            alloc_fault: None,
        };
        if log.segments.is_empty() {
            let prep = log.create_prepared()?;
            log.segments.push(Segment::install(prep, dir, 0)?);
            log.dir_dirty = true;
        }
        log.tail = log.active().end();
        // Nothing is known durable until our first sync (it covers every segment).
        log.durable = log.head();
        info!(
            "opened log {} at offsets {}..{}",
            dir.display(),
            log.head(),
            log.tail
        );
        Ok(log)
    }

    fn active(&self) -> &Segment {
        // cannot fail: `segments` is never empty after open (invariant).
        self.segments.last().expect("log has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        // cannot fail: as above.
        self.segments.last_mut().expect("log has an active segment")
    }

    /// The largest body an append accepts: the configured max, or what fits a segment.
    pub fn max_body(&self) -> usize {
        let room =
            (self.cfg.max_bytes_per_file as usize - SEGMENT_HEADER_LEN) & !(RECORD_ALIGN - 1);
        (self.cfg.max_msg_size as usize).min(room - RECORD_HEADER_LEN)
    }

    /// Validates a body length and returns the record's span.
    fn span_of(&self, len: usize) -> Result<usize, StorageError> {
        let max = self.max_body();
        match record::encoded_len(len) {
            Some(span) if len <= max => Ok(span),
            _ => Err(StorageError::TooLarge { len, max }),
        }
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(why) => Err(StorageError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Appends one record and returns its offset. The bytes go straight into the map; nothing
    /// is allocated, unless the segment is full and no pre-created one is ready (then one is
    /// created inline, with a `debug!`).
    ///
    /// # Errors
    /// `TooLarge`, `Failed` (poisoned), `Io` if a needed segment cannot be created (disk full):
    /// the log stays usable and nothing was appended.
    pub fn append(&mut self, rec: &NewRecord<'_>) -> Result<u64, StorageError> {
        self.check_writable()?;
        let span = self.span_of(rec.body.len())?;
        self.make_room(span)?;
        let offset = self.active_mut().append(rec, span);
        self.tail = offset + 1;
        Ok(offset)
    }

    /// Appends a batch (MPUB) and returns its offsets. Every size is validated, and every
    /// segment the batch needs is allocated, before the first record is written: a bad record
    /// or a full disk appends none. (Only a failed `rename` while installing a segment, which
    /// needs no space, could leave a prefix appended; the error says so.)
    pub fn append_batch(&mut self, recs: &[NewRecord<'_>]) -> Result<Range<u64>, StorageError> {
        self.check_writable()?;
        for r in recs {
            self.span_of(r.body.len())?;
        }
        let rolls = self.rolls_needed(recs);
        while self.ready.len() < rolls {
            debug!(
                "{}: creating a segment inline for a batch",
                self.dir.display()
            );
            let prep = self.create_prepared()?;
            self.ready.push(prep);
        }
        let start = self.tail;
        for r in recs {
            // cannot fail: validated above.
            let span = self.span_of(r.body.len())?;
            self.make_room(span)
                .inspect_err(|e| error!("batch partly appended ({start}..{}): {e}", self.tail))?;
            self.tail = self.active_mut().append(r, span) + 1;
        }
        Ok(start..self.tail)
    }

    /// How many new segments writing `recs` takes.
    fn rolls_needed(&self, recs: &[NewRecord<'_>]) -> usize {
        let fresh = self.cfg.max_bytes_per_file as usize - SEGMENT_HEADER_LEN;
        let mut room = self.active().capacity() - self.active().used();
        let mut rolls = 0;
        for r in recs {
            let span = record::encoded_len(r.body.len()).unwrap_or(usize::MAX);
            if span > room {
                rolls += 1;
                room = fresh;
            }
            room = room.saturating_sub(span);
        }
        rolls
    }

    fn make_room(&mut self, span: usize) -> Result<(), StorageError> {
        if self.active().has_room(span) {
            return Ok(());
        }
        let prep = match self.ready.pop() {
            Some(p) => p,
            None => {
                debug!(
                    "{}: no pre-created segment ready; creating one inline",
                    self.dir.display()
                );
                self.create_prepared()?
            }
        };
        let seg = Segment::install(prep, &self.dir, self.tail)?;
        info!(
            "rolled {} to segment {}",
            self.dir.display(),
            seg.path.display()
        );
        self.active_mut().seal();
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }

    fn next_prealloc_path(&mut self) -> PathBuf {
        self.prealloc_seq += 1;
        self.dir
            .join(format!("{:020}{PREALLOC_SUFFIX}", self.prealloc_seq))
    }

    fn create_prepared(&mut self) -> Result<PreparedSegment, StorageError> {
        let path = self.next_prealloc_path();
        PreparedSegment::create(
            path,
            self.cfg.max_bytes_per_file,
            self.alloc_fault.as_deref(),
        )
    }

    /// The segment that would hold `offset`, by base (it may not actually hold it: a gap).
    fn segment_for(&self, offset: u64) -> Option<usize> {
        self.segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)
    }

    /// Reads the record at `offset`, borrowing its body from the map. The CRC is verified.
    ///
    /// # Errors
    /// `NotFound` below the head, at or past the tail, or in a recovery gap; `Corruption` if
    /// the bytes fail verification (counted and logged once per offset).
    pub fn read(&self, offset: u64) -> Result<Record<'_>, StorageError> {
        let not_found = StorageError::NotFound { offset };
        if offset >= self.tail {
            return Err(not_found);
        }
        let seg = &self.segments[self.segment_for(offset).ok_or(not_found)?];
        match seg.read(offset) {
            None => Err(StorageError::NotFound { offset }),
            Some(Ok(r)) => Ok(r),
            Some(Err(why)) => {
                self.note_corrupt(seg, offset, &why);
                Err(StorageError::Corruption {
                    path: seg.path.clone(),
                    offset,
                    reason: why.to_string(),
                })
            }
        }
    }

    fn note_corrupt(&self, seg: &Segment, offset: u64, why: &dyn std::fmt::Display) {
        if self.bad.borrow_mut().insert(offset) {
            warn!(
                "{}: skipping corrupt record at offset {offset}: {why}",
                seg.path.display()
            );
        }
    }

    /// Iterates records from `offset` (or the head, if lower) to the tail, skipping corrupt
    /// records (counted and logged) and gaps.
    pub fn iter_from(&self, offset: u64) -> LogIter<'_> {
        let next = offset.max(self.head());
        LogIter {
            log: self,
            seg: self.segment_for(next).unwrap_or(0),
            next,
        }
    }

    /// Oldest retained offset.
    pub fn head(&self) -> u64 {
        self.segments.first().map_or(self.tail, |s| s.base)
    }

    /// Next offset to be assigned.
    pub fn tail(&self) -> u64 {
        self.tail
    }

    /// Every offset below this is known to be on stable storage.
    pub fn durable_offset(&self) -> u64 {
        self.durable
    }

    /// Records skipped as corrupt since open, recovery included (each offset counted once).
    pub fn corrupt_records(&self) -> u64 {
        self.recovery_lost + self.bad.borrow().len() as u64
    }

    /// Bytes allocated on disk: segments plus pre-created ones.
    pub fn disk_bytes(&self) -> u64 {
        let segs: usize = self.segments.iter().map(Segment::capacity).sum();
        let ready: usize = self.ready.iter().map(PreparedSegment::len).sum();
        (segs + ready) as u64
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Why the log refuses appends, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Deletes the segments whose records are all below `offset`, never the active one.
    /// Returns how many were deleted. (Unlinking is done inline; it does not fsync.)
    pub fn delete_below(&mut self, offset: u64) -> Result<usize, StorageError> {
        let mut n = 0;
        while self.segments.len() > 1 && self.segments[1].base <= offset {
            let path = self.segments[0].path.clone();
            std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, "remove", e))?;
            info!("retention: deleted segment {}", path.display());
            self.segments.remove(0);
            n += 1;
        }
        self.durable = self.durable.max(self.head());
        Ok(n)
    }

    /// Removes every file and the directory (topic delete).
    pub fn destroy(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, "remove_dir_all", e))
    }

    /// Test seam: while `flag` is set, segment allocation fails with ENOSPC.
    #[doc(hidden)]
    pub fn set_alloc_fault(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.alloc_fault = flag;
    }

    /// Pre-created segments waiting (for tests and stats).
    #[doc(hidden)]
    pub fn ready_segments(&self) -> usize {
        self.ready.len()
    }
}

/// Background jobs: see the module docs for the policy.
impl Log {
    /// The jobs due at `now_ms` (a monotonic ms clock of the caller's choosing): at most one
    /// sync and one segment pre-creation. Submit them to a [`StorageWorker`](super::StorageWorker)
    /// and pass the results to [`Log::apply`].
    pub fn poll_jobs(&mut self, now_ms: u64) -> impl Iterator<Item = Job> + 'static {
        let sync = self.sync_job(now_ms);
        let prepare = self.prepare_job(now_ms);
        sync.into_iter().chain(prepare)
    }

    /// When the caller should next call `poll_jobs` for the sync timeout, if anything waits.
    pub fn next_sync_deadline_ms(&self) -> Option<u64> {
        match (self.sync_in_flight, self.unsynced_since_ms) {
            (None, Some(since)) => Some(since.saturating_add(self.cfg.sync_timeout_ms)),
            _ => None,
        }
    }

    fn sync_job(&mut self, now_ms: u64) -> Option<Job> {
        if self.failed.is_some() || self.sync_in_flight.is_some() {
            return None;
        }
        let pending = self.tail - self.durable;
        if pending == 0 && !self.dir_dirty {
            self.unsynced_since_ms = None;
            return None;
        }
        let since = *self.unsynced_since_ms.get_or_insert(now_ms);
        let due = self.cfg.sync_every == 1
            || pending >= self.cfg.sync_every
            || now_ms.saturating_sub(since) >= self.cfg.sync_timeout_ms;
        if !due {
            return None;
        }
        // Segments holding offsets in [durable, tail): from the one containing `durable` on.
        let first = self.segment_for(self.durable).unwrap_or(0);
        let files = self.segments[first..]
            .iter()
            .map(|s| (s.path.clone(), Arc::clone(&s.file)))
            .collect();
        let dir = self
            .dir_dirty
            .then(|| (self.dir.clone(), Arc::clone(&self.dir_file)));
        self.dir_dirty = false;
        self.sync_in_flight = Some(self.tail);
        self.unsynced_since_ms = None;
        Some(Job {
            log_id: self.id,
            kind: JobKind::Sync {
                target: self.tail,
                files,
                dir,
            },
        })
    }

    fn prepare_job(&mut self, now_ms: u64) -> Option<Job> {
        if std::mem::take(&mut self.prepare_failed) {
            self.prepare_retry_at_ms = now_ms.saturating_add(PREPARE_RETRY_MS);
        }
        let active = self.active();
        // Pre-create once the active segment is half full, so it is ready long before needed.
        let half_full = active.used() * 2 >= active.capacity();
        if !half_full
            || !self.ready.is_empty()
            || self.prepare_in_flight
            || now_ms < self.prepare_retry_at_ms
        {
            return None;
        }
        self.prepare_in_flight = true;
        let path = self.next_prealloc_path();
        let kind = JobKind::Prepare {
            path,
            size: self.cfg.max_bytes_per_file,
            fault: self.alloc_fault.clone(),
        };
        Some(Job {
            log_id: self.id,
            kind,
        })
    }

    /// Applies a finished job's result. Results made for another `Log` instance are ignored.
    pub fn apply(&mut self, done: JobDone) {
        if done.log_id != self.id {
            debug!(
                "{}: ignoring a job result for another log instance",
                self.dir.display()
            );
            return;
        }
        match done.kind {
            DoneKind::Synced { target, result } => {
                self.sync_in_flight = None;
                match result {
                    Ok(()) => self.durable = self.durable.max(target),
                    Err(e) => {
                        error!(
                            "{}: sync failed, refusing further appends: {e}",
                            self.dir.display()
                        );
                        self.failed = Some(e.to_string());
                    }
                }
            }
            DoneKind::Prepared(result) => {
                self.prepare_in_flight = false;
                match result {
                    Ok(prep) => self.ready.push(prep),
                    Err(e) => {
                        warn!(
                            "{}: pre-creating the next segment failed: {e}",
                            self.dir.display()
                        );
                        self.prepare_failed = true;
                    }
                }
            }
        }
    }

    /// Runs the due jobs synchronously (no worker: tests, benches, tools).
    pub fn run_jobs_inline(&mut self, now_ms: u64) {
        let jobs: Vec<Job> = self.poll_jobs(now_ms).collect();
        for job in jobs {
            let done = job.run();
            self.apply(done);
        }
    }
}

/// Iterator over a log's records; see [`Log::iter_from`].
#[derive(Debug)]
pub struct LogIter<'a> {
    log: &'a Log,
    /// Index of the segment `next` is looked up in (cached: no search per record).
    seg: usize,
    next: u64,
}

impl<'a> Iterator for LogIter<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let log = self.log;
        while self.next < log.tail {
            let seg = log.segments.get(self.seg)?;
            if self.next >= seg.end() {
                // Past this segment's records (possibly into a gap): move to the next segment.
                self.seg += 1;
                self.next = log
                    .segments
                    .get(self.seg)
                    .map_or(log.tail, |s| s.base.max(self.next));
                continue;
            }
            let offset = self.next;
            self.next += 1;
            match seg.read(offset) {
                Some(Ok(r)) => return Some(r),
                Some(Err(why)) => log.note_corrupt(seg, offset, &why),
                None => {}
            }
        }
        None
    }
}
