//! The `/stats` data: serde structs that serialize byte for byte as nsqd v1.3.0's
//! `/stats?format=json` (reference §2.4; key order is Go's struct order), and nsqd's filters.
//!
//! The caller (the broker) fills a full [`Stats`] snapshot: every topic, channel, client and
//! producer, with all of a producer's publish counts. [`apply_query`] then does what nsqd's
//! `GetStats(topic, channel, includeClients)` and `doStats` do, including the quirks nsqadmin
//! and nsq_stat have learnt to live with: `topics` is `null` when the topic filter matches
//! nothing, `clients` is `null` without clients, `producers` is `null` when empty, and a
//! client lists at most **one** publish count (nsqd's `break` bug).

use serde::{Serialize, Serializer};

use super::query::{bool_param, Query};
use crate::broker::settings::{Scope, Settings};

/// The whole `/stats` reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// The version string (also the first line of the text format).
    pub version: String,
    /// `OK` or `NOK - <error>` (reference §5.14).
    pub health: String,
    /// Server start, Unix seconds.
    pub start_time: i64,
    /// Topics sorted by name; `None` (JSON `null`) when a topic filter matched nothing.
    pub topics: Option<Vec<TopicStats>>,
    /// Process memory figures; left out of the JSON when `include_mem=false`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemStats>,
    /// Connections that have published (Go `nil`, so `null`, when empty or without clients).
    #[serde(serialize_with = "null_if_empty")]
    pub producers: Vec<ClientStats>,
}

/// One topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopicStats {
    /// The name.
    pub topic_name: String,
    /// Channels sorted by name (always an array, possibly empty).
    pub channels: Vec<ChannelStats>,
    /// Messages waiting, memory plus disk.
    pub depth: i64,
    /// Messages waiting on disk.
    pub backend_depth: i64,
    /// Messages published to the topic.
    pub message_count: u64,
    /// Sum of the published bodies' lengths.
    pub message_bytes: u64,
    /// Whether the topic is paused.
    pub paused: bool,
    /// The merge of the channels' latency figures.
    pub e2e_processing_latency: E2eLatency,
    /// corq only, and only when set: why the topic was left closed at start (its log could not
    /// be opened); it answers errors until repaired and corqd restarted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined: Option<String>,
    /// corq only: the topic's resolved settings ([`super::config::stats_settings`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "topic_settings"
    )]
    pub settings: Option<Settings<u64>>,
    /// corq only: publishes answered `OK` and not appended, as duplicates within the dedup
    /// window (absent in a snapshot that does not fill it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_count: Option<u64>,
    /// corq only: keys the topic's dedup window holds now (bounded; see `broker/dedup.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_entries: Option<u64>,
    /// corq only: the backlog against the topic's limits, the larger of depth / max_topic_depth
    /// and bytes / max_topic_bytes (0 when both are off; see `broker/limits.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fill_ratio: Option<f64>,
    /// corq only: syncs of the topic's log completed since start (strict mode's group commit:
    /// see `storage/log/syncs.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_syncs: Option<u64>,
    /// corq only: records those syncs made durable; divided by `log_syncs`, the group size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_synced_records: Option<u64>,
}

/// One channel.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChannelStats {
    /// The name.
    pub channel_name: String,
    /// Messages waiting (in-flight and deferred excluded).
    pub depth: i64,
    /// Messages waiting on disk.
    pub backend_depth: i64,
    /// Messages delivered and not yet finished.
    pub in_flight_count: i64,
    /// Messages waiting for their defer/requeue delay.
    pub deferred_count: i64,
    /// Messages put into the channel (requeues not counted).
    pub message_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// Subscribed clients (counted even when `clients` is `null`).
    pub client_count: i64,
    /// The subscribed clients, in no particular order; `None` (`null`) without
    /// `include_clients`.
    pub clients: Option<Vec<ClientStats>>,
    /// Whether the channel is paused.
    pub paused: bool,
    /// FIN latency from publish time.
    pub e2e_processing_latency: E2eLatency,
    /// corq only: messages sent to the dead-letter topic (or dropped, for an ephemeral topic)
    /// after `max_attempts` failures or on expiry (absent in a snapshot that does not fill it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter_count: Option<u64>,
    /// corq only: messages not delivered because they were older than `message_ttl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired_count: Option<u64>,
    /// corq only: age in ms of the oldest message waiting for delivery (unread or requeued;
    /// 0 when none waits), filled from `oldest_waiting_ns` by [`stamp_ages`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest_message_age_ms: Option<u64>,
    /// Publish time (ns) of the oldest message waiting, `None` when none waits: the broker's
    /// figure (it does not read the clock); not rendered.
    #[serde(skip)]
    pub oldest_waiting_ns: Option<i64>,
    /// corq only: the channel's resolved settings.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "channel_settings"
    )]
    pub settings: Option<Settings<u64>>,
}

