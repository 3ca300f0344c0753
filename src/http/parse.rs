//! HTTP/1.x request parsing: heads, framing, limits.
//!
//! [`parse_request`] looks at the bytes read so far and returns `Ok(None)` until one whole
//! request (head and body) is there, then the request and how many bytes it used, so pipelined
//! requests are taken one at a time. The server does not call it on every read: its
//! [`super::reader::RequestReader`] keeps the parse's place between reads and uses the pieces
//! here, so a read costs only its new bytes. Chunked bodies are decoded by
//! [`super::chunked::ChunkDecoder`], which also caps their *encoded* size. The head goes through `httparse`, with a size cap and a
//! header-count cap. The body's limit depends on the route ([`super::routes::body_limit`]) and
//! is checked as soon as the head is complete: a declared `Content-Length` above it fails at
//! once, before a single body byte is waited for or buffered (hostile-inputs §2.1, §2.16).
//!
//! Connection-level failures are what Go's `net/http` answers before nsqd's router runs:
//! 400 for a malformed request, 431 for an oversized head, 501 for a transfer coding other than
//! `chunked` ([`super::response::write_http_error`] writes Go's exact bytes).

use std::borrow::Cow;

use super::chunked::{ChunkDecoder, ChunkError};
use super::query::{self, InvalidQuery, Query};
use super::routes::{self, ApiError};
use crate::config::Options;

/// The most headers a request may carry (httparse needs a fixed array). Go has no count limit,
/// only a byte limit, so more is answered like an oversized head (431).
pub const MAX_HEADERS: usize = 64;

/// The default head size cap. Go allows 1 MiB; NSQ clients send a few hundred bytes.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 16 * 1024;

/// Size caps for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Number of header lines; values above [`MAX_HEADERS`] act as [`MAX_HEADERS`].
    pub max_headers: usize,
    /// `--max-msg-size`: /pub bodies and /config PUT values.
    pub max_msg_size: u64,
    /// `--max-body-size`: /mpub and every other body.
    pub max_body_size: u64,
}

impl HttpLimits {
    /// The server's limits with the default head caps.
    pub fn from_options(opts: &Options) -> Self {
        HttpLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_msg_size: u64::from(opts.max_msg_size),
            max_body_size: u64::from(opts.max_body_size),
        }
    }
}

/// The request's protocol version; the reply uses the same one (Go's `writeStatusLine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    /// HTTP/1.0: closes after the reply unless the request says `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless the request says `Connection: close`.
    Http11,
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// The method token, e.g. `POST`.
    pub method: &'a str,
    /// The unescaped path without the query, as httprouter matches it (Go's `URL.Path`).
    pub path: Cow<'a, str>,
    /// The raw query string after `?` (empty if none), for redirects.
    pub raw_query: &'a str,
    /// The parsed query, or the parse failure nsqd answers with 400 `INVALID_REQUEST` *when
    /// the handler gets to it* (/pub checks its body first).
    pub query: Result<Query, InvalidQuery>,
    /// The protocol version.
    pub version: HttpVersion,
    /// Whether the connection stays open after the reply (Go's `shouldClose`, inverted).
    pub keep_alive: bool,
    /// The declared `Content-Length` (`Some(0)` when none is declared: no body is read then; Go
    /// would read a closing HTTP/1.0 request's body to EOF, which no NSQ client sends), `None`
    /// when chunked.
    pub content_length: Option<u64>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The body: borrowed from the buffer for `Content-Length`, owned when de-chunked.
    pub body: Cow<'a, [u8]>,
}

/// Why a request cannot be served; every variant closes the connection after its reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// 400 from Go's server: bad request line, header, Content-Length, chunk framing or path
    /// escape. The text (if any) follows `400 Bad Request: ` as in Go's `badRequestError`.
    BadRequest(Option<&'static str>),
    /// 431: the head is larger than `max_head_bytes` or has more than `max_headers` lines.
    HeadTooLarge,
    /// 501: a `Transfer-Encoding` other than a single `chunked`.
    UnsupportedTransferEncoding,
    /// The body is (or declares itself) larger than the route allows: nsqd's 413 reply, with
    /// `Connection: close` since the rest of the body is never read.
    BodyTooLarge {
        /// The V1 error to send (`MSG_TOO_BIG`, `BODY_TOO_BIG` or `INVALID_VALUE`).
        reply: ApiError,
        /// The request's version, for the status line.
        version: HttpVersion,
    },
}

/// The head facts the body framing and keep-alive depend on.
#[derive(Debug, Default)]
struct HeadInfo<'a> {
    content_length: Option<&'a [u8]>,
    conflicting_lengths: bool,
    transfer_encodings: usize,
    te_value: &'a [u8],
    hosts: usize,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
}

