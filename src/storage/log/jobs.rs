//! The background-job half of [`Log`]: deciding when a sync, a growth step of the active
//! segment or a segment pre-creation is due ([`Log::poll_jobs`]), and applying their results
//! ([`Log::apply`]). The jobs themselves and the thread that runs them are in `worker.rs`.
//!
//! # Space
//!
//! - Growth: once the room allocated ahead of the writer runs low (`space::grow_due`), one
//!   growth step (`space::next_alloc`) is handed to the helper, which fallocates it. At
//!   most one is in flight; a failed one (disk full) is retried after
//!   [`PREPARE_RETRY_MS`], and meanwhile a writer that needs the room grows inline and gets
//!   the error itself.
//! - Pre-creation: once the active segment is 7/8 of `max_bytes_per_file` full
//!   (`space::precreate_due`), the next segment is created off-thread, sized like the active
//!   segment's growth steps (`space::precreate_size`: 64 KiB for a quiet topic, 8 MiB for a
//!   busy one).
//!
//! # Durability
//!
//! - Interval (`sync_every > 1`): a sync job is produced once `sync_every` records are
//!   unsynced, or once unsynced records have waited `sync_timeout_ms` (measured from the first
//!   `poll_jobs` call that saw them), whichever comes first.
//! - Strict (`sync_every == 1`): a sync job is produced whenever records are written that no
//!   sync in flight covers, while fewer than [`MAX_SYNCS_IN_FLIGHT`] run; it covers every
//!   append made before it was produced (group commit). Overlapping syncs, and the rule that
//!   turns their completions (in any order) into [`Log::durable_offset`], are in `syncs.rs`.
//!   Interval mode keeps one sync at a time: nobody waits for it.
//! - An interval sync on the background lane can be starved (`SCHED_IDLE`, every core busy),
//!   and while it waits it holds interval mode's one slot, so no later sync could start: the
//!   count and the timeout would be ignored for as long as the cores stay busy. So once
//!   syncing has fallen behind (4 × `sync_every` records unsynced, or the background sync
//!   waited `sync_timeout_ms`), the log supersedes it: it sets the job's `superseded` flag (the
//!   job, if it has not begun, then skips its `fdatasync`), forgets it in the `SyncTracker`
//!   and starts a sync at normal priority that covers everything it would have, the directory
//!   included.
//! - A failed sync poisons the log: appends return
//!   [`StorageError::Failed`](crate::storage::StorageError::Failed); reads still work.

use super::syncs::MAX_SYNCS_IN_FLIGHT;
use super::Log;
use crate::storage::space;
use crate::storage::worker::{DoneKind, Job, JobDone, JobKind, SyncFile};
use crate::storage::StorageError;
use ::log::{debug, error, warn};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// After a failed pre-creation or growth step (e.g. disk full), wait this long before trying
/// again.
const PREPARE_RETRY_MS: u64 = 1000;
/// An interval sync runs on the foreground lane once this many times `sync_every` records are
/// unsynced (syncing has fallen behind).
const SYNC_BEHIND_FACTOR: u64 = 4;

/// The interval sync in flight on the background lane (see the module docs, "Durability").
#[derive(Debug)]
pub(super) struct BackgroundSync {
    seq: u64,
    started_ms: u64,
    /// Set when a normal-priority sync takes over; the job checks it before syncing.
    superseded: Arc<AtomicBool>,
    /// Whether the job also fsyncs the directory (its successor must then do it).
    carries_dir: bool,
}

