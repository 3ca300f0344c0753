//! The endpoint table, one line per endpoint as in nsqd's `newHTTPServer` (reference §2.2), and
//! the argument checks each handler starts with, in nsqd's order and with its error codes.
//!
//! Matching follows julienschmidt/httprouter as nsqd configures it: one tree per method, a
//! wrong method gives 405 with an `Allow` header (`OPTIONS` included, sorted), `OPTIONS` on a
//! known path answers 200 with `Allow`, an unknown path gives 404, and a path that differs only
//! by a trailing slash, case or `.`/`..`/`//` segments is redirected (301 for GET, 307 otherwise).
//! The pre-1.0 endpoints (`/put`, `/create_topic`, ...) are absent and so answer 404 (§2.7).
//! Go's `pprof` endpoints under `/debug` are not served by corq and answer 404 too.
//!
//! # Handler check order (nsqd v1.3.0, for the wiring)
//!
//! | route | checks, in order |
//! |---|---|
//! | `Ping` | health: `OK` 200, else 500 with the health text ([`super::response::plain`]) |
//! | `Pub` | 413 `MSG_TOO_BIG` (parser, before the body) → 400 `MSG_EMPTY` (empty body) → 400 `INVALID_REQUEST` (query) → [`topic_arg`] → [`defer_arg`] → (corq) [`dedup_id_arg`] → publish (503 `E_PUB_FAILED PUB failed <why>`) → `OK` |
//! | `Mpub` | 413 `BODY_TOO_BIG` (parser) → `INVALID_REQUEST` → [`topic_arg`] → *create the topic* (503 `E_MPUB_FAILED MPUB failed <why>`) → [`mpub_binary`] → [`super::mpub`] split → publish all (503 `E_MPUB_FAILED ...`) → `OK` (also for zero messages) |
//! | `Stats` | `INVALID_REQUEST` → [`super::stats::StatsQuery`] → [`super::stats::apply_query`] → JSON ([`super::response::json`]) or text ([`super::response::ok_text`]) |
//! | `TopicCreate` | `INVALID_REQUEST` → [`topic_arg`] → create → empty 200 |
//! | `TopicEmpty` | `INVALID_REQUEST` → [`topic_arg`] → 404 `TOPIC_NOT_FOUND` → 500 `INTERNAL_ERROR` → empty 200 |
//! | `TopicDelete`, `TopicPause`, `TopicUnpause` | `INVALID_REQUEST` → [`existing_topic_arg`] → 404 `TOPIC_NOT_FOUND` → (pause: 500 `INTERNAL_ERROR`, persist) → empty 200 |
//! | `ChannelCreate` | `INVALID_REQUEST` → [`topic_channel_args`] → 404 `TOPIC_NOT_FOUND` (the topic must exist) → create → empty 200 |
//! | `ChannelDelete`, `ChannelEmpty`, `ChannelPause`, `ChannelUnpause` | `INVALID_REQUEST` → [`topic_channel_args`] → 404 `TOPIC_NOT_FOUND` → 404 `CHANNEL_NOT_FOUND` → (500 `INTERNAL_ERROR`) → empty 200 |
//! | `ConfigGet` | [`super::info::config_value`] or 400 `INVALID_OPTION` |
//! | `ConfigPut` | [`super::info::config_put`] (413/400 `INVALID_VALUE`, 400 `INVALID_OPTION`) → apply → [`super::info::config_value`] |
//! | `Options` | [`super::response::options`] |
//! | `ChannelPeek` | `INVALID_REQUEST` → [`topic_channel_args`] → [`super::peek::count_arg`] → [`super::peek::state_arg`] → 404 `TOPIC_NOT_FOUND` → 404 `CHANNEL_NOT_FOUND` → JSON |
//! | `TopicPeek` | `INVALID_REQUEST` → [`peek_topic_arg`] → [`super::peek::count_arg`] → 404 `TOPIC_NOT_FOUND` → JSON |
//! | `Dashboard` | the file ([`super::dashboard`]) |
//! | `TopicConfig*`, `ChannelConfig*` (corq) | `INVALID_REQUEST` → [`topic_arg`] (/[`topic_channel_args`]) → 404 `TOPIC_NOT_FOUND` / `CHANNEL_NOT_FOUND` → (POST: every `KEY=VALUE` parsed and checked, 400 with the reason, nothing changed) → JSON |
//! | `ChannelRewind` (corq), `ChannelCreate` with `from` | `INVALID_REQUEST` → [`topic_channel_args`] → 400 `MISSING_ARG_TO`/`FROM` → 400 `INVALID_ARG_TO`/`FROM` (the time) → 404 `TOPIC_NOT_FOUND` → 404 `CHANNEL_NOT_FOUND` (create: 400 `CHANNEL_EXISTS`) → JSON ([`super::replay`]) |
//! | `TopicDead` (corq) | `INVALID_REQUEST` → [`topic_arg`] → 400 `INVALID_COUNT` → JSON (an absent dead-letter topic lists nothing) |

