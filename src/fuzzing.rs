//! Entry points for the `fuzz/` crate only: **not a stable API**, hidden from the docs.
//!
//! The fuzz targets (`fuzz/fuzz_targets/*.rs`, see `docs/fuzzing.md`) drive the public entry
//! points where they exist (`protocol::decode`, `http::parse_request`, `storage::Log::open`,
//! `broker::Broker::open`). The storage internals below have no public path, so this module
//! exposes them through thin wrappers that keep the targets independent of the internals'
//! exact shapes: when an internal signature changes, only this file needs adapting.

use crate::storage::{record, recovery, segment, NewRecord, Record};

pub use crate::storage::record::Corrupt;

/// Bytes of a segment header; records start here.
pub const SEGMENT_HEADER_LEN: usize = segment::SEGMENT_HEADER_LEN;

/// Bytes of a record header; the body (or a carried record's original offset) follows.
pub const RECORD_HEADER_LEN: usize = record::RECORD_HEADER_LEN;

/// The largest segment base recovery accepts: a file named above it is refused (its offsets
/// could overflow) and the scan reads such a segment as empty.
pub const MAX_SEGMENT_BASE: u64 = recovery::MAX_BASE;

/// Alignment of every record inside a segment.
pub const RECORD_ALIGN: usize = record::RECORD_ALIGN;

/// The valid 32-byte header of a segment starting at `base`.
pub fn segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN] {
    segment::encode_header(base)
}

/// The file name of a segment starting at `base` (`{base:020}.log`).
pub fn segment_file_name(base: u64) -> String {
    segment::segment_file_name(base)
}

/// Encodes one record at `offset` (padding included); `None` when its length would not fit
/// the format's u32 length field.
pub fn encode_record(offset: u64, rec: &NewRecord<'_>) -> Option<Vec<u8>> {
    let span = record::encoded_len(rec.stored_len())?;
    if record::RECORD_HEADER_LEN + rec.stored_len() > u32::MAX as usize {
        return None;
    }
    let mut buf = vec![0u8; span];
    record::encode(&mut buf, offset, rec);
    Some(buf)
}

/// Decodes and CRC-verifies the record at the start of `buf`, expecting offset `expected`:
/// the record and its span (padding included).
///
/// # Errors
/// Why the bytes are not that record.
pub fn decode_record(buf: &[u8], expected: u64) -> Result<(Record<'_>, usize), Corrupt> {
    record::decode(buf, expected)
}

/// What the recovery scan made of one segment, in a shape that does not follow its internals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanSummary {
    /// Every record the scan accepted as valid: `(offset, byte position)`, in scan order.
    pub accepted: Vec<(u64, usize)>,
    /// Offsets the scan kept in the index although their bytes fail verification.
    pub holes: Vec<u64>,
    /// Where the good data ends (appends would continue here).
    pub end: usize,
}

/// Runs the open-time recovery scan over `map` (a whole segment, header included) from
/// `base`. `_sealed` (true for a segment that is not the newest) is kept for the targets: the
/// scan now treats every segment alike (only what follows the last valid record differs, and
/// that is decided by `recover`, not by the scan).
pub fn scan_segment(map: &[u8], base: u64, _sealed: bool) -> ScanSummary {
    let scan = recovery::scan(map, base);
    let mut accepted = Vec::with_capacity(scan.index.len());
    let mut offset = base;
    for &pos in &scan.index {
        if pos != segment::LOST && !scan.holes.contains(&offset) {
            accepted.push((offset, pos as usize));
        }
        offset = offset.wrapping_add(1);
    }
    ScanSummary {
        accepted,
        holes: scan.holes,
        end: scan.end,
    }
}
