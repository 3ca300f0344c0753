//! The dedup window of a topic (`--dedup-window`, `/topic/config?dedup_window=`): a publish
//! whose key was already published to the topic within the window is answered `OK` and not
//! appended.
//!
//! **Key.** The body's 128-bit hash, or, for HTTP `/pub?dedup_id=X`, the hash of `X` (kept in
//! the record as a kind-4 message so it survives a restart). The hash is SipHash-1-3 (std's
//! `RandomState`) run twice with two independent random keys, drawn per process: 128 bits make
//! an accidental collision (which would drop a distinct message) negligible (~2^-64 at 2^32
//! entries), and secret keys stop a publisher from crafting collisions to suppress another's
//! messages. No hash is ever persisted, so random per-process keys cost nothing: the window is
//! rebuilt from the log's records at open ([`Broker::rebuild_dedup`]), which also makes it
//! survive a crash, not only a clean restart. No new dependency.
//!
//! **Memory.** At most [`MAX_DEDUP_ENTRIES`] keys per topic (about 64 bytes each: ~6 MiB per
//! topic at the cap); beyond that the oldest is forgotten first, so under a flood of distinct
//! messages the window is effectively shorter. `/metrics` shows the entries per topic.
//!
//! **Rebuild.** Only the records published within the window before now, at most the cap,
//! are read (a binary search by timestamp finds the first): bounded whatever the log's size.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use log::info;

use super::channel::ms_to_ns;
use super::Broker;

/// Most keys a topic's window holds.
pub const MAX_DEDUP_ENTRIES: usize = 100_000;

/// A dedup key: a 128-bit hash.
pub type DedupKey = u128;

/// The two random SipHash keys of this process.
#[derive(Debug, Clone)]
pub struct DedupHasher {
    a: RandomState,
    b: RandomState,
}

impl Default for DedupHasher {
    fn default() -> Self {
        DedupHasher {
            a: RandomState::new(),
            b: RandomState::new(),
        }
    }
}

impl DedupHasher {
    /// The key of a publish: of its explicit dedup id when it has one, else of its body. The
    /// two are hashed with different tags, so an id never matches a body.
    pub fn key(&self, dedup_id: &[u8], body: &[u8]) -> DedupKey {
        let (tag, bytes) = if dedup_id.is_empty() {
            (0u8, body)
        } else {
            (1u8, dedup_id)
        };
        let hi = self.a.hash_one((tag, bytes));
        let lo = self.b.hash_one((tag, bytes));
        (u128::from(hi) << 64) | u128::from(lo)
    }
}

/// One topic's window: keys with their publish time, oldest first.
#[derive(Debug, Default)]
pub struct DedupWindow {
    /// Key → publish time (wall ns).
    seen: HashMap<DedupKey, i64>,
    /// The same keys in publish order, for expiry and the cap.
    order: VecDeque<(i64, DedupKey)>,
    /// Publishes answered `OK` and not appended.
    pub hits: u64,
}

impl DedupWindow {
    /// Keys held.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Forgets keys published before `now - window`.
    pub fn expire(&mut self, now_ns: i64, window_ms: u64) {
        let oldest = now_ns.saturating_sub(ms_to_ns(window_ms));
        while let Some(&(ts, key)) = self.order.front() {
            if ts >= oldest {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    /// Whether `key` is in the window.
    pub fn contains(&self, key: DedupKey) -> bool {
        self.seen.contains_key(&key)
    }

    /// Remembers `key` as published at `ts`, forgetting the oldest key at the cap.
    pub fn insert(&mut self, key: DedupKey, ts: i64) {
        if self.seen.insert(key, ts).is_some() {
            return;
        }
        self.order.push_back((ts, key));
        if self.order.len() > MAX_DEDUP_ENTRIES {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
    }

    /// Drops every key (the window was turned off).
    pub fn clear(&mut self) {
        self.seen = HashMap::new();
        self.order = VecDeque::new();
    }
}

impl Broker {
    /// Fills a topic's window from its log: the records published within the window before
    /// `now_ns`, at most [`MAX_DEDUP_ENTRIES`] of them. Carried copies and dead letters are not
    /// publishes and are skipped.
    pub(super) fn rebuild_dedup(&mut self, tk: usize, now_ns: i64) {
        let window_ms = self.resolved(tk, None).dedup_window_ms();
        let hasher = self.dedup_hasher.clone();
        let Some(topic) = self.topics.get_mut(tk) else {
            return;
        };
        if window_ms == 0 {
            return;
        }
        let oldest = now_ns.saturating_sub(ms_to_ns(window_ms));
        let log = &topic.log;
        // First offset published within the window (timestamps are publish order, near enough:
        // a wall clock stepping back only makes the window a little longer or shorter).
        let (mut lo, mut hi) = (log.head(), log.tail());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match log.read(mid) {
                Ok(r) if r.timestamp_ns >= oldest => hi = mid,
                _ => lo = mid + 1,
            }
        }
        let start = lo.max(log.tail().saturating_sub(MAX_DEDUP_ENTRIES as u64));
        let mut window = DedupWindow::default();
        for rec in log.iter_from(start) {
            if rec.carried_from.is_none() && rec.dead.is_none() && rec.timestamp_ns >= oldest {
                window.insert(hasher.key(rec.dedup_key, rec.body), rec.timestamp_ns);
            }
        }
        if !window.is_empty() {
            info!(
                "topic {}: dedup window rebuilt with {} keys",
                topic.name,
                window.len()
            );
        }
        window.hits = topic.dedup.hits;
        topic.dedup = window;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_ids_from_bodies_and_are_stable_in_a_process() {
        let h = DedupHasher::default();
        assert_eq!(h.key(b"", b"x"), h.key(b"", b"x"));
        assert_ne!(h.key(b"", b"x"), h.key(b"", b"y"));
        assert_ne!(
            h.key(b"x", b"body"),
            h.key(b"", b"x"),
            "an id never matches a body"
        );
        assert_eq!(
            h.key(b"id", b"a"),
            h.key(b"id", b"b"),
            "the id replaces the body"
        );
        let other = DedupHasher::default();
        assert_ne!(
            h.key(b"", b"x"),
            other.key(b"", b"x"),
            "keys are per process"
        );
    }

    #[test]
    fn window_expires_and_is_capped() {
        let mut w = DedupWindow::default();
        w.insert(1, 1_000_000_000);
        w.insert(2, 2_000_000_000);
        w.expire(2_500_000_000, 1000);
        assert!(!w.contains(1) && w.contains(2));
        for k in 0..(MAX_DEDUP_ENTRIES as u128 + 5) {
            w.insert(100 + k, 3_000_000_000);
        }
        assert_eq!(w.len(), MAX_DEDUP_ENTRIES);
        assert!(!w.contains(2) && !w.contains(100), "the oldest go first");
        assert!(w.contains(100 + MAX_DEDUP_ENTRIES as u128 + 4));
    }
}
