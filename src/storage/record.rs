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
//! |     32 |        1 | `kind` u8       | `1` message, `2` carried, `3` dead letter, `4` keyed message   |
//! |     33 |        1 | reserved u8     | `0`                                                            |
//! |     34 |        2 | `attempts` u16  | delivery attempts so far                                       |
//! |     36 | len - 36 | body            | kind 1: the message body; kind 2: see below                    |
//! |    len |    0..=7 | padding         | zeros up to the next multiple of 8                             |
//!
//! Format: `{ len | crc | offset | timestamp_ns | deliver_at_ns | kind | 0 | attempts | body | pad }`
//!
//! A **carried** record (kind 2) is a copy of an unfinished message that a channel re-appended
//! at the tail so the old segment holding the original can be deleted. Its body starts with
//! the original's offset (the message id clients know), so `len >= 44`:
//!
//! | offset | size     | field              | meaning                                           |
//! |-------:|---------:|--------------------|---------------------------------------------------|
//! |     36 |        8 | `orig_offset` u64  | offset of the original kind-1 record (the id)     |
//! |     44 | len - 44 | body               | the original message body                         |
//!
//! Its `timestamp_ns` is the original publish time, `deliver_at_ns` the deferral deadline at
//! carry time (0 if ready) and `attempts` the deliveries so far. Carried records belong to the
//! channel that wrote them (the checkpoint says which); a channel's cursor skips them.
//! Readers from before kind 2 existed reject it as an unknown kind (so the format version
//! stays 1: an old reader fails loudly instead of delivering a duplicate).
//!
//! A **dead letter** (kind 3) is a message that failed `max_attempts` times (or expired) on a
//! channel of another topic, appended to that topic's dead-letter topic `<topic>.dead`. Its
//! metadata comes before the body, so `len >= 56 + topic_len + channel_len`:
//!
//! | offset        | size        | field                   | meaning                                        |
//! |--------------:|------------:|-------------------------|------------------------------------------------|
//! |            36 |           8 | `orig_id` u64           | the message's id (offset) in its own topic     |
//! |            44 |           8 | `orig_timestamp_ns` i64 | its original publish time                      |
//! |            52 |           1 | `reason` u8             | `1` = req, `2` = timeout, `3` = ttl            |
//! |            53 |           1 | `topic_len` u8          | 1..=64                                         |
//! |            54 |           1 | `channel_len` u8        | 1..=64                                         |
//! |            55 |           1 | reserved u8             | `0`                                            |
//! |            56 |   topic_len | topic                   | the topic it died on (UTF-8)                   |
//! | 56+topic_len  | channel_len | channel                 | the channel it died on (UTF-8)                 |
//! | after those   |        rest | body                    | the original body, byte for byte               |
//!
//! Its header's `timestamp_ns` is when it was dead-lettered (a fresh publish to the dead-letter
//! topic, so a TTL there counts from then), `attempts` the deliveries it had. To a consumer of
//! the dead-letter topic it is an ordinary message with the original body. Kind 3 was added as
//! kind 2 was: an older reader rejects it loudly, the format version stays 1.
//!
//! A **keyed message** (kind 4) is a publish that named its own dedup key (HTTP `/pub?dedup_id=`):
//! the key is kept so the dedup window can be rebuilt from the log after a restart or a crash.
//!
//! | offset     | size      | field          | meaning                                     |
//! |-----------:|----------:|----------------|---------------------------------------------|
//! |         36 |         1 | `key_len` u8   | 1..=[`MAX_DEDUP_KEY_LEN`]                   |
//! |         37 |   key_len | key            | the `dedup_id`, as given                    |
//! | 37+key_len |      rest | body           | the message body                            |
//!
//! Otherwise it is a kind-1 message in every way (delivered, carried, counted alike).
//!
//! Why these choices:
//! - `len` counts the header, so a valid record never has `len == 0`; preallocated (zeroed)
//!   space therefore reads as "end of data" without a separate marker.
//! - The CRC covers `len` too, so a flipped length bit cannot silently re-frame a record.
//! - The record carries its own offset, so a CRC-valid record found at the wrong place (stale
//!   data, a copied file, a resync after corruption) is rejected instead of being renumbered.
//! - 8-byte alignment keeps the i64 fields naturally aligned and gives recovery a cheap sanity
//!   check on positions.

