//! `GET /metrics`: the Prometheus text exposition format, version 0.0.4 (nsq#732 asks for it;
//! nsqd never added it), built from the same [`Stats`] snapshot as `/stats` plus a few figures
//! only corq has.
//!
//! Naming follows Prometheus conventions: a `corq_` prefix, base units (seconds, bytes),
//! `_total` on counters, one `# HELP` and one `# TYPE` line per family (printed even when the
//! family has no samples, so scrapes are stable), labels `topic` and `channel`, and label
//! values escaped (`\\`, `\"`, `\n`). Latency quantiles are gauges with a `quantile` label:
//! nsqd's windowed quantiles have no `_sum`, so they are not a Prometheus summary.

use crate::broker::settings::{Kind, Scope, Settings, KEYS};
use std::fmt::Write as _;

use super::stats::{ChannelStats, E2eLatency, Stats, TopicStats};

/// corq-only figures for one topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicExtras {
    /// The topic's name.
    pub topic: String,
    /// Bytes of log segments on disk.
    pub log_bytes: u64,
    /// Corrupt records skipped by recovery since start.
    pub corrupt_records_skipped: u64,
}

/// corq-only figures for the process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsExtras {
    /// Per-topic figures (topics missing here get no sample for these families).
    pub topics: Vec<TopicExtras>,
    /// Resident set size in bytes, if the platform tells.
    pub process_rss_bytes: Option<u64>,
    /// Open HTTP connections (the one asking included): a client that leaves mid-request
    /// must leave this count.
    pub http_connections: usize,
    /// corq's own alerts firing now (`broker/alerts.rs`).
    pub alerts_firing: usize,
    /// Alert webhook documents dropped (queue full) or never accepted.
    pub alert_webhook_lost: u64,
}

/// A sample value: counts are integers, latencies are seconds.
type TopicValue = fn(&TopicStats) -> i128;
type ChannelValue = fn(&ChannelStats) -> i128;

/// Topic families: name, type, help, value.
const TOPIC_FAMILIES: &[(&str, &str, &str, TopicValue)] = &[
    (
        "corq_topic_depth",
        "gauge",
        "Messages waiting in the topic (memory and disk).",
        |t| t.depth.into(),
    ),
    (
        "corq_topic_backend_depth",
        "gauge",
        "Messages of the topic waiting on disk.",
        |t| t.backend_depth.into(),
    ),
    (
        "corq_topic_messages_total",
        "counter",
        "Messages published to the topic.",
        |t| t.message_count.into(),
    ),
    (
        "corq_topic_message_bytes_total",
        "counter",
        "Bytes of message bodies published to the topic.",
        |t| t.message_bytes.into(),
    ),
    (
        "corq_topic_paused",
        "gauge",
        "1 if the topic is paused.",
        |t| i128::from(t.paused),
    ),
    (
        "corq_topic_channels",
        "gauge",
        "Channels of the topic.",
        |t| t.channels.len() as i128,
    ),
    (
        "corq_topic_log_syncs_total",
        "counter",
        "Syncs (fdatasync rounds) of the topic's log completed.",
        |t| t.log_syncs.unwrap_or(0).into(),
    ),
    (
        "corq_topic_log_synced_records_total",
        "counter",
        "Records made durable by the topic's log syncs (divided by the syncs: the group size).",
        |t| t.log_synced_records.unwrap_or(0).into(),
    ),
];

