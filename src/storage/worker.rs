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
//! - the sync lane, up to [`SYNC_THREADS`] threads at normal priority sharing one queue, runs the
//!   syncs someone waits for (strict-mode syncs, interval syncs that fell behind), and the
//!   reads that warm a peek's pages. Several
//!   threads because a strict-mode log keeps up to `MAX_SYNCS_IN_FLIGHT` syncs running at once
//!   (see `log/syncs.rs`): each blocks in `fdatasync` for the disk's whole latency, and one
//!   thread would run them one after another, which is what overlapping them avoids;
//! - the foreground lane, one thread at normal priority, runs the growth or pre-creation a
//!   fast writer will need before a background one could finish;
//! - the background lane, one thread at `SCHED_IDLE` (at normal priority when `--cpu` gave the
//!   reactor a core of its own: see `priority.rs`), runs the rest (early interval syncs,
//!   growth and pre-creation ahead of need, unlinking). A thread cannot move itself back from
//!   `SCHED_IDLE` without privileges, hence separate threads.
//!
//! A lane starts a thread when a job arrives and none of its threads is idle, so an unused
//! lane costs no thread and a sync lane whose logs never overlap syncs keeps one.
//!
//! Results may arrive out of submission order (across lanes, and within the sync lane);
//! `Log::apply` handles each kind on its own, and syncs through its `SyncTracker`.

use super::segment::{Growth, PreparedSegment};
use super::StorageError;
use ::log::{debug, error};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// `superseded` (background syncs only): set by the log when a normal-priority sync took
    /// over while this one waited for CPU; checked before syncing.
    Sync {
        target: u64,
        seq: u64,
        files: Vec<SyncFile>,
        dir: Option<(PathBuf, Arc<File>)>,
        background: bool,
        superseded: Option<Arc<AtomicBool>>,
        /// Whole segments, all synced before this job, to drop from the page cache once its
        /// own sync has succeeded (see `log/window.rs`).
        evict: Box<[Arc<File>]>,
    },
    /// Create the next segment under a temporary name, fallocate `size` bytes and map `limit`
    /// bytes.
    /// `background`: no writer is waiting for it yet (it runs on the background lane).
    Prepare {
        path: PathBuf,
        size: u64,
        limit: u64,
        fault: Option<Arc<AtomicBool>>,
        background: bool,
    },
    /// Extend the active segment's file by one growth step.
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
    /// Start reading these whole segments into the page cache (`POSIX_FADV_WILLNEED`, which
    /// returns once the reads are queued): the next ones a reader behind the page-cache window
    /// will read (see `log/window.rs`), each with the bytes of it written (past them the file
    /// is allocated but unwritten).
    ReadAhead { files: Vec<(Arc<File>, u64)> },
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
    /// A background sync found itself superseded before it began, and did not sync.
    SyncSkipped,
    /// The files of a `ReadAhead` job are being read into the page cache.
    ReadAhead,
}