/// `{"count":N,"percentiles":[{"quantile":q,"value":ns}...]}`; `percentiles` is `null` when no
/// `--e2e-processing-latency-percentile` is configured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct E2eLatency {
    /// Samples in the window.
    pub count: i64,
    /// One entry per configured percentile, in configuration order.
    pub percentiles: Option<Vec<Percentile>>,
}

/// One latency percentile. Go prints both as float64: whole numbers without a decimal point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentile {
    /// The quantile, in (0, 1].
    #[serde(serialize_with = "go_float")]
    pub quantile: f64,
    /// The latency, nanoseconds.
    #[serde(serialize_with = "go_float")]
    pub value: f64,
}

/// One TCP client (nsqd `ClientV2Stats`), for a channel's `clients` and for `producers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// From IDENTIFY; the remote IP before it.
    pub client_id: String,
    /// From IDENTIFY; the remote IP before it.
    pub hostname: String,
    /// Always `V2`.
    pub version: String,
    /// `ip:port`.
    pub remote_address: String,
    /// The connection state (reference §1.6).
    pub state: i32,
    /// The last RDY.
    pub ready_count: i64,
    /// Messages in flight to this client.
    pub in_flight_count: i64,
    /// Messages sent to this client.
    pub message_count: u64,
    /// FINs.
    pub finish_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// Connect time, Unix seconds.
    pub connect_ts: i64,
    /// IDENTIFY's sample rate.
    pub sample_rate: i32,
    /// Deflate negotiated.
    pub deflate: bool,
    /// Snappy negotiated.
    pub snappy: bool,
    /// IDENTIFY's user agent.
    pub user_agent: String,
    /// Present only when true (Go `omitempty`).
    #[serde(skip_serializing_if = "is_false")]
    pub authed: bool,
    /// Present only when non-empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity: String,
    /// Present only when non-empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub auth_identity_url: String,
    /// Publish counts per topic; left out when empty. [`apply_query`] keeps at most one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pub_counts: Vec<PubCount>,
    /// TLS negotiated.
    pub tls: bool,
    /// Empty when not TLS.
    pub tls_cipher_suite: String,
    /// Empty when not TLS.
    pub tls_version: String,
    /// Empty when not TLS.
    pub tls_negotiated_protocol: String,
    /// False when not TLS.
    pub tls_negotiated_protocol_is_mutual: bool,
}

/// Messages a client published to one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PubCount {
    /// The topic.
    pub topic: String,
    /// Messages published.
    pub count: u64,
}

/// The `memory` object. nsqd fills it from Go's runtime; corq reports its own process figures
/// under the same keys (nsqadmin does not read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemStats {
    /// Live heap objects.
    pub heap_objects: u64,
    /// Idle heap bytes.
    pub heap_idle_bytes: u64,
    /// In-use heap bytes.
    pub heap_in_use_bytes: u64,
    /// Heap bytes returned to the OS.
    pub heap_released_bytes: u64,
    /// Longest GC pause, µs.
    pub gc_pause_usec_100: u64,
    /// 99th percentile GC pause, µs.
    pub gc_pause_usec_99: u64,
    /// 95th percentile GC pause, µs.
    pub gc_pause_usec_95: u64,
    /// Heap size target of the next GC.
    pub next_gc_bytes: u64,
    /// GC runs.
    pub gc_total_runs: u32,
}

/// The `/stats` parameters, read as nsqd's `doStats` reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsQuery {
    /// `format=json`; anything else means text.
    pub json: bool,
    /// Only this topic (`""` = all).
    pub topic: String,
    /// Only this channel, in every listed topic (`""` = all).
    pub channel: String,
    /// `include_clients` (`true/1/false/0`, default true).
    pub include_clients: bool,
    /// `include_mem` (`true/1/false/0`, default true).
    pub include_mem: bool,
}

