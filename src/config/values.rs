//! Value syntax nsqd's flags have beyond plain numbers and Go durations: Go's bools, Go's listen
//! addresses (`:4150`, `localhost:4150`, `[::1]:4150`), `--tls-required` and `--tls-min-version`;
//! and the range checks of the flags nsqd added for TLS, compression, auth, statsd and message
//! IDs (its `nsqd.New` checks, with its error texts).

use std::net::{SocketAddr, ToSocketAddrs};

use super::{ConfigError, Options};

/// `--tls-required`: nsqd's `TLSNotRequired` (0), `TLSRequiredExceptHTTP` (1), `TLSRequired` (2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsRequired {
    /// Plain TCP and HTTP clients are served (the default).
    #[default]
    No,
    /// `tcp-https`: TCP clients must upgrade to TLS; plain HTTP is still served.
    TcpHttps,
    /// `true`: TCP clients must upgrade, and only HTTPS is served.
    Yes,
}

impl TlsRequired {
    /// The integer nsqd's `/config/tls_required` shows.
    pub fn go_value(self) -> i64 {
        match self {
            TlsRequired::No => 0,
            TlsRequired::TcpHttps => 1,
            TlsRequired::Yes => 2,
        }
    }
}

/// `--tls-min-version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMinVersion {
    /// `tls1.0` (nsqd's default).
    #[default]
    Tls10,
    /// `tls1.1`.
    Tls11,
    /// `tls1.2`.
    Tls12,
    /// `tls1.3`.
    Tls13,
}

impl TlsMinVersion {
    /// Go's `tls.VersionTLS1x` constant, which nsqd's `/config/tls_min_version` shows.
    pub fn go_value(self) -> i64 {
        match self {
            TlsMinVersion::Tls10 => 0x0301,
            TlsMinVersion::Tls11 => 0x0302,
            TlsMinVersion::Tls12 => 0x0303,
            TlsMinVersion::Tls13 => 0x0304,
        }
    }
}

/// Parses a bool as Go's `strconv.ParseBool` does (`1 t T TRUE true True`, `0 f F FALSE false
/// False`).
///
/// # Errors
/// Go's wording for anything else.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("parse error: invalid boolean value {s:?}")),
    }
}

/// `--tls-required`: `tcp-https` or a Go bool (case-insensitive, as nsqd lower-cases it).
///
/// # Errors
/// For anything else.
pub fn parse_tls_required(s: &str) -> Result<TlsRequired, String> {
    let lower = s.to_ascii_lowercase();
    if lower == "tcp-https" {
        return Ok(TlsRequired::TcpHttps);
    }
    match parse_go_bool(&lower) {
        Ok(true) => Ok(TlsRequired::Yes),
        Ok(false) => Ok(TlsRequired::No),
        Err(_) => Err(format!("invalid value {s:?}: use true, false or tcp-https")),
    }
}

/// `--tls-min-version`: `tls1.0` to `tls1.3`, case-insensitive; empty keeps the default, as in
/// nsqd (which also rejects `ssl3.0` although its help lists it).
///
/// # Errors
/// nsqd's `unknown tlsVersionOption` for anything else.
pub fn parse_tls_min_version(s: &str) -> Result<TlsMinVersion, String> {
    match s.to_ascii_lowercase().as_str() {
        "" | "tls1.0" => Ok(TlsMinVersion::Tls10),
        "tls1.1" => Ok(TlsMinVersion::Tls11),
        "tls1.2" => Ok(TlsMinVersion::Tls12),
        "tls1.3" => Ok(TlsMinVersion::Tls13),
        _ => Err(format!("unknown tlsVersionOption {s:?}")),
    }
}

/// Parses a listen address in Go's forms: `<ip>:<port>`, `[<ipv6>]:<port>`, `:<port>` (every
/// IPv4 interface) or `<host>:<port>` (resolved once, at start; an IPv4 answer is preferred, as
/// Go's `net.Listen` prefers one).
///
/// # Errors
/// A message naming the text when it has no port or the host does not resolve.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    parse_go_addr(s, [0, 0, 0, 0])
}

/// Parses an address to connect to, in the same forms as [`parse_listen_addr`]; `:<port>` is
/// this host (`127.0.0.1`), as Go's `net.Dial` reads it.
///
/// # Errors
/// As [`parse_listen_addr`].
pub fn parse_dial_addr(s: &str) -> Result<SocketAddr, String> {
    parse_go_addr(s, [127, 0, 0, 1])
}

