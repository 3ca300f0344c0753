//! Background work: the [`Job`]s a [`Log`](super::Log) hands out (fsync, growing the active
//! segment's file ahead of the writer, pre-creating the next segment, unlinking, reading a
//! peek's cold pages into the page cache) and the
//! [`StorageWorker`] helper threads that run them so the reactor never blocks.
//!
//! Flow: `log.poll_jobs(now)` → `worker.submit(key, job)` → (helper thread) `job.run()` →
//! `notify()` → reactor: `worker.try_recv()` → `log.apply(done)`. Without a worker,
//! `log.run_jobs_inline(now)` does the same synchronously.
//!
//! Three lanes (see [`super::priority`] for why the priorities differ):
//!
//! - the sync lane, [`SYNC_THREADS`] threads at normal priority sharing one queue, runs the
//!   syncs someone waits for (strict-mode syncs, interval syncs that fell behind), and the
//!   reads that warm a peek's pages. Several
//!   threads because a strict-mode log keeps up to `MAX_SYNCS_IN_FLIGHT` syncs running at once
//!   (see `log/syncs.rs`): each blocks in `fdatasync` for the disk's whole latency, and one
//!   thread would run them one after another, which is what overlapping them avoids;
//! - the foreground lane, one thread at normal priority, runs the growth or pre-creation a
//!   fast writer will need before a background one could finish;
//! - the background lane, one thread at `SCHED_IDLE`, runs the rest (early interval syncs,
//!   growth and pre-creation ahead of need, unlinking). A thread cannot move itself back from
//!   `SCHED_IDLE` without privileges, hence separate threads.
//!
//! Results may arrive out of submission order (across lanes, and within the sync lane);
//! `Log::apply` handles each kind on its own, and syncs through its `SyncTracker`.

use super::segment::{Growth, PreparedSegment};
use super::StorageError;
use ::log::error;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// A unit of blocking storage work. `Send`: built on the reactor, run on the helper thread.
#[derive(Debug)]
pub struct Job {
    /// Which `Log` instance made it; results for another instance are ignored by `apply`.
    pub(crate) log_id: u64,
    pub(crate) kind: JobKind,
}

#[derive(Debug)]
pub(crate) enum JobKind {
    /// fdatasync these segment files (and the directory, if a segment was installed since the
    /// last sync). The log wrote its pending appends before making the job, so they are in
    /// the page cache the fsync writes back. `target` is the log's tail when the job was made:
    /// on success every offset below it is durable.
    /// `background`: nobody waits for it (interval mode, not yet overdue).
    /// `seq` identifies the sync to the log's `SyncTracker` (several may be in flight).
    Sync {
        target: u64,
        seq: u64,
        files: Vec<(PathBuf, Arc<File>)>,
        dir: Option<(PathBuf, Arc<File>)>,
        background: bool,
    },
    /// Create the next segment under a temporary name, fallocate `size` bytes, map `limit`
    /// bytes and prefetch the allocated pages into the page cache.
    /// `background`: no writer is waiting for it yet (it runs on the background lane).
    Prepare {
        path: PathBuf,
        size: u64,
        limit: u64,
        fault: Option<Arc<AtomicBool>>,
        background: bool,
    },
    /// Extend the active segment's file by one growth step and prefetch the new pages.
    /// `background`: as for `Prepare`.
    Grow {
        growth: Growth,
        fault: Option<Arc<AtomicBool>>,
        background: bool,
    },
    /// Unlink segments retention dropped (freeing a large file's extents can take
    /// milliseconds), or a deleted topic's whole directory.
    Remove { paths: Vec<PathBuf>, dir: bool },
    /// Read these byte ranges of segment files into the page cache, so the loop can read them
    /// from the map without waiting for the disk (a peek of a cold backlog, see
    /// `log/warm.rs`).
    Warm { ranges: Vec<(Arc<File>, u64, u64)> },
}

/// The outcome of a [`Job`], to be handed to [`Log::apply`](super::Log::apply).
#[derive(Debug)]
pub struct JobDone {
    pub(crate) log_id: u64,
    pub(crate) kind: DoneKind,
}

#[derive(Debug)]
pub(crate) enum DoneKind {
    Synced {
        target: u64,
        seq: u64,
        result: Result<(), StorageError>,
    },
    Prepared(Result<PreparedSegment, StorageError>),
    /// The segment starting at `base` is allocated up to `to` bytes, or the step failed.
    Grown {
        base: u64,
        to: u64,
        result: Result<(), StorageError>,
    },
    /// Files unlinked; failures were logged (the files are left behind, nothing else is lost).
    Removed,
    /// The ranges of a `Warm` job were read (a failed read is only logged: the loop's own read
    /// reports it).
    Warmed,
}

