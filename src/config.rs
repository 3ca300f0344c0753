//! Every tunable of the server, with nsqd's flag names and defaults, in one place.
//!
//! [`Options`] is what a user sets (the `corqd` flags parse straight into it, and an embedding
//! program fills it in code); [`Options::validate`] checks it once and returns the immutable
//! [`Config`] the server runs with. Durations are kept in milliseconds, the unit of the timing
//! wheel; on the command line they take Go's duration syntax (`1m0s`, `250ms`, `1h`), as nsqd's do.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

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
    about = "corq: an NSQ-compatible message queue server on one thread"
)]
pub struct Options {
    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4150")]
    pub tcp_address: SocketAddr,
    /// <addr>:<port> to listen on for HTTP clients (empty disables the HTTP API)
    #[arg(long, default_value = "0.0.0.0:4151")]
    pub http_address: String,
    /// address that will be registered with lookupd and shown in /info [default: the hostname]
    #[arg(long, default_value = "", hide_default_value = true)]
    pub broadcast_address: String,
    /// TCP port that will be registered with lookupd (defaults to the TCP port that this
    /// corqd is listening on)
    #[arg(long, default_value_t = 0)]
    pub broadcast_tcp_port: u16,
    /// HTTP port that will be registered with lookupd (defaults to the HTTP port that this
    /// corqd is listening on)
    #[arg(long, default_value_t = 0)]
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
    /// exit at start when a topic's log cannot be opened or the checkpoint fails its checksum
    /// (default: quarantine the topic, redeliver from the logs, and serve the rest)
    #[arg(long, default_value_t = false)]
    pub strict_recovery: bool,
    // TLS and compression (nsqd --tls-*, --snappy, --deflate, --https-address)
    /// path to certificate file (PEM)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_cert: String,
    /// path to key file (PEM)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_key: String,
    /// path to certificate authority file (PEM), the pool client certificates are verified against
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_root_ca_file: String,
    /// client certificate auth policy ('require' or 'require-verify'); forces --tls-required=true
    #[arg(long, default_value = "", hide_default_value = true)]
    pub tls_client_auth_policy: String,
    /// require TLS for client connections (true, false, tcp-https); a bare flag means true
    #[arg(long, default_value = "false", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = ["true", "false", "tcp-https"])]
    pub tls_required: String,
    /// minimum SSL/TLS version acceptable (tls1.0, tls1.1, tls1.2 or tls1.3; below tls1.2
    /// means tls1.2, the oldest rustls speaks)
    #[arg(long, default_value = "tls1.0")]
    pub tls_min_version: String,
    /// <addr>:<port> to listen on for HTTPS clients (only when --tls-cert and --tls-key are set;
    /// empty disables)
    #[arg(long, default_value = "0.0.0.0:4152")]
    pub https_address: String,
    /// enable snappy feature negotiation (client compression)
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub snappy: bool,
    /// enable deflate feature negotiation (client compression)
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub deflate: bool,
    /// max deflate compression level a client can negotiate (> values == better compression)
    #[arg(long, default_value_t = 6)]
    pub max_deflate_level: i64,
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
        let addr = self.http_address.parse().map_err(|_| {
            ConfigError(format!(
                "--http-address {:?}: expected <addr>:<port> or empty",
                self.http_address
            ))
        })?;
        Ok(Some(addr))
    }

    /// Checks every value against its range, naming the flag in the error.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first flag whose value is out of range.
    pub fn validate(self) -> Result<Config, ConfigError> {
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
        self.validate_tls()?;
        if parse_level(&self.log_level).is_none() {
            return bad(
                "log-level",
                "must be one of trace, debug, info, warn, error",
            );
        }
        Ok(Config { opts: self })
    }
}

impl Options {
    /// True when `--tls-cert` and `--tls-key` are both set: TLS can be negotiated.
    pub fn tls_configured(&self) -> bool {
        !self.tls_cert.is_empty() && !self.tls_key.is_empty()
    }

    /// nsqd's `TLSRequired` as /config reports it: 0 = false, 1 = tcp-https, 2 = true. A
    /// client auth policy forces 2, as in nsqd.
    pub fn tls_required_level(&self) -> u8 {
        match self.tls_required.as_str() {
            _ if !self.tls_client_auth_policy.is_empty() => 2,
            "true" => 2,
            "tcp-https" => 1,
            _ => 0,
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
        let addr = self.https_address.parse().map_err(|_| {
            ConfigError(format!(
                "--https-address {:?}: expected <addr>:<port> or empty",
                self.https_address
            ))
        })?;
        Ok(Some(addr))
    }

    /// nsqd's checks of the TLS and compression flags (the files themselves are read when the
    /// server starts).
    fn validate_tls(&self) -> Result<(), ConfigError> {
        let bad = |flag: &str, why: &str| Err(ConfigError(format!("--{flag} {why}")));
        if self.tls_required_level() > 0 && !self.tls_configured() {
            return Err(ConfigError(
                "cannot require TLS client connections without TLS key and cert".to_owned(),
            ));
        }
        if !matches!(
            self.tls_client_auth_policy.as_str(),
            "" | "require" | "require-verify"
        ) {
            return bad(
                "tls-client-auth-policy",
                "must be require or require-verify",
            );
        }
        if !matches!(
            self.tls_min_version.as_str(),
            "tls1.0" | "tls1.1" | "tls1.2" | "tls1.3"
        ) {
            // nsqd's help lists ssl3.0 but its code refuses it with this text.
            return Err(ConfigError(format!(
                "unknown tlsVersionOption {:?}",
                self.tls_min_version
            )));
        }
        if !(1..=9).contains(&self.max_deflate_level) {
            return Err(ConfigError("--max-deflate-level must be [1,9]".to_owned()));
        }
        self.https_socket_addr()?;
        Ok(())
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
