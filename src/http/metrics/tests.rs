use super::*;
use crate::http::stats::{Percentile, TopicStats};

fn small() -> Stats {
    Stats {
        version: "0.1.0".into(),
        health: "OK".into(),
        start_time: 1795567278,
        topics: Some(vec![TopicStats {
            topic_name: "t".into(),
            depth: 2,
            message_count: 5,
            message_bytes: 50,
            log_syncs: Some(2),
            log_synced_records: Some(7),
            channels: vec![ChannelStats {
                channel_name: "c".into(),
                depth: 1,
                in_flight_count: 1,
                message_count: 5,
                requeue_count: 1,
                client_count: 1,
                e2e_processing_latency: E2eLatency {
                    count: 3,
                    percentiles: Some(vec![Percentile {
                        quantile: 0.99,
                        value: 3_805_021.0,
                    }]),
                },
                ..ChannelStats::default()
            }],
            ..TopicStats::default()
        }]),
        ..Stats::default()
    }
}

const GOLDEN: &str = r#"# HELP corq_healthy 1 if every log write succeeds (nsqd health OK).
# TYPE corq_healthy gauge
corq_healthy 1
# HELP corq_start_time_seconds Server start time, Unix seconds.
# TYPE corq_start_time_seconds gauge
corq_start_time_seconds 1795567278
# HELP corq_process_resident_memory_bytes Resident set size of the process.
# TYPE corq_process_resident_memory_bytes gauge
corq_process_resident_memory_bytes 1048576
# HELP corq_producers TCP connections that have published.
# TYPE corq_producers gauge
corq_producers 0
# HELP corq_http_connections Open HTTP connections.
# TYPE corq_http_connections gauge
corq_http_connections 2
# HELP corq_topic_depth Messages waiting in the topic (memory and disk).
# TYPE corq_topic_depth gauge
corq_topic_depth{topic="t"} 2
# HELP corq_topic_backend_depth Messages of the topic waiting on disk.
# TYPE corq_topic_backend_depth gauge
corq_topic_backend_depth{topic="t"} 0
# HELP corq_topic_messages_total Messages published to the topic.
# TYPE corq_topic_messages_total counter
corq_topic_messages_total{topic="t"} 5
# HELP corq_topic_message_bytes_total Bytes of message bodies published to the topic.
# TYPE corq_topic_message_bytes_total counter
corq_topic_message_bytes_total{topic="t"} 50
# HELP corq_topic_paused 1 if the topic is paused.
# TYPE corq_topic_paused gauge
corq_topic_paused{topic="t"} 0
# HELP corq_topic_channels Channels of the topic.
# TYPE corq_topic_channels gauge
corq_topic_channels{topic="t"} 1
# HELP corq_topic_log_syncs_total Syncs (fdatasync rounds) of the topic's log completed.
# TYPE corq_topic_log_syncs_total counter
corq_topic_log_syncs_total{topic="t"} 2
# HELP corq_topic_log_synced_records_total Records made durable by the topic's log syncs (divided by the syncs: the group size).
# TYPE corq_topic_log_synced_records_total counter
corq_topic_log_synced_records_total{topic="t"} 7
# HELP corq_topic_log_bytes Bytes of the topic's log segments on disk.
# TYPE corq_topic_log_bytes gauge
corq_topic_log_bytes{topic="t"} 4096
# HELP corq_topic_corrupt_records_skipped_total Corrupt log records skipped by recovery.
# TYPE corq_topic_corrupt_records_skipped_total counter
corq_topic_corrupt_records_skipped_total{topic="t"} 0
# HELP corq_channel_depth Messages waiting in the channel (in-flight and deferred excluded).
# TYPE corq_channel_depth gauge
corq_channel_depth{topic="t",channel="c"} 1
# HELP corq_channel_backend_depth Messages of the channel waiting on disk.
# TYPE corq_channel_backend_depth gauge
corq_channel_backend_depth{topic="t",channel="c"} 0
# HELP corq_channel_in_flight Messages delivered and not yet finished.
# TYPE corq_channel_in_flight gauge
corq_channel_in_flight{topic="t",channel="c"} 1
# HELP corq_channel_deferred Messages waiting for a defer or requeue delay.
# TYPE corq_channel_deferred gauge
corq_channel_deferred{topic="t",channel="c"} 0
# HELP corq_channel_messages_total Messages put into the channel.
# TYPE corq_channel_messages_total counter
corq_channel_messages_total{topic="t",channel="c"} 5
# HELP corq_channel_requeued_total Messages requeued (REQ).
# TYPE corq_channel_requeued_total counter
corq_channel_requeued_total{topic="t",channel="c"} 1
# HELP corq_channel_timed_out_total In-flight messages that timed out.
# TYPE corq_channel_timed_out_total counter
corq_channel_timed_out_total{topic="t",channel="c"} 0
# HELP corq_channel_dead_lettered_total Messages sent to the dead-letter topic (or dropped, ephemeral topics) after max_attempts or on expiry.
# TYPE corq_channel_dead_lettered_total counter
corq_channel_dead_lettered_total{topic="t",channel="c"} 0
# HELP corq_channel_expired_total Messages not delivered because they were older than message_ttl.
# TYPE corq_channel_expired_total counter
corq_channel_expired_total{topic="t",channel="c"} 0
# HELP corq_channel_clients Clients subscribed to the channel.
# TYPE corq_channel_clients gauge
corq_channel_clients{topic="t",channel="c"} 1
# HELP corq_channel_paused 1 if the channel is paused.
# TYPE corq_channel_paused gauge
corq_channel_paused{topic="t",channel="c"} 0
# HELP corq_channel_e2e_processing_latency_seconds End-to-end processing latency (publish to FIN) quantiles over the window.
# TYPE corq_channel_e2e_processing_latency_seconds gauge
corq_channel_e2e_processing_latency_seconds{topic="t",channel="c",quantile="0.99"} 0.003805021
# HELP corq_channel_e2e_processing_latency_samples FINs in the end-to-end latency window.
# TYPE corq_channel_e2e_processing_latency_samples gauge
corq_channel_e2e_processing_latency_samples{topic="t",channel="c"} 3
# HELP corq_channel_setting_max_attempts Resolved max_attempts setting.
# TYPE corq_channel_setting_max_attempts gauge
# HELP corq_channel_setting_requeue_backoff_seconds Resolved requeue_backoff setting.
# TYPE corq_channel_setting_requeue_backoff_seconds gauge
# HELP corq_channel_setting_message_ttl_seconds Resolved message_ttl setting.
# TYPE corq_channel_setting_message_ttl_seconds gauge
# HELP corq_topic_setting_dedup_window_seconds Resolved dedup_window setting.
# TYPE corq_topic_setting_dedup_window_seconds gauge
# HELP corq_topic_setting_max_topic_bytes Resolved max_topic_bytes setting.
# TYPE corq_topic_setting_max_topic_bytes gauge
# HELP corq_topic_setting_max_topic_depth Resolved max_topic_depth setting.
# TYPE corq_topic_setting_max_topic_depth gauge
# HELP corq_topic_setting_retention_time_seconds Resolved retention_time setting.
# TYPE corq_topic_setting_retention_time_seconds gauge
# HELP corq_topic_setting_retention_bytes Resolved retention_bytes setting.
# TYPE corq_topic_setting_retention_bytes gauge
# HELP corq_topic_deduplicated_total Publishes answered OK and not appended, as duplicates within the dedup window.
# TYPE corq_topic_deduplicated_total counter
# HELP corq_topic_dedup_entries Keys the topic's dedup window holds (at most 100000).
# TYPE corq_topic_dedup_entries gauge
# HELP corq_topic_fill_ratio Backlog over the topic's limit (max of depth and bytes ratios; 0 without limits).
# TYPE corq_topic_fill_ratio gauge
# HELP corq_channel_oldest_message_age_seconds Age of the channel's oldest message waiting for delivery (0 when none waits).
# TYPE corq_channel_oldest_message_age_seconds gauge
# HELP corq_alerts_firing corq's own alerts firing now.
# TYPE corq_alerts_firing gauge
corq_alerts_firing 1
# HELP corq_alert_webhook_lost_total Alert webhook documents dropped (queue full) or not accepted after every try.
# TYPE corq_alert_webhook_lost_total counter
corq_alert_webhook_lost_total 3
"#;

