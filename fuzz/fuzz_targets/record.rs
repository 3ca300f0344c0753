//! The record decoder and the open-time recovery scan over arbitrary bytes.
//!
//! Input: a mode byte, then
//! - mode 0: an expected offset and raw bytes: `decode_record` never panics; a record it
//!   accepts lies inside the bytes and re-encodes to exactly those bytes (so its CRC is valid);
//! - mode 1: a record's fields: encode → decode gives the same record and span;
//! - mode 2/3: a segment (header, records, damage, raw tail; `build_segment`) and a base offset
//!   (huge ones included) scanned as the newest (2) or a sealed (3) segment: never panics, every
//!   accepted record sits at an aligned position after the header, in increasing order, before
//!   the end of good data, and re-decodes with a valid CRC at its offset; a clean segment loses
//!   no record.
#![no_main]

use arbitrary::Unstructured;
use corq::fuzzing::{
    decode_record, encode_record, scan_segment, MAX_SEGMENT_BASE, RECORD_ALIGN, SEGMENT_HEADER_LEN,
};
use corq::storage::NewRecord;
use corq_fuzz::{any_base, build_segment, occurs_in};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(mode) = u.arbitrary::<u8>() else {
        return;
    };
    match mode % 4 {
        0 => raw_decode(&mut u),
        1 => round_trip(&mut u),
        m => segment_scan(&mut u, m == 3),
    }
});

fn raw_decode(u: &mut Unstructured<'_>) {
    let Ok(expected) = u.arbitrary::<u64>() else {
        return;
    };
    let buf = u.bytes(u.len()).unwrap_or(&[]);
    if let Ok((rec, span)) = decode_record(buf, expected) {
        assert_eq!(rec.offset, expected);
        assert!(
            span <= buf.len().next_multiple_of(RECORD_ALIGN),
            "span {span} of {}",
            buf.len()
        );
        assert!(
            occurs_in(&[prefixed(buf)], &rec, 0),
            "accepted record re-encodes differently"
        );
    }
}

/// `buf` placed where a segment's first record goes, so `occurs_in` can look for it.
fn prefixed(buf: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; SEGMENT_HEADER_LEN];
    v.extend_from_slice(buf);
    v
}

fn round_trip(u: &mut Unstructured<'_>) {
    let (Ok(offset), Ok(ts), Ok(at), Ok(attempts), Ok(carried)) = (
        u.arbitrary::<u64>(),
        u.arbitrary::<i64>(),
        u.arbitrary::<i64>(),
        u.arbitrary::<u16>(),
        u.arbitrary::<Option<u64>>(),
    ) else {
        return;
    };
    // A keyed (kind 4) record half the time, when it is not carried (a carried copy drops it).
    let key_len = usize::from(u.arbitrary::<u8>().unwrap_or(0) % 17);
    let dedup_key = if carried.is_none() {
        u.bytes(key_len).unwrap_or(&[])
    } else {
        &[]
    };
    let rec = NewRecord {
        timestamp_ns: ts,
        deliver_at_ns: at,
        attempts,
        carried_from: carried,
        dead: None,
        dedup_key,
        body: u.bytes(u.len()).unwrap_or(&[]),
    };
    let bytes = encode_record(offset, &rec).expect("a small record encodes");
    assert_eq!(bytes.len() % RECORD_ALIGN, 0);
    let (got, span) = decode_record(&bytes, offset).expect("an encoded record decodes");
    assert_eq!(span, bytes.len());
    assert_eq!(
        (
            got.offset,
            got.timestamp_ns,
            got.deliver_at_ns,
            got.attempts,
            got.carried_from,
            got.dedup_key,
            got.body
        ),
        (offset, ts, at, attempts, carried, dedup_key, rec.body)
    );
    if bytes.len() > 8 {
        // Any single flipped bit after the CRC field is caught.
        let mut bad = bytes.clone();
        let i = 8 + (ts as u64 as usize) % (bad.len() - 8);
        if i < 36 + rec.stored_len() {
            bad[i] ^= 1 << (at as u64 % 8);
            assert!(
                decode_record(&bad, offset).is_err(),
                "flip at {i} went unnoticed"
            );
        }
    }
}

fn segment_scan(u: &mut Unstructured<'_>, sealed: bool) {
    let base = match u.int_in_range(0..=3u8).unwrap_or(0) {
        0 => 0,
        1 => u64::MAX - u64::from(u.arbitrary::<u8>().unwrap_or(0)),
        2 => u64::from(u.arbitrary::<u8>().unwrap_or(0)),
        _ => any_base(u),
    };
    let (seg, clean) = build_segment(u, base, 16 * 1024);
    let s = scan_segment(&seg, base, sealed);
    assert!(
        s.end <= seg.len().max(SEGMENT_HEADER_LEN),
        "end {} of {}",
        s.end,
        seg.len()
    );
    let mut last: Option<(u64, usize)> = None;
    for &(offset, pos) in &s.accepted {
        assert!(
            pos >= SEGMENT_HEADER_LEN && pos % RECORD_ALIGN == 0,
            "position {pos}"
        );
        if let Some((o, p)) = last {
            assert!(
                offset > o && pos > p,
                "order: ({o}, {p}) then ({offset}, {pos})"
            );
        }
        let (_, span) = decode_record(&seg[pos..], offset)
            .unwrap_or_else(|e| panic!("accepted record {offset} at {pos} fails: {e}"));
        assert!(
            pos + span <= s.end.next_multiple_of(RECORD_ALIGN),
            "record past the end of data"
        );
        last = Some((offset, pos));
    }
    if base > MAX_SEGMENT_BASE {
        // Offsets past this could overflow: the scan refuses the segment outright.
        assert!(s.accepted.is_empty(), "a segment based at {base} was read");
    } else if clean {
        // Every record was written intact and in sequence: all of them must be kept.
        let mut expect = Vec::new();
        let mut pos = SEGMENT_HEADER_LEN;
        let mut offset = base;
        while let Ok((_, span)) = decode_record(seg.get(pos..).unwrap_or(&[]), offset) {
            expect.push((offset, pos));
            pos += span;
            let Some(next) = offset.checked_add(1) else {
                break;
            };
            offset = next;
        }
        assert_eq!(s.accepted, expect, "a clean segment lost records");
    }
}
