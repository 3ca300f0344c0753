//! Per-topic and per-channel settings: one typed set of values with server-wide defaults from
//! the flags, overrides from `/topic/config` and `/channel/config`, persisted in the checkpoint.
//! Features read the resolved value ([`Broker::resolved`]) and never the flags directly.
//!
//! # The mechanism
//!
//! Every setting is one entry of [`KEYS`]: its config key (the flag's name with `-` written
//! `_`, as nsqd's `/config` keys), its [`Kind`] (how it is parsed and rendered: a count, or a
//! Go duration kept in ms), its [`Scope`] and its range check. Values of every key are `u64`
//! and live in an array indexed by the entry's position, so [`Settings<T>`] is the same type
//! for resolved values (`T = u64`) and for overrides (`T = Option<u64>`). Adding a key is one
//! entry in [`KEYS`], one index constant, one accessor and one line in [`Broker::defaults`].
//!
//! Resolution: a channel's value is the channel's override, else its topic's, else the flag.
//! Topic-scoped keys (the dedup window, the limits, retention) have no channel level.
//!
//! Parsing, validation and the all-or-nothing rule live here (domain); rendering (JSON, the
//! Go duration text) lives in `http`.

use crate::config::{parse_duration_ms, Config};
use crate::protocol::names::MAX_NAME_LEN;

use super::Broker;

/// Suffix of a topic's dead-letter topic.
pub const DEAD_SUFFIX: &str = ".dead";

/// Highest `max_attempts`: NSQ's attempts counter is a u16.
pub const MAX_ATTEMPTS_CAP: u64 = u16::MAX as u64;

/// How a key's value is written and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A non-negative integer.
    Count,
    /// A Go duration (`250ms`, `1m0s`), kept in milliseconds.
    Millis,
}

/// Where a key may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On a topic only.
    Topic,
    /// On a topic (the default of its channels) or on one channel.
    Channel,
}

/// One setting.
#[derive(Debug)]
pub struct Key {
    /// Config key: the flag's name with `-` written `_`.
    pub name: &'static str,
    /// How it is parsed and rendered.
    pub kind: Kind,
    /// Where it may be set.
    pub scope: Scope,
    /// Range check of a parsed value against the server's configuration (`Err` says why).
    pub check: fn(u64, &Config) -> Result<(), String>,
}

/// Index of `max_attempts` in [`KEYS`].
pub const MAX_ATTEMPTS: usize = 0;
/// Index of `requeue_backoff`.
pub const REQUEUE_BACKOFF: usize = 1;
/// Index of `message_ttl`.
pub const MESSAGE_TTL: usize = 2;
/// Index of `dedup_window`.
pub const DEDUP_WINDOW: usize = 3;
/// Index of `max_topic_bytes`.
pub const MAX_TOPIC_BYTES: usize = 4;
/// Index of `max_topic_depth`.
pub const MAX_TOPIC_DEPTH: usize = 5;
/// Index of `retention_time`.
pub const RETENTION_TIME: usize = 6;
/// Index of `retention_bytes`.
pub const RETENTION_BYTES: usize = 7;
/// How many keys there are.
pub const KEY_COUNT: usize = 8;

