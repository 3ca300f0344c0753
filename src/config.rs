//! Every tunable of the server, with nsqd's flag names and defaults, in one place.
//!
//! [`Options`] is what a user sets (the `corqd` flags parse straight into it, and an embedding
//! program fills it in code); [`Options::validate`] checks it once and returns the immutable
//! [`Config`] the server runs with. Durations are kept in milliseconds, the unit of the timing
//! wheel; on the command line they take Go's duration syntax (`1m0s`, `250ms`, `1h`), as nsqd's do.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

mod load;
mod values;

pub use load::{load, normalize_args, LoadError, Loaded, Normalized};
pub use values::{parse_dial_addr, parse_go_bool, parse_listen_addr, TlsMinVersion, TlsRequired};

/// A configuration value that is out of range, named by its flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The server's options: nsqd's flags (same names, defaults and duration syntax) plus corq's own.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "corqd",
    version,
    about = "corq: an NSQ-compatible message queue server on one thread",
    // Go's flag package keeps the last of a repeated flag; so does corqd.
    args_override_self = true
)]
pub struct Options {
    /// <addr>:<port> to listen on for TCP clients (`:4150` means every interface)
    #[arg(long, default_value = "0.0.0.0:4150", value_parser = parse_listen_addr)]
    pub tcp_address: SocketAddr,
    /// <addr>:<port> to listen on for HTTP clients (empty disables the HTTP API)
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: String,
    /// address that will be registered with lookupd and shown in /info [default: the hostname]
    #[arg(long, default_value = "", hide_default_value = true)]
    pub broadcast_address: String,
    /// TCP port that will be registered with lookupd [default: the port --tcp-address bound]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub broadcast_tcp_port: u16,
    /// HTTP port that will be registered with lookupd [default: the port --http-address bound]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub broadcast_http_port: u16,
    /// lookupd TCP address (may be given multiple times, or comma-separated)
    #[arg(long, value_delimiter = ',')]
    pub lookupd_tcp_address: Vec<String>,
    /// path to store the topic logs and the checkpoint
    #[arg(long, default_value = ".")]
    pub data_path: PathBuf,
    /// maximum size in bytes of a single message
    #[arg(long, default_value_t = 1_048_576)]
    pub max_msg_size: u32,
    /// maximum size in bytes of a single command body (IDENTIFY, AUTH, MPUB)
    #[arg(long, default_value_t = 5_242_880)]
    pub max_body_size: u32,
    /// default in-flight timeout of a message
    #[arg(long, default_value = "1m0s", value_parser = parse_duration_ms)]
    pub msg_timeout: u64,
    /// maximum msg_timeout a client may ask for, and the cap on TOUCH extensions
    #[arg(long, default_value = "15m0s", value_parser = parse_duration_ms)]
    pub max_msg_timeout: u64,
    /// maximum requeue delay (REQ is clamped to it; DPUB above it is refused)
    #[arg(long, default_value = "1h0m0s", value_parser = parse_duration_ms)]
    pub max_req_timeout: u64,
    /// maximum RDY count for a client
    #[arg(long, default_value_t = 2500)]
    pub max_rdy_count: u64,
    /// maximum heartbeat interval a client may ask for
    #[arg(long, default_value = "1m0s", value_parser = parse_duration_ms)]
    pub max_heartbeat_interval: u64,
    /// maximum output buffer size a client may ask for
    #[arg(long, default_value_t = 65_536)]
    pub max_output_buffer_size: u64,
    /// maximum output buffer timeout a client may ask for
    #[arg(long, default_value = "30s", value_parser = parse_duration_ms)]
    pub max_output_buffer_timeout: u64,
    /// minimum output buffer timeout a client may ask for
    #[arg(long, default_value = "25ms", value_parser = parse_duration_ms)]
    pub min_output_buffer_timeout: u64,
    /// default output buffer timeout of a client
    #[arg(long, default_value = "250ms", value_parser = parse_duration_ms)]
    pub output_buffer_timeout: u64,
    /// size in bytes of one log segment file
    #[arg(long, default_value_t = 104_857_600)]
    pub max_bytes_per_file: u64,
    /// sync the log after this many records (1 = every publish waits for its sync)
    #[arg(long, default_value_t = 2500)]
    pub sync_every: u64,
    /// sync the log (and checkpoint the channels) at least this often
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub sync_timeout: u64,
    /// maximum consumers per channel (0 = unlimited)
    #[arg(long, default_value_t = 0)]
    pub max_channel_consumers: usize,
    /// message processing time percentiles to track, e.g. 1.0,0.99,0.95 (repeatable)
    #[arg(long, value_delimiter = ',', value_parser = parse_percentile)]
    pub e2e_processing_latency_percentile: Vec<f64>,
    /// the window over which e2e percentiles are computed
    #[arg(long, default_value = "10m0s", value_parser = parse_duration_ms)]
    pub e2e_processing_latency_window_time: u64,
    /// log level: debug, info, warn, error (or trace)
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// log line format: text, or json (one object per line with ts, level, target, msg, topic...)
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
    /// close a connection that has not sent the protocol magic within this time (corq's own)
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub handshake_timeout: u64,
    /// close an HTTP connection whose request head has not arrived this long after its first
    /// byte (corq's own; 0 = never)
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub http_header_timeout: u64,
    /// close an HTTP connection that has sent nothing for this long, between requests or in
    /// the middle of one (corq's own; 0 = never)
    #[arg(long, default_value = "1m0s", value_parser = parse_duration_ms)]
    pub http_idle_timeout: u64,
    /// pin the reactor thread to this CPU core (Linux) [default: not pinned]
    #[arg(long)]
    pub cpu: Option<usize>,
    // AUTH (nsqd --auth-http-*)
    /// <addr>:<port> or a full http:// URL of an auth server (may be given multiple times);
    /// enables AUTH. Not split on commas: nsqd's flag is not, and a URL may contain one.
    #[arg(long)]
    pub auth_http_address: Vec<String>,
    /// HTTP method of the auth request: get or post
    #[arg(long, default_value = "get")]
    pub auth_http_request_method: String,
    /// timeout for the connection of outgoing HTTP requests (the auth server)
    #[arg(long, default_value = "2s", value_parser = parse_duration_ms)]
    pub http_client_connect_timeout: u64,
    /// timeout for outgoing HTTP requests, connection included (the auth server)
    #[arg(long, default_value = "5s", value_parser = parse_duration_ms)]
    pub http_client_request_timeout: u64,
    /// deliveries after which a failing message goes to the topic's dead-letter topic
    /// `<topic>.dead` instead of being requeued (0 = unlimited; per topic/channel: /topic/config)
    #[arg(long, default_value_t = 0)]
    pub max_attempts: u64,
    /// base delay of a REQ 0 or a timeout: backoff × 2^(attempts−1), capped at --max-req-timeout
    /// (0 = off: requeue at once, as nsqd)
    #[arg(long, default_value = "0", value_parser = parse_duration_ms)]
    pub requeue_backoff: u64,
    /// a message older than this since its publish is not delivered (0 = off)
    #[arg(long, default_value = "0", value_parser = parse_duration_ms)]
    pub message_ttl: u64,
    /// a publish whose body equals one published to the topic within this window is answered
    /// OK and not appended (0 = off)
    #[arg(long, default_value = "0", value_parser = parse_duration_ms)]
    pub dedup_window: u64,
    /// a publish is refused (E_PUB_FAILED, HTTP 503) while the topic's slowest channel has this
    /// many bytes of log not yet read (0 = unbounded; per topic: /topic/config)
    #[arg(long, default_value_t = 0)]
    pub max_topic_bytes: u64,
    /// a publish is refused while the topic's largest backlog (of any channel, or the topic's
    /// own without channels) holds this many messages (0 = unbounded; per topic)
    #[arg(long, default_value_t = 0)]
    pub max_topic_depth: u64,
    /// keep consumed history at least this long after its publish (0 = drop a segment once
    /// every channel is past it; per topic)
    #[arg(long, default_value = "0", value_parser = parse_duration_ms)]
    pub retention_time: u64,
    /// keep at least this many bytes of the newest log, consumed or not (0 = off; per topic)
    #[arg(long, default_value_t = 0)]
    pub retention_bytes: u64,
    /// warn (and call the webhook) when a channel's oldest undelivered message is older than
    /// this (0 = off)
    #[arg(long, default_value = "500ms", value_parser = parse_duration_ms)]
    pub alert_latency: u64,
    /// http:// URL that receives one JSON POST per alert firing or resolved (empty = none)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub alert_webhook_url: String,
    /// exit at start when a topic's log cannot be opened or the checkpoint fails its checksum
    /// (default: quarantine the topic, redeliver from the logs, and serve the rest)
    #[arg(long, default_value_t = false)]
    pub strict_recovery: bool,

