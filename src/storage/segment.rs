//! One segment file: its header, its name, its allocation, appends (buffered, written with
//! `pwrite`) and reads (through its map).
//!
//! # Segment header layout (little-endian, 32 bytes)
//!
//! | offset | size | field          | meaning                                        |
//! |-------:|-----:|----------------|------------------------------------------------|
//! |      0 |    8 | magic          | `b"CORQLOG\0"`                                 |
//! |      8 |    4 | version u32    | `1`                                            |
//! |     12 |    4 | reserved u32   | `0`                                            |
//! |     16 |    8 | base u64       | offset of the first record (= the file name)   |
//! |     24 |    4 | crc u32        | CRC-32 (IEEE) of bytes `[0, 24)`                |
//! |     28 |    4 | reserved u32   | `0`; pads the header so records start 8-aligned |
//!
//! Format: `{ magic | version | 0 | base | crc | 0 }`, then records (see `record.rs`) from
//! byte 32, then zeros to the end of the file.
//!
//! # Names
//!
//! A segment is `{base:020}.log` (20 digits hold any u64, and zero-padding makes names sort
//! by offset). A segment being pre-created has no base yet: it is `{seq:020}.prealloc` until
//! it is installed (header written, renamed). Leftover `.prealloc` files are deleted on open.
//!
//! # Allocation
//!
//! A segment is mapped once at its size limit (`--max-bytes-per-file`) while its file starts
//! at 64 KiB and grows on demand (the policy and its arithmetic are in `space.rs`): by a
//! helper-thread [`Growth`] step ahead of the writer, or inline by [`Segment::reserve`] when the
//! writer needs room first. Mapping past the end of a file is allowed; touching a page past it is a
//! SIGBUS, so nothing does: reads stay below the written position (inside the file), and appends
//! write with `pwrite`, not through the map. Every byte is allocated for real with
//! `posix_fallocate`: a full disk fails an allocation (an `E_PUB_FAILED` for the publish that
//! needed it, nothing half-appended), never a later access, and a read through the map never meets
//! a hole. A pre-created segment (`.prealloc`) starts with one growth step's worth.

use super::record::{self, Corrupt};
use super::space;
use super::{NewRecord, Record, StorageError};
use memmap2::{MmapMut, MmapOptions};
use std::cell::Cell;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Magic at the start of every segment.
pub const SEGMENT_MAGIC: [u8; 8] = *b"CORQLOG\0";
/// Current format version.
pub const SEGMENT_VERSION: u32 = 1;
/// Header size; records start here.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Position of the version field.
pub const VERSION_AT: usize = 8;
/// Position of the base offset.
pub const BASE_AT: usize = 16;
/// Position of the header CRC (which covers `[0, HEADER_CRC_AT)`).
pub const HEADER_CRC_AT: usize = 24;
/// Digits in a segment file name.
pub const FILE_NAME_DIGITS: usize = 20;
/// Suffix of an installed segment.
pub const SEGMENT_SUFFIX: &str = ".log";
/// Suffix of a pre-created, not yet installed segment.
pub const PREALLOC_SUFFIX: &str = ".prealloc";

/// `{base:020}.log`.
pub fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

