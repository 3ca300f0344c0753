//! [`Log`]: one topic's segmented log. Owns the segment list, offset assignment, reads by
//! offset, iteration, retention, and the state machine of background jobs (sync policy,
//! growing the active segment's file, segment pre-creation). Blocking work is never done here
//! on the hot path: it is handed out as [`Job`](super::Job)s (see `worker.rs`), except for
//! the documented inline fallbacks (a growth step or a segment creation the helper did not
//! finish in time, both counted).
//!
//! Disk is taken on demand: a new log's first segment is 64 KiB, grown ahead of the writer by
//! the helper (see `space.rs` for the steps), and the next segment is pre-created only when
//! the active one is nearly full, sized like its growth steps. An append that needs space not
//! yet allocated allocates it first (an MPUB allocates for the whole batch before writing any
//! of it), so a full disk is an `Io` error from `append`, never a fault.
//!
//! The sync policy and job state machine live in the child module `log/jobs.rs`.

use super::record::{self, RECORD_ALIGN, RECORD_HEADER_LEN};
use super::recovery;
use super::segment::{PreparedSegment, Segment, FLUSH_AT, PREALLOC_SUFFIX, SEGMENT_HEADER_LEN};
use super::space;
use super::worker::Job;
use super::{LogConfig, NewRecord, Record, StorageError};
use ::log::{debug, error, info, warn};
use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

mod jobs;
mod resident;
mod syncs;
mod warm;
mod window;

pub(crate) use syncs::MAX_SYNCS_IN_FLIGHT;
pub(crate) use warm::warm_ranges;

use syncs::SyncTracker;

/// Source of [`Log`] instance ids, so a job result is never applied to the wrong log.
static NEXT_LOG_ID: AtomicU64 = AtomicU64::new(1);
/// Source of `.prealloc` names. Process-wide, not per `Log`: a late job result for a log that
/// was destroyed and recreated in the same directory must not name (and, when discarded,
/// delete) a file the new instance is using. Leftovers from earlier processes are removed on
/// open, before any new name is used.
static NEXT_PREALLOC: AtomicU64 = AtomicU64::new(1);

/// After a segment had to be created inline, this many pre-creations run on the foreground
/// (normal-priority) lane before the log tries the background lane again.
const URGENT_PREPARES_AFTER_INLINE: u8 = 4;
/// Likewise for growth steps after a segment had to be grown inline.
const URGENT_GROWS_AFTER_INLINE: u8 = 8;

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
    /// The sync jobs in flight and the rule that turns their completions into `durable`
    /// (several at once in strict mode: see `log/syncs.rs`).
    syncs: SyncTracker,
    /// Syncs completed successfully, and records they made durable (`/metrics`: the ratio is
    /// the group size per sync).
    syncs_done: u64,
    synced_records: u64,
    /// When `poll_jobs` first saw the current unsynced records (for `sync_timeout_ms`).
    unsynced_since_ms: Option<u64>,
    /// The interval sync in flight on the background lane, if any: it may be superseded (see
    /// `log/jobs.rs`, "Durability").
    background_sync: Option<jobs::BackgroundSync>,
    /// A segment was installed (renamed) since the last sync: fsync the directory too.
    dir_dirty: bool,
    /// Pre-created segments waiting to be installed.
    ready: Vec<PreparedSegment>,
    prepare_in_flight: bool,
    /// Set by a failed pre-creation; `poll_jobs` turns it into a retry time.
    prepare_failed: bool,
    prepare_retry_at_ms: u64,
    /// A growth step of the active segment is running on the helper.
    grow_in_flight: bool,
    /// Set by a failed growth step; `poll_jobs` turns it into a retry time.
    grow_failed: bool,
    grow_retry_at_ms: u64,
    /// Growth steps done inline because the helper had not made the room yet.
    inline_growths: u64,
    /// Growth steps still to run on the foreground lane (as `urgent_prepares`).
    urgent_grows: u8,
    /// Why the log is poisoned, if it is.
    failed: Option<String>,
    /// Records lost to recovery cuts.
    recovery_lost: u64,
    /// Offsets seen failing verification (holes found at recovery, CRC failures on read), so
    /// each is counted and logged once however often it is read.
    bad: RefCell<BTreeSet<u64>>,
    /// The segment the last lookup found. Reads run along a segment (a channel's cursor, an
    /// iterator), so the next lookup is usually in the same one: checking it first skips the
    /// binary search, which was a third of `read_with` in a 10-channel fan-out profile.
    lookup_hint: Cell<usize>,
    /// Segments created inline because no pre-created one was ready (a tuning signal).
    inline_creations: u64,
    /// Pre-creations still to run on the foreground lane: set when a segment had to be
    /// created inline (this log outruns background pre-creation), counted down by each
    /// pre-created segment that was ready in time.
    urgent_prepares: u8,
    /// Test seam: when set, segment allocation fails with ENOSPC.
    alloc_fault: Option<Arc<AtomicBool>>,
    /// Test seam: when set, writing pending appends fails with EIO.
    write_fault: Option<Arc<AtomicBool>>,
    /// Segment files dropped by retention, waiting for a removal job.
    to_remove: Vec<PathBuf>,
    /// Segments ending at or below this offset have left the page cache (see `log/window.rs`).
    evicted_below: u64,
    /// The offsets of the run of segments read-ahead jobs asked for (see `log/window.rs`); the
    /// window does not drop them.
    read_ahead: Range<u64>,
    read_ahead_in_flight: bool,
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

