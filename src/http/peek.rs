//! `/channel/peek` and `/topic/peek`: their arguments (checked in nsqd's order, with nsqd-style
//! codes) and the JSON rendering of the broker's [`Peek`].
//!
//! ```text
//! {"messages":[{"id":"0000000000000007","timestamp":1764870000000000000,"attempts":0,
//!   "state":"queued","deliver_at":null,"body_base64":"aGVsbG8="}]}
//! ```
//!
//! A topic peek has no `state` (the log knows no channel states). `"truncated":true` is added
//! when the broker's body budget or scan limit ended the peek before `count` messages.

use std::io::Write as _;

use crate::broker::peek::{Peek, PeekSet, PeekState, MAX_PEEK_COUNT};

use super::base64;
use super::query::Query;
use super::routes::ApiError;

/// `count` when absent.
pub const DEFAULT_PEEK_COUNT: usize = 10;

/// 400 `INVALID_COUNT`: `count` is not a number in 1..=1000.
pub const INVALID_COUNT: ApiError = ApiError::new(400, "INVALID_COUNT");
/// 400 `INVALID_STATE`: `state` is not `queued`, `deferred` or `in_flight`.
pub const INVALID_STATE: ApiError = ApiError::new(400, "INVALID_STATE");

/// `count`: ASCII digits only (no sign, no spaces), 1..=[`MAX_PEEK_COUNT`].
///
/// # Errors
/// `INVALID_COUNT`.
pub fn count_arg(q: &Query) -> Result<usize, ApiError> {
    let Some(raw) = q.get("count") else {
        return Ok(DEFAULT_PEEK_COUNT);
    };
    if raw.is_empty() || raw.len() > 4 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(INVALID_COUNT);
    }
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_PEEK_COUNT).contains(&n) => Ok(n),
        _ => Err(INVALID_COUNT),
    }
}

/// `state`: absent or `queued` → what comes next; `deferred`; `in_flight`.
///
/// # Errors
/// `INVALID_STATE`.
pub fn state_arg(q: &Query) -> Result<PeekSet, ApiError> {
    match q.get("state") {
        None | Some("queued") => Ok(PeekSet::Next),
        Some("deferred") => Ok(PeekSet::Deferred),
        Some("in_flight") => Ok(PeekSet::InFlight),
        Some(_) => Err(INVALID_STATE),
    }
}

fn state_name(s: PeekState) -> &'static str {
    match s {
        PeekState::Queued => "queued",
        PeekState::Deferred => "deferred",
        PeekState::InFlight => "in_flight",
    }
}

/// The JSON body for a peek, written straight into one pre-sized buffer: it runs on the loop,
/// and a `serde_json::Value` per message costs more than the bodies' base64 does. Every string
/// written is an id (hex), a fixed state name or base64, none of which needs escaping, except
/// a dead letter's topic and channel names ([`write_dead`]), escaped.
#[cfg(test)]
pub fn render(peek: &Peek<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    render_into(&mut out, peek);
    out
}

/// As [`render`], appended to `out`: the caller keeps the buffer between peeks (and writes the
/// response head in front of the body in it), so no megabyte of fresh pages is faulted in and
/// copied for every peek.
pub fn render_into(out: &mut Vec<u8>, peek: &Peek<'_>) {
    let b64: usize = peek
        .messages
        .iter()
        .map(|m| m.body.len().div_ceil(3) * 4)
        .sum();
    out.reserve(b64 + 160 * peek.messages.len() + 32);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in peek.messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"id\":\"");
        out.extend_from_slice(&m.id);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "\",\"timestamp\":{},\"attempts\":{},",
            m.timestamp_ns, m.attempts
        );
        if let Some(s) = m.state {
            let _ = write!(out, "\"state\":\"{}\",", state_name(s));
        }
        match m.deliver_at_ns {
            Some(ns) => {
                let _ = write!(out, "\"deliver_at\":{ns},");
            }
            None => out.extend_from_slice(b"\"deliver_at\":null,"),
        }
        if let Some(d) = &m.dead {
            write_dead(out, d);
        }
        out.extend_from_slice(b"\"body_base64\":\"");
        base64::encode_into(out, m.body);
        out.extend_from_slice(b"\"}");
    }
    out.push(b']');
    if peek.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    out.push(b'}');
}

