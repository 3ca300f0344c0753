//! `/info` (reference §2.3) and `/config/:opt` (§2.6): values derived from the server's
//! [`Options`], with nsqd's names and units. Durations are nanosecond integers, as Go's
//! `time.Duration` marshals; corq keeps milliseconds internally.

use serde::Serialize;
use serde_json::Value;

use super::routes::{ApiError, INVALID_OPTION, INVALID_VALUE, INVALID_VALUE_SIZE};
use crate::config::Options;

/// Nanoseconds per millisecond.
const NS_PER_MS: i64 = 1_000_000;

/// The `/info` reply, keys in nsqd's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Info {
    /// Version string; nsqadmin parses it as semver.
    pub version: String,
    /// `--broadcast-address` (the hostname by default).
    pub broadcast_address: String,
    /// The OS hostname.
    pub hostname: String,
    /// The real listening HTTP port (`-1` for a unix socket).
    pub http_port: i64,
    /// The real listening TCP port.
    pub tcp_port: i64,
    /// Server start, Unix seconds.
    pub start_time: i64,
    /// `--max-heartbeat-interval`, ns.
    pub max_heartbeat_interval: i64,
    /// `--max-output-buffer-size`, bytes.
    pub max_output_buffer_size: i64,
    /// `--max-output-buffer-timeout`, ns.
    pub max_output_buffer_timeout: i64,
    /// `--max-deflate-level`.
    pub max_deflate_level: i64,
}

/// The runtime facts `/info` needs beyond the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InfoRuntime<'a> {
    /// The version to report.
    pub version: &'a str,
    /// The OS hostname.
    pub hostname: &'a str,
    /// The real HTTP port.
    pub http_port: i64,
    /// The real TCP port.
    pub tcp_port: i64,
    /// Start time, Unix seconds.
    pub start_time: i64,
}

impl Info {
    /// Builds `/info` from the options and the runtime facts.
    pub fn new(opts: &Options, rt: &InfoRuntime<'_>) -> Self {
        Info {
            version: rt.version.to_owned(),
            broadcast_address: broadcast_address(opts, rt.hostname),
            hostname: rt.hostname.to_owned(),
            http_port: rt.http_port,
            tcp_port: rt.tcp_port,
            start_time: rt.start_time,
            max_heartbeat_interval: ms_to_ns(opts.max_heartbeat_interval),
            max_output_buffer_size: i64::try_from(opts.max_output_buffer_size).unwrap_or(i64::MAX),
            max_output_buffer_timeout: ms_to_ns(opts.max_output_buffer_timeout),
            max_deflate_level: opts.max_deflate_level,
        }
    }
}

/// nsqd defaults `--broadcast-address` to the hostname; corq's empty default means the same.
fn broadcast_address(opts: &Options, hostname: &str) -> String {
    if opts.broadcast_address.is_empty() {
        hostname.to_owned()
    } else {
        opts.broadcast_address.clone()
    }
}

/// Milliseconds to Go `time.Duration` nanoseconds, saturating.
fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| ms.checked_mul(NS_PER_MS))
        .unwrap_or(i64::MAX)
}

/// nsqd's `log_level` integer: 1 debug, 2 info, 3 warn, 4 error, 5 fatal (corq's `trace`,
/// which nsqd lacks, reads as debug).
pub fn log_level_number(level: &str) -> Option<i64> {
    match level.to_ascii_lowercase().as_str() {
        "trace" | "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        "fatal" => Some(5),
        _ => None,
    }
}

/// `GET /config/:opt`: the current value of the option named `name` (the flag name with `-`
/// turned into `_`, or nsqd's cfg name), or `None` for 400 `INVALID_OPTION`. Only corq's
/// options exist; nsqd options corq does not have (e.g. `mem_queue_size`) are invalid here.
/// `lookupd` is the current `nsqlookupd_tcp_addresses` list.
pub fn config_value(
    opts: &Options,
    hostname: &str,
    lookupd: &[String],
    name: &str,
) -> Option<Value> {
    let ns = |ms: u64| Value::from(ms_to_ns(ms));
    let v = match name {
        "tcp_address" => Value::from(opts.tcp_address.to_string()),
        "http_address" => Value::from(opts.http_address.clone()),
        "broadcast_address" => Value::from(broadcast_address(opts, hostname)),
        "broadcast_tcp_port" => Value::from(opts.broadcast_tcp_port),
        "broadcast_http_port" => Value::from(opts.broadcast_http_port),
        "data_path" => Value::from(opts.data_path.display().to_string()),
        "nsqlookupd_tcp_addresses" => Value::from(lookupd.to_vec()),
        "max_msg_size" => Value::from(opts.max_msg_size),
        "max_body_size" => Value::from(opts.max_body_size),
        "msg_timeout" => ns(opts.msg_timeout),
        "max_msg_timeout" => ns(opts.max_msg_timeout),
        "max_req_timeout" => ns(opts.max_req_timeout),
        "max_rdy_count" => Value::from(opts.max_rdy_count),
        "max_heartbeat_interval" => ns(opts.max_heartbeat_interval),
        "max_output_buffer_size" => Value::from(opts.max_output_buffer_size),
        "max_output_buffer_timeout" => ns(opts.max_output_buffer_timeout),
        "min_output_buffer_timeout" => ns(opts.min_output_buffer_timeout),
        "output_buffer_timeout" => ns(opts.output_buffer_timeout),
        "max_bytes_per_file" => Value::from(opts.max_bytes_per_file),
        "sync_every" => Value::from(opts.sync_every),
        "sync_timeout" => ns(opts.sync_timeout),
        "max_channel_consumers" => Value::from(opts.max_channel_consumers),
        "log_level" => Value::from(log_level_number(&opts.log_level)?),
        "cpu" => opts.cpu.map_or(Value::Null, Value::from),
        _ => return None,
    };
    Some(v)
}

