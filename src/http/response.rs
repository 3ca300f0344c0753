//! Response bytes, shaped as Go's `net/http` writes nsqd's replies (reference §2.1).
//!
//! Header order is Go's: first the handler's own headers sorted by name (`Allow`,
//! `Content-Type` when nsqd sets it, `Location`, `X-Nsq-Content-Type`), then the server's:
//! `Date`, `Content-Length`, a sniffed `Content-Type` (nsqd never sets one for its string
//! results; Go sniffs `text/plain; charset=utf-8`), and `Connection`. HTTP/1.0 requests get an
//! HTTP/1.0 status line and `Connection: keep-alive` when they asked for it; HTTP/1.1 ones get
//! `Connection: close` when the connection closes after the reply.
//!
//! One difference no client notices: Go switches to `Transfer-Encoding: chunked` for bodies
//! above its 2 KiB write buffer (a large `/stats`); corq always sends `Content-Length`.

use std::io::Write as _;

use serde::Serialize;

use super::parse::{HttpError, HttpVersion, Request};
use super::routes::{ApiError, RouteError};

/// The interim reply to `Expect: 100-continue` ([`super::parse::wants_continue`]).
pub const CONTINUE_100: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// `Content-Type` nsqd sets on JSON replies.
pub const JSON_TYPE: &str = "application/json; charset=utf-8";
/// What Go's sniffing gives nsqd's text replies (`OK`, the text `/stats`, health errors).
pub const TEXT_TYPE: &str = "text/plain; charset=utf-8";
/// The Prometheus text exposition format, version 0.0.4.
pub const PROMETHEUS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The header every V1 reply carries, errors included, in Go's canonical spelling.
const V1_HEADER: &str = "X-Nsq-Content-Type: nsq; version=1.0\r\n";

/// How the body's type is announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentType {
    /// No `Content-Type` (an empty body: nsqd's `nil` result).
    None,
    /// Set by the handler (sorted with the handler's headers), e.g. [`JSON_TYPE`].
    Set(&'static str),
    /// Sniffed by Go after `Content-Length`: always [`TEXT_TYPE`] for nsqd's text bodies.
    Sniffed,
}

/// The per-request facts a reply depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCtx {
    /// The request's version, echoed in the status line.
    pub version: HttpVersion,
    /// Whether the connection stays open after this reply.
    pub keep_alive: bool,
    /// The `Date` header value ([`http_date`]); `None` leaves the header out.
    pub date: Option<HttpDate>,
}

impl ReplyCtx {
    /// The context for replying to `req`, without a `Date` header.
    pub fn for_request(req: &Request<'_>) -> Self {
        ReplyCtx {
            version: req.version,
            keep_alive: req.keep_alive,
            date: None,
        }
    }
}

/// An IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT` (always 29 ASCII bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDate(pub [u8; 29]);

/// Formats `unix_secs` as an HTTP date (Go's `http.TimeFormat`, UTC).
pub fn http_date(unix_secs: i64) -> HttpDate {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let c = super::text::civil(unix_secs);
    let weekday = DAYS
        .get(usize::try_from(c.days.rem_euclid(7)).unwrap_or(0))
        .unwrap_or(&"Thu");
    let month = MONTHS
        .get(usize::try_from(c.month - 1).unwrap_or(0))
        .unwrap_or(&"Jan");
    let s = format!(
        "{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT",
        c.day, c.year, c.hour, c.minute, c.second
    );
    let mut out = [b' '; 29];
    for (o, b) in out.iter_mut().zip(s.bytes()) {
        *o = b;
    }
    HttpDate(out)
}

/// Go's `StatusText` for the codes corq sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        301 => "Moved Permanently",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Request Entity Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Appends one complete response to `out`.
///
/// `extra` holds more handler headers as `(name, value)` (corq uses `Allow` and `Location`);
/// they are sorted by name together with a [`ContentType::Set`] type, as Go sorts the
/// handler's header map. `v1_header` adds `X-Nsq-Content-Type` after them.
pub fn write_response(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    status: u16,
    content_type: ContentType,
    body: &[u8],
    v1_header: bool,
    extra: &[(&str, &str)],
) {
    let head = Head {
        status,
        content_type,
        v1_header,
        extra,
    };
    write_head(out, ctx, &head, body.len());
    out.extend_from_slice(body);
}

/// A response head's parts besides the request's context and the body length.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    /// The status code.
    pub status: u16,
    /// How the `Content-Type` is chosen.
    pub content_type: ContentType,
    /// Whether `X-Nsq-Content-Type: nsq; version=1.0` is sent.
    pub v1_header: bool,
    /// More handler headers, as for [`write_response`].
    pub extra: &'a [(&'a str, &'a str)],
}

