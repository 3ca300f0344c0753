//! Record encoding and decoding: pure functions over byte slices, no files, no maps.
//!
//! # Byte layout (little-endian)
//!
//! A record starts at an 8-byte aligned position inside a segment (after the segment header).
//!
//! | offset | size     | field           | meaning                                                        |
//! |-------:|---------:|-----------------|----------------------------------------------------------------|
//! |      0 |        4 | `len` u32       | header + body bytes, padding excluded; `0` = end of data       |
//! |      4 |        4 | `crc` u32       | CRC-32 (IEEE, `crc32fast`) over bytes `[0, 4)` then `[8, len)` |
//! |      8 |        8 | `offset` u64    | the record's log offset (must equal its position in the log)   |
//! |     16 |        8 | `timestamp_ns`  | i64, publish time                                              |
//! |     24 |        8 | `deliver_at_ns` | i64, earliest delivery time (deferred messages), 0 = now      |
//! |     32 |        1 | `kind` u8       | `1` = message; anything else is rejected                       |
//! |     33 |        1 | reserved u8     | `0`                                                            |
//! |     34 |        2 | `attempts` u16  | delivery attempts so far                                       |
//! |     36 | len - 36 | body            | the message body                                               |
//! |    len |    0..=7 | padding         | zeros up to the next multiple of 8                             |
//!
//! Format: `{ len | crc | offset | timestamp_ns | deliver_at_ns | kind | 0 | attempts | body | pad }`
//!
//! Why these choices:
//! - `len` counts the header, so a valid record never has `len == 0`; preallocated (zeroed)
//!   space therefore reads as "end of data" without a separate marker.
//! - The CRC covers `len` too, so a flipped length bit cannot silently re-frame a record.
//! - The record carries its own offset, so a CRC-valid record found at the wrong place (stale
//!   data, a copied file, a resync after corruption) is rejected instead of being renumbered.
//! - 8-byte alignment keeps the i64 fields naturally aligned and gives recovery a cheap sanity
//!   check on positions.

use super::Record;
use std::fmt;

/// Bytes before the body.
pub const RECORD_HEADER_LEN: usize = 36;
/// Every record starts at a multiple of this (relative to the segment start).
pub const RECORD_ALIGN: usize = 8;
/// The only record kind in format version 1.
pub const KIND_MESSAGE: u8 = 1;

/// Field positions inside a record; pinned by a unit test against the table above.
pub const LEN_AT: usize = 0;
/// Position of the CRC.
pub const CRC_AT: usize = 4;
/// Position of the offset.
pub const OFFSET_AT: usize = 8;
/// Position of the publish timestamp.
pub const TIMESTAMP_AT: usize = 16;
/// Position of the deliver-at time.
pub const DELIVER_AT_AT: usize = 24;
/// Position of the kind byte.
pub const KIND_AT: usize = 32;
/// Position of the reserved byte.
pub const RESERVED_AT: usize = 33;
/// Position of the attempts counter.
pub const ATTEMPTS_AT: usize = 34;

/// Why a record failed to decode. Carries numbers, not strings, so the read path never allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corrupt {
    /// Fewer bytes left than a record header.
    Truncated,
    /// `len` smaller than the header.
    LenTooSmall(u32),
    /// `len` runs past the end of the written data / segment.
    LenPastEnd(u32),
    /// Stored and computed CRC differ.
    Crc {
        /// CRC found in the record.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// Unknown `kind` byte (or non-zero reserved byte).
    Kind(u8),
    /// The record claims a different offset than its position implies.
    Offset {
        /// Offset stored in the record.
        found: u64,
        /// Offset implied by its position.
        expected: u64,
    },
}

impl fmt::Display for Corrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Corrupt::Truncated => write!(f, "truncated record header"),
            Corrupt::LenTooSmall(l) => write!(f, "record length {l} below header size"),
            Corrupt::LenPastEnd(l) => write!(f, "record length {l} runs past the end of data"),
            Corrupt::Crc { stored, computed } => {
                write!(
                    f,
                    "crc mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Corrupt::Kind(k) => write!(f, "unknown record kind/reserved byte {k:#04x}"),
            Corrupt::Offset { found, expected } => {
                write!(f, "record claims offset {found}, expected {expected}")
            }
        }
    }
}