use super::{NewRecord, Record};
use std::fmt;

/// Bytes before the body.
pub const RECORD_HEADER_LEN: usize = 36;
/// Every record starts at a multiple of this (relative to the segment start).
pub const RECORD_ALIGN: usize = 8;
/// Kind byte of a published message.
pub const KIND_MESSAGE: u8 = 1;
/// Kind byte of a carried (re-appended) unfinished message; its body starts with the original
/// offset.
pub const KIND_CARRIED: u8 = 2;
/// Bytes of the original-offset prefix at the start of a carried record's body.
pub const CARRIED_PREFIX_LEN: usize = 8;
/// Kind byte of a dead letter; its body starts with [`DEAD_FIXED_LEN`] bytes of metadata and
/// the two names.
pub const KIND_DEAD: u8 = 3;
/// Fixed metadata bytes at the start of a dead letter's body (before the names).
pub const DEAD_FIXED_LEN: usize = 20;

/// Kind byte of a message published with an explicit dedup key.
pub const KIND_KEYED: u8 = 4;
/// Longest dedup key a keyed message holds.
pub const MAX_DEDUP_KEY_LEN: usize = 128;

/// Why a message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// It was REQ'd after its last allowed attempt.
    Req = 1,
    /// Its in-flight timeout expired after its last allowed attempt.
    Timeout = 2,
    /// It was older than the channel's message TTL.
    Ttl = 3,
}

impl DeadReason {
    /// The reason's name in JSON and docs.
    pub fn name(self) -> &'static str {
        match self {
            DeadReason::Req => "req",
            DeadReason::Timeout => "timeout",
            DeadReason::Ttl => "ttl",
        }
    }

    fn from_byte(b: u8) -> Option<DeadReason> {
        match b {
            1 => Some(DeadReason::Req),
            2 => Some(DeadReason::Timeout),
            3 => Some(DeadReason::Ttl),
            _ => None,
        }
    }
}

/// A dead letter's metadata (kind 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadMeta<'a> {
    /// The message's id offset in its own topic.
    pub orig_id: u64,
    /// Its original publish time, ns.
    pub orig_timestamp_ns: i64,
    /// Why it died.
    pub reason: DeadReason,
    /// The topic it died on (1..=64 bytes).
    pub topic: &'a str,
    /// The channel it died on (1..=64 bytes).
    pub channel: &'a str,
}

impl DeadMeta<'_> {
    /// Bytes the metadata takes at the start of the body.
    pub fn len(&self) -> usize {
        DEAD_FIXED_LEN + self.topic.len() + self.channel.len()
    }

    /// Never empty (the fixed part is always there); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

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
    /// A carried record too short to hold its original-offset prefix (the `len` found).
    CarriedTooShort(u32),
    /// A dead letter whose metadata is short, has a bad reason or name (the `len` found).
    BadDeadLetter(u32),
    /// A keyed message whose key length is 0 or runs past the record (the `len` found).
    BadKey(u32),
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
            Corrupt::CarriedTooShort(l) => {
                write!(f, "carried record of length {l} lacks its original offset")
            }
            Corrupt::BadKey(l) => write!(f, "keyed message of length {l} has a bad key"),
            Corrupt::BadDeadLetter(l) => {
                write!(f, "dead letter of length {l} has malformed metadata")
            }
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
    let mut h = new_hasher();
    h.update(&rec[LEN_AT..CRC_AT]);
    h.update(&rec[OFFSET_AT..]);
    h.finalize()
}