/// Every setting, in index order.
pub const KEYS: [Key; KEY_COUNT] = [
    Key {
        name: "max_attempts",
        kind: Kind::Count,
        scope: Scope::Channel,
        check: |v, _| {
            if v > MAX_ATTEMPTS_CAP {
                return Err(format!("must be <= {MAX_ATTEMPTS_CAP}"));
            }
            Ok(())
        },
    },
    Key {
        name: "requeue_backoff",
        kind: Kind::Millis,
        scope: Scope::Channel,
        check: |v, cfg| {
            if v > cfg.max_req_timeout {
                return Err("must be <= --max-req-timeout".to_owned());
            }
            Ok(())
        },
    },
    Key {
        name: "message_ttl",
        kind: Kind::Millis,
        scope: Scope::Channel,
        check: |_, _| Ok(()),
    },
    Key {
        name: "dedup_window",
        kind: Kind::Millis,
        scope: Scope::Topic,
        check: |v, _| {
            if v > MAX_DEDUP_WINDOW_MS {
                return Err("must be <= 24h".to_owned());
            }
            Ok(())
        },
    },
    Key {
        name: "max_topic_bytes",
        kind: Kind::Count,
        scope: Scope::Topic,
        check: |_, _| Ok(()),
    },
    Key {
        name: "max_topic_depth",
        kind: Kind::Count,
        scope: Scope::Topic,
        check: |_, _| Ok(()),
    },
    Key {
        name: "retention_time",
        kind: Kind::Millis,
        scope: Scope::Topic,
        check: |_, _| Ok(()),
    },
    Key {
        name: "retention_bytes",
        kind: Kind::Count,
        scope: Scope::Topic,
        check: |_, _| Ok(()),
    },
];

/// Longest dedup window: the rebuild at open scans at most this much history.
pub const MAX_DEDUP_WINDOW_MS: u64 = 24 * 3600 * 1000;

/// A value per key: `Settings<u64>` resolved, `Settings<Option<u64>>` overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settings<T> {
    /// Indexed like [`KEYS`].
    pub values: [T; KEY_COUNT],
}

/// Overrides of one topic or channel (`None` = inherit).
pub type Overrides = Settings<Option<u64>>;

impl Settings<u64> {
    /// `--max-attempts`: deliveries before a failing message is dead-lettered (0 = unlimited).
    pub fn max_attempts(&self) -> u64 {
        self.values[MAX_ATTEMPTS]
    }
    /// `--requeue-backoff` in ms (0 = off).
    pub fn requeue_backoff_ms(&self) -> u64 {
        self.values[REQUEUE_BACKOFF]
    }
    /// `--message-ttl` in ms (0 = off).
    pub fn message_ttl_ms(&self) -> u64 {
        self.values[MESSAGE_TTL]
    }
    /// `--dedup-window` in ms (0 = off).
    pub fn dedup_window_ms(&self) -> u64 {
        self.values[DEDUP_WINDOW]
    }
    /// `--max-topic-bytes` (0 = unbounded).
    pub fn max_topic_bytes(&self) -> u64 {
        self.values[MAX_TOPIC_BYTES]
    }
    /// `--max-topic-depth` (0 = unbounded).
    pub fn max_topic_depth(&self) -> u64 {
        self.values[MAX_TOPIC_DEPTH]
    }
    /// `--retention-time` in ms (0 = off).
    pub fn retention_time_ms(&self) -> u64 {
        self.values[RETENTION_TIME]
    }
    /// `--retention-bytes` (0 = off).
    pub fn retention_bytes(&self) -> u64 {
        self.values[RETENTION_BYTES]
    }
}

impl Overrides {
    /// `base` with these overrides applied.
    pub fn over(&self, base: Settings<u64>) -> Settings<u64> {
        let mut out = base;
        for (v, o) in out.values.iter_mut().zip(self.values) {
            if let Some(o) = o {
                *v = o;
            }
        }
        out
    }

    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The overrides as (key name, value) pairs, for the checkpoint.
    pub fn to_pairs(&self) -> std::collections::BTreeMap<String, u64> {
        KEYS.iter()
            .zip(self.values)
            .filter_map(|(k, v)| Some((k.name.to_owned(), v?)))
            .collect()
    }

    /// Overrides from the checkpoint's pairs; unknown keys (a newer server's) are returned.
    pub fn from_pairs(pairs: &std::collections::BTreeMap<String, u64>) -> (Overrides, Vec<String>) {
        let mut o = Overrides::default();
        let mut unknown = Vec::new();
        for (name, &v) in pairs {
            match key_index(name) {
                Some(i) => o.values[i] = Some(v),
                None => unknown.push(name.clone()),
            }
        }
        (o, unknown)
    }
}

