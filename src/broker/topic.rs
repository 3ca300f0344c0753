//! A topic: one log that every message is written to once, and the channels reading it.
//!
//! The topic decides where a new channel starts (the first channel gets everything the topic
//! buffered, later ones start at the tail, as in nsqd) and how far the log may be trimmed: a
//! segment goes only when every channel's ack floor is past it (design invariant 3).

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::storage::{Log, Record, StorageError};

use super::channel::Channel;
use super::durable::PendingAck;

/// One topic.
#[derive(Debug)]
pub struct Topic {
    /// The topic's name (valid per nsqd's rules).
    pub name: String,
    /// `#ephemeral`: deleted with its last channel, never checkpointed.
    pub ephemeral: bool,
    /// A paused topic hands nothing new to its channels; they still deliver what they hold.
    pub paused: bool,
    /// Every message of the topic, written once.
    pub log: Log,
    /// The topic's channels.
    pub channels: Slab<Channel>,
    /// Channel name → key in `channels`.
    pub channel_index: HashMap<String, usize>,
    /// Offsets below this were handed to channels that existed at the time. While the topic has
    /// no channel, messages from here on are buffered for the first channel to come.
    pub distributed: u64,
    /// Messages published since start.
    pub message_count: u64,
    /// Bytes of message bodies published since start.
    pub message_bytes: u64,
    /// Strict mode: publishers' `OK`s waiting for the log to be durable, oldest first.
    pub pending_acks: VecDeque<PendingAck>,
    /// Whether the topic is on the broker's storage list.
    pub storage_queued: bool,
    /// Records whose CRC was verified moments ago (fan-out reads each once per channel; one
    /// check vouches for the others while its [`VerifyEpoch`] lasts).
    pub verified: VerifiedRange,
    /// Whether channels track e2e latency (`--e2e-processing-latency-percentile` is set).
    pub track_e2e: bool,
    /// Checkpoints submitted but not yet confirmed on disk: (generation, retention floor of
    /// the state it holds), oldest first.
    pub checkpoint_floors: VecDeque<(u64, u64)>,
    /// The retention floor of the newest checkpoint on disk that lists this topic; `None` until
    /// there is one. Retention never goes past it: a crash restores that checkpoint, and its
    /// locations must still exist.
    pub disk_floor: Option<u64>,
    /// Settings set on this topic (`/topic/config`); `None` entries inherit the flags.
    pub overrides: super::settings::Overrides,
    /// Keys published within the dedup window (empty while it is off).
    pub dedup: super::dedup::DedupWindow,
}

/// Bytes of log the pages of which may stay mapped behind the fastest channel for slower ones
/// to read: past it a stalled channel (no consumer, paused) no longer keeps everything the
/// others read resident; it faults those pages back in when it moves. Larger than the spread of
/// a 10-channel fan-out at full speed (~85 MiB measured), so that does not refault.
pub const READER_SPREAD: usize = 128 * 1024 * 1024;

/// Unconfirmed checkpoints remembered per topic; beyond this the two oldest are merged (keeping
/// the lower floor, which is always safe) so a checkpoint thread that keeps failing cannot grow
/// memory without bound.
const MAX_CHECKPOINT_FLOORS: usize = 64;

impl Topic {
    /// A topic over an opened log; `distributed` comes from the checkpoint (0 for a new topic).
    pub fn new(name: &str, log: Log, distributed: u64) -> Self {
        Topic {
            name: name.to_owned(),
            ephemeral: crate::protocol::names::is_ephemeral(name),
            paused: false,
            log,
            channels: Slab::new(),
            channel_index: HashMap::new(),
            distributed,
            message_count: 0,
            message_bytes: 0,
            pending_acks: VecDeque::new(),
            track_e2e: false,
            checkpoint_floors: VecDeque::new(),
            disk_floor: None,
            verified: VerifiedRange::default(),
            storage_queued: false,
            overrides: super::settings::Overrides::default(),
            dedup: super::dedup::DedupWindow::default(),
        }
    }

