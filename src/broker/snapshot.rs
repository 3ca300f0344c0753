//! Point-in-time figures for `/stats` and `/metrics`: the broker's state in nsqd's schema.
//!
//! Built on demand from the live structures (nothing is kept twice); the HTTP layer filters,
//! sorts and renders it.

use crate::http::metrics::{MetricsExtras, TopicExtras};
use crate::http::stats::{
    ChannelStats, ClientStats, E2eLatency, Percentile, PubCount, Stats, TopicStats,
};
use crate::protocol::ConnState;
use crate::stats::{empty_histogram, quantiles_ns};

use super::channel::Channel;
use super::client::Client;
use super::topic::Topic;
use super::Broker;

impl Broker {
    /// `OK`, or nsqd's `NOK - <error>` when a topic's log has failed.
    pub fn health(&self) -> Result<(), String> {
        let failed = self
            .topics
            .iter()
            .find_map(|(_, t)| t.log.failure().map(|e| format!("{}: {e}", t.name)));
        failed.map_or(Ok(()), Err)
    }

    /// Every topic, channel and client, in nsqd's `/stats` shape (unfiltered, unsorted).
    pub fn stats_snapshot(&self, start_time: i64) -> Stats {
        let topics = self
            .topics
            .iter()
            .map(|(_, t)| self.topic_stats(t))
            .chain(self.quarantined_stats())
            .collect();
        let producers = self
            .clients
            .iter()
            .map(|(_, c)| c)
            .filter(|c| !c.pub_counts.is_empty());
        Stats {
            version: crate::NSQD_VERSION.to_owned(),
            health: match self.health() {
                Ok(()) => "OK".to_owned(),
                Err(e) => format!("NOK - {e}"),
            },
            start_time,
            topics: Some(topics),
            memory: None,
            producers: producers.map(client_stats).collect(),
        }
    }

    /// The corq-only figures `/metrics` adds.
    pub fn metrics_extras(&self) -> MetricsExtras {
        let topics = self.topics.iter().map(|(_, t)| TopicExtras {
            topic: t.name.clone(),
            log_bytes: t.log.disk_bytes(),
            corrupt_records_skipped: t.log.corrupt_records(),
        });
        MetricsExtras {
            topics: topics.collect(),
            process_rss_bytes: process_rss_bytes(),
            http_connections: self.clients.iter().filter(|(_, c)| c.http).count(),
            alerts_firing: self.alerts.firing(),
            alert_webhook_lost: self.alerts.webhook.as_ref().map_or(0, |w| w.lost()),
        }
    }

    fn topic_stats(&self, t: &Topic) -> TopicStats {
        let channels: Vec<ChannelStats> = t
            .channels
            .iter()
            .map(|(_, c)| self.channel_stats(t, c))
            .collect();
        let depth = t.depth() as i64;
        let mut merged = empty_histogram();
        let mut tracked = false;
        for (_, c) in t.channels.iter() {
            if let Some(e2e) = &c.e2e {
                e2e.merge_into(&mut merged);
                tracked = true;
            }
        }
        let e2e = tracked.then_some(&merged);
        TopicStats {
            topic_name: t.name.clone(),
            channels,
            depth,
            backend_depth: depth,
            message_count: t.message_count,
            message_bytes: t.message_bytes,
            paused: t.paused,
            e2e_processing_latency: self.e2e(e2e),
            quarantined: None,
            settings: self
                .topic_index
                .get(&t.name)
                .map(|&tk| self.resolved(tk, None)),
            dedup_count: Some(t.dedup_count()),
            dedup_entries: Some(t.dedup.len() as u64),
            fill_ratio: self.topic_index.get(&t.name).map(|&tk| self.fill_ratio(tk)),
            log_syncs: Some(t.log.syncs_total()),
            log_synced_records: Some(t.log.synced_records_total()),
        }
    }

