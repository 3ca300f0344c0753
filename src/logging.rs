//! Log output: `--log-format=text` (env_logger's usual lines) or `--log-format=json` (one JSON
//! object per line, for log shippers).
//!
//! A JSON line has the keys `ts` (RFC 3339, UTC, microseconds), `level`, `target` and `msg`,
//! then every key-value the log call carries (`log`'s `kv` feature). The lines an operator acts
//! on (recovery, truncation, quarantine, client errors) carry `topic`, `channel` and `client`
//! where they have them, so `jq 'select(.topic=="orders")'` finds them:
//!
//! ```text
//! {"ts":"2026-12-04T17:45:58.123456Z","level":"WARN","target":"corq::broker::restore","msg":"topic orders: ...","topic":"orders"}
//! ```
//!
//! The text format keeps the fields inside the message (`topic orders: ...`), as before; the
//! JSON format repeats them as fields. Both go to stderr through env_logger, so `CORQ_LOG`
//! filters (`CORQ_LOG=corq::storage=debug`) and `PUT /config/log_level` work the same in both.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use log::kv::{Key, Value, VisitSource};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// env_logger's human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The keys every JSON line has; a key-value with one of these names is dropped rather than
/// written twice.
const RESERVED: [&str; 4] = ["ts", "level", "target", "msg"];

/// Installs the global logger: `level` as the default filter, overridden by the environment
/// variable `env` (env_logger's syntax), in `format`. Call once, at program start.
pub fn init(format: LogFormat, level: log::LevelFilter, env: &str, prefix: &str) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level).parse_env(env);
    match format {
        LogFormat::Json => {
            b.format(|out, record| {
                let line = json_line(SystemTime::now(), record);
                out.write_all(line.as_bytes())
            });
        }
        LogFormat::Text => {
            // `--log-prefix` (nsqd's `[nsqd] `), then env_logger's usual line.
            let prefix = prefix.to_owned();
            b.format(move |out, r| {
                let ts = out.timestamp_micros();
                writeln!(
                    out,
                    "{prefix}{ts} {} {}: {}",
                    r.level(),
                    r.target(),
                    r.args()
                )
            });
        }
    }
    b.init();
}

/// One record as a JSON line (newline included).
pub fn json_line(now: SystemTime, record: &log::Record<'_>) -> String {
    let mut line = String::with_capacity(160);
    line.push_str("{\"ts\":\"");
    line.push_str(&rfc3339(now));
    line.push_str("\",\"level\":");
    push_json_str(&mut line, record.level().as_str());
    line.push_str(",\"target\":");
    push_json_str(&mut line, record.target());
    line.push_str(",\"msg\":");
    push_json_str(&mut line, &record.args().to_string());
    let mut fields = Fields(&mut line);
    // A visitor that never fails: writing into a String cannot.
    let _ = record.key_values().visit(&mut fields);
    line.push_str("}\n");
    line
}

/// Appends each key-value as `,"key":"value"` (values rendered with `Display`).
struct Fields<'a>(&'a mut String);

impl<'kvs> VisitSource<'kvs> for Fields<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: Value<'kvs>) -> Result<(), log::kv::Error> {
        let value = value.to_string();
        // An empty value means the event has no such thing (a client not subscribed has no
        // channel): the key is left out rather than written as "".
        if RESERVED.contains(&key.as_str()) || value.is_empty() {
            return Ok(());
        }
        self.0.push(',');
        push_json_str(self.0, key.as_str());
        self.0.push(':');
        push_json_str(self.0, &value);
        Ok(())
    }
}

/// Appends `s` as a JSON string literal: quotes, backslashes and control characters escaped
/// (RFC 8259 §7); everything else, non-ASCII included, as is.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// `t` as RFC 3339 in UTC with microseconds: `2026-12-04T17:45:58.123456Z`. Times before
/// 1970 (a clock set wrong) print as the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

/// The proleptic Gregorian (year, month, day) of a count of days since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days; eras are 400-year cycles of 146,097
/// days).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u64) -> String {
        rfc3339(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // `date -u -d @951782400`: the leap day of a year divisible by 400.
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_709_251_199, 999_999), "2024-02-29T23:59:59.999999Z");
        assert_eq!(at(4_102_444_800, 0), "2100-01-01T00:00:00.000000Z");
        // 2100 is not a leap year: the day after 28 February is 1 March.
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
        assert_eq!(at(1_796_406_358, 0), "2026-12-04T17:45:58.000000Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(5)),
            "1970-01-01T00:00:00.000000Z"
        );
    }

    #[test]
    fn civil_from_days_round_trips_every_day_for_800_years() {
        // Each day follows the previous one: same month and day + 1, or the first of the next.
        let mut prev = civil_from_days(0);
        for d in 1..800 * 366 {
            let cur = civil_from_days(d);
            let next_day = (prev.0, prev.1, prev.2 + 1);
            let next_month = if prev.1 == 12 {
                (prev.0 + 1, 1, 1)
            } else {
                (prev.0, prev.1 + 1, 1)
            };
            assert!(cur == next_day || cur == next_month, "{prev:?} -> {cur:?}");
            assert!(cur.2 <= 31 && (1..=12).contains(&cur.1), "{cur:?}");
            prev = cur;
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\te\u{1}f\u{7f}é");
        assert_eq!(s, r#""a\"b\\c\nd\te\u0001f\u007fé""#);
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\nd\te\u{1}f\u{7f}é");
    }

    #[test]
    fn json_line_has_the_fields_and_key_values() {
        let kvs: &[(&str, &str)] = &[
            ("topic", "t\"1"),
            ("channel", "c"),
            ("msg", "dup"),
            ("client", ""),
        ];
        let line = json_line(
            UNIX_EPOCH,
            &log::Record::builder()
                .args(format_args!("topic t\"1: hello\nworld"))
                .level(log::Level::Warn)
                .target("corq::x")
                .key_values(&kvs)
                .build(),
        );
        assert!(
            line.ends_with("}\n") && !line.trim_end().contains('\n'),
            "{line}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["ts"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["target"], "corq::x");
        assert_eq!(v["msg"], "topic t\"1: hello\nworld");
        assert_eq!(v["topic"], "t\"1");
        assert_eq!(v["channel"], "c");
        let n = v.as_object().unwrap().len();
        assert_eq!(
            n, 6,
            "the reserved `msg` and the empty `client` are dropped"
        );
    }
}