    // ---- Config file and logging (nsqd's `--config`, `--log-prefix`) ----
    /// path to an nsqd TOML config file (command-line flags override its values)
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// log message prefix (prepended to every text log line)
    #[arg(long, default_value = "[nsqd] ")]
    pub log_prefix: String,

    // ---- statsd (nsqd `statsd.go`; corq's `peers::statsd`) ----
    /// UDP <addr>:<port> of a statsd daemon for pushing stats (empty: off)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub statsd_address: String,
    /// prefix used for keys sent to statsd (%s for host replacement)
    #[arg(long, default_value = "nsq.%s")]
    pub statsd_prefix: String,
    /// duration between pushing to statsd
    #[arg(long, default_value = "1m0s", value_parser = parse_duration_ms)]
    pub statsd_interval: u64,
    /// toggle sending memory stats to statsd
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub statsd_mem_stats: bool,
    /// the size in bytes of statsd UDP packets
    #[arg(long, default_value_t = 508)]
    pub statsd_udp_packet_size: usize,
    /// don't send statsd stats for #ephemeral topics and channels
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub statsd_exclude_ephemeral: bool,

    // ---- TLS and HTTPS (accepted and validated here; the transport layer uses them) ----
    /// <addr>:<port> to listen on for HTTPS clients (used only with --tls-cert and --tls-key)
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: String,
    /// path to certificate file
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_cert: String,
    /// path to key file
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_key: String,
    /// path to certificate authority file
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_root_ca_file: String,
    /// client certificate auth policy ('require' or 'require-verify'); forces --tls-required
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_client_auth_policy: String,
    /// require TLS for client connections (true, false, tcp-https); bare means true
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_tls_required)]
    pub tls_required: TlsRequired,
    /// minimum TLS version acceptable ('tls1.0', 'tls1.1', 'tls1.2' or 'tls1.3')
    #[arg(long, default_value = "tls1.0", value_parser = values::parse_tls_min_version)]
    pub tls_min_version: TlsMinVersion,

    // ---- Compression (accepted and validated here; the transport layer uses them) ----
    /// enable snappy feature negotiation (client compression)
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub snappy: bool,
    /// enable deflate feature negotiation (client compression)
    #[arg(long, default_value = "true", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub deflate: bool,
    /// max deflate compression level a client can negotiate (> values == > CPU usage)
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: i64,

    // ---- nsqd flags corq accepts and ignores (logged at start; docs/operations.md) ----
    /// [ignored] unique part for message IDs in [0,1024) (corq's IDs need none)
    #[arg(long)]
    pub node_id: Option<i64>,
    /// [ignored] messages kept in memory per topic/channel (corq keeps all in its log)
    #[arg(long, default_value_t = 10_000)]
    pub mem_queue_size: i64,
    /// [ignored] nsqd's timeout-scan workers (corq's timing wheel needs none)
    #[arg(long, default_value_t = 4)]
    pub queue_scan_worker_pool_max: i64,
    /// [ignored] channels nsqd checks per scan cycle (corq's timing wheel needs none)
    #[arg(long, default_value_t = 20)]
    pub queue_scan_selection_count: i64,
    /// [ignored] topology region (an nsqd experiment)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub topology_region: String,
    /// [ignored] topology zone (an nsqd experiment)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub topology_zone: String,
    /// [ignored] nsqd experiments to enable (repeatable)
    #[arg(long, value_delimiter = ',')]
    pub enable_experiment: Vec<String>,
    /// [deprecated, no effect] use --log-level
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub verbose: bool,
    /// [deprecated, no effect] use --node-id
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = values::parse_go_bool)]
    pub worker_id: bool,
}