/// The index of a key by its config name.
pub fn key_index(name: &str) -> Option<usize> {
    KEYS.iter().position(|k| k.name == name)
}

/// One requested change: key index and the new override (`None` clears it).
pub type Change = (usize, Option<u64>);

/// Why a configuration request was refused (nothing was changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingsError {
    /// The topic does not exist.
    TopicNotFound,
    /// The channel does not exist.
    ChannelNotFound,
    /// A key, value or combination is invalid: the message says which and why.
    Invalid(String),
}

/// Parses the `KEY=VALUE` pairs of a config request (the other query keys, `topic` and
/// `channel`, are skipped by the caller). `VALUE` `default` clears the override. All pairs
/// are checked before anything is applied.
///
/// # Errors
/// [`SettingsError::Invalid`] naming the first bad key or value.
pub fn parse_changes<'a>(
    pairs: impl Iterator<Item = (&'a str, &'a str)>,
    scope: Scope,
    cfg: &Config,
) -> Result<Vec<Change>, SettingsError> {
    let mut out: Vec<Change> = Vec::new();
    for (name, raw) in pairs {
        let bad = |why: String| SettingsError::Invalid(format!("invalid {name}: {why}"));
        let i = key_index(name)
            .ok_or_else(|| SettingsError::Invalid(format!("unknown setting {name:?}")))?;
        let key = &KEYS[i];
        if scope == Scope::Channel && key.scope == Scope::Topic {
            return Err(bad("a topic setting, not a channel setting".to_owned()));
        }
        if out.iter().any(|(j, _)| *j == i) {
            return Err(bad("given twice".to_owned()));
        }
        if raw == "default" {
            out.push((i, None));
            continue;
        }
        let v = parse_value(key.kind, raw).map_err(bad)?;
        (key.check)(v, cfg).map_err(bad)?;
        out.push((i, Some(v)));
    }
    if out.is_empty() {
        return Err(SettingsError::Invalid("no setting given".to_owned()));
    }
    Ok(out)
}

/// Parses one value of `kind`.
///
/// # Errors
/// Why the text is not a value of that kind.
pub fn parse_value(kind: Kind, raw: &str) -> Result<u64, String> {
    match kind {
        Kind::Count => {
            if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("{raw:?} is not a non-negative integer"));
            }
            raw.parse().map_err(|_| format!("{raw:?} is out of range"))
        }
        Kind::Millis => parse_duration_ms(raw),
    }
}

/// The dead-letter topic of `topic`, or `None` for a dead-letter topic itself (they do not
/// dead-letter: a chain `t.dead.dead...` would help no one).
pub fn dead_letter_topic(topic: &str) -> Option<String> {
    (!is_dead_letter_topic(topic)).then(|| format!("{topic}{DEAD_SUFFIX}"))
}

/// Whether `topic` is itself a dead-letter topic. Without building its name: settings are
/// resolved on every publish, and a `format!` there was an allocation per message.
pub fn is_dead_letter_topic(topic: &str) -> bool {
    topic.ends_with(DEAD_SUFFIX)
}

/// Whether `topic` can have a dead-letter topic (its name stays within nsqd's 64 bytes).
pub fn dead_letter_name_fits(topic: &str) -> bool {
    topic.len() + DEAD_SUFFIX.len() <= MAX_NAME_LEN
}

/// The server-wide defaults, from the flags.
pub fn defaults(cfg: &Config) -> Settings<u64> {
    let mut s = Settings::<u64>::default();
    s.values[MAX_ATTEMPTS] = cfg.max_attempts;
    s.values[REQUEUE_BACKOFF] = cfg.requeue_backoff;
    s.values[MESSAGE_TTL] = cfg.message_ttl;
    s.values[DEDUP_WINDOW] = cfg.dedup_window;
    s.values[MAX_TOPIC_BYTES] = cfg.max_topic_bytes;
    s.values[MAX_TOPIC_DEPTH] = cfg.max_topic_depth;
    s.values[RETENTION_TIME] = cfg.retention_time;
    s.values[RETENTION_BYTES] = cfg.retention_bytes;
    s
}

