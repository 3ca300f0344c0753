//! corq's settings and dead-letter endpoints: `/topic/config`, `/channel/config` (GET shows,
//! POST overrides, all or nothing) and `GET /topic/dead`.
//!
//! The broker parses and applies the settings and reads the dead letters; this file checks the
//! arguments and renders the answers (JSON; durations in Go's syntax, as they are written).
//! Errors are nsqd-style `{"message":"..."}` with a 400 saying what is wrong, or 404.

use serde_json::{json, Map, Value};

use crate::broker::client::ClientKey;
use crate::broker::dead::DeadLetter;
use crate::broker::settings::{self, Kind, Scope, SettingsError, SettingsView, KEYS};
use crate::broker::Broker;

use super::query::Query;
use super::response::{self, ReplyCtx};
use super::routes::{self, ApiError, Route};
use super::text::go_duration;

/// Most dead letters one `/topic/dead` returns.
pub const MAX_DEAD_COUNT: usize = 1000;
/// Dead letters returned when `count` is absent.
pub const DEFAULT_DEAD_COUNT: usize = 10;

/// Query keys that name the target, not a setting.
const TARGET_KEYS: [&str; 2] = ["topic", "channel"];

/// What went wrong, before rendering.
enum Failure {
    Api(ApiError),
    Message(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<SettingsError> for Failure {
    fn from(e: SettingsError) -> Self {
        match e {
            SettingsError::TopicNotFound => Failure::Api(routes::TOPIC_NOT_FOUND),
            SettingsError::ChannelNotFound => Failure::Api(routes::CHANNEL_NOT_FOUND),
            SettingsError::Invalid(m) => Failure::Message(m),
        }
    }
}

/// Handles the config and dead-letter routes; `query` is the parsed query (or `None` when it
/// did not parse).
pub fn serve(
    broker: &mut Broker,
    ck: ClientKey,
    route: &Route,
    query: Option<&Query>,
    ctx: &ReplyCtx,
) {
    match answer(broker, route, query) {
        Ok(body) => broker.write_to(ck, |out| response::json(out, ctx, &body)),
        Err(Failure::Api(e)) => broker.write_to(ck, |out| response::api_error(out, ctx, e)),
        Err(Failure::Message(m)) => {
            broker.write_to(ck, |out| response::error_json(out, ctx, 400, &m))
        }
    }
}

fn answer(broker: &mut Broker, route: &Route, query: Option<&Query>) -> Result<Value, Failure> {
    let q = query.ok_or(routes::INVALID_REQUEST)?;
    match route {
        Route::TopicConfigGet | Route::TopicConfigSet => {
            let topic = routes::topic_arg(q)?;
            let view = if *route == Route::TopicConfigSet {
                let changes = settings::parse_changes(pairs(q), Scope::Topic, broker.config())?;
                broker.set_settings(topic, None, &changes)?
            } else {
                broker.settings_of(topic, None)?
            };
            Ok(json!({ "topic": topic, "settings": render_view(&view, Scope::Topic) }))
        }
        Route::ChannelConfigGet | Route::ChannelConfigSet => {
            let (topic, channel) = routes::topic_channel_args(q)?;
            let view = if *route == Route::ChannelConfigSet {
                let changes = settings::parse_changes(pairs(q), Scope::Channel, broker.config())?;
                broker.set_settings(topic, Some(channel), &changes)?
            } else {
                broker.settings_of(topic, Some(channel))?
            };
            let settings = render_view(&view, Scope::Channel);
            Ok(json!({ "topic": topic, "channel": channel, "settings": settings }))
        }
        Route::TopicDead => {
            let topic = routes::topic_arg(q)?;
            let count = count_arg(q)?;
            let (dead_topic, letters) = broker.dead_letters(topic, count);
            let letters: Vec<Value> = letters.iter().map(render_dead).collect();
            Ok(json!({ "topic": topic, "dead_letter_topic": dead_topic, "messages": letters }))
        }
        _ => Err(Failure::Api(routes::INTERNAL_ERROR)),
    }
}

/// The `KEY=VALUE` pairs of a config request.
fn pairs(q: &Query) -> impl Iterator<Item = (&str, &str)> {
    q.pairs
        .iter()
        .filter(|(k, _)| !TARGET_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
}

/// `count=`: 1..=[`MAX_DEAD_COUNT`], default [`DEFAULT_DEAD_COUNT`].
fn count_arg(q: &Query) -> Result<usize, Failure> {
    let Some(raw) = q.get("count") else {
        return Ok(DEFAULT_DEAD_COUNT);
    };
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_DEAD_COUNT).contains(&n) && raw.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(n)
        }
        _ => Err(Failure::Message(format!(
            "invalid count {raw:?}: must be 1..={MAX_DEAD_COUNT}"
        ))),
    }
}

/// One value in its kind's notation: a number, or a Go duration string.
pub fn render_value(kind: Kind, v: u64) -> Value {
    match kind {
        Kind::Count => Value::from(v),
        Kind::Millis => {
            let ns = i64::try_from(v.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
            Value::from(go_duration(ns))
        }
    }
}

/// `{"KEY":{"value":...,"override":...|null}, ...}` for the keys of `scope` (a channel does not
/// show topic-only keys).
fn render_view(view: &SettingsView, scope: Scope) -> Value {
    let mut map = Map::new();
    for (i, key) in KEYS.iter().enumerate() {
        if scope == Scope::Channel && key.scope == Scope::Topic {
            continue;
        }
        let over = view.overrides.values[i].map_or(Value::Null, |v| render_value(key.kind, v));
        let entry =
            json!({ "value": render_value(key.kind, view.resolved.values[i]), "override": over });
        map.insert(key.name.to_owned(), entry);
    }
    Value::Object(map)
}

/// Resolved settings as numbers for `/stats`: counts as is, durations as `<key>_ms`.
pub fn stats_settings(values: &settings::Settings<u64>, scope: Scope) -> Value {
    let mut map = Map::new();
    for (i, key) in KEYS.iter().enumerate() {
        if scope == Scope::Channel && key.scope == Scope::Topic {
            continue;
        }
        let name = match key.kind {
            Kind::Count => key.name.to_owned(),
            Kind::Millis => format!("{}_ms", key.name),
        };
        map.insert(name, Value::from(values.values[i]));
    }
    Value::Object(map)
}

fn render_dead(d: &DeadLetter) -> Value {
    json!({
        "id": String::from_utf8_lossy(&crate::protocol::message_id_from_offset(d.offset)),
        "timestamp": d.timestamp_ns,
        "attempts": d.attempts,
        "original_id": d.orig_id.map(|o| String::from_utf8_lossy(&crate::protocol::message_id_from_offset(o)).into_owned()),
        "original_timestamp": d.orig_timestamp_ns,
        "topic": d.topic,
        "channel": d.channel,
        "reason": d.reason.map(|r| r.name()),
        "body_base64": super::base64::encode(&d.body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_in_their_notation() {
        assert_eq!(render_value(Kind::Count, 5), json!(5));
        assert_eq!(render_value(Kind::Millis, 1500), json!("1.5s"));
        assert_eq!(render_value(Kind::Millis, 0), json!("0s"));
    }
}
