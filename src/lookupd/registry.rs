//! The lookupd registration database: which peers (nsqd nodes) produce which topics and
//! channels, and the queries the HTTP API answers from it (nsqlookupd `registration_db.go`).
//!
//! It is pure: no sockets, no clock. Every time is a parameter, in Unix nanoseconds (the unit
//! `/debug` reports), so tests drive activity timeouts and tombstones by hand.
//!
//! A registration is `(category, key, subkey)`: `("client", "", "")` for every identified peer,
//! `("topic", t, "")` and `("channel", t, c)`. Each holds a map of producers keyed by peer id
//! (the peer's `ip:port`). As in nsqlookupd, registrations stay when their last producer goes
//! (so `/topics` keeps listing a topic until someone deletes it), except ephemeral ones, which
//! an `UNREGISTER` that leaves them empty removes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::protocol::names::is_ephemeral;

/// What a peer says about itself in IDENTIFY, plus what lookupd adds (nsqlookupd `PeerInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct PeerInfo {
    /// The peer's `ip:port` as lookupd sees it (also its id).
    #[serde(default, deserialize_with = "null_is_default")]
    pub remote_address: String,
    /// The peer's OS hostname (optional).
    #[serde(default, deserialize_with = "null_is_default")]
    pub hostname: String,
    /// The address consumers dial.
    #[serde(default, deserialize_with = "null_is_default")]
    pub broadcast_address: String,
    /// The port consumers dial (nsqd's broadcast TCP port).
    #[serde(default, deserialize_with = "null_is_default")]
    pub tcp_port: i64,
    /// The peer's broadcast HTTP port.
    #[serde(default, deserialize_with = "null_is_default")]
    pub http_port: i64,
    /// The peer's version string.
    #[serde(default, deserialize_with = "null_is_default")]
    pub version: String,
}

/// Go's decoder leaves a field at its zero value for a JSON `null`; serde would refuse it.
fn null_is_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The three kinds of registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// An identified peer (`client`).
    Client,
    /// A topic.
    Topic,
    /// A channel of a topic.
    Channel,
}

impl Category {
    /// nsqlookupd's name for the category, as `/debug` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Category::Client => "client",
            Category::Topic => "topic",
            Category::Channel => "channel",
        }
    }
}

/// One registration key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Registration {
    /// Client, topic or channel.
    pub category: Category,
    /// The topic name (empty for a client).
    pub key: String,
    /// The channel name (empty for a client or a topic).
    pub subkey: String,
}

impl Registration {
    /// `("topic", t, "")`.
    pub fn topic(t: &str) -> Self {
        Registration {
            category: Category::Topic,
            key: t.to_owned(),
            subkey: String::new(),
        }
    }

    /// `("channel", t, c)`.
    pub fn channel(t: &str, c: &str) -> Self {
        Registration {
            category: Category::Channel,
            key: t.to_owned(),
            subkey: c.to_owned(),
        }
    }

    /// `("client", "", "")`.
    pub fn client() -> Self {
        Registration {
            category: Category::Client,
            key: String::new(),
            subkey: String::new(),
        }
    }

    /// nsqlookupd's `IsMatch`: `*` as key or subkey matches anything.
    fn matches(&self, category: Category, key: &str, subkey: &str) -> bool {
        self.category == category
            && (key == "*" || self.key == key)
            && (subkey == "*" || self.subkey == subkey)
    }
}

/// One peer's registration under one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Producer {
    /// When `/topic/tombstone` marked it (Unix ns); `None` if never.
    pub tombstoned_at: Option<i64>,
}

impl Producer {
    /// Tombstoned less than `lifetime_ns` ago (nsqlookupd `IsTombstoned`).
    pub fn is_tombstoned(&self, now_ns: i64, lifetime_ns: i64) -> bool {
        self.tombstoned_at
            .is_some_and(|at| now_ns.saturating_sub(at) < lifetime_ns)
    }
}