impl Default for Options {
    fn default() -> Self {
        // cannot fail because: no arguments means every field takes its declared default.
        Options::try_parse_from(["corqd"]).expect("the declared defaults parse")
    }
}

/// The validated configuration the server runs with. Build it with [`Options::validate`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The options as given, every value in range.
    pub opts: Options,
}

impl std::ops::Deref for Config {
    type Target = Options;
    fn deref(&self) -> &Options {
        &self.opts
    }
}

impl Options {
    /// Defaults, but listening on loopback ports the OS picks and keeping data in `data_path`:
    /// what an embedding program or a test usually wants.
    pub fn local(data_path: impl Into<PathBuf>) -> Options {
        Options {
            tcp_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_address: "127.0.0.1:0".to_owned(),
            data_path: data_path.into(),
            ..Options::default()
        }
    }

    /// The HTTP listen address, or `None` when `--http-address` is empty (HTTP disabled).
    ///
    /// # Errors
    /// When the value is not `<addr>:<port>`.
    pub fn http_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.http_address.is_empty() {
            return Ok(None);
        }
        let addr = parse_listen_addr(&self.http_address)
            .map_err(|e| ConfigError(format!("--http-address {e}")))?;
        Ok(Some(addr))
    }

    /// Checks every value against its range, naming the flag in the error.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first flag whose value is out of range.
    pub fn validate(mut self) -> Result<Config, ConfigError> {
        let bad = |flag: &str, why: &str| Err(ConfigError(format!("--{flag} {why}")));
        if self.max_msg_size == 0 {
            return bad("max-msg-size", "must be > 0");
        }
        if self.max_body_size < self.max_msg_size {
            return bad("max-body-size", "must be >= --max-msg-size");
        }
        if self.max_bytes_per_file < 64 * 1024 {
            return bad("max-bytes-per-file", "must be at least 65536");
        }
        if u64::from(self.max_msg_size) + 1024 > self.max_bytes_per_file {
            return bad(
                "max-bytes-per-file",
                "must hold at least one --max-msg-size message",
            );
        }
        if self.sync_every == 0 {
            return bad("sync-every", "must be >= 1");
        }
        if self.sync_timeout == 0 {
            return bad("sync-timeout", "must be > 0");
        }
        if self.msg_timeout == 0 || self.msg_timeout > self.max_msg_timeout {
            return bad("msg-timeout", "must be > 0 and <= --max-msg-timeout");
        }
        if self.max_rdy_count == 0 {
            return bad("max-rdy-count", "must be > 0");
        }
        if self.max_heartbeat_interval < 1000 {
            return bad("max-heartbeat-interval", "must be at least 1s");
        }
        if self.min_output_buffer_timeout > self.max_output_buffer_timeout {
            return bad(
                "min-output-buffer-timeout",
                "must be <= --max-output-buffer-timeout",
            );
        }
        self.check_settings()?;
        self.http_socket_addr()?;
        for a in &self.lookupd_tcp_address {
            let port = a.trim().rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return bad(
                    "lookupd-tcp-address",
                    &format!("{a:?}: expected <host>:<port>"),
                );
            }
        }
        for a in &self.auth_http_address {
            crate::auth::Endpoint::parse(a.trim())
                .map_err(|e| ConfigError(format!("--auth-http-address {a:?}: {e}")))?;
        }
        if parse_level(&self.log_level).is_none() {
            return bad(
                "log-level",
                "must be one of trace, debug, info, warn, error",
            );
        }
        values::check_nsqd_extras(&mut self)?;
        Ok(Config { opts: self })
    }
}