use crate::protocol::names::{is_valid_channel_name, is_valid_topic_name};

use super::parse::HttpLimits;
use super::query::Query;

/// An endpoint, resolved from the method and the (unescaped) path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /ping`: `OK`, or 500 with the health error (plain text).
    Ping,
    /// `GET /info`: [`super::info::Info`] as JSON.
    Info,
    /// `POST /pub?topic=&defer=`: publish the body as one message.
    Pub,
    /// `POST /mpub?topic=&binary=`: publish several messages ([`super::mpub`]).
    Mpub,
    /// `GET /stats`: text or JSON ([`super::stats`], [`super::text`]).
    Stats,
    /// `POST /topic/create?topic=`.
    TopicCreate,
    /// `POST /topic/delete?topic=`.
    TopicDelete,
    /// `POST /topic/empty?topic=`.
    TopicEmpty,
    /// `POST /topic/pause?topic=`.
    TopicPause,
    /// `POST /topic/unpause?topic=`.
    TopicUnpause,
    /// `POST /channel/create?topic=&channel=`.
    ChannelCreate,
    /// `POST /channel/delete?topic=&channel=`.
    ChannelDelete,
    /// `POST /channel/empty?topic=&channel=`.
    ChannelEmpty,
    /// `POST /channel/pause?topic=&channel=`.
    ChannelPause,
    /// `POST /channel/unpause?topic=&channel=`.
    ChannelUnpause,
    /// `GET /config/:opt`, with the option name.
    ConfigGet(String),
    /// `PUT /config/:opt`, with the option name; the body is the new value.
    ConfigPut(String),
    /// `GET /metrics`: corq's Prometheus endpoint (nsq#732; nsqd has none).
    Metrics,
    /// `GET /channel/peek?topic=&channel=&count=&state=`: corq's own ([`super::peek`]).
    ChannelPeek,
    /// `GET /topic/peek?topic=&count=`: corq's own ([`super::peek`]).
    TopicPeek,
    /// `GET /`, `/ui` and `/ui/<asset>`: the dashboard's files ([`super::dashboard`]).
    Dashboard(&'static str),
    /// `GET /topic/config?topic=`: a topic's settings (corq's own, [`super::config`]).
    TopicConfigGet,
    /// `POST /topic/config?topic=&KEY=VALUE...`: overrides a topic's settings.
    TopicConfigSet,
    /// `GET /channel/config?topic=&channel=`: a channel's settings.
    ChannelConfigGet,
    /// `POST /channel/config?topic=&channel=&KEY=VALUE...`: overrides a channel's settings.
    ChannelConfigSet,
    /// `GET /topic/dead?topic=&count=`: the first dead letters of `<topic>.dead`.
    TopicDead,
    /// `POST /channel/rewind?topic=&channel=&to=`: replay from a time ([`super::replay`]).
    ChannelRewind,
    /// `OPTIONS` on a known path: 200, this `Allow` value, empty body, no X-NSQ header
    /// (httprouter's automatic OPTIONS reply).
    Options {
        /// The methods the path accepts, sorted, `OPTIONS` included.
        allow: String,
    },
}