/// A known peer: its info and when it last said IDENTIFY or PING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// What it identified as.
    pub info: PeerInfo,
    /// Unix ns of its last IDENTIFY or PING.
    pub last_update: i64,
}

/// The registration database.
#[derive(Debug, Default)]
pub struct Registry {
    /// Registration → producers by peer id. A BTreeMap keeps every listing in a stable order
    /// (nsqlookupd's is Go map order, i.e. random; no client depends on it).
    regs: BTreeMap<Registration, BTreeMap<String, Producer>>,
    /// Identified peers by id.
    peers: HashMap<String, Peer>,
}

impl Registry {
    /// An empty database.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A peer identified: remember it and register it as a `client`.
    pub fn identify(&mut self, info: PeerInfo, now_ns: i64) {
        let id = info.remote_address.clone();
        self.peers.insert(
            id.clone(),
            Peer {
                info,
                last_update: now_ns,
            },
        );
        self.add_producer(Registration::client(), &id);
    }

    /// PING or IDENTIFY: the peer is active now.
    pub fn touch(&mut self, id: &str, now_ns: i64) {
        if let Some(p) = self.peers.get_mut(id) {
            p.last_update = now_ns;
        }
    }

    /// The peer with this id, if identified.
    pub fn peer(&self, id: &str) -> Option<&Peer> {
        self.peers.get(id)
    }

    /// Adds a registration with no producer (the HTTP create endpoints).
    pub fn add_registration(&mut self, r: Registration) {
        self.regs.entry(r).or_default();
    }

    /// Adds `id` as a producer of `r` (creating `r`); true if it was not one already. An
    /// existing producer keeps its tombstone, as in nsqlookupd.
    pub fn add_producer(&mut self, r: Registration, id: &str) -> bool {
        let producers = self.regs.entry(r).or_default();
        if producers.contains_key(id) {
            return false;
        }
        producers.insert(id.to_owned(), Producer::default());
        true
    }

    /// Removes `id` from `r`; returns (removed, producers left). An absent `r` is (false, 0).
    pub fn remove_producer(&mut self, r: &Registration, id: &str) -> (bool, usize) {
        match self.regs.get_mut(r) {
            Some(p) => (p.remove(id).is_some(), p.len()),
            None => (false, 0),
        }
    }

    /// Removes a registration and its producers.
    pub fn remove_registration(&mut self, r: &Registration) {
        self.regs.remove(r);
    }

    /// `REGISTER t [c]`: the peer produces the channel (if given) and the topic.
    pub fn register(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        if let Some(c) = channel {
            self.add_producer(Registration::channel(topic, c), id);
        }
        self.add_producer(Registration::topic(topic), id);
    }

    /// `UNREGISTER t [c]` (nsqlookupd `UNREGISTER`): a channel unregistration removes the
    /// peer from it (and an ephemeral channel left empty); a topic unregistration removes the
    /// peer from every channel of the topic and from the topic (an ephemeral topic left empty
    /// goes).
    pub fn unregister(&mut self, id: &str, topic: &str, channel: Option<&str>) {
        if let Some(c) = channel {
            let r = Registration::channel(topic, c);
            let (_, left) = self.remove_producer(&r, id);
            if left == 0 && is_ephemeral(c) {
                self.remove_registration(&r);
            }
            return;
        }
        for r in self.find(Category::Channel, topic, "*") {
            self.remove_producer(&r, id);
        }
        let r = Registration::topic(topic);
        let (_, left) = self.remove_producer(&r, id);
        if left == 0 && is_ephemeral(topic) {
            self.remove_registration(&r);
        }
    }

    /// The peer's connection closed: it produces nothing any more. Registrations stay.
    pub fn disconnect(&mut self, id: &str) {
        for producers in self.regs.values_mut() {
            producers.remove(id);
        }
        self.peers.remove(id);
    }