/// A fresh CRC-32 hasher, cloned from one made once. `Hasher::new` detects the CPU's
/// features on every call: 22 instructions per record under callgrind, paid on every append
/// and every verified read.
fn new_hasher() -> crc32fast::Hasher {
    static PROTOTYPE: std::sync::OnceLock<crc32fast::Hasher> = std::sync::OnceLock::new();
    PROTOTYPE.get_or_init(crc32fast::Hasher::new).clone()
}

fn put_u64(dst: &mut [u8], at: usize, v: u64) {
    dst[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Encodes a record at `offset` into `dst`, returning the bytes used (padding included). A
/// record with `carried_from` set is written as kind 2 with the original offset before the body.
///
/// # Panics
/// If `dst` is shorter than `encoded_len(rec.stored_len())` or the record does not fit a u32
/// length: callers check both first (an internal invariant, not an input condition).
#[inline(always)]
pub fn encode(dst: &mut [u8], offset: u64, rec: &NewRecord<'_>) -> usize {
    let len = RECORD_HEADER_LEN + rec.stored_len();
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
    put_u64(dst, TIMESTAMP_AT, rec.timestamp_ns as u64);
    put_u64(dst, DELIVER_AT_AT, rec.deliver_at_ns as u64);
    dst[RESERVED_AT] = 0;
    dst[ATTEMPTS_AT..RECORD_HEADER_LEN].copy_from_slice(&rec.attempts.to_le_bytes());
    let body_at = if rec.carried_from.is_none() && rec.dead.is_none() && rec.dedup_key.is_empty() {
        dst[KIND_AT] = KIND_MESSAGE;
        RECORD_HEADER_LEN
    } else {
        encode_kind_prefix(dst, rec)
    };
    dst[body_at..len].copy_from_slice(rec.body);
    dst[len..span].fill(0);
    let crc = checksum(&dst[..len]);
    dst[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
    span
}

/// Writes the kind of a record that is not a plain message (carried, dead letter, keyed) and
/// what comes between its header and its body; returns where the body starts. Out of line:
/// the plain message, every publish, stays small enough to be inlined.
#[inline(never)]
fn encode_kind_prefix(dst: &mut [u8], rec: &NewRecord<'_>) -> usize {
    match (rec.carried_from, &rec.dead) {
        (Some(orig), _) => {
            dst[KIND_AT] = KIND_CARRIED;
            put_u64(dst, RECORD_HEADER_LEN, orig);
            RECORD_HEADER_LEN + CARRIED_PREFIX_LEN
        }
        (None, Some(meta)) => {
            dst[KIND_AT] = KIND_DEAD;
            encode_dead(&mut dst[RECORD_HEADER_LEN..], meta)
        }
        (None, None) => {
            dst[KIND_AT] = KIND_KEYED;
            let key = rec.dedup_key;
            assert!(
                key.len() <= MAX_DEDUP_KEY_LEN,
                "dedup key of {} bytes",
                key.len()
            );
            dst[RECORD_HEADER_LEN] = u8::try_from(key.len()).unwrap_or(u8::MAX);
            let at = RECORD_HEADER_LEN + 1;
            dst[at..at + key.len()].copy_from_slice(key);
            at + key.len()
        }
    }
}

/// Writes a dead letter's metadata at the start of `dst`; returns where the body starts
/// (relative to the record).
fn encode_dead(dst: &mut [u8], meta: &DeadMeta<'_>) -> usize {
    put_u64(dst, 0, meta.orig_id);
    put_u64(dst, 8, meta.orig_timestamp_ns as u64);
    // Names are 1..=64 bytes (validated by whoever built the meta): they fit a u8.
    let (tl, cl) = (meta.topic.len(), meta.channel.len());
    dst[16] = meta.reason as u8;
    dst[17] = u8::try_from(tl).unwrap_or(u8::MAX);
    dst[18] = u8::try_from(cl).unwrap_or(u8::MAX);
    dst[19] = 0;
    dst[DEAD_FIXED_LEN..DEAD_FIXED_LEN + tl].copy_from_slice(meta.topic.as_bytes());
    dst[DEAD_FIXED_LEN + tl..DEAD_FIXED_LEN + tl + cl].copy_from_slice(meta.channel.as_bytes());
    RECORD_HEADER_LEN + meta.len()
}

/// Reads a dead letter's metadata from `rest` (the bytes after the header, up to `len`).
fn decode_dead(rest: &[u8]) -> Option<(DeadMeta<'_>, usize)> {
    let fixed = rest.get(..DEAD_FIXED_LEN)?;
    let reason = DeadReason::from_byte(fixed[16])?;
    let (tl, cl) = (usize::from(fixed[17]), usize::from(fixed[18]));
    // Names are nsqd's 1..=64 bytes (`protocol::names::MAX_NAME_LEN`).
    if fixed[19] != 0 || !(1..=64).contains(&tl) || !(1..=64).contains(&cl) {
        return None;
    }
    let topic = rest.get(DEAD_FIXED_LEN..DEAD_FIXED_LEN + tl)?;
    let channel = rest.get(DEAD_FIXED_LEN + tl..DEAD_FIXED_LEN + tl + cl)?;
    let meta = DeadMeta {
        orig_id: u64_at(fixed, 0),
        orig_timestamp_ns: u64_at(fixed, 8) as i64,
        reason,
        topic: std::str::from_utf8(topic).ok()?,
        channel: std::str::from_utf8(channel).ok()?,
    };
    Some((meta, DEAD_FIXED_LEN + tl + cl))
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

/// The offset the record at the start of `buf` claims, unverified: recovery's cheap first
/// filter when it searches damaged bytes for the next record (`decode` then verifies it).
/// `None` if fewer than a record header's bytes are left.
pub fn claimed_offset(buf: &[u8]) -> Option<u64> {
    (buf.len() >= RECORD_HEADER_LEN).then(|| u64_at(buf, OFFSET_AT))
}

/// Decodes and verifies the record at the start of `buf` (which runs to the end of the written
/// data), expecting it to carry `expected` as its offset. Returns the record (borrowing `buf`)
/// and its span, padding included. Never panics, whatever the bytes.
pub fn decode(buf: &[u8], expected: u64) -> Result<(Record<'_>, usize), Corrupt> {
    decode_with(buf, expected, true)
}

/// As [`decode`], but skips the CRC when `verify_crc` is false: only for a record the caller
/// has just decoded with its CRC checked (every other check still runs).
pub fn decode_with(
    buf: &[u8],
    expected: u64,
    verify_crc: bool,
) -> Result<(Record<'_>, usize), Corrupt> {
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
    if verify_crc {
        let stored = u32_at(buf, CRC_AT);
        let computed = checksum(&buf[..len]);
        if stored != computed {
            return Err(Corrupt::Crc { stored, computed });
        }
    }
    // Past the CRC the bytes are what a writer wrote; these checks catch format mismatches and
    // misplaced (stale or copied) records, not bit rot.
    if buf[RESERVED_AT] != 0 {
        return Err(Corrupt::Kind(buf[KIND_AT] | buf[RESERVED_AT]));
    }
    let mut dead = None;
    let mut dedup_key: &[u8] = &[];
    let (carried_from, body_at) = match buf[KIND_AT] {
        KIND_MESSAGE => (None, RECORD_HEADER_LEN),
        KIND_KEYED => {
            let key_len = usize::from(*buf.get(RECORD_HEADER_LEN).ok_or(Corrupt::BadKey(len32))?);
            let end = RECORD_HEADER_LEN + 1 + key_len;
            if key_len == 0 || end > len {
                return Err(Corrupt::BadKey(len32));
            }
            dedup_key = &buf[RECORD_HEADER_LEN + 1..end];
            (None, end)
        }
        KIND_DEAD => {
            let (meta, used) =
                decode_dead(&buf[RECORD_HEADER_LEN..len]).ok_or(Corrupt::BadDeadLetter(len32))?;
            dead = Some(meta);
            (None, RECORD_HEADER_LEN + used)
        }
        KIND_CARRIED if len < RECORD_HEADER_LEN + CARRIED_PREFIX_LEN => {
            return Err(Corrupt::CarriedTooShort(len32))
        }
        KIND_CARRIED => (
            Some(u64_at(buf, RECORD_HEADER_LEN)),
            RECORD_HEADER_LEN + CARRIED_PREFIX_LEN,
        ),
        other => return Err(Corrupt::Kind(other)),
    };
    let found = u64_at(buf, OFFSET_AT);
    if found != expected {
        return Err(Corrupt::Offset { found, expected });
    }
    let rec = Record {
        offset: found,
        timestamp_ns: u64_at(buf, TIMESTAMP_AT) as i64,
        deliver_at_ns: u64_at(buf, DELIVER_AT_AT) as i64,
        attempts: u16::from_le_bytes([buf[ATTEMPTS_AT], buf[ATTEMPTS_AT + 1]]),
        carried_from,
        dead,
        dedup_key,
        body: &buf[body_at..len],
    };
    // `len` <= u32::MAX, so rounding up cannot overflow a 64-bit usize.
    let span = align_up(len).unwrap_or(len);
    Ok((rec, span))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_rec(body: &[u8], carried_from: Option<u64>) -> NewRecord<'_> {
        NewRecord {
            timestamp_ns: 11,
            deliver_at_ns: -22,
            attempts: 3,
            carried_from,
            dead: None,
            dedup_key: &[],
            body,
        }
    }

    fn enc_rec(offset: u64, rec: &NewRecord<'_>) -> Vec<u8> {
        let mut v = vec![0u8; encoded_len(rec.stored_len()).unwrap()];
        let n = encode(&mut v, offset, rec);
        assert_eq!(n, v.len());
        v
    }

    fn enc(offset: u64, body: &[u8]) -> Vec<u8> {
        enc_rec(offset, &new_rec(body, None))
    }

    #[test]
    fn dead_letters_round_trip_and_bad_metadata_is_corrupt() {
        let meta = DeadMeta {
            orig_id: 42,
            orig_timestamp_ns: 1234,
            reason: DeadReason::Timeout,
            topic: "orders",
            channel: "billing",
        };
        let body = [0u8, 255, b'x', 7];
        let rec = NewRecord {
            dead: Some(meta),
            ..new_rec(&body, None)
        };
        let v = enc_rec(9, &rec);
        assert_eq!(v[KIND_AT], KIND_DEAD);
        assert_eq!(v[52..56], [2, 6, 7, 0]);
        assert_eq!(&v[56..62], b"orders");
        let (back, _) = decode(&v, 9).unwrap();
        assert_eq!(back.dead, Some(meta));
        assert_eq!(back.body, &body, "the body is kept byte for byte");
        assert_eq!(back.carried_from, None);
        // A bad reason, a zero name length or a name running past the record: corrupt, even
        // with a valid CRC.
        for (at, byte) in [(52, 9u8), (53, 0), (54, 200)] {
            let mut bad = v.clone();
            bad[at] = byte;
            let len = u32_at(&bad, LEN_AT) as usize;
            let crc = checksum(&bad[..len]);
            bad[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(decode(&bad, 9), Err(Corrupt::BadDeadLetter(_))),
                "byte {at}"
            );
        }
    }

    #[test]
    fn keyed_messages_round_trip_and_a_bad_key_is_corrupt() {
        let rec = NewRecord {
            dedup_key: b"order-42",
            ..new_rec(b"body", None)
        };
        let v = enc_rec(3, &rec);
        assert_eq!((v[KIND_AT], v[36]), (KIND_KEYED, 8));
        assert_eq!(&v[37..45], b"order-42");
        let (back, _) = decode(&v, 3).unwrap();
        assert_eq!(
            (back.dedup_key, back.body),
            (&b"order-42"[..], &b"body"[..])
        );
        for key_len in [0u8, 200] {
            let mut bad = v.clone();
            bad[36] = key_len;
            let len = u32_at(&bad, LEN_AT) as usize;
            let crc = checksum(&bad[..len]);
            bad[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
            assert!(
                matches!(decode(&bad, 3), Err(Corrupt::BadKey(_))),
                "{key_len}"
            );
        }
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
        assert_eq!((RECORD_ALIGN, KIND_MESSAGE, KIND_CARRIED), (8, 1, 2));
        assert_eq!((KIND_DEAD, DEAD_FIXED_LEN), (3, 20));
        assert_eq!(CARRIED_PREFIX_LEN, 8);
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
    fn carried_round_trip_keeps_the_original_offset_and_body() {
        for n in [0usize, 1, 8, 100] {
            let body: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let v = enc_rec(900, &new_rec(&body, Some(17)));
            assert_eq!(v[KIND_AT], KIND_CARRIED);
            assert_eq!(&v[36..44], &17u64.to_le_bytes());
            assert_eq!(v.len(), encoded_len(n + 8).unwrap());
            let (r, span) = decode(&v, 900).unwrap();
            assert_eq!(span, v.len());
            assert_eq!(
                (r.offset, r.carried_from, r.attempts, r.deliver_at_ns),
                (900, Some(17), 3, -22)
            );
            assert_eq!(r.body, &body[..]);
        }
        let v = enc(4, b"x");
        let (plain, _) = decode(&v, 4).unwrap();
        assert_eq!(plain.carried_from, None);
    }

    /// Rewrites the kind byte and fixes the CRC, so only the kind check can object.
    fn with_kind(mut v: Vec<u8>, kind: u8) -> Vec<u8> {
        v[KIND_AT] = kind;
        let len = u32_at(&v, LEN_AT) as usize;
        let crc = checksum(&v[..len]);
        v[CRC_AT..OFFSET_AT].copy_from_slice(&crc.to_le_bytes());
        v
    }

    #[test]
    fn unknown_kinds_and_short_carried_records_are_rejected() {
        for kind in [0u8, 5, 0x80, 0xff] {
            let v = with_kind(enc(1, b"0123456789"), kind);
            assert_eq!(decode(&v, 1).map(|_| ()), Err(Corrupt::Kind(kind)));
        }
        // A message body read as a dead letter's metadata does not parse.
        let v = with_kind(enc(1, b"0123456789"), KIND_DEAD);
        assert_eq!(decode(&v, 1).map(|_| ()), Err(Corrupt::BadDeadLetter(46)));
        // A kind-2 record whose body cannot hold the 8-byte original offset.
        let v = with_kind(enc(1, b"short"), KIND_CARRIED);
        assert_eq!(decode(&v, 1).map(|_| ()), Err(Corrupt::CarriedTooShort(41)));
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
    fn zero_length_is_never_a_record_and_the_claimed_offset_is_read_raw() {
        // Recovery tells a zero word followed by stray bytes from a torn record by this error.
        assert!(matches!(
            decode(&[0u8; 64], 0),
            Err(Corrupt::LenTooSmall(0))
        ));
        let mut r = enc(77, b"abc");
        assert_eq!(claimed_offset(&r), Some(77));
        r[OFFSET_AT] ^= 1; // no longer verifies, but still claims
        assert_eq!(claimed_offset(&r), Some(76));
        assert_eq!(claimed_offset(&r[..RECORD_HEADER_LEN - 1]), None);
    }
}
