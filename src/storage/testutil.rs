//! Test helpers: a temp directory deleted on drop, and a seeded PRNG (no extra crates).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A unique directory under the system temp dir, removed (with its contents) on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("corq-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// xorshift64*: deterministic from its seed, so a failing case can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// `Rss` of the mapping that starts at address `start`, in bytes, from `/proc/self/smaps`
/// (0 if no mapping starts there): this process's resident pages of one segment map.
pub fn resident_bytes_at(start: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut in_it = false;
    for line in smaps.lines() {
        // A mapping's first line: "start-end perms offset dev inode [path]".
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, _)) = range.split_once('-') {
                if lo.bytes().all(|b| b.is_ascii_hexdigit()) && !lo.is_empty() {
                    in_it = usize::from_str_radix(lo, 16) == Ok(start);
                    continue;
                }
            }
        }
        if in_it {
            if let Some(kb) = line.strip_prefix("Rss:") {
                let kb = kb.trim().trim_end_matches("kB").trim();
                return kb.parse::<u64>().unwrap_or(0) * 1024;
            }
        }
    }
    0
}