fn parse_go_addr(s: &str, empty_host: [u8; 4]) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!(
            "{s:?}: expected <addr>:<port> (unix sockets are not supported)"
        ));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    if host.is_empty() {
        return Ok(SocketAddr::from((empty_host, port)));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("{s:?}: cannot resolve {host:?}: {e}"))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{s:?}: {host:?} has no address"))
}

/// The nsqd flags corq accepts but has no use for, with the reason it gives when one is set.
pub const IGNORED_FLAGS: &[(&str, &str)] = &[
    ("node-id", "corq's message IDs need no node number"),
    (
        "mem-queue-size",
        "corq keeps every message in its log; there is no memory queue",
    ),
    (
        "queue-scan-worker-pool-max",
        "corq's timing wheel fires timeouts; nothing scans",
    ),
    (
        "queue-scan-selection-count",
        "corq's timing wheel fires timeouts; nothing scans",
    ),
    (
        "topology-region",
        "the topology-aware-consumption experiment is not implemented",
    ),
    (
        "topology-zone",
        "the topology-aware-consumption experiment is not implemented",
    ),
    (
        "enable-experiment",
        "nsqd's experiments are not implemented",
    ),
    ("verbose", "deprecated in nsqd, no effect; use --log-level"),
    ("worker-id", "deprecated in nsqd, no effect"),
];

/// The checks nsqd makes on its TLS, compression, auth, statsd and ID flags at start, with its
/// texts where it has one; `--tls-client-auth-policy` forces `--tls-required` to true when it
/// was false, as in nsqd.
///
/// # Errors
/// The first flag whose value cannot be used.
pub fn check_nsqd_extras(o: &mut Options) -> Result<(), ConfigError> {
    let bad = |msg: String| Err(ConfigError(msg));
    // nsqd's default data path is empty, meaning the working directory.
    if o.data_path.as_os_str().is_empty() {
        o.data_path = ".".into();
    }
    // Go dials `:<port>` on this host; the lookupd and statsd peers need a host to resolve.
    for a in o
        .lookupd_tcp_address
        .iter_mut()
        .chain([&mut o.statsd_address])
    {
        if a.starts_with(':') {
            *a = format!("127.0.0.1{a}");
        }
    }
    if o.node_id.is_some_and(|id| !(0..1024).contains(&id)) {
        return bad("--node-id must be [0,1024)".into());
    }
    if !(1..=9).contains(&o.max_deflate_level) {
        return bad("--max-deflate-level must be [1,9]".into());
    }
    if o.auth_http_request_method != "get" && o.auth_http_request_method != "post" {
        return bad("--auth-http-request-method must be post or get".into());
    }
    if !matches!(
        o.tls_client_auth_policy.as_str(),
        "" | "require" | "require-verify"
    ) {
        return bad(format!(
            "--tls-client-auth-policy {:?}: must be require or require-verify",
            o.tls_client_auth_policy
        ));
    }
    if !o.tls_client_auth_policy.is_empty() && o.tls_required == TlsRequired::No {
        o.tls_required = TlsRequired::Yes;
    }
    if o.tls_cert.is_empty() != o.tls_key.is_empty() {
        return bad("--tls-cert and --tls-key must be given together".into());
    }
    if o.tls_required != TlsRequired::No && o.tls_cert.is_empty() {
        return bad("cannot require TLS client connections without TLS key and cert".into());
    }
    if !o.https_address.is_empty() {
        parse_listen_addr(&o.https_address)
            .map_err(|e| ConfigError(format!("--https-address {e}")))?;
    }
    check_statsd(o)
}