/// A request the table does not route to a handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteError {
    /// 404 `{"message":"NOT_FOUND"}`.
    NotFound,
    /// 405 `{"message":"METHOD_NOT_ALLOWED"}` with this `Allow` header.
    MethodNotAllowed {
        /// The methods the path accepts, sorted, `OPTIONS` included.
        allow: String,
    },
    /// httprouter's path repair: 301 (GET) or 307 (other methods) to `path`; the caller appends
    /// `?` and the raw query when there is one ([`super::response::redirect`]).
    Redirect {
        /// 301 or 307.
        status: u16,
        /// The canonical path to redirect to.
        path: String,
    },
}

/// What a static route line builds.
type Make = fn() -> Route;

/// The table: method, path, route. `/config/:opt` is matched separately (it has a parameter).
const TABLE: &[(&str, &str, Make)] = &[
    ("GET", "/ping", || Route::Ping),
    ("GET", "/info", || Route::Info),
    ("POST", "/pub", || Route::Pub),
    ("POST", "/mpub", || Route::Mpub),
    ("GET", "/stats", || Route::Stats),
    ("POST", "/topic/create", || Route::TopicCreate),
    ("POST", "/topic/delete", || Route::TopicDelete),
    ("POST", "/topic/empty", || Route::TopicEmpty),
    ("POST", "/topic/pause", || Route::TopicPause),
    ("POST", "/topic/unpause", || Route::TopicUnpause),
    ("POST", "/channel/create", || Route::ChannelCreate),
    ("POST", "/channel/delete", || Route::ChannelDelete),
    ("POST", "/channel/empty", || Route::ChannelEmpty),
    ("POST", "/channel/pause", || Route::ChannelPause),
    ("POST", "/channel/unpause", || Route::ChannelUnpause),
    ("GET", "/metrics", || Route::Metrics),
    ("GET", "/channel/peek", || Route::ChannelPeek),
    ("GET", "/topic/peek", || Route::TopicPeek),
    ("GET", "/", || Route::Dashboard("index.html")),
    ("GET", "/ui", || Route::Dashboard("index.html")),
    ("GET", "/ui/app.js", || Route::Dashboard("app.js")),
    ("GET", "/ui/style.css", || Route::Dashboard("style.css")),
    ("GET", "/topic/config", || Route::TopicConfigGet),
    ("POST", "/topic/config", || Route::TopicConfigSet),
    ("GET", "/channel/config", || Route::ChannelConfigGet),
    ("POST", "/channel/config", || Route::ChannelConfigSet),
    ("GET", "/topic/dead", || Route::TopicDead),
    ("POST", "/channel/rewind", || Route::ChannelRewind),
];

/// The prefix of the one parameterised route, `/config/:opt` (GET and PUT).
const CONFIG_PREFIX: &str = "/config/";

/// The methods that have a tree in the router: only these get path repair (httprouter).
const TREE_METHODS: [&str; 3] = ["GET", "POST", "PUT"];

/// Resolves a request to a [`Route`], as nsqd's router would.
///
/// # Errors
/// [`RouteError`] for 404, 405 and redirects.
pub fn route(method: &str, path: &str) -> Result<Route, RouteError> {
    if let Some(r) = lookup(method, path) {
        return Ok(r);
    }
    if TREE_METHODS.contains(&method) && path != "/" {
        if let Some(fixed) = repair(method, path) {
            let status = if method == "GET" { 301 } else { 307 };
            return Err(RouteError::Redirect {
                status,
                path: fixed,
            });
        }
    }
    let allow = allowed(path, method);
    if allow.is_empty() {
        return Err(RouteError::NotFound);
    }
    if method == "OPTIONS" {
        return Ok(Route::Options { allow });
    }
    Err(RouteError::MethodNotAllowed { allow })
}