/// Parses `{20 digits}{suffix}`; `None` for anything else (never panics on odd names).
pub fn parse_file_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != FILE_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The 32 header bytes for a segment starting at `base`.
pub fn encode_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[..VERSION_AT].copy_from_slice(&SEGMENT_MAGIC);
    h[VERSION_AT..VERSION_AT + 4].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[BASE_AT..BASE_AT + 8].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&h[..HEADER_CRC_AT]);
    h[HEADER_CRC_AT..HEADER_CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment's first bytes say.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A valid header with this base offset.
    Valid(u64),
    /// All zeros (or a file shorter than a header): the header never reached the disk.
    Missing,
    /// Non-zero garbage.
    Invalid(&'static str),
}

/// Validates a header. Never panics.
pub fn decode_header(buf: &[u8]) -> Header {
    let Some(h) = buf.get(..SEGMENT_HEADER_LEN) else {
        return if buf.iter().all(|&b| b == 0) {
            Header::Missing
        } else {
            Header::Invalid("truncated header")
        };
    };
    if h.iter().all(|&b| b == 0) {
        return Header::Missing;
    }
    if h[..VERSION_AT] != SEGMENT_MAGIC {
        return Header::Invalid("bad magic");
    }
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if crc != crc32fast::hash(&h[..HEADER_CRC_AT]) {
        return Header::Invalid("header crc mismatch");
    }
    if h[VERSION_AT..VERSION_AT + 4] != SEGMENT_VERSION.to_le_bytes() {
        return Header::Invalid("unsupported format version");
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[BASE_AT..BASE_AT + 8]);
    Header::Valid(u64::from_le_bytes(b))
}

pub use super::space::{allocate, Growth, PreparedSegment};
use super::space::{covering, grow_file};

/// Maps `len` bytes of `file` (its whole length when `None`), with readahead off. The map may
/// be longer than the file: a segment is mapped once at its size limit and its file grows under
/// the map (only touching a page past the end of the file faults, and nothing reads past the
/// written position, which is always inside the file). Appends never store through the map
/// (see [`Segment`]); only recovery writes through it (a rewritten header, a zeroed cut tail).
pub fn map_len(file: &File, path: &Path, len: Option<usize>) -> Result<MmapMut, StorageError> {
    let mut opts = MmapOptions::new();
    if let Some(len) = len {
        opts.len(len);
    }
    // SAFETY: the file belongs to this log's directory, which this process owns exclusively; it
    // is never truncated while mapped (we only fallocate, which does not shrink), and no read
    // goes past the written position, which is below the file's length.
    let map = unsafe { opts.map_mut(file) }.map_err(|e| StorageError::io(path, "mmap", e))?;
    // Why MADV_RANDOM: a first touch of a not-yet-cached page of a fresh (unwritten) segment
    // otherwise triggers readahead, and the kernel zeroes the whole readahead window (up to
    // 8 MiB) inside that one fault: a stall of many milliseconds for whichever thread touched
    // it. With readahead off each fault zeroes one page. Reads do not need readahead either: the
    // log is mostly read right behind the writer (pages the writer just filled), and recovery
    // turns it on for its scan. A failed advice is harmless.
    let _ = map.advise(memmap2::Advice::Random);
    Ok(map)
}

/// Maps the whole of `file` (recovery: every byte of it is scanned).
pub fn map(file: &File, path: &Path) -> Result<MmapMut, StorageError> {
    map_len(file, path, None)
}

/// One mapped segment with its in-memory index and its unwritten tail.
///
/// # How bytes reach the file
/// Appends are encoded into `pending`, a buffer owned by the segment, and reach the file with
/// one `pwrite` per [`Segment::flush`] (the log flushes once per loop turn, before any reply
/// leaves, and whenever `pending` grows past [`FLUSH_AT`]). The map is only ever read. Why not
/// store through the map: every first store into a page of a shared file mapping is a
/// write-protect fault (`page_mkwrite`), a fresh page is zeroed just to be overwritten, and
/// writeback has to write-protect each dirty mapped page again (a TLB shootdown per page).
/// Measured in the fan-out run those were a quarter of the reactor's time; a `pwrite` copies
/// into the page cache with none of them. Reads see both halves: a record below `flushed` is
/// read from the map (the page cache is coherent with `pwrite`), one above it from `pending`.
///
/// # Space
/// The map covers the segment's whole size limit (`capacity()`) from the start; the file behind it
/// is allocated only up to `allocated` and grows (see `space.rs`): by a helper-thread job ahead of
/// the writer ([`Segment::grow_target`], [`Segment::note_allocated`], or taken up from the job's
/// published allocation before its result arrives), or inline when a record needs room the helper
/// has not made yet ([`Segment::reserve`]). Every byte below `write_pos` is allocated, and nothing
/// reads at or past `write_pos`, so no access ever touches a page past the end of the file.
///
/// # Invariants
/// `index[i]` is the byte position of the record with offset `base + i`, or [`LOST`] if
/// recovery found that offset's record destroyed; positions are increasing, 8-aligned, and
/// `< write_pos <= map.len()`; `write_pos` is 8-aligned, and
/// `flushed() <= allocated` (a recovered file cut inside its last record's padding may end
/// up to 7 bytes short of `write_pos` until the next append allocates; those bytes lie on the
/// file's last, partly backed page, which reads as zeros: no SIGBUS). `pending` is the
/// segment's last bytes, `[flushed(), write_pos)` with `flushed() = write_pos - pending.len()`;
/// everything before `flushed()` is in the file, and no record straddles it.
///
/// # Resident pages
/// A read through the map faults its page into this process (its resident set); nothing else maps
/// pages (appends `pwrite`). The log releases the pages behind every reader
/// ([`Segment::release_below`], [`Segment::release_all`]) with `MADV_DONTNEED`, which on a shared
/// file mapping only drops this process's page-table entries: the page cache keeps the bytes (dirty
/// ones stay dirty), and a later read of a released record (a requeue from far behind, a peek)
/// faults the same bytes back in. Such reads are noted (`refaulted_from`) so a [`Segment::sweep`]
/// can release those pages again. `released` only grows.
#[derive(Debug)]
pub struct Segment {
    /// For messages and for `delete`.
    pub path: PathBuf,
    /// Shared with sync and growth jobs, which fsync or fallocate it on the helper thread.
    pub file: Arc<File>,
    /// Only read (see "How bytes reach the file"); its pages behind every reader are released
    /// again (see "Resident pages").
    map: MmapMut,
    /// Bytes of the file allocated (its length): the part of the map that may be touched.
    allocated: usize,
    /// Shared with this segment's growth jobs: the allocation a running step has made so far
    /// (see [`space::SharedAllocation`]).
    helper_allocation: Arc<space::SharedAllocation>,
    /// Offset of the first record (from the header / the name).
    pub base: u64,
    /// Offset -> byte position; rebuilt by recovery, so `read` is O(1).
    index: Vec<u32>,
    /// Next free byte (end of the last record, padding included).
    write_pos: usize,
    /// Encoded records (or a new segment's header) not yet written to the file: the last
    /// `pending.len()` bytes before `write_pos`.
    pending: Vec<u8>,
    /// Whether anything was appended since the last [`Segment::release_idle_buffer`].
    appended_lately: bool,
    /// Byte position below which this process's pages of the map were released
    /// (`MADV_DONTNEED`); a multiple of the page size (or the end of the map).
    released: usize,
    /// The lowest map position read below `released` since the last [`Segment::sweep`]
    /// (`usize::MAX` if none): that read faulted a released page back in. A `Cell` because
    /// reads take `&self`; one compare per read keeps it.
    refaulted_from: Cell<usize>,
}

/// Index entry of an offset whose record recovery could not locate (damaged bytes were
/// skipped): reads of it are `None` (`NotFound`). Never a real position: those are 8-aligned.
pub const LOST: u32 = u32::MAX;

/// Pages of the map are released in aligned steps of this many bytes behind the readers: a
/// handful of `madvise` calls per GiB read, and at most this much (plus the readers' spread)
/// stays mapped behind the slowest reader.
pub const RELEASE_STEP: usize = 4 * 1024 * 1024;

/// The system's page size (`madvise` needs page-aligned starts). [`RELEASE_STEP`] is a
/// multiple of every page size Linux uses up to 4 MiB.
fn page_size() -> usize {
    static PAGE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory effects.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    })
}