/// Channel families: name, type, help, value.
const CHANNEL_FAMILIES: &[(&str, &str, &str, ChannelValue)] = &[
    (
        "corq_channel_depth",
        "gauge",
        "Messages waiting in the channel (in-flight and deferred excluded).",
        |c| c.depth.into(),
    ),
    (
        "corq_channel_backend_depth",
        "gauge",
        "Messages of the channel waiting on disk.",
        |c| c.backend_depth.into(),
    ),
    (
        "corq_channel_in_flight",
        "gauge",
        "Messages delivered and not yet finished.",
        |c| c.in_flight_count.into(),
    ),
    (
        "corq_channel_deferred",
        "gauge",
        "Messages waiting for a defer or requeue delay.",
        |c| c.deferred_count.into(),
    ),
    (
        "corq_channel_messages_total",
        "counter",
        "Messages put into the channel.",
        |c| c.message_count.into(),
    ),
    (
        "corq_channel_requeued_total",
        "counter",
        "Messages requeued (REQ).",
        |c| c.requeue_count.into(),
    ),
    (
        "corq_channel_timed_out_total",
        "counter",
        "In-flight messages that timed out.",
        |c| c.timeout_count.into(),
    ),
    (
        "corq_channel_dead_lettered_total",
        "counter",
        "Messages sent to the dead-letter topic (or dropped, ephemeral topics) after max_attempts or on expiry.",
        |c| c.dead_letter_count.unwrap_or(0).into(),
    ),
    (
        "corq_channel_expired_total",
        "counter",
        "Messages not delivered because they were older than message_ttl.",
        |c| c.expired_count.unwrap_or(0).into(),
    ),
    (
        "corq_channel_clients",
        "gauge",
        "Clients subscribed to the channel.",
        |c| c.client_count.into(),
    ),
    (
        "corq_channel_paused",
        "gauge",
        "1 if the channel is paused.",
        |c| i128::from(c.paused),
    ),
];

/// Appends the whole exposition for `stats` (unfiltered, clients not needed) and `extras`.
pub fn render_metrics(stats: &Stats, extras: &MetricsExtras, out: &mut String) {
    let topics = stats.topics.as_deref().unwrap_or_default();
    family(
        out,
        "corq_healthy",
        "gauge",
        "1 if every log write succeeds (nsqd health OK).",
    );
    sample(out, "corq_healthy", &[], i128::from(stats.health == "OK"));
    family(
        out,
        "corq_start_time_seconds",
        "gauge",
        "Server start time, Unix seconds.",
    );
    sample(out, "corq_start_time_seconds", &[], stats.start_time);
    family(
        out,
        "corq_process_resident_memory_bytes",
        "gauge",
        "Resident set size of the process.",
    );
    if let Some(rss) = extras.process_rss_bytes {
        sample(out, "corq_process_resident_memory_bytes", &[], rss);
    }
    family(
        out,
        "corq_producers",
        "gauge",
        "TCP connections that have published.",
    );
    sample(out, "corq_producers", &[], stats.producers.len());
    family(
        out,
        "corq_http_connections",
        "gauge",
        "Open HTTP connections.",
    );
    sample(out, "corq_http_connections", &[], extras.http_connections);
    for (name, kind, help, value) in TOPIC_FAMILIES {
        family(out, name, kind, help);
        for t in topics {
            sample(out, name, &[("topic", &t.topic_name)], value(t));
        }
    }
    write_topic_extras(extras, out);
    for (name, kind, help, value) in CHANNEL_FAMILIES {
        family(out, name, kind, help);
        for t in topics {
            for c in &t.channels {
                let labels = [
                    ("topic", t.topic_name.as_str()),
                    ("channel", &c.channel_name),
                ];
                sample(out, name, &labels, value(c));
            }
        }
    }
    write_latency(topics, out);
    write_settings(topics, out);
    write_alerts(topics, extras, out);
}

/// Fill ratios, oldest-message ages and corq's own alert counters.
fn write_alerts(topics: &[TopicStats], extras: &MetricsExtras, out: &mut String) {
    let name = "corq_topic_fill_ratio";
    family(
        out,
        name,
        "gauge",
        "Backlog over the topic's limit (max of depth and bytes ratios; 0 without limits).",
    );
    for t in topics {
        if let Some(v) = t.fill_ratio {
            sample(out, name, &[("topic", &t.topic_name)], v);
        }
    }
    let name = "corq_channel_oldest_message_age_seconds";
    family(
        out,
        name,
        "gauge",
        "Age of the channel's oldest message waiting for delivery (0 when none waits).",
    );
    for t in topics {
        for c in &t.channels {
            if let Some(ms) = c.oldest_message_age_ms {
                let labels = [
                    ("topic", t.topic_name.as_str()),
                    ("channel", &c.channel_name),
                ];
                sample(out, name, &labels, ms as f64 / 1000.0);
            }
        }
    }
    family(
        out,
        "corq_alerts_firing",
        "gauge",
        "corq's own alerts firing now.",
    );
    sample(out, "corq_alerts_firing", &[], extras.alerts_firing);
    let name = "corq_alert_webhook_lost_total";
    family(
        out,
        name,
        "counter",
        "Alert webhook documents dropped (queue full) or not accepted after every try.",
    );
    sample(out, name, &[], extras.alert_webhook_lost);
}

