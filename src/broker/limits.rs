//! Bounded topics: the backlog a topic holds, measured in messages and in bytes,
//! against `max_topic_depth` and `max_topic_bytes` (per-topic settings, `0` = unbounded), and
//! the two figures operators watch: a topic's fill ratio and a channel's oldest undelivered
//! message.
//!
//! What is measured, and why:
//! - **depth**: the largest backlog of any channel (unread log plus requeued, nsqd's channel
//!   depth), or the topic's own buffered backlog while it has no channel. The slowest consumer
//!   is what fills the disk.
//! - **bytes**: bytes of log records from the slowest channel's cursor to the tail (or from the
//!   buffered backlog's start with no channel): "depth in bytes". Not the retained log's size:
//!   with `--retention-*` a topic keeps consumed history on purpose, and that history must not
//!   make the topic refuse publishes.
//!
//! A publish is refused while the backlog is at or above a limit (checked before appending:
//! one MPUB may overshoot by its own size). Nothing already accepted is ever dropped, and as
//! consumers drain the backlog falls and publishes are accepted again. The check costs
//! nothing with both limits at 0; otherwise one pass over the topic's channels (which the
//! publish touches anyway to wake them) plus, with `max_topic_bytes`, a walk over the segments
//! the unread backlog spans (at most `max_topic_bytes / --max-bytes-per-file + 1` while under
//! the limit): no record is read, no message enumerated.

use super::channel::Channel;
use super::topic::Topic;
use super::{settings, Broker};
use crate::storage::Log;

/// A topic's backlog: messages and bytes the slowest reader has not taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backlog {
    /// Messages (largest channel depth, or the topic's own depth with no channel).
    pub depth: u64,
    /// Bytes of log from the slowest cursor to the tail.
    pub bytes: u64,
}

/// The backlog of `t`; `bytes` is left 0 unless `with_bytes` (it costs a segment walk).
pub fn backlog(t: &Topic, with_bytes: bool) -> Backlog {
    let tail = t.log.tail();
    let bytes_from = |o: u64| if with_bytes { t.log.bytes_from(o) } else { 0 };
    if t.channels.is_empty() {
        let start = t.distributed.max(t.log.head());
        return Backlog {
            depth: tail.saturating_sub(start),
            bytes: bytes_from(start),
        };
    }
    let mut depth = 0;
    let mut slowest = tail;
    for (_, c) in t.channels.iter() {
        depth = depth.max(c.depth(tail));
        slowest = slowest.min(c.cursor);
    }
    Backlog {
        depth,
        bytes: bytes_from(slowest),
    }
}

/// `used / limit`, 0 when the limit is off.
fn ratio(used: u64, limit: u64) -> f64 {
    if limit == 0 {
        0.0
    } else {
        used as f64 / limit as f64
    }
}

impl Broker {
    /// Topic `tk`'s `max_topic_depth` and `max_topic_bytes` (0 = off).
    #[inline]
    fn topic_limits(&self, tk: usize) -> (u64, u64) {
        (
            self.topic_setting(tk, settings::MAX_TOPIC_DEPTH),
            self.topic_setting(tk, settings::MAX_TOPIC_BYTES),
        )
    }

    /// A publish's topic: its key if it exists (`None`: the publish creates it), or why the
    /// publish is refused (its backlog is at a limit). One lookup serves the limit check and
    /// the append, so the name is hashed once per publish. (Always inlined: called from the
    /// TCP and HTTP publish, it was left out of line, 33 instructions more per PUB.)
    #[inline(always)]
    pub(super) fn publish_target(&self, topic: &str) -> Result<Option<usize>, String> {
        let known = self.topic_index.get(topic).copied();
        match known.and_then(|tk| self.topic_full(tk)) {
            Some(full) => Err(full),
            None => Ok(known),
        }
    }

    /// Why a publish to topic `tk` is refused now, if it is: its backlog is at a limit.
    #[inline]
    pub(super) fn topic_full(&self, tk: usize) -> Option<String> {
        let (max_depth, max_bytes) = self.topic_limits(tk);
        if max_depth == 0 && max_bytes == 0 {
            return None;
        }
        self.over_limit(tk, (max_depth, max_bytes))
    }

    /// [`topic_full`](Self::topic_full) for a topic with a limit on: measures its backlog.
    fn over_limit(&self, tk: usize, (max_depth, max_bytes): (u64, u64)) -> Option<String> {
        let t = self.topics.get(tk)?;
        let b = backlog(t, max_bytes > 0);
        if max_depth > 0 && b.depth >= max_depth {
            return Some(format!(
                "topic {} is full: {} messages waiting, max_topic_depth {max_depth}",
                t.name, b.depth
            ));
        }
        if max_bytes > 0 && b.bytes >= max_bytes {
            return Some(format!(
                "topic {} is full: {} bytes waiting, max_topic_bytes {max_bytes}",
                t.name, b.bytes
            ));
        }
        None
    }

    /// A topic's fill ratio: the larger of backlog / limit for depth and bytes (0 when both
    /// limits are off; above 1 when a batch overshot).
    pub fn fill_ratio(&self, tk: usize) -> f64 {
        let (max_depth, max_bytes) = self.topic_limits(tk);
        if max_depth == 0 && max_bytes == 0 {
            return 0.0;
        }
        let Some(t) = self.topics.get(tk) else {
            return 0.0;
        };
        let b = backlog(t, max_bytes > 0);
        ratio(b.depth, max_depth).max(ratio(b.bytes, max_bytes))
    }
}

/// Publish time (ns) of the channel's oldest message waiting for delivery: the oldest requeued
/// one or the next unread record, whichever was published first. `None` when nothing waits
/// (in-flight and deferred messages are not waiting: they are held or scheduled). O(1): a few
/// record reads.
pub fn oldest_waiting_ns(log: &Log, c: &Channel) -> Option<i64> {
    // The next original record: a carried copy at the cursor is skipped, as delivery skips it.
    let unread = super::replay::timestamp_near(log, c.cursor, log.tail()).map(|(_, t)| t);
    let requeued = c
        .requeued
        .front()
        .and_then(|r| log.read(r.loc).ok().map(|r| r.timestamp_ns));
    match (unread, requeued) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Age in ms at `now_ns` of the channel's oldest waiting message ([`oldest_waiting_ns`]).
pub fn oldest_age_ms(log: &Log, c: &Channel, now_ns: i64) -> Option<u64> {
    let age_ns = now_ns.saturating_sub(oldest_waiting_ns(log, c)?).max(0);
    Some((age_ns / 1_000_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_is_zero_without_a_limit() {
        assert_eq!(ratio(5, 0), 0.0);
        assert_eq!(ratio(8, 10), 0.8);
        assert!(ratio(11, 10) > 1.0);
    }
}