/// Parses the first request in `buf`, all of it at once: the pure form of [`RequestReader`]
/// (tests and fuzzing use it; the server reads incrementally).
///
/// Returns `Ok(None)` when more bytes are needed, or the request and the number of bytes it
/// used (head plus body, chunk framing included).
///
/// # Errors
/// [`HttpError`]; the caller answers it ([`super::response::write_http_error`]) and closes.
pub fn parse_request<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
) -> Result<Option<(Request<'a>, usize)>, HttpError> {
    let Some(head) = parse_head(buf, limits)? else {
        return Ok(None);
    };
    let (framing, _) = framing(&head, limits)?;
    let rest = buf.get(head.len..).unwrap_or_default();
    match framing {
        Framing::Length(len) => match rest.get(..len) {
            Some(body) => {
                let used = head.len + body.len();
                build(buf, limits, Cow::Borrowed(body), false).map(|r| Some((r, used)))
            }
            None => Ok(None),
        },
        Framing::Chunked {
            mut decoder,
            too_big,
        } => {
            let mut body = Vec::new();
            let used = decoder
                .feed(rest, &mut body)
                .map_err(|e| chunk_error(e, too_big))?;
            if !decoder.is_done() {
                return Ok(None);
            }
            let used = head
                .len
                .checked_add(used)
                .ok_or(HttpError::BadRequest(None))?;
            build(buf, limits, Cow::Owned(body), true).map(|r| Some((r, used)))
        }
    }
}

/// How the body after a head is framed.
#[derive(Debug)]
pub(super) enum Framing {
    /// `Content-Length` (0 when absent).
    Length(usize),
    /// `Transfer-Encoding: chunked`, with the route's reply for a body over its limit.
    Chunked {
        decoder: ChunkDecoder,
        too_big: HttpError,
    },
}

/// The checks a complete head must pass before its body is waited for, and the body's framing:
/// chunked on HTTP/1.1 when a Transfer-Encoding is present (Go ignores it on HTTP/1.0, issue
/// 12785, and it overrides Content-Length), else Content-Length. A declared length over the
/// route's limit fails here, before a byte of it is buffered. Also returns whether the head
/// asks for `100 Continue`.
pub(super) fn framing(head: &Head<'_>, limits: &HttpLimits) -> Result<(Framing, bool), HttpError> {
    check_host(&head.info, head.version)?;
    let (path, _) = split_target(head.target)?;
    let (limit, reply) = routes::body_limit(head.method, &path, limits);
    let too_big = HttpError::BodyTooLarge {
        reply,
        version: head.version,
    };
    let http11 = head.version == HttpVersion::Http11;
    let framing = if http11 && head.info.transfer_encodings > 0 {
        check_te(&head.info)?;
        Framing::Chunked {
            decoder: ChunkDecoder::new(limit),
            too_big,
        }
    } else {
        let len = content_length(&head.info)?;
        if len > limit {
            return Err(too_big);
        }
        // Cannot fail on the platforms we build for: len <= limit, a u32 option.
        Framing::Length(usize::try_from(len).map_err(|_| too_big)?)
    };
    Ok((framing, http11 && head.info.expect_continue))
}

/// The request in `buf` (which starts with its complete head) with its framed `body`.
pub(super) fn build<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
    body: Cow<'a, [u8]>,
    chunked: bool,
) -> Result<Request<'a>, HttpError> {
    // cannot fail because: the head was parsed complete from these same bytes before.
    let Some(head) = parse_head(buf, limits)? else {
        return Err(HttpError::BadRequest(None));
    };
    let (path, raw_query) = split_target(head.target)?;
    Ok(Request {
        method: head.method,
        query: query::parse_query(raw_query),
        path,
        raw_query,
        version: head.version,
        keep_alive: keep_alive(&head.info, head.version),
        content_length: (!chunked).then_some(body.len() as u64),
        chunked,
        body,
    })
}

/// A chunked body's failure as the reply Go's server (400) or nsqd (413) gives.
pub(super) fn chunk_error(e: ChunkError, too_big: HttpError) -> HttpError {
    match e {
        ChunkError::Malformed => HttpError::BadRequest(None),
        ChunkError::TooBig => too_big,
    }
}

/// A complete request head.
#[derive(Debug)]
pub(super) struct Head<'a> {
    method: &'a str,
    target: &'a str,
    version: HttpVersion,
    /// Bytes of the request line and headers, final CRLF included.
    pub(super) len: usize,
    info: HeadInfo<'a>,
}

