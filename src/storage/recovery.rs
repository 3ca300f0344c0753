//! The open-time scan: list the directory, validate every segment header, CRC-verify every
//! record to rebuild the in-memory indexes, step over what is damaged and cut only a torn tail.
//! Every skipped byte range, lost offset range and cut logs a `warn!` naming the segment.
//!
//! # Policy
//!
//! - **Damage inside a segment** (any segment, the last included): a record whose length is
//!   out of bounds, whose CRC fails, whose kind is unknown or whose offset is not the next one
//!   is not the end of the data. The scan *resynchronises*: if the bad record's own length
//!   points at a record that verifies as `next + 1`, it carries on there (a flipped body byte;
//!   the body, publisher-chosen bytes, is never searched). Otherwise it searches forward,
//!   8-aligned, for the first record that verifies (length, CRC, kind) and claims an offset
//!   `o` with `next <= o <= next + skipped_bytes / 40` (every lost record took at least 40
//!   bytes, the smallest record: a claim beyond that cannot be true, and a claim below `next`
//!   is stale or copied data). Byte order and offset order agree inside a segment, so the
//!   first record that passes is the successor. Only the damaged bytes are skipped.
//!   Offsets `next..o` are lost: the first stays in the index as a *hole* pointing at the
//!   damaged bytes (`read` returns `Corruption`, as before), the others are [`LOST`] entries
//!   (`read` returns `NotFound`); iterators skip both, and each counts once as a corrupt
//!   record. If `o == next` the bytes held no record (junk), and nothing is lost.
//! - **Damage with nothing valid after it** in the **last segment** is a torn tail from a
//!   crash (unsynced appends may be lost): it is zeroed to its last non-zero byte and synced,
//!   appends continue after the last valid record; it counts as one corrupt record (how many
//!   followed is unknowable). Stray non-zero bytes after the end of the data are zeroed too,
//!   without counting.
//! - **Damage with nothing valid after it** in a **sealed segment**: the bytes are left for
//!   inspection; the offsets up to the next segment's base are a gap (`read` returns
//!   `NotFound`, iterators skip), counted as corrupt.
//! - **Missing segments**: a gap between two segments' offsets is a `warn!` naming the range,
//!   counted as corrupt. Offsets below the first segment are not reported here (retention
//!   deletes old segments legitimately; the checkpoint knows whether they were still needed).
//! - **Headers**: an all-zero header (never reached the disk) is rewritten from the file name; a
//!   garbage header or one whose base disagrees with the name fails the open with `Corruption`
//!   naming the file. Overlapping segments fail the open.
//! - **Names**: `.prealloc` leftovers are deleted; a segment name whose base is above
//!   [`MAX_BASE`] is refused with a `warn!` and left untouched (see there); any other
//!   unexpected entry is reported with `warn!` and left alone.
//!
//! Every record of every segment is verified at open (the index has to be rebuilt anyway, and
//! the scan runs at well over 1 GB/s), so there is no separate "last known-good" checkpoint.

use super::record::{self, Corrupt};
use super::segment::{
    self, Header, Segment, LOST, PREALLOC_SUFFIX, SEGMENT_HEADER_LEN, SEGMENT_SUFFIX,
};
use super::{LogName, StorageError};
use ::log::{info, warn};
use memmap2::MmapMut;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Index entries reserved per byte of segment: one per 256 bytes, so typical records never
/// reallocate more than a couple of times.
const INDEX_RESERVE_DIVISOR: usize = 256;
/// Granularity of the "where does the non-zero data end?" check.
const ZERO_CHECK_CHUNK: usize = 4096;
/// Bytes of the smallest record (an empty body, padded: 40): a damaged range of `n` bytes held
/// at most `n / 40` records.
const MIN_RECORD: usize =
    (record::RECORD_HEADER_LEN + record::RECORD_ALIGN - 1) & !(record::RECORD_ALIGN - 1);

