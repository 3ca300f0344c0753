//! [`RequestReader`]: a connection's request parse, kept between reads so that each read
//! costs time in proportion to its new bytes (hostile-inputs §4: a chunked body used to be
//! re-parsed whole on every read). The parsing itself is [`super::parse`]'s.

use std::borrow::Cow;

use super::chunked::ChunkDecoder;
use super::parse::{build, chunk_error, framing, parse_head, Framing};
use super::{HttpError, HttpLimits, Request};

/// What a connection remembers between reads about the request it is receiving, so that a
/// read costs time in proportion to its new bytes, not to what is buffered:
/// - while the head is incomplete, `httparse` runs only when a line has ended (at most one run
///   per header line, each over at most `max_head_bytes`);
/// - once it is complete, its framing is kept: a `Content-Length` body is waited for by
///   length alone, and a chunked body is decoded as it arrives ([`ChunkDecoder`]) and its
///   encoded bytes are dropped from the buffer, so only the decoded body is held.
#[derive(Debug, Default)]
pub struct RequestReader {
    /// Bytes of the current request already searched for a line end.
    scanned: usize,
    /// The head's length and the body's framing, once the head is complete.
    body: Option<(usize, BodyProgress)>,
    /// The head asked for `100 Continue` (HTTP/1.1 `Expect: 100-continue`).
    expect_continue: bool,
}

/// A body being received.
#[derive(Debug)]
enum BodyProgress {
    /// The request ends this many bytes after its head.
    Length(usize),
    /// Chunked: decoded so far into `body`; the encoded bytes are gone from the buffer.
    Chunked {
        decoder: ChunkDecoder,
        body: Vec<u8>,
        too_big: HttpError,
    },
}

impl RequestReader {
    /// Whether the current request's head is still incomplete (no request started counts).
    pub fn in_head(&self) -> bool {
        self.body.is_none()
    }

    /// True when the head is complete, asked for `Expect: 100-continue` on HTTP/1.1, and its
    /// body has not fully arrived: the server then sends [`super::response::CONTINUE_100`]
    /// once (Go sends it when the handler first reads the body; curl waits a second for it
    /// before sending a large body).
    pub fn wants_continue(&self) -> bool {
        self.expect_continue && self.body.is_some()
    }

    /// Takes the bytes that arrived since the last call. The request starts at `start` in
    /// `buf`; chunk framing is removed from `buf` as it is decoded. Returns `Ok(None)` until the
    /// request is complete, then the request and the bytes of `buf` (from `start`) it used;
    /// the reader is then ready for the next request.
    ///
    /// # Errors
    /// [`HttpError`], as [`super::parse_request`]; the connection closes after the reply.
    pub fn poll<'a>(
        &mut self,
        buf: &'a mut Vec<u8>,
        start: usize,
        limits: &HttpLimits,
    ) -> Result<Option<(Request<'a>, usize)>, HttpError> {
        let result = self.advance(buf, start, limits);
        if !matches!(result, Ok(None)) {
            *self = RequestReader::default();
        }
        let Some(done) = result? else {
            return Ok(None);
        };
        let buf: &'a [u8] = buf.get(start..).unwrap_or_default();
        match done {
            Complete::Length { head_len, end } => {
                let body = buf.get(head_len..end).unwrap_or_default();
                build(buf, limits, Cow::Borrowed(body), false).map(|r| Some((r, end)))
            }
            Complete::Chunked { head_len, body } => {
                build(buf, limits, Cow::Owned(body), true).map(|r| Some((r, head_len)))
            }
        }
    }

    fn advance(
        &mut self,
        buf: &mut Vec<u8>,
        start: usize,
        limits: &HttpLimits,
    ) -> Result<Option<Complete>, HttpError> {
        if self.body.is_none() && !self.take_head(buf.get(start..).unwrap_or_default(), limits)? {
            return Ok(None);
        }
        let Some((head_len, progress)) = &mut self.body else {
            return Ok(None); // cannot happen: take_head set it
        };
        let head_len = *head_len;
        let request_start = start.checked_add(head_len);
        match progress {
            BodyProgress::Length(len) => {
                let end = head_len
                    .checked_add(*len)
                    .ok_or(HttpError::BadRequest(None))?;
                let have = buf.len().saturating_sub(start);
                Ok((have >= end).then_some(Complete::Length { head_len, end }))
            }
            BodyProgress::Chunked {
                decoder,
                body,
                too_big,
            } => {
                let from = request_start.ok_or(HttpError::BadRequest(None))?;
                let encoded = buf.get(from..).unwrap_or_default();
                let used = decoder
                    .feed(encoded, body)
                    .map_err(|e| chunk_error(e, too_big.clone()))?;
                // Only the decoded body is kept: the framing is dropped as soon as it is read
                // (what follows, if the body ended here, is the next request).
                buf.drain(from..from + used);
                if !decoder.is_done() {
                    return Ok(None);
                }
                Ok(Some(Complete::Chunked {
                    head_len,
                    body: std::mem::take(body),
                }))
            }
        }
    }

    /// Looks for a complete head in the current request's bytes; true once it is there (its
    /// framing is then kept in `self.body`).
    fn take_head(&mut self, req: &[u8], limits: &HttpLimits) -> Result<bool, HttpError> {
        let first_look = self.scanned == 0;
        let line_ended = req
            .get(self.scanned..)
            .is_some_and(|new| new.contains(&b'\n'));
        self.scanned = req.len();
        // httparse only needs another run once a line has ended (or, once per request, to
        // refuse bytes that cannot start one, such as a TLS handshake).
        if !line_ended && !first_look {
            if req.len() > limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            return Ok(false);
        }
        let Some(head) = parse_head(req, limits)? else {
            return Ok(false);
        };
        let (framing, expect_continue) = framing(&head, limits)?;
        self.expect_continue = expect_continue;
        let progress = match framing {
            Framing::Length(len) => BodyProgress::Length(len),
            Framing::Chunked { decoder, too_big } => BodyProgress::Chunked {
                decoder,
                body: Vec::new(),
                too_big,
            },
        };
        self.body = Some((head.len, progress));
        Ok(true)
    }
}

/// A request whose bytes are all here.
#[derive(Debug)]
enum Complete {
    /// The body is `head_len..end` of the request's bytes.
    Length { head_len: usize, end: usize },
    /// The decoded chunked body; the request's bytes are now only its head.
    Chunked { head_len: usize, body: Vec<u8> },
}