/// A dead letter's metadata, as `/topic/dead` names it: `original_id`, `original_timestamp`,
/// `topic` and `channel` (where it died) and `reason`, each followed by a comma.
fn write_dead(out: &mut Vec<u8>, d: &crate::storage::DeadMeta<'_>) {
    out.extend_from_slice(b"\"original_id\":\"");
    out.extend_from_slice(&crate::protocol::message_id_from_offset(d.orig_id));
    // Names come from a file: escaped as JSON strings, whatever they hold.
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned());
    let _ = write!(
        out,
        "\",\"original_timestamp\":{},\"topic\":{},\"channel\":{},\"reason\":\"{}\",",
        d.orig_timestamp_ns,
        quoted(d.topic),
        quoted(d.channel),
        d.reason.name()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::peek::PeekedMessage;
    use serde_json::{json, Value};

    fn q(s: &str) -> Query {
        super::super::query::parse_query(s).unwrap()
    }

    #[test]
    fn count_is_1_to_1000_digits_only() {
        assert_eq!(count_arg(&q("")), Ok(10));
        assert_eq!(count_arg(&q("count=1")), Ok(1));
        assert_eq!(count_arg(&q("count=1000")), Ok(1000));
        for bad in [
            "0",
            "1001",
            "-1",
            "+5",
            " 5",
            "5x",
            "",
            "99999999999999999999",
            "0x10",
        ] {
            let got = count_arg(&q(&format!("count={}", bad.replace(' ', "%20"))));
            assert_eq!(got, Err(INVALID_COUNT), "{bad:?}");
        }
    }

    #[test]
    fn state_names() {
        assert_eq!(state_arg(&q("")), Ok(PeekSet::Next));
        assert_eq!(state_arg(&q("state=queued")), Ok(PeekSet::Next));
        assert_eq!(state_arg(&q("state=deferred")), Ok(PeekSet::Deferred));
        assert_eq!(state_arg(&q("state=in_flight")), Ok(PeekSet::InFlight));
        assert_eq!(state_arg(&q("state=IN_FLIGHT")), Err(INVALID_STATE));
    }

    #[test]
    fn render_matches_the_documented_shape() {
        let mut peek = Peek::default();
        peek.messages.push(PeekedMessage {
            id: *b"0000000000000007",
            timestamp_ns: 5,
            attempts: 2,
            state: Some(PeekState::Deferred),
            deliver_at_ns: Some(9),
            body: b"hello",
            dead: None,
        });
        let v: Value = serde_json::from_slice(&render(&peek)).unwrap();
        assert_eq!(
            v,
            json!({"messages":[{"id":"0000000000000007","timestamp":5,"attempts":2,
                "state":"deferred","deliver_at":9,"body_base64":"aGVsbG8="}]})
        );
        peek.messages.push(PeekedMessage {
            id: *b"00000000000000ff",
            timestamp_ns: -1,
            attempts: 0,
            state: None,
            deliver_at_ns: None,
            body: b"",
            dead: None,
        });
        peek.truncated = true;
        let v: Value = serde_json::from_slice(&render(&peek)).unwrap();
        assert_eq!(
            v["messages"][1],
            json!({"id":"00000000000000ff","timestamp":-1,"attempts":0,"deliver_at":null,
                "body_base64":""})
        );
        assert_eq!(v["truncated"], true);
        let empty: Value = serde_json::from_slice(&render(&Peek::default())).unwrap();
        assert_eq!(empty, json!({"messages":[]}));
    }

    #[test]
    fn a_dead_letter_shows_its_metadata_escaped() {
        let mut peek = Peek::default();
        peek.messages.push(PeekedMessage {
            id: *b"0000000000000001",
            timestamp_ns: 7,
            attempts: 3,
            state: None,
            deliver_at_ns: None,
            body: b"x",
            dead: Some(crate::storage::DeadMeta {
                orig_id: 255,
                orig_timestamp_ns: 4,
                reason: crate::storage::DeadReason::Timeout,
                topic: "orders",
                channel: "bad\"name",
            }),
        });
        let v: Value = serde_json::from_slice(&render(&peek)).unwrap();
        assert_eq!(
            v["messages"][0],
            json!({"id":"0000000000000001","timestamp":7,"attempts":3,"deliver_at":null,
                "original_id":"00000000000000ff","original_timestamp":4,"topic":"orders",
                "channel":"bad\"name","reason":"timeout","body_base64":"eA=="})
        );
    }
}