/// The highest base offset a segment file may have. Offsets come from file names and record
/// headers, so a damaged or hand-made name (`18446744073709551615.log`) must not make
/// `base + records` or the next append wrap. 2^63 offsets take 29,000 years at 10 M
/// messages/s, so anything above is damage, and below it no segment (at most 2^32 bytes,
/// hence < 2^32 records) and no realistic run of appends can overflow a u64.
///
/// Such a file is refused with a `warn!` and skipped, not an open failure: nothing it holds
/// could be served under its offsets anyway, skipping changes no byte of it (it stays for the
/// operator), and every other segment of the topic stays available.
pub const MAX_BASE: u64 = i64::MAX as u64;

/// What the scan found in the directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Segments in offset order.
    pub segments: Vec<Segment>,
    /// Records lost, holes not included: lost inside skipped ranges, in the gap after a sealed
    /// segment's damaged end, in missing segments, and one per torn tail.
    pub corrupt: u64,
    /// Offsets kept in an index whose bytes fail verification.
    pub holes: Vec<u64>,
}

/// A damaged byte range the scan stepped over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// From the record that failed to the next record that verifies.
    pub bytes: Range<usize>,
    /// The offsets whose records those bytes held (empty when they held none).
    pub offsets: Range<u64>,
    /// Why the record at the start failed.
    pub why: Corrupt,
}

/// Damage at the end of a segment's data with no valid record after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// From the record that failed to one past the last non-zero byte.
    pub bytes: Range<usize>,
    /// The offset that record would have had.
    pub offset: u64,
    /// Why it failed. `LenTooSmall(0)` means a zero word followed by stray bytes.
    pub why: Corrupt,
}

/// Result of scanning one segment's records.
#[derive(Debug)]
pub struct Scan {
    /// Byte position of each record ([`LOST`] for lost offsets).
    pub index: Vec<u32>,
    /// End of the last good record (padding included).
    pub end: usize,
    /// Damaged ranges stepped over, in order.
    pub skipped: Vec<Skipped>,
    /// Damage at the end with nothing valid after it.
    pub cut: Option<Cut>,
    /// Offsets of bad records kept as holes (the first offset of each lossy skipped range).
    pub holes: Vec<u64>,
}

impl Scan {
    /// Offsets lost in skipped ranges, holes not included.
    pub fn lost(&self) -> u64 {
        let lossy = self.skipped.iter().filter(|s| !s.offsets.is_empty());
        lossy.map(|s| s.offsets.end - s.offsets.start - 1).sum()
    }
}

/// Scans `map` (a whole segment, header included) from `base`: see the policy in the module
/// docs. Never panics, whatever the bytes. A `base` above [`MAX_BASE`] scans as empty (its
/// offsets could overflow; `recover` never opens such a file).
pub fn scan(map: &[u8], base: u64) -> Scan {
    let data_end = if base > MAX_BASE { 0 } else { data_end(map) };
    let mut s = Scan {
        index: Vec::with_capacity(map.len().min(data_end) / INDEX_RESERVE_DIVISOR),
        end: SEGMENT_HEADER_LEN.min(map.len()),
        skipped: Vec::new(),
        cut: None,
        holes: Vec::new(),
    };
    let (mut pos, mut next) = (SEGMENT_HEADER_LEN, base);
    while pos < data_end {
        let rest = map.get(pos..).unwrap_or(&[]);
        let why = match record::decode(rest, next) {
            Ok((_, span)) => {
                // cannot truncate: open rejects segments larger than u32::MAX bytes.
                s.index.push(pos as u32);
                pos = pos.saturating_add(span);
                s.end = pos.min(map.len());
                next += 1;
                continue;
            }
            Err(why) => why,
        };
        let Some((to, found)) = resync(map, pos, next, data_end) else {
            let bytes = pos..data_end;
            s.cut = Some(Cut {
                bytes,
                offset: next,
                why,
            });
            break;
        };
        if found > next {
            s.holes.push(next);
            s.index.push(pos as u32);
            // At most (to - pos) / 40 entries: bounded by the segment's size.
            s.index.extend((next + 1..found).map(|_| LOST));
        }
        s.skipped.push(Skipped {
            bytes: pos..to,
            offsets: next..found,
            why,
        });
        (pos, next) = (to, found);
    }
    s
}

