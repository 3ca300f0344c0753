//! Retention and replay: keeping consumed history (`retention_time`,
//! `retention_bytes`) and moving a channel's cursor back to a point in time
//! (`/channel/rewind`, `/channel/create?from=`).
//!
//! Finding a time: records carry their publish time, and publish times are assumed
//! non-decreasing along a log (one writer, the wall clock). The search is a binary search over
//! offsets (O(log n) record reads, no enumeration); carried copies (kind 2, the original's old
//! time, appended at the tail) and unreadable offsets are stepped over. If the wall clock
//! stepped back, the answer is still some offset whose record is at or after the time and all
//! before it are older, up to the step: it never skips a message published after X in order.
//!
//! A rewind is a cursor move. Messages of the channel at or past the new cursor that are in
//! flight, deferred or requeued are forgotten (their timers cancelled, the consumers' in-flight
//! counts given back: a FIN for one answers `E_FIN_FAILED`) and come again from the log with
//! fresh attempts; those below it are left as they are. A rewind never moves a cursor forward.
//!
//! Retention keeps whole segments: a segment whose newest record is younger than
//! `retention_time`, or that is among the newest `retention_bytes`, stays even when every
//! channel is past it. It only ever lowers the trim floor that channels and the checkpoint on
//! disk set ([`super::topic::Topic::safe_floor`]), so it never deletes what a channel needs.

use super::admin::AdminError;
use super::settings::Settings;
use super::{queue_pump, Broker};
use crate::storage::Log;

/// Where a rewind goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindTo {
    /// The oldest retained record.
    Earliest,
    /// The first record published at or after this time (ns since the Unix epoch).
    Time(i64),
}

/// What a rewind did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewound {
    /// The channel's new cursor.
    pub offset: u64,
    /// Log records from there to where the cursor was: delivered again.
    pub queued: u64,
    /// The time asked for is older than the oldest retained record: it starts there.
    pub clamped: bool,
    /// Publish time of the oldest retained record, if there is one.
    pub oldest_ns: Option<i64>,
}

/// Records stepped over looking for a readable, non-carried one near an offset.
const SCAN: u64 = 64;

/// The first readable original record at or after `from` (below `end`, within [`SCAN`]).
pub(super) fn timestamp_near(log: &Log, from: u64, end: u64) -> Option<(u64, i64)> {
    (from..end.min(from.saturating_add(SCAN))).find_map(|o| {
        let r = log.read(o).ok()?;
        r.carried_from.is_none().then_some((o, r.timestamp_ns))
    })
}

/// The first offset whose record was published at or after `ns` (the tail if none).
pub fn offset_at_time(log: &Log, ns: i64) -> u64 {
    let (mut lo, mut hi) = (log.head(), log.tail());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match timestamp_near(log, mid, hi) {
            Some((o, t)) if t < ns => lo = o + 1,
            _ => hi = mid,
        }
    }
    lo
}

/// The lowest offset retention keeps for `s` at `now_ns` (the tail when both are off):
/// segments wholly below it may go.
pub fn retention_keep(log: &Log, s: &Settings<u64>, now_ns: i64) -> u64 {
    let mut keep = log.tail();
    let time_ms = s.retention_time_ms();
    if time_ms > 0 {
        let since = now_ns.saturating_sub(super::channel::ms_to_ns(time_ms));
        keep = keep.min(offset_at_time(log, since));
    }
    let bytes = s.retention_bytes();
    if bytes > 0 {
        let mut sum = 0u64;
        let mut base = log.head();
        for (b, used) in log.segment_spans().rev() {
            base = b;
            sum = sum.saturating_add(used);
            if sum >= bytes {
                break;
            }
        }
        keep = keep.min(base);
    }
    keep
}