impl Options {
    /// The per-topic settings' server-wide defaults, checked as `/topic/config` checks them.
    fn check_settings(&self) -> Result<(), ConfigError> {
        use crate::broker::settings as s;
        let values = [
            ("max-attempts", self.max_attempts, s::MAX_ATTEMPTS),
            ("requeue-backoff", self.requeue_backoff, s::REQUEUE_BACKOFF),
            ("message-ttl", self.message_ttl, s::MESSAGE_TTL),
            ("dedup-window", self.dedup_window, s::DEDUP_WINDOW),
            ("max-topic-bytes", self.max_topic_bytes, s::MAX_TOPIC_BYTES),
            ("max-topic-depth", self.max_topic_depth, s::MAX_TOPIC_DEPTH),
            ("retention-time", self.retention_time, s::RETENTION_TIME),
            ("retention-bytes", self.retention_bytes, s::RETENTION_BYTES),
        ];
        if !self.alert_webhook_url.is_empty() {
            crate::auth::Endpoint::parse(&self.alert_webhook_url)
                .map_err(|why| ConfigError(format!("--alert-webhook-url: {why}")))?;
        }
        let cfg = Config { opts: self.clone() };
        for (flag, v, i) in values {
            let key = &s::KEYS[i];
            (key.check)(v, &cfg).map_err(|why| ConfigError(format!("--{flag} {why}")))?;
        }

        Ok(())
    }