impl Broker {
    /// The server-wide defaults, from the flags.
    pub fn defaults(&self) -> Settings<u64> {
        self.defaults
    }

    /// The resolved settings of a topic (`chk = None`) or one of its channels. A dead-letter
    /// topic never dead-letters: its `max_attempts` resolves to 0.
    pub fn resolved(&self, tk: usize, chk: Option<usize>) -> Settings<u64> {
        let base = self.defaults;
        let Some(t) = self.topics.get(tk) else {
            return base;
        };
        let mut s = t.overrides.over(base);
        if let Some(c) = chk.and_then(|k| t.channels.get(k)) {
            s = c.overrides.over(s);
        }
        if is_dead_letter_topic(&t.name) {
            s.values[MAX_ATTEMPTS] = 0;
        }
        s
    }

    /// One resolved topic-only setting (`key` indexes [`KEYS`], a [`Scope::Topic`] key) of
    /// topic `tk`: what [`resolved`](Self::resolved) has for it, without resolving the
    /// others. For the per-publish checks (limits, dedup window).
    #[inline]
    pub fn topic_setting(&self, tk: usize, key: usize) -> u64 {
        debug_assert!(
            KEYS[key].scope == Scope::Topic,
            "{} is not topic-only",
            KEYS[key].name
        );
        let default = self.defaults.values[key];
        self.topics
            .get(tk)
            .map_or(default, |t| t.overrides.values[key].unwrap_or(default))
    }
}

/// A topic's or channel's settings as `GET /topic/config` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingsView {
    /// What is set on this topic or channel itself.
    pub overrides: Overrides,
    /// What applies after inheritance.
    pub resolved: Settings<u64>,
}

