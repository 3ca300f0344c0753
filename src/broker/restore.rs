//! Startup and checkpoints: turning the data directory into broker state, and back.
//!
//! On start the checkpoint names the topics and channels and where each channel stood; every
//! topic directory is reopened (its log recovers itself), including directories of topics created
//! after the last checkpoint, whose messages are then buffered for their first channel. Ephemeral
//! leftovers are removed: they are never meant to survive a restart.
//!
//! The checkpoint is checked against the logs, never trusted blindly (each anomaly is a `warn!`):
//!
//! | anomaly | what happens |
//! |---|---|
//! | checksum mismatch | the file is copied to `corq.dat.damaged`; every channel it names restarts at its log's head, with the carried copies whose original is gone pending (everything retained is delivered again: nothing acknowledged is lost, finished messages come back); `--strict-recovery` exits instead |
//! | no checkpoint, topic logs present | the topics are opened; each one's retained messages go to its first channel |
//! | a topic or channel listed twice | the first entry wins, one log is opened |
//! | a pending entry listed twice | the first wins (one delivery) |
//! | a pending entry whose record is not its own (`loc`/`offset` disagree with the log) | dropped |
//! | a pending entry or cursor below the log's head (a deleted segment) | the lost offset range is named |
//! | a cursor past the log's end | clamped to the end, the skipped count named |
//! | a topic whose log cannot be opened | quarantined ([`Broker::quarantine`]); `--strict-recovery` exits instead |

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use log::{info, warn};

use crate::protocol::names;
use crate::storage::checkpoint::{
    self, ChannelState, Checkpoint, Loaded, PendingState, TopicState, CHECKPOINT_VERSION,
};
use crate::storage::{Log, StorageError};

use super::channel::{Channel, Requeued};
use super::settings::Overrides;
use super::topic::Topic;
use super::{
    topic_dir, Broker, Now, Quarantined, StartError, TimerEvent, CHECKPOINT_FILE, TOPICS_DIR,
    TOPIC_DIR_SUFFIX,
};

/// Per-entry warnings about one channel's pending list stop after this many (then a count).
const MAX_ENTRY_WARNINGS: usize = 10;

impl Broker {
    /// Rebuilds topics and channels from the checkpoint and the topic directories.
    pub(super) fn restore(&mut self, now: Now) -> Result<(), StartError> {
        let path = self.data_dir.join(CHECKPOINT_FILE);
        let loaded =
            checkpoint::load(&path).map_err(|e| StartError::BadCheckpoint(path.clone(), e))?;
        let (cp, damaged) = match loaded {
            None => (None, false),
            Some(Loaded::Intact(cp)) => (Some(cp), false),
            Some(Loaded::Damaged { why, salvaged }) => {
                (Some(self.damaged(&path, why, salvaged)?), true)
            }
        };
        let missing = cp.is_none();
        let mut seen = HashSet::new();
        for state in cp.unwrap_or_default().topics {
            if !names::is_valid_topic_name(&state.name) || names::is_ephemeral(&state.name) {
                warn!(
                    "{}: skipping invalid topic name {:?}",
                    path.display(),
                    state.name
                );
                continue;
            }
            if !seen.insert(state.name.clone()) {
                warn!(
                    "{}: topic {} is listed twice; keeping the first entry",
                    path.display(),
                    state.name
                );
                continue;
            }
            self.restore_topic(state, damaged, now)?;
        }
        self.open_unlisted_topics(missing.then_some(path.as_path()))?;
        // What was just restored is what the checkpoint on disk says: retention may go up to
        // it without waiting for a new checkpoint.
        for (_, topic) in self.topics.iter_mut() {
            topic.disk_floor = Some(topic.retention_floor());
        }
        Ok(())
    }

    /// A checkpoint that failed its checksum: stop (`--strict-recovery`), or keep a copy for
    /// inspection and use only its names. Any number in it may be wrong, and a wrong cursor or
    /// pending list would lose messages; restarting every channel at its log's head loses
    /// none (finished ones are delivered again, which at-least-once allows).
    fn damaged(&self, path: &Path, why: String, cp: Checkpoint) -> Result<Checkpoint, StartError> {
        if self.cfg.strict_recovery {
            return Err(StartError::BadCheckpoint(
                path.to_owned(),
                format!("{why}; --strict-recovery is set"),
            ));
        }
        let copy = path.with_extension("dat.damaged");
        let kept = match fs::copy(path, &copy) {
            Ok(_) => format!("a copy is kept as {}", copy.display()),
            Err(e) => format!("keeping a copy as {} failed: {e}", copy.display()),
        };
        warn!(
            "{}: DAMAGED CHECKPOINT: {why}; {kept}. Its topics and channels are restored, but \
             every channel starts again at its log's first offset: all retained messages are \
             delivered again (none lost, finished ones repeated); DPUB deadlines hold, REQ delays \
             not",
            path.display()
        );
        Ok(cp)
    }

