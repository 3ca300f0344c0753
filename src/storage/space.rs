//! Disk space of a segment: how much is allocated up front, when and by how much it grows,
//! the `posix_fallocate` call that allocates it, the prefetch that brings the new pages into
//! the page cache off the reactor thread (without mapping them into this process), the
//! positions the helper and the writer share, and the two helper-thread products: a
//! [`Growth`] step of the active segment and a [`PreparedSegment`] (the next one, created
//! under a `.prealloc` name before it has a base offset).
//!
//! # Growth policy
//!
//! A segment's file starts at [`INITIAL_ALLOC`] bytes (or its limit, `--max-bytes-per-file`,
//! if smaller) and grows in steps: each step doubles the allocation, adds at most
//! [`MAX_GROW_STEP`], and never goes past the limit ([`next_alloc`]). A step is due once the
//! unused allocated room ahead of the writer is below half the allocation or below
//! [`RUNWAY`] (two full steps), whichever is smaller ([`grow_due`]); the helper thread does it.
//! Why two steps at full speed: with one, a writer at ~450 MB/s filled the step in ~18 ms while
//! the helper, sharing its core with other busy threads, sometimes needed longer to allocate
//! and prefetch the next, and the log grew inline (`fallocate` on the reactor thread) ~300
//! times in a 10 s MPUB run; with two, 31–106 times (`corqd --log-level debug` counts them). If the
//! writer needs space the helper has not allocated yet, the log grows inline (as many steps as
//! the record needs, [`alloc_covering`]).
//!
//! Why 64 KiB: a topic that holds one small message then costs 64 KiB of disk, so 1,000 such
//! topics fit in 64 MiB (the issue asked for <= 100 MiB), and a 64 KiB extent is still one
//! cheap `fallocate`. Why doubling to 8 MiB: a busy topic reaches 8 MiB steps after seven
//! steps (~8 MiB written), and an 8 MiB step is prefetched in a few ms on the helper while a
//! full-speed writer needs ~40 ms to fill it, so the writer keeps finding allocated, cached
//! pages ahead of it as it did when a whole segment was allocated at once.
//!
//! A growth step publishes its allocation the moment its `fallocate` returns, before its
//! prefetch, and the prefetch follows the writer (it skips what the writer has written and
//! stops once the next step is due); a pre-created segment's prefetch stops when the active
//! segment is about to fill ([`SharedPositions`], [`WriterWatch`]). So a prefetch that cannot
//! keep up (it yields its core to anything else runnable, see [`prefetch_range`]) only leaves
//! page allocations to the writer's `pwrite`s, never an `fallocate` or a file creation.
//!
//! Space is always allocated for real (never a sparse file): a full disk fails the
//! `fallocate` (a failed publish), never a later store into the map (SIGBUS).

use super::segment::map_len;
use super::StorageError;
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes allocated when a segment is created (less if its limit is smaller).
pub const INITIAL_ALLOC: u64 = 64 * 1024;
/// The largest single growth step.
pub const MAX_GROW_STEP: u64 = 8 * 1024 * 1024;
/// The room a busy segment keeps allocated ahead of its writer: two full steps, so the helper
/// has the time the writer takes to fill one step to allocate and prefetch the next.
pub const RUNWAY: u64 = 2 * MAX_GROW_STEP;

/// The first allocation of a segment whose size limit is `limit`.
pub fn initial_alloc(limit: u64) -> u64 {
    INITIAL_ALLOC.min(limit)
}

/// The allocation after one growth step from `allocated` for a segment of at most `limit`
/// bytes: doubling (at least [`INITIAL_ALLOC`] more), at most [`MAX_GROW_STEP`] more, never
/// past `limit`. `None` when the segment is already allocated to its limit.
pub fn next_alloc(allocated: u64, limit: u64) -> Option<u64> {
    if allocated >= limit {
        return None;
    }
    let step = allocated.clamp(INITIAL_ALLOC, MAX_GROW_STEP);
    Some(allocated.checked_add(step).map_or(limit, |n| n.min(limit)))
}

