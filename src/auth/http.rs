//! One blocking request to an auth server, for the helper threads only (never the reactor).
//!
//! nsqd's Go client has a connect timeout (`--http-client-connect-timeout`) and an overall
//! request timeout (`--http-client-request-timeout`, connection included); so does this. The
//! reply is bounded: a head of at most [`MAX_HEAD`] bytes and a body of at most the caller's
//! limit (`--max-body-size`), whatever the server declares or sends. Only a `200` is accepted;
//! redirects are not followed.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::endpoint::Endpoint;

/// The largest reply head accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers parsed in a reply head.
const MAX_HEADERS: usize = 64;

/// The two timeouts of one request.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Connecting to one address.
    pub connect: Duration,
    /// Everything, connecting included.
    pub request: Duration,
}

/// Sends `request` to `ep` and returns the body of its `200` reply.
///
/// # Errors
/// A text saying what failed (connect, timeout, status, size), for the log.
pub fn round_trip(
    ep: &Endpoint,
    request: &[u8],
    t: Timeouts,
    max_body: usize,
) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + t.request;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| "request timeout".to_owned())
    };
    let addrs = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| format!("resolve {}: {e}", ep.host))?;
    let mut last = format!("{}: no address", ep.host);
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, t.connect.min(remaining()?)) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = format!("connect {a}: {e}"),
        }
    }
    let mut s = stream.ok_or(last)?;
    s.set_write_timeout(Some(remaining()?))
        .and_then(|()| s.write_all(request))
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(reply) = parse_reply(&raw, false, max_body)? {
            return reply;
        }
        s.set_read_timeout(Some(remaining()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    parse_reply(&raw, true, max_body)?.unwrap_or_else(|| Err("reply cut short".into()))
}

/// Parses what was read so far. `Ok(None)`: need more (not at EOF); `Ok(Some(Ok(body)))`: a
/// complete `200`; `Ok(Some(Err))` or `Err`: the request failed. Checks every size against
/// its bound before waiting for more.
fn parse_reply(
    raw: &[u8],
    eof: bool,
    max_body: usize,
) -> Result<Option<Result<Vec<u8>, String>>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if raw.len() > MAX_HEAD => {
            return Err("reply head too long".into())
        }
        Ok(httparse::Status::Partial) if eof => return Err("reply cut short".into()),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad reply: {e}")),
    };
    let mut length = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err("a Transfer-Encoding reply to an HTTP/1.0 request".into());
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).unwrap_or("").trim();
            length = Some(v.parse::<usize>().map_err(|_| "bad Content-Length")?);
        }
    }
    let body = raw.get(head_len..).unwrap_or_default();
    if length.unwrap_or(body.len()) > max_body || body.len() > max_body {
        return Err(format!("reply body over {max_body} bytes"));
    }
    let body = match length {
        Some(n) => match body.get(..n) {
            Some(b) => b,
            None if eof => return Err("reply cut short".into()),
            None => return Ok(None),
        },
        None if eof => body,
        None => return Ok(None),
    };
    let code = resp.code.unwrap_or(0);
    if code != 200 {
        let shown = String::from_utf8_lossy(body.get(..200).unwrap_or(body));
        return Ok(Some(Err(format!("got response {code} {shown:?}"))));
    }
    Ok(Some(Ok(body.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_reply(ok, false, 10).unwrap().unwrap().unwrap(), b"{}");
        // Until Content-Length bytes are there, wait; at EOF, fail.
        let short = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n{}";
        assert!(parse_reply(short, false, 10).unwrap().is_none());
        assert!(parse_reply(short, true, 10).is_err());
        // Without a length the body ends at EOF.
        let open = b"HTTP/1.0 200 OK\r\n\r\n{\"ttl\":1}";
        assert!(parse_reply(open, false, 100).unwrap().is_none());
        assert_eq!(
            parse_reply(open, true, 100).unwrap().unwrap().unwrap(),
            b"{\"ttl\":1}"
        );
        // Bounds: a declared or an actual body over the limit, a head that never ends.
        assert!(parse_reply(b"HTTP/1.0 200 OK\r\nContent-Length: 11\r\n\r\n", false, 10).is_err());
        assert!(parse_reply(open, false, 3).is_err());
        let endless = [b'a'; MAX_HEAD + 1];
        assert!(parse_reply(
            &[b"HTTP/1.0 200 OK\r\nX: ", &endless[..]].concat(),
            false,
            10
        )
        .is_err());
        // A non-200 is a failed request; garbage is too.
        let denied = b"HTTP/1.0 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope";
        assert!(parse_reply(denied, false, 10).unwrap().unwrap().is_err());
        assert!(parse_reply(b"garbage\r\n\r\n", false, 10).is_err());
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n";
        assert!(parse_reply(chunked, false, 10).is_err());
    }
}