    /// Publishes answered `OK` and not appended as duplicates (the dedup window).
    pub fn dedup_count(&self) -> u64 {
        self.dedup.hits
    }

    /// Where a channel created now starts: at the buffered backlog if it is the only channel,
    /// else at the tail (it sees only what is published from now on).
    pub fn start_offset_for_new_channel(&self) -> u64 {
        if self.channels.is_empty() {
            self.distributed.max(self.log.head())
        } else {
            self.log.tail()
        }
    }

    /// Creates a channel (or returns the existing one's key).
    pub fn channel_key(&mut self, name: &str) -> usize {
        if let Some(&k) = self.channel_index.get(name) {
            return k;
        }
        let start = self.start_offset_for_new_channel();
        let mut channel = Channel::new(name, start);
        // The backlog a first channel starts with reaches it now, as nsqd's topic pump puts
        // its buffered messages into its first channel (and counts them there).
        channel.message_count = self.log.tail().saturating_sub(start);
        self.insert_channel(channel)
    }

    /// Adds a fully built channel (new, or restored from a checkpoint).
    pub fn insert_channel(&mut self, mut channel: Channel) -> usize {
        if self.track_e2e && channel.e2e.is_none() {
            channel.e2e = Some(crate::stats::E2eLatency::new(0));
        }
        let name = channel.name.clone();
        let key = self.channels.insert(channel);
        self.channel_index.insert(name, key);
        key
    }

    /// Removes a channel, remembering how far it had read so a later first channel does not
    /// see messages this one already consumed.
    pub fn remove_channel(&mut self, key: usize) -> Option<Channel> {
        let channel = self.channels.try_remove(key)?;
        self.channel_index.remove(&channel.name);
        self.distributed = self.distributed.max(channel.cursor);
        Some(channel)
    }

    /// The lowest offset any channel (or the buffered backlog) still needs.
    pub fn retention_floor(&self) -> u64 {
        let floor = self.channels.iter().map(|(_, c)| c.ack_floor()).min();
        floor.unwrap_or(self.distributed)
    }

    /// Remembers the floor of the state checkpoint `generation` holds.
    pub fn note_checkpoint(&mut self, generation: u64) {
        let floor = self.retention_floor();
        self.checkpoint_floors.push_back((generation, floor));
        if self.checkpoint_floors.len() > MAX_CHECKPOINT_FLOORS {
            if let Some((_, oldest)) = self.checkpoint_floors.pop_front() {
                if let Some(next) = self.checkpoint_floors.front_mut() {
                    next.1 = next.1.min(oldest);
                }
            }
        }
    }

    /// How far retention may trim: the live floor, but never past what the newest checkpoint
    /// on disk (generation `written`) still needs. `None` while no checkpoint on disk lists the
    /// topic. An ephemeral topic is never checkpointed (a restart deletes it), so its live
    /// floor is the answer.
    pub fn safe_floor(&mut self, written: u64) -> Option<u64> {
        let live = self.retention_floor();
        if self.ephemeral {
            return Some(live);
        }
        while let Some(&(generation, floor)) = self.checkpoint_floors.front() {
            if generation > written {
                break;
            }
            self.checkpoint_floors.pop_front();
            self.disk_floor = Some(floor);
        }
        self.disk_floor.map(|d| d.min(live))
    }

    /// The slowest and the fastest channel's cursors, or the tail twice while no channel reads
    /// (nothing maps pages then; a first channel faults in what it reads).
    fn reader_span(&self) -> (u64, u64) {
        let cursors = self.channels.iter().map(|(_, c)| c.cursor);
        let slowest = cursors.clone().min().unwrap_or_else(|| self.log.tail());
        (slowest, cursors.max().unwrap_or_else(|| self.log.tail()))
    }