/// Runs `httparse` on `buf` with the head caps.
pub(super) fn parse_head<'a>(
    buf: &'a [u8],
    limits: &HttpLimits,
) -> Result<Option<Head<'a>>, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let n = limits.max_headers.min(MAX_HEADERS);
    let mut req = httparse::Request::new(headers.get_mut(..n).unwrap_or_default());
    // Only the first `max_head_bytes` can hold a head we accept. Parsing no further makes the
    // answer independent of how the bytes were split into reads: a malformed byte past the cap
    // is never looked at, so an oversized head is always 431 (as Go answers), never 400.
    let window = buf.get(..limits.max_head_bytes).unwrap_or(buf);
    let len = match req.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            return Err(HttpError::HeadTooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadTooLarge),
        Err(_) => return Err(HttpError::BadRequest(None)),
    };
    if len > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HttpError::BadRequest(None));
    };
    let version = if minor == 0 {
        HttpVersion::Http10
    } else {
        HttpVersion::Http11
    };
    let info = scan_headers(req.headers);
    Ok(Some(Head {
        method,
        target,
        version,
        len,
        info,
    }))
}

/// Go's `shouldClose`, inverted: HTTP/1.1 persists unless `close`; HTTP/1.0 closes unless
/// `keep-alive` (and no `close`).
fn keep_alive(info: &HeadInfo<'_>, version: HttpVersion) -> bool {
    match version {
        HttpVersion::Http11 => !info.conn_close,
        HttpVersion::Http10 => info.conn_keep_alive && !info.conn_close,
    }
}

fn scan_headers<'a>(headers: &[httparse::Header<'a>]) -> HeadInfo<'a> {
    let mut info = HeadInfo::default();
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let v = trim(h.value);
            match info.content_length {
                Some(first) if first != v => info.conflicting_lengths = true,
                _ => info.content_length = Some(v),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            info.transfer_encodings += 1;
            info.te_value = trim(h.value);
        } else if name.eq_ignore_ascii_case("expect") {
            info.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("host") {
            info.hosts += 1;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|&b| b == b',') {
                let t = trim(token);
                info.conn_close |= t.eq_ignore_ascii_case(b"close");
                info.conn_keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    info
}

/// Go's `readRequest`: HTTP/1.1 needs a Host header, and no request may have two.
fn check_host(info: &HeadInfo<'_>, version: HttpVersion) -> Result<(), HttpError> {
    if info.hosts > 1 {
        return Err(HttpError::BadRequest(Some("too many Host headers")));
    }
    if info.hosts == 0 && version == HttpVersion::Http11 {
        return Err(HttpError::BadRequest(Some("missing required Host header")));
    }
    Ok(())
}

/// Go accepts exactly one Transfer-Encoding header, and only `chunked`.
fn check_te(info: &HeadInfo<'_>) -> Result<(), HttpError> {
    if info.transfer_encodings != 1 || !info.te_value.eq_ignore_ascii_case(b"chunked") {
        return Err(HttpError::UnsupportedTransferEncoding);
    }
    Ok(())
}

/// Go's `parseContentLength`: digits only (no sign), at most 2^63-1; absent or empty means no
/// body; repeated headers must agree.
fn content_length(info: &HeadInfo<'_>) -> Result<u64, HttpError> {
    if info.conflicting_lengths {
        return Err(HttpError::BadRequest(None));
    }
    let Some(raw) = info.content_length else {
        return Ok(0);
    };
    if raw.is_empty() {
        return Ok(0);
    }
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadRequest(None));
    }
    std::str::from_utf8(raw)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or(HttpError::BadRequest(None))
}

/// Splits the request target into the unescaped path and the raw query. Origin form
/// (`/p?q`) and absolute form (`http://host/p?q`) are accepted, as by Go's `ParseRequestURI`;
/// `*` is kept as the path (only `OPTIONS *` routes anywhere).
fn split_target(target: &str) -> Result<(Cow<'_, str>, &str), HttpError> {
    let (before, raw_query) = target.split_once('?').unwrap_or((target, ""));
    let path = if before.starts_with('/') || before == "*" {
        before
    } else if let Some((_, rest)) = before.split_once("://") {
        rest.find('/').and_then(|i| rest.get(i..)).unwrap_or("")
    } else {
        return Err(HttpError::BadRequest(None));
    };
    let path = if path.contains('%') {
        let decoded = query::unescape(path, false).ok_or(HttpError::BadRequest(None))?;
        Cow::Owned(decoded)
    } else {
        Cow::Borrowed(path)
    };
    Ok((path, raw_query))
}

/// Trims spaces and tabs (Go's `textproto.TrimString`).
fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

#[cfg(test)]
mod tests;