impl Job {
    /// Runs the job on the calling thread (blocking). The worker calls this; so does
    /// `Log::run_jobs_inline`.
    pub fn run(self) -> JobDone {
        let kind = match self.kind {
            JobKind::Sync {
                target,
                seq,
                files,
                dir,
                ..
            } => DoneKind::Synced {
                target,
                seq,
                result: sync_all(&files, dir.as_ref()),
            },
            JobKind::Prepare {
                path,
                size,
                limit,
                fault,
                ..
            } => DoneKind::Prepared(PreparedSegment::create(
                path,
                size,
                limit,
                fault.as_deref(),
                true,
            )),
            JobKind::Grow { growth, fault, .. } => DoneKind::Grown {
                base: growth.base,
                to: growth.to,
                result: growth.run(fault.as_deref()),
            },
            JobKind::Remove { paths, dir } => {
                remove_all(&paths, dir);
                DoneKind::Removed
            }
            JobKind::Warm { ranges } => {
                super::log::warm_ranges(&ranges);
                DoneKind::Warmed
            }
        };
        JobDone {
            log_id: self.log_id,
            kind,
        }
    }

    /// True for a sync job (as opposed to a growth, pre-creation or removal).
    pub fn is_sync(&self) -> bool {
        matches!(self.kind, JobKind::Sync { .. })
    }

    /// Whether the job can wait for idle CPU time (the background lane).
    pub(crate) fn is_background(&self) -> bool {
        match self.kind {
            JobKind::Sync { background, .. }
            | JobKind::Prepare { background, .. }
            | JobKind::Grow { background, .. } => background,
            JobKind::Remove { .. } => true,
            // Somebody waits for it (an HTTP peek).
            JobKind::Warm { .. } => false,
        }
    }
}

impl JobDone {
    /// True for the result of a `Warm` job (the broker resumes the peeks that waited for it).
    pub fn is_warmed(&self) -> bool {
        matches!(self.kind, DoneKind::Warmed)
    }
}

/// Unlinks files (or whole directories); a failure is logged and the rest still go.
fn remove_all(paths: &[PathBuf], dir: bool) {
    for path in paths {
        let result = if dir {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path)
        };
        match result {
            Ok(()) => ::log::info!("removed {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => error!("removing {}: {e}", path.display()),
        }
    }
}

impl Job {
    /// A job that removes a whole directory (a deleted topic's), for a caller without a log.
    pub fn remove_dir(path: PathBuf) -> Job {
        Job {
            log_id: 0,
            kind: JobKind::Remove {
                paths: vec![path],
                dir: true,
            },
        }
    }
}

fn sync_all(
    files: &[(PathBuf, Arc<File>)],
    dir: Option<&(PathBuf, Arc<File>)>,
) -> Result<(), StorageError> {
    for (path, file) in files {
        file.sync_data()
            .map_err(|e| StorageError::io(path, "fdatasync", e))?;
    }
    if let Some((path, dir)) = dir {
        // Makes renames (segment installs) durable.
        dir.sync_all()
            .map_err(|e| StorageError::io(path, "fsync dir", e))?;
    }
    Ok(())
}

impl JobDone {
    /// A failed sync result, for tests of the poisoned-log path.
    #[cfg(test)]
    pub(crate) fn failed_sync_for_test(log_id: u64, target: u64) -> JobDone {
        let source = io::Error::from_raw_os_error(libc::EIO);
        let result = Err(StorageError::io("test", "fdatasync", source));
        JobDone {
            log_id,
            kind: DoneKind::Synced {
                target,
                seq: 0,
                result,
            },
        }
    }
}

/// Wakes the reactor after each finished job (e.g. a closure calling `mio::Waker::wake`).
pub type Notify = Box<dyn Fn() + Send>;

/// Threads of the sync lane: as many as one strict-mode log may have syncs in flight.
pub const SYNC_THREADS: usize = super::log::MAX_SYNCS_IN_FLIGHT;

/// Helper threads (a sync, a foreground and a background lane) that run [`Job`]s, started in
/// submission order per lane, and hand back `(log_key, JobDone)`. Dropping it lets queued
/// jobs finish, then joins the threads.
pub struct StorageWorker {
    /// Syncs someone waits for, several at once, at normal priority. `None` only during drop.
    sync: Option<LaneThread>,
    /// Urgent growths and pre-creations, at normal priority. `None` only during drop.
    foreground: Option<LaneThread>,
    /// Pre-creation ahead of need and unlinking, at `SCHED_IDLE`. `None` only during drop.
    background: Option<LaneThread>,
    rx: mpsc::Receiver<(u64, JobDone)>,
    /// Results of jobs run inline because a thread was gone (it never should be).
    fallback: RefCell<VecDeque<(u64, JobDone)>>,
}

