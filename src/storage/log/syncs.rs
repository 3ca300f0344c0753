//! [`SyncTracker`]: the syncs of one log that are in flight at once, and the rule that turns
//! their completions into a durable offset.
//!
//! # Why overlap syncs
//!
//! With one sync at a time, a record written just after a sync started waits for the rest of
//! that sync and then a whole sync of its own: about 1.5 syncs on average, 2 at worst. With
//! several in flight, a record's sync starts on the next loop turn (while fewer than
//! [`MAX_SYNCS_IN_FLIGHT`] run) and it waits about one. On a journaling file system the
//! overlapping `fdatasync`s are not wasted: those that start while one journal commit runs
//! share the next (`corq disk-probe --threads 4` shows it on a given disk).
//!
//! # The rule
//!
//! A sync covers every record written before it started (the log writes its pending appends
//! before it makes a sync job, and the job's `target` is the tail at that moment). A record is
//! durable once a sync that started after it was written has completed, and also every sync
//! that started before that one has. The durable watermark is therefore the largest `target`
//! among the completed syncs whose earlier-started syncs have all completed: completions are
//! consumed in start order.
//!
//! Why not simply "any completed sync's target": `fdatasync` of a file does flush everything
//! written to it before the call, but a sync job also carries the directory fsync that makes a
//! newly installed segment's name durable, and only the job that was made just after the
//! install carries it. A later job completing first has synced the new segment's data but not
//! its directory entry, so its target must not count until the earlier job is done. Taking
//! completions in start order covers this and keeps acks in order for free.

use std::collections::VecDeque;

/// Syncs one log may have in flight at once (strict mode). Four: syncs that start while one
/// journal commit runs share the next, so more than a few in flight only queue behind each
/// other; four also matches the threads of the storage worker's sync lane.
pub const MAX_SYNCS_IN_FLIGHT: usize = 4;

/// The in-flight syncs of one log, in start order. See the module docs for the rule.
#[derive(Debug, Default)]
pub struct SyncTracker {
    /// `(seq, target, completed)` per sync started and not yet consumed, oldest first. At most
    /// [`MAX_SYNCS_IN_FLIGHT`] long (the log asks [`SyncTracker::can_start`] first).
    in_flight: VecDeque<(u64, u64, bool)>,
    /// The sequence number the next sync gets (identifies it in its completion).
    next_seq: u64,
    /// The largest target of any sync started: records below it need no new sync.
    started_upto: u64,
}

impl SyncTracker {
    /// Whether another sync may start under `limit` (1 for interval mode, which gains nothing
    /// from overlap, [`MAX_SYNCS_IN_FLIGHT`] for strict mode).
    pub fn can_start(&self, limit: usize) -> bool {
        self.in_flight.len() < limit.min(MAX_SYNCS_IN_FLIGHT)
    }

    /// Syncs started and not yet consumed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Whether a started sync already covers every record below `tail`.
    pub fn covers(&self, tail: u64) -> bool {
        self.started_upto >= tail
    }