    /// Releases the log's mapped pages behind every channel's cursor, in 4 MiB steps (see
    /// `storage/log/resident.rs`): below the slowest channel's cursor, more than
    /// [`READER_SPREAD`] behind the fastest's, and the pages `reader` (the channel whose pass
    /// just moved it there) read back behind itself. Messages below the line that are in
    /// flight, requeued or deferred stay readable: a released page is faulted back in from the
    /// page cache. Called after each delivery pass that moved a cursor (a few compares when no
    /// step was crossed), not per message: a 5 M-message drain reads ~1 GB/s, far more than
    /// the maintenance step's interval would let pile up.
    pub fn release_read_pages(&mut self, reader: u64) {
        let (slowest, fastest) = self.reader_span();
        self.log.release_below(slowest);
        self.log.release_spread(fastest, READER_SPREAD);
        self.log.sweep_behind(reader);
    }

    /// Releases the pages below the slowest channel, and those beyond the spread, that reads
    /// faulted back in anywhere behind them (requeues, deferrals, peeks, carries): the
    /// periodic maintenance step.
    pub fn sweep_read_pages(&mut self) {
        let (slowest, fastest) = self.reader_span();
        self.log.sweep_below(slowest);
        self.log.release_spread(fastest, READER_SPREAD);
    }

    /// Messages the topic holds that no channel has taken yet (nsqd's topic depth): the whole
    /// backlog while it has no channel; while paused, what its channels have not read (an
    /// approximation of nsqd's "not yet copied", which corq never does); otherwise 0.
    pub fn depth(&self) -> u64 {
        if self.channels.is_empty() {
            return self
                .log
                .tail()
                .saturating_sub(self.distributed.max(self.log.head()));
        }
        if !self.paused {
            return 0;
        }
        let furthest = self
            .channels
            .iter()
            .map(|(_, c)| c.cursor)
            .max()
            .unwrap_or(0);
        self.log.tail().saturating_sub(furthest)
    }
}

/// Ranges of log offsets read with their CRC checked in one [`VerifyEpoch`]: up to
/// [`VERIFIED_RANGES`] disjoint ranges, merged when they touch.
///
/// Why several: channels of one topic sit at different cursors (each consumer has its own
/// in-flight window), so they read overlapping but staggered stretches of the log. With a
/// single range every channel that started behind the last one reset it, and in a 10-channel
/// fan-out the CRC was computed up to once per channel (15 % of the reactor's time).
#[derive(Debug, Default, Clone, Copy)]
pub struct VerifiedRange {
    /// The epoch the ranges belong to; any other epoch sees them as empty.
    epoch: VerifyEpoch,
    /// `(start, end)` half-open ranges; the first `len` are in use.
    ranges: [(u64, u64); VERIFIED_RANGES],
    len: usize,
    /// The slot a new range overwrites when all are in use (round robin).
    next_victim: usize,
}

/// Disjoint verified ranges remembered per epoch: one per channel reading its own stretch, for
/// up to this many channels (ten channels of a fan-out sat up to 126 k messages apart, 0.3 s of
/// their reading, after 7 s).
pub const VERIFIED_RANGES: usize = 16;

/// How long a CRC check vouches for the bytes it read, in the loop's milliseconds (at most; an
/// epoch is a tick of this length, so a check made late in one counts for less). Long enough
/// for the channels behind the first reader to reach what it checked (above).
pub const VERIFY_SPAN_MS: u64 = 1024;

/// What a CRC check vouches for, and for how long: the record's bytes as they are in the page
/// cache. Those bytes change only if their pages leave the cache and are read back from the
/// disk, which is what the check guards against: the window drops pages on purpose
/// (`storage/log/window.rs`; [`Log::cache_dropped_below`] moves), the kernel only under memory
/// pressure, and then the pages used longest ago first, not ones read within the second. So a
/// check counts until the tick of [`VERIFY_SPAN_MS`] ends or the window drops a segment,
/// whichever comes first. A record read again later (a requeue, a rewind, a channel far
/// behind) is checked again.
///
/// Why not one delivery pass, as before: a pass hands out at most `PASS_BUDGET` messages, so
/// in a 10-channel fan-out each pass reached a few channels and later passes the others,
/// which read the same records again; and channels drift apart, so the others read them
/// up to a few hundred milliseconds later (`docs/benchmarks.md`, "Fan-out: what a delivery
/// costs").
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VerifyEpoch {
    tick: u64,
    dropped_below: u64,
}