/// Drops this process's page-table entries for `range` of `map` (`MADV_DONTNEED`), clamped to
/// the map. `range.start` must be page-aligned (callers round it). A failure is harmless: the
/// pages only stay resident.
fn dont_need(map: &MmapMut, range: Range<usize>) {
    let end = range.end.min(map.len());
    if range.start >= end {
        return;
    }
    // SAFETY: `[start, end)` lies inside the mapping and `start` is page-aligned (the map
    // starts on a page). On a MAP_SHARED file mapping MADV_DONTNEED only unmaps the pages from
    // this process: their bytes stay in the page cache (a dirty page stays dirty and is
    // written back as usual), and the next access faults the very same bytes back in, so any
    // slice of the map still reads what it read before. Nothing Rust owns is freed.
    unsafe {
        libc::madvise(
            map.as_ptr().add(range.start) as *mut libc::c_void,
            end - range.start,
            libc::MADV_DONTNEED,
        );
    }
}

/// Pending bytes past which the log flushes a segment at once rather than at the end of the
/// loop turn: bounds the buffer (and the size of one `pwrite`) under an MPUB flood.
pub const FLUSH_AT: usize = 256 * 1024;

impl Segment {
    /// Wraps an existing, recovered file, mapped whole (its allocation is its length).
    pub fn from_parts(
        path: PathBuf,
        file: File,
        map: MmapMut,
        base: u64,
        index: Vec<u32>,
        write_pos: usize,
    ) -> Self {
        // A file cut inside the last record's padding ends unaligned; appends continue at the
        // aligned position (the next append allocates up to it first).
        let write_pos = record::align_up(write_pos).unwrap_or(write_pos);
        Segment {
            path,
            file: Arc::new(file),
            allocated: map.len(),
            helper_allocation: Arc::default(),
            map,
            base,
            index,
            write_pos,
            pending: Vec::new(),
            appended_lately: false,
            released: 0,
            refaulted_from: Cell::new(usize::MAX),
        }
    }