/// The resolved settings: one gauge per key, `corq_topic_setting_<key>` for topic-only keys and
/// `corq_channel_setting_<key>` for the others; durations in seconds.
fn write_settings(topics: &[TopicStats], out: &mut String) {
    for (i, key) in KEYS.iter().enumerate() {
        let value = |s: &Option<Settings<u64>>| {
            s.map(|s| match key.kind {
                Kind::Count => s.values[i] as f64,
                Kind::Millis => s.values[i] as f64 / 1000.0,
            })
        };
        let unit = if key.kind == Kind::Millis {
            "_seconds"
        } else {
            ""
        };
        let help = format!("Resolved {} setting.", key.name);
        if key.scope == Scope::Topic {
            let name = format!("corq_topic_setting_{}{unit}", key.name);
            family(out, &name, "gauge", &help);
            for t in topics {
                if let Some(v) = value(&t.settings) {
                    sample(out, &name, &[("topic", &t.topic_name)], v);
                }
            }
            continue;
        }
        let name = format!("corq_channel_setting_{}{unit}", key.name);
        family(out, &name, "gauge", &help);
        for t in topics {
            for c in &t.channels {
                if let Some(v) = value(&c.settings) {
                    let labels = [
                        ("topic", t.topic_name.as_str()),
                        ("channel", &c.channel_name),
                    ];
                    sample(out, &name, &labels, v);
                }
            }
        }
    }
    family(
        out,
        "corq_topic_deduplicated_total",
        "counter",
        "Publishes answered OK and not appended, as duplicates within the dedup window.",
    );
    family(
        out,
        "corq_topic_dedup_entries",
        "gauge",
        "Keys the topic's dedup window holds (at most 100000).",
    );
    for t in topics {
        if let Some(n) = t.dedup_entries {
            sample(
                out,
                "corq_topic_dedup_entries",
                &[("topic", &t.topic_name)],
                n,
            );
        }
    }
    for t in topics {
        if let Some(n) = t.dedup_count {
            let labels = [("topic", t.topic_name.as_str())];
            sample(out, "corq_topic_deduplicated_total", &labels, n);
        }
    }
}

fn write_topic_extras(extras: &MetricsExtras, out: &mut String) {
    let name = "corq_topic_log_bytes";
    family(
        out,
        name,
        "gauge",
        "Bytes of the topic's log segments on disk.",
    );
    for t in &extras.topics {
        sample(out, name, &[("topic", &t.topic)], t.log_bytes);
    }
    let name = "corq_topic_corrupt_records_skipped_total";
    family(
        out,
        name,
        "counter",
        "Corrupt log records skipped by recovery.",
    );
    for t in &extras.topics {
        sample(out, name, &[("topic", &t.topic)], t.corrupt_records_skipped);
    }
}

fn write_latency(topics: &[TopicStats], out: &mut String) {
    let q = "corq_channel_e2e_processing_latency_seconds";
    family(
        out,
        q,
        "gauge",
        "End-to-end processing latency (publish to FIN) quantiles over the window.",
    );
    for t in topics {
        for c in &t.channels {
            let labels = [
                ("topic", t.topic_name.as_str()),
                ("channel", &c.channel_name),
            ];
            quantiles(out, q, &labels, &c.e2e_processing_latency);
        }
    }
    let n = "corq_channel_e2e_processing_latency_samples";
    family(out, n, "gauge", "FINs in the end-to-end latency window.");
    for t in topics {
        for c in &t.channels {
            let labels = [
                ("topic", t.topic_name.as_str()),
                ("channel", &c.channel_name),
            ];
            sample(out, n, &labels, c.e2e_processing_latency.count);
        }
    }
}

fn quantiles(out: &mut String, name: &str, labels: &[(&str, &str)], e: &E2eLatency) {
    for p in e.percentiles.as_deref().unwrap_or_default() {
        let quantile = float(p.quantile);
        let mut all: Vec<(&str, &str)> = labels.to_vec();
        all.push(("quantile", &quantile));
        sample(out, name, &all, float(p.value / 1e9));
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    // Writes into a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Prometheus label-value escaping: backslash, double quote and line feed.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A float in the exposition format: shortest round-trip form, `NaN`, `+Inf`, `-Inf`.
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests;