/// Background jobs: see the module docs for the policy.
impl Log {
    /// The jobs due at `now_ms` (a monotonic ms clock of the caller's choosing): at most one
    /// sync and one segment pre-creation. Submit them to a [`StorageWorker`](crate::storage::StorageWorker)
    /// and pass the results to [`Log::apply`].
    /// Flushes pending appends first (see [`Log::flush`]): a sync covers what was written.
    pub fn poll_jobs(&mut self, now_ms: u64) -> impl Iterator<Item = Job> + 'static {
        // A failure poisons the log; sync_job then produces nothing.
        let _ = self.flush();
        let sync = self.sync_job(now_ms);
        let grow = self.grow_job(now_ms);
        let prepare = self.prepare_job(now_ms);
        let remove = self.remove_job();
        sync.into_iter().chain(grow).chain(prepare).chain(remove)
    }

    /// Unlinking the segment files retention dropped.
    fn remove_job(&mut self) -> Option<Job> {
        if self.to_remove.is_empty() {
            return None;
        }
        let paths = std::mem::take(&mut self.to_remove);
        Some(Job {
            log_id: self.id,
            kind: JobKind::Remove { paths, dir: false },
        })
    }

    /// When the caller should next call `poll_jobs` for the sync timeout, if anything waits
    /// (or when a background sync still running then would be superseded).
    pub fn next_sync_deadline_ms(&self) -> Option<u64> {
        if let Some(bg) = &self.background_sync {
            return Some(bg.started_ms.saturating_add(self.cfg.sync_timeout_ms));
        }
        match (self.syncs.in_flight(), self.unsynced_since_ms) {
            (0, Some(since)) => Some(since.saturating_add(self.cfg.sync_timeout_ms)),
            _ => None,
        }
    }

    /// Syncs this log may have in flight at once: several only in strict mode (see `syncs.rs`).
    fn sync_limit(&self) -> usize {
        if self.cfg.sync_every == 1 {
            MAX_SYNCS_IN_FLIGHT
        } else {
            1
        }
    }

    fn sync_job(&mut self, now_ms: u64) -> Option<Job> {
        self.supersede_starved_sync(now_ms);
        if self.failed.is_some() || !self.syncs.can_start(self.sync_limit()) {
            return None;
        }
        let pending = self.tail - self.durable;
        if pending == 0 && !self.dir_dirty {
            self.unsynced_since_ms = None;
            return None;
        }
        if self.syncs.covers(self.tail) && !self.dir_dirty {
            // Strict mode: every written record is in a sync already running.
            return None;
        }
        let since = *self.unsynced_since_ms.get_or_insert(now_ms);
        let due = self.cfg.sync_every == 1
            || pending >= self.cfg.sync_every
            || now_ms.saturating_sub(since) >= self.cfg.sync_timeout_ms;
        if !due {
            return None;
        }
        self.unsynced_since_ms = None;
        // Strict-mode publishers wait for this sync. In interval mode nobody does, so it may
        // wait for idle CPU time (see `storage::priority`), unless syncing is falling behind:
        // the records waited the whole timeout, or several syncs' worth piled up while the
        // last one ran (a saturated reactor leaves a background sync little CPU; without this
        // a 5 M-message MPUB burst ended with 0.8 GB unsynced).
        let waited_out = now_ms.saturating_sub(since) >= self.cfg.sync_timeout_ms;
        let behind = pending >= SYNC_BEHIND_FACTOR.saturating_mul(self.cfg.sync_every);
        let background = self.cfg.sync_every != 1 && !waited_out && !behind;
        let seq = self.syncs.start(self.tail);
        Some(self.build_sync_job(seq, background, now_ms))
    }

    /// Takes over from a background sync that syncing has outrun: see the module docs.
    fn supersede_starved_sync(&mut self, now_ms: u64) {
        let Some(bg) = &self.background_sync else {
            return;
        };
        let behind =
            self.tail - self.durable >= SYNC_BEHIND_FACTOR.saturating_mul(self.cfg.sync_every);
        let waited_out = now_ms.saturating_sub(bg.started_ms) >= self.cfg.sync_timeout_ms;
        if !behind && !waited_out {
            return;
        }
        bg.superseded.store(true, Ordering::Release);
        self.syncs.forget(bg.seq);
        self.dir_dirty |= bg.carries_dir;
        // The successor is due at once, at normal priority.
        self.unsynced_since_ms = Some(now_ms.saturating_sub(self.cfg.sync_timeout_ms));
        self.background_sync = None;
        debug!(
            "{}: a background sync fell behind; a normal-priority one takes over",
            self.dir.display()
        );
    }

    /// A sync of everything appended so far: the segments holding `[durable, tail)` and, if a
    /// segment was installed since the last sync, the directory.
    /// `seq` identifies the sync to the [`SyncTracker`](super::SyncTracker) when it completes.
    fn build_sync_job(&mut self, seq: u64, background: bool, now_ms: u64) -> Job {
        let first = self.segment_for(self.durable).unwrap_or(0);
        let durable = self.durable;
        let files = self.segments[first..]
            .iter()
            .enumerate()
            .map(|(i, s)| {
                // The first segment from its first unsynced record (none known: nothing of
                // it to write back early), the later ones whole.
                let from = if i == 0 {
                    s.position(durable).unwrap_or(s.flushed())
                } else {
                    0
                };
                SyncFile {
                    path: s.path.clone(),
                    file: Arc::clone(&s.file),
                    unsynced: from as u64..s.flushed() as u64,
                }
            })
            .collect();
        let dir = self
            .dir_dirty
            .then(|| (self.dir.clone(), Arc::clone(&self.dir_file)));
        self.dir_dirty = false;
        let evict = self.segments_leaving_the_cache(first).into_boxed_slice();
        let superseded = background.then(|| {
            let flag = Arc::new(AtomicBool::new(false));
            self.background_sync = Some(BackgroundSync {
                seq,
                started_ms: now_ms,
                superseded: Arc::clone(&flag),
                carries_dir: dir.is_some(),
            });
            flag
        });
        Job {
            log_id: self.id,
            kind: JobKind::Sync {
                target: self.tail,
                seq,
                files,
                dir,
                background,
                superseded,
                evict,
            },
        }
    }

    /// Syncs everything appended so far on the calling thread, whatever the policy says. For a
    /// clean shutdown only: the reactor never calls it while serving.
    ///
    /// # Errors
    /// `Failed` if the log had already failed, or the sync's own error (which also fails the
    /// log, as a background sync would).
    pub fn sync_blocking(&mut self) -> Result<(), StorageError> {
        if let Some(why) = &self.failed {
            return Err(StorageError::Failed(why.clone()));
        }
        if self.tail == self.durable && !self.dir_dirty {
            return Ok(());
        }
        self.flush()?;
        // A directory fsync may still be running in a job: do one here too, so `tail` is
        // durable when this returns whatever the jobs in flight have done.
        self.dir_dirty |= self.syncs.in_flight() > 0;
        // Sequence numbers are u64s counted from 0: MAX is never one a job in flight has.
        let done = self.build_sync_job(u64::MAX, false, 0).run();
        if let DoneKind::Synced { target, result, .. } = done.kind {
            match result {
                Ok(()) => {
                    self.syncs_done += 1;
                    self.note_durable(target);
                }
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// One growth step of the active segment, if due (see the module docs).
    fn grow_job(&mut self, now_ms: u64) -> Option<Job> {
        if std::mem::take(&mut self.grow_failed) {
            self.grow_retry_at_ms = now_ms.saturating_add(PREPARE_RETRY_MS);
        }
        if self.failed.is_some() || self.grow_in_flight || now_ms < self.grow_retry_at_ms {
            return None;
        }
        let growth = self.active().grow_target()?;
        self.grow_in_flight = true;
        let kind = JobKind::Grow {
            growth,
            fault: self.alloc_fault.clone(),
            // Background unless this log recently outran its growth steps.
            background: self.urgent_grows == 0,
        };
        Some(Job {
            log_id: self.id,
            kind,
        })
    }

    fn prepare_job(&mut self, now_ms: u64) -> Option<Job> {
        if std::mem::take(&mut self.prepare_failed) {
            self.prepare_retry_at_ms = now_ms.saturating_add(PREPARE_RETRY_MS);
        }
        let active = self.active();
        // Pre-create only once the active segment is nearly full: a spare file for every
        // topic that barely writes would cost disk for nothing. The spare is small (a growth
        // step's size), so creating it finishes long before a fast writer fills the last
        // eighth of a segment.
        let due = space::precreate_due(active.used() as u64, active.capacity() as u64);
        if !due
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
            size: self.next_segment_size(),
            limit: self.cfg.max_bytes_per_file,
            fault: self.alloc_fault.clone(),
            // Background (idle CPU only) unless the previous pre-creation came too late: this
            // log writes fast enough that the writer would otherwise create the file itself.
            background: self.urgent_prepares == 0,
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
            if let DoneKind::Prepared(Ok(prep)) = done.kind {
                prep.discard();
            }
            return;
        }
        match done.kind {
            DoneKind::Synced { seq, result, .. } => match result {
                Ok(()) => {
                    if self.background_sync.as_ref().is_some_and(|b| b.seq == seq) {
                        self.background_sync = None;
                    }
                    self.syncs_done += 1;
                    if let Some(watermark) = self.syncs.complete(seq) {
                        self.note_durable(watermark);
                    }
                }
                Err(e) => {
                    self.syncs.clear();
                    self.background_sync = None;
                    error!(
                        "{}: sync failed, refusing further appends: {e}",
                        self.dir.display()
                    );
                    self.failed = Some(e.to_string());
                }
            },
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
            DoneKind::Grown { base, to, result } => self.apply_growth(base, to, result),
            DoneKind::ReadAhead => self.read_ahead_in_flight = false,
            // Superseded before it began: its successor answers for its records.
            DoneKind::Removed | DoneKind::Warmed | DoneKind::SyncSkipped => {}
        }
    }

    /// Every offset below `upto` is on stable storage.
    fn note_durable(&mut self, upto: u64) {
        if upto > self.durable {
            self.synced_records += upto - self.durable;
            self.durable = upto;
        }
    }

    /// Syncs completed successfully since the log was opened (`/metrics`).
    pub fn syncs_total(&self) -> u64 {
        self.syncs_done
    }

    /// Records those syncs made durable: divided by [`Log::syncs_total`], the group size.
    pub fn synced_records_total(&self) -> u64 {
        self.synced_records
    }

    fn apply_growth(&mut self, base: u64, to: u64, result: Result<(), StorageError>) {
        self.grow_in_flight = false;
        match result {
            Ok(()) => {
                self.urgent_grows = self.urgent_grows.saturating_sub(1);
                // The segment may be sealed by now (or gone): its file is allocated all the same.
                if let Some(seg) = self.segments.iter_mut().find(|s| s.base == base) {
                    seg.note_allocated(to);
                }
            }
            Err(e) => {
                warn!("{}: growing the segment failed: {e}", self.dir.display());
                self.grow_failed = true;
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