/// For damaged bytes at `from` where offset `next` was expected: the position and offset of
/// the record to carry on from. First the one the bad record's own length points at, if it
/// verifies as `next + 1` (the usual case, a flipped body byte: the body, which a publisher
/// chose and which may hold record-like bytes, is then never searched); else the first later
/// record (8-aligned, before `data_end`) that verifies and whose offset the skipped bytes
/// could account for (see the module docs).
fn resync(map: &[u8], from: usize, next: u64, data_end: usize) -> Option<(usize, u64)> {
    if let Some(hit) = implied_successor(map, from, next) {
        return Some(hit);
    }
    let mut at = from.checked_add(record::RECORD_ALIGN)?;
    while at < data_end {
        let rest = map.get(at..)?;
        let claimed = record::claimed_offset(rest)?;
        let budget = ((at - from) / MIN_RECORD) as u64;
        let plausible = claimed.checked_sub(next).is_some_and(|d| d <= budget);
        if plausible && record::decode(rest, claimed).is_ok() {
            return Some((at, claimed));
        }
        at += record::RECORD_ALIGN;
    }
    None
}

/// The record right after the bad one at `from`, by its length field, if it verifies as the
/// offset after `next`.
fn implied_successor(map: &[u8], from: usize, next: u64) -> Option<(usize, u64)> {
    let len_bytes = map.get(from..)?.get(..4)?.try_into().ok()?;
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len < record::RECORD_HEADER_LEN {
        return None;
    }
    let at = from.checked_add(record::align_up(len)?)?;
    let want = next.checked_add(1)?;
    record::decode(map.get(at..)?, want)
        .ok()
        .map(|_| (at, want))
}

/// One past the last non-zero byte of `map` (0 if it is all zero): no record lies beyond.
fn data_end(map: &[u8]) -> usize {
    // OR-folding a chunk vectorises; `any` would not.
    let dirty = |c: &[u8]| c.iter().fold(0u8, |a, &b| a | b) != 0;
    let Some(chunk) = map.chunks(ZERO_CHECK_CHUNK).rposition(dirty) else {
        return 0;
    };
    let start = chunk * ZERO_CHECK_CHUNK;
    let bytes = map.chunks(ZERO_CHECK_CHUNK).nth(chunk).unwrap_or(&[]);
    start + bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Lists `{base:020}.log` files in offset order; deletes `.prealloc` leftovers; refuses names
/// above [`MAX_BASE`] and reports strays (both left alone).
pub fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut found = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, "read_dir", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io(dir, "read_dir", e))?;
        let path = entry.path();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let name = entry.file_name();
        let name = name.to_str().unwrap_or("");
        match segment::parse_file_name(name, SEGMENT_SUFFIX) {
            Some(base) if is_file && base > MAX_BASE => warn!(
                topic:% = LogName(&path);
                "refusing segment {}: base offset {base} is above {MAX_BASE}, where offsets \
                 could overflow; the file is left untouched and not read",
                path.display()
            ),
            Some(base) if is_file => found.push((base, path)),
            _ if is_file && segment::parse_file_name(name, PREALLOC_SUFFIX).is_some() => {
                info!("removing unused pre-created segment {}", path.display());
                std::fs::remove_file(&path).map_err(|e| StorageError::io(&path, "remove", e))?;
            }
            _ => warn!(
                topic:% = LogName(&path);
                "ignoring stray entry {} in log directory (not a segment)",
                path.display()
            ),
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);
    Ok(found)
}

/// Scans the directory and loads every segment. `max_bytes` is the segment size limit (a last
/// segment shorter than it is left to grow on demand).
pub fn recover(dir: &Path, max_bytes: u64) -> Result<Recovered, StorageError> {
    let found = list_segments(dir)?;
    let mut out = Recovered::default();
    let mut prev_cut = false;
    let n = found.len();
    for (i, (base, path)) in found.into_iter().enumerate() {
        let is_last = i + 1 == n;
        let Some(seg) = load_segment(path, base, is_last, max_bytes)? else {
            continue;
        };
        if let Some(prev) = out.segments.last() {
            let gap = check_chain(prev, &seg.segment, prev_cut)?;
            out.corrupt = out.corrupt.saturating_add(gap);
        }
        out.corrupt = out.corrupt.saturating_add(seg.lost);
        prev_cut = seg.cut;
        out.holes.extend_from_slice(&seg.holes);
        out.segments.push(seg.segment);
    }
    Ok(out)
}

