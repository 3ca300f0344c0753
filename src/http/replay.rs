//! `POST /channel/rewind?topic=&channel=&to=X` and `POST /channel/create?topic=&channel=&from=X`
//! (corq's own): the arguments, the time syntax, and the JSON answer. The broker
//! moves the cursor ([`crate::broker::replay`]).
//!
//! `X` is `earliest`, a Unix time in milliseconds (digits only), or an RFC 3339 time
//! (`2026-12-04T18:00:00Z`, `2026-12-04T19:00:00.5+01:00`). Anything else is a 400
//! `{"message":"INVALID_ARG_TO: ..."}` (`INVALID_ARG_FROM` for create), and nothing changes.
//!
//! The answer: `{"topic","channel","offset","queued","clamped","oldest_timestamp"}`:
//! `queued` is how many log records from the new cursor on are delivered again (carried
//! copies among them are skipped, so it is an upper bound), `clamped` says the time asked for
//! is older than the oldest retained record and the channel starts there, and
//! `oldest_timestamp` is that record's publish time (ns, `null` for an empty log).

use serde_json::{json, Value};

use crate::broker::admin::AdminError;
use crate::broker::client::ClientKey;
use crate::broker::replay::{RewindTo, Rewound};
use crate::broker::Broker;

use super::query::Query;
use super::response::{self, ReplyCtx};
use super::routes::{self, ApiError};

enum Failure {
    Api(ApiError),
    Message(String),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Api(e)
    }
}

impl From<AdminError> for Failure {
    fn from(e: AdminError) -> Self {
        Failure::Api(match e {
            AdminError::TopicNotFound => routes::TOPIC_NOT_FOUND,
            AdminError::ChannelNotFound => routes::CHANNEL_NOT_FOUND,
            AdminError::Storage(_) => routes::INTERNAL_ERROR,
        })
    }
}

/// Handles `/channel/rewind` (`create = false`) or `/channel/create?from=` (`create = true`).
pub fn serve(
    broker: &mut Broker,
    ck: ClientKey,
    query: Option<&Query>,
    create: bool,
    ctx: &ReplyCtx,
) {
    let started = std::time::Instant::now();
    let answer = answer(broker, query, create);
    match answer {
        Ok(body) => broker.write_to(ck, |out| response::json(out, ctx, &body)),
        Err(Failure::Api(e)) => broker.write_to(ck, |out| response::api_error(out, ctx, e)),
        Err(Failure::Message(m)) => {
            broker.write_to(ck, |out| response::error_json(out, ctx, 400, &m))
        }
    }
    // A rewind runs on the loop: how long it held it (docs/operations.md quotes it).
    log::debug!("rewind: answered in {:?}", started.elapsed());
}

fn answer(broker: &mut Broker, query: Option<&Query>, create: bool) -> Result<Value, Failure> {
    let q = query.ok_or(routes::INVALID_REQUEST)?;
    let (topic, channel) = routes::topic_channel_args(q)?;
    let (key, code) = if create {
        ("from", "INVALID_ARG_FROM")
    } else {
        ("to", "INVALID_ARG_TO")
    };
    let raw = q
        .get(key)
        .ok_or_else(|| Failure::Message(format!("MISSING_ARG_{}", key.to_uppercase())))?;
    let to = parse_point(raw).map_err(|why| Failure::Message(format!("{code}: {why}")))?;
    let done = if create {
        match broker.create_channel_from(topic, channel, to)? {
            Some(r) => r,
            None => {
                return Err(Failure::Message(format!(
                    "CHANNEL_EXISTS: channel {channel} exists; use /channel/rewind"
                )))
            }
        }
    } else {
        broker.rewind_channel(topic, channel, to)?
    };
    Ok(render(topic, channel, &done))
}

fn render(topic: &str, channel: &str, r: &Rewound) -> Value {
    json!({
        "topic": topic,
        "channel": channel,
        "offset": r.offset,
        "queued": r.queued,
        "clamped": r.clamped,
        "oldest_timestamp": r.oldest_ns,
    })
}

/// Parses `earliest`, Unix ms, or RFC 3339.
///
/// # Errors
/// Why the text is none of them.
pub fn parse_point(raw: &str) -> Result<RewindTo, String> {
    if raw == "earliest" {
        return Ok(RewindTo::Earliest);
    }
    if !raw.is_empty() && raw.len() <= 18 && raw.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = raw
            .parse()
            .map_err(|_| format!("{raw:?} is out of range"))?;
        return Ok(RewindTo::Time(ms.saturating_mul(1_000_000)));
    }
    parse_rfc3339(raw)
        .map(RewindTo::Time)
        .ok_or_else(|| format!("{raw:?} is not 'earliest', Unix milliseconds or an RFC 3339 time"))
}

fn num(s: &str, at: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(at)?;
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` as ns since the Unix epoch (years 1970..=2262).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let (y, mo, d) = (num(s, 0..4)?, num(s, 5..7)?, num(s, 8..10)?);
    let (h, mi, sec) = (num(s, 11..13)?, num(s, 14..16)?, num(s, 17..19)?);
    if !(1970..=2262).contains(&y) || !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    if h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut frac_ns = 0i64;
    if let Some(f) = rest.strip_prefix('.') {
        let digits = f.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        let v: i64 = f.get(..digits)?.parse().ok()?;
        frac_ns = v * 10i64.pow(9 - digits as u32);
        rest = f.get(digits..)?;
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let (oh, om) = (num(rest, 1..3)?, num(rest, 4..6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse() {
        assert_eq!(parse_point("earliest"), Ok(RewindTo::Earliest));
        assert_eq!(
            parse_point("1700000000123"),
            Ok(RewindTo::Time(1_700_000_000_123_000_000))
        );
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0), "the epoch");
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.5Z"),
            Some(1_700_000_000_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2023-11-14T23:13:20+01:00"),
            Some(1_700_000_000_000_000_000)
        );
        for bad in [
            "",
            "soon",
            "-5",
            "2023-13-01T00:00:00Z",
            "2023-11-14T22:13:20",
            "2023-11-14T22:13:20.Z",
            "2023-11-14T22:13:20+1:00",
            "1e9",
            "99999999999999999999",
            "2023-11-14T22:13:20.1234567890Z",
            "２０２３-11-14T22:13:20Z",
        ] {
            assert!(parse_point(bad).is_err(), "{bad:?}");
        }
    }
}