/// A change asked for by `PUT /config/:opt`; the caller applies it and answers with
/// [`config_value`] for the same name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// New `nsqlookupd_tcp_addresses` (a JSON `null` is an empty list).
    LookupdAddresses(Vec<String>),
    /// New `log_level`, lower-cased (`debug|info|warn|error|fatal`).
    LogLevel(String),
}

/// Parses a `PUT /config/:opt` body, in nsqd's check order.
///
/// # Errors
/// 413 `INVALID_VALUE` for an empty body or one above `max_msg_size`; 400 `INVALID_OPTION`
/// for any option but the two settable ones; 400 `INVALID_VALUE` when the value does not parse
/// (the log level is not trimmed: `debug\n` is invalid, as in nsqd).
pub fn config_put(name: &str, body: &[u8], max_msg_size: u64) -> Result<ConfigChange, ApiError> {
    if body.is_empty() || body.len() as u64 > max_msg_size {
        return Err(INVALID_VALUE_SIZE);
    }
    match name {
        "nsqlookupd_tcp_addresses" => serde_json::from_slice::<Option<Vec<String>>>(body)
            .map(|v| ConfigChange::LookupdAddresses(v.unwrap_or_default()))
            .map_err(|_| INVALID_VALUE),
        "log_level" => {
            let level = std::str::from_utf8(body).map_err(|_| INVALID_VALUE)?;
            let level = level.to_ascii_lowercase();
            match level.as_str() {
                "debug" | "info" | "warn" | "error" | "fatal" => Ok(ConfigChange::LogLevel(level)),
                _ => Err(INVALID_VALUE),
            }
        }
        _ => Err(INVALID_OPTION),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_matches_nsqd_shape() {
        let opts = Options {
            broadcast_address: "127.0.0.1".into(),
            ..Options::default()
        };
        let rt = InfoRuntime {
            version: "1.3.0",
            hostname: "vm",
            http_port: 14151,
            tcp_port: 14150,
            start_time: 1795567278,
        };
        let got = serde_json::to_string(&Info::new(&opts, &rt)).unwrap();
        let want = r#"{"version":"1.3.0","broadcast_address":"127.0.0.1","hostname":"vm","http_port":14151,"tcp_port":14150,"start_time":1795567278,"max_heartbeat_interval":60000000000,"max_output_buffer_size":65536,"max_output_buffer_timeout":30000000000,"max_deflate_level":6}"#;
        assert_eq!(got, want);
        let dflt = Info::new(&Options::default(), &rt);
        assert_eq!(dflt.broadcast_address, "vm", "empty means the hostname");
    }

    #[test]
    fn config_values() {
        let o = Options::default();
        let get = |n: &str| {
            config_value(&o, "vm", &["127.0.0.1:14160".to_owned()], n).map(|v| v.to_string())
        };
        assert_eq!(get("msg_timeout").as_deref(), Some("60000000000"));
        assert_eq!(get("max_rdy_count").as_deref(), Some("2500"));
        assert_eq!(get("log_level").as_deref(), Some("2"));
        assert_eq!(
            get("nsqlookupd_tcp_addresses").as_deref(),
            Some(r#"["127.0.0.1:14160"]"#)
        );
        assert_eq!(get("max_msg_size").as_deref(), Some("1048576"));
        assert_eq!(get("tcp_address").as_deref(), Some(r#""0.0.0.0:4150""#));
        assert_eq!(get("broadcast_address").as_deref(), Some(r#""vm""#));
        for bad in ["client_timeout", "node_id", "nope", "", "msg-timeout"] {
            assert_eq!(get(bad), None, "{bad}");
        }
    }

    #[test]
    fn log_levels() {
        for (s, n) in [
            ("debug", 1),
            ("INFO", 2),
            ("warn", 3),
            ("error", 4),
            ("fatal", 5),
            ("trace", 1),
        ] {
            assert_eq!(log_level_number(s), Some(n), "{s}");
        }
        assert_eq!(log_level_number("loud"), None);
    }

    #[test]
    fn config_put_order_and_values() {
        let m = 16;
        assert_eq!(
            config_put("nope", b"", m),
            Err(INVALID_VALUE_SIZE),
            "size first"
        );
        assert_eq!(
            config_put("log_level", &[b'a'; 17], m),
            Err(INVALID_VALUE_SIZE)
        );
        assert_eq!(config_put("msg_timeout", b"1s", m), Err(INVALID_OPTION));
        assert_eq!(
            config_put("log_level", b"DEBUG", m),
            Ok(ConfigChange::LogLevel("debug".into()))
        );
        assert_eq!(config_put("log_level", b"debug\n", m), Err(INVALID_VALUE));
        assert_eq!(config_put("log_level", b"trace", m), Err(INVALID_VALUE));
        assert_eq!(
            config_put("nsqlookupd_tcp_addresses", br#"["a:1","b:2"]"#, m),
            Ok(ConfigChange::LookupdAddresses(vec![
                "a:1".into(),
                "b:2".into()
            ]))
        );
        assert_eq!(
            config_put("nsqlookupd_tcp_addresses", b"null", m),
            Ok(ConfigChange::LookupdAddresses(vec![]))
        );
        assert_eq!(
            config_put("nsqlookupd_tcp_addresses", b"[1]", m),
            Err(INVALID_VALUE)
        );
        assert_eq!(
            config_put("nsqlookupd_tcp_addresses", b"{", m),
            Err(INVALID_VALUE)
        );
    }
}
