//! Helpers shared by the fuzz targets: the "whole input vs split input" check for incremental
//! parsers and a scratch directory on tmpfs. See `docs/fuzzing.md`.

use arbitrary::Unstructured;
use corq::fuzzing::{
    encode_record, segment_file_name, segment_header, RECORD_ALIGN, SEGMENT_HEADER_LEN,
};
use corq::storage::{NewRecord, Record};
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What an incremental parser makes of the front of a buffer, reduced to something comparable:
/// `Ok(None)` = need more bytes, `Ok(Some((item, used)))`, or an error.
pub type Step = Result<Option<(String, usize)>, String>;

/// Why the prefix check covers every split point: the parsers are pure functions of the
/// bytes they are given, so a connection that receives `buf` in two reads, split at `k`, makes
/// the same calls as one that receives it whole, except for the one call on the item (or the
/// tail) that `k` falls in, which sees a prefix of it. The split run agrees with the whole run
/// exactly when that prefix parses as "incomplete" (or as the whole run's final error, for the
/// tail). So checking every prefix of every item checks every split point; the literal replay
/// below cross-checks the argument itself.
///
/// Items up to `EXHAUSTIVE` bytes (all a default-sized libFuzzer input can hold) are checked at
/// every prefix. Longer items are sampled: the first and last `EDGE` prefixes plus `SAMPLES`
/// between them, placed by a hash of the input.
const EXHAUSTIVE: usize = 4096;
const EDGE: usize = 64;
const SAMPLES: usize = 128;
/// Inputs up to this long are replayed literally at every split point; longer ones at
/// `LITERAL_SAMPLES` points (the first and last few, the rest placed by the input's hash):
/// a replay formats every item again, which made it most of an execution's cost.
const LITERAL_MAX: usize = 64;
const LITERAL_SAMPLES: usize = 32;

/// Runs `parse` over `buf` as a connection's read loop does: parse from the front, consume what
/// an item used, repeat until `Ok(None)` (wait for more) or an error (close).
///
/// Returns the items with their start positions, and how the run ended.
pub fn run_whole(buf: &[u8], parse: &dyn Fn(&[u8]) -> Step) -> (Vec<(usize, String, usize)>, Step) {
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        let rest = &buf[pos..];
        match parse(rest) {
            Ok(Some((item, used))) => {
                assert!(used > 0, "an item used no bytes: {item}");
                assert!(
                    used <= rest.len(),
                    "item used {used} of {} bytes",
                    rest.len()
                );
                items.push((pos, item, used));
                pos += used;
            }
            end => return (items, end),
        }
    }
}

/// Asserts that feeding `buf` in two reads, split at any point, gives what feeding it whole
/// gives: the same items with the same sizes, and the same final error. While an item is
/// incomplete the parser must say `Ok(None)` (not an error, not a different item); once it is
/// complete it must return exactly what the whole run returned.
pub fn check_splits(buf: &[u8], parse: &dyn Fn(&[u8]) -> Step) {
    let (items, end) = run_whole(buf, parse);
    let mut rng = SplitRng::seeded(buf);
    for (start, item, used) in &items {
        let whole = Ok(Some((item.clone(), *used)));
        for k in prefix_lengths(*used, &mut rng) {
            let got = parse(&buf[*start..*start + k]);
            assert_eq!(
                got,
                Ok(None),
                "prefix of {k} bytes at {start} of item {item:?}"
            );
        }
        let exact = parse(&buf[*start..*start + *used]);
        assert_eq!(exact, whole, "item at {start} cut right after its end");
    }
    let start = items.last().map_or(0, |(s, _, u)| s + u);
    for k in prefix_lengths(buf.len() - start, &mut rng) {
        let got = parse(&buf[start..start + k]);
        assert!(
            got == Ok(None) || (got == end && end.is_err()),
            "prefix of {k} bytes at {start}: {got:?}, whole input ended with {end:?}"
        );
    }
    for k in split_points(buf.len(), &mut rng) {
        assert_eq!(
            run_split(buf, k, parse),
            (items.clone(), end.clone()),
            "split at {k}"
        );
    }
}

/// A reactor that first receives `buf[..k]`, parses what it can, then receives the rest.
fn run_split(
    buf: &[u8],
    k: usize,
    parse: &dyn Fn(&[u8]) -> Step,
) -> (Vec<(usize, String, usize)>, Step) {
    let mut avail = k;
    let mut pos = 0;
    let mut items = Vec::new();
    loop {
        match parse(&buf[pos..avail]) {
            Ok(Some((item, used))) => {
                items.push((pos, item, used));
                pos += used;
            }
            Ok(None) if avail < buf.len() => avail = buf.len(),
            end => return (items, end),
        }
    }
}