    /// Notes a sync that covers every record below `target`; returns its sequence number, to
    /// be handed back to [`SyncTracker::complete`].
    pub fn start(&mut self, target: u64) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.started_upto = self.started_upto.max(target);
        self.in_flight.push_back((seq, target, false));
        seq
    }

    /// Notes that sync `seq` succeeded. Returns the new durable watermark if it moved: the
    /// largest target of the completed syncs that every earlier-started sync precedes.
    /// An unknown `seq` (already consumed, or never started) changes nothing.
    pub fn complete(&mut self, seq: u64) -> Option<u64> {
        let entry = self.in_flight.iter_mut().find(|(s, _, _)| *s == seq)?;
        entry.2 = true;
        let mut watermark = None;
        while let Some(&(_, target, true)) = self.in_flight.front() {
            self.in_flight.pop_front();
            watermark = Some(watermark.map_or(target, |w: u64| w.max(target)));
        }
        watermark
    }

    /// Forgets sync `seq` as if it had never started: a later sync covers everything it would
    /// have (the log superseded it), so its completion must not count. Records only the other
    /// syncs in flight cover need a new sync now.
    pub fn forget(&mut self, seq: u64) {
        self.in_flight.retain(|&(s, _, _)| s != seq);
        self.started_upto = self.in_flight.iter().map(|&(_, t, _)| t).max().unwrap_or(0);
    }

    /// Forgets every sync in flight (the log failed: their results no longer matter).
    pub fn clear(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::testutil::Rng;

    #[test]
    fn a_forgotten_sync_neither_counts_nor_holds_a_slot() {
        let mut t = SyncTracker::default();
        let old = t.start(10);
        assert!(t.covers(10) && !t.can_start(1));
        t.forget(old);
        assert!(t.can_start(1), "its slot is free");
        assert!(!t.covers(10), "its records need a new sync");
        let new = t.start(20);
        assert_eq!(
            t.complete(old),
            None,
            "a forgotten sync's completion is ignored"
        );
        assert_eq!(t.complete(new), Some(20));
    }

    #[test]
    fn completions_are_consumed_in_start_order() {
        let mut t = SyncTracker::default();
        let a = t.start(10);
        let b = t.start(20);
        let c = t.start(30);
        assert_eq!(t.complete(c), None, "c finished first: a and b still run");
        assert_eq!(t.complete(b), None, "a still runs");
        assert_eq!(t.complete(a), Some(30), "a done: a, b and c all count");
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.complete(a), None, "a second completion of a is ignored");
    }

    #[test]
    fn in_order_completions_advance_one_by_one() {
        let mut t = SyncTracker::default();
        let a = t.start(5);
        let b = t.start(7);
        assert!(t.covers(7) && !t.covers(8));
        assert_eq!(t.complete(a), Some(5));
        assert_eq!(t.complete(b), Some(7));
    }

    #[test]
    fn the_limit_counts_syncs_not_yet_consumed() {
        let mut t = SyncTracker::default();
        assert!(t.can_start(1));
        let a = t.start(1);
        assert!(!t.can_start(1), "interval mode: one at a time");
        let seqs: Vec<u64> = (2..=MAX_SYNCS_IN_FLIGHT as u64)
            .map(|n| t.start(n))
            .collect();
        assert!(!t.can_start(usize::MAX));
        // A later one completing does not free a slot: it is still held behind `a`.
        assert_eq!(t.complete(seqs[0]), None);
        assert!(!t.can_start(MAX_SYNCS_IN_FLIGHT));
        assert_eq!(t.complete(a), Some(2));
        assert!(t.can_start(MAX_SYNCS_IN_FLIGHT));
    }

    /// The rule, against a model: random starts (each after some more records were written)
    /// and completions in random order. A record is acked only when a sync started after it
    /// was written has completed, and so has every sync started before that one; and once
    /// every sync has completed, everything written before the last start is acked.
    #[test]
    fn out_of_order_completions_never_ack_a_record_early() {
        let mut rng = Rng::new(16);
        for _ in 0..500 {
            let mut t = SyncTracker::default();
            let mut tail = 0u64;
            // (seq, target) of started syncs, in start order, and which completed.
            let mut started: Vec<(u64, u64)> = Vec::new();
            let mut completed: Vec<bool> = Vec::new();
            let mut acked = 0u64;
            for _ in 0..40 {
                tail += rng.below(4);
                if t.can_start(MAX_SYNCS_IN_FLIGHT) && rng.below(2) == 0 {
                    started.push((t.start(tail), tail));
                    completed.push(false);
                    continue;
                }
                let open: Vec<usize> = (0..started.len()).filter(|&i| !completed[i]).collect();
                if open.is_empty() {
                    continue;
                }
                let i = open[rng.below(open.len() as u64) as usize];
                completed[i] = true;
                if let Some(w) = t.complete(started[i].0) {
                    assert!(w >= acked, "the watermark went back: {w} < {acked}");
                    acked = w;
                }
                // Model: the longest all-completed prefix of starts bounds what may be acked.
                let prefix = completed.iter().take_while(|&&c| c).count();
                let allowed = started[..prefix].iter().map(|s| s.1).max().unwrap_or(0);
                assert!(acked <= allowed, "acked {acked} but only {allowed} is safe");
                assert_eq!(acked, allowed, "a completed prefix must be acked");
            }
        }
    }
}