    /// Quarantined topics: no figures (their logs are closed), the reason, and the paused flag
    /// their checkpoint entry holds.
    fn quarantined_stats(&self) -> impl Iterator<Item = TopicStats> + '_ {
        self.quarantined.iter().map(|(name, q)| TopicStats {
            topic_name: name.clone(),
            paused: q.state.as_ref().is_some_and(|s| s.paused),
            e2e_processing_latency: self.e2e(None),
            quarantined: Some(q.reason.clone()),
            ..TopicStats::default()
        })
    }

    fn channel_stats(&self, t: &Topic, c: &Channel) -> ChannelStats {
        // Everything corq holds is in the log on disk, so backend_depth equals depth.
        let depth = c.depth(t.log.tail()) as i64;
        let clients = c
            .consumers
            .iter()
            .filter_map(|&ck| self.clients.get(ck))
            .map(client_stats);
        let merged = c.e2e.as_ref().map(|e| e.merged());
        ChannelStats {
            channel_name: c.name.clone(),
            depth,
            backend_depth: depth,
            in_flight_count: c.in_flight.len() as i64,
            deferred_count: c.deferred.len() as i64,
            message_count: c.message_count,
            requeue_count: c.requeue_count,
            timeout_count: c.timeout_count,
            client_count: c.consumers.len() as i64,
            clients: Some(clients.collect()),
            paused: c.paused,
            e2e_processing_latency: self.e2e(merged.as_ref()),
            dead_letter_count: Some(c.dead_letter_count),
            expired_count: Some(c.expired_count),
            oldest_message_age_ms: None,
            oldest_waiting_ns: super::limits::oldest_waiting_ns(&t.log, c),
            settings: self.topic_index.get(&t.name).and_then(|&tk| {
                let chk = t.channel_index.get(&c.name)?;
                Some(self.resolved(tk, Some(*chk)))
            }),
        }
    }

    /// nsqd's e2e object: `{"count":0,"percentiles":null}` unless percentiles are configured.
    fn e2e(&self, h: Option<&hdrhistogram::Histogram<u64>>) -> E2eLatency {
        let quantiles = &self.cfg.e2e_processing_latency_percentile;
        match h {
            Some(h) if !quantiles.is_empty() => E2eLatency {
                count: h.len() as i64,
                percentiles: Some(
                    quantiles_ns(h, quantiles)
                        .into_iter()
                        .map(|(quantile, ns)| Percentile {
                            quantile,
                            value: ns as f64,
                        })
                        .collect(),
                ),
            },
            _ => E2eLatency {
                count: 0,
                percentiles: None,
            },
        }
    }
}

fn client_stats(c: &Client) -> ClientStats {
    let s = &c.settings;
    ClientStats {
        client_id: s.client_id.clone(),
        hostname: s.hostname.clone(),
        version: "V2".to_owned(),
        remote_address: c.remote.to_string(),
        state: match c.state {
            ConnState::Init => 0,
            ConnState::Subscribed => 3,
            ConnState::Closing => 4,
        },
        ready_count: c.rdy as i64,
        in_flight_count: c.in_flight as i64,
        message_count: c.message_count,
        finish_count: c.finish_count,
        requeue_count: c.requeue_count,
        connect_ts: c.connect_ts_ns / 1_000_000_000,
        sample_rate: s.sample_rate as i32,
        user_agent: s.user_agent.clone(),
        authed: c.auth.has_authorizations(),
        auth_identity: c
            .auth
            .identity()
            .map_or_else(String::new, |i| i.0.to_owned()),
        auth_identity_url: c
            .auth
            .identity()
            .map_or_else(String::new, |i| i.1.to_owned()),
        pub_counts: c
            .pub_counts
            .iter()
            .map(|(topic, count)| PubCount {
                topic: topic.clone(),
                count: *count,
            })
            .collect(),
        snappy: c.snappy,
        deflate: c.deflate,
        tls: c.tls,
        tls_version: c.tls_version.clone(),
        tls_cipher_suite: c.tls_cipher.clone(),
        // Go reports this as always true (deprecated) once TLS is on.
        tls_negotiated_protocol_is_mutual: c.tls,
        ..ClientStats::default()
    }
}

/// The process's resident set size, from `/proc/self/statm` (Linux); `None` elsewhere.
fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}