impl Broker {
    fn find(
        &self,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<(usize, Option<usize>), SettingsError> {
        let &tk = self
            .topic_index
            .get(topic)
            .ok_or(SettingsError::TopicNotFound)?;
        let chk = match channel {
            None => None,
            Some(c) => Some(
                *self.topics[tk]
                    .channel_index
                    .get(c)
                    .ok_or(SettingsError::ChannelNotFound)?,
            ),
        };
        Ok((tk, chk))
    }

    /// The settings of a topic (`channel = None`) or channel.
    ///
    /// # Errors
    /// Not found.
    pub fn settings_of(
        &self,
        topic: &str,
        channel: Option<&str>,
    ) -> Result<SettingsView, SettingsError> {
        let (tk, chk) = self.find(topic, channel)?;
        let t = &self.topics[tk];
        let overrides = match chk {
            None => t.overrides,
            Some(k) => t.channels[k].overrides,
        };
        Ok(SettingsView {
            overrides,
            resolved: self.resolved(tk, chk),
        })
    }

    /// Applies `changes` (from [`parse_changes`]) to a topic or channel, all or nothing, and
    /// checkpoints them soon.
    ///
    /// # Errors
    /// Not found, or [`SettingsError::Invalid`] when the result would turn max attempts on
    /// where there can be no dead-letter topic (a dead-letter topic itself, or a name too long
    /// for `<topic>.dead`); nothing is changed then.
    pub fn set_settings(
        &mut self,
        topic: &str,
        channel: Option<&str>,
        changes: &[Change],
    ) -> Result<SettingsView, SettingsError> {
        let (tk, chk) = self.find(topic, channel)?;
        let t = &self.topics[tk];
        let mut next = match chk {
            None => t.overrides,
            Some(k) => t.channels[k].overrides,
        };
        for &(i, v) in changes {
            next.values[i] = v;
        }
        let sets_attempts = changes
            .iter()
            .any(|&(i, v)| i == MAX_ATTEMPTS && v.is_some_and(|v| v > 0));
        if sets_attempts && !t.ephemeral {
            if is_dead_letter_topic(topic) {
                return Err(SettingsError::Invalid(format!(
                    "invalid max_attempts: {topic} is a dead-letter topic; dead-letter topics do \
                     not dead-letter"
                )));
            }
            if !dead_letter_name_fits(topic) {
                return Err(SettingsError::Invalid(format!(
                    "invalid max_attempts: the dead-letter topic {topic}{DEAD_SUFFIX} would be \
                     longer than {MAX_NAME_LEN} bytes"
                )));
            }
        }
        let t = &mut self.topics[tk];
        match chk {
            None => t.overrides = next,
            Some(k) => t.channels[k].overrides = next,
        }
        if !t.ephemeral {
            self.topology_changed = true;
        }
        log::info!(
            "topic {topic}{}: settings changed",
            channel.map(|c| format!(" channel {c}")).unwrap_or_default()
        );
        self.settings_of(topic, channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        crate::Options::default().validate().unwrap()
    }

    #[test]
    fn changes_parse_all_or_nothing() {
        let c = cfg();
        let ok = parse_changes(
            [("max_attempts", "5"), ("requeue_backoff", "1s")].into_iter(),
            Scope::Channel,
            &c,
        );
        assert_eq!(
            ok,
            Ok(vec![(MAX_ATTEMPTS, Some(5)), (REQUEUE_BACKOFF, Some(1000))])
        );
        for bad in [
            vec![("max_attempts", "-1")],
            vec![("max_attempts", "x")],
            vec![("max_attempts", "70000")],
            vec![("requeue_backoff", "5")],
            vec![("requeue_backoff", "2h")],
            vec![("nope", "1")],
            vec![("max_attempts", "1"), ("max_attempts", "2")],
            vec![("max_attempts", "3"), ("message_ttl", "soon")],
            vec![],
        ] {
            let r = parse_changes(bad.clone().into_iter(), Scope::Topic, &c);
            assert!(
                matches!(r, Err(SettingsError::Invalid(_))),
                "{bad:?}: {r:?}"
            );
        }
        let r = parse_changes([("dedup_window", "1s")].into_iter(), Scope::Channel, &c);
        assert!(matches!(r, Err(SettingsError::Invalid(m)) if m.contains("topic setting")));
        let r = parse_changes([("message_ttl", "default")].into_iter(), Scope::Topic, &c);
        assert_eq!(r, Ok(vec![(MESSAGE_TTL, None)]));
    }

    #[test]
    fn resolution_and_pairs() {
        let mut base = Settings::<u64>::default();
        base.values[MESSAGE_TTL] = 7;
        let mut topic = Overrides::default();
        topic.values[MAX_ATTEMPTS] = Some(3);
        let mut chan = Overrides::default();
        chan.values[MAX_ATTEMPTS] = Some(5);
        let s = chan.over(topic.over(base));
        assert_eq!((s.max_attempts(), s.message_ttl_ms()), (5, 7));
        let pairs = chan.to_pairs();
        assert_eq!(pairs.get("max_attempts"), Some(&5));
        let mut with_unknown = pairs.clone();
        with_unknown.insert("from_the_future".into(), 1);
        let (back, unknown) = Overrides::from_pairs(&with_unknown);
        assert_eq!(back, chan);
        assert_eq!(unknown, vec!["from_the_future".to_owned()]);
    }

    #[test]
    fn dead_letter_names() {
        assert_eq!(dead_letter_topic("orders").as_deref(), Some("orders.dead"));
        assert_eq!(dead_letter_topic("orders.dead"), None);
        assert!(dead_letter_name_fits(&"a".repeat(59)));
        assert!(!dead_letter_name_fits(&"a".repeat(60)));
    }
}
