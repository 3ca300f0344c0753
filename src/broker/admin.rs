//! Administrative operations by name (the HTTP API's topic and channel actions): create,
//! delete, empty, pause and unpause, with nsqd's not-found semantics.

use log::info;

use super::peers::PeerEvent;
use super::{queue_pump, Broker};
use crate::storage::StorageError;

/// Why an administrative action could not be done (nsqd's HTTP error codes).
#[derive(Debug)]
pub enum AdminError {
    /// `TOPIC_NOT_FOUND`
    TopicNotFound,
    /// `CHANNEL_NOT_FOUND`
    ChannelNotFound,
    /// Creating the topic's log failed.
    Storage(StorageError),
}

impl AdminError {
    /// nsqd's code for the error.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::TopicNotFound => "TOPIC_NOT_FOUND",
            AdminError::ChannelNotFound => "CHANNEL_NOT_FOUND",
            AdminError::Storage(_) => "INTERNAL_ERROR",
        }
    }
}

impl Broker {
    fn existing_topic(&self, topic: &str) -> Result<usize, AdminError> {
        self.topic_index
            .get(topic)
            .copied()
            .ok_or(AdminError::TopicNotFound)
    }

    fn existing_channel(&self, topic: &str, channel: &str) -> Result<(usize, usize), AdminError> {
        let tk = self.existing_topic(topic)?;
        let chk = self.topics[tk].channel_index.get(channel).copied();
        Ok((tk, chk.ok_or(AdminError::ChannelNotFound)?))
    }

    /// Creates a topic (idempotent).
    ///
    /// # Errors
    /// If its log cannot be created.
    pub fn create_topic(&mut self, topic: &str) -> Result<(), AdminError> {
        self.topic_key(topic)
            .map(|_| ())
            .map_err(AdminError::Storage)
    }

    /// Creates a channel of an existing topic (idempotent).
    ///
    /// # Errors
    /// `TopicNotFound`: as nsqd, the topic must exist.
    pub fn create_channel(&mut self, topic: &str, channel: &str) -> Result<(), AdminError> {
        let tk = self.existing_topic(topic)?;
        let t = &mut self.topics[tk];
        if !t.channel_index.contains_key(channel) {
            t.channel_key(channel);
            self.topology_changed |= !t.ephemeral && !crate::protocol::names::is_ephemeral(channel);
            info!("topic {topic}: new channel {channel}");
            let event = PeerEvent::ChannelCreated(topic.to_owned(), channel.to_owned());
            self.peer_event(event);
        }
        Ok(())
    }

    /// Deletes a topic, its channels (closing their consumers) and its files.
    ///
    /// # Errors
    /// `TopicNotFound`.
    pub fn delete_topic_named(&mut self, topic: &str) -> Result<(), AdminError> {
        let tk = self.existing_topic(topic)?;
        self.delete_topic(tk);
        Ok(())
    }

    /// Deletes a channel, closing its consumers.
    ///
    /// # Errors
    /// `TopicNotFound`, `ChannelNotFound`.
    pub fn delete_channel_named(&mut self, topic: &str, channel: &str) -> Result<(), AdminError> {
        let (tk, chk) = self.existing_channel(topic, channel)?;
        self.delete_channel(tk, chk);
        Ok(())
    }

    /// Pauses or unpauses a topic: a paused topic hands nothing new to its channels.
    ///
    /// # Errors
    /// `TopicNotFound`.
    pub fn set_topic_paused(&mut self, topic: &str, paused: bool) -> Result<(), AdminError> {
        let tk = self.existing_topic(topic)?;
        let t = &mut self.topics[tk];
        t.paused = paused;
        if !paused {
            for (chk, ch) in t.channels.iter_mut() {
                queue_pump(&mut self.pump_queue, tk, chk, ch);
            }
        }
        self.topology_changed |= !t.ephemeral;
        Ok(())
    }

    /// Pauses or unpauses a channel: a paused channel delivers nothing; its clients keep RDY.
    ///
    /// # Errors
    /// `TopicNotFound`, `ChannelNotFound`.
    pub fn set_channel_paused(
        &mut self,
        topic: &str,
        channel: &str,
        paused: bool,
    ) -> Result<(), AdminError> {
        let (tk, chk) = self.existing_channel(topic, channel)?;
        let t = &mut self.topics[tk];
        let ch = &mut t.channels[chk];
        ch.paused = paused;
        if !paused {
            queue_pump(&mut self.pump_queue, tk, chk, ch);
        }
        self.topology_changed |= !t.ephemeral && !ch.ephemeral;
        Ok(())
    }

    /// Empties a topic: drops what it holds that no channel has taken (its whole backlog while
    /// it has no channel; while paused, what its channels have not read yet).
    ///
    /// # Errors
    /// `TopicNotFound`.
    pub fn empty_topic(&mut self, topic: &str) -> Result<(), AdminError> {
        let tk = self.existing_topic(topic)?;
        let t = &mut self.topics[tk];
        let tail = t.log.tail();
        t.distributed = tail;
        if t.paused {
            for (_, ch) in t.channels.iter_mut() {
                ch.cursor = tail;
            }
        }
        Ok(())
    }

    /// Empties a channel: forgets every message it has not finished, in flight and deferred
    /// ones included; later FINs of those fail, as in nsqd.
    ///
    /// # Errors
    /// `TopicNotFound`, `ChannelNotFound`.
    pub fn empty_channel(&mut self, topic: &str, channel: &str) -> Result<(), AdminError> {
        let (tk, chk) = self.existing_channel(topic, channel)?;
        let t = &mut self.topics[tk];
        let tail = t.log.tail();
        let ch = &mut t.channels[chk];
        ch.empty(tail, &mut self.wheel);
        for &ck in &ch.consumers {
            if let Some(c) = self.clients.get_mut(ck) {
                c.in_flight = 0;
            }
        }
        queue_pump(&mut self.pump_queue, tk, chk, ch);
        Ok(())
    }
}