/// The prefix lengths `0..n` to try for an item of `n` bytes.
fn prefix_lengths(n: usize, rng: &mut SplitRng) -> Vec<usize> {
    if n <= EXHAUSTIVE {
        return (0..n).collect();
    }
    let mut v: Vec<usize> = (0..EDGE).collect();
    v.extend((0..SAMPLES).map(|_| EDGE + rng.below(n - 2 * EDGE)));
    v.extend(n - EDGE..n);
    v
}

/// The split points `0..=n` to replay literally for an input of `n` bytes.
fn split_points(n: usize, rng: &mut SplitRng) -> Vec<usize> {
    if n <= LITERAL_MAX {
        return (0..=n).collect();
    }
    let edge = LITERAL_SAMPLES / 4;
    let mut v: Vec<usize> = (0..edge).collect();
    v.extend((0..LITERAL_SAMPLES - 2 * edge).map(|_| rng.below(n + 1)));
    v.extend(n + 1 - edge..=n);
    v
}

/// A small deterministic generator (xorshift64) seeded from the input's FNV-1a hash, so a
/// crashing input replays the same split points.
struct SplitRng(u64);

impl SplitRng {
    fn seeded(buf: &[u8]) -> SplitRng {
        let hash = buf.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        SplitRng(hash | 1)
    }