    /// True when `--tls-cert` and `--tls-key` are both set: TLS can be negotiated.
    pub fn tls_configured(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }

    /// nsqd's `TLSRequired` as /config reports it: 0 = false, 1 = tcp-https, 2 = true. A
    /// client auth policy forces 2, as in nsqd.
    pub fn tls_required_level(&self) -> u8 {
        match self.tls_required {
            _ if !self.tls_client_auth_policy.is_empty() => 2,
            TlsRequired::Yes => 2,
            TlsRequired::TcpHttps => 1,
            TlsRequired::No => 0,
        }
    }

    /// The HTTPS listen address: `None` unless TLS is configured and `--https-address` is set.
    ///
    /// # Errors
    /// When the value is not `<addr>:<port>`.
    pub fn https_socket_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if !self.tls_configured() || self.https_address.is_empty() {
            return Ok(None);
        }
        let addr = values::parse_listen_addr(&self.https_address)
            .map_err(|e| ConfigError(format!("--https-address {e}")))?;
        Ok(Some(addr))
    }
}

/// Parses one e2e percentile: a number in (0, 1], nsqd's range.
///
/// # Errors
/// nsqd's message for a value out of range.
pub fn parse_percentile(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err(format!("invalid E2E processing latency percentile: {s}")),
    }
}

/// Maps nsqd's log level names (case-insensitive; `fatal` counts as `error`) to `log`'s.
pub fn parse_level(s: &str) -> Option<log::LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "trace" => Some(log::LevelFilter::Trace),
        "debug" => Some(log::LevelFilter::Debug),
        "info" => Some(log::LevelFilter::Info),
        "warn" | "warning" => Some(log::LevelFilter::Warn),
        "error" | "fatal" => Some(log::LevelFilter::Error),
        _ => None,
    }
}