    /// nsqlookupd `FindRegistrations`: the keys matching, `*` being a wildcard.
    pub fn find(&self, category: Category, key: &str, subkey: &str) -> Vec<Registration> {
        self.regs
            .keys()
            .filter(|r| r.matches(category, key, subkey))
            .cloned()
            .collect()
    }

    /// `/topics`: every topic key.
    pub fn topics(&self) -> Vec<String> {
        self.find(Category::Topic, "*", "")
            .into_iter()
            .map(|r| r.key)
            .collect()
    }

    /// `/channels?topic=`: the channel names registered for `topic`.
    pub fn channels(&self, topic: &str) -> Vec<String> {
        self.find(Category::Channel, topic, "*")
            .into_iter()
            .map(|r| r.subkey)
            .collect()
    }

    /// Whether the topic is registered at all (`/lookup` answers 404 if not).
    pub fn has_topic(&self, topic: &str) -> bool {
        self.regs.contains_key(&Registration::topic(topic))
    }

    /// The producers of `r` that are active: heard from within `inactive_ns` and not
    /// tombstoned within `tombstone_ns` (nsqlookupd `FilterByActive`).
    pub fn active_producers(
        &self,
        r: &Registration,
        now_ns: i64,
        inactive_ns: i64,
        tombstone_ns: i64,
    ) -> Vec<&PeerInfo> {
        let Some(producers) = self.regs.get(r) else {
            return Vec::new();
        };
        producers
            .iter()
            .filter(|(_, p)| !p.is_tombstoned(now_ns, tombstone_ns))
            .filter_map(|(id, _)| self.peers.get(id))
            .filter(|peer| now_ns.saturating_sub(peer.last_update) <= inactive_ns)
            .map(|peer| &peer.info)
            .collect()
    }

    /// `/topic/tombstone`: tombstones the producers of `topic` whose
    /// `broadcast_address:http_port` is `node`.
    pub fn tombstone(&mut self, topic: &str, node: &str, now_ns: i64) {
        let Some(producers) = self.regs.get_mut(&Registration::topic(topic)) else {
            return;
        };
        for (id, p) in producers.iter_mut() {
            let Some(peer) = self.peers.get(id) else {
                continue;
            };
            let this = format!("{}:{}", peer.info.broadcast_address, peer.info.http_port);
            if this == node {
                p.tombstoned_at = Some(now_ns);
            }
        }
    }

    /// The topics `id` produces, each with whether its producer entry is tombstoned (`/nodes`).
    pub fn node_topics(&self, id: &str, now_ns: i64, tombstone_ns: i64) -> Vec<(String, bool)> {
        self.regs
            .iter()
            .filter(|(r, _)| r.category == Category::Topic)
            .filter_map(|(r, producers)| {
                let p = producers.get(id)?;
                Some((r.key.clone(), p.is_tombstoned(now_ns, tombstone_ns)))
            })
            .collect()
    }

