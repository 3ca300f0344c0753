//! Startup and checkpoints: turning the data directory into broker state, and back.
//!
//! On start the checkpoint names the topics and channels and where each channel stood; every
//! topic directory is reopened (its log recovers itself), including directories of topics created
//! after the last checkpoint, whose messages are then buffered for their first channel. Ephemeral
//! leftovers are removed: they are never meant to survive a restart.

use std::fs;

use log::{info, warn};

use crate::protocol::names;
use crate::storage::checkpoint::{
    self, ChannelState, Checkpoint, PendingState, TopicState, CHECKPOINT_VERSION,
};
use crate::storage::Log;

use super::channel::{Channel, Requeued};
use super::topic::Topic;
use super::{
    topic_dir, Broker, Now, StartError, TimerEvent, CHECKPOINT_FILE, TOPICS_DIR, TOPIC_DIR_SUFFIX,
};

impl Broker {
    /// Rebuilds topics and channels from the checkpoint and the topic directories.
    pub(super) fn restore(&mut self, now: Now) -> Result<(), StartError> {
        let path = self.data_dir.join(CHECKPOINT_FILE);
        let cp = checkpoint::load(&path).map_err(|e| StartError::BadCheckpoint(path.clone(), e))?;
        for state in cp.unwrap_or_default().topics {
            if !names::is_valid_topic_name(&state.name) || names::is_ephemeral(&state.name) {
                warn!(
                    "{}: skipping invalid topic name {:?}",
                    path.display(),
                    state.name
                );
                continue;
            }
            self.restore_topic(&state, now)?;
        }
        self.open_unlisted_topics()?;
        // What was just restored is what the checkpoint on disk says: retention may go up to
        // it without waiting for a new checkpoint.
        for (_, topic) in self.topics.iter_mut() {
            topic.disk_floor = Some(topic.retention_floor());
        }
        Ok(())
    }

    fn open_topic(&mut self, name: &str, distributed: u64) -> Result<usize, StartError> {
        let log = Log::open(&topic_dir(&self.data_dir, name), self.log_config())
            .map_err(StartError::Storage)?;
        let mut topic = Topic::new(name, log, distributed);
        topic.track_e2e = !self.cfg.e2e_processing_latency_percentile.is_empty();
        let tk = self.topics.insert(topic);
        self.topic_index.insert(name.to_owned(), tk);
        Ok(tk)
    }

    fn restore_topic(&mut self, state: &TopicState, now: Now) -> Result<(), StartError> {
        let tk = self.open_topic(&state.name, state.distributed)?;
        let topic = &mut self.topics[tk];
        topic.paused = state.paused;
        let (head, tail) = (topic.log.head(), topic.log.tail());
        for cs in &state.channels {
            if !names::is_valid_channel_name(&cs.name) || names::is_ephemeral(&cs.name) {
                warn!(
                    "topic {}: skipping invalid channel name {:?}",
                    state.name, cs.name
                );
                continue;
            }
            // A cursor past the recovered tail means the log lost its tail in a crash: start
            // over from the tail rather than wait for offsets that will be reused.
            let mut ch = Channel::new(&cs.name, cs.cursor.clamp(head, tail));
            ch.paused = cs.paused;
            let chk = topic.insert_channel(ch);
            let ch = &mut topic.channels[chk];
            // By location: a carried message's original may be gone, its copy must be there.
            for p in cs
                .pending
                .iter()
                .filter(|p| p.location() >= head && p.location() < tail)
            {
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
        info!(
            "topic {}: restored, offsets {head}..{tail}, {} channel(s)",
            state.name,
            topic.channels.len()
        );
        Ok(())
    }

    /// Opens topic directories the checkpoint does not list (created after it was written);
    /// removes ephemeral ones.
    fn open_unlisted_topics(&mut self) -> Result<(), StartError> {
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
            if !self.topic_index.contains_key(name) {
                info!("topic {name}: found on disk, not in the checkpoint; its messages wait for a first channel");
                self.open_topic(name, 0)?;
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
            });
        Checkpoint {
            version: CHECKPOINT_VERSION,
            topics: topics.collect(),
        }
    }
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
    }
}