    fn open_topic(&mut self, name: &str, distributed: u64) -> Result<usize, StorageError> {
        let log = Log::open(&topic_dir(&self.data_dir, name), self.log_config())?;
        let mut topic = Topic::new(name, log, distributed);
        topic.track_e2e = !self.cfg.e2e_processing_latency_percentile.is_empty();
        let tk = self.topics.insert(topic);
        self.topic_index.insert(name.to_owned(), tk);
        Ok(tk)
    }

    /// A topic whose log cannot be opened is left closed, its files untouched for inspection:
    /// it answers `E_PUB_FAILED`/`E_SUB_FAILED` with the reason and shows in `/stats`, while
    /// the other topics are served. `--strict-recovery` stops the start instead.
    fn quarantine(
        &mut self,
        name: &str,
        state: Option<TopicState>,
        err: &StorageError,
    ) -> Result<(), StartError> {
        if self.cfg.strict_recovery {
            return Err(StartError::Strict(name.to_owned(), err.to_string()));
        }
        warn!(
            topic = name;
            "topic {name}: QUARANTINED, its log cannot be opened: {err}. Its files are left \
             untouched for inspection; publishing to or subscribing to it fails until it is \
             repaired and corqd restarted. The other topics are served"
        );
        let reason = format!("quarantined at start: {err}");
        self.quarantined
            .insert(name.to_owned(), Quarantined { reason, state });
        Ok(())
    }

    fn restore_topic(
        &mut self,
        state: TopicState,
        damaged: bool,
        now: Now,
    ) -> Result<(), StartError> {
        let tk = match self.open_topic(&state.name, state.distributed) {
            Ok(tk) => tk,
            Err(e) => return self.quarantine(&state.name.clone(), Some(state), &e),
        };
        let topic = &mut self.topics[tk];
        topic.paused = state.paused;
        topic.overrides = restored_overrides(&state.name, &state.settings);
        let (head, tail) = (topic.log.head(), topic.log.tail());
        if damaged {
            topic.distributed = head;
        } else if state.distributed > tail {
            warn!(
                topic = state.name.as_str();
                "topic {}: checkpoint says offsets below {} were distributed, but the log ends \
                 at {tail}; using {tail}",
                state.name, state.distributed
            );
            topic.distributed = tail;
        }
        // With a damaged checkpoint every channel restarts at the head, and the cursor skips
        // carried copies: the ones whose original is gone must be handed over explicitly.
        let orphans = damaged.then(|| carried_orphans(&self.topics[tk].log));
        let mut seen = HashSet::new();
        for cs in &state.channels {
            if !names::is_valid_channel_name(&cs.name) || names::is_ephemeral(&cs.name) {
                warn!(
                    "topic {}: skipping invalid channel name {:?}",
                    state.name, cs.name
                );
                continue;
            }
            if !seen.insert(cs.name.as_str()) {
                warn!(
                    "topic {}: channel {} is listed twice in the checkpoint; keeping the first entry",
                    state.name, cs.name
                );
                continue;
            }
            self.restore_channel(tk, cs, orphans.as_deref(), now);
        }
        let topic = &self.topics[tk];
        info!(
            "topic {}: restored, offsets {head}..{tail}, {} channel(s)",
            state.name,
            topic.channels.len()
        );
        Ok(())
    }

    /// Restores one channel. `orphans` is set when the checkpoint is damaged: the channel then
    /// starts at the log's head with those carried messages pending, whatever the entry says.
    fn restore_channel(
        &mut self,
        tk: usize,
        cs: &ChannelState,
        orphans: Option<&[PendingState]>,
        now: Now,
    ) {
        let topic = &mut self.topics[tk];
        let what = ChannelName {
            topic: &topic.name,
            channel: &cs.name,
        };
        let (cursor, pending) = match orphans {
            Some(o) => (topic.log.head(), o.to_vec()),
            None => (
                checked_cursor(what, cs.cursor, &topic.log),
                verified_pending(what, cs, &topic.log),
            ),
        };
        let mut ch = Channel::new(&cs.name, cursor);
        ch.paused = cs.paused;
        ch.overrides = restored_overrides(&what.to_string(), &cs.settings);
        let chk = topic.insert_channel(ch);
        let ch = &mut topic.channels[chk];
        for p in pending {
            let msg = Requeued {
                offset: p.offset,
                attempts: p.attempts,
                loc: p.location(),
            };
            if p.due_wall_ns > now.wall_ns {
                let wait_ms = u64::try_from((p.due_wall_ns - now.wall_ns) / 1_000_000 + 1)
                    .unwrap_or(u64::MAX);
                let event = TimerEvent::Deferred {
                    topic: tk,
                    channel: chk,
                    offset: p.offset,
                };
                ch.defer(
                    msg,
                    now.timer_base_ms().saturating_add(wait_ms),
                    p.due_wall_ns,
                    event,
                    &mut self.wheel,
                );
            } else {
                ch.requeued.push_back(msg);
            }
        }
    }

