//! corq's own alarms, for boxes without Prometheus: a topic's fill ratio crossing
//! [`FILL_FIRE`] of a limit (resolved under [`FILL_RESOLVE`]: hysteresis, so a topic hovering
//! at the line does not flap), and a channel's oldest waiting message passing
//! `--alert-latency` (resolved when it is back under it).
//!
//! Evaluated in the maintenance step (every `--sync-timeout`), never per publish: O(topics +
//! channels) per step, two record reads per channel. Each change of state logs one `warn`
//! line with `topic`/`channel` fields and, with `--alert-webhook-url`, queues one JSON
//! document for the webhook thread ([`crate::peers::webhook`]):
//! `{"alert","state","topic","channel","value","threshold","time"}`.

use std::collections::HashMap;

use log::warn;

use super::limits::oldest_age_ms;
use super::{Broker, Now};
use crate::peers::webhook::Webhook;

/// Fill ratio at which the fill alert fires.
pub const FILL_FIRE: f64 = 0.8;
/// Fill ratio under which a firing fill alert resolves.
pub const FILL_RESOLVE: f64 = 0.7;

/// The two alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// `topic_fill`: a topic's backlog against its limits.
    Fill,
    /// `channel_latency`: a channel's oldest waiting message.
    Latency,
}

impl AlertKind {
    /// The alert's name in logs and webhook documents.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Fill => "topic_fill",
            AlertKind::Latency => "channel_latency",
        }
    }
}

/// (kind, topic, channel or "") of a firing alert.
type AlertKey = (AlertKind, String, String);

/// Alerts firing now, and where state changes are sent.
#[derive(Debug, Default)]
pub struct Alerts {
    /// Firing alerts and the turn they were last seen on.
    firing: HashMap<AlertKey, u64>,
    /// Counts evaluations, to find alerts of topics and channels that went away.
    round: u64,
    /// The webhook sender, with `--alert-webhook-url`.
    pub webhook: Option<Webhook>,
}

impl Alerts {
    /// How many alerts fire now.
    pub fn firing(&self) -> usize {
        self.firing.len()
    }
}

/// One observation: the value, whether it fires, whether it resolves, and the threshold.
struct Seen {
    key: AlertKey,
    value: f64,
    fire: bool,
    resolve: bool,
    threshold: f64,
}

impl Broker {
    /// Looks at every topic and channel, and reports the alerts that changed state.
    pub(super) fn evaluate_alerts(&mut self, now: Now) {
        let seen = self.observe(now);
        self.alerts.round += 1;
        let round = self.alerts.round;
        for s in seen {
            let firing = self.alerts.firing.contains_key(&s.key);
            if !firing && s.fire {
                self.alerts.firing.insert(s.key.clone(), round);
                self.report(&s, true, now);
            } else if firing && s.resolve {
                self.alerts.firing.remove(&s.key);
                self.report(&s, false, now);
            } else if let Some(r) = self.alerts.firing.get_mut(&s.key) {
                *r = round;
            }
        }
        // A deleted topic or channel (or a limit set back to 0) takes its alert with it.
        let gone: Vec<AlertKey> = (self.alerts.firing.iter())
            .filter(|&(_, &r)| r != round)
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.alerts.firing.remove(&k);
            let s = Seen {
                key: k,
                value: 0.0,
                fire: false,
                resolve: true,
                threshold: 0.0,
            };
            self.report(&s, false, now);
        }
    }

    /// The current value of every alert that applies.
    fn observe(&self, now: Now) -> Vec<Seen> {
        let latency_ms = self.cfg.alert_latency;
        let mut seen = Vec::new();
        for (tk, t) in self.topics.iter() {
            let s = self.resolved(tk, None);
            if s.max_topic_depth() > 0 || s.max_topic_bytes() > 0 {
                let fill = self.fill_ratio(tk);
                let k = key(AlertKind::Fill, &t.name, "");
                let firing = self.alerts.firing.contains_key(&k);
                seen.push(Seen {
                    key: k,
                    value: fill,
                    fire: fill >= FILL_FIRE,
                    resolve: fill < FILL_RESOLVE,
                    threshold: if firing { FILL_RESOLVE } else { FILL_FIRE },
                });
            }
            if latency_ms == 0 {
                continue;
            }
            for (_, c) in t.channels.iter() {
                let age = oldest_age_ms(&t.log, c, now.wall_ns).unwrap_or(0);
                seen.push(Seen {
                    key: key(AlertKind::Latency, &t.name, &c.name),
                    value: age as f64 / 1000.0,
                    fire: age > latency_ms,
                    resolve: age <= latency_ms,
                    threshold: latency_ms as f64 / 1000.0,
                });
            }
        }
        seen
    }

    fn report(&self, s: &Seen, firing: bool, now: Now) {
        let (kind, topic, channel) = (&s.key.0, s.key.1.as_str(), s.key.2.as_str());
        let state = if firing { "firing" } else { "resolved" };
        let what = match kind {
            AlertKind::Fill => format!("fill ratio {:.3} (threshold {})", s.value, s.threshold),
            AlertKind::Latency => format!(
                "oldest message {:.3}s old (threshold {}s)",
                s.value, s.threshold
            ),
        };
        if channel.is_empty() {
            warn!(topic; "alert {} {state}: topic {topic}: {what}", kind.name());
        } else {
            warn!(topic, channel; "alert {} {state}: topic {topic} channel {channel}: {what}", kind.name());
        }
        let Some(hook) = &self.alerts.webhook else {
            return;
        };
        let channel = (!channel.is_empty()).then_some(channel);
        hook.send(crate::peers::webhook::document(
            kind.name(),
            firing,
            topic,
            channel,
            (s.value, s.threshold),
            now.wall_ns,
        ));
    }
}

fn key(kind: AlertKind, topic: &str, channel: &str) -> AlertKey {
    (kind, topic.to_owned(), channel.to_owned())
}
