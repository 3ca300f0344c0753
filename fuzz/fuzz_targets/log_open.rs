//! `Log::open` over arbitrary segment files.
//!
//! Input: the segment size, then 1–3 files, each with a name (usually `{base:020}.log` with a
//! base that is small, follows the previous file, or is near `u64::MAX`; sometimes a
//! `.prealloc`, a stray name or a directory) and contents from `build_segment` (header,
//! records, damage, raw tail). The files go to a fresh directory on tmpfs, then the log is
//! opened, iterated, every offset around each file's base and the head/tail is read, and one
//! record is appended and read back. Asserts: no panic; every record returned (iterator or
//! `read`) has the offset asked for and is byte for byte a CRC-valid record present in one of
//! the files written; the iterator's offsets increase within head..tail.
#![no_main]

use arbitrary::Unstructured;
use corq::fuzzing::segment_file_name;
use corq::storage::{Log, LogConfig, NewRecord};
use corq_fuzz::{build_segment, occurs_in, ScratchDir};
use libfuzzer_sys::fuzz_target;

/// The most offsets read around one position.
const READ_SPAN: u64 = 128;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let max_bytes = [4096u64, 8192, 65536][u.choose_index(3).unwrap_or(0)];
    let cfg = LogConfig {
        max_bytes_per_file: max_bytes,
        max_msg_size: 1024,
        sync_every: 1,
        sync_timeout_ms: 1000,
    };
    let dir = ScratchDir::new("log");
    let n = u.int_in_range(1..=3u8).unwrap_or(1);
    let (mut files, mut bases) = (Vec::new(), Vec::new());
    let mut prev_end = 0u64;
    for _ in 0..n {
        let base = match u.int_in_range(0..=5u8).unwrap_or(0) {
            0 => 0,
            1 | 2 => prev_end,
            3 => u64::MAX - u64::from(u.arbitrary::<u8>().unwrap_or(0)),
            4 => u.arbitrary::<u8>().map(u64::from).unwrap_or(0),
            _ => u.arbitrary().unwrap_or(0),
        };
        let (bytes, _) = build_segment(&mut u, base, max_bytes as usize + 64);
        prev_end = base.saturating_add(bytes.len() as u64 / 40);
        let name = match u.int_in_range(0..=15u8).unwrap_or(0) {
            0 => format!("{base:020}.prealloc"),
            1 => stray_name(&mut u),
            2 => {
                let _ = std::fs::create_dir(dir.path().join(segment_file_name(base)));
                continue;
            }
            _ => segment_file_name(base),
        };
        if std::fs::write(dir.path().join(&name), &bytes).is_ok() {
            files.push(bytes);
            bases.push(base);
        }
    }
    let Ok(mut log) = Log::open(dir.path(), cfg) else {
        return;
    };
    check(&log, &files, &bases);
    if let Ok(off) = log.append(&NewRecord::message(1, 0, b"appended")) {
        let rec = log.read(off).expect("a record just appended reads back");
        assert_eq!((rec.offset, rec.body), (off, &b"appended"[..]));
    }
});

/// A file name that is not a segment's (never `.`, `..` or with a `/`).
fn stray_name(u: &mut Unstructured<'_>) -> String {
    let raw: String = u.arbitrary().unwrap_or_default();
    let name: String = raw
        .chars()
        .filter(|&c| c != '/' && c != '\0')
        .take(40)
        .collect();
    if name.is_empty() || name == "." || name == ".." {
        "stray".to_owned()
    } else {
        name
    }
}

fn check(log: &Log, files: &[Vec<u8>], bases: &[u64]) {
    let (head, tail) = (log.head(), log.tail());
    assert!(head <= tail, "head {head} > tail {tail}");
    let mut prev = None;
    for rec in log.iter_from(0).take(10_000) {
        assert!(
            rec.offset >= head && rec.offset < tail,
            "offset {} outside {head}..{tail}",
            rec.offset
        );
        assert!(
            prev.is_none_or(|p| rec.offset > p),
            "iterator went back to {}",
            rec.offset
        );
        assert!(
            occurs_in(files, &rec),
            "iterator returned a record not in any file: {rec:?}"
        );
        prev = Some(rec.offset);
    }
    let mut starts = vec![head, tail.saturating_sub(READ_SPAN)];
    starts.extend(bases.iter().map(|b| b.saturating_sub(2)));
    for start in starts {
        for offset in (start..=start.saturating_add(READ_SPAN)).take(READ_SPAN as usize + 1) {
            if let Ok(rec) = log.read(offset) {
                assert_eq!(rec.offset, offset, "read({offset}) returned another record");
                assert!(
                    occurs_in(files, &rec),
                    "read({offset}) returned a record not in any file"
                );
            }
        }
    }
}