fn check_statsd(o: &Options) -> Result<(), ConfigError> {
    if o.statsd_address.is_empty() {
        return Ok(());
    }
    let has_port = o
        .statsd_address
        .rsplit_once(':')
        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !has_port {
        return Err(ConfigError(format!(
            "--statsd-address {:?}: expected <host>:<port>",
            o.statsd_address
        )));
    }
    if o.statsd_interval < 1000 {
        return Err(ConfigError("--statsd-interval must be at least 1s".into()));
    }
    if o.statsd_udp_packet_size < 64 || o.statsd_udp_packet_size > 65_507 {
        return Err(ConfigError(
            "--statsd-udp-packet-size must be in [64,65507]".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_bools_and_tls_values() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse_go_bool(t), Ok(true), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse_go_bool(f), Ok(false), "{f}");
        }
        assert!(parse_go_bool("yes").is_err());
        assert_eq!(parse_tls_required("TCP-HTTPS"), Ok(TlsRequired::TcpHttps));
        assert_eq!(parse_tls_required("true").map(TlsRequired::go_value), Ok(2));
        assert_eq!(
            parse_tls_required("false").map(TlsRequired::go_value),
            Ok(0)
        );
        assert!(parse_tls_required("always").is_err());
        assert_eq!(
            parse_tls_min_version("").map(TlsMinVersion::go_value),
            Ok(769)
        );
        assert_eq!(parse_tls_min_version("TLS1.2"), Ok(TlsMinVersion::Tls12));
        assert_eq!(
            parse_tls_min_version("tls1.3").map(TlsMinVersion::go_value),
            Ok(772)
        );
        let e = parse_tls_min_version("ssl3.0").unwrap_err();
        assert!(e.contains("unknown tlsVersionOption"), "{e}");
    }

    #[test]
    fn go_listen_addresses() {
        assert_eq!(
            parse_listen_addr(":4150").unwrap().to_string(),
            "0.0.0.0:4150"
        );
        assert_eq!(
            parse_listen_addr("[::1]:4150").unwrap().to_string(),
            "[::1]:4150"
        );
        assert_eq!(
            parse_listen_addr("127.0.0.1:0").unwrap().to_string(),
            "127.0.0.1:0"
        );
        assert_eq!(
            parse_dial_addr(":4150").unwrap().to_string(),
            "127.0.0.1:4150"
        );
        let local = parse_listen_addr("localhost:4150").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 4150, "{local}");
        for bad in [
            "4150",
            "/tmp/nsqd.sock",
            "host:",
            ":port",
            "[::1]",
            ":99999",
        ] {
            assert!(parse_listen_addr(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn nsqd_start_checks_use_nsqds_texts() {
        let check = |f: &dyn Fn(&mut Options)| {
            let mut o = Options::default();
            f(&mut o);
            check_nsqd_extras(&mut o).map(|()| o).map_err(|e| e.0)
        };
        assert!(check(&|_| {}).is_ok());
        let cwd = check(&|o| o.data_path = "".into()).unwrap();
        assert_eq!(
            cwd.data_path,
            std::path::Path::new("."),
            "nsqd's empty data path"
        );
        let err = |f: &dyn Fn(&mut Options)| check(f).unwrap_err();
        assert_eq!(
            err(&|o| o.node_id = Some(1024)),
            "--node-id must be [0,1024)"
        );
        assert_eq!(
            err(&|o| o.max_deflate_level = 0),
            "--max-deflate-level must be [1,9]"
        );
        assert_eq!(
            err(&|o| o.auth_http_request_method = "put".into()),
            "--auth-http-request-method must be post or get"
        );
        assert_eq!(
            err(&|o| o.tls_required = TlsRequired::TcpHttps),
            "cannot require TLS client connections without TLS key and cert"
        );
        assert!(err(&|o| o.tls_cert = "c.pem".into()).contains("--tls-key"));
        assert!(err(&|o| o.tls_client_auth_policy = "maybe".into()).contains("require-verify"));
        assert!(err(&|o| o.statsd_address = "nohost".into()).contains("--statsd-address"));
        let local = check(&|o| {
            o.statsd_address = ":8125".into();
            o.lookupd_tcp_address = vec![":4160".into(), "h:1".into()];
        })
        .unwrap();
        assert_eq!(
            local.statsd_address, "127.0.0.1:8125",
            "Go dials :port on this host"
        );
        assert_eq!(local.lookupd_tcp_address, ["127.0.0.1:4160", "h:1"]);
        assert!(err(&|o| {
            o.statsd_address = "127.0.0.1:8125".into();
            o.statsd_interval = 0;
        })
        .contains("--statsd-interval"));
        let forced = check(&|o| {
            o.tls_cert = "c.pem".into();
            o.tls_key = "k.pem".into();
            o.tls_client_auth_policy = "require".into();
        });
        assert_eq!(
            forced.unwrap().tls_required,
            TlsRequired::Yes,
            "as nsqd.New does"
        );
    }
}