    /// A number in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Formats a parser's result with `Debug` for comparison.
pub fn step<T: Debug, E: Debug>(r: Result<Option<(T, usize)>, E>) -> Step {
    step_text(r.map_err(|e| format!("{e:?}")))
}

/// As [`step`], for an error already turned into text.
pub fn step_text<T: Debug>(r: Result<Option<(T, usize)>, String>) -> Step {
    r.map(|o| o.map(|(t, used)| (format!("{t:?}"), used)))
}

/// An arbitrary base offset, `u64::MAX` included (the overflows these found are fixed).
pub fn any_base(u: &mut Unstructured<'_>) -> u64 {
    u.arbitrary().unwrap_or(0)
}

/// A scratch directory on tmpfs (`/dev/shm` when present), removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates a fresh, empty directory.
    pub fn new(what: &str) -> ScratchDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let root = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            sweep_stale(&root);
        }
        let dir = root.join(format!("corq-fuzz-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        ScratchDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes scratch directories left by fuzzing processes that have exited: a crash aborts
/// without running destructors, and the `checkpoint` target's template lives in a static.
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("corq-fuzz-")) else {
            continue;
        };
        // `<what>-<pid>-<n>`: the pid is the second field from the end.
        let pid = rest.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds segment bytes from fuzz input: a header (usually valid for `base`), a run of records
/// (usually well-formed, numbered from `base`, some damaged on purpose), then raw bytes.
/// Returns the bytes and whether every record is intact and the rest zero (a clean segment).
pub fn build_segment(u: &mut Unstructured<'_>, base: u64, max_len: usize) -> (Vec<u8>, bool) {
    let mut seg = Vec::new();
    let mut clean = true;
    match u.int_in_range(0..=15u8).unwrap_or(0) {
        0 => seg.extend_from_slice(&[0u8; SEGMENT_HEADER_LEN]),
        1 => {
            let other: u64 = u.arbitrary().unwrap_or(0);
            seg.extend_from_slice(&segment_header(other));
            clean = false;
        }
        2 => {
            let raw = u.bytes(SEGMENT_HEADER_LEN).unwrap_or(&[]);
            seg.extend_from_slice(raw);
            clean = false;
        }
        _ => seg.extend_from_slice(&segment_header(base)),
    }
    let count = u.int_in_range(0..=12u8).unwrap_or(0);
    for i in 0..u64::from(count) {
        if seg.len() >= max_len {
            break;
        }
        let Some((rec, intact)) = arbitrary_record(u, base.wrapping_add(i)) else {
            break;
        };
        clean &= intact;
        seg.extend_from_slice(&rec);
    }
    clean &= damage(u, &mut seg);
    let tail_len = u
        .arbitrary_len::<u8>()
        .unwrap_or(0)
        .min(max_len.saturating_sub(seg.len()));
    let tail = u.bytes(tail_len).unwrap_or(&[]);
    clean &= tail.iter().all(|&b| b == 0);
    seg.extend_from_slice(tail);
    seg.truncate(max_len);
    (seg, clean)
}

/// One encoded record, usually at `offset`, sometimes claiming another offset (then the flag
/// returned is false).
pub fn arbitrary_record(u: &mut Unstructured<'_>, offset: u64) -> Option<(Vec<u8>, bool)> {
    let claimed = if u.ratio(1, 16).ok()? {
        u.arbitrary().ok()?
    } else {
        offset
    };
    let carried_from = if u.ratio(1, 4).ok()? {
        Some(u.arbitrary().ok()?)
    } else {
        None
    };
    let body_len = u.int_in_range(0..=300u16).ok()?;
    let rec = NewRecord {
        timestamp_ns: u.arbitrary().ok()?,
        deliver_at_ns: u.arbitrary().ok()?,
        attempts: u.arbitrary().ok()?,
        carried_from,
        dead: None,
        dedup_key: &[],
        body: u.bytes(usize::from(body_len)).unwrap_or(&[]),
    };
    Some((encode_record(claimed, &rec)?, claimed == offset))
}

/// Applies 0..=3 damage operations (byte flips, overwritten length fields, truncation); false
/// when any was applied.
fn damage(u: &mut Unstructured<'_>, seg: &mut Vec<u8>) -> bool {
    let ops = if u.ratio(1, 2).unwrap_or(false) {
        0
    } else {
        u.int_in_range(1..=3u8).unwrap_or(0)
    };
    for _ in 0..ops {
        if seg.is_empty() {
            break;
        }
        let at = u.choose_index(seg.len()).unwrap_or(0);
        match u.int_in_range(0..=2u8).unwrap_or(0) {
            0 => seg[at] ^= u.int_in_range(1..=255u8).unwrap_or(1),
            1 => {
                let at = at & !(RECORD_ALIGN - 1);
                let len: u32 = u.arbitrary().unwrap_or(0);
                let end = (at + 4).min(seg.len());
                seg[at..end].copy_from_slice(&len.to_le_bytes()[..end - at]);
            }
            _ => seg.truncate(at),
        }
    }
    ops == 0
}

/// A record read back from a log is real when the bytes it encodes to (with a correct CRC)
/// occur at a record position in one of the files the log was opened from. Each file counts
/// as zero-extended to `extend_to` bytes: opening a log extends a short newest segment with
/// zeros, and a record cut short in the file whose missing bytes were zeros is then whole.
pub fn occurs_in(files: &[Vec<u8>], rec: &Record<'_>, extend_to: usize) -> bool {
    let new = NewRecord {
        timestamp_ns: rec.timestamp_ns,
        deliver_at_ns: rec.deliver_at_ns,
        attempts: rec.attempts,
        carried_from: rec.carried_from,
        dead: rec.dead,
        dedup_key: rec.dedup_key,
        body: rec.body,
    };
    let Some(bytes) = encode_record(rec.offset, &new) else {
        return false;
    };
    // Compare without the padding: the scan does not require it to be zero.
    let len = corq::fuzzing::RECORD_HEADER_LEN + new.stored_len();
    let want = &bytes[..len];
    // A record may run past a short file's end into the zeros the open extends it with.
    let at = |f: &[u8], p: usize| {
        let have = &f[p..f.len().min(p + len)];
        have == &want[..have.len()] && want[have.len()..].iter().all(|&b| b == 0)
    };
    files.iter().any(|f| {
        let end = f.len().max(extend_to).saturating_sub(len);
        (SEGMENT_HEADER_LEN..=end)
            .step_by(RECORD_ALIGN)
            .any(|p| p < f.len() && at(f, p))
    })
}

/// One entry `log_open` puts in the log directory.
#[derive(Debug, Clone)]
pub struct FileSpec {
    /// The entry's name.
    pub name: String,
    /// A directory (named like a segment) instead of a file.
    pub is_dir: bool,
    /// The segment's base offset as generated (the name may not say it).
    pub base: u64,
    /// The file's contents.
    pub bytes: Vec<u8>,
}

/// The `log_open` input: a segment size, then 1–3 directory entries. Names are usually
/// `{base:020}.log` with a base that is small, follows the previous file, or is near
/// `u64::MAX`; sometimes a `.prealloc`, a stray name or a directory.
pub fn log_files(u: &mut Unstructured<'_>) -> (u64, Vec<FileSpec>) {
    let max_bytes = [4096u64, 8192, 65536][u.choose_index(3).unwrap_or(0)];
    let n = u.int_in_range(1..=3u8).unwrap_or(1);
    let mut specs = Vec::new();
    let mut prev_end = 0u64;
    for _ in 0..n {
        let base = match u.int_in_range(0..=5u8).unwrap_or(0) {
            0 => 0,
            1 | 2 => prev_end,
            3 => u64::MAX - u64::from(u.arbitrary::<u8>().unwrap_or(0)),
            4 => u.arbitrary::<u8>().map(u64::from).unwrap_or(0),
            _ => any_base(u),
        };
        let (bytes, _) = build_segment(u, base, max_bytes as usize + 64);
        prev_end = base.saturating_add(bytes.len() as u64 / 40);
        let (name, is_dir) = match u.int_in_range(0..=15u8).unwrap_or(0) {
            0 => (format!("{base:020}.prealloc"), false),
            1 => (stray_name(u), false),
            2 => (segment_file_name(base), true),
            _ => (segment_file_name(base), false),
        };
        specs.push(FileSpec {
            name,
            is_dir,
            base,
            bytes,
        });
    }
    (max_bytes, specs)
}

/// A file name that is not a segment's (never empty, `.`, `..` or with a `/`).
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