impl VerifyEpoch {
    /// The epoch at loop time `mono_ms` for a log whose window has dropped the segments
    /// below `dropped_below`.
    pub fn new(mono_ms: u64, dropped_below: u64) -> VerifyEpoch {
        VerifyEpoch {
            tick: mono_ms / VERIFY_SPAN_MS,
            dropped_below,
        }
    }
}

impl VerifiedRange {
    /// Reads the record at `loc` of `log` for a channel's delivery at loop time `mono_ms`:
    /// its CRC is checked unless another channel's read checked it within the same
    /// [`VerifyEpoch`], and a check that passed is noted for the channels that follow.
    pub fn read<'a>(
        &mut self,
        log: &'a Log,
        loc: u64,
        mono_ms: u64,
    ) -> Result<Record<'a>, StorageError> {
        let epoch = VerifyEpoch::new(mono_ms, log.cache_dropped_below());
        if self.contains(epoch, loc) {
            return log.read_already_verified(loc);
        }
        let read = log.read(loc);
        if read.is_ok() {
            self.note(epoch, loc);
        }
        read
    }

    /// Whether `offset` was verified in `epoch`.
    pub fn contains(&self, epoch: VerifyEpoch, offset: u64) -> bool {
        self.epoch == epoch
            && self.ranges[..self.len]
                .iter()
                .any(|&(start, end)| start <= offset && offset < end)
    }

    /// Notes that `offset` was just verified in `epoch`: extends a range it touches (merging
    /// two that meet), else starts a new one.
    pub fn note(&mut self, epoch: VerifyEpoch, offset: u64) {
        if self.epoch != epoch {
            *self = VerifiedRange {
                epoch,
                ..VerifiedRange::default()
            };
        }
        let in_use = &mut self.ranges[..self.len];
        if let Some(i) = in_use.iter().position(|r| r.1 == offset) {
            in_use[i].1 += 1;
            let end = in_use[i].1;
            if let Some(j) = in_use.iter().position(|r| r.0 == end) {
                in_use[i].1 = in_use[j].1;
                self.remove(j);
            }
        } else if let Some(i) = in_use.iter().position(|r| r.0 == offset.saturating_add(1)) {
            in_use[i].0 = offset;
        } else if self.len < VERIFIED_RANGES {
            self.ranges[self.len] = (offset, offset.saturating_add(1));
            self.len += 1;
        } else {
            self.ranges[self.next_victim] = (offset, offset.saturating_add(1));
            self.next_victim = (self.next_victim + 1) % VERIFIED_RANGES;
        }
    }

    fn remove(&mut self, i: usize) {
        self.ranges.swap(i, self.len - 1);
        self.len -= 1;
        self.next_victim = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::{VerifiedRange, VerifyEpoch, VERIFY_SPAN_MS};

    /// The epoch of tick `t` of a log whose window dropped nothing.
    fn tick(t: u64) -> VerifyEpoch {
        VerifyEpoch::new(t * VERIFY_SPAN_MS, 0)
    }

    #[test]
    fn verified_range_grows_and_expires_with_its_epoch() {
        let mut v = VerifiedRange::default();
        assert!(!v.contains(tick(1), 0));
        v.note(tick(1), 10);
        v.note(tick(1), 11);
        assert!(v.contains(tick(1), 10) && v.contains(tick(1), 11) && !v.contains(tick(1), 12));
        let late_in_the_tick = VerifyEpoch::new(2 * VERIFY_SPAN_MS - 1, 0);
        assert!(
            v.contains(late_in_the_tick, 10),
            "one tick: the check still counts"
        );
        assert!(!v.contains(tick(2), 10), "a new tick verifies again");
        let after_a_drop = VerifyEpoch::new(VERIFY_SPAN_MS, 5);
        assert!(
            !v.contains(after_a_drop, 10),
            "a window drop verifies again"
        );
        v.note(tick(2), 20);
        assert!(!v.contains(tick(2), 10) && v.contains(tick(2), 20));
    }

    #[test]
    fn staggered_channels_share_one_verification_per_record() {
        // Channel A reads 100..150, then channel B, behind it, reads 90..160.
        let mut v = VerifiedRange::default();
        let mut checked = 0;
        for offset in (100..150).chain(90..160) {
            if !v.contains(tick(7), offset) {
                checked += 1;
                v.note(tick(7), offset);
            }
        }
        assert_eq!(checked, 70, "each of 90..160 verified once");
        assert!((90..160).all(|o| v.contains(tick(7), o)));
        assert!(!v.contains(tick(7), 89) && !v.contains(tick(7), 160));
    }

    #[test]
    fn a_full_set_of_ranges_forgets_one_and_stays_correct() {
        let mut v = VerifiedRange::default();
        for r in 0..(VERIFIED_RANGES as u64 + 2) {
            v.note(tick(1), r * 100);
        }
        // Whatever was forgotten, nothing unverified is ever claimed.
        for r in 0..(VERIFIED_RANGES as u64 + 2) {
            assert!(!v.contains(tick(1), r * 100 + 1));
        }
        assert!(v.contains(tick(1), (VERIFIED_RANGES as u64 + 1) * 100));
    }

    use super::*;
    use crate::storage::LogConfig;

    fn topic(tag: &str) -> (Topic, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("corq-topic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let log = Log::open(&dir, LogConfig::default()).unwrap();
        (Topic::new(tag, log, 0), dir)
    }

    #[test]
    fn retention_waits_for_the_checkpoint_on_disk() {
        let (mut t, dir) = topic("floors");
        let chk = t.insert_channel(Channel::new("c", 10));
        // No checkpoint on disk lists the topic yet: nothing may go.
        assert_eq!(t.safe_floor(0), None);
        t.note_checkpoint(1);
        t.channels[chk].cursor = 50;
        t.note_checkpoint(2);
        t.channels[chk].cursor = 90;
        assert_eq!(t.safe_floor(0), None);
        // Generation 1 is on disk: it needs 10, whatever the live state says.
        assert_eq!(t.safe_floor(1), Some(10));
        assert_eq!(t.safe_floor(2), Some(50));
        assert!(t.checkpoint_floors.is_empty());
        // The live floor wins when it is lower.
        t.channels[chk].cursor = 40;
        assert_eq!(t.safe_floor(2), Some(40));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unconfirmed_floors_are_merged_conservatively() {
        let (mut t, dir) = topic("merge");
        let chk = t.insert_channel(Channel::new("c", 5));
        for generation in 1..=(MAX_CHECKPOINT_FLOORS as u64 + 10) {
            t.note_checkpoint(generation);
            t.channels[chk].cursor += 1;
        }
        assert_eq!(t.checkpoint_floors.len(), MAX_CHECKPOINT_FLOORS);
        // The oldest remembered entry carries the lowest floor of those merged into it.
        assert_eq!(t.checkpoint_floors.front().map(|f| f.1), Some(5));
        assert_eq!(
            t.safe_floor(u64::MAX),
            Some(5 + MAX_CHECKPOINT_FLOORS as u64 + 9)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_ephemeral_topic_needs_no_checkpoint() {
        let (mut t, dir) = topic("eph#ephemeral");
        t.insert_channel(Channel::new("c", 7));
        assert_eq!(t.safe_floor(0), Some(7));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
