//! AUTH against an external auth server, as nsqd does it (`internal/auth/authorizations.go`,
//! reference §1.14).
//!
//! | file | owns |
//! |------|------|
//! | `mod.rs`      | the grant: the auth server's reply parsed and checked, permission matching |
//! | `endpoint.rs` | `--auth-http-address` forms and the exact request bytes (pure) |
//! | `http.rs`     | one blocking HTTP request with connect/request timeouts and a bounded reply |
//! | `pool.rs`     | the `corq-auth` helper threads: a bounded queue in, results out + a wake-up |
//!
//! The broker (`broker/auth.rs`) decides when to ask and applies the answers; nothing here
//! touches broker state, and the blocking half runs only on the helper threads.
//!
//! Matching is nsqd's: a grant allows `(topic, channel)` when one of its authorizations has
//! the permission (`subscribe` when a channel is given, `publish` when it is empty), its topic
//! regex matches the topic **unanchored** (Go `regexp.MatchString`: `"au"` matches `"xau1"`),
//! and one of its channel regexes matches the channel, also for a publish, where the channel is
//! the empty string: a publish-only grant needs a channel pattern such as `".*"` (nsqd's quirk).
//!
//! The patterns are compiled with the `regex` crate: RE2 semantics like Go's `regexp`,
//! matching in time linear in the input, never backtracking, so no pattern can make a check
//! slow. They are compiled once per reply, on the helper thread, with a size cap.

pub mod endpoint;
pub mod http;
pub mod pool;

pub use endpoint::{AuthParams, Endpoint, Method};
pub use pool::{AuthDone, AuthJob, AuthPool, PoolConfig};

use regex::{Regex, RegexBuilder};
use serde_json::Value;

/// The most memory one compiled pattern may take (the `regex` crate's default is 10 MiB; auth
/// patterns are short, and a reply may carry many).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// One entry of the reply's `authorizations`, compiled.
#[derive(Debug, Clone)]
pub struct Authorization {
    topic: Regex,
    channels: Vec<Regex>,
    publish: bool,
    subscribe: bool,
}

impl Authorization {
    /// nsqd's `Authorization.IsAllowed`.
    fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        let permitted = if channel.is_empty() {
            self.publish
        } else {
            self.subscribe
        };
        permitted && self.topic.is_match(topic) && self.channels.iter().any(|c| c.is_match(channel))
    }
}

/// What the auth server granted one secret (nsqd's `auth.State`).
#[derive(Debug, Clone)]
pub struct Grant {
    /// Seconds the grant is valid for (> 0).
    pub ttl_secs: u64,
    /// Who the secret belongs to, as the auth server says.
    pub identity: String,
    /// A URL about that identity.
    pub identity_url: String,
    /// The permissions.
    pub authorizations: Vec<Authorization>,
}

impl Grant {
    /// nsqd's `State.IsAllowed`: any authorization allows it. `channel` is empty for a publish.
    pub fn is_allowed(&self, topic: &str, channel: &str) -> bool {
        self.authorizations
            .iter()
            .any(|a| a.is_allowed(topic, channel))
    }

    /// The AUTH reply: `{"identity":...,"identity_url":...,"permission_count":N}` in nsqd's
    /// key order and Go's string escaping.
    pub fn reply_json(&self) -> Vec<u8> {
        let mut out = String::from("{\"identity\":");
        endpoint::push_go_json_string(&mut out, self.identity.as_bytes());
        out.push_str(",\"identity_url\":");
        endpoint::push_go_json_string(&mut out, self.identity_url.as_bytes());
        out.push_str(&format!(
            ",\"permission_count\":{}}}",
            self.authorizations.len()
        ));
        out.into_bytes()
    }
}

/// The reply's fields as Go decodes them into nsqd's struct (zero values when absent/null).
#[derive(Default)]
struct RawGrant {
    ttl: i64,
    identity: String,
    identity_url: String,
    authorizations: Vec<RawAuthorization>,
}

#[derive(Default)]
struct RawAuthorization {
    topic: String,
    channels: Vec<String>,
    permissions: Vec<String>,
}

/// Parses and checks an auth server's 200 reply the way nsqd does: Go `encoding/json` into
/// its struct (keys case-insensitive, unknown keys ignored, `null` leaves the zero value, a
/// wrong type fails), then every permission must be `subscribe` or `publish`, every pattern
/// must compile, and `ttl` must be > 0.
///
/// # Errors
/// Why the reply is refused (logged by the caller; the client only sees `E_AUTH_FAILED`).
pub fn parse_grant(body: &[u8]) -> Result<Grant, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
    let raw = raw_grant(v)?;
    let mut authorizations = Vec::with_capacity(raw.authorizations.len());
    for a in raw.authorizations {
        let (mut publish, mut subscribe) = (false, false);
        for p in &a.permissions {
            match p.as_str() {
                "publish" => publish = true,
                "subscribe" => subscribe = true,
                _ => return Err(format!("unknown permission {p}")),
            }
        }
        let topic =
            compile(&a.topic).map_err(|e| format!("unable to compile topic {:?} {e}", a.topic))?;
        let channels = a
            .channels
            .iter()
            .map(|c| compile(c).map_err(|e| format!("unable to compile channel {c:?} {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        authorizations.push(Authorization {
            topic,
            channels,
            publish,
            subscribe,
        });
    }
    if raw.ttl <= 0 {
        return Err(format!("invalid TTL {} (must be >0)", raw.ttl));
    }
    Ok(Grant {
        ttl_secs: raw.ttl.unsigned_abs(),
        identity: raw.identity,
        identity_url: raw.identity_url,
        authorizations,
    })
}

fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn raw_grant(v: Value) -> Result<RawGrant, String> {
    let mut g = RawGrant::default();
    let map = match v {
        Value::Null => return Ok(g),
        Value::Object(m) => m,
        other => return Err(format!("reply is not a JSON object: {other}")),
    };
    for (k, val) in map {
        match k.to_ascii_lowercase().as_str() {
            "ttl" => g.ttl = go_int(val, "ttl")?.unwrap_or(g.ttl),
            "identity" => g.identity = go_string(val, "identity")?.unwrap_or_default(),
            "identity_url" => g.identity_url = go_string(val, "identity_url")?.unwrap_or_default(),
            "authorizations" => {
                g.authorizations = go_array(val, "authorizations", raw_authorization)?
            }
            _ => {}
        }
    }
    Ok(g)
}

fn raw_authorization(v: Value) -> Result<RawAuthorization, String> {
    let mut a = RawAuthorization::default();
    let map = match v {
        Value::Null => return Ok(a),
        Value::Object(m) => m,
        other => return Err(format!("authorization is not an object: {other}")),
    };
    for (k, val) in map {
        match k.to_ascii_lowercase().as_str() {
            "topic" => a.topic = go_string(val, "topic")?.unwrap_or_default(),
            "channels" => a.channels = go_array(val, "channels", string_item)?,
            "permissions" => a.permissions = go_array(val, "permissions", string_item)?,
            _ => {}
        }
    }
    Ok(a)
}

fn string_item(v: Value) -> Result<String, String> {
    Ok(go_string(v, "array item")?.unwrap_or_default())
}

/// A JSON integer as Go decodes it into an `int`: `null` is "leave it", a fraction or a
/// string is an error.
fn go_int(v: Value, key: &str) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| format!("{key}: {n} is not an int")),
        other => Err(format!("{key}: {other} is not an int")),
    }
}

fn go_string(v: Value, key: &str) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(format!("{key}: {other} is not a string")),
    }
}

fn go_array<T>(
    v: Value,
    key: &str,
    item: impl Fn(Value) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items.into_iter().map(item).collect(),
        other => Err(format!("{key}: {other} is not an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(json: &str) -> Grant {
        parse_grant(json.as_bytes()).unwrap()
    }

    #[test]
    fn matching_is_unanchored_and_publish_needs_a_channel_match() {
        let g = grant(
            r#"{"ttl":60,"authorizations":[{"topic":"au","channels":[".*"],"permissions":["publish"]}]}"#,
        );
        assert!(g.is_allowed("xau1", ""), "unanchored, like Go MatchString");
        assert!(!g.is_allowed("zz", ""));
        assert!(!g.is_allowed("au", "c"), "publish does not allow SUB");
        // Without a channel pattern matching "", even the right topic cannot be published to.
        let g = grant(
            r#"{"ttl":60,"authorizations":[{"topic":"^t$","channels":["^c$"],"permissions":["publish","subscribe"]}]}"#,
        );
        assert!(!g.is_allowed("t", ""));
        assert!(g.is_allowed("t", "c"));
        assert!(!g.is_allowed("t", "d"));
        let g = grant(r#"{"ttl":1,"authorizations":[{"topic":"t","permissions":["publish"]}]}"#);
        assert!(!g.is_allowed("t", ""), "no channels: nothing matches");
    }

    #[test]
    fn replies_are_checked_like_nsqd() {
        for (bad, why) in [
            (r#"{"ttl":0,"authorizations":[]}"#, "invalid TTL 0"),
            (r#"{"authorizations":[]}"#, "invalid TTL 0"),
            (r#"{"ttl":-5}"#, "invalid TTL -5"),
            (r#"{"ttl":1.5}"#, "not an int"),
            (r#"{"ttl":"5"}"#, "not an int"),
            (
                r#"{"ttl":5,"authorizations":[{"topic":"t","channels":[],"permissions":["admin"]}]}"#,
                "unknown permission admin",
            ),
            (
                r#"{"ttl":5,"authorizations":[{"topic":"(","channels":[],"permissions":[]}]}"#,
                "unable to compile topic",
            ),
            (
                r#"{"ttl":5,"authorizations":[{"topic":"t","channels":["[z-a]"]}]}"#,
                "unable to compile channel",
            ),
            ("[1]", "not a JSON object"),
            ("nope", "invalid JSON"),
            ("null", "invalid TTL 0"),
        ] {
            let err = parse_grant(bad.as_bytes()).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        // Keys are case-insensitive, unknown keys and nulls are ignored.
        let g = grant(
            r#"{"TTL":7,"Identity":"al","extra":1,"identity_url":null,"authorizations":null}"#,
        );
        assert_eq!((g.ttl_secs, g.identity.as_str()), (7, "al"));
        assert!(g.authorizations.is_empty());
    }

    #[test]
    fn go_regexp_syntax_compiles() {
        for p in [
            r"(?i)^Orders\.",
            r"\pL+",
            r"[[:alpha:]]_\d{2}$",
            r"(?P<n>a)|b\z",
            r"(?U)a+",
        ] {
            assert!(compile(p).is_ok(), "{p}");
        }
        // The one documented gap: Go's \Q..\E literal quoting.
        assert!(compile(r"\Qa.b\E").is_err());
    }

    #[test]
    fn reply_json_is_nsqds() {
        let g = grant(
            r#"{"ttl":1,"identity":"a<b>\"","identity_url":"https://x/?a&b","authorizations":[{"topic":"t","channels":[".*"],"permissions":["publish"]}]}"#,
        );
        assert_eq!(
            String::from_utf8(g.reply_json()).unwrap(),
            r#"{"identity":"a\u003cb\u003e\"","identity_url":"https://x/?a\u0026b","permission_count":1}"#
        );
    }
}