impl Job {
    /// Runs the job on the calling thread (blocking). The worker calls this; so does
    /// `Log::run_jobs_inline`.
    pub fn run(self) -> JobDone {
        let kind = match self.kind {
            JobKind::Sync {
                superseded: Some(flag),
                ..
            } if flag.load(Ordering::Acquire) => DoneKind::SyncSkipped,
            JobKind::Sync {
                target,
                seq,
                files,
                dir,
                evict,
                ..
            } => DoneKind::Synced {
                target,
                seq,
                result: sync_all(&files, dir.as_ref()).inspect(|()| evict_from_cache(&evict)),
            },
            JobKind::Prepare {
                path,
                size,
                limit,
                fault,
                ..
            } => DoneKind::Prepared(PreparedSegment::create(path, size, limit, fault.as_deref())),
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
            JobKind::ReadAhead { files } => {
                read_ahead(&files);
                DoneKind::ReadAhead
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
            JobKind::Remove { .. } | JobKind::ReadAhead { .. } => true,
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

/// A segment file a sync covers, and the bytes of it that sync makes durable (the appends
/// since the last sync).
#[derive(Debug)]
pub(crate) struct SyncFile {
    pub(crate) path: PathBuf,
    pub(crate) file: Arc<File>,
    pub(crate) unsynced: Range<u64>,
}

/// Bytes a sync starts writing back per `sync_file_range` call before its `fdatasync`.
const WRITEBACK_PIECE: u64 = 256 * 1024;

/// Starts writeback of `range` of `file` in [`WRITEBACK_PIECE`]s, yielding after each, so
/// the CPU part of writing back a large range (walking and locking the pages, building the
/// I/O: ~0.3 ms per 256 KiB here) comes in short system calls that hand the core to a woken
/// thread between them, rather than in one `fdatasync` nothing interrupts. The `fdatasync`
/// that follows waits for this writeback and writes whatever is still dirty, so durability
/// does not depend on it; errors are left for the `fdatasync` to report.
///
/// Why the yield, even when `--cpu` gave the helpers cores of their own: whatever shares a helper's
/// core (the reactor without `--cpu`; with it, the publishers of a small box, such as a benchmark's
/// generator) would otherwise wait for it. EEVDF lets a running task finish its slice before a
/// woken one of the same priority gets the core, and a `PREEMPT_NONE` kernel does not interrupt one
/// long call at all; a yield between calls hands the core over at once. Measured (`corq bench pub
/// --batch 200 --connections 4`, corqd `--cpu 0`, the generator on core 1 with the helpers; `perf
/// sched record`): the generator waited for its core after an OK up to 1.4 ms (p99) behind a
/// helper's long calls (a prefetch growth steps then made), and, once that yielded, behind interval
/// syncs' `fdatasync`s more than anything else (`docs/benchmarks.md`, "The helper gives way").
fn write_back_in_pieces(file: &File, range: Range<u64>) {
    for piece in writeback_pieces(range) {
        let Some((off, n)) = off_len(&piece) else {
            continue;
        };
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE) };
        std::thread::yield_now();
    }
}

/// The pieces [`write_back_in_pieces`] starts writeback of: `range` cut into consecutive
/// [`WRITEBACK_PIECE`]s (the last one shorter), or none when the range fits in one piece
/// (the `fdatasync` alone is one short call then).
fn writeback_pieces(range: Range<u64>) -> impl Iterator<Item = Range<u64>> {
    let whole = range.end.saturating_sub(range.start) > WRITEBACK_PIECE;
    let end = if whole { range.end } else { range.start };
    pieces(range.start..end, WRITEBACK_PIECE)
}

/// `range` cut into consecutive pieces of `piece` bytes (at least 1; the last one shorter);
/// none when it is empty or reversed.
fn pieces(range: Range<u64>, piece: u64) -> impl Iterator<Item = Range<u64>> {
    let piece = piece.max(1);
    let end = range.end;
    range
        .step_by(usize::try_from(piece).unwrap_or(usize::MAX))
        .map(move |at| at..at.saturating_add(piece).min(end))
}

/// `range` as the offset and length a file-range system call takes, or `None` past `off_t`.
fn off_len(range: &Range<u64>) -> Option<(libc::off_t, libc::off_t)> {
    let off = libc::off_t::try_from(range.start).ok()?;
    let len = libc::off_t::try_from(range.end.saturating_sub(range.start)).ok()?;
    Some((off, len))
}

/// Drops each file's clean pages from the page cache (`POSIX_FADV_DONTNEED`). A hint: a failure
/// only leaves pages cached, so it is logged, not returned.
fn evict_from_cache(files: &[Arc<File>]) {
    for file in files {
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            let e = io::Error::from_raw_os_error(rc);
            debug!("dropping a segment from the page cache: {e}");
        }
    }
}

/// Bytes per `POSIX_FADV_WILLNEED` call: the kernel reads at most its readahead size per call
/// (`max(read_ahead_kb, max_sectors_kb)` of the device) and ignores the rest of the range, so
/// a whole segment is asked for in pieces no larger than the smallest usual readahead size.
const READ_AHEAD_PIECE: u64 = 128 * 1024;

/// Starts reading the first `len` bytes of each file into the page cache and returns once the
/// reads are queued. A hint: a failure only means the loop reads those pages itself.
fn read_ahead(files: &[(Arc<File>, u64)]) {
    for (file, len) in files {
        for piece in pieces(0..*len, READ_AHEAD_PIECE) {
            let Some((off, n)) = off_len(&piece) else {
                break;
            };
            // SAFETY: plain syscall on an fd we own; no memory is passed.
            let rc =
                unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
            if rc != 0 {
                let e = io::Error::from_raw_os_error(rc);
                debug!("reading a segment ahead: {e}");
                break;
            }
        }
    }
}

fn sync_all(files: &[SyncFile], dir: Option<&(PathBuf, Arc<File>)>) -> Result<(), StorageError> {
    for f in files {
        write_back_in_pieces(&f.file, f.unsynced.clone());
        f.file
            .sync_data()
            .map_err(|e| StorageError::io(&f.path, "fdatasync", e))?;
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
    sync: Option<Lane>,
    /// Urgent growths and pre-creations, at normal priority. `None` only during drop.
    foreground: Option<Lane>,
    /// Pre-creation ahead of need and unlinking, at `SCHED_IDLE` (unless the reactor has its own
    /// core). `None` only during drop.
    background: Option<Lane>,
    rx: mpsc::Receiver<(u64, JobDone)>,
    /// Results of jobs run inline because no thread could take them (it never should be).
    fallback: RefCell<VecDeque<(u64, JobDone)>>,
}

/// One lane: a queue, and up to `max_threads` threads taking jobs from it in turn.
///
/// Threads start when work arrives and none of the lane's threads is idle, so a lane holds
/// only as many threads as its work has needed at once: a server whose logs never overlap
/// two syncs runs one sync thread, not [`SYNC_THREADS`], and a server with no topics none.
struct Lane {
    name: &'static str,
    max_threads: usize,
    background: bool,
    tx: mpsc::Sender<(u64, Job)>,
    /// The queue's receiving end: held here until the first thread starts, then only by the
    /// threads (a `Weak` here starts more), so that a lane whose threads all died fails its
    /// `send` and the job runs inline instead of waiting forever.
    jobs: RefCell<QueueEnd>,
    /// Threads started and not yet waiting for a job (or waiting: counted as idle).
    idle: Arc<AtomicUsize>,
    threads: RefCell<Vec<JoinHandle<()>>>,
    done_tx: mpsc::Sender<(u64, JobDone)>,
    notify: Arc<Mutex<Notify>>,
}

/// A lane's queue, shared by its threads: the one holding the lock waits for the next job.
type SharedJobs = Arc<Mutex<mpsc::Receiver<(u64, Job)>>>;

/// Who holds a lane's receiving end.
enum QueueEnd {
    /// No thread yet: the lane keeps it alive.
    Unstarted(SharedJobs),
    /// The threads do; this starts more while any of them lives.
    Started(std::sync::Weak<Mutex<mpsc::Receiver<(u64, Job)>>>),
}

impl Lane {
    fn new(
        name: &'static str,
        max_threads: usize,
        background: bool,
        done_tx: mpsc::Sender<(u64, JobDone)>,
        notify: Arc<Mutex<Notify>>,
    ) -> Lane {
        let (tx, jobs) = mpsc::channel::<(u64, Job)>();
        Lane {
            name,
            max_threads,
            background,
            tx,
            jobs: RefCell::new(QueueEnd::Unstarted(Arc::new(Mutex::new(jobs)))),
            idle: Arc::new(AtomicUsize::new(0)),
            threads: RefCell::new(Vec::with_capacity(max_threads)),
            done_tx,
            notify,
        }
    }

    /// Queues a job, first starting a thread if none is idle and the lane may have another.
    /// Gives the job back if no thread is there to take it.
    fn send(&self, key: u64, job: Job) -> Result<(), (u64, Job)> {
        let started = self.threads.borrow().len();
        if self.idle.load(Ordering::Acquire) == 0 && started < self.max_threads {
            self.start_thread();
        }
        self.tx
            .send((key, job))
            .map_err(|mpsc::SendError(sent)| sent)
    }

    /// Starts one more thread; a failure is logged and the lane goes on with what it has.
    fn start_thread(&self) {
        let shared = match &*self.jobs.borrow() {
            QueueEnd::Unstarted(jobs) => Arc::clone(jobs),
            QueueEnd::Started(weak) => match weak.upgrade() {
                Some(jobs) => jobs,
                None => return, // every thread died: `send` fails and the job runs inline.
            },
        };
        let weak = Arc::downgrade(&shared);
        let (done_tx, notify) = (self.done_tx.clone(), Arc::clone(&self.notify));
        let (idle, background) = (Arc::clone(&self.idle), self.background);
        // Counted idle from now: a job sent before the thread reaches its queue waits for it.
        self.idle.fetch_add(1, Ordering::AcqRel);
        let spawned = crate::cpu::spawn_helper(self.name, move || {
            run_lane(&shared, &idle, background, &done_tx, &notify);
        });
        match spawned {
            Ok(thread) => {
                self.threads.borrow_mut().push(thread);
                *self.jobs.borrow_mut() = QueueEnd::Started(weak);
            }
            Err(e) => {
                self.idle.fetch_sub(1, Ordering::AcqRel);
                error!("{} thread not started: {e}", self.name);
            }
        }
    }

    fn join(self) {
        drop(self.tx);
        for thread in self.threads.into_inner() {
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
    idle: &AtomicUsize,
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
        idle.fetch_sub(1, Ordering::AcqRel);
        let done = job.run();
        // Idle again before the result can be seen, so whoever sees it and submits the next
        // job finds this thread idle rather than starting another.
        idle.fetch_add(1, Ordering::AcqRel);
        if done_tx.send((key, done)).is_err() {
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
    /// Makes the lanes; their threads start as work arrives. `notify` is called on one of
    /// them after every finished job.
    ///
    /// # Errors
    /// None today (threads start later, and a thread that cannot start is logged and its job
    /// run inline); kept so a caller handles a worker that cannot be made.
    pub fn spawn(notify: Notify) -> io::Result<StorageWorker> {
        let (done_tx, rx) = mpsc::channel();
        let notify = Arc::new(Mutex::new(notify));
        let lane = |name, threads, background| {
            Lane::new(
                name,
                threads,
                background,
                done_tx.clone(),
                Arc::clone(&notify),
            )
        };
        Ok(StorageWorker {
            sync: Some(lane("corq-sync", SYNC_THREADS, false)),
            foreground: Some(lane("corq-storage", 1, false)),
            background: Some(lane("corq-storage-bg", 1, true)),
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
        if let Err((key, job)) = lane.send(log_key, job) {
            error!("no storage worker thread to take a job; running it inline");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sync_job() -> Job {
        let kind = JobKind::Sync {
            target: 0,
            seq: 0,
            files: Vec::new(),
            dir: None,
            background: false,
            superseded: None,
            evict: Box::default(),
        };
        Job { log_id: 0, kind }
    }

    fn threads(lane: &Option<Lane>) -> usize {
        lane.as_ref().map_or(0, |l| l.threads.borrow().len())
    }

    fn wait_for(worker: &StorageWorker, results: usize) {
        for _ in 0..results {
            loop {
                if worker.try_recv().is_some() {
                    break;
                }
                std::thread::yield_now();
            }
        }
    }

    #[test]
    fn writeback_pieces_cover_a_large_range_exactly_and_skip_a_small_one() {
        let piece = WRITEBACK_PIECE;
        let cases: [(Range<u64>, Vec<Range<u64>>); 6] = [
            (0..0, vec![]),
            (100..100 + piece, vec![]),
            // Reversed: no sync builds one, but it must start no writeback rather than wrap.
            (Range { start: 7, end: 3 }, vec![]),
            (0..piece + 1, vec![0..piece, piece..piece + 1]),
            (
                10..10 + 3 * piece,
                vec![
                    10..10 + piece,
                    10 + piece..10 + 2 * piece,
                    10 + 2 * piece..10 + 3 * piece,
                ],
            ),
            (
                u64::MAX - piece - 2..u64::MAX,
                vec![u64::MAX - piece - 2..u64::MAX - 2, u64::MAX - 2..u64::MAX],
            ),
        ];
        for (range, want) in cases {
            let got: Vec<_> = writeback_pieces(range.clone()).collect();
            assert_eq!(got, want, "{range:?}");
        }
    }

    #[test]
    fn lanes_start_threads_only_as_their_work_needs_them() {
        let worker = StorageWorker::spawn(Box::new(|| {})).unwrap();
        let started = |w: &StorageWorker| {
            [
                threads(&w.sync),
                threads(&w.foreground),
                threads(&w.background),
            ]
        };
        assert_eq!(started(&worker), [0, 0, 0], "no work, no threads");

        worker.submit(
            0,
            Job::remove_dir(PathBuf::from("/nonexistent/corq-lane-test")),
        );
        wait_for(&worker, 1);
        assert_eq!(started(&worker), [0, 0, 1]);

        // One sync at a time: the one sync thread is idle again whenever the next comes.
        for _ in 0..20 {
            worker.submit(0, sync_job());
            wait_for(&worker, 1);
        }
        assert_eq!(started(&worker)[0], 1, "sequential syncs share one thread");

        // A burst may start more, never more than the lane's limit, and every job completes.
        for _ in 0..200 {
            worker.submit(0, sync_job());
        }
        wait_for(&worker, 200);
        assert!(started(&worker)[0] <= SYNC_THREADS);
        assert_eq!(started(&worker)[1], 0, "the foreground lane had no work");
    }
}