    /// Every registration with at least one producer, with its producers (`/debug`).
    pub fn dump(&self) -> impl Iterator<Item = (&Registration, Vec<(&Peer, &Producer)>)> {
        self.regs.iter().filter_map(|(r, producers)| {
            let list: Vec<_> = producers
                .iter()
                .filter_map(|(id, p)| Some((self.peers.get(id)?, p)))
                .collect();
            (!list.is_empty()).then_some((r, list))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: i64 = 1_000_000_000;
    const INACTIVE: i64 = 300 * SEC;
    const TOMB: i64 = 45 * SEC;

    fn peer(addr: &str, http: i64) -> PeerInfo {
        PeerInfo {
            remote_address: addr.into(),
            hostname: "h".into(),
            broadcast_address: "127.0.0.1".into(),
            tcp_port: http - 1,
            http_port: http,
            version: "1.3.0".into(),
        }
    }

    fn active(reg: &Registry, topic: &str, now: i64) -> Vec<String> {
        reg.active_producers(&Registration::topic(topic), now, INACTIVE, TOMB)
            .into_iter()
            .map(|p| p.remote_address.clone())
            .collect()
    }

    #[test]
    fn register_adds_topic_and_channel() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.register("a:1", "t", Some("c"));
        reg.register("a:1", "t2", None);
        assert_eq!(reg.topics(), vec!["t", "t2"]);
        assert_eq!(reg.channels("t"), vec!["c"]);
        assert!(reg.channels("t2").is_empty());
        assert_eq!(active(&reg, "t", 0), vec!["a:1"]);
    }

    #[test]
    fn disconnect_removes_producers_but_keeps_keys() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.identify(peer("b:1", 5151), 0);
        reg.register("a:1", "t", Some("c"));
        reg.register("b:1", "t", None);
        reg.disconnect("a:1");
        assert_eq!(active(&reg, "t", 0), vec!["b:1"]);
        assert_eq!(reg.channels("t"), vec!["c"]);
        assert!(reg.has_topic("t"));
        assert!(reg.peer("a:1").is_none());
    }

    #[test]
    fn inactive_producers_are_filtered() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.register("a:1", "t", None);
        assert_eq!(active(&reg, "t", INACTIVE).len(), 1);
        assert!(active(&reg, "t", INACTIVE + 1).is_empty());
        reg.touch("a:1", INACTIVE);
        assert_eq!(active(&reg, "t", INACTIVE + 1).len(), 1);
    }

    #[test]
    fn tombstone_hides_for_its_lifetime_only() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.identify(peer("b:1", 5151), 0);
        reg.register("a:1", "t", None);
        reg.register("b:1", "t", None);
        reg.tombstone("t", "127.0.0.1:4151", 10 * SEC);
        assert_eq!(active(&reg, "t", 10 * SEC), vec!["b:1"]);
        let nodes = reg.node_topics("a:1", 10 * SEC, TOMB);
        assert_eq!(nodes, vec![("t".to_owned(), true)]);
        // The lifetime is exclusive: at exactly 45 s the tombstone has expired.
        reg.touch("a:1", 55 * SEC);
        reg.touch("b:1", 55 * SEC);
        assert_eq!(active(&reg, "t", 55 * SEC), vec!["a:1", "b:1"]);
    }

    #[test]
    fn unregister_topic_removes_its_channels_and_ephemeral_keys() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.register("a:1", "t", Some("c"));
        reg.register("a:1", "e#ephemeral", Some("x#ephemeral"));
        reg.unregister("a:1", "t", None);
        assert!(active(&reg, "t", 0).is_empty());
        assert!(reg.has_topic("t"), "a normal topic's key stays");
        let c = Registration::channel("t", "c");
        assert!(reg.active_producers(&c, 0, INACTIVE, TOMB).is_empty());
        reg.unregister("a:1", "e#ephemeral", Some("x#ephemeral"));
        assert!(
            reg.channels("e#ephemeral").is_empty(),
            "ephemeral channel key goes"
        );
        reg.unregister("a:1", "e#ephemeral", None);
        assert!(!reg.has_topic("e#ephemeral"), "ephemeral topic key goes");
    }

    #[test]
    fn wildcard_find_and_dump() {
        let mut reg = Registry::new();
        reg.identify(peer("a:1", 4151), 0);
        reg.register("a:1", "t", Some("c1"));
        reg.add_registration(Registration::channel("t", "c2"));
        assert_eq!(reg.find(Category::Channel, "t", "*").len(), 2);
        assert_eq!(reg.find(Category::Channel, "*", "*").len(), 2);
        // c2 has no producer: /debug leaves it out.
        let keys: Vec<String> = reg
            .dump()
            .map(|(r, _)| format!("{}:{}:{}", r.category.name(), r.key, r.subkey))
            .collect();
        assert_eq!(keys, vec!["client::", "topic:t:", "channel:t:c1"]);
        assert!(reg.node_topics("a:1", 0, TOMB).iter().all(|(_, t)| !t));
    }
}
