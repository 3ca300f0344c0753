//! The background-job half of [`Log`]: deciding when a sync or a segment pre-creation is due
//! ([`Log::poll_jobs`]), and applying their results ([`Log::apply`]). The jobs themselves and
//! the thread that runs them are in `worker.rs`.
//!
//! # Durability
//!
//! - Interval (`sync_every > 1`): a sync job is produced once `sync_every` records are
//!   unsynced, or once unsynced records have waited `sync_timeout_ms` (measured from the first
//!   `poll_jobs` call that saw them), whichever comes first.
//! - Strict (`sync_every == 1`): a sync job is produced whenever records are unsynced and no
//!   sync is in flight; it covers every append made before it was produced (group commit).
//!   [`Log::durable_offset`] tells which offsets are on stable storage.
//! - A failed sync poisons the log: appends return
//!   [`StorageError::Failed`](crate::storage::StorageError::Failed); reads still work.

use super::Log;
use crate::storage::worker::{DoneKind, Job, JobDone, JobKind};
use crate::storage::StorageError;
use ::log::{debug, error, warn};
use std::sync::Arc;

/// After a failed pre-creation (e.g. disk full), wait this long before trying again.
const PREPARE_RETRY_MS: u64 = 1000;
/// The next segment is pre-created once the active one is `1 / PRECREATE_AT_FRACTION` full.
/// Measured (strace, loaded 2-core box): pre-faulting 100 MiB took ~14 ms alone but 115-210 ms
/// while the appending thread competed for the CPU, and a full-speed writer fills a segment in
/// well under a second; starting at 1/8 leaves the helper ~7/8 of a segment's time.
const PRECREATE_AT_FRACTION: usize = 8;
/// An interval sync runs on the foreground lane once this many times `sync_every` records are
/// unsynced (syncing has fallen behind).
const SYNC_BEHIND_FACTOR: u64 = 4;

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
        let prepare = self.prepare_job(now_ms);
        let remove = self.remove_job();
        sync.into_iter().chain(prepare).chain(remove)
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
        self.sync_in_flight = Some(self.tail);
        self.unsynced_since_ms = None;
        // Strict-mode publishers wait for this sync. In interval mode nobody does, so it may
        // wait for idle CPU time (see `storage::priority`), unless syncing is falling behind:
        // the records waited the whole timeout, or several syncs' worth piled up while the
        // last one ran (a saturated reactor leaves a background sync little CPU; without this
        // a 5 M-message MPUB burst ended with 0.8 GB unsynced).
        let waited_out = now_ms.saturating_sub(since) >= self.cfg.sync_timeout_ms;
        let behind = pending >= SYNC_BEHIND_FACTOR.saturating_mul(self.cfg.sync_every);
        let background = self.cfg.sync_every != 1 && !waited_out && !behind;
        Some(self.build_sync_job(background))
    }

    /// A sync of everything appended so far: the segments holding `[durable, tail)` and, if a
    /// segment was installed since the last sync, the directory.
    fn build_sync_job(&mut self, background: bool) -> Job {
        let first = self.segment_for(self.durable).unwrap_or(0);
        let files = self.segments[first..]
            .iter()
            .map(|s| (s.path.clone(), Arc::clone(&s.file)))
            .collect();
        let dir = self
            .dir_dirty
            .then(|| (self.dir.clone(), Arc::clone(&self.dir_file)));
        self.dir_dirty = false;
        Job {
            log_id: self.id,
            kind: JobKind::Sync {
                target: self.tail,
                files,
                dir,
                background,
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
        let done = self.build_sync_job(false).run();
        if let DoneKind::Synced { target, result } = done.kind {
            match result {
                Ok(()) => self.durable = self.durable.max(target),
                Err(e) => {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn prepare_job(&mut self, now_ms: u64) -> Option<Job> {
        if std::mem::take(&mut self.prepare_failed) {
            self.prepare_retry_at_ms = now_ms.saturating_add(PREPARE_RETRY_MS);
        }
        let active = self.active();
        // Pre-create once the active segment is an eighth full: early enough that pre-faulting
        // the new map finishes before a fast writer needs it, late enough that topics that
        // barely write do not each hold a spare segment.
        let due = active.used() * PRECREATE_AT_FRACTION >= active.capacity();
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
            size: self.cfg.max_bytes_per_file,
            fault: self.alloc_fault.clone(),
            // Background (idle CPU only) unless the previous pre-creation came too late: this
            // log writes fast enough that the writer would otherwise fault the pages itself.
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
            DoneKind::Removed => {}
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