/// Exact, case-sensitive match.
fn lookup(method: &str, path: &str) -> Option<Route> {
    if let Some(opt) = path.strip_prefix(CONFIG_PREFIX) {
        // httprouter's `:opt` is one non-empty segment.
        if opt.is_empty() || opt.contains('/') {
            return None;
        }
        return match method {
            "GET" => Some(Route::ConfigGet(opt.to_owned())),
            "PUT" => Some(Route::ConfigPut(opt.to_owned())),
            _ => None,
        };
    }
    TABLE
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map(|(_, _, make)| make())
}

/// httprouter's trailing-slash redirect, then its cleaned, case-insensitive fix.
fn repair(method: &str, path: &str) -> Option<String> {
    if let Some(stripped) = path.strip_suffix('/') {
        if path.len() > 1 && lookup(method, stripped).is_some() {
            return Some(stripped.to_owned());
        }
    }
    let cleaned = clean_path(path);
    let candidates = [cleaned.as_str(), cleaned.strip_suffix('/').unwrap_or("")];
    candidates
        .iter()
        .filter(|c| !c.is_empty())
        .find_map(|c| fold_case(method, c))
}

/// The canonical spelling of `path` if it matches a route of `method` ignoring ASCII case.
fn fold_case(method: &str, path: &str) -> Option<String> {
    let (head, opt) = match path.get(..CONFIG_PREFIX.len()) {
        Some(h) if h.eq_ignore_ascii_case(CONFIG_PREFIX) => {
            (CONFIG_PREFIX, path.get(h.len()..).unwrap_or_default())
        }
        _ => ("", path),
    };
    if !head.is_empty() {
        let fixed = format!("{head}{opt}");
        return lookup(method, &fixed).map(|_| fixed);
    }
    TABLE
        .iter()
        .find(|(m, p, _)| *m == method && p.eq_ignore_ascii_case(path))
        .map(|(_, p, _)| (*p).to_owned())
}

/// httprouter's `CleanPath`: a leading `/`, no `.`/`..`/empty segments, trailing slash kept.
pub fn clean_path(path: &str) -> String {
    let mut segs: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segs.pop();
            }
            s => segs.push(s),
        }
    }
    let mut out = String::with_capacity(path.len() + 1);
    for s in &segs {
        out.push('/');
        out.push_str(s);
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    if out.is_empty() || trailing {
        out.push('/');
    }
    out
}

/// httprouter's `allowed`: every other method with a route for `path`, plus OPTIONS, sorted
/// and comma-joined; empty when no method has the path.
fn allowed(path: &str, method: &str) -> String {
    let mut methods: Vec<&str> = if path == "*" {
        TREE_METHODS.to_vec()
    } else {
        TREE_METHODS
            .iter()
            .copied()
            .filter(|m| *m != method && lookup(m, path).is_some())
            .collect()
    };
    if methods.is_empty() {
        return String::new();
    }
    methods.push("OPTIONS");
    methods.sort_unstable();
    methods.join(", ")
}

/// A V1 error reply: the HTTP status and the `{"message":...}` code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// The `message` value, e.g. `MISSING_ARG_TOPIC`.
    pub code: &'static str,
}

impl ApiError {
    /// An error reply with this status and code.
    pub const fn new(status: u16, code: &'static str) -> ApiError {
        ApiError { status, code }
    }
}

/// A 400 error reply.
const fn bad(code: &'static str) -> ApiError {
    ApiError::new(400, code)
}

