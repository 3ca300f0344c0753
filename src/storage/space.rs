//! Disk space of a segment: how much is allocated up front, when and by how much it grows,
//! the `posix_fallocate` call that allocates it, the allocation a growth step shares with the
//! writer, and the two helper-thread products: a [`Growth`] step of the active segment and a
//! [`PreparedSegment`] (the next one, created under a `.prealloc` name before it has a base
//! offset).
//!
//! # Growth policy
//!
//! A segment's file starts at [`INITIAL_ALLOC`] bytes (or its limit, `--max-bytes-per-file`,
//! if smaller) and grows in steps: each step doubles the allocation, adds at most
//! [`MAX_GROW_STEP`], and never goes past the limit ([`next_alloc`]). A step is due once the
//! unused allocated room ahead of the writer is below half the allocation or below
//! [`RUNWAY`] (two full steps), whichever is smaller ([`grow_due`]); the helper thread does it.
//! Why two steps at full speed: with one, a writer at ~450 MB/s filled the step in ~18 ms while
//! the helper, sharing its core with other busy threads (and then prefetching each step as
//! well, see below), sometimes needed longer to allocate the next, and the log grew inline
//! (`fallocate` on the reactor thread) ~300 times in a 10 s MPUB run; with two, 31–106 times
//! (`corqd --log-level debug` counts them). If the writer needs space the helper has not
//! allocated yet, the log grows inline (as many steps as the record needs,
//! [`alloc_covering`]).
//!
//! Why 64 KiB: a topic that holds one small message then costs 64 KiB of disk, so 1,000 such
//! topics fit in 64 MiB (the issue asked for <= 100 MiB), and a 64 KiB extent is still one
//! cheap `fallocate`. Why doubling to 8 MiB: a busy topic reaches 8 MiB steps after seven
//! steps (~8 MiB written), and an 8 MiB step is one `fallocate` on the helper while a
//! full-speed writer needs ~40 ms to fill it, so the writer keeps finding allocated blocks
//! ahead of it as it did when a whole segment was allocated at once. A growth step publishes
//! its allocation the moment its `fallocate` returns ([`SharedAllocation`]), so a writer that
//! runs out of room before the step's result reaches the loop takes it up instead of growing
//! the file itself.
//!
//! # No prefetch into the page cache
//!
//! The writer's `pwrite`s allocate their own page-cache pages. Growth steps and pre-created
//! segments once also brought their pages into the page cache with `posix_fadvise(WILLNEED)` on the
//! helper, to take page allocation off the reactor. On the 2-vCPU benchmark VM that cost more than
//! it saved: readahead of an allocated, unwritten range zeroes every page (`__pi_memset` in
//! `ext4_mpage_readpages`, a quarter of all samples in a `perf record -a` of an MPUB run, the first
//! touch of memory the hypervisor had taken back), and the `pwrite` then copies over the zeroes;
//! without it a `pwrite` touches each new page once. The helpers' CPU fell from ~580 to ~165 ticks
//! a 10 s MPUB run while the reactor's rose ~270, and that helper time had been taken from the
//! publishers on the helpers' core. Over six interleaved rounds of `benches/figures.sh regress`'s
//! three cases (`docs/benchmarks.md`, "No prefetch"): MPUB 200 ×1.04 of the build that prefetched,
//! plain PUB × 64 ×0.97, SUB of 5 M and 10-channel fan-out up, server CPU per run ~11 % lower
//! (`figures.sh regress` itself, against an older build, put MPUB where it had put the builds that
//! prefetched). The trade: where the reactor's core is the bottleneck and the helpers' cores are
//! otherwise idle, the prefetch would take work off the reactor (plain PUB × 64, reactor-bound, is
//! the case that lost); on a small box whose other cores run the publishers, it cost them more than
//! it saved the reactor.
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
/// has the time the writer takes to fill one step to allocate the next.
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

/// How far a growth step on the helper has allocated a segment's file, shared with the
/// segment's writer across threads: set once the step's `fallocate` returned, read by a writer
/// that ran out of room before the step's result arrived (instead of growing the file itself).
#[derive(Debug, Default)]
pub struct SharedAllocation {
    allocated: AtomicU64,
}

impl SharedAllocation {
    /// The file is allocated up to `to` bytes (only ever raised).
    pub fn note_allocated(&self, to: u64) {
        self.allocated.fetch_max(to, Ordering::Release);
    }

    /// How far the file is known to be allocated.
    pub fn allocated(&self) -> u64 {
        self.allocated.load(Ordering::Acquire)
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
    /// Where this step publishes its allocation early, for the segment's writer.
    pub(super) allocation: Arc<SharedAllocation>,
}

impl Growth {
    /// Allocates `[from, to)` and tells the writer so at once (its result reaches the loop a
    /// turn later). Blocks.
    pub fn run(&self, fault: Option<&AtomicBool>) -> Result<(), StorageError> {
        allocate(&self.file, self.from, self.to, fault)
            .map_err(|e| StorageError::io(&self.path, "fallocate", e))?;
        self.allocation.note_allocated(self.to);
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
    /// Creates `path` (which must not exist), allocates `size` bytes and maps `limit` bytes (the
    /// file grows under the map later). On failure the half-made file is removed. This blocks: keep
    /// it off the reactor thread.
    pub fn create(
        path: PathBuf,
        size: u64,
        limit: u64,
        fault: Option<&AtomicBool>,
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