/// Parses a Go duration (`1h0m0s`, `250ms`, `1.5s`, `300us`, `0`) into whole milliseconds,
/// rounding a sub-millisecond remainder up so a non-zero duration never becomes 0.
///
/// # Errors
/// A message naming the text when it is not a Go duration or does not fit in u64 ms.
pub fn parse_duration_ms(s: &str) -> Result<u64, String> {
    let err = || format!("invalid duration {s:?} (use Go syntax, e.g. 250ms, 2s, 1m0s, 1h)");
    if s == "0" {
        return Ok(0);
    }
    let mut rest = s.as_bytes();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total_ns: u128 = 0;
    while !rest.is_empty() {
        let num_len = rest
            .iter()
            .position(|b| !(b.is_ascii_digit() || *b == b'.'))
            .ok_or_else(err)?;
        let (num, tail) = rest.split_at(num_len);
        let unit_len = tail
            .iter()
            .position(|b| b.is_ascii_digit() || *b == b'.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_ns: u128 = match unit {
            b"ns" => 1,
            b"us" | b"\xC2\xB5s" => 1_000, // "µs"
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => return Err(err()),
        };
        let num = std::str::from_utf8(num).map_err(|_| err())?;
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || !frac.bytes().all(|d| d.is_ascii_digit()) {
            return Err(err());
        }
        let int: u128 = if int.is_empty() {
            0
        } else {
            int.parse().map_err(|_| err())?
        };
        let mut part = int.checked_mul(unit_ns).ok_or_else(err)?;
        // Fractions: each digit is worth a tenth of the previous one (Go allows "1.5h").
        let mut scale = unit_ns;
        for d in frac.bytes() {
            scale /= 10;
            part += u128::from(d - b'0') * scale;
        }
        total_ns = total_ns.checked_add(part).ok_or_else(err)?;
        rest = tail;
    }
    let ms = total_ns.div_ceil(1_000_000);
    u64::try_from(ms).map_err(|_| err())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration_ms("1m0s"), Ok(60_000));
        assert_eq!(parse_duration_ms("15m0s"), Ok(900_000));
        assert_eq!(parse_duration_ms("1h0m0s"), Ok(3_600_000));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert_eq!(parse_duration_ms("1.5s"), Ok(1500));
        assert_eq!(parse_duration_ms("300us"), Ok(1));
        assert_eq!(parse_duration_ms("0"), Ok(0));
        for bad in [
            "",
            "5",
            "1x",
            "ms",
            "-1s",
            "1..5s",
            "99999999999999999999999h",
        ] {
            assert!(
                parse_duration_ms(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn defaults_are_nsqds() {
        let o = Options::default();
        assert_eq!(o.tcp_address.to_string(), "0.0.0.0:4150");
        assert_eq!(o.msg_timeout, 60_000);
        assert_eq!(o.max_msg_timeout, 900_000);
        assert_eq!(o.max_req_timeout, 3_600_000);
        assert_eq!(o.max_rdy_count, 2500);
        assert_eq!(o.max_bytes_per_file, 100 << 20);
        assert_eq!(o.sync_every, 2500);
        assert_eq!(o.sync_timeout, 2000);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn help_shows_no_empty_or_doubled_defaults() {
        use clap::CommandFactory;
        let help = Options::command().render_long_help().to_string();
        assert!(!help.contains("[default: \"\"]"), "{help}");
        assert!(!help.contains("(defaults to"), "{help}");
        assert!(
            help.contains("shown in /info [default: the hostname]"),
            "{help}"
        );
        // Every flag's help states its default once, or has none to state.
        for flag in help.split("\n      --").skip(1) {
            assert!(flag.matches("[default:").count() <= 1, "{flag}");
        }
    }

    #[test]
    fn bad_values_name_their_flag() {
        let o = Options {
            max_rdy_count: 0,
            ..Options::default()
        };
        assert!(o.validate().unwrap_err().0.contains("--max-rdy-count"));
        let o = Options {
            log_level: "loud".into(),
            ..Options::default()
        };
        assert!(o.validate().unwrap_err().0.contains("--log-level"));
        let parsed =
            Options::try_parse_from(["corqd", "--e2e-processing-latency-percentile", "1.5"]);
        assert!(parsed.unwrap_err().to_string().contains("percentile"));
        let ok =
            Options::try_parse_from(["corqd", "--e2e-processing-latency-percentile", "1.0,0.99"]);
        assert_eq!(
            ok.unwrap().e2e_processing_latency_percentile,
            vec![1.0, 0.99]
        );
        let parsed = Options::try_parse_from(["corqd", "--msg-timeout", "soon"]);
        assert!(parsed.unwrap_err().to_string().contains("--msg-timeout"));
    }

    #[test]
    fn auth_addresses_repeat_and_are_not_split() {
        let args = ["corqd", "--auth-http-address", "a:1", "--auth-http-address"];
        let o = Options::try_parse_from(args.iter().chain(&["http://h/auth?x=1,2"])).unwrap();
        assert_eq!(o.auth_http_address, ["a:1", "http://h/auth?x=1,2"]);
        assert!(o.validate().is_ok());
    }

    #[test]
    fn lookupd_addresses_repeat_and_split_on_commas() {
        let args = ["corqd", "--lookupd-tcp-address", "a:4160,b:4160"];
        let o = Options::try_parse_from(args.iter().chain(&["--lookupd-tcp-address", "c:1"]));
        let o = o.unwrap();
        assert_eq!(o.lookupd_tcp_address, ["a:4160", "b:4160", "c:1"]);
        assert_eq!((o.broadcast_tcp_port, o.broadcast_http_port), (0, 0));
        assert!(o.validate().is_ok());
        let bad = Options::try_parse_from(["corqd", "--lookupd-tcp-address", "nohost"]).unwrap();
        assert!(bad
            .validate()
            .unwrap_err()
            .0
            .contains("--lookupd-tcp-address"));
    }
}