/// Overlap is fatal; a gap is reported and returned as the number of offsets lost.
fn check_chain(prev: &Segment, seg: &Segment, prev_cut: bool) -> Result<u64, StorageError> {
    let Some(lost) = seg.base.checked_sub(prev.end()) else {
        return Err(StorageError::Corruption {
            path: seg.path.clone(),
            offset: seg.base,
            reason: format!(
                "overlaps {} which runs to offset {}",
                prev.path.display(),
                prev.end()
            ),
        });
    };
    if lost > 0 {
        let cause = if prev_cut {
            "lost with the damaged end of the segment before"
        } else {
            "no segment file holds them (missing file)"
        };
        warn!(
            topic:% = LogName(&seg.path);
            "offsets {}..{} are missing before {} ({lost} records): {cause}",
            prev.end(),
            seg.base,
            seg.path.display()
        );
    }
    Ok(lost)
}

fn open_rw(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io(path, "open", e))
}

/// Rejects files too large to index with u32 positions. A last segment shorter than
/// `max_bytes` is normal (segments grow on demand, see `space.rs`): it is not extended here,
/// the log grows it when appends need room. Its existing length is allocated for real (a
/// no-op for our own files; fills holes in a file made sparse by a copy tool, so appends into
/// it cannot meet ENOSPC at `pwrite` time). If that fails (disk full) the open goes on: the
/// records are readable, and an append that needs space gets the error.
fn size_file(file: &File, path: &Path, is_last: bool, max_bytes: u64) -> Result<(), StorageError> {
    let size = file
        .metadata()
        .map_err(|e| StorageError::io(path, "stat", e))?
        .len();
    if size > u64::from(u32::MAX) {
        let reason = format!("segment of {size} bytes exceeds 4 GiB");
        return Err(StorageError::Corruption {
            path: path.to_path_buf(),
            offset: 0,
            reason,
        });
    }
    if is_last && size < max_bytes {
        if let Err(e) = segment::allocate(file, 0, size, None) {
            warn!(
                topic:% = LogName(path);
                "cannot allocate the {size} bytes of {}: {e}; appends may fail",
                path.display()
            );
        }
    }
    Ok(())
}

/// A loaded segment and what its scan lost.
struct Loaded {
    segment: Segment,
    /// Its data ended in damage with nothing valid after it.
    cut: bool,
    /// Records lost inside it (holes excluded; a torn tail counts one).
    lost: u64,
    holes: Vec<u64>,
}

/// Opens, validates and scans one segment. `Ok(None)` means "skipped with a warning".
fn load_segment(
    path: PathBuf,
    base: u64,
    is_last: bool,
    max_bytes: u64,
) -> Result<Option<Loaded>, StorageError> {
    let file = open_rw(&path)?;
    size_file(&file, &path, is_last, max_bytes)?;
    let mut map = segment::map(&file, &path)?;
    if map.len() < SEGMENT_HEADER_LEN {
        if is_last {
            return Err(StorageError::Corruption {
                path,
                offset: 0,
                reason: "shorter than a segment header".into(),
            });
        }
        warn!(
            topic:% = LogName(&path);
            "skipping {}: {} bytes, shorter than a segment header",
            path.display(),
            map.len()
        );
        return Ok(None);
    }
    check_header(&mut map, &path, base)?;
    // The scan reads the file front to back: readahead on for it (with the map's usual
    // MADV_RANDOM a cold 1.2 GB log took 20 s to scan in 4 KiB reads, 0.75 s with readahead),
    // back off for serving (see `segment::map`). Advice failing is harmless.
    let _ = map.advise(memmap2::Advice::Sequential);
    let scan = scan(&map, base);
    let _ = map.advise(memmap2::Advice::Random);
    report(&path, &scan, is_last);
    let mut lost = scan.lost();
    if let (Some(cut), true) = (&scan.cut, is_last) {
        zero_tail(&mut map, &path, cut.bytes.clone())?;
        // A torn record counts as one: how many followed it is unknowable. Stray bytes after
        // a clean end (pages reaching the disk out of order) lose nothing.
        lost += u64::from(cut.why != Corrupt::LenTooSmall(0));
    }
    info!(
        "opened segment {} ({} records)",
        path.display(),
        scan.index.len()
    );
    let Scan {
        index,
        end,
        cut,
        holes,
        ..
    } = scan;
    let mut segment = Segment::from_parts(path, file, map, base, index, end);
    // The scan faulted every page of the file into this process (the zeros past the records
    // too): release them (the page cache keeps them, warm for the readers to come).
    // Otherwise a restart over a large backlog starts with the whole log resident.
    segment.release_scanned();
    Ok(Some(Loaded {
        segment,
        cut: cut.is_some(),
        lost,
        holes,
    }))
}