/// The active segment (the last).
fn last_segment(segments: &mut [Segment]) -> &mut Segment {
    // cannot fail because `segments` is never empty after open (an invariant of `open`).
    segments.last_mut().expect("log has an active segment")
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
            syncs: SyncTracker::default(),
            syncs_done: 0,
            synced_records: 0,
            unsynced_since_ms: None,
            background_sync: None,
            dir_dirty: false,
            ready: Vec::new(),
            prepare_in_flight: false,
            prepare_failed: false,
            prepare_retry_at_ms: 0,
            grow_in_flight: false,
            grow_failed: false,
            grow_retry_at_ms: 0,
            inline_growths: 0,
            urgent_grows: 0,
            failed: None,
            recovery_lost: rec.corrupt,
            bad: RefCell::new(rec.holes.into_iter().collect()),
            lookup_hint: Cell::new(0),
            alloc_fault: None,
            write_fault: None,
            inline_creations: 0,
            urgent_prepares: 0,
            to_remove: Vec::new(),
            evicted_below: 0,
            read_ahead: 0..0,
            read_ahead_in_flight: false,
        };
        if log.segments.is_empty() {
            let size = space::initial_alloc(log.cfg.max_bytes_per_file);
            let prep = log.create_prepared(size)?;
            log.segments
                .push(Segment::install(prep, dir, 0, Vec::new())?);
            log.dir_dirty = true;
        }
        // A recovered active segment is mapped at its file's length; map it at the limit so it
        // can grow under the map. (validate: the limit fits a u32, hence a usize.)
        let limit = log.cfg.max_bytes_per_file as usize;
        log.active_mut().map_to_limit(limit)?;
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
        // cannot fail because `segments` is never empty after open (an invariant of `open`).
        self.segments.last().expect("log has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        last_segment(&mut self.segments)
    }

    /// The largest body an append accepts: the configured max, or what fits a segment.
    pub fn max_body(&self) -> usize {
        let room =
            (self.cfg.max_bytes_per_file as usize - SEGMENT_HEADER_LEN) & !(RECORD_ALIGN - 1);
        (self.cfg.max_msg_size as usize).min(room - RECORD_HEADER_LEN)
    }

    /// Validates a record's size and returns its span. A carried record's 8-byte prefix must
    /// fit the segment as well, so carrying a message whose body is the segment-limited maximum
    /// fails with `TooLarge` (the broker then leaves that message where it is).
    fn span_of(&self, rec: &NewRecord<'_>) -> Result<usize, StorageError> {
        let max = self.max_body();
        let len = rec.body.len();
        let room =
            (self.cfg.max_bytes_per_file as usize - SEGMENT_HEADER_LEN) & !(RECORD_ALIGN - 1);
        match record::encoded_len(rec.stored_len()) {
            Some(span) if len <= max && span <= room => Ok(span),
            _ => Err(StorageError::TooLarge { len, max }),
        }
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        match &self.failed {
            Some(why) => Err(StorageError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Appends one record and returns its offset. The bytes go into the active segment's
    /// pending buffer (readable at once; written to the file by [`Log::flush`]); nothing is
    /// allocated, unless the helper has not grown the file far enough yet (then it grows
    /// inline) or the segment is full and no pre-created one is ready (then one is created
    /// inline), each with a `debug!`.
    ///
    /// # Errors
    /// `TooLarge`, `Failed` (poisoned), `Io` if a needed segment cannot be created (disk full):
    /// the log stays usable and nothing was appended.
    pub fn append(&mut self, rec: &NewRecord<'_>) -> Result<u64, StorageError> {
        self.check_writable()?;
        let span = self.span_of(rec)?;
        self.make_room(span)?;
        let offset = self.active_mut().append(rec, span);
        self.tail = offset + 1;
        self.flush_if_large();
        Ok(offset)
    }

    /// Appends a batch (MPUB) and returns its offsets. Every size is validated, and every
    /// segment the batch needs is allocated, before the first record is written: a bad record
    /// or a full disk appends none. (Only a failed `rename` while installing a segment, which
    /// needs no space, could leave a prefix appended; that is logged at `error!`.)
    pub fn append_batch(&mut self, recs: &[NewRecord<'_>]) -> Result<Range<u64>, StorageError> {
        self.check_writable()?;
        let plan = self.batch_plan(recs)?;
        while self.ready.len() < plan.rolls {
            debug!(
                "{}: creating a segment inline for a batch",
                self.dir.display()
            );
            let prep = self.create_prepared(self.next_segment_size())?;
            self.note_inline_creation();
            self.ready.push(prep);
        }
        self.reserve_for_batch(&plan)?;
        let start = self.tail;
        for r in recs {
            // cannot fail: validated above.
            let span = self.span_of(r)?;
            self.make_room(span)
                .inspect_err(|e| error!("batch partly appended ({start}..{}): {e}", self.tail))?;
            self.tail = self.active_mut().append(r, span) + 1;
            self.flush_if_large();
        }
        Ok(start..self.tail)
    }

    /// Writes what was appended since the last flush to the active segment's file, so it is in
    /// the page cache (and survives a crash of this process). The broker flushes every log it
    /// appended to once per loop turn, before any reply leaves ([`Log::poll_jobs`] does it
    /// first thing), which is what makes a publisher's `OK` mean "in the log".
    ///
    /// # Errors
    /// `Failed` if the log already failed; `Io` if the write fails, which also fails the log as
    /// a failed sync does (the unwritten records stay readable until the log is closed).
    pub fn flush(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        // No segment at all only while `open` fails to create the first one (then drops us).
        let Some(seg) = self.segments.last_mut() else {
            return Ok(());
        };
        if let Err(e) = seg.flush(self.write_fault.as_deref()) {
            let err = StorageError::io(&seg.path, "pwrite", e);
            error!(
                "{}: write failed, refusing further appends: {err}",
                self.dir.display()
            );
            self.failed = Some(err.to_string());
            return Err(err);
        }
        Ok(())
    }

    /// Frees the active segment's pending-buffer memory if the log was not appended to since
    /// the last call (the broker calls it each maintenance step, every `--sync-timeout`).
    pub fn release_idle_buffer(&mut self) {
        self.active_mut().release_idle_buffer();
    }

    /// Flushes now rather than at the end of the turn once the pending bytes are many: a
    /// failure poisons the log and fails the next append, like any other write failure.
    fn flush_if_large(&mut self) {
        if self.active().pending_len() >= FLUSH_AT {
            let _ = self.flush();
        }
    }

    /// How writing `recs` fills segments: see [`BatchPlan`].
    ///
    /// # Errors
    /// `TooLarge` for the first record that can never be appended (checked here, in the one
    /// pass over the batch before anything is written).
    fn batch_plan(&self, recs: &[NewRecord<'_>]) -> Result<BatchPlan, StorageError> {
        let fresh = self.cfg.max_bytes_per_file as usize - SEGMENT_HEADER_LEN;
        let active = self.active();
        let mut room = active.capacity() - active.used();
        let mut plan = BatchPlan {
            active_bytes: 0,
            rolls: 0,
            new_segment_end: SEGMENT_HEADER_LEN,
        };
        let mut in_new = 0usize;
        for r in recs {
            let span = self.span_of(r)?;
            if span > room {
                plan.rolls += 1;
                room = fresh;
                in_new = 0;
            }
            room = room.saturating_sub(span);
            if plan.rolls == 0 {
                plan.active_bytes = plan.active_bytes.saturating_add(span);
            } else {
                in_new = in_new.saturating_add(span);
                let end = SEGMENT_HEADER_LEN.saturating_add(in_new);
                plan.new_segment_end = plan.new_segment_end.max(end);
            }
        }
        Ok(plan)
    }

    /// Allocates, before the first record of a batch is written, all the room the batch
    /// needs: in the active segment and in each pre-created segment it will roll into (so a
    /// full disk appends none of it).
    fn reserve_for_batch(&mut self, plan: &BatchPlan) -> Result<(), StorageError> {
        self.reserve_inline(plan.active_bytes)?;
        let n = self.ready.len();
        // `make_room` pops from the end: those are the segments the batch rolls into.
        for prep in &mut self.ready[n - plan.rolls..] {
            prep.reserve(plan.new_segment_end, self.alloc_fault.as_deref())?;
        }
        Ok(())
    }

    /// Grows the active segment's file on this thread if `span` more bytes do not fit its
    /// allocation (the helper's growth step did not come in time): counted, and later steps
    /// go to the foreground lane for a while.
    #[inline]
    fn reserve_inline(&mut self, span: usize) -> Result<(), StorageError> {
        // The fields are borrowed apart (not through `active_mut`): cloning the `Arc` instead
        // cost two atomic operations per append.
        let active = last_segment(&mut self.segments);
        if active.reserve(span, self.alloc_fault.as_deref())? {
            self.note_inline_growth();
        }
        Ok(())
    }

    #[cold]
    fn note_inline_growth(&mut self) {
        debug!(
            "{}: the file was not grown far enough ahead; grew it inline",
            self.dir.display()
        );
        self.inline_growths += 1;
        self.urgent_grows = URGENT_GROWS_AFTER_INLINE;
    }

    fn make_room(&mut self, span: usize) -> Result<(), StorageError> {
        if self.active().has_room(span) {
            return self.reserve_inline(span);
        }
        let mut prep = match self.ready.pop() {
            Some(p) => {
                self.urgent_prepares = self.urgent_prepares.saturating_sub(1);
                p
            }
            None => {
                debug!(
                    "{}: no pre-created segment ready; creating one inline",
                    self.dir.display()
                );
                self.note_inline_creation();
                self.create_prepared(self.next_segment_size())?
            }
        };
        // A pre-created segment may be smaller than this record: room first, then the roll.
        let need = SEGMENT_HEADER_LEN.saturating_add(span);
        if let Err(e) = prep.reserve(need, self.alloc_fault.as_deref()) {
            self.ready.push(prep);
            return Err(e);
        }
        // The old segment's bytes must reach its file before it stops being the active one.
        if let Err(e) = self.flush() {
            prep.discard();
            return Err(e);
        }
        let buf = self.active_mut().seal();
        let seg = Segment::install(prep, &self.dir, self.tail, buf)?;
        info!(
            "rolled {} to segment {}",
            self.dir.display(),
            seg.path.display()
        );
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }

    /// How much a new segment starts with: proportional to how far the active one grew.
    fn next_segment_size(&self) -> u64 {
        space::precreate_size(
            self.active().allocated() as u64,
            self.cfg.max_bytes_per_file,
        )
    }

    fn note_inline_creation(&mut self) {
        self.inline_creations += 1;
        self.urgent_prepares = URGENT_PREPARES_AFTER_INLINE;
    }

    fn next_prealloc_path(&mut self) -> PathBuf {
        let seq = NEXT_PREALLOC.fetch_add(1, Ordering::Relaxed);
        self.dir.join(format!("{seq:020}{PREALLOC_SUFFIX}"))
    }

    fn create_prepared(&mut self, size: u64) -> Result<PreparedSegment, StorageError> {
        let path = self.next_prealloc_path();
        PreparedSegment::create(
            path,
            size,
            self.cfg.max_bytes_per_file,
            self.alloc_fault.as_deref(),
        )
    }

    /// The segment that would hold `offset`, by base (it may not actually hold it: a gap).
    #[inline]
    fn segment_for(&self, offset: u64) -> Option<usize> {
        let hint = self.lookup_hint.get();
        let starts_at_or_below = |i: usize| self.segments.get(i).is_some_and(|s| s.base <= offset);
        if starts_at_or_below(hint) && !starts_at_or_below(hint + 1) {
            return Some(hint);
        }
        let found = self
            .segments
            .partition_point(|s| s.base <= offset)
            .checked_sub(1)?;
        self.lookup_hint.set(found);
        Some(found)
    }

    /// Reads the record at `offset`, borrowing its body from the map. The CRC is verified.
    ///
    /// # Errors
    /// `NotFound` below the head, at or past the tail, or in a recovery gap; `Corruption` if
    /// the bytes fail verification (counted and logged once per offset).
    pub fn read(&self, offset: u64) -> Result<Record<'_>, StorageError> {
        self.read_with(offset, true)
    }

    /// As [`Log::read`] without the CRC check: only for a record the caller read with
    /// [`Log::read`] moments ago, with no window drop since ([`Log::cache_dropped_below`]
    /// unchanged): the broker hands one record to every channel and verifies it for the first
    /// (see `broker::topic::VerifyEpoch`). Length, kind and offset are still checked.
    pub fn read_already_verified(&self, offset: u64) -> Result<Record<'_>, StorageError> {
        self.read_with(offset, false)
    }

    fn read_with(&self, offset: u64, verify_crc: bool) -> Result<Record<'_>, StorageError> {
        // The error is made only when returned: made up front, it was built and dropped (a
        // `StorageError` has owning variants) on every read, 15 instructions each.
        let not_found = || StorageError::NotFound { offset };
        if offset >= self.tail {
            return Err(not_found());
        }
        let seg = &self.segments[self.segment_for(offset).ok_or_else(not_found)?];
        match seg.read(offset, verify_crc) {
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
                topic:% = super::LogName(&seg.path);
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
        let segs: usize = self.segments.iter().map(Segment::allocated).sum();
        let ready: usize = self.ready.iter().map(PreparedSegment::len).sum();
        (segs + ready) as u64
    }

    /// Bytes of records from `offset` (or the head, if lower) to the tail, padding included:
    /// the backlog in bytes of a reader at `offset`. O(log s) to find the segment plus one step
    /// per later segment (`--max-topic-bytes`; a limited backlog spans few).
    pub fn bytes_from(&self, offset: u64) -> u64 {
        let offset = offset.max(self.head());
        let Some(i) = self.segment_for(offset).filter(|_| offset < self.tail) else {
            return 0;
        };
        let first = &self.segments[i];
        let pos = first.position(offset).unwrap_or(SEGMENT_HEADER_LEN);
        let later: usize = self.segments[i + 1..]
            .iter()
            .map(|s| s.used().saturating_sub(SEGMENT_HEADER_LEN))
            .sum();
        (first.used().saturating_sub(pos) + later) as u64
    }

    /// `(base offset, bytes of records)` of every segment, oldest first (retention by bytes).
    pub fn segment_spans(&self) -> impl DoubleEndedIterator<Item = (u64, u64)> + '_ {
        self.segments
            .iter()
            .map(|s| (s.base, s.used().saturating_sub(SEGMENT_HEADER_LEN) as u64))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of segment files (the active one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The base offset of the second-newest segment, if there are at least two: records below
    /// it sit in segments that only retention will touch again (the broker carries long-held
    /// messages out of them).
    pub fn second_newest_base(&self) -> Option<u64> {
        let n = self.segments.len();
        n.checked_sub(2).map(|i| self.segments[i].base)
    }

    /// Why the log refuses appends, if it does.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// Drops the segments whose records are all below `offset`, never the active one, and
    /// returns how many. Their files are unlinked by the next `poll_jobs` job (on the worker
    /// thread: freeing a large file can take milliseconds), or at once by `run_jobs_inline`. A
    /// crash before the unlink leaves the file behind; the next open reads it as old records
    /// below every channel's floor, and retention drops it again.
    pub fn delete_below(&mut self, offset: u64) -> Result<usize, StorageError> {
        let mut n = 0;
        while self.segments.len() > 1 && self.segments[1].base <= offset {
            let seg = self.segments.remove(0);
            info!("retention: dropping segment {}", seg.path.display());
            self.to_remove.push(seg.path.clone());
            n += 1;
        }
        self.durable = self.durable.max(self.head());
        Ok(n)
    }

    /// Removes every file and the directory (topic delete), on the calling thread.
    pub fn destroy(self) -> Result<(), StorageError> {
        let dir = self.dir.clone();
        drop(self);
        std::fs::remove_dir_all(&dir).map_err(|e| StorageError::io(&dir, "remove_dir_all", e))
    }

    /// Closes the log and returns the job that removes its directory, to run off this thread.
    pub fn destroy_job(self) -> Job {
        let dir = self.dir.clone();
        drop(self);
        Job::remove_dir(dir)
    }

    /// Test seam: while `flag` is set, segment allocation fails with ENOSPC.
    #[doc(hidden)]
    pub fn set_alloc_fault(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.alloc_fault = flag;
    }

    /// Test seam: while `flag` is set, writing pending appends to the file fails with EIO.
    #[doc(hidden)]
    pub fn set_write_fault(&mut self, flag: Option<Arc<AtomicBool>>) {
        self.write_fault = flag;
    }

    /// Segments created inline on the append path (no pre-created one was ready) since open.
    pub fn inline_creations(&self) -> u64 {
        self.inline_creations
    }

    /// Growth steps done on the append path (the helper had not grown the file far enough).
    pub fn inline_growths(&self) -> u64 {
        self.inline_growths
    }

    /// Pre-created segments waiting (for tests and stats).
    #[doc(hidden)]
    pub fn ready_segments(&self) -> usize {
        self.ready.len()
    }
}

impl Drop for Log {
    /// Pending appends are written (a log closed without `sync_blocking`, e.g. in tools and
    /// tests, still leaves every record in its file); unused pre-created segments are removed
    /// rather than left for the next open.
    fn drop(&mut self) {
        let _ = self.flush();
        for prep in self.ready.drain(..) {
            prep.discard();
        }
    }
}

/// How a batch fills segments, from [`Log::batch_plan`].
#[derive(Debug)]
struct BatchPlan {
    /// Bytes the batch writes into the active segment.
    active_bytes: usize,
    /// New segments it rolls into.
    rolls: usize,
    /// The largest end position (header included) it reaches in a new segment.
    new_segment_end: usize,
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
            match seg.read(offset, true) {
                Some(Ok(r)) => return Some(r),
                Some(Err(why)) => log.note_corrupt(seg, offset, &why),
                None => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::segment::segment_file_name;
    use crate::storage::testutil::{Rng, TempDir};
    use crate::storage::worker::JobKind;
    use crate::storage::{Job, JobDone, StorageWorker};
    use std::io::{Seek, SeekFrom, Write};

    const SEG: u64 = 64 * 1024;

    fn cfg() -> LogConfig {
        LogConfig {
            max_bytes_per_file: SEG,
            max_msg_size: 8 * 1024,
            ..LogConfig::default()
        }
    }

    fn body_for(offset: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (offset as usize * 31 + i) as u8).collect()
    }

    fn new_rec(body: &[u8], offset: u64) -> NewRecord<'_> {
        NewRecord {
            timestamp_ns: offset as i64 * 10,
            deliver_at_ns: offset as i64,
            attempts: 1,
            carried_from: None,
            dead: None,
            dedup_key: &[],
            body,
        }
    }

    /// Appends `n` records with pseudo-random sizes; returns their body lengths.
    fn fill(log: &mut Log, rng: &mut Rng, n: usize, max_len: u64) -> Vec<usize> {
        let mut lens = Vec::new();
        for _ in 0..n {
            let len = rng.below(max_len) as usize;
            let off = log.tail();
            let body = body_for(off, len);
            assert_eq!(log.append(&new_rec(&body, off)).unwrap(), off);
            lens.push(len);
        }
        lens
    }

    fn check_record(r: &Record<'_>, len: usize) {
        assert_eq!(r.body, &body_for(r.offset, len)[..], "body of {}", r.offset);
        assert_eq!(
            (r.timestamp_ns, r.deliver_at_ns, r.attempts),
            (r.offset as i64 * 10, r.offset as i64, 1)
        );
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn types_crossing_threads_are_send() {
        fn send<T: Send>() {}
        send::<Log>();
        send::<Job>();
        send::<JobDone>();
        send::<StorageError>();
    }

    #[test]
    fn round_trip_across_many_segments_and_reopen() {
        let tmp = TempDir::new("roundtrip");
        let mut rng = Rng::new(1);
        let mut lens = {
            let mut log = Log::open(tmp.path(), cfg()).unwrap();
            let lens = fill(&mut log, &mut rng, 3000, 400);
            assert!(
                log.segment_count() > 5,
                "only {} segments",
                log.segment_count()
            );
            for (i, r) in log.iter_from(0).enumerate() {
                assert_eq!(r.offset, i as u64);
                check_record(&r, lens[i]);
            }
            lens
        };
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!(
            (log.head(), log.tail(), log.corrupt_records()),
            (0, 3000, 0)
        );
        lens.extend(fill(&mut log, &mut rng, 1000, 400));
        let offsets: Vec<u64> = log.iter_from(0).map(|r| r.offset).collect();
        assert_eq!(offsets, (0..4000).collect::<Vec<_>>());
        for o in [0u64, 1, 2999, 3000, 3999] {
            check_record(&log.read(o).unwrap(), lens[o as usize]);
        }
        assert_eq!(log.iter_from(3990).count(), 10);
        assert!(matches!(
            log.read(4000),
            Err(StorageError::NotFound { offset: 4000 })
        ));
        // File names are the bases, zero padded.
        let names = files(tmp.path());
        assert_eq!(names[0], segment_file_name(0));
        assert!(
            names.iter().all(|n| n.len() == 24 && n.ends_with(".log")),
            "{names:?}"
        );
    }

    #[test]
    fn reads_find_their_segment_whatever_the_last_lookup_found() {
        // Lookups start from the segment the last one found: jumping between segments, to
        // each side of a boundary, and after deletion has shifted every segment's index must
        // still land in the right one.
        let tmp = TempDir::new("hint");
        let mut rng = Rng::new(7);
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let lens = fill(&mut log, &mut rng, 3000, 400);
        let bases: Vec<u64> = log.segments.iter().map(|s| s.base).collect();
        assert!(bases.len() > 5, "only {} segments", bases.len());
        let mut order: Vec<u64> = vec![2999, 0, 2999, 1];
        for &b in &bases[1..] {
            order.extend([b, b - 1, b, b + 1, 0, b - 1]);
        }
        for o in order {
            check_record(&log.read(o).unwrap(), lens[o as usize]);
        }
        // The last segment's index as the hint, then drop the two oldest: the hint now points
        // past the end or at a later segment.
        check_record(&log.read(2999).unwrap(), lens[2999]);
        log.delete_below(bases[2]).unwrap();
        assert_eq!(log.head(), bases[2]);
        for o in [bases[2], 2999, bases[3] - 1, bases[3], bases[2]] {
            check_record(&log.read(o).unwrap(), lens[o as usize]);
        }
        assert!(matches!(
            log.read(bases[2] - 1),
            Err(StorageError::NotFound { .. })
        ));
    }

    #[test]
    fn batch_spans_segments_and_validates_first() {
        let tmp = TempDir::new("batch");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let bodies: Vec<Vec<u8>> = (0..500).map(|i| body_for(i, 300)).collect();
        let recs: Vec<NewRecord<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| new_rec(b, i as u64))
            .collect();
        assert_eq!(log.append_batch(&recs).unwrap(), 0..500);
        assert!(log.segment_count() >= 3);
        for r in log.iter_from(0) {
            check_record(&r, 300);
        }
        let big = vec![0u8; 8 * 1024 + 1];
        let mut bad = recs[..3].to_vec();
        bad.push(new_rec(&big, 0));
        assert!(matches!(
            log.append_batch(&bad),
            Err(StorageError::TooLarge {
                len: 8193,
                max: 8192
            })
        ));
        assert_eq!(log.tail(), 500);
    }

    #[test]
    fn too_large_records_are_errors() {
        let tmp = TempDir::new("large");
        let c = LogConfig {
            max_bytes_per_file: 4096,
            max_msg_size: 1 << 20,
            ..LogConfig::default()
        };
        let mut log = Log::open(tmp.path(), c).unwrap();
        let max = log.max_body();
        assert_eq!(max, 4096 - 32 - 36);
        assert!(log.append(&new_rec(&vec![1u8; max], 0)).is_ok());
        let e = log.append(&new_rec(&vec![1u8; max + 1], 0)).unwrap_err();
        assert!(matches!(e, StorageError::TooLarge { .. }));
        assert_eq!(log.tail(), 1);
        assert!(Log::open(
            tmp.path(),
            LogConfig {
                max_bytes_per_file: 10,
                ..LogConfig::default()
            }
        )
        .is_err());
    }

    #[test]
    fn carried_records_survive_a_reopen_and_respect_the_segment_limit() {
        let tmp = TempDir::new("carried");
        {
            let mut log = Log::open(tmp.path(), cfg()).unwrap();
            log.append(&new_rec(b"orig", 0)).unwrap();
            let carried = NewRecord {
                carried_from: Some(0),
                dead: None,
                dedup_key: &[],
                ..new_rec(b"orig", 1)
            };
            assert_eq!(log.append(&carried).unwrap(), 1);
        }
        let log = Log::open(tmp.path(), cfg()).unwrap();
        let r = log.read(1).unwrap();
        assert_eq!((r.carried_from, r.body), (Some(0), &b"orig"[..]));
        assert_eq!(log.read(0).unwrap().carried_from, None);

        // A body at the segment-limited maximum fits as a message but not with the prefix.
        let tmp = TempDir::new("carried-large");
        let c = LogConfig {
            max_bytes_per_file: 4096,
            max_msg_size: 1 << 20,
            ..LogConfig::default()
        };
        let mut log = Log::open(tmp.path(), c).unwrap();
        let body = vec![1u8; log.max_body()];
        let carried = NewRecord {
            carried_from: Some(0),
            dead: None,
            dedup_key: &[],
            ..new_rec(&body, 0)
        };
        let e = log.append(&carried).unwrap_err();
        assert!(matches!(e, StorageError::TooLarge { .. }));
        assert_eq!(log.tail(), 0);
    }

    /// Writes a log of `n` records into one segment and returns the segment bytes with the
    /// end position (len, padding excluded) of each record.
    fn one_segment(rng: &mut Rng, n: usize) -> (Vec<u8>, Vec<usize>) {
        let tmp = TempDir::new("proto");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let mut ends = Vec::new();
        let mut pos = SEGMENT_HEADER_LEN;
        for len in fill(&mut log, rng, n, 200) {
            ends.push(pos + RECORD_HEADER_LEN + len);
            pos += record::encoded_len(len).unwrap();
        }
        drop(log);
        (
            std::fs::read(tmp.path().join(segment_file_name(0))).unwrap(),
            ends,
        )
    }

    #[test]
    fn truncation_at_every_byte_keeps_exactly_the_intact_prefix() {
        for seed in 1..=2 {
            let mut rng = Rng::new(seed);
            let (bytes, ends) = one_segment(&mut rng, 12);
            let first = ends[ends.len() - 4] - 60;
            let last = *ends.last().unwrap();
            for cut in first..=last {
                for zero_fill in [false, true] {
                    let tmp = TempDir::new("trunc");
                    let path = tmp.path().join(segment_file_name(0));
                    if zero_fill {
                        let mut b = bytes.clone();
                        b[cut..].fill(0);
                        std::fs::write(&path, &b).unwrap();
                    } else {
                        std::fs::write(&path, &bytes[..cut]).unwrap();
                    }
                    let expect = ends.iter().filter(|&&e| e <= cut).count() as u64;
                    let mut log = Log::open(tmp.path(), cfg()).unwrap();
                    assert_eq!(
                        log.tail(),
                        expect,
                        "seed {seed} cut {cut} zero_fill {zero_fill}"
                    );
                    assert_eq!(log.iter_from(0).count() as u64, expect);
                    // The log continues densely from what was kept, and survives a reopen.
                    let b = body_for(expect, 5);
                    assert_eq!(log.append(&new_rec(&b, expect)).unwrap(), expect);
                    drop(log);
                    let log = Log::open(tmp.path(), cfg()).unwrap();
                    assert_eq!((log.tail(), log.corrupt_records()), (expect + 1, 0));
                }
            }
        }
    }

    fn flip(path: &Path, pos: u64, mask: u8) {
        let mut b = [0u8];
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        f.seek(SeekFrom::Start(pos)).unwrap();
        std::io::Read::read_exact(&mut f, &mut b).unwrap();
        f.seek(SeekFrom::Start(pos)).unwrap();
        f.write_all(&[b[0] ^ mask]).unwrap();
    }

    #[test]
    fn bit_flips_are_never_returned_live_or_after_recovery() {
        let mut rng = Rng::new(7);
        let tmp = TempDir::new("flip");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let lens = fill(&mut log, &mut rng, 10, 100);
        // In the file, so a flip there is what a live read sees.
        log.flush().unwrap();
        let path = tmp.path().join(segment_file_name(0));
        let start5 = SEGMENT_HEADER_LEN
            + lens[..5]
                .iter()
                .map(|&l| record::encoded_len(l).unwrap())
                .sum::<usize>();
        let end5 = start5 + RECORD_HEADER_LEN + lens[5];
        let mut flips = 0;
        for pos in start5..end5 {
            let mask = 1u8 << rng.below(8);
            flip(&path, pos as u64, mask);
            // Live: the shared map sees the flip at once.
            assert!(
                matches!(log.read(5), Err(StorageError::Corruption { offset: 5, .. })),
                "pos {pos}"
            );
            let got: Vec<u64> = log.iter_from(0).map(|r| r.offset).collect();
            assert_eq!(got, vec![0, 1, 2, 3, 4, 6, 7, 8, 9]);
            // After recovery the bad record is stepped over: never returned, and the records
            // after it are all kept.
            let copy = TempDir::new("flipcopy");
            std::fs::copy(&path, copy.path().join(segment_file_name(0))).unwrap();
            let re = Log::open(copy.path(), cfg()).unwrap();
            let mut got = Vec::new();
            for r in re.iter_from(0) {
                check_record(&r, lens[r.offset as usize]);
                got.push(r.offset);
            }
            assert_eq!(got, vec![0, 1, 2, 3, 4, 6, 7, 8, 9], "flip at {pos}");
            assert_eq!(re.corrupt_records(), 1);
            flip(&path, pos as u64, mask);
            flips += 1;
            assert!(log.read(5).is_ok());
        }
        assert_eq!(flips, end5 - start5);
        assert_eq!(log.corrupt_records(), 1, "one bad offset, counted once");
    }

    #[test]
    fn flip_in_sealed_segment_keeps_later_records() {
        let mut rng = Rng::new(3);
        let tmp = TempDir::new("sealed");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let lens = fill(&mut log, &mut rng, 2000, 200);
        assert!(log.segment_count() > 2);
        let tail = log.tail();
        drop(log);
        // Flip a body byte of record 3 (first segment, sealed).
        let pos = SEGMENT_HEADER_LEN
            + lens[..3]
                .iter()
                .map(|&l| record::encoded_len(l).unwrap())
                .sum::<usize>();
        flip(
            &tmp.path().join(segment_file_name(0)),
            (pos + RECORD_HEADER_LEN) as u64,
            0x80,
        );
        let log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!(log.tail(), tail);
        assert!(matches!(
            log.read(3),
            Err(StorageError::Corruption { offset: 3, .. })
        ));
        assert_eq!(log.corrupt_records(), 1);
        assert_eq!(log.iter_from(0).count() as u64, tail - 1);
        check_record(&log.read(4).unwrap(), lens[4]);
    }

    #[test]
    fn cut_in_a_sealed_segment_leaves_a_counted_gap() {
        let mut rng = Rng::new(4);
        let tmp = TempDir::new("gap");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let lens = fill(&mut log, &mut rng, 2000, 200);
        let second = log.segments[1].base;
        drop(log);
        // Garbage from record 10 to the end of the first (sealed) segment: nothing after it
        // can be located. (A broken length alone no longer cuts: recovery resynchronises.)
        let pos = SEGMENT_HEADER_LEN
            + lens[..10]
                .iter()
                .map(|&l| record::encoded_len(l).unwrap())
                .sum::<usize>();
        let first = tmp.path().join(segment_file_name(0));
        let mut bytes = std::fs::read(&first).unwrap();
        bytes[pos..].fill(0x55);
        std::fs::write(&first, bytes).unwrap();
        let log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!(log.tail(), 2000);
        assert_eq!(log.corrupt_records(), second - 10);
        for o in [10, 11, second - 1] {
            assert!(
                matches!(log.read(o), Err(StorageError::NotFound { .. })),
                "offset {o}"
            );
        }
        check_record(&log.read(9).unwrap(), lens[9]);
        check_record(&log.read(second).unwrap(), lens[second as usize]);
        let got: Vec<u64> = log.iter_from(5).take(7).map(|r| r.offset).collect();
        assert_eq!(got, vec![5, 6, 7, 8, 9, second, second + 1]);
    }

    #[test]
    fn full_disk_seam_fails_the_append_and_leaves_the_log_usable() {
        let tmp = TempDir::new("enospc");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let fault = Arc::new(AtomicBool::new(true));
        log.set_alloc_fault(Some(Arc::clone(&fault)));
        let body = vec![7u8; 1000];
        let err = loop {
            let off = log.tail();
            match log.append(&new_rec(&body, off)) {
                Ok(_) => log.run_jobs_inline(0), // pre-creation fails too, and is retried later
                Err(e) => break e,
            }
        };
        assert!(
            matches!(&err, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC))
        );
        assert!(err.to_string().contains(".prealloc"), "{err}");
        let tail = log.tail();
        assert_eq!(log.segment_count(), 1);
        assert_eq!(log.iter_from(0).count() as u64, tail);
        assert!(log.read(tail - 1).is_ok());
        let recs = [new_rec(&body, 0)];
        assert!(log.append_batch(&recs).is_err());
        assert_eq!(log.tail(), tail, "a failed batch appends nothing");
        fault.store(false, Ordering::Relaxed);
        assert_eq!(log.append(&new_rec(&body, tail)).unwrap(), tail);
        assert_eq!(log.segment_count(), 2);
        assert!(files(tmp.path()).iter().all(|n| n.ends_with(".log")));
    }

    #[test]
    fn tiny_tmpfs_fills_up_with_an_error_not_a_crash() {
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount").arg(&self.0).status();
            }
        }
        let tmp = TempDir::new("tmpfs");
        let mnt = tmp.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(&mnt)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipping tiny_tmpfs test: cannot mount a tmpfs (not root?)");
            return;
        }
        let _unmount = Unmount(mnt.clone());
        let c = LogConfig {
            max_bytes_per_file: 1 << 20,
            ..cfg()
        };
        let mut log = Log::open(&mnt.join("topic"), c.clone()).unwrap();
        let body = vec![3u8; 4000];
        let err = (0..10_000)
            .find_map(|_| {
                let off = log.tail();
                let r = log.append(&new_rec(&body, off)).err();
                log.run_jobs_inline(0);
                r
            })
            .expect("a 4 MiB filesystem fills up");
        assert!(
            matches!(&err, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{err}"
        );
        let tail = log.tail();
        assert!(tail > 500);
        // Reopening on the full disk works: a short last segment is not re-allocated to the
        // limit, and every record reads back.
        drop(log);
        let mut log = Log::open(&mnt.join("topic"), c.clone()).unwrap();
        assert_eq!(log.tail(), tail);
        // A new log on the full filesystem fails to open, with the error (its half-built
        // state is dropped, not flushed into a panic).
        let other = Log::open(&mnt.join("other"), c);
        assert!(
            matches!(&other, Err(StorageError::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
            "{other:?}"
        );
        assert_eq!(log.iter_from(0).count() as u64, tail);
        // Free space by retention, then appends work again.
        assert!(log.delete_below(tail).unwrap() >= 2);
        log.run_jobs_inline(0); // the removal job unlinks the dropped segments
        assert_eq!(log.append(&new_rec(&body, tail)).unwrap(), tail);
        drop(log);
        let log = Log::open(
            &mnt.join("topic"),
            LogConfig {
                max_bytes_per_file: 1 << 20,
                ..cfg()
            },
        )
        .unwrap();
        assert_eq!(log.tail(), tail + 1);
    }

    /// Appends `body` and keeps a copy, checking the offset it got.
    fn push(log: &mut Log, bodies: &mut Vec<Vec<u8>>, body: Vec<u8>) {
        let off = log.append(&new_rec(&body, log.tail())).unwrap();
        assert_eq!(off as usize, bodies.len());
        bodies.push(body);
    }

    fn reads_back(log: &Log, bodies: &[Vec<u8>]) {
        assert_eq!(log.iter_from(0).count(), bodies.len());
        for (r, b) in log.iter_from(0).zip(bodies) {
            assert_eq!(r.body, &b[..], "record {}", r.offset);
        }
    }

    #[test]
    fn a_segment_starts_small_and_grows_by_helper_steps_ahead_of_the_writer() {
        let tmp = TempDir::new("growth");
        let c = LogConfig {
            max_bytes_per_file: 4 << 20,
            ..cfg()
        };
        let mut log = Log::open(tmp.path(), c.clone()).unwrap();
        let mut bodies = Vec::new();
        // One small message: 64 KiB on disk, and no growth or spare segment is due.
        push(&mut log, &mut bodies, b"one".to_vec());
        assert_eq!(log.disk_bytes(), space::INITIAL_ALLOC);
        assert!(log.poll_jobs(0).all(|j| j.is_sync()), "only a sync is due");
        let seg0 = tmp.path().join(segment_file_name(0));
        assert_eq!(
            std::fs::metadata(&seg0).unwrap().len(),
            space::INITIAL_ALLOC
        );
        // A writer the helper keeps up with: every step is a job, none inline.
        let mut sizes = vec![log.active().allocated()];
        while log.segment_count() == 1 {
            let len = 1000 + (log.tail() as usize * 7) % 3000;
            let body = body_for(log.tail(), len);
            push(&mut log, &mut bodies, body);
            log.run_jobs_inline(0);
            if log.segment_count() == 1 && sizes.last() != Some(&log.active().allocated()) {
                sizes.push(log.active().allocated());
            }
        }
        assert_eq!(log.inline_growths(), 0);
        assert_eq!(log.inline_creations(), 0, "the spare came in time");
        let kib: Vec<usize> = sizes.iter().map(|s| s >> 10).collect();
        assert_eq!(
            kib,
            [64, 128, 256, 512, 1024, 2048, 4096],
            "doubling to the limit"
        );
        reads_back(&log, &bodies);
        let tail = log.tail();
        drop(log);
        let log = Log::open(tmp.path(), c).unwrap();
        assert_eq!((log.tail(), log.corrupt_records()), (tail, 0));
        reads_back(&log, &bodies);
    }

    #[test]
    fn a_short_last_segment_is_not_extended_on_open_and_still_grows() {
        let tmp = TempDir::new("short-open");
        let c = LogConfig {
            max_bytes_per_file: 4 << 20,
            ..cfg()
        };
        let mut bodies = Vec::new();
        {
            let mut log = Log::open(tmp.path(), c.clone()).unwrap();
            push(&mut log, &mut bodies, b"x".to_vec());
        }
        let seg0 = tmp.path().join(segment_file_name(0));
        let size = || std::fs::metadata(&seg0).unwrap().len();
        assert_eq!(size(), space::INITIAL_ALLOC);
        let mut log = Log::open(tmp.path(), c).unwrap();
        assert_eq!(
            size(),
            space::INITIAL_ALLOC,
            "not re-allocated to the limit"
        );
        assert_eq!(log.disk_bytes(), space::INITIAL_ALLOC);
        while size() == space::INITIAL_ALLOC {
            let body = body_for(log.tail(), 4000);
            push(&mut log, &mut bodies, body);
            log.run_jobs_inline(0);
        }
        assert_eq!(size(), 2 * space::INITIAL_ALLOC, "one growth step");
        reads_back(&log, &bodies);
    }

    #[test]
    fn a_writer_takes_up_a_growth_step_before_its_result_arrives() {
        let tmp = TempDir::new("growth-early");
        let c = LogConfig {
            max_bytes_per_file: 4 << 20,
            ..cfg()
        };
        let mut log = Log::open(tmp.path(), c).unwrap();
        let mut bodies = Vec::new();
        // Write until a growth step is due, then run it as the helper would, but keep its
        // result back (as if it were still on its way to the loop).
        let growth = loop {
            let body = body_for(log.tail(), 3000);
            push(&mut log, &mut bodies, body);
            if let Some(job) = log.poll_jobs(0).find(|j| !j.is_sync()) {
                break job;
            }
        };
        let before = log.active().allocated();
        let done = growth.run();
        // The writer fills the old allocation and goes on into the new step without growing
        // the file itself.
        while log.active().allocated() == before {
            let body = body_for(log.tail(), 3000);
            push(&mut log, &mut bodies, body);
        }
        assert_eq!(
            (log.inline_growths(), log.active().allocated()),
            (0, 2 * before)
        );
        // The late result changes nothing.
        log.apply(done);
        assert_eq!(log.active().allocated(), 2 * before);
        reads_back(&log, &bodies);
    }

    #[test]
    fn a_sync_job_names_the_bytes_it_makes_durable() {
        let tmp = TempDir::new("sync-range");
        let c = LogConfig {
            sync_every: 5,
            ..cfg()
        };
        let mut log = Log::open(tmp.path(), c).unwrap();
        let mut bodies = Vec::new();
        for _ in 0..10 {
            let body = body_for(log.tail(), 300);
            push(&mut log, &mut bodies, body);
        }
        log.sync_blocking().unwrap();
        let first_unsynced = log.tail();
        for _ in 0..10 {
            let body = body_for(log.tail(), 300);
            push(&mut log, &mut bodies, body);
        }
        let sync = log
            .poll_jobs(0)
            .find(|j| j.is_sync())
            .expect("a sync is due");
        let JobKind::Sync { files, .. } = &sync.kind else {
            unreachable!("is_sync")
        };
        let active = log.active();
        let from = active.position(first_unsynced).unwrap() as u64;
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].unsynced, from..active.flushed() as u64);
        assert!(from > 0, "the synced records are not written back again");
        log.apply(sync.run());
        assert_eq!(log.durable_offset(), log.tail());
    }

    #[test]
    fn a_writer_that_outruns_the_helper_grows_inline_by_whole_steps() {
        let tmp = TempDir::new("growth-inline");
        let c = LogConfig {
            max_bytes_per_file: 4 << 20,
            max_msg_size: 1 << 20,
            ..cfg()
        };
        let mut log = Log::open(tmp.path(), c.clone()).unwrap();
        let mut bodies = Vec::new();
        // No jobs run: past 64 KiB the append itself must grow the file.
        while log.active().allocated() == 64 << 10 {
            let body = body_for(log.tail(), 3000);
            push(&mut log, &mut bodies, body);
        }
        assert_eq!(
            (log.inline_growths(), log.active().allocated()),
            (1, 128 << 10)
        );
        // A record needing several steps takes them all at once (128K -> 256K -> 512K).
        push(&mut log, &mut bodies, vec![7u8; 300 << 10]);
        assert_eq!(
            (log.inline_growths(), log.active().allocated()),
            (2, 512 << 10)
        );
        // A growth job made before that inline step still applies harmlessly, and the next
        // steps run on the foreground lane.
        let jobs: Vec<Job> = log.poll_jobs(0).filter(|j| !j.is_sync()).collect();
        assert!(
            jobs.iter().all(|j| !j.is_background()),
            "urgent after inline growth"
        );
        for j in jobs {
            log.apply(j.run());
        }
        reads_back(&log, &bodies);
        let seg0 = tmp.path().join(segment_file_name(0));
        let len = std::fs::metadata(&seg0).unwrap().len();
        assert_eq!(
            len,
            log.active().allocated() as u64,
            "file length = allocation"
        );
        drop(log);
        let log = Log::open(tmp.path(), c).unwrap();
        reads_back(&log, &bodies);
    }

    #[test]
    fn a_failed_growth_job_is_retried_and_the_writer_gets_enospc() {
        let tmp = TempDir::new("growth-enospc");
        let mut log = Log::open(
            tmp.path(),
            LogConfig {
                max_bytes_per_file: 1 << 20,
                ..cfg()
            },
        )
        .unwrap();
        let fault = Arc::new(AtomicBool::new(true));
        log.set_alloc_fault(Some(Arc::clone(&fault)));
        let mut bodies = Vec::new();
        let err = loop {
            let body = body_for(log.tail(), 2000);
            match log.append(&new_rec(&body, log.tail())) {
                Ok(_) => bodies.push(body),
                Err(e) => break e,
            }
            log.run_jobs_inline(0); // growth jobs fail, and are not retried at once
        };
        assert!(
            matches!(&err, StorageError::Io { source, .. } if source.raw_os_error() == Some(libc::ENOSPC)),
            "{err}"
        );
        assert!(err.to_string().contains("fallocate"), "{err}");
        assert_eq!(log.active().allocated(), 64 << 10);
        assert!(
            log.failure().is_none(),
            "a full disk does not poison the log"
        );
        reads_back(&log, &bodies);
        fault.store(false, Ordering::Relaxed);
        let jobs: Vec<Job> = log.poll_jobs(500).filter(|j| !j.is_sync()).collect();
        assert!(jobs.is_empty(), "retry waits");
        log.run_jobs_inline(2000);
        assert_eq!(log.active().allocated(), 128 << 10, "retried");
        push(&mut log, &mut bodies, vec![1u8; 100]);
        reads_back(&log, &bodies);
    }

    #[test]
    fn retention_deletes_exactly_the_segments_wholly_below() {
        let tmp = TempDir::new("retention");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let mut rng = Rng::new(5);
        fill(&mut log, &mut rng, 3000, 300);
        let bases: Vec<u64> = log.segments.iter().map(|s| s.base).collect();
        assert!(bases.len() > 4);
        // Exactly at the second segment's base: only the first goes.
        assert_eq!(log.delete_below(bases[1]).unwrap(), 1);
        // One short of the third base: the second still holds offset bases[2]-1.
        assert_eq!(log.delete_below(bases[2] - 1).unwrap(), 0);
        assert_eq!(log.delete_below(bases[3]).unwrap(), 2);
        // Dropped segments are unlinked by the next removal job, off the caller's thread.
        assert_eq!(
            files(tmp.path()).len(),
            bases.len(),
            "nothing unlinked inline"
        );
        log.run_jobs_inline(0);
        let want: Vec<String> = bases[3..].iter().map(|&b| segment_file_name(b)).collect();
        let segments: Vec<String> = files(tmp.path())
            .into_iter()
            .filter(|f| f.ends_with(".log"))
            .collect();
        assert_eq!(segments, want);
        assert_eq!(log.head(), bases[3]);
        assert!(matches!(
            log.read(bases[3] - 1),
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(log.iter_from(0).next().unwrap().offset, bases[3]);
        // Never the active segment, even when everything is below.
        let n = bases.len() - 4;
        assert_eq!(log.delete_below(u64::MAX).unwrap(), n);
        assert_eq!(log.segment_count(), 1);
        log.run_jobs_inline(0);
        drop(log);
        let log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!((log.head(), log.tail()), (*bases.last().unwrap(), 3000));
    }

    #[test]
    fn strict_mode_group_commit() {
        let tmp = TempDir::new("strict");
        let mut log = open_syncing(&tmp, 1);
        log.run_jobs_inline(0); // initial sync (directory)
        for i in 0..3 {
            log.append(&new_rec(b"x", i)).unwrap();
        }
        let first: Vec<Job> = log.poll_jobs(0).collect();
        assert_eq!(first.len(), 1);
        assert!(first[0].is_sync());
        assert_eq!(
            log.poll_jobs(0).count(),
            0,
            "the sync in flight covers them"
        );
        for i in 3..5 {
            log.append(&new_rec(b"x", i)).unwrap();
        }
        let second: Vec<Job> = log.poll_jobs(0).collect();
        assert_eq!(second.len(), 1, "a second sync overlaps the first");
        assert_eq!(log.durable_offset(), 0);
        for j in second {
            log.apply(j.run());
        }
        assert_eq!(
            log.durable_offset(),
            0,
            "the later sync completed first: held until the earlier one is done"
        );
        for j in first {
            log.apply(j.run());
        }
        assert_eq!(
            log.durable_offset(),
            5,
            "both done: each covers what preceded it"
        );
        assert_eq!(log.poll_jobs(0).count(), 0);
        assert_eq!((log.syncs_total(), log.synced_records_total()), (3, 5));
    }

    #[test]
    fn strict_mode_overlaps_at_most_max_syncs() {
        let tmp = TempDir::new("strict-max");
        let mut log = open_syncing(&tmp, 1);
        log.run_jobs_inline(0);
        let mut jobs = Vec::new();
        for i in 0..(MAX_SYNCS_IN_FLIGHT as u64 + 2) {
            log.append(&new_rec(b"x", i)).unwrap();
            jobs.extend(log.poll_jobs(0));
        }
        assert_eq!(jobs.len(), MAX_SYNCS_IN_FLIGHT);
        let last = jobs.pop().unwrap();
        log.apply(last.run());
        assert_eq!(
            log.poll_jobs(0).count(),
            0,
            "a slot frees only in start order"
        );
        for j in jobs {
            log.apply(j.run());
        }
        assert_eq!(log.durable_offset(), MAX_SYNCS_IN_FLIGHT as u64);
        log.run_jobs_inline(0);
        assert_eq!(log.durable_offset(), MAX_SYNCS_IN_FLIGHT as u64 + 2);
    }

    /// A log syncing every `sync_every` records or after 2 s.
    fn open_syncing(tmp: &TempDir, sync_every: u64) -> Log {
        let cfg = LogConfig {
            sync_every,
            sync_timeout_ms: 2000,
            ..cfg()
        };
        Log::open(tmp.path(), cfg).unwrap()
    }

    #[test]
    fn interval_mode_syncs_by_count_or_time() {
        let tmp = TempDir::new("interval");
        let mut log = open_syncing(&tmp, 10);
        // The directory is dirty from creating the first segment: the clock starts at this poll.
        log.run_jobs_inline(0);
        assert_eq!(log.durable_offset(), 0);
        for i in 0..9 {
            log.append(&new_rec(b"x", i)).unwrap();
        }
        assert_eq!(log.poll_jobs(100).count(), 0);
        assert_eq!(log.next_sync_deadline_ms(), Some(2000));
        log.append(&new_rec(b"x", 9)).unwrap();
        log.run_jobs_inline(200);
        assert_eq!(log.durable_offset(), 10);
        log.append(&new_rec(b"x", 10)).unwrap();
        log.run_jobs_inline(1000);
        assert_eq!(log.durable_offset(), 10);
        log.run_jobs_inline(2999);
        assert_eq!(log.durable_offset(), 10);
        log.run_jobs_inline(3000);
        assert_eq!(log.durable_offset(), 11);
    }

    #[test]
    fn syncs_nobody_waits_for_run_in_the_background_lane() {
        let tmp = TempDir::new("lanes-strict");
        let mut strict = open_syncing(&tmp, 1);
        strict.append(&new_rec(b"x", 0)).unwrap();
        let job = strict.poll_jobs(0).find(Job::is_sync).unwrap();
        assert!(!job.is_background(), "strict-mode publishers wait for it");

        let tmp = TempDir::new("lanes-interval");
        let mut log = open_syncing(&tmp, 10);
        log.run_jobs_inline(0);
        for i in 0..10 {
            log.append(&new_rec(b"x", i)).unwrap();
        }
        let early = log.poll_jobs(100).find(Job::is_sync).unwrap();
        assert!(
            early.is_background(),
            "an early interval sync waits for idle CPU"
        );
        log.apply(early.run());
        log.append(&new_rec(b"x", 10)).unwrap();
        assert_eq!(log.poll_jobs(200).count(), 0);
        let late = log.poll_jobs(2200).find(Job::is_sync).unwrap();
        assert!(
            !late.is_background(),
            "records that waited the whole timeout"
        );
        log.apply(late.run());
        // Syncing fell behind (a background sync ran long while appends went on).
        for i in 11..(11 + 4 * 10) {
            log.append(&new_rec(b"x", i)).unwrap();
        }
        let behind = log.poll_jobs(2300).find(Job::is_sync).unwrap();
        assert!(!behind.is_background(), "four syncs' worth waiting");
    }

    /// Appends records `from..to` (one byte each).
    fn append_range(log: &mut Log, from: u64, to: u64) {
        for i in from..to {
            log.append(&new_rec(b"x", i)).unwrap();
        }
    }

    /// An interval log (sync every 10, timeout 2 s) with 10 records whose sync, made at 100 ms,
    /// was handed to the background lane and is not run: returned to run late.
    fn log_with_starved_background_sync(name: &str) -> (TempDir, Log, Job) {
        let tmp = TempDir::new(name);
        let mut log = open_syncing(&tmp, 10);
        log.run_jobs_inline(0);
        append_range(&mut log, 0, 10);
        let starved = log.poll_jobs(100).find(Job::is_sync).unwrap();
        assert!(starved.is_background());
        (tmp, log, starved)
    }

    #[test]
    fn a_starved_background_sync_is_superseded_once_syncing_falls_behind() {
        let (_tmp, mut log, starved) = log_with_starved_background_sync("sync-superseded");
        // It never gets CPU while appends go on: one interval sync at a time, until syncing
        // has fallen 4 × sync_every behind.
        append_range(&mut log, 10, 39);
        assert_eq!(log.poll_jobs(200).filter(Job::is_sync).count(), 0);
        append_range(&mut log, 39, 40);
        let successor = log.poll_jobs(300).find(Job::is_sync).unwrap();
        assert!(
            !successor.is_background(),
            "the successor runs at normal priority"
        );
        log.apply(successor.run());
        assert_eq!(log.durable_offset(), 40);
        // The starved job finally runs: it finds itself superseded and syncs nothing.
        let done = starved.run();
        assert!(
            matches!(done.kind, crate::storage::worker::DoneKind::SyncSkipped),
            "{done:?}"
        );
        log.apply(done);
        assert_eq!((log.durable_offset(), log.syncs_total()), (40, 1));
        assert!(log.failure().is_none());
    }

    #[test]
    fn a_background_sync_starved_for_the_whole_timeout_is_superseded() {
        let (_tmp, mut log, starved) = log_with_starved_background_sync("sync-superseded-timeout");
        assert_eq!(
            log.next_sync_deadline_ms(),
            Some(2100),
            "when to look again"
        );
        append_range(&mut log, 10, 12);
        assert_eq!(log.poll_jobs(2099).filter(Job::is_sync).count(), 0);
        let successor = log.poll_jobs(2100).find(Job::is_sync).unwrap();
        assert!(!successor.is_background());
        // The superseded job runs late and skips; only the successor's result counts.
        log.apply(starved.run());
        assert_eq!(
            log.durable_offset(),
            0,
            "the superseded sync does not count"
        );
        log.apply(successor.run());
        assert_eq!(log.durable_offset(), 12);
    }

    /// Appends 1 KiB records until `poll_jobs` hands out a pre-creation (other jobs run inline).
    fn fill_until_prepare(log: &mut Log) -> Job {
        let body = vec![7u8; 1024];
        loop {
            let mut prepare = None;
            for job in log.poll_jobs(0) {
                if matches!(job.kind, JobKind::Prepare { .. }) {
                    prepare = Some(job);
                } else {
                    log.apply(job.run());
                }
            }
            if let Some(job) = prepare {
                return job;
            }
            log.append(&new_rec(&body, log.tail())).unwrap();
        }
    }

    /// Appends 1 KiB records until the log rolls to a new segment.
    fn fill_until_roll(log: &mut Log) {
        let body = vec![7u8; 1024];
        let segments = log.segments.len();
        while log.segments.len() == segments {
            log.append(&new_rec(&body, log.tail())).unwrap();
        }
    }

    /// Whether `needle` occurs in the bytes of the file at `path` (read with plain `read`).
    fn file_holds(path: &Path, needle: &[u8]) -> bool {
        let bytes = std::fs::read(path).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn appends_are_readable_at_once_and_reach_the_file_at_the_flush() {
        let tmp = TempDir::new("flush");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let first = tmp.path().join(segment_file_name(0));
        let body = b"pending-record-body".to_vec();
        let off = log.append(&new_rec(&body, 0)).unwrap();
        // Readable from the pending buffer, not yet in the file (nor is the fresh header).
        assert_eq!(log.read(off).unwrap().body, &body[..]);
        assert!(!file_holds(&first, &body));
        assert!(!file_holds(&first, b"CORQLOG"));
        // poll_jobs (the broker's once-per-turn storage step) writes it, header included.
        let _ = log.poll_jobs(0).count();
        assert!(file_holds(&first, &body));
        assert!(file_holds(&first, b"CORQLOG"));
        assert_eq!(log.read(off).unwrap().body, &body[..]);
        // A roll writes the old segment's tail before the new one becomes active, and a batch
        // past FLUSH_AT is written without waiting for the turn to end.
        let last = b"last-before-the-roll".to_vec();
        let at = log.append(&new_rec(&last, log.tail())).unwrap();
        fill_until_roll(&mut log);
        assert!(file_holds(&first, &last));
        assert_eq!(log.read(at).unwrap().body, &last[..]);
        // A batch past FLUSH_AT (in segments big enough to hold it) is written at once,
        // without waiting for the turn's flush.
        let tmp_big = TempDir::new("flush-big");
        let big_cfg = LogConfig {
            max_bytes_per_file: 4 * FLUSH_AT as u64,
            ..cfg()
        };
        let mut big_log = Log::open(tmp_big.path(), big_cfg).unwrap();
        let big = vec![9u8; 4000];
        let recs: Vec<NewRecord<'_>> = (0..FLUSH_AT / 4000 + 2).map(|_| new_rec(&big, 0)).collect();
        let range = big_log.append_batch(&recs).unwrap();
        assert!(big_log.active().pending_len() < FLUSH_AT);
        let written = std::fs::read(tmp_big.path().join(segment_file_name(0))).unwrap();
        assert!(written.iter().filter(|&&b| b == 9).count() >= FLUSH_AT - 2 * big.len());
        for off in range {
            assert_eq!(big_log.read(off).unwrap().body, &big[..]);
        }
        // A log that goes a whole maintenance period without appends gives its buffer back.
        big_log.release_idle_buffer();
        assert!(
            big_log.active().pending_capacity() >= FLUSH_AT,
            "appended lately"
        );
        let _ = big_log.poll_jobs(0).count();
        big_log.release_idle_buffer();
        assert_eq!(big_log.active().pending_capacity(), 0);
        assert_eq!(big_log.read(0).unwrap().body, &big[..]);
        // Closing writes what is still pending: a reopen finds every record.
        let (tail, last_off) = (log.tail(), log.append(&new_rec(b"at-close", 0)).unwrap());
        drop(log);
        let re = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!(re.tail(), tail + 1);
        assert_eq!(re.read(last_off).unwrap().body, b"at-close");
    }

    #[test]
    fn a_log_that_outruns_background_precreation_precreates_in_the_foreground() {
        let tmp = TempDir::new("lanes-prepare");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        let first = fill_until_prepare(&mut log);
        assert!(first.is_background(), "ahead of need: idle CPU only");
        // The writer gets to the end of the segment before the pre-creation is done.
        fill_until_roll(&mut log);
        assert_eq!(log.inline_creations(), 1);
        log.apply(first.run());
        for round in 0..URGENT_PREPARES_AFTER_INLINE {
            fill_until_roll(&mut log); // uses the pre-created segment: in time
            let job = fill_until_prepare(&mut log);
            let urgent = round + 1 < URGENT_PREPARES_AFTER_INLINE;
            assert_eq!(!job.is_background(), urgent, "round {round}");
            log.apply(job.run());
        }
        assert_eq!(log.inline_creations(), 1);
    }

    #[test]
    fn failed_sync_poisons_appends_but_not_reads() {
        let tmp = TempDir::new("poison");
        let mut log = Log::open(tmp.path(), cfg()).unwrap();
        log.append(&new_rec(b"x", 0)).unwrap();
        log.apply(JobDone::failed_sync_for_test(log.id, 1));
        assert!(matches!(
            log.append(&new_rec(b"y", 1)),
            Err(StorageError::Failed(_))
        ));
        assert!(matches!(
            log.append_batch(&[new_rec(b"y", 1)]),
            Err(StorageError::Failed(_))
        ));
        assert_eq!(log.read(0).unwrap().body, b"x");
        assert_eq!(log.durable_offset(), 0);
        assert_eq!(log.poll_jobs(10_000).filter(Job::is_sync).count(), 0);
        // A result made for another log instance is ignored.
        let mut other = Log::open(TempDir::new("other").path(), cfg()).unwrap();
        other.apply(JobDone::failed_sync_for_test(log.id, 1));
        assert!(other.failure().is_none());
    }

    #[test]
    fn failed_write_poisons_appends_and_keeps_the_records_readable() {
        let tmp = TempDir::new("write-fault");
        let mut log = open_syncing(&tmp, 1);
        let fault = Arc::new(AtomicBool::new(true));
        log.set_write_fault(Some(fault.clone()));
        let off = log.append(&new_rec(b"accepted", 0)).unwrap();
        // The turn's flush fails: the log fails, makes no sync (strict publishers waiting on
        // one are answered from `failure()`), refuses appends and still serves the record.
        assert_eq!(log.poll_jobs(0).filter(Job::is_sync).count(), 0);
        assert!(
            log.failure().is_some_and(|why| why.contains("pwrite")),
            "{:?}",
            log.failure()
        );
        assert!(matches!(
            log.append(&new_rec(b"later", 1)),
            Err(StorageError::Failed(_))
        ));
        assert_eq!(log.read(off).unwrap().body, b"accepted");
        assert_eq!(log.durable_offset(), 0);
        assert!(matches!(log.sync_blocking(), Err(StorageError::Failed(_))));
    }

    /// Scheduling policies of this process's threads named `name`.
    fn policies_of_threads_named(name: &str) -> Vec<libc::c_int> {
        let mut out = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
            let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::pid_t>() else {
                continue;
            };
            if comm.trim_end() == name {
                // SAFETY: reads the policy of a thread id of this process; -1 if it is gone.
                out.push(unsafe { libc::sched_getscheduler(tid) });
            }
        }
        out
    }

    #[test]
    fn the_background_lane_runs_at_idle_priority_and_the_foreground_lane_does_not() {
        let worker = StorageWorker::spawn(Box::new(|| {})).unwrap();
        // A job through each lane, so their threads (started by work) surely run before we
        // look: an unlink (background), a pre-creation a writer waits for (foreground).
        let tmp = TempDir::new("lanes-threads");
        worker.submit(0, Job::remove_dir(tmp.path().join("absent")));
        let urgent = JobKind::Prepare {
            path: tmp.path().join("next.prealloc"),
            size: 4096,
            limit: 4096,
            fault: None,
            background: false,
        };
        worker.submit(
            0,
            Job {
                log_id: 0,
                kind: urgent,
            },
        );
        let mut done = 0;
        while done < 2 {
            if worker.try_recv().is_some() {
                done += 1;
            }
            std::thread::yield_now();
        }
        let idle = policies_of_threads_named("corq-storage-bg");
        assert!(!idle.is_empty());
        assert!(idle.iter().all(|&p| p == libc::SCHED_IDLE), "{idle:?}");
        let fore = policies_of_threads_named("corq-storage");
        assert!(!fore.is_empty());
        assert!(fore.iter().all(|&p| p == libc::SCHED_OTHER), "{fore:?}");
    }

    #[test]
    fn worker_runs_syncs_and_precreates_segments_off_thread() {
        let tmp = TempDir::new("worker");
        let woken = Arc::new(AtomicU64::new(0));
        let w = Arc::clone(&woken);
        let worker = StorageWorker::spawn(Box::new(move || {
            w.fetch_add(1, Ordering::Relaxed);
        }))
        .unwrap();
        let mut log = open_syncing(&tmp, 1);
        let body = vec![1u8; 500];
        let mut submitted = 0;
        for i in 0..400u64 {
            log.append(&new_rec(&body, i)).unwrap();
            let mut preparing = false;
            for job in log.poll_jobs(i) {
                preparing |= !job.is_sync();
                worker.submit(42, job);
                submitted += 1;
            }
            // A writer slower than the helper thread: wait for a pre-creation to land, so the
            // roll must use it (deterministic, unlike racing the thread).
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                while let Some((key, done)) = worker.try_recv() {
                    assert_eq!(key, 42);
                    log.apply(done);
                }
                if !preparing || log.ready_segments() > 0 || std::time::Instant::now() > deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        // Drain: wait for everything in flight.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while log.durable_offset() < 400 && std::time::Instant::now() < deadline {
            while let Some((_, done)) = worker.try_recv() {
                log.apply(done);
            }
            for job in log.poll_jobs(1000) {
                worker.submit(42, job);
                submitted += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(log.durable_offset(), 400);
        assert!(log.segment_count() >= 3);
        assert_eq!(
            log.inline_creations(),
            0,
            "pre-created segments were ready in time"
        );
        drop(worker);
        assert_eq!(woken.load(Ordering::Relaxed), submitted);
        // Dropping the log removes a pre-created segment it did not use.
        drop(log);
        assert!(files(tmp.path()).iter().all(|n| n.ends_with(".log")));
    }

    #[test]
    fn stale_job_result_for_a_recreated_log_is_discarded_safely() {
        // Regression: pre-creation names were per instance, so a destroyed log's late result,
        // discarded by its successor in the same directory, deleted the successor's file.
        let tmp = TempDir::new("stale");
        let dir = tmp.path().join("topic");
        let body = vec![9u8; 1000];
        let fill_near_full = |log: &mut Log| {
            while log.active().used() * 8 < log.active().capacity() * 7 {
                let off = log.tail();
                log.append(&new_rec(&body, off)).unwrap();
            }
        };
        let mut a = Log::open(&dir, cfg()).unwrap();
        fill_near_full(&mut a);
        let job = a
            .poll_jobs(0)
            .find(|j| !j.is_sync())
            .expect("pre-creation due");
        let stale = job.run();
        a.destroy().unwrap();
        let mut b = Log::open(&dir, cfg()).unwrap();
        fill_near_full(&mut b);
        b.run_jobs_inline(0);
        assert_eq!(b.ready_segments(), 1);
        b.apply(stale);
        assert_eq!(b.ready_segments(), 1);
        while b.segment_count() < 2 {
            let off = b.tail();
            b.append(&new_rec(&body, off)).unwrap();
        }
        assert_eq!(
            b.inline_creations(),
            0,
            "the ready segment was used for the roll"
        );
    }

    #[test]
    fn stray_files_are_reported_not_fatal() {
        let tmp = TempDir::new("stray");
        {
            let mut log = Log::open(tmp.path(), cfg()).unwrap();
            log.append(&new_rec(b"a", 0)).unwrap();
        }
        for name in [
            "junk.txt",
            "123.log",
            "0000000000000000000x.log",
            "99999999999999999999.log",
        ] {
            std::fs::write(tmp.path().join(name), b"garbage").unwrap();
        }
        std::fs::create_dir(tmp.path().join("00000000000000000005.log")).unwrap();
        std::fs::write(tmp.path().join("00000000000000000009.prealloc"), b"").unwrap();
        let log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!((log.tail(), log.segment_count()), (1, 1));
        assert!(tmp.path().join("junk.txt").exists());
        assert!(!tmp.path().join("00000000000000000009.prealloc").exists());
    }

    #[test]
    fn random_damage_to_a_log_directory_never_panics_or_returns_a_bad_record() {
        // hostile-inputs §2.17: the log is input on restart. Small segments so a damaged
        // directory holds sealed segments, an active one and headers worth hitting.
        let c = || LogConfig {
            max_bytes_per_file: 2048,
            ..cfg()
        };
        let src = TempDir::new("fuzzsrc");
        let mut rng = Rng::new(11);
        let lens = {
            let mut log = Log::open(src.path(), c()).unwrap();
            fill(&mut log, &mut rng, 80, 120)
        };
        let names = files(src.path());
        assert!(names.len() >= 4, "{names:?}");
        let (mut opened, mut returned) = (0, 0);
        for case in 0..150 {
            let tmp = TempDir::new("fuzz");
            for n in &names {
                std::fs::copy(src.path().join(n), tmp.path().join(n)).unwrap();
            }
            for _ in 0..=rng.below(4) {
                let name = &names[rng.below(names.len() as u64) as usize];
                let path = tmp.path().join(name);
                let len = std::fs::metadata(&path).unwrap().len();
                match rng.below(4) {
                    0 => std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .unwrap()
                        .set_len(rng.below(len))
                        .unwrap(),
                    1 => flip(&path, rng.below(len.min(700)), 1 << rng.below(8)),
                    _ => flip(&path, rng.below(len), rng.below(255) as u8 + 1),
                }
            }
            let log = match Log::open(tmp.path(), c()) {
                Ok(log) => log,
                Err(e) => {
                    assert!(
                        matches!(e, StorageError::Corruption { .. }),
                        "case {case}: {e}"
                    );
                    assert!(
                        e.to_string().contains(".log"),
                        "case {case}: message names no file: {e}"
                    );
                    continue;
                }
            };
            let mut last = None;
            for r in log.iter_from(0) {
                assert!(last < Some(r.offset), "case {case}: offsets not increasing");
                check_record(&r, lens[r.offset as usize]);
                last = Some(r.offset);
                returned += 1;
            }
            opened += 1;
        }
        // Not vacuous: most damaged directories still open and yield their intact records.
        assert!(
            opened > 75 && returned > 75 * 40,
            "opened {opened}, returned {returned}"
        );
    }

    #[test]
    fn garbage_or_misnamed_segment_is_rejected_naming_the_file() {
        let tmp = TempDir::new("garbage");
        let bad = tmp.path().join(segment_file_name(0));
        std::fs::write(&bad, vec![0xAB; 4096]).unwrap();
        let e = Log::open(tmp.path(), cfg()).unwrap_err();
        assert!(matches!(e, StorageError::Corruption { .. }));
        assert!(e.to_string().contains("00000000000000000000.log"), "{e}");
        // A valid segment under the wrong name.
        let tmp2 = TempDir::new("misnamed");
        drop(Log::open(tmp2.path(), cfg()).unwrap());
        std::fs::rename(
            tmp2.path().join(segment_file_name(0)),
            tmp2.path().join(segment_file_name(7)),
        )
        .unwrap();
        let e = Log::open(tmp2.path(), cfg()).unwrap_err();
        assert!(e.to_string().contains("00000000000000000007.log"), "{e}");
    }

    #[test]
    fn zeroed_header_is_rewritten_from_the_name() {
        let tmp = TempDir::new("zerohdr");
        {
            let mut log = Log::open(tmp.path(), cfg()).unwrap();
            log.append(&new_rec(b"a", 0)).unwrap();
        }
        let path = tmp.path().join(segment_file_name(0));
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all(&[0u8; SEGMENT_HEADER_LEN]).unwrap();
        drop(f);
        let log = Log::open(tmp.path(), cfg()).unwrap();
        assert_eq!(log.read(0).unwrap().body, b"a");
    }

    #[test]
    fn reads_outside_the_log_are_not_found_and_destroy_removes_everything() {
        let tmp = TempDir::new("destroy");
        let dir = tmp.path().join("topic");
        let mut log = Log::open(&dir, cfg()).unwrap();
        assert!(matches!(
            log.read(0),
            Err(StorageError::NotFound { offset: 0 })
        ));
        log.append(&new_rec(b"a", 0)).unwrap();
        assert!(matches!(
            log.read(1),
            Err(StorageError::NotFound { offset: 1 })
        ));
        assert!(matches!(
            log.read(u64::MAX),
            Err(StorageError::NotFound { .. })
        ));
        assert_eq!(log.iter_from(u64::MAX).count(), 0);
        assert_eq!(log.disk_bytes(), SEG);
        log.destroy().unwrap();
        assert!(!dir.exists());
    }
}