/// 400 `INVALID_REQUEST`: the query string did not parse (§2.1).
pub const INVALID_REQUEST: ApiError = bad("INVALID_REQUEST");
/// 400 `MISSING_ARG_TOPIC`.
pub const MISSING_ARG_TOPIC: ApiError = bad("MISSING_ARG_TOPIC");
/// 400 `INVALID_TOPIC` (/pub, /mpub, /topic/create, /topic/empty).
pub const INVALID_TOPIC: ApiError = bad("INVALID_TOPIC");
/// 400 `INVALID_ARG_TOPIC` (the channel endpoints).
pub const INVALID_ARG_TOPIC: ApiError = bad("INVALID_ARG_TOPIC");
/// 400 `MISSING_ARG_CHANNEL`.
pub const MISSING_ARG_CHANNEL: ApiError = bad("MISSING_ARG_CHANNEL");
/// 400 `INVALID_ARG_CHANNEL`.
pub const INVALID_ARG_CHANNEL: ApiError = bad("INVALID_ARG_CHANNEL");
/// 400 `INVALID_DEFER`.
pub const INVALID_DEFER: ApiError = bad("INVALID_DEFER");
/// corq: `dedup_id` empty or longer than [`crate::storage::MAX_DEDUP_KEY_LEN`] bytes.
pub const INVALID_DEDUP_ID: ApiError = bad("INVALID_DEDUP_ID");
/// 400 `MSG_EMPTY` (/pub with an empty body, checked before the topic).
pub const MSG_EMPTY: ApiError = bad("MSG_EMPTY");
/// 413 `MSG_TOO_BIG`.
pub const MSG_TOO_BIG: ApiError = ApiError::new(413, "MSG_TOO_BIG");
/// 413 `BODY_TOO_BIG`.
pub const BODY_TOO_BIG: ApiError = ApiError::new(413, "BODY_TOO_BIG");
/// 404 `TOPIC_NOT_FOUND` (for the broker's answer).
pub const TOPIC_NOT_FOUND: ApiError = ApiError::new(404, "TOPIC_NOT_FOUND");
/// 404 `CHANNEL_NOT_FOUND` (for the broker's answer).
pub const CHANNEL_NOT_FOUND: ApiError = ApiError::new(404, "CHANNEL_NOT_FOUND");
/// 500 `INTERNAL_ERROR`.
pub const INTERNAL_ERROR: ApiError = ApiError::new(500, "INTERNAL_ERROR");
/// 503 `EXITING` (nsqd's answer to any failed put; corq answers a storage failure with the
/// failed command's error text instead, see `Broker::http_publish_reply`).
pub const EXITING: ApiError = ApiError::new(503, "EXITING");
/// 400 `INVALID_OPTION` (/config).
pub const INVALID_OPTION: ApiError = bad("INVALID_OPTION");
/// 400 `INVALID_VALUE` (/config PUT, a value that does not parse).
pub const INVALID_VALUE: ApiError = bad("INVALID_VALUE");
/// 413 `INVALID_VALUE` (/config PUT, an empty body or one above --max-msg-size).
pub const INVALID_VALUE_SIZE: ApiError = ApiError::new(413, "INVALID_VALUE");

/// The topic for /pub, /mpub, /topic/create and /topic/empty (nsqd `getTopicFromQuery`):
/// absent gives `MISSING_ARG_TOPIC`, invalid (empty included) gives `INVALID_TOPIC`.
///
/// # Errors
/// As above.
pub fn topic_arg(q: &Query) -> Result<&str, ApiError> {
    let t = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(t) {
        return Err(INVALID_TOPIC);
    }
    Ok(t)
}

/// The topic for /topic/delete, /topic/pause and /topic/unpause: nsqd does not validate the
/// name there, an unknown one is simply `TOPIC_NOT_FOUND`.
///
/// # Errors
/// `MISSING_ARG_TOPIC` when absent.
pub fn existing_topic_arg(q: &Query) -> Result<&str, ApiError> {
    q.get("topic").ok_or(MISSING_ARG_TOPIC)
}

/// The topic for `/topic/peek`: validated like the channel endpoints' (`_ARG_` codes).
///
/// # Errors
/// `MISSING_ARG_TOPIC`, `INVALID_ARG_TOPIC`.
pub fn peek_topic_arg(q: &Query) -> Result<&str, ApiError> {
    let t = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(t) {
        return Err(INVALID_ARG_TOPIC);
    }
    Ok(t)
}