/// Appends the head of a response whose body, `body_len` bytes, the caller writes after it
/// (as [`write_response`] does; peek renders its body first, see `serve.rs`).
pub fn write_head(out: &mut Vec<u8>, ctx: &ReplyCtx, head: &Head<'_>, body_len: usize) {
    let Head {
        status,
        content_type,
        v1_header,
        extra,
    } = *head;
    let version = match ctx.version {
        HttpVersion::Http10 => "HTTP/1.0",
        HttpVersion::Http11 => "HTTP/1.1",
    };
    // Writes into a Vec cannot fail.
    let _ = write!(out, "{version} {status} {}\r\n", reason(status));
    // Handler headers, sorted by name: Allow < Content-Type < Location < X-Nsq-Content-Type.
    let set_type = match content_type {
        ContentType::Set(t) => Some(t),
        _ => None,
    };
    let mut handler: Vec<(&str, &str)> = extra.to_vec();
    if let Some(t) = set_type {
        handler.push(("Content-Type", t));
    }
    handler.sort_by(|a, b| a.0.cmp(b.0));
    for (name, value) in handler {
        let _ = write!(out, "{name}: {value}\r\n");
    }
    if v1_header {
        out.extend_from_slice(V1_HEADER.as_bytes());
    }
    if let Some(date) = ctx.date {
        out.extend_from_slice(b"Date: ");
        out.extend_from_slice(&date.0);
        out.extend_from_slice(b"\r\n");
    }
    let _ = write!(out, "Content-Length: {body_len}\r\n");
    if content_type == ContentType::Sniffed && body_len > 0 {
        let _ = write!(out, "Content-Type: {TEXT_TYPE}\r\n");
    }
    match (ctx.keep_alive, ctx.version) {
        (true, HttpVersion::Http10) => out.extend_from_slice(b"Connection: keep-alive\r\n"),
        (false, HttpVersion::Http11) => out.extend_from_slice(b"Connection: close\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
}

/// A V1 string result, e.g. `OK` from /pub: 200, sniffed text type, X-NSQ header.
pub fn ok_text(out: &mut Vec<u8>, ctx: &ReplyCtx, text: &str) {
    write_response(
        out,
        ctx,
        200,
        ContentType::Sniffed,
        text.as_bytes(),
        true,
        &[],
    );
}

/// A V1 `nil` result (the topic and channel actions): 200, `Content-Length: 0`, no type.
pub fn ok_empty(out: &mut Vec<u8>, ctx: &ReplyCtx) {
    write_response(out, ctx, 200, ContentType::None, b"", true, &[]);
}

/// A V1 JSON result: 200, compact JSON, `application/json; charset=utf-8`.
pub fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, ctx: &ReplyCtx, value: &T) {
    match serde_json::to_vec(value) {
        Ok(body) => write_response(out, ctx, 200, ContentType::Set(JSON_TYPE), &body, true, &[]),
        // nsqd answers a marshalling failure with 500 and the error text; ours are plain
        // structs that cannot fail, so this is the same code without the Go error text.
        Err(_) => error_json(out, ctx, 500, "INTERNAL_ERROR"),
    }
}

/// A V1 error: `{"message":"CODE"}` with `status`.
pub fn error_json(out: &mut Vec<u8>, ctx: &ReplyCtx, status: u16, code: &str) {
    let body = error_body(code);
    write_response(
        out,
        ctx,
        status,
        ContentType::Set(JSON_TYPE),
        &body,
        true,
        &[],
    );
}

/// [`error_json`] for an [`ApiError`].
pub fn api_error(out: &mut Vec<u8>, ctx: &ReplyCtx, err: ApiError) {
    error_json(out, ctx, err.status, err.code);
}

/// `{"message":"CODE"}`, JSON-escaped as Go's encoder would (health texts may hold quotes).
pub fn error_body(code: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Msg<'a> {
        message: &'a str,
    }
    serde_json::to_vec(&Msg { message: code }).unwrap_or_default()
}

/// A *PlainText* reply (/ping): the raw text, sniffed type, **no** X-NSQ header.
pub fn plain(out: &mut Vec<u8>, ctx: &ReplyCtx, status: u16, text: &str) {
    write_response(
        out,
        ctx,
        status,
        ContentType::Sniffed,
        text.as_bytes(),
        false,
        &[],
    );
}

/// 405 `METHOD_NOT_ALLOWED` with httprouter's `Allow` header.
pub fn method_not_allowed(out: &mut Vec<u8>, ctx: &ReplyCtx, allow: &str) {
    let body = error_body("METHOD_NOT_ALLOWED");
    let ct = ContentType::Set(JSON_TYPE);
    write_response(out, ctx, 405, ct, &body, true, &[("Allow", allow)]);
}