/// The smallest allocation reached by whole growth steps from `allocated` that covers `need`
/// bytes; `None` if `need` is past `limit` (the record does not fit this segment).
pub fn alloc_covering(allocated: u64, need: u64, limit: u64) -> Option<u64> {
    if need > limit {
        return None;
    }
    let mut at = allocated;
    while at < need {
        if at >= MAX_GROW_STEP {
            // Fixed-size steps from here: jump (a loop would take 2^41 turns near u64::MAX).
            let steps = (need - at).div_ceil(MAX_GROW_STEP);
            let end = steps
                .checked_mul(MAX_GROW_STEP)
                .and_then(|b| at.checked_add(b));
            return Some(end.map_or(limit, |e| e.min(limit)));
        }
        // cannot be None: at < need <= limit.
        at = next_alloc(at, limit)?;
    }
    Some(at)
}

/// Whether the helper should grow a segment that has `allocated` bytes, `used` of them
/// written: the room left is below half the allocation or below [`RUNWAY`].
pub fn grow_due(allocated: u64, used: u64, limit: u64) -> bool {
    let room = allocated.saturating_sub(used);
    allocated < limit && room < (allocated / 2).min(RUNWAY)
}

/// The size of a segment pre-created while the active one has `active_alloc` bytes
/// allocated: proportional to how far the active segment grew (a busy topic gets a full
/// [`MAX_GROW_STEP`], a quiet one [`INITIAL_ALLOC`]), never past `limit`.
pub fn precreate_size(active_alloc: u64, limit: u64) -> u64 {
    active_alloc.clamp(INITIAL_ALLOC, MAX_GROW_STEP).min(limit)
}

/// Whether the next segment should be pre-created: the active one is 7/8 of its limit used.
/// Before that, a spare file would only hold disk space a quiet topic may never need.
pub fn precreate_due(used: u64, limit: u64) -> bool {
    used.saturating_mul(8) >= limit.saturating_mul(7)
}

