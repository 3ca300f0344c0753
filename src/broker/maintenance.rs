//! The broker's housekeeping: the storage step of each loop turn, retention and checkpoints,
//! deleting channels and topics, and the clean shutdown.

use log::{debug, info, warn};

use super::peers::PeerEvent;
use super::topic::Topic;
use super::{carry, queue_storage, replay, Broker, Now, TimerEvent};

/// Deletes the segments of `topic` that neither its channels nor the checkpoint on disk
/// (generation `written`) need.
/// Retention (`retention_time`, `retention_bytes`) only lowers that floor: it keeps more.
fn trim(topic: &mut Topic, written: u64, keep: u64) {
    let Some(floor) = topic.safe_floor(written) else {
        return;
    };
    let floor = floor.min(keep);
    match topic.log.delete_below(floor) {
        Ok(0) => {}
        Ok(n) => debug!("topic {}: deleted {n} segment(s) below {floor}", topic.name),
        Err(e) => warn!(
            topic = topic.name.as_str();
            "topic {}: retention failed: {e}", topic.name
        ),
    }
}

impl Broker {
    /// The periodic step: carry long-unfinished messages out of old segments, trim each log
    /// below what every channel and the checkpoint on disk no longer need, release the log
    /// pages reads mapped behind every channel, and checkpoint.
    pub(super) fn maintenance(&mut self, now: Now) {
        let window = self.cfg.e2e_processing_latency_window_time;
        let written = self.checkpointer.written();
        let defaults = self.defaults();
        for (tk, topic) in self.topics.iter_mut() {
            // Retention and carrying leave storage work (removals, syncs of carried records).
            queue_storage(&mut self.storage_due, tk, topic);
            for (_, ch) in topic.channels.iter_mut() {
                if let Some(e2e) = &mut ch.e2e {
                    e2e.rotate(now.mono_ms, window);
                }
            }
            carry::carry_forward(topic);
            let keep =
                replay::retention_keep(&topic.log, &topic.overrides.over(defaults), now.wall_ns);
            trim(topic, written, keep);
            topic.log.release_idle_buffer();
            topic.sweep_read_pages();
        }
        self.checkpoint();
        self.evaluate_alerts(now);
        let next = now.mono_ms + self.cfg.sync_timeout;
        self.wheel.insert(next, TimerEvent::Maintenance);
    }

    /// Hands the current channel positions to the checkpoint writer (off this thread).
    pub fn checkpoint(&mut self) {
        self.topology_changed = false;
        self.acks_dirty = false;
        let snapshot = self.snapshot();
        let generation = self.checkpointer.submit(snapshot);
        // The floors of the state just snapshotted: retention may reach them once this
        // generation is confirmed on disk.
        for (_, topic) in self.topics.iter_mut() {
            topic.note_checkpoint(generation);
        }
    }

    /// Checkpoints now if topics or channels were created or deleted this turn, so a crash does
    /// not forget them (nsqd persists its metadata on every create and delete too).
    ///
    /// In strict mode also when a publish waits for its client's earlier FINs/REQs to be
    /// durable: one checkpoint per turn makes them durable together (their group commit).
    pub fn checkpoint_if_changed(&mut self) {
        if self.topology_changed || self.acks_dirty {
            self.checkpoint();
        }
    }

    /// Clean shutdown: write the final checkpoint and wait for it to be on disk.
    pub fn shutdown(&mut self) {
        for (_, topic) in self.topics.iter_mut() {
            if let Err(e) = topic.log.sync_blocking() {
                warn!(topic = topic.name.as_str(); "topic {}: final sync failed: {e}", topic.name);
            }
        }
        // Strict mode: publishes waiting for a sync get their answer before the sockets close.
        let all: Vec<usize> = self.topics.iter().map(|(tk, _)| tk).collect();
        self.release_acks(&all);
        let snapshot = self.snapshot();
        if let Err(e) = self.checkpointer.write_now(snapshot) {
            warn!("final checkpoint failed: {e}");
        }
    }

    /// Deletes a channel: its consumers are closed, its timers cancelled. An ephemeral topic
    /// left without channels goes too.
    pub fn delete_channel(&mut self, tk: usize, chk: usize) {
        let Some(topic) = self.topics.get_mut(tk) else {
            return;
        };
        let Some(mut ch) = topic.remove_channel(chk) else {
            return;
        };
        ch.cancel_timers(&mut self.wheel);
        if !ch.ephemeral && !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {}: channel {} deleted", topic.name, ch.name);
        let event = PeerEvent::ChannelDeleted(topic.name.clone(), ch.name.clone());
        let drop_topic = topic.ephemeral && topic.channels.is_empty();
        self.peer_event(event);
        for ck in ch.consumers {
            self.close_silently(ck);
        }
        if drop_topic {
            self.delete_topic(tk);
        }
    }

    /// Deletes a topic, its channels and its log files.
    pub fn delete_topic(&mut self, tk: usize) {
        let Some(topic) = self.topics.get(tk) else {
            return;
        };
        let keys: Vec<usize> = topic.channels.iter().map(|(k, _)| k).collect();
        // nsqd's order: the topic's UNREGISTER first, then one per channel.
        self.peer_event(PeerEvent::TopicDeleted(topic.name.clone()));
        for chk in keys {
            if let Some(t) = self.topics.get_mut(tk) {
                if let Some(mut ch) = t.remove_channel(chk) {
                    let event = PeerEvent::ChannelDeleted(t.name.clone(), ch.name.clone());
                    self.peer_event(event);
                    ch.cancel_timers(&mut self.wheel);
                    for ck in ch.consumers {
                        self.close_silently(ck);
                    }
                }
            }
        }
        let Some(topic) = self.topics.try_remove(tk) else {
            return;
        };
        self.topic_index.remove(&topic.name);
        if !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {}: deleted", topic.name);
        // The files go on the storage worker: removing a big directory can take a while.
        self.worker.submit(tk as u64, topic.log.destroy_job());
    }
}