    /// Opens topic directories the checkpoint does not list (created after it was written);
    /// removes ephemeral ones. `missing` is the checkpoint's path when there was none.
    fn open_unlisted_topics(&mut self, missing: Option<&Path>) -> Result<(), StartError> {
        let dir = self.data_dir.join(TOPICS_DIR);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StartError::Io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StartError::Io(dir.clone(), e))?;
            let file_name = entry.file_name();
            let name = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(TOPIC_DIR_SUFFIX));
            let Some(name) = name.filter(|n| names::is_valid_topic_name(n)) else {
                warn!("{}: not a topic directory, ignored", entry.path().display());
                continue;
            };
            if names::is_ephemeral(name) {
                if let Err(e) = fs::remove_dir_all(entry.path()) {
                    warn!(
                        "{}: could not remove ephemeral leftover: {e}",
                        entry.path().display()
                    );
                }
                continue;
            }
            if self.topic_index.contains_key(name) || self.quarantined.contains_key(name) {
                continue;
            }
            match missing {
                Some(cp) => warn!(
                    topic = name;
                    "topic {name}: found on disk but the checkpoint {} is missing: its channels \
                     and their positions are unknown; all its retained messages go to its first \
                     channel (a later channel sees only new ones)",
                    cp.display()
                ),
                None => info!("topic {name}: found on disk, not in the checkpoint; its messages wait for a first channel"),
            }
            if let Err(e) = self.open_topic(name, 0) {
                self.quarantine(name, None, &e)?;
            }
        }
        Ok(())
    }

    /// The checkpoint of the current state.
    pub(super) fn snapshot(&self) -> Checkpoint {
        let topics = self
            .topics
            .iter()
            .map(|(_, t)| t)
            .filter(|t| !t.ephemeral)
            .map(|t| TopicState {
                name: t.name.clone(),
                paused: t.paused,
                distributed: t
                    .channels
                    .iter()
                    .map(|(_, c)| c.cursor)
                    .fold(t.distributed, u64::max),
                channels: t
                    .channels
                    .iter()
                    .map(|(_, c)| c)
                    .filter(|c| !c.ephemeral)
                    .map(channel_state)
                    .collect(),
                settings: t.overrides.to_pairs(),
            });
        // A quarantined topic keeps its entry, so repairing it and restarting loses nothing.
        let quarantined = self.quarantined.values().filter_map(|q| q.state.clone());
        Checkpoint {
            version: CHECKPOINT_VERSION,
            topics: topics.chain(quarantined).collect(),
        }
    }
}

/// Carried copies (kind 2) whose original is below the head (deleted), newest copy of each:
/// messages a cursor starting at the head would never reach.
fn carried_orphans(log: &Log) -> Vec<PendingState> {
    let head = log.head();
    let mut newest = std::collections::BTreeMap::new();
    for rec in log.iter_from(head) {
        if let Some(orig) = rec.carried_from.filter(|&o| o < head) {
            newest.insert(orig, (rec.offset, rec.attempts, rec.deliver_at_ns));
        }
    }
    newest
        .into_iter()
        .map(|(offset, (loc, attempts, due_wall_ns))| PendingState {
            offset,
            attempts,
            // A carried copy keeps the deadline the message had when it was carried.
            due_wall_ns,
            loc: Some(loc),
        })
        .collect()
}

/// A channel named in warnings: "topic T channel C" in the text, `topic`/`channel` fields in
/// JSON logs.
#[derive(Debug, Clone, Copy)]
struct ChannelName<'a> {
    topic: &'a str,
    channel: &'a str,
}

impl std::fmt::Display for ChannelName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "topic {} channel {}", self.topic, self.channel)
    }
}