/// Rounds `n` up to [`RECORD_ALIGN`]. `None` on overflow.
pub fn align_up(n: usize) -> Option<usize> {
    Some(n.checked_add(RECORD_ALIGN - 1)? & !(RECORD_ALIGN - 1))
}

/// Bytes a record with a `body_len`-byte body occupies, padding included. `None` on overflow.
pub fn encoded_len(body_len: usize) -> Option<usize> {
    align_up(RECORD_HEADER_LEN.checked_add(body_len)?)
}

/// The CRC over `len` and everything after the CRC field (see the table).
fn checksum(rec: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&rec[LEN_AT..CRC_AT]);
    h.update(&rec[OFFSET_AT..]);
    h.finalize()
}

fn put_u64(dst: &mut [u8], at: usize, v: u64) {
    dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Encodes a record into `dst`, returning the bytes used (padding included).
///
/// # Panics
/// If `dst` is shorter than `encoded_len(body.len())` or the body does not fit a u32 length:
/// callers check both first (an internal invariant, not an input condition).
pub fn encode(
    dst: &mut [u8],
    offset: u64,
    ts: i64,
    deliver_at: i64,
    attempts: u16,
    body: &[u8],
) -> usize {
    let len = RECORD_HEADER_LEN + body.len();
    let span = align_up(len).unwrap_or(usize::MAX);
    assert!(
        dst.len() >= span,
        "record of {span} bytes into {} bytes",
        dst.len()
    );
    let len32 = u32::try_from(len).unwrap_or(u32::MAX);
    assert!(len32 as usize == len, "record length {len} exceeds u32");
    dst[LEN_AT..CRC_AT].copy_from_slice(&len32.to_le_bytes());
    put_u64(dst, OFFSET_AT, offset);
    put_u64(dst, TIMESTAMP_AT, ts as u64);
    put_u64(dst, DELIVER_AT_AT, deliver_at as u64);
    dst[KIND_AT] = KIND_MESSAGE;
    dst[RESERVED_AT] = 0;
    dst[ATTEMPTS_AT..RECORD_HEADER_LEN].copy_from_slice(&attempts.to_le_bytes());
    dst[RECORD_HEADER_LEN..len].copy_from_slice(body);
    dst[len..span].fill(0);
    let crc = checksum(&dst[..len]);
    dst[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
    span
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// True when `buf` (the bytes from a record position to the end of data) holds no further
/// record: fewer than 4 bytes left, or a zero length (preallocated space is zeroed).
pub fn is_end(buf: &[u8]) -> bool {
    buf.len() < CRC_AT || u32_at(buf, LEN_AT) == 0
}

/// Decodes and verifies the record at the start of `buf` (which runs to the end of the written
/// data), expecting it to carry `expected` as its offset. Returns the record (borrowing `buf`)
/// and its span, padding included. Never panics, whatever the bytes.
pub fn decode(buf: &[u8], expected: u64) -> Result<(Record<'_>, usize), Corrupt> {
    if buf.len() < RECORD_HEADER_LEN {
        return Err(Corrupt::Truncated);
    }
    let len32 = u32_at(buf, LEN_AT);
    let len = len32 as usize;
    if len < RECORD_HEADER_LEN {
        return Err(Corrupt::LenTooSmall(len32));
    }
    if len > buf.len() {
        return Err(Corrupt::LenPastEnd(len32));
    }
    let stored = u32_at(buf, CRC_AT);
    let computed = checksum(&buf[..len]);
    if stored != computed {
        return Err(Corrupt::Crc { stored, computed });
    }
    // Past the CRC the bytes are what a writer wrote; these checks catch format mismatches and
    // misplaced (stale or copied) records, not bit rot.
    if buf[KIND_AT] != KIND_MESSAGE || buf[RESERVED_AT] != 0 {
        return Err(Corrupt::Kind(buf[KIND_AT] | buf[RESERVED_AT]));
    }
    let found = u64_at(buf, OFFSET_AT);
    if found != expected {
        return Err(Corrupt::Offset { found, expected });
    }
    let rec = Record {
        offset: found,
        timestamp_ns: u64_at(buf, TIMESTAMP_AT) as i64,
        deliver_at_ns: u64_at(buf, DELIVER_AT_AT) as i64,
        attempts: u16::from_le_bytes([buf[ATTEMPTS_AT], buf[ATTEMPTS_AT + 1]]),
        body: &buf[RECORD_HEADER_LEN..len],
    };
    // `len` <= u32::MAX, so rounding up cannot overflow a 64-bit usize.
    let span = align_up(len).unwrap_or(len);
    Ok((rec, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(offset: u64, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(body.len()).unwrap()];
        let n = encode(&mut v, offset, 11, -22, 3, body);
        assert_eq!(n, v.len());
        v
    }

    #[test]
    fn layout_constants_match_the_documented_table() {
        // docs/storage-format.md and the table above state these numbers.
        assert_eq!(
            (LEN_AT, CRC_AT, OFFSET_AT, TIMESTAMP_AT, DELIVER_AT_AT),
            (0, 4, 8, 16, 24)
        );
        assert_eq!(
            (KIND_AT, RESERVED_AT, ATTEMPTS_AT, RECORD_HEADER_LEN),
            (32, 33, 34, 36)
        );
        assert_eq!((RECORD_ALIGN, KIND_MESSAGE), (8, 1));
        assert_eq!(encoded_len(0), Some(40));
        assert_eq!(encoded_len(100), Some(136));
        assert_eq!(encoded_len(1024), Some(1064));
        assert_eq!(encoded_len(usize::MAX), None);
    }

    #[test]
    fn golden_bytes_of_a_small_record() {
        let v = enc(7, b"hi");
        assert_eq!(&v[0..4], &38u32.to_le_bytes());
        assert_eq!(&v[8..16], &7u64.to_le_bytes());
        assert_eq!(&v[16..24], &11i64.to_le_bytes());
        assert_eq!(&v[24..32], &(-22i64).to_le_bytes());
        assert_eq!(&v[32..36], &[1, 0, 3, 0]);
        assert_eq!(&v[36..], &[b'h', b'i', 0, 0]);
        let mut h = crc32fast::Hasher::new();
        h.update(&v[0..4]);
        h.update(&v[8..38]);
        assert_eq!(&v[4..8], &h.finalize().to_le_bytes());
    }

    #[test]
    fn round_trip() {
        for n in [0usize, 1, 4, 7, 8, 100, 1000] {
            let body: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let v = enc(42, &body);
            let (r, span) = decode(&v, 42).unwrap();
            assert_eq!(span, v.len());
            assert_eq!(
                (r.offset, r.timestamp_ns, r.deliver_at_ns, r.attempts),
                (42, 11, -22, 3)
            );
            assert_eq!(r.body, &body[..]);
        }
    }

    #[test]
    fn wrong_offset_is_rejected() {
        let v = enc(5, b"x");
        assert!(matches!(
            decode(&v, 6),
            Err(Corrupt::Offset {
                found: 5,
                expected: 6
            })
        ));
    }

    #[test]
    fn every_single_bit_flip_is_rejected() {
        let v = enc(9, b"the quick brown fox");
        let len = RECORD_HEADER_LEN + 19;
        for byte in 0..len {
            for bit in 0..8 {
                let mut w = v.clone();
                w[byte] ^= 1 << bit;
                assert!(
                    decode(&w, 9).is_err(),
                    "flip at byte {byte} bit {bit} accepted"
                );
            }
        }
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let v = enc(1, b"0123456789abcdef");
        for cut in 0..RECORD_HEADER_LEN + 16 {
            assert!(decode(&v[..cut], 1).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn zero_length_is_end_of_data() {
        assert!(is_end(&[0u8; 64]));
        assert!(is_end(&[1u8; 3]));
        assert!(!is_end(&enc(0, b"a")));
        assert!(matches!(
            decode(&[0u8; 64], 0),
            Err(Corrupt::LenTooSmall(0))
        ));
    }
}