#[test]
fn golden_exposition() {
    let extras = MetricsExtras {
        topics: vec![TopicExtras {
            topic: "t".into(),
            log_bytes: 4096,
            corrupt_records_skipped: 0,
        }],
        process_rss_bytes: Some(1 << 20),
        http_connections: 2,
        alerts_firing: 1,
        alert_webhook_lost: 3,
    };
    let mut out = String::new();
    render_metrics(&small(), &extras, &mut out);
    assert_eq!(out, GOLDEN);
}

#[test]
fn label_escaping() {
    assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
    assert_eq!(escape_label("x\ny"), "x\\ny");
    assert_eq!(
        escape_label("plain.name-1_#ephemeral"),
        "plain.name-1_#ephemeral"
    );
    let mut s = small();
    s.topics.as_mut().unwrap()[0].topic_name = "we\"ird\\\n".into();
    let mut out = String::new();
    render_metrics(&s, &MetricsExtras::default(), &mut out);
    assert!(
        out.contains("corq_topic_depth{topic=\"we\\\"ird\\\\\\n\"} 2\n"),
        "{out}"
    );
    assert!(
        !out.contains("corq_process_resident_memory_bytes 0"),
        "no RSS, no sample"
    );
}

#[test]
fn floats_and_empty_families() {
    assert_eq!(float(1.0), "1");
    assert_eq!(float(0.5), "0.5");
    assert_eq!(float(f64::NAN), "NaN");
    assert_eq!(float(f64::INFINITY), "+Inf");
    assert_eq!(float(f64::NEG_INFINITY), "-Inf");
    let mut out = String::new();
    render_metrics(&Stats::default(), &MetricsExtras::default(), &mut out);
    assert!(
        out.contains("# TYPE corq_channel_depth gauge\n# HELP"),
        "{out}"
    );
    assert!(out.contains("corq_healthy 0\n"));
}