impl StatsQuery {
    /// Reads the parameters from a parsed query.
    pub fn from_query(q: &Query) -> Self {
        StatsQuery {
            json: q.get("format") == Some("json"),
            topic: q.get("topic").unwrap_or_default().to_owned(),
            channel: q.get("channel").unwrap_or_default().to_owned(),
            include_clients: bool_param(q, "include_clients", true),
            include_mem: bool_param(q, "include_mem", true),
        }
    }
}

/// Applies nsqd's filters and orderings to a full snapshot, in place.
pub fn apply_query(stats: &mut Stats, q: &StatsQuery) {
    if !q.include_mem {
        stats.memory = None;
    }
    let mut topics = stats.topics.take().unwrap_or_default();
    if !q.topic.is_empty() {
        topics.retain(|t| t.topic_name == q.topic);
        if topics.is_empty() {
            // nsqd returns its zero `Stats`: no topics and no producers at all.
            stats.topics = None;
            stats.producers.clear();
            return;
        }
    }
    topics.sort_by(|a, b| a.topic_name.cmp(&b.topic_name));
    if !q.channel.is_empty() {
        // A topic without the channel is dropped, even with no topic filter.
        for t in &mut topics {
            t.channels.retain(|c| c.channel_name == q.channel);
        }
        topics.retain(|t| !t.channels.is_empty());
    }
    for t in &mut topics {
        t.channels
            .sort_by(|a, b| a.channel_name.cmp(&b.channel_name));
        for c in &mut t.channels {
            if !q.include_clients {
                c.clients = None;
                continue;
            }
            let clients = c.clients.get_or_insert_with(Vec::new);
            clients
                .iter_mut()
                .for_each(|cl| trim_pub_counts(cl, &q.topic));
        }
    }
    stats.topics = Some(topics);
    if q.include_clients {
        let topic = &q.topic;
        stats
            .producers
            .iter_mut()
            .for_each(|p| trim_pub_counts(p, topic));
    } else {
        stats.producers.clear();
    }
}

/// nsqd's `client.Stats(topic)`: only the filtered topic's count, and at most one entry.
fn trim_pub_counts(client: &mut ClientStats, topic: &str) {
    if !topic.is_empty() {
        client.pub_counts.retain(|p| p.topic == topic);
    }
    client.pub_counts.truncate(1);
}

/// The JSON body for `/stats?format=json`.
pub fn render_json(stats: &Stats) -> Vec<u8> {
    serde_json::to_vec(stats).unwrap_or_default()
}

fn topic_settings<S: Serializer>(v: &Option<Settings<u64>>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|v| super::config::stats_settings(&v, Scope::Topic))
        .serialize(s)
}

fn channel_settings<S: Serializer>(v: &Option<Settings<u64>>, s: S) -> Result<S::Ok, S::Error> {
    v.map(|v| super::config::stats_settings(&v, Scope::Channel))
        .serialize(s)
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn null_if_empty<S: Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        s.collect_seq(v)
    }
}

/// The largest magnitude printed through the integer path: every whole f64 below it is exact.
const MAX_EXACT_INT: f64 = 9_007_199_254_740_992.0;

/// Go's `encoding/json` float64: whole numbers print without a decimal point (`1`, not `1.0`).
/// Fractions print in shortest form, as Go does below 1e21. (Go writes exponents as `1e-07`,
/// `serde_json` as `1e-7`; only non-zero values below 1e-6 differ, which no quantile or
/// nanosecond latency reaches.)
pub fn go_float<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < MAX_EXACT_INT {
        // The range check makes the conversion exact.
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

#[cfg(test)]
pub(crate) mod tests;

/// Fills every channel's `oldest_message_age_ms` from its `oldest_waiting_ns` at `now_ns`.
pub fn stamp_ages(stats: &mut Stats, now_ns: i64) {
    for t in stats.topics.iter_mut().flatten() {
        for c in &mut t.channels {
            let age_ns = c
                .oldest_waiting_ns
                .map_or(0, |ts| now_ns.saturating_sub(ts).max(0));
            c.oldest_message_age_ms = Some((age_ns / 1_000_000) as u64);
        }
    }
}