fn check_header(map: &mut MmapMut, path: &Path, base: u64) -> Result<(), StorageError> {
    let bad = |reason: String| StorageError::Corruption {
        path: path.to_path_buf(),
        offset: 0,
        reason,
    };
    match segment::decode_header(map) {
        Header::Valid(b) if b == base => Ok(()),
        Header::Valid(b) => Err(bad(format!(
            "header base offset {b} disagrees with the file name"
        ))),
        Header::Invalid(why) => Err(bad(format!("bad segment header: {why}"))),
        Header::Missing => {
            warn!(
                topic:% = LogName(path);
                "{}: header missing (all zero), rewriting it from the file name",
                path.display()
            );
            map[..SEGMENT_HEADER_LEN].copy_from_slice(&segment::encode_header(base));
            map.flush_range(0, SEGMENT_HEADER_LEN)
                .map_err(|e| StorageError::io(path, "msync", e))
        }
    }
}

/// One `warn!` per skipped range and for the cut, naming bytes and offsets.
fn report(path: &Path, scan: &Scan, is_last: bool) {
    for Skipped {
        bytes,
        offsets,
        why,
    } in &scan.skipped
    {
        let what = match offsets.end - offsets.start {
            0 => "no record lost".to_owned(),
            n => format!(
                "offsets {}..{} lost ({n} record{})",
                offsets.start,
                offsets.end,
                if n == 1 { "" } else { "s" }
            ),
        };
        warn!(
            topic:% = LogName(path);
            "{}: skipped damaged bytes {}..{} ({} bytes: {why}); {what}; resynchronised at \
             offset {}",
            path.display(),
            bytes.start,
            bytes.end,
            bytes.len(),
            offsets.end
        );
    }
    let Some(Cut { bytes, offset, why }) = &scan.cut else {
        return;
    };
    let what = if is_last {
        "torn tail, zeroing it"
    } else {
        "damaged end of a sealed segment, left on disk; the rest of its offsets are lost"
    };
    warn!(
        topic:% = LogName(path);
        "{}: no valid record after byte {} (offset {offset}: {why}): {what} (bytes {}..{})",
        path.display(),
        bytes.start,
        bytes.start,
        bytes.end
    );
}