/// One lane's queue and its threads (they take jobs from the queue in turn).
struct LaneThread {
    tx: mpsc::Sender<(u64, Job)>,
    threads: Vec<JoinHandle<()>>,
}

/// A lane's queue, shared by its threads: the one holding the lock waits for the next job.
type SharedJobs = Arc<Mutex<mpsc::Receiver<(u64, Job)>>>;

impl LaneThread {
    fn spawn(
        name: &str,
        threads: usize,
        background: bool,
        done_tx: mpsc::Sender<(u64, JobDone)>,
        notify: Arc<Mutex<Notify>>,
    ) -> io::Result<LaneThread> {
        let (tx, jobs) = mpsc::channel::<(u64, Job)>();
        let jobs: SharedJobs = Arc::new(Mutex::new(jobs));
        let mut lane = LaneThread {
            tx,
            threads: Vec::with_capacity(threads),
        };
        for _ in 0..threads {
            let (jobs, done_tx, notify) = (Arc::clone(&jobs), done_tx.clone(), Arc::clone(&notify));
            let thread = crate::cpu::spawn_helper(name, move || {
                run_lane(&jobs, background, &done_tx, &notify);
            });
            match thread {
                Ok(t) => lane.threads.push(t),
                Err(e) => {
                    lane.join();
                    return Err(e);
                }
            }
        }
        Ok(lane)
    }

    fn join(self) {
        drop(self.tx);
        for thread in self.threads {
            if thread.join().is_err() {
                error!("storage worker thread panicked");
            }
        }
    }
}

/// A lane thread's loop: take a job, run it, hand back the result, wake the reactor; until
/// the queue is closed (the worker is dropped) or the owner is gone.
fn run_lane(
    jobs: &SharedJobs,
    background: bool,
    done_tx: &mpsc::Sender<(u64, JobDone)>,
    notify: &Mutex<Notify>,
) {
    if background {
        super::priority::enter_background();
    }
    loop {
        // The lock is held only while waiting for a job, never while running one, so the
        // lane's threads run their jobs at once. A poisoned lock only means another thread of
        // the lane panicked while waiting; the queue itself is intact.
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((key, job)) = next else { break };
        if done_tx.send((key, job.run())).is_err() {
            break; // the owner is gone: nobody to tell.
        }
        // A poisoned lock only means another lane panicked mid-call; still wake.
        let notify = notify.lock().unwrap_or_else(|e| e.into_inner());
        notify();
    }
}

impl std::fmt::Debug for StorageWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageWorker")
            .field("running", &self.sync.is_some())
            .finish()
    }
}

impl StorageWorker {
    /// Starts the threads. `notify` is called on one of them after every finished job.
    pub fn spawn(notify: Notify) -> io::Result<StorageWorker> {
        let (done_tx, rx) = mpsc::channel();
        let notify = Arc::new(Mutex::new(notify));
        let sync = LaneThread::spawn(
            "corq-sync",
            SYNC_THREADS,
            false,
            done_tx.clone(),
            Arc::clone(&notify),
        )?;
        let foreground = LaneThread::spawn(
            "corq-storage",
            1,
            false,
            done_tx.clone(),
            Arc::clone(&notify),
        )?;
        let background = LaneThread::spawn("corq-storage-bg", 1, true, done_tx, notify)?;
        Ok(StorageWorker {
            sync: Some(sync),
            foreground: Some(foreground),
            background: Some(background),
            rx,
            fallback: RefCell::default(),
        })
    }

    /// Queues `job` for the log the caller knows as `log_key`. Never blocks, unless the thread
    /// has died, in which case the job runs inline (and an error is logged) so no sync is lost.
    pub fn submit(&self, log_key: u64, job: Job) {
        let lane = if job.is_background() {
            &self.background
        } else if job.is_sync() || matches!(job.kind, JobKind::Warm { .. }) {
            // A warm job waits for the disk like a sync, and takes one of the lane's threads
            // rather than holding up a growth a writer needs.
            &self.sync
        } else {
            &self.foreground
        };
        let Some(lane) = lane else { return };
        if let Err(mpsc::SendError((key, job))) = lane.tx.send((log_key, job)) {
            error!("storage worker thread is gone; running a job inline");
            self.fallback.borrow_mut().push_back((key, job.run()));
        }
    }

    /// A finished job, if any.
    pub fn try_recv(&self) -> Option<(u64, JobDone)> {
        if let Some(done) = self.fallback.borrow_mut().pop_front() {
            return Some(done);
        }
        self.rx.try_recv().ok()
    }
}

impl Drop for StorageWorker {
    fn drop(&mut self) {
        let lanes = [
            self.sync.take(),
            self.foreground.take(),
            self.background.take(),
        ];
        for lane in lanes.into_iter().flatten() {
            lane.join();
        }
    }
}