    /// Turns a prepared file into the segment starting at `base`: rename to its final name,
    /// header queued as its first pending bytes (written by the first flush, so a crash before
    /// it leaves a zeroed header, which recovery rewrites from the name). The rename is
    /// metadata only (no fsync here; the next sync covers the dir). `buf` becomes the pending
    /// buffer (the previous active segment's, emptied by its last flush: no allocation per roll).
    pub fn install(
        prep: PreparedSegment,
        dir: &Path,
        base: u64,
        mut buf: Vec<u8>,
    ) -> Result<Self, StorageError> {
        let PreparedSegment {
            path: tmp,
            file,
            map,
            allocated,
        } = prep;
        if allocated < SEGMENT_HEADER_LEN {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::Config(format!(
                "segment size {allocated} below header"
            )));
        }
        let path = dir.join(segment_file_name(base));
        if let Err(e) = std::fs::rename(&tmp, &path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(StorageError::io(&path, "rename", e));
        }
        buf.clear();
        buf.extend_from_slice(&encode_header(base));
        let mut seg = Segment::from_parts(path, file, map, base, Vec::new(), SEGMENT_HEADER_LEN);
        seg.allocated = allocated;
        seg.pending = buf; // the header: bytes [0, SEGMENT_HEADER_LEN), not yet written
        Ok(seg)
    }

    /// One past the last offset this segment holds.
    pub fn end(&self) -> u64 {
        // cannot overflow: recovery refuses bases above `recovery::MAX_BASE` (2^63 - 1), and
        // a segment (< 4 GiB) holds fewer than 2^32 records.
        self.base + self.index.len() as u64
    }

    /// Bytes mapped: the most this segment can hold (its size limit, or a longer recovered
    /// file's length).
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Bytes of the file allocated so far (`<= capacity()`).
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Maps the active segment, recovered at its file's length, at `limit` bytes so it can
    /// grow under the map. No-op when it is mapped that far already. Only at open: no record
    /// is borrowed from the old map yet.
    pub fn map_to_limit(&mut self, limit: usize) -> Result<(), StorageError> {
        if self.map.len() >= limit {
            return Ok(());
        }
        self.map = map_len(&self.file, &self.path, Some(limit))?;
        Ok(())
    }

    /// Extends the allocation on the calling thread, by whole growth steps, so that `span`
    /// more bytes fit; the caller checked `has_room(span)`. Returns whether it had to grow.
    ///
    /// # Errors
    /// `Io` (e.g. ENOSPC) naming the file; nothing changes.
    #[inline]
    pub fn reserve(
        &mut self,
        span: usize,
        fault: Option<&AtomicBool>,
    ) -> Result<bool, StorageError> {
        let need = self.write_pos.saturating_add(span);
        if need <= self.allocated || self.adopt_helper_allocation() >= need {
            return Ok(false);
        }
        self.grow_to(need, fault).map(|()| true)
    }

    /// Takes up the allocation a running growth step has already made (its result may still be
    /// on its way to the loop) and returns the allocated length.
    #[cold]
    fn adopt_helper_allocation(&mut self) -> usize {
        let by_helper = self.helper_allocation.allocated();
        self.note_allocated(by_helper);
        self.allocated
    }

    /// [`reserve`](Self::reserve)'s slow path, apart so the check above is inlined into every
    /// append: grows the file to cover `need` bytes.
    #[cold]
    fn grow_to(&mut self, need: usize, fault: Option<&AtomicBool>) -> Result<(), StorageError> {
        let limit = self.map.len();
        let to = covering(self.allocated, need, limit).unwrap_or(limit);
        grow_file(&self.file, &self.path, &mut self.allocated, to, fault)
    }

    /// What a helper-thread growth step should do now, if one is due (see `space.rs`): the
    /// file to grow, and the range `[from, to)` to allocate.
    pub fn grow_target(&self) -> Option<Growth> {
        let (allocated, limit) = (self.allocated as u64, self.map.len() as u64);
        if !space::grow_due(allocated, self.write_pos as u64, limit) {
            return None;
        }
        let to = space::next_alloc(allocated, limit)?;
        Some(Growth {
            base: self.base,
            path: self.path.clone(),
            file: Arc::clone(&self.file),
            from: allocated,
            to,
            allocation: Arc::clone(&self.helper_allocation),
        })
    }

    /// A growth job allocated the file up to `to` bytes.
    pub fn note_allocated(&mut self, to: u64) {
        let to = usize::try_from(to)
            .unwrap_or(usize::MAX)
            .min(self.map.len());
        self.allocated = self.allocated.max(to);
    }

    /// Byte position of the record at `offset`, if this segment holds it (not lost).
    pub fn position(&self, offset: u64) -> Option<usize> {
        let i = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        self.index
            .get(i)
            .filter(|&&p| p != LOST)
            .map(|&p| p as usize)
    }

    /// Bytes written, header included.
    pub fn used(&self) -> usize {
        self.write_pos
    }

    /// True when `span` more bytes fit.
    pub fn has_room(&self, span: usize) -> bool {
        self.map.len() - self.write_pos >= span
    }

    /// Appends the record at offset `self.end()`; the caller checked `has_room(span)` and that
    /// the body length fits a u32.
    pub fn append(&mut self, rec: &NewRecord<'_>, span: usize) -> u64 {
        let offset = self.end();
        let pos = self.write_pos;
        debug_assert!(pos + span <= self.allocated, "append past the allocation");
        self.appended_lately = true;
        let at = self.pending.len();
        // Within capacity after the first few turns: the log flushes before FLUSH_AT.
        self.pending.resize(at + span, 0);
        let n = record::encode(&mut self.pending[at..], offset, rec);
        debug_assert_eq!(n, span, "span mismatch at offset {offset}");
        // cannot truncate: positions are < map.len() <= u32::MAX (checked at open).
        self.index.push(pos as u32);
        self.write_pos = pos + span;
        offset
    }

    /// The record at `offset`: `None` if this segment has no record there, `Some(Err)` if the
    /// bytes fail verification (the CRC is checked on every read).
    pub fn read(&self, offset: u64, verify_crc: bool) -> Option<Result<Record<'_>, Corrupt>> {
        let i = usize::try_from(offset.checked_sub(self.base)?).ok()?;
        let pos = *self.index.get(i).filter(|&&p| p != LOST)? as usize;
        let flushed = self.flushed();
        let buf = match pos.checked_sub(flushed) {
            Some(in_pending) => self.pending.get(in_pending..)?,
            None => {
                if pos < self.released {
                    self.note_refault(pos);
                }
                self.map.get(pos..flushed)?
            }
        };
        Some(record::decode_with(buf, offset, verify_crc).map(|(r, _)| r))
    }

    /// A read at `pos`, below `released`, faulted a released page back in.
    fn note_refault(&self, pos: usize) {
        if pos < self.refaulted_from.get() {
            self.refaulted_from.set(pos);
        }
    }

    /// File position up to which appended bytes have been written to the file.
    pub(crate) fn flushed(&self) -> usize {
        self.write_pos - self.pending.len()
    }

    /// Bytes appended but not yet written to the file.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Memory the pending buffer holds.
    #[cfg(test)]
    pub fn pending_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// Writes the pending bytes to the file (one `pwrite`, retried on a short write). On
    /// failure they stay pending (and readable); a retry rewrites the same bytes in place.
    /// `fault` is the test seam: when set, the write fails with EIO as a failing disk would.
    pub fn flush(&mut self, fault: Option<&AtomicBool>) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if fault.is_some_and(|f| f.load(Ordering::Relaxed)) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        self.file
            .write_all_at(&self.pending, self.flushed() as u64)?;
        self.pending.clear();
        if self.pending.capacity() > 4 * FLUSH_AT {
            // One huge record grew it; do not keep megabytes per topic for good.
            self.pending.shrink_to(FLUSH_AT);
        }
        Ok(())
    }

    /// Frees the pending buffer's memory if nothing was appended since the last call and
    /// nothing is pending (the broker calls it every maintenance step): a topic that went quiet
    /// does not keep the buffer its busiest turn grew (up to [`FLUSH_AT`] and a record).
    pub fn release_idle_buffer(&mut self) {
        if !std::mem::take(&mut self.appended_lately) && self.pending.is_empty() {
            self.pending = Vec::new();
        }
    }

    /// Releases this process's pages of the map below byte `pos`, rounded down to a
    /// [`RELEASE_STEP`] boundary and never past what was written to the file (see "Resident
    /// pages"), refaulted ones included. Returns the bytes of the ranges released (0 when the
    /// line did not cross a step and nothing was read below it since: the common case, two
    /// compares).
    pub fn release_below(&mut self, pos: usize) -> usize {
        let to = pos.min(self.flushed()) & !(RELEASE_STEP - 1);
        self.sweep(to) + self.release_to(to)
    }

    /// Releases every written page, refaulted ones included (a segment every reader has
    /// passed). Returns the bytes of the ranges released.
    pub fn release_all(&mut self) -> usize {
        self.sweep(usize::MAX) + self.release_to(self.written_pages_end())
    }

    /// Releases every page of the map (recovery's scan read all of the file, the zeros past
    /// the records included); reads below the written end count as refaults from now on.
    pub fn release_scanned(&mut self) {
        dont_need(&self.map, 0..self.map.len());
        self.released = self.released.max(self.written_pages_end());
    }

    /// Whether a read faulted a released page back in since the last sweep.
    pub fn has_refaults(&self) -> bool {
        self.refaulted_from.get() < self.released
    }

    /// Whether no page is mapped as far as reads go: every written page released and none
    /// read back since ([`Segment::release_all`] has nothing to do).
    pub fn is_clean(&self) -> bool {
        self.released >= self.written_pages_end() && self.refaulted_from.get() >= self.released
    }

    /// The written bytes rounded up to whole pages (the last page may be partly written).
    fn written_pages_end(&self) -> usize {
        let page = page_size();
        self.write_pos
            .div_ceil(page)
            .saturating_mul(page)
            .min(self.map.len())
    }

    fn release_to(&mut self, to: usize) -> usize {
        let from = self.released;
        if to <= from {
            return 0;
        }
        dont_need(&self.map, from..to);
        self.released = to;
        to - from
    }

    /// Releases again the pages that reads below `released` faulted back in since the last
    /// sweep, up to byte `limit` (the reader line; `usize::MAX` for a segment every reader
    /// passed). Refaulted pages at or past `limit` stay noted for a later sweep. Returns the
    /// bytes of the range released.
    pub fn sweep(&mut self, limit: usize) -> usize {
        let from = self.refaulted_from.get();
        if from >= self.released {
            return 0;
        }
        let page = page_size();
        let from = from / page * page;
        let to = self.released.min(limit / page * page);
        if from >= to {
            return 0;
        }
        dont_need(&self.map, from..to);
        let rest = if to < self.released { to } else { usize::MAX };
        self.refaulted_from.set(rest);
        to - from
    }

    /// Whether every page of bytes `[from, to)` of the file is in the page cache, so reading
    /// them waits for no disk. `mincore` on a shared file mapping answers from the page cache,
    /// whether or not this process has the pages mapped. A failed call answers `true`: then the
    /// read simply faults as it would have.
    pub fn cached(&self, from: usize, to: usize) -> bool {
        let to = to.min(self.map.len());
        if from >= to {
            return true;
        }
        let page = page_size();
        let start = from / page * page;
        let pages = (to - start).div_ceil(page);
        let mut flags = vec![0u8; pages];
        // SAFETY: `start..to` lies inside the live map (clamped above, `start` page-aligned
        // and below `to`), and `flags` has a byte per page of that range.
        let rc = unsafe {
            libc::mincore(
                self.map.as_ptr().add(start) as *mut libc::c_void,
                to - start,
                flags.as_mut_ptr(),
            )
        };
        rc != 0 || flags.iter().all(|f| f & 1 == 1)
    }

    /// Bytes of this process's resident pages of the map, from `/proc/self/smaps` (tests: a
    /// released range must be gone from the resident set, not only readable).
    #[cfg(test)]
    pub fn resident_bytes(&self) -> u64 {
        super::testutil::resident_bytes_at(self.map.as_ptr() as usize)
    }

    /// Called when a newer segment becomes active (after a successful flush): the index stops
    /// growing, and the emptied pending buffer is handed over to the new segment.
    pub fn seal(&mut self) -> Vec<u8> {
        debug_assert!(self.pending.is_empty(), "sealing an unflushed segment");
        self.index.shrink_to_fit();
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_constants_match_the_documented_table() {
        assert_eq!(SEGMENT_HEADER_LEN, 32);
        assert_eq!((VERSION_AT, BASE_AT, HEADER_CRC_AT), (8, 16, 24));
        assert_eq!(&SEGMENT_MAGIC, b"CORQLOG\0");
        assert_eq!(SEGMENT_VERSION, 1);
        assert_eq!(SEGMENT_HEADER_LEN % record::RECORD_ALIGN, 0);
        let h = encode_header(0x0102_0304_0506_0708);
        assert_eq!(&h[16..24], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(&h[28..32], &[0, 0, 0, 0]);
    }

    #[test]
    fn header_round_trip_and_rejections() {
        let h = encode_header(99);
        assert_eq!(decode_header(&h), Header::Valid(99));
        assert_eq!(decode_header(&[0u8; 32]), Header::Missing);
        assert_eq!(decode_header(&[0u8; 5]), Header::Missing);
        assert!(matches!(decode_header(&h[..20]), Header::Invalid(_)));
        for byte in 0..HEADER_CRC_AT + 4 {
            let mut g = h;
            g[byte] ^= 0x10;
            assert!(
                matches!(decode_header(&g), Header::Invalid(_)),
                "flip at {byte} accepted"
            );
        }
    }

    #[test]
    fn file_names_sort_and_parse_strictly() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(segment_file_name(u64::MAX).len(), FILE_NAME_DIGITS + 4);
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(
            parse_file_name("00000000000000000042.log", SEGMENT_SUFFIX),
            Some(42)
        );
        assert_eq!(
            parse_file_name(&segment_file_name(u64::MAX), SEGMENT_SUFFIX),
            Some(u64::MAX)
        );
        for bad in [
            "42.log",
            "0000000000000000004x.log",
            "00000000000000000042.lo",
            "+0000000000000000042.log",
            "99999999999999999999.log", // overflows u64
            "",
            ".log",
            "é0000000000000000042.log",
        ] {
            assert_eq!(parse_file_name(bad, SEGMENT_SUFFIX), None, "{bad:?}");
        }
    }
}