/// httprouter's automatic `OPTIONS` reply: 200, `Allow`, empty body, no X-NSQ header.
pub fn options(out: &mut Vec<u8>, ctx: &ReplyCtx, allow: &str) {
    write_response(
        out,
        ctx,
        200,
        ContentType::None,
        b"",
        false,
        &[("Allow", allow)],
    );
}

/// Go's `http.Redirect` as httprouter calls it: `Location` is the repaired path plus `?query`;
/// a GET also gets a small HTML body (and HEAD its type), other methods an empty body.
pub fn redirect(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    method: &str,
    status: u16,
    path: &str,
    raw_query: &str,
) {
    let mut location = escape_path(path);
    if !raw_query.is_empty() {
        location.push('?');
        location.push_str(raw_query);
    }
    let (ct, body) = if method == "GET" {
        let html = format!(
            "<a href=\"{}\">{}</a>.\n\n",
            html_escape(&location),
            reason(status)
        );
        (ContentType::Set("text/html; charset=utf-8"), html)
    } else {
        (ContentType::None, String::new())
    };
    let extra = [("Location", location.as_str())];
    write_response(out, ctx, status, ct, body.as_bytes(), false, &extra);
}

/// The reply for a request the table does not route: 404 `NOT_FOUND`, 405 with `Allow`, or a
/// redirect (which needs the request's method and raw query).
pub fn route_error(
    out: &mut Vec<u8>,
    ctx: &ReplyCtx,
    method: &str,
    raw_query: &str,
    err: &RouteError,
) {
    match err {
        RouteError::NotFound => error_json(out, ctx, 404, "NOT_FOUND"),
        RouteError::MethodNotAllowed { allow } => method_not_allowed(out, ctx, allow),
        RouteError::Redirect { status, path } => {
            redirect(out, ctx, method, *status, path, raw_query)
        }
    }
}

/// The `/metrics` reply: 200 with the Prometheus content type, no X-NSQ header (it is corq's
/// own endpoint, not a V1 one).
pub fn metrics(out: &mut Vec<u8>, ctx: &ReplyCtx, body: &str) {
    let ct = ContentType::Set(PROMETHEUS_TYPE);
    write_response(out, ctx, 200, ct, body.as_bytes(), false, &[]);
}

/// The TLS-required reply (§2.1), hand-formatted by nsqd with spaces after the colons.
pub fn tls_required(out: &mut Vec<u8>, ctx: &ReplyCtx, https_port: u16) {
    let body = format!("{{\"message\": \"TLS_REQUIRED\", \"https_port\": {https_port}}}");
    let ct = ContentType::Set(JSON_TYPE);
    write_response(out, ctx, 403, ct, body.as_bytes(), true, &[]);
}

/// Writes the reply for a parse failure. For 400/431/501 these are Go's bytes from
/// `conn.serve` (no `Content-Length`, always `HTTP/1.1` and `Connection: close`); a 413 is
/// nsqd's V1 error with `Connection: close`. The caller closes the connection after writing.
pub fn write_http_error(out: &mut Vec<u8>, err: &HttpError, date: Option<HttpDate>) {
    const HEADERS: &str =
        "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n";
    let _ = match err {
        HttpError::BadRequest(None) => {
            write!(out, "HTTP/1.1 400 Bad Request{HEADERS}400 Bad Request")
        }
        HttpError::BadRequest(Some(why)) => write!(
            out,
            "HTTP/1.1 400 Bad Request: {why}{HEADERS}400 Bad Request: {why}"
        ),
        HttpError::HeadTooLarge => write!(
            out,
            "HTTP/1.1 431 Request Header Fields Too Large{HEADERS}431 Request Header Fields Too Large"
        ),
        HttpError::UnsupportedTransferEncoding => write!(
            out,
            "HTTP/1.1 501 Not Implemented{HEADERS}Unsupported transfer encoding"
        ),
        HttpError::BodyTooLarge { reply, version } => {
            let ctx = ReplyCtx {
                version: *version,
                keep_alive: false,
                date,
            };
            api_error(out, &ctx, *reply);
            Ok(())
        }
    };
}

/// Percent-encodes what Go's `EscapedPath` would (everything but unreserved and sub-delims).
fn escape_path(path: &str) -> String {
    let mut s = String::with_capacity(path.len());
    for b in path.bytes() {
        let keep = b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b);
        if keep {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Go's `htmlEscape` for the redirect body.
fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

#[cfg(test)]
mod tests;
