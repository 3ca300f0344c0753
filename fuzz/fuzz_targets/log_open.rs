//! `Log::open` over arbitrary segment files.
//!
//! Input: the segment size, then 1–3 files, each with a name (usually `{base:020}.log` with a
//! base that is small, follows the previous file, or is near `u64::MAX`; sometimes a
//! `.prealloc`, a stray name or a directory) and contents from `build_segment` (header,
//! records, damage, raw tail). The files go to a fresh directory on tmpfs, then the log is
//! opened, iterated, every offset around each file's base and the head/tail is read, and one
//! record is appended and read back. Asserts: no panic; every record returned (iterator or
//! `read`) has the offset asked for and is byte for byte a CRC-valid record present in one of
//! the files written (zero-extended to the segment size, as the open extends a short
//! newest segment); the iterator's offsets increase within head..tail.
#![no_main]

use arbitrary::Unstructured;
use corq::storage::{Log, LogConfig, NewRecord};
use corq_fuzz::{log_files, occurs_in, ScratchDir};
use libfuzzer_sys::fuzz_target;

/// The most offsets read around one position.
const READ_SPAN: u64 = 128;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let (max_bytes, specs) = log_files(&mut u);
    let cfg = LogConfig {
        max_bytes_per_file: max_bytes,
        max_msg_size: 1024,
        sync_every: 1,
        sync_timeout_ms: 1000,
        ..LogConfig::default()
    };
    let dir = ScratchDir::new("log");
    let (mut files, mut bases) = (Vec::new(), Vec::new());
    for spec in specs {
        let path = dir.path().join(&spec.name);
        if spec.is_dir {
            let _ = std::fs::create_dir(path);
        } else if std::fs::write(path, &spec.bytes).is_ok() {
            files.push(spec.bytes);
            bases.push(spec.base);
        }
    }
    let Ok(mut log) = Log::open(dir.path(), cfg) else {
        return;
    };
    check(&log, &files, &bases, max_bytes as usize);
    if let Ok(off) = log.append(&NewRecord::message(1, 0, b"appended")) {
        let rec = log.read(off).expect("a record just appended reads back");
        assert_eq!((rec.offset, rec.body), (off, &b"appended"[..]));
    }
});

fn check(log: &Log, files: &[Vec<u8>], bases: &[u64], max_bytes: usize) {
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
            occurs_in(files, &rec, max_bytes),
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
                    occurs_in(files, &rec, max_bytes),
                    "read({offset}) returned a record not in any file"
                );
            }
        }
    }
}