/// Topic and channel for the channel endpoints (nsqd `GetTopicChannelArgs`, `_ARG_` codes).
///
/// # Errors
/// `MISSING_ARG_TOPIC`, `INVALID_ARG_TOPIC`, `MISSING_ARG_CHANNEL`, `INVALID_ARG_CHANNEL`, in
/// that order.
pub fn topic_channel_args(q: &Query) -> Result<(&str, &str), ApiError> {
    let t = q.get("topic").ok_or(MISSING_ARG_TOPIC)?;
    if !is_valid_topic_name(t) {
        return Err(INVALID_ARG_TOPIC);
    }
    let c = q.get("channel").ok_or(MISSING_ARG_CHANNEL)?;
    if !is_valid_channel_name(c) {
        return Err(INVALID_ARG_CHANNEL);
    }
    Ok((t, c))
}

/// /pub's `defer` in milliseconds: `None` when absent. nsqd parses an int64 (sign allowed),
/// multiplies by `time.Millisecond` in int64 nanoseconds (wrapping, as Go does) and refuses a
/// result below 0 or above `--max-req-timeout`.
///
/// # Errors
/// `INVALID_DEFER`.
pub fn defer_arg(q: &Query, max_req_timeout_ms: u64) -> Result<Option<u64>, ApiError> {
    let Some(raw) = q.get("defer") else {
        return Ok(None);
    };
    let ms = parse_go_int64(raw).ok_or(INVALID_DEFER)?;
    let ns = ms.wrapping_mul(1_000_000);
    let max_ns = i64::try_from(max_req_timeout_ms)
        .ok()
        .and_then(|m| m.checked_mul(1_000_000))
        .unwrap_or(i64::MAX);
    if ns < 0 || ns > max_ns {
        return Err(INVALID_DEFER);
    }
    // cannot fail because: ns >= 0 was just checked.
    Ok(Some(u64::try_from(ns / 1_000_000).unwrap_or(0)))
}

/// Go's `strconv.ParseInt(s, 10, 64)`: optional sign, ASCII digits, no spaces.
fn parse_go_int64(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `/pub`'s `dedup_id=` (corq): the dedup window's key instead of the body's hash; empty when
/// absent.
///
/// # Errors
/// `INVALID_DEDUP_ID` when given empty or longer than the record can keep.
pub fn dedup_id_arg(q: &Query) -> Result<&[u8], ApiError> {
    match q.get("dedup_id") {
        None => Ok(&[]),
        Some(id) if !id.is_empty() && id.len() <= crate::storage::MAX_DEDUP_KEY_LEN => {
            Ok(id.as_bytes())
        }
        Some(_) => Err(INVALID_DEDUP_ID),
    }
}

/// /mpub's `binary` parameter: absent means text; `true/1` binary, `false/0` text, and any
/// other value binary (deprecated in nsqd, which logs it).
pub fn mpub_binary(q: &Query) -> bool {
    match q.get("binary") {
        None | Some("false" | "0") => false,
        Some(_) => true,
    }
}

/// The most a request body may be for this route before it is even read, and the reply when
/// it is more. `/pub` → `--max-msg-size` and 413 `MSG_TOO_BIG`; `/mpub` → `--max-body-size` and
/// 413 `BODY_TOO_BIG`; `PUT /config/:opt` → `--max-msg-size` and 413 `INVALID_VALUE` (§2.2).
/// nsqd reads other bodies whole and ignores them; corq caps them at `--max-body-size`
/// (answering 413 `BODY_TOO_BIG`) so no request can make it buffer without bound.
pub fn body_limit(method: &str, path: &str, limits: &HttpLimits) -> (u64, ApiError) {
    match route(method, path) {
        Ok(Route::Pub) => (limits.max_msg_size, MSG_TOO_BIG),
        Ok(Route::ConfigPut(_)) => (limits.max_msg_size, INVALID_VALUE_SIZE),
        _ => (limits.max_body_size, BODY_TOO_BIG),
    }
}

#[cfg(test)]
mod tests;