/// Allocates real blocks for bytes `[from, to)` of `file` (the file's length becomes at least
/// `to`). `fault` is the test seam: when set, the call fails with ENOSPC as a full disk would.
pub fn allocate(file: &File, from: u64, to: u64, fault: Option<&AtomicBool>) -> io::Result<()> {
    if fault.is_some_and(|f| f.load(Ordering::Relaxed)) {
        return Err(io::Error::from_raw_os_error(libc::ENOSPC));
    }
    if to <= from {
        return Ok(());
    }
    let efbig = || io::Error::from_raw_os_error(libc::EFBIG);
    let off = libc::off_t::try_from(from).map_err(|_| efbig())?;
    let len = libc::off_t::try_from(to - from).map_err(|_| efbig())?;
    // SAFETY: plain syscall on an fd we own; no memory is passed.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), off, len) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Bytes asked for per `posix_fadvise(WILLNEED)` call while prefetching. Why chunks: the kernel
/// caps one WILLNEED request at the device's readahead size (`max(io_pages, ra_pages)`, often
/// 128 KiB), silently dropping the rest of a longer range; 128 KiB is also the ~0.2–0.5 ms of
/// kernel work (allocating and zeroing 32 pages) after which the helper yields (see
/// [`prefetch_range`]). 32 KiB calls cut what a woken thread waits for but cost the server
/// 13 % more CPU per message in an MPUB run, for 10 % lower OK p99 (6 interleaved rounds).
const PREFETCH_CHUNK: u64 = 128 * 1024;

/// The two positions a growth step and the segment's writer tell each other across threads,
/// so that neither waits for the step's whole prefetch: how far the helper has allocated the
/// file (set once its `fallocate` returned, read by a writer that ran out of room before the
/// step's result arrived, instead of growing the file itself) and how far the writer has
/// written (set after every `pwrite`, read by the prefetch to skip the pages the writer has
/// already filled, so a prefetch that fell behind catches up at once rather than prefetching
/// the writer's own pages or locking the pages it is about to write).
#[derive(Debug, Default)]
pub struct SharedPositions {
    allocated: AtomicU64,
    written: AtomicU64,
}

impl SharedPositions {
    /// The file is allocated up to `to` bytes (only ever raised).
    pub fn note_allocated(&self, to: u64) {
        self.allocated.fetch_max(to, Ordering::Release);
    }

    /// How far the file is known to be allocated.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
    }

    /// Everything below `pos` is written (one relaxed store per `pwrite`; the prefetch only
    /// uses it as a hint).
    pub fn note_written(&self, pos: u64) {
        self.written.store(pos, Ordering::Relaxed);
    }

    fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// Room the active segment still has when a pre-created segment's prefetch gives up: the
/// segment must reach the reactor (one loop turn later) before the writer needs it, or the
/// reactor creates one itself. ~4 ms of a full-speed writer. At most a sixteenth of the
/// segment's limit, so that a small segment (pre-created when an eighth of it is left) is
/// still prefetched for the first half of that eighth.
const READY_MARGIN: u64 = 2 * 1024 * 1024;

/// A segment's writer as a helper sees it: the positions it shares and its size limit.
#[derive(Debug, Clone)]
pub struct WriterWatch {
    pub(super) positions: Arc<SharedPositions>,
    pub(super) limit: u64,
}

impl WriterWatch {
    /// Whether the writer is about to fill its segment and need the next one.
    fn near_its_limit(&self) -> bool {
        let margin = READY_MARGIN.min(self.limit / 16);
        self.limit.saturating_sub(self.positions.written()) < margin
    }
}

/// Brings bytes `[from, to)` of `file` into the page cache with `posix_fadvise(WILLNEED)`, so
/// the kernel allocates and zeroes those page-cache pages here (on the helper thread) rather
/// than inside the reactor's `pwrite`s, which then only copy into them. The allocated but
/// unwritten blocks are read as zeros without disk I/O. Before each chunk `next(at)` says
/// where to go on from `at`, or `None` to stop (a growth step follows its writer with it: see
/// [`Growth::run`]).
///
/// Why not touch the pages through the map, as this once did: every page touched stayed
/// mapped in this process, so its resident set grew with everything ever written (3.6 GB
/// through a 10 s PUB run). The page cache holds the pages either way; only mapping them
/// costs resident memory. (Nothing is dirtied: a sync still writes back just what appends
/// wrote.) The caller guarantees `to` is within the file (allocated).
///
/// Why chunks and a yield after every one, even when `--cpu` gave the helpers cores of their
/// own: this walk is the helper's only long CPU-bound work, and whatever shares its core (the
/// reactor without `--cpu`; with it, the publishers of a small box, such as a benchmark's
/// generator) would otherwise wait for it. EEVDF lets a running task finish its slice before a
/// woken one of the same priority gets the core, and a `PREEMPT_NONE` kernel does not
/// interrupt one long call at all; a yield between requests hands the core over at once.
/// Measured (`corq bench pub --batch 200 --connections 4`, corqd `--cpu 0`, the generator on
/// core 1 with the helpers; `perf sched record`): without the yield the generator waited up
/// to 1.4 ms (p99) for its core after each OK, MPUB's OK p99 was 2.2–2.6 ms and the rate
/// 0.86–0.95 of `e81d400`'s; with it (and the following below) 0.2 ms, 0.8–1.1 ms and 1.04
/// (`docs/benchmarks.md`, "The helper gives way"). A prefetch that yields can fall behind a fast
/// writer; that costs only the page allocations the writer's `pwrite`s then make themselves,
/// because a step's allocation is published before its prefetch starts
/// ([`SharedPositions`]). Advice failing (or being a no-op, as on tmpfs, where `fallocate`
/// already made the pages) is harmless: the `pwrite` makes the pages itself.
pub fn prefetch_range(file: &File, from: u64, to: u64, next: impl FnMut(u64) -> Option<u64>) {
    in_yielding_pieces(from, to, PREFETCH_CHUNK, next, |off, n| {
        // SAFETY: plain syscall on an fd we own; no memory is passed.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED) };
    });
}

/// Walks `[from, to)` in pieces of at most `piece` bytes, calling `call(offset, len)` for each
/// and yielding the core after it (see [`prefetch_range`] for why); before each piece `next(at)`
/// says where to go on from `at`, or `None` to stop. The helpers' long kernel work (a
/// prefetch, a sync's writeback) goes through here so that it comes in short system calls.
pub(super) fn in_yielding_pieces(
    from: u64,
    to: u64,
    piece: u64,
    mut next: impl FnMut(u64) -> Option<u64>,
    mut call: impl FnMut(libc::off_t, libc::off_t),
) {
    let mut at = from;
    while let Some(start) = next(at).filter(|&start| start < to) {
        at = start;
        let len = (to - at).min(piece);
        if let (Ok(off), Ok(n)) = (libc::off_t::try_from(at), libc::off_t::try_from(len)) {
            call(off, n);
        }
        at += len;
        std::thread::yield_now();
    }
}

/// One growth step of a segment's file, made on the reactor and run on the helper thread: see
/// [`Segment::grow_target`].
#[derive(Debug)]
pub struct Growth {
    /// The segment's base offset (which segment the result is for).
    pub base: u64,
    pub(super) path: PathBuf,
    pub(super) file: Arc<File>,
    pub(super) from: u64,
    /// The new allocated length.
    pub to: u64,
    /// The segment's writer: where this step publishes its allocation early, and where the
    /// writer is (see [`SharedPositions`]).
    pub(super) writer: WriterWatch,
}

impl Growth {
    /// Allocates `[from, to)`, tells the writer so at once, and prefetches those pages into
    /// the page cache (only after the allocation succeeded: readahead past the end of the file
    /// would do nothing). Blocks.
    ///
    /// The prefetch follows the writer: it skips the pages the writer reached meanwhile, and
    /// it stops once the next step is due, leaving the rest to the writer's `pwrite`s. Why
    /// stop: the next step runs on this thread after this one, and a prefetch that yields its
    /// core to busy publishers can take longer than the writer takes to use up the runway; the
    /// writer would then grow the file inline, on the reactor. Measured (`corq bench pub
    /// --batch 200`, 10 s runs, `corqd --log-level debug`): inline growths a run 550–665 with
    /// a yielding prefetch that runs to the end, 135–183 with the skip alone, 4 with the stop
    /// as well, all in the first 11 ms (the doubling from 64 KiB); 50–77 before prefetches
    /// yielded.
    pub fn run(&self, fault: Option<&AtomicBool>) -> Result<(), StorageError> {
        allocate(&self.file, self.from, self.to, fault)
            .map_err(|e| StorageError::io(&self.path, "fallocate", e))?;
        let writer = &self.writer;
        writer.positions.note_allocated(self.to);
        prefetch_range(&self.file, self.from, self.to, |at| {
            let written = writer.positions.written();
            (!grow_due(self.to, written, writer.limit)).then_some(at.max(written))
        });
        Ok(())
    }
}

/// Extends a file's allocation from `*allocated` to `to` bytes on the calling thread (an
/// inline growth, or growing a pre-created segment before use).
pub(super) fn grow_file(
    file: &File,
    path: &Path,
    allocated: &mut usize,
    to: usize,
    fault: Option<&AtomicBool>,
) -> Result<(), StorageError> {
    if to <= *allocated {
        return Ok(());
    }
    allocate(file, *allocated as u64, to as u64, fault)
        .map_err(|e| StorageError::io(path, "fallocate", e))?;
    *allocated = to;
    Ok(())
}

/// The allocation that holds `need` bytes, by whole growth steps from `allocated`, within a
/// segment of `limit` bytes; `None` if `need` is past the limit.
pub(super) fn covering(allocated: usize, need: usize, limit: usize) -> Option<usize> {
    let at = alloc_covering(allocated as u64, need as u64, limit as u64)?;
    // cannot truncate: at <= limit, a usize.
    Some(at as usize)
}

/// A created, allocated and mapped file that has no base offset yet.
#[derive(Debug)]
pub struct PreparedSegment {
    /// Its temporary (`.prealloc`) path.
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// Mapped at the segment's limit; only `[0, allocated)` is backed by the file.
    pub(super) map: MmapMut,
    pub(super) allocated: usize,
}

impl PreparedSegment {
    /// Creates `path` (which must not exist), allocates `size` bytes, maps `limit` bytes (the
    /// file grows under the map later) and, given the active segment's writer (on the helper
    /// thread), prefetches the allocated pages into the page cache until that writer nears its
    /// segment's end, so the new segment is ready in time even when the prefetch cannot finish
    /// (the writer's `pwrite`s make the rest). An inline fallback passes `None` and skips it:
    /// prefetching there would only turn page allocations spread over many `pwrite`s into one
    /// long stall.
    /// On failure the half-made file is removed. This blocks: keep it off the reactor thread.
    pub fn create(
        path: PathBuf,
        size: u64,
        limit: u64,
        fault: Option<&AtomicBool>,
        prefetch_for: Option<&WriterWatch>,
    ) -> Result<Self, StorageError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StorageError::io(&path, "create", e))?;
        let size = size.min(limit);
        let too_big = || StorageError::Config(format!("segment size {limit} exceeds memory"));
        let made = usize::try_from(limit)
            .map_err(|_| too_big())
            .and_then(|len| {
                allocate(&file, 0, size, fault)
                    .map_err(|e| StorageError::io(&path, "fallocate", e))?;
                map_len(&file, &path, Some(len))
            });
        match made {
            Ok(map) => {
                // cannot truncate: size <= limit, which fits a usize (checked above).
                let allocated = size as usize;
                if let Some(active) = prefetch_for {
                    prefetch_range(&file, 0, size, |at| {
                        (!active.near_its_limit()).then_some(at)
                    });
                }
                Ok(PreparedSegment {
                    path,
                    file,
                    map,
                    allocated,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Bytes allocated.
    pub fn len(&self) -> usize {
        self.allocated
    }

    /// Extends the allocation, by whole growth steps, to hold `need` bytes (a batch that will
    /// fill this segment): on the calling thread.
    pub fn reserve(&mut self, need: usize, fault: Option<&AtomicBool>) -> Result<(), StorageError> {
        let to = covering(self.allocated, need, self.map.len()).unwrap_or(self.map.len());
        grow_file(&self.file, &self.path, &mut self.allocated, to, fault)
    }

    /// Unmaps and removes the file (a result that arrived for a log that is gone).
    pub fn discard(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn steps_double_from_the_initial_allocation_up_to_the_cap() {
        let limit = 100 * MIB;
        let mut at = initial_alloc(limit);
        assert_eq!(at, 64 * 1024);
        let mut steps = Vec::new();
        while let Some(next) = next_alloc(at, limit) {
            assert!(next > at && next <= limit, "{at} -> {next}");
            assert!(next - at <= MAX_GROW_STEP);
            steps.push(next - at);
            at = next;
        }
        assert_eq!(at, limit, "growth ends exactly at the limit");
        // 64K, 128K, ... 4M (doubling), then 8 MiB steps, the last one cut at the limit.
        let doubling: Vec<u64> = (0..7).map(|i| (64 * 1024) << i).collect();
        assert_eq!(steps[..7], doubling[..]);
        assert!(steps[7..steps.len() - 1]
            .iter()
            .all(|&s| s == MAX_GROW_STEP));
        assert_eq!(steps.iter().sum::<u64>() + INITIAL_ALLOC, limit);
    }

    #[test]
    fn small_limits_and_odd_sizes_never_go_past_the_limit() {
        assert_eq!(initial_alloc(4096), 4096);
        assert_eq!(next_alloc(4096, 4096), None);
        assert_eq!(next_alloc(64 * 1024, 100_000), Some(100_000));
        assert_eq!(next_alloc(100_001, 100_000), None);
        // A file shorter than a step (e.g. recovered) grows by at least INITIAL_ALLOC.
        assert_eq!(next_alloc(100, MIB), Some(100 + INITIAL_ALLOC));
        assert_eq!(next_alloc(0, MIB), Some(INITIAL_ALLOC));
        // Checked arithmetic at the top of the range: saturates to the limit.
        assert_eq!(next_alloc(u64::MAX - 10, u64::MAX), Some(u64::MAX));
        assert_eq!(next_alloc(u64::MAX, u64::MAX), None);
    }

    #[test]
    fn covering_allocation_takes_whole_steps_and_refuses_past_the_limit() {
        let limit = 100 * MIB;
        assert_eq!(
            alloc_covering(INITIAL_ALLOC, 1000, limit),
            Some(INITIAL_ALLOC)
        );
        assert_eq!(
            alloc_covering(INITIAL_ALLOC, INITIAL_ALLOC + 1, limit),
            Some(2 * INITIAL_ALLOC)
        );
        assert_eq!(
            alloc_covering(INITIAL_ALLOC, 300 * 1024, limit),
            Some(512 * 1024)
        );
        assert_eq!(alloc_covering(INITIAL_ALLOC, limit, limit), Some(limit));
        assert_eq!(alloc_covering(INITIAL_ALLOC, limit + 1, limit), None);
        assert_eq!(alloc_covering(0, u64::MAX, u64::MAX), Some(u64::MAX));
        // Past 8 MiB the steps are fixed: 20 MiB + 1 from 8 MiB takes two steps, to 24 MiB.
        assert_eq!(
            alloc_covering(MAX_GROW_STEP, 20 * MIB + 1, limit),
            Some(24 * MIB)
        );
        assert_eq!(alloc_covering(99 * MIB, 100 * MIB, limit), Some(limit));
        // Agrees with stepping one by one.
        for need in [1, 70_000, 5 * MIB + 3, 17 * MIB, 99 * MIB + 1] {
            let mut at = INITIAL_ALLOC;
            while at < need {
                at = next_alloc(at, limit).unwrap();
            }
            assert_eq!(
                alloc_covering(INITIAL_ALLOC, need, limit),
                Some(at),
                "{need}"
            );
        }
    }

    #[test]
    fn growth_is_due_when_the_room_ahead_runs_low() {
        let limit = 100 * MIB;
        // A topic with one small message never grows.
        assert!(!grow_due(INITIAL_ALLOC, 200, limit));
        assert!(!grow_due(INITIAL_ALLOC, INITIAL_ALLOC / 2, limit));
        assert!(grow_due(INITIAL_ALLOC, INITIAL_ALLOC / 2 + 1, limit));
        // Large allocations keep two full steps of room ahead; an 8 MiB one half of it.
        assert!(!grow_due(40 * MIB, 24 * MIB, limit));
        assert!(grow_due(40 * MIB, 24 * MIB + 1, limit));
        assert!(!grow_due(8 * MIB, 4 * MIB, limit));
        assert!(grow_due(8 * MIB, 4 * MIB + 1, limit));
        // Never past the limit, and no underflow when used exceeds allocated.
        assert!(!grow_due(limit, limit, limit));
        assert!(grow_due(MIB, 2 * MIB, limit));
    }

    #[test]
    fn prefetching_fills_the_page_cache_without_mapping_pages() {
        let tmp = crate::storage::testutil::TempDir::new("prefetch");
        let path = tmp.path().join("00000000000000000001.prealloc");
        let size = 4 * MIB as usize;
        let far_from_its_end = WriterWatch {
            positions: Arc::default(),
            limit: 100 * MIB,
        };
        let prep =
            PreparedSegment::create(path, size as u64, 16 * MIB, None, Some(&far_from_its_end))
                .unwrap();
        let start = prep.map.as_ptr();
        let resident = crate::storage::testutil::resident_bytes_at(start as usize);
        assert_eq!(resident, 0, "prefetching mapped pages into the process");
        // mincore on a file mapping answers from the page cache, mapped or not.
        let mut cached = vec![0u8; size / 4096];
        // SAFETY: `[start, start + size)` is inside the map; `cached` has a byte per 4 KiB page.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, size, cached.as_mut_ptr()) };
        assert_eq!(rc, 0);
        let in_cache = cached.iter().filter(|&&b| b & 1 == 1).count();
        assert!(
            in_cache * 10 >= cached.len() * 9,
            "{in_cache} of {} pages in the page cache",
            cached.len()
        );
    }

    #[test]
    fn a_prefetch_goes_where_its_guide_says_and_stops_when_told() {
        let tmp = crate::storage::testutil::TempDir::new("prefetch-guide");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp.path().join("f"))
            .unwrap();
        allocate(&file, 0, MIB, None).unwrap();
        // Followed to the end: one call per chunk, then one that finds nothing left.
        let mut seen = Vec::new();
        prefetch_range(&file, 0, MIB, |at| {
            seen.push(at);
            Some(at)
        });
        assert_eq!(seen.len() as u64, MIB / PREFETCH_CHUNK + 1);
        assert_eq!(seen.last(), Some(&MIB));
        // A writer that jumped ahead moves the next chunk; `None` stops the walk.
        let mut seen = Vec::new();
        prefetch_range(&file, 0, MIB, |at| {
            seen.push(at);
            match seen.len() {
                1 => Some(at),
                2 => Some(at + 512 * 1024),
                _ => None,
            }
        });
        let chunk = PREFETCH_CHUNK;
        assert_eq!(seen, [0, chunk, chunk + 512 * 1024 + chunk]);
    }

    #[test]
    fn a_pre_created_segment_is_prefetched_only_while_the_active_one_has_room() {
        let active = WriterWatch {
            positions: Arc::default(),
            limit: 100 * MIB,
        };
        assert!(!active.near_its_limit());
        active.positions.note_written(100 * MIB - READY_MARGIN);
        assert!(!active.near_its_limit());
        active.positions.note_written(100 * MIB - READY_MARGIN + 1);
        assert!(active.near_its_limit());
        active.positions.note_written(200 * MIB);
        assert!(active.near_its_limit(), "no underflow past the limit");
        // A 4 MiB segment, pre-created with 512 KiB left, is prefetched until 256 KiB are.
        let small = WriterWatch {
            positions: Arc::default(),
            limit: 4 * MIB,
        };
        small.positions.note_written(4 * MIB - MIB / 2);
        assert!(!small.near_its_limit());
        small.positions.note_written(4 * MIB - MIB / 4 + 1);
        assert!(small.near_its_limit());
    }

    #[test]
    fn precreation_is_proportional_and_only_near_full() {
        let limit = 100 * MIB;
        assert!(
            !precreate_due(limit / 8, limit),
            "no spare file at 1/8 any more"
        );
        assert!(!precreate_due(limit / 8 * 7 - 1, limit));
        assert!(precreate_due(limit / 8 * 7, limit));
        assert_eq!(precreate_size(INITIAL_ALLOC, limit), INITIAL_ALLOC);
        assert_eq!(precreate_size(90 * MIB, limit), MAX_GROW_STEP);
        assert_eq!(precreate_size(3 * MIB, limit), 3 * MIB);
        assert_eq!(precreate_size(INITIAL_ALLOC, 4096), 4096);
        assert!(
            precreate_due(u64::MAX, u64::MAX),
            "saturating, not wrapping"
        );
    }
}
