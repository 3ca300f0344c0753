//! What the lookupd peers (`crate::peers`) need from the broker, without the broker knowing
//! about sockets: a queue of topology events (drained by the reactor each turn), the full list
//! of registrations (sent on every lookupd connect) and nsqd's channel pre-creation.

use log::info;

use super::Broker;
use crate::protocol::names;

/// A topology change lookupd must hear about (reference §4.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// A topic was created while running: `REGISTER t`, then ask lookupd for its channels.
    TopicCreated(String),
    /// A channel was created: `REGISTER t c`.
    ChannelCreated(String, String),
    /// A channel was deleted: `UNREGISTER t c`.
    ChannelDeleted(String, String),
    /// A topic was deleted: `UNREGISTER t`.
    TopicDeleted(String),
}

/// The most events kept between two drains. The reactor drains every turn, so this bounds
/// only an embedding that never runs the loop; past it the oldest are dropped (a lookupd
/// reconnect registers the full state anyway).
const MAX_PEER_EVENTS: usize = 1 << 16;

impl Broker {
    /// Queues an event for the lookupd peers.
    pub(super) fn peer_event(&mut self, event: PeerEvent) {
        if self.peer_events.len() >= MAX_PEER_EVENTS {
            self.peer_events.remove(0);
        }
        self.peer_events.push(event);
    }

    /// Takes the events queued since the last call.
    pub fn take_peer_events(&mut self) -> Vec<PeerEvent> {
        std::mem::take(&mut self.peer_events)
    }

    /// Everything to register on a lookupd (re)connect, as nsqd sends it: for each topic one
    /// `(topic, Some(channel))` per channel, or `(topic, None)` for a topic without channels.
    pub fn registrations(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for (_, topic) in self.topics.iter() {
            if topic.channels.is_empty() {
                out.push((topic.name.clone(), None));
            }
            for (_, ch) in topic.channels.iter() {
                out.push((topic.name.clone(), Some(ch.name.clone())));
            }
        }
        out
    }

    /// nsqd's pre-creation: lookupd named `channel` for the newly created `topic`. A
    /// non-ephemeral channel the topic lacks is created, starting at the oldest message the
    /// topic holds, so it sees what was published between the topic's creation and lookupd's
    /// answer (nsqd waits for the answer before the first publish; corq does not block).
    /// Returns whether a channel was created.
    pub fn precreate_channel(&mut self, topic: &str, channel: &str) -> bool {
        if names::is_ephemeral(channel) || !names::is_valid_channel_name(channel) {
            return false;
        }
        let Some(&tk) = self.topic_index.get(topic) else {
            return false;
        };
        let t = &mut self.topics[tk];
        if t.channel_index.contains_key(channel) {
            return false;
        }
        let start = t.log.head();
        t.insert_channel(super::channel::Channel::new(channel, start));
        self.topology_changed |= !t.ephemeral;
        info!("topic {topic}: channel {channel} pre-created from lookupd");
        self.peer_event(PeerEvent::ChannelCreated(
            topic.to_owned(),
            channel.to_owned(),
        ));
        true
    }
}