impl Broker {
    /// Moves a channel's cursor back to `to` (see the module docs for what happens to its
    /// unfinished messages).
    ///
    /// # Errors
    /// Topic or channel not found.
    pub fn rewind_channel(
        &mut self,
        topic: &str,
        channel: &str,
        to: RewindTo,
    ) -> Result<Rewound, AdminError> {
        let &tk = self
            .topic_index
            .get(topic)
            .ok_or(AdminError::TopicNotFound)?;
        let t = &mut self.topics[tk];
        let &chk = t
            .channel_index
            .get(channel)
            .ok_or(AdminError::ChannelNotFound)?;
        let head = t.log.head();
        let oldest_ns = timestamp_near(&t.log, head, t.log.tail()).map(|(_, ns)| ns);
        let (found, clamped) = match to {
            RewindTo::Earliest => (head, true),
            RewindTo::Time(ns) => (
                offset_at_time(&t.log, ns),
                oldest_ns.is_some_and(|o| ns < o),
            ),
        };
        let ch = &mut t.channels[chk];
        let target = found.max(head).min(ch.cursor);
        let queued = ch.cursor - target;
        let released = ch.forget_from(target, &mut self.wheel);
        ch.cursor = target;
        queue_pump(&mut self.pump_queue, tk, chk, ch);
        if !t.ephemeral && !ch.ephemeral {
            self.topology_changed = true;
        }
        for ck in released {
            if let Some(c) = self.clients.get_mut(ck) {
                c.in_flight = c.in_flight.saturating_sub(1);
            }
        }
        log::info!(
            topic, channel;
            "topic {topic}: channel {channel} rewound to offset {target} ({queued} records again)"
        );
        Ok(Rewound {
            offset: target,
            queued,
            clamped,
            oldest_ns,
        })
    }

    /// `/channel/create?from=`: creates the channel and rewinds it to `to`. An existing channel
    /// is left alone (`Ok(None)`): rewinding one is `/channel/rewind`'s job.
    ///
    /// # Errors
    /// Topic not found, as `/channel/create`.
    pub fn create_channel_from(
        &mut self,
        topic: &str,
        channel: &str,
        to: RewindTo,
    ) -> Result<Option<Rewound>, AdminError> {
        let exists = self
            .topic_index
            .get(topic)
            .is_some_and(|&tk| self.topics[tk].channel_index.contains_key(channel));
        self.create_channel(topic, channel)?;
        if exists {
            return Ok(None);
        }
        self.rewind_channel(topic, channel, to).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{LogConfig, NewRecord};

    fn log(tag: &str) -> (Log, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("corq-replay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        (Log::open(&dir, LogConfig::default()).unwrap(), dir)
    }

    #[test]
    fn time_search_finds_the_first_record_at_or_after_and_skips_carried_copies() {
        let (mut l, dir) = log("search");
        // Publish times 10, 20, ..., 1000 (offsets 0..100).
        for i in 1..=100i64 {
            l.append(&NewRecord::message(i * 10, 0, b"m")).unwrap();
        }
        // A carried copy at the tail keeps its original, old time: it must not mislead.
        let carried = NewRecord {
            carried_from: Some(3),
            ..NewRecord::message(40, 0, b"m")
        };
        l.append(&carried).unwrap();
        l.append(&NewRecord::message(2000, 0, b"m")).unwrap();
        assert_eq!(offset_at_time(&l, 0), 0);
        assert_eq!(offset_at_time(&l, 10), 0);
        assert_eq!(offset_at_time(&l, 11), 1);
        assert_eq!(offset_at_time(&l, 500), 49);
        assert_eq!(offset_at_time(&l, 1000), 99);
        assert_eq!(
            offset_at_time(&l, 1001),
            100,
            "the carried copy is stepped over"
        );
        // 100 is as good as 101: a reading cursor skips the carried copy there.
        assert_eq!(offset_at_time(&l, 2000), 100);
        assert_eq!(offset_at_time(&l, 2001), 102, "after everything: the tail");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn retention_keep_is_the_tail_when_off_and_lower_with_time_or_bytes() {
        let (mut l, dir) = log("keep");
        for i in 1..=10i64 {
            l.append(&NewRecord::message(i * 1_000_000, 0, b"m"))
                .unwrap();
        }
        let mut s = Settings::<u64>::default();
        assert_eq!(
            retention_keep(&l, &s, 10_000_000),
            l.tail(),
            "off: keeps nothing extra"
        );
        s.values[super::super::settings::RETENTION_TIME] = 3;
        // Now 10 ms: keep what was published from 7 ms on (offset 6).
        assert_eq!(retention_keep(&l, &s, 10_000_000), 6);
        s.values[super::super::settings::RETENTION_TIME] = 0;
        s.values[super::super::settings::RETENTION_BYTES] = 1;
        // One segment holds everything: keeping any bytes keeps it.
        assert_eq!(retention_keep(&l, &s, 10_000_000), l.head());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
