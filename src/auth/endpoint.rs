//! `--auth-http-address` values and the request nsqd sends to them, byte for byte where it
//! matters to an auth server (pure: no I/O).
//!
//! An address is `host:port`, meaning `http://host:port/auth`, or a full URL when it contains
//! `://`, used as given (its path is not changed). The request carries four parameters, keys
//! sorted as Go's `url.Values.Encode` sorts them:
//!
//! ```text
//! GET  <path>?common_name=<cn>&remote_ip=<ip>&secret=<secret>&tls=<true|false> HTTP/1.0
//! POST <path> HTTP/1.0   Content-Type: application/json
//!      {"common_name":["<cn>"],"remote_ip":["<ip>"],"secret":["<secret>"],"tls":["false"]}
//! ```
//!
//! with `Accept: application/vnd.nsq; version=1.0` (nsqd's header) and `Host`. The request is
//! HTTP/1.0 so the reply can never be chunked: it ends at its `Content-Length` or when the
//! server closes (nsqd's Go client speaks HTTP/1.1; auth servers answer both).
//! `https://` is refused when the flags are checked: corqd has no HTTPS client yet.

/// `--auth-http-request-method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// The parameters in the query string (nsqd's default).
    Get,
    /// The parameters as JSON in the body (nsqd master, #1487).
    Post,
}

impl Method {
    /// From the flag's value (`get` or `post`; anything else was refused by validation).
    pub fn from_flag(s: &str) -> Method {
        if s == "post" {
            Method::Post
        } else {
            Method::Get
        }
    }
}

/// One auth server, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP to connect to (no brackets).
    pub host: String,
    /// TCP port (80 when the URL names none).
    pub port: u16,
    /// The `Host` header: the URL's authority as written.
    pub authority: String,
    /// Path (and query, if the URL had one) of the request target.
    pub target: String,
}

/// What the auth server is told about the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthParams {
    /// The client's IP (`remote_ip`).
    pub remote_ip: String,
    /// Whether the connection is TLS (`tls`).
    pub tls: bool,
    /// The TLS peer certificate's common name, or empty (`common_name`).
    pub common_name: String,
    /// The AUTH body (`secret`).
    pub secret: Vec<u8>,
}

impl Endpoint {
    /// Parses an `--auth-http-address` value.
    ///
    /// # Errors
    /// A scheme other than `http`, user info, a fragment, or a bad host or port.
    pub fn parse(addr: &str) -> Result<Endpoint, String> {
        let (authority, target) = match addr.split_once("://") {
            None => (addr, "/auth".to_owned()),
            Some((scheme, rest)) => {
                if scheme.eq_ignore_ascii_case("https") {
                    return Err("https auth servers are not supported yet (use http)".into());
                }
                if !scheme.eq_ignore_ascii_case("http") {
                    return Err(format!("unsupported scheme {scheme:?}"));
                }
                if rest.contains('#') {
                    return Err("a URL fragment is not supported".into());
                }
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, path) = rest.split_at(end);
                let target = match path {
                    "" => "/".to_owned(),
                    p if p.starts_with('?') => format!("/{p}"),
                    p => p.to_owned(),
                };
                (authority, target)
            }
        };
        if authority.contains('@') {
            return Err("user info in the URL is not supported".into());
        }
        let (host, port) = split_host_port(authority)?;
        if host.is_empty() {
            return Err("no host".into());
        }
        Ok(Endpoint {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            target,
        })
    }

    /// The full request: head and (for POST) body.
    pub fn request(&self, method: Method, p: &AuthParams) -> Vec<u8> {
        let tls = if p.tls { "true" } else { "false" };
        let head = |verb: &str, target: &str| {
            format!(
                "{verb} {target} HTTP/1.0\r\nHost: {}\r\nUser-Agent: corqd/{}\r\n\
                 Accept: application/vnd.nsq; version=1.0\r\n",
                self.authority,
                crate::VERSION
            )
        };
        match method {
            Method::Get => {
                let mut q = String::from("common_name=");
                query_escape(&mut q, p.common_name.as_bytes());
                q.push_str("&remote_ip=");
                query_escape(&mut q, p.remote_ip.as_bytes());
                q.push_str("&secret=");
                query_escape(&mut q, &p.secret);
                q.push_str("&tls=");
                q.push_str(tls);
                // nsqd: fmt.Sprintf("%s?%s", endpoint, query), whatever the URL already had.
                let mut req = head("GET", &format!("{}?{q}", self.target));
                req.push_str("\r\n");
                req.into_bytes()
            }
            Method::Post => {
                let mut body = String::from("{\"common_name\":[");
                push_go_json_string(&mut body, p.common_name.as_bytes());
                body.push_str("],\"remote_ip\":[");
                push_go_json_string(&mut body, p.remote_ip.as_bytes());
                body.push_str("],\"secret\":[");
                push_go_json_string(&mut body, &p.secret);
                body.push_str(&format!("],\"tls\":[\"{tls}\"]}}"));
                let mut req = head("POST", &self.target);
                req.push_str(&format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                ));
                req.into_bytes()
            }
        }
    }
}