/// Zeroes `range` (a torn tail, or pages that reached the disk ahead of earlier ones) and
/// syncs it, so a later append can never be followed by stale data.
fn zero_tail(map: &mut MmapMut, path: &Path, range: Range<usize>) -> Result<(), StorageError> {
    let Some(bytes) = map.get_mut(range.clone()) else {
        return Ok(());
    };
    if bytes.is_empty() {
        return Ok(());
    }
    warn!(
        topic:% = LogName(path);
        "{}: zeroing {} bytes after the last good record (byte {})",
        path.display(),
        bytes.len(),
        range.start
    );
    bytes.fill(0);
    map.flush_range(range.start, range.len())
        .map_err(|e| StorageError::io(path, "msync", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::{Rng, TempDir};
    use crate::storage::{Log, LogConfig};

    /// A segment image with `n` records of `body_len` bytes from `base`.
    fn image(base: u64, n: usize, body_len: usize, size: usize) -> (Vec<u8>, Vec<usize>) {
        let mut m = vec![0u8; size];
        m[..SEGMENT_HEADER_LEN].copy_from_slice(&segment::encode_header(base));
        let (mut pos, mut starts) = (SEGMENT_HEADER_LEN, Vec::new());
        for i in 0..n {
            starts.push(pos);
            pos += encode_at(&mut m, pos, base + i as u64, i as u8, body_len);
        }
        starts.push(pos); // one past the last record
        (m, starts)
    }

    fn encode_at(m: &mut [u8], pos: usize, offset: u64, fill: u8, body_len: usize) -> usize {
        let body = vec![fill; body_len];
        let rec = crate::storage::NewRecord::message(1, 0, &body);
        record::encode(&mut m[pos..], offset, &rec)
    }

    /// The offsets whose index entries decode (with their CRC) to exactly that offset.
    fn readable(m: &[u8], base: u64, s: &Scan) -> Vec<u64> {
        let ok = |(i, &p): (usize, &u32)| {
            let o = base + i as u64;
            let hit = p != LOST && record::decode(&m[p as usize..], o).is_ok();
            hit.then_some(o)
        };
        s.index.iter().enumerate().filter_map(ok).collect()
    }

    fn all_but(n: u64, lost: &[u64]) -> Vec<u64> {
        (0..n).filter(|o| !lost.contains(o)).collect()
    }

    #[test]
    fn clean_segment_scans_fully() {
        let (m, starts) = image(10, 20, 50, 4096);
        let s = scan(&m, 10);
        let pos: Vec<usize> = s.index.iter().map(|&p| p as usize).collect();
        assert_eq!(pos, starts[..20]);
        assert_eq!(s.end, starts[20]);
        assert!(s.cut.is_none() && s.holes.is_empty() && s.skipped.is_empty());
    }

    #[test]
    fn flipped_byte_in_an_early_record_keeps_every_later_record() {
        // The newest segment's case once lost to a torn-tail truncation: a body byte of record 1 of 10.
        let (mut m, starts) = image(0, 10, 30, 4096);
        m[starts[1] + 40] ^= 1;
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(10, &[1]));
        assert_eq!((s.index.len(), s.end), (10, starts[10]));
        assert_eq!(s.holes, vec![1]);
        assert_eq!(s.lost(), 0, "the hole is the only loss");
        assert!(s.cut.is_none());
        let sk = &s.skipped[..];
        assert!(
            matches!(sk, [Skipped { offsets, why: Corrupt::Crc { .. }, .. }] if *offsets == (1..2))
        );
        assert_eq!(sk[0].bytes, starts[1]..starts[2]);
    }

    #[test]
    fn bad_length_keeps_every_later_record() {
        for bad_len in [0u32, 7, 1000, 0x4000_0000] {
            let (mut m, starts) = image(0, 10, 30, 4096);
            m[starts[4]..starts[4] + 4].copy_from_slice(&bad_len.to_le_bytes());
            let s = scan(&m, 0);
            assert_eq!(readable(&m, 0, &s), all_but(10, &[4]), "len {bad_len}");
            assert_eq!((s.holes.clone(), s.end), (vec![4], starts[10]));
            assert_eq!(s.skipped[0].bytes, starts[4]..starts[5]);
        }
    }

    #[test]
    fn garbage_in_the_middle_loses_only_the_records_it_covers() {
        let (mut m, starts) = image(100, 12, 24, 4096);
        let mut rng = Rng::new(9);
        // Records 3, 4 and 5 and the first bytes of 6 overwritten.
        for b in &mut m[starts[3] + 5..starts[6] + 3] {
            *b = rng.next_u64() as u8 | 1;
        }
        let s = scan(&m, 100);
        assert_eq!(
            readable(&m, 100, &s),
            vec![100, 101, 102, 107, 108, 109, 110, 111]
        );
        assert_eq!(s.holes, vec![103]);
        assert_eq!(s.index[4..7], [LOST, LOST, LOST]);
        assert_eq!(s.lost(), 3);
        assert_eq!(s.skipped.len(), 1);
        assert_eq!(
            (s.skipped[0].bytes.clone(), s.skipped[0].offsets.clone()),
            (starts[3]..starts[7], 103..107)
        );
    }

    #[test]
    fn several_damaged_ranges_are_each_stepped_over_and_named() {
        let (mut m, starts) = image(0, 20, 40, 8192);
        m[starts[2] + 50] ^= 0x10; // body: CRC
        m[starts[7] + 2] ^= 0x7f; // length
        m[starts[11] + record::KIND_AT] = 9; // kind (also fails the CRC)
        m[starts[15] + record::OFFSET_AT] ^= 4; // offset field (also fails the CRC)
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(20, &[2, 7, 11, 15]));
        assert_eq!(s.holes, vec![2, 7, 11, 15]);
        let named: Vec<Range<u64>> = s.skipped.iter().map(|k| k.offsets.clone()).collect();
        assert_eq!(named, vec![2..3, 7..8, 11..12, 15..16]);
        assert_eq!((s.end, s.cut.is_none()), (starts[20], true));
    }

    #[test]
    fn torn_tail_is_still_cut() {
        let (mut m, starts) = image(0, 10, 30, 4096);
        // Record 7 half-written, 8 and 9 never written: a crash mid-append.
        m[starts[7] + 20..].fill(0);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(7, &[]));
        assert_eq!(s.end, starts[7]);
        let cut = s.cut.expect("a torn tail");
        assert_eq!((cut.offset, cut.bytes.start), (7, starts[7]));
        assert!(matches!(
            cut.why,
            Corrupt::LenPastEnd(_) | Corrupt::Crc { .. }
        ));
        assert!(s.skipped.is_empty() && s.holes.is_empty());
    }

    #[test]
    fn records_after_a_page_that_never_reached_the_disk_are_kept() {
        // Pages of one write can reach the disk out of order: a zeroed stretch, then records.
        let (mut m, starts) = image(0, 30, 200, 16384);
        m[starts[10]..starts[13]].fill(0);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(30, &[10, 11, 12]));
        assert_eq!(s.skipped[0].why, Corrupt::LenTooSmall(0));
        assert_eq!(s.end, starts[30]);
    }

    #[test]
    fn crc_valid_records_with_a_wrong_offset_are_rejected() {
        // Record 2 copied over record 3 (same length): a duplicate, lower offset.
        let (mut m, starts) = image(0, 6, 16, 4096);
        let rec2 = m[starts[2]..starts[3]].to_vec();
        m[starts[3]..starts[4]].copy_from_slice(&rec2);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(6, &[3]));
        let why = Corrupt::Offset {
            found: 2,
            expected: 3,
        };
        assert_eq!(s.skipped[0].why, why);
        // Record 3 re-encoded (valid CRC) as offset 40: more records than its bytes could hold.
        let (mut m, starts) = image(0, 6, 16, 4096);
        encode_at(&mut m, starts[3], 40, 3, 16);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(6, &[3]));
        assert_eq!(s.index.len(), 6);
    }

    #[test]
    fn a_record_hidden_in_a_damaged_body_is_not_taken_for_the_real_one() {
        // Record 3's body (publisher-chosen bytes) holds a valid record claiming offset 3, at
        // an 8-aligned segment position (body byte 12 = record byte 48).
        let (mut m, starts) = image(0, 8, 120, 4096);
        let mut body = vec![3u8; 120];
        encode_at(&mut body, 12, 3, 0xab, 10);
        let rec = crate::storage::NewRecord::message(1, 0, &body);
        assert_eq!(
            record::encode(&mut m[starts[3]..], 3, &rec),
            starts[4] - starts[3]
        );
        // A byte of record 3 before the planted one flips. Its length still points at
        // record 4, which verifies: the body is never searched.
        m[starts[3] + 40] ^= 1;
        let s = scan(&m, 0);
        assert_eq!(s.holes, vec![3]);
        assert_eq!(
            s.index[3] as usize, starts[3],
            "offset 3 is the damaged record, a hole"
        );
        assert_eq!(readable(&m, 0, &s), all_but(8, &[3]));
    }

    #[test]
    fn a_jump_the_skipped_bytes_can_hold_is_accepted_as_lost_offsets() {
        // Records 3..=5 (40 bytes each: empty bodies) destroyed: 3 lost offsets need 120
        // skipped bytes, which there are.
        let (mut m, starts) = image(0, 10, 0, 4096);
        m[starts[3]..starts[6]].fill(0xee);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(10, &[3, 4, 5]));
        assert_eq!(s.skipped[0].offsets, 3..6);
        // With only 80 bytes skipped, a claim of 3 lost records is refused (and then the
        // segment's real later records are found instead).
        let (mut m, starts) = image(0, 10, 0, 4096);
        m[starts[3]..starts[5]].fill(0xee);
        encode_at(&mut m, starts[5], 7, 5, 0);
        let s = scan(&m, 0);
        assert_eq!(readable(&m, 0, &s), all_but(10, &[3, 4, 5]));
        assert_eq!(s.skipped[0].offsets, 3..6);
    }

    fn small_cfg() -> LogConfig {
        LogConfig {
            max_bytes_per_file: 4096,
            ..LogConfig::default()
        }
    }

    fn write_segment(dir: &Path, base: u64, n: usize) {
        let (m, _) = image(base, n, 10, 4096);
        std::fs::write(dir.join(segment::segment_file_name(base)), m).unwrap();
    }

    #[test]
    fn overflowing_file_names_are_refused_and_left_untouched() {
        let tmp = TempDir::new("overflow");
        write_segment(tmp.path(), 0, 5);
        let wrapping = [u64::MAX, MAX_BASE + 1];
        for base in wrapping {
            let name = tmp.path().join(segment::segment_file_name(base));
            std::fs::write(&name, [0u8; 4096]).unwrap();
        }
        let rec = recover(tmp.path(), 4096).unwrap();
        let bases: Vec<u64> = rec.segments.iter().map(|s| s.base).collect();
        assert_eq!((bases, rec.corrupt), (vec![0], 0));
        for base in wrapping {
            let bytes = std::fs::read(tmp.path().join(segment::segment_file_name(base))).unwrap();
            assert_eq!(bytes, [0u8; 4096], "refused, not rewritten");
        }
        drop(rec);
        // A log over that directory serves and appends from the intact segment.
        let log = Log::open(tmp.path(), small_cfg()).unwrap();
        assert_eq!((log.head(), log.tail()), (0, 5));
    }

    #[test]
    fn lost_offsets_read_as_not_found_the_hole_as_corruption_and_missing_files_count() {
        let tmp = TempDir::new("lost");
        let (mut m, starts) = image(0, 10, 30, 4096);
        m[starts[3] + 1..starts[6]].fill(0x55);
        std::fs::write(tmp.path().join(segment::segment_file_name(0)), m).unwrap();
        // Segment 10..20 missing; 20..25 present.
        write_segment(tmp.path(), 20, 5);
        let log = Log::open(tmp.path(), small_cfg()).unwrap();
        let got: Vec<u64> = log.iter_from(0).map(|r| r.offset).collect();
        assert_eq!(got, [0, 1, 2, 6, 7, 8, 9, 20, 21, 22, 23, 24]);
        use StorageError::{Corruption, NotFound};
        assert!(matches!(log.read(3), Err(Corruption { offset: 3, .. })));
        for o in [4, 5, 10, 19] {
            assert!(matches!(log.read(o), Err(NotFound { .. })), "offset {o}");
        }
        assert_eq!(log.corrupt_records(), 3 + 10);
    }

    /// Random damage: no panic, and every index entry is a hole, LOST, or the right record.
    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng::new(0x1234_5678);
        for round in 0..400 {
            let (mut m, _) = image(0, 8, 20, 1024);
            for _ in 0..1 + rng.below(12) {
                let i = rng.below(m.len() as u64) as usize;
                m[i] = rng.next_u64() as u8;
            }
            assert!(scan(&m, u64::MAX).index.is_empty());
            let s = scan(&m, 0);
            assert!(s.end <= m.len());
            // Every entry is a hole, LOST, or the right record; real positions increase.
            let real: Vec<u32> = s.index.iter().copied().filter(|&p| p != LOST).collect();
            assert!(real.windows(2).all(|w| w[0] < w[1]), "round {round}");
            for (i, &p) in s.index.iter().enumerate() {
                let o = i as u64;
                if p != LOST && !s.holes.contains(&o) {
                    let (r, _) = record::decode(&m[p as usize..], o).expect("indexed record");
                    assert_eq!(r.body, vec![o as u8; 20], "round {round}");
                }
            }
        }
    }
}