/// The checkpoint's cursor, clamped into the log's range with a warning naming what it costs.
fn checked_cursor(what: ChannelName<'_>, cursor: u64, log: &Log) -> u64 {
    let (head, tail) = (log.head(), log.tail());
    if cursor > tail {
        // A crash lost the log's tail (or the checkpoint is wrong): the offsets will be reused.
        warn!(
            topic = what.topic, channel = what.channel;
            "{what}: checkpoint cursor {cursor} is {} offset(s) past the log's end {tail}; \
             starting at the end",
            cursor - tail
        );
        return tail;
    }
    if cursor < head {
        warn!(
            topic = what.topic, channel = what.channel;
            "{what}: checkpoint cursor {cursor} is below the log's first offset {head}: \
             offsets {cursor}..{head} are gone from disk (a deleted segment?) and are lost"
        );
        return head;
    }
    cursor
}

/// The channel's pending entries that check out against the log, first of each offset; every
/// one dropped is warned about.
fn verified_pending(what: ChannelName<'_>, cs: &ChannelState, log: &Log) -> Vec<PendingState> {
    let (head, tail) = (log.head(), log.tail());
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(cs.pending.len());
    let mut below: Vec<u64> = Vec::new();
    let mut past = 0usize;
    let mut warned = 0usize;
    let mut warn_entry = |why: String| {
        warned += 1;
        if warned <= MAX_ENTRY_WARNINGS {
            warn!(
                topic = what.topic, channel = what.channel;
                "{what}: dropping checkpoint pending entry: {why}"
            );
        }
    };
    for p in &cs.pending {
        let loc = p.location();
        if !seen.insert(p.offset) {
            warn_entry(format!(
                "offset {} is listed twice; keeping the first",
                p.offset
            ));
        } else if p.offset >= cs.cursor {
            warn_entry(format!(
                "offset {} is not below the channel's cursor {}",
                p.offset, cs.cursor
            ));
        } else if loc < head {
            below.push(p.offset);
        } else if loc >= tail {
            past += 1;
        } else if let Err(why) = check_record(log, p) {
            warn_entry(why);
        } else {
            kept.push(*p);
        }
    }
    if warned > MAX_ENTRY_WARNINGS {
        warn!(
            topic = what.topic, channel = what.channel;
            "{what}: {} more pending entries dropped",
            warned - MAX_ENTRY_WARNINGS
        );
    }
    if let (Some(lo), Some(hi)) = (below.iter().min(), below.iter().max()) {
        warn!(
            topic = what.topic, channel = what.channel;
            "{what}: {} unfinished message(s) with ids in {lo}..={hi} are lost: their records \
             are below the log's first offset {head} (a deleted segment?)",
            below.len()
        );
    }
    if past > 0 {
        warn!(
            topic = what.topic, channel = what.channel;
            "{what}: {past} pending entr(ies) point at or past the log's end {tail} (a crash \
             lost the tail); dropped"
        );
    }
    kept
}

/// Whether the record at a pending entry's location is that message: the message itself at
/// its offset, or a carried copy (kind 2) of it.
fn check_record(log: &Log, p: &PendingState) -> Result<(), String> {
    let loc = p.location();
    let rec = log.read(loc).map_err(|e| {
        format!(
            "offset {} (at {loc}): the record cannot be read: {e}",
            p.offset
        )
    })?;
    let expected = (loc != p.offset).then_some(p.offset);
    if rec.carried_from == expected {
        return Ok(());
    }
    let found = match rec.carried_from {
        Some(orig) => format!("a carried copy of message {orig}"),
        None => format!("message {loc} itself"),
    };
    Err(format!(
        "offset {} (at {loc}): the record there is {found}",
        p.offset
    ))
}

fn channel_state(c: &Channel) -> ChannelState {
    let mut pending: Vec<PendingState> =
        Vec::with_capacity(c.in_flight.len() + c.requeued.len() + c.deferred.len());
    pending.extend(c.unfinished().map(|m| PendingState {
        offset: m.offset,
        attempts: m.attempts,
        due_wall_ns: c.deferred.get(&m.offset).map_or(0, |d| d.due_wall_ns),
        // Only a carried message names its location: old checkpoints and small files.
        loc: (m.loc != m.offset).then_some(m.loc),
    }));
    pending.sort_unstable_by_key(|p| p.offset);
    ChannelState {
        name: c.name.clone(),
        paused: c.paused,
        cursor: c.cursor,
        pending,
        settings: c.overrides.to_pairs(),
    }
}

/// Overrides from a checkpoint entry; a key this server does not know (written by a newer
/// one) is dropped with a warning rather than failing the start.
fn restored_overrides(what: &str, pairs: &std::collections::BTreeMap<String, u64>) -> Overrides {
    let (o, unknown) = Overrides::from_pairs(pairs);
    for key in unknown {
        warn!("{what}: unknown setting {key:?} in the checkpoint, ignored");
    }
    o
}