/// `host:port`, `[v6]:port`, or a host alone (port 80).
fn split_host_port(authority: &str) -> Result<(&str, u16), String> {
    let bad_port = |p: &str| format!("bad port {p:?}");
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in host")?;
        return match after {
            "" => Ok((host, 80)),
            a => {
                let p = a.strip_prefix(':').ok_or_else(|| bad_port(a))?;
                Ok((host, p.parse().map_err(|_| bad_port(p))?))
            }
        };
    }
    match authority.rsplit_once(':') {
        None => Ok((authority, 80)),
        Some((h, p)) if !h.contains(':') => Ok((h, p.parse().map_err(|_| bad_port(p))?)),
        Some(_) => Err("an IPv6 host must be in brackets".into()),
    }
}

/// Go's `url.QueryEscape`: unreserved bytes as they are, space as `+`, the rest `%XX`.
fn query_escape(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// A JSON string as Go's `encoding/json` writes it: `<`, `>`, `&`, U+2028 and U+2029 escaped,
/// control characters as `\n`, `\r`, `\t` or `\u00XX`, invalid UTF-8 as U+FFFD.
pub(crate) fn push_go_json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for c in String::from_utf8_lossy(bytes).chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> AuthParams {
        AuthParams {
            remote_ip: "127.0.0.1".into(),
            tls: false,
            common_name: String::new(),
            secret: b"good".to_vec(),
        }
    }

    #[test]
    fn address_forms() {
        let e = Endpoint::parse("127.0.0.1:4181").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("127.0.0.1", 4181, "/auth")
        );
        let e = Endpoint::parse("http://auth.local:8080/v1/check").unwrap();
        assert_eq!(e.authority, "auth.local:8080");
        assert_eq!((e.port, e.target.as_str()), (8080, "/v1/check"));
        let e = Endpoint::parse("http://[::1]/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.target.as_str()),
            ("::1", 80, "/")
        );
        let e = Endpoint::parse("HTTP://h?x=1").unwrap();
        assert_eq!(e.target, "/?x=1");
        assert_eq!(Endpoint::parse("h").unwrap().port, 80);
        for bad in [
            "https://h/auth",
            "ftp://h",
            "h:port",
            "h:99999",
            "http://u:p@h/",
            ":4181",
            "::1:80",
            "http://h/#f",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn get_request_is_nsqds() {
        let e = Endpoint::parse("127.0.0.1:4181").unwrap();
        let mut p = params();
        p.secret = b"a b&c/\xff".to_vec();
        let req = String::from_utf8(e.request(Method::Get, &p)).unwrap();
        let first = req.lines().next().unwrap();
        assert_eq!(
            first,
            "GET /auth?common_name=&remote_ip=127.0.0.1&secret=a+b%26c%2F%FF&tls=false HTTP/1.0"
        );
        assert!(req.contains("\r\nHost: 127.0.0.1:4181\r\n"));
        assert!(req.contains("\r\nAccept: application/vnd.nsq; version=1.0\r\n"));
        assert!(req.ends_with("\r\n\r\n"));
    }

    #[test]
    fn post_request_is_nsqds() {
        let e = Endpoint::parse("http://h:1/a").unwrap();
        let mut p = params();
        p.tls = true;
        p.common_name = "cn<".into();
        let req = String::from_utf8(e.request(Method::Post, &p)).unwrap();
        let (head, body) = req.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("POST /a HTTP/1.0\r\n"));
        assert!(head.contains("\r\nContent-Type: application/json"));
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())));
        assert_eq!(
            body,
            r#"{"common_name":["cn\u003c"],"remote_ip":["127.0.0.1"],"secret":["good"],"tls":["true"]}"#
        );
    }
}
