use super::*;
use crate::http::reader::RequestReader;
use crate::http::routes::{BODY_TOO_BIG, INVALID_VALUE_SIZE, MSG_TOO_BIG};

fn limits() -> HttpLimits {
    HttpLimits {
        max_head_bytes: 1024,
        max_headers: 8,
        max_msg_size: 16,
        max_body_size: 64,
    }
}

fn parse(buf: &[u8]) -> Result<Option<(Request<'_>, usize)>, HttpError> {
    parse_request(buf, &limits())
}

fn complete(buf: &[u8]) -> (Request<'_>, usize) {
    match parse(buf) {
        Ok(Some(r)) => r,
        other => panic!("{:?}: {other:?}", String::from_utf8_lossy(buf)),
    }
}

const PUB: &[u8] =
    b"POST /pub?topic=t%20x&defer=5 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn complete_request_with_body() {
    let (req, used) = complete(PUB);
    assert_eq!(used, PUB.len());
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/pub");
    assert_eq!(req.raw_query, "topic=t%20x&defer=5");
    let q = req.query.as_ref().unwrap();
    assert_eq!(q.get("topic"), Some("t x"));
    assert_eq!(q.get("defer"), Some("5"));
    assert_eq!(req.version, HttpVersion::Http11);
    assert!(req.keep_alive);
    assert_eq!(req.content_length, Some(5));
    assert!(!req.chunked);
    assert_eq!(&*req.body, b"hello");
    assert!(matches!(req.body, Cow::Borrowed(_)));
}

#[test]
fn incomplete_at_every_split_point() {
    for i in 0..PUB.len() {
        assert!(
            matches!(parse(&PUB[..i]), Ok(None)),
            "prefix of {i} bytes should be incomplete"
        );
    }
}

#[test]
fn pipelined_requests_come_one_at_a_time() {
    let get = b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut buf = PUB.to_vec();
    buf.extend_from_slice(get);
    buf.extend_from_slice(&get[..10]);
    let (req, used) = complete(&buf);
    assert_eq!((req.method, used), ("POST", PUB.len()));
    let rest = &buf[used..];
    let (req, used2) = complete(rest);
    assert_eq!((req.method, &*req.path, used2), ("GET", "/ping", get.len()));
    assert!(req.body.is_empty());
    assert!(matches!(parse(&rest[used2..]), Ok(None)));
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool, HttpVersion)] = &[
        (
            b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
            true,
            HttpVersion::Http11,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            false,
            HttpVersion::Http11,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Keep-Alive, CLOSE\r\n\r\n",
            false,
            HttpVersion::Http11,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
            true,
            HttpVersion::Http11,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false, HttpVersion::Http10),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            true,
            HttpVersion::Http10,
        ),
        (
            b"GET / HTTP/1.0\r\nConnection: x, Keep-Alive \r\n\r\n",
            true,
            HttpVersion::Http10,
        ),
        (
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
            false,
            HttpVersion::Http10,
        ),
    ];
    for (buf, keep, version) in cases {
        let (req, _) = complete(buf);
        assert_eq!(req.keep_alive, *keep, "{:?}", String::from_utf8_lossy(buf));
        assert_eq!(req.version, *version);
    }
}

#[test]
fn host_header_rules() {
    assert_eq!(
        parse(b"GET /ping HTTP/1.1\r\n\r\n"),
        Err(HttpError::BadRequest(Some("missing required Host header")))
    );
    assert_eq!(
        parse(b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        Err(HttpError::BadRequest(Some("too many Host headers")))
    );
    assert!(matches!(parse(b"GET /ping HTTP/1.0\r\n\r\n"), Ok(Some(_))));
}

#[test]
fn bad_request_lines() {
    for buf in [
        &b"GET\r\n\r\n"[..],
        b"GET /ping\r\n\r\n",
        b"GET /ping HTTP/2.0\r\nHost: h\r\n\r\n",
        b"GET /ping FOO/1.1\r\nHost: h\r\n\r\n",
        b"G(T /ping HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET ping HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /p%zz HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET /ping HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        assert_eq!(
            parse(buf),
            Err(HttpError::BadRequest(None)),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn targets() {
    let (req, _) = complete(b"GET http://h:4151/st%61ts?format=json HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.path, "/stats");
    assert_eq!(req.raw_query, "format=json");
    let (req, _) = complete(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.path, "*");
    let (req, _) = complete(b"GET /a+b HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(req.path, "/a+b", "+ is literal in a path");
    let (req, _) = complete(b"GET /stats?a=%zz HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(
        req.query.is_err(),
        "a bad query is the handler's INVALID_REQUEST"
    );
}

#[test]
fn content_length_rules() {
    let ok = |cl: &str| {
        let buf = format!("POST /mpub HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\nabc");
        parse(buf.as_bytes()).map(|r| r.map(|(req, used)| (req.content_length, used)))
    };
    assert_eq!(ok("3"), Ok(Some((Some(3), 54))));
    assert_eq!(ok("003"), Ok(Some((Some(3), 56))));
    assert_eq!(ok(" 3 "), Ok(Some((Some(3), 56))));
    for bad in ["-1", "+3", "3a", "0x3", "1 2", "99999999999999999999"] {
        assert_eq!(ok(bad), Err(HttpError::BadRequest(None)), "{bad}");
    }
    let dup_same =
        b"POST /mpub HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx";
    assert_eq!(complete(dup_same).1, dup_same.len());
    let dup_diff =
        b"POST /mpub HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy";
    assert_eq!(parse(dup_diff), Err(HttpError::BadRequest(None)));
    let none = b"POST /mpub HTTP/1.1\r\nHost: h\r\n\r\nGET";
    let (req, used) = complete(none);
    assert_eq!((req.content_length, used), (Some(0), none.len() - 3));
}

#[test]
fn oversized_body_fails_before_it_arrives() {
    let cases: &[(&str, &str, HttpError)] = &[
        ("POST /pub", "17", too_big(MSG_TOO_BIG)),
        ("POST /mpub", "65", too_big(BODY_TOO_BIG)),
        ("PUT /config/log_level", "17", too_big(INVALID_VALUE_SIZE)),
        ("POST /topic/create?topic=t", "65", too_big(BODY_TOO_BIG)),
        ("POST /nowhere", "65", too_big(BODY_TOO_BIG)),
        (
            "POST /pub",
            "18446744073709551615",
            HttpError::BadRequest(None),
        ),
    ];
    for (line, cl, want) in cases {
        // Only the head: no body byte has arrived.
        let head = format!("{line} HTTP/1.1\r\nHost: h\r\nContent-Length: {cl}\r\n\r\n");
        assert_eq!(parse(head.as_bytes()).as_ref(), Err(want), "{line} {cl}");
    }
    let at_limit = b"POST /pub HTTP/1.1\r\nHost: h\r\nContent-Length: 16\r\n\r\n";
    assert!(
        matches!(parse(at_limit), Ok(None)),
        "16 bytes is allowed: wait for them"
    );
}

fn too_big(reply: ApiError) -> HttpError {
    HttpError::BodyTooLarge {
        reply,
        version: HttpVersion::Http11,
    }
}

#[test]
fn head_caps() {
    let mut long = b"GET /ping HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 1100));
    assert_eq!(
        parse(&long),
        Err(HttpError::HeadTooLarge),
        "partial head over the cap"
    );
    long.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        parse(&long),
        Err(HttpError::HeadTooLarge),
        "complete head over the cap"
    );
    let mut many = b"GET /ping HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 0..7 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut nine = many.clone();
    many.extend_from_slice(b"\r\n");
    assert!(matches!(parse(&many), Ok(Some(_))), "8 headers fit");
    nine.extend_from_slice(b"X-8: v\r\n\r\n");
    assert_eq!(
        parse(&nine),
        Err(HttpError::HeadTooLarge),
        "9 headers do not"
    );
}

/// Found by the `http_request` fuzz target: a malformed byte past the head cap made the answer
/// depend on how the bytes arrived (431 if the first read stopped before it, 400 if not).
#[test]
fn oversized_head_is_431_however_it_is_split() {
    let mut head = b"GET /ping HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
    head.extend(std::iter::repeat_n(b'a', 1100));
    head.extend_from_slice(b"\x01\r\n\r\n"); // a control byte: invalid in a header value
    for k in [1025, 1100, head.len()] {
        assert_eq!(
            parse(&head[..k]),
            Err(HttpError::HeadTooLarge),
            "first {k} bytes"
        );
    }
}

const CHUNKED: &[u8] = b"POST /mpub?topic=t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n1 \r\n\n\r\n0\r\nTrailer-A: x\r\n\r\n";

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let (req, used) = complete(CHUNKED);
    assert_eq!(used, CHUNKED.len());
    assert!(req.chunked);
    assert_eq!(req.content_length, None);
    assert_eq!(&*req.body, b"hello\n");
    assert!(matches!(req.body, Cow::Owned(_)));
    for i in 0..CHUNKED.len() {
        assert!(matches!(parse(&CHUNKED[..i]), Ok(None)), "prefix {i}");
    }
    let plain_end = b"POST /mpub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\n\r\nNEXT";
    let (req, used) = complete(plain_end);
    assert_eq!(
        (&*req.body, used),
        (&b"0123456789"[..], plain_end.len() - 4)
    );
}

#[test]
fn chunked_overrides_content_length() {
    let buf = b"POST /mpub HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    let (req, used) = complete(buf);
    assert_eq!((&*req.body, used), (&b"x"[..], buf.len()));
}

#[test]
fn chunked_on_http10_is_ignored() {
    let buf =
        b"POST /mpub HTTP/1.0\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n1\r\n";
    let (req, _) = complete(buf);
    assert!(!req.chunked);
    assert_eq!(&*req.body, b"1\r\n");
}

#[test]
fn malformed_chunks() {
    let head = "POST /mpub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        "z\r\nx\r\n0\r\n\r\n",
        "\r\nx\r\n0\r\n\r\n",
        "-1\r\nx\r\n0\r\n\r\n",
        "1\r\nxy\r\n0\r\n\r\n",
        "1\r\nx\n0\r\n\r\n",
        "11111111111111111\r\n",
        "0\r\nnot a trailer\r\n\r\n",
    ] {
        let buf = format!("{head}{body}");
        assert_eq!(
            parse(buf.as_bytes()),
            Err(HttpError::BadRequest(None)),
            "{body:?}"
        );
    }
    let long_line = format!("{head}1;{}", "e".repeat(5000));
    assert_eq!(
        parse(long_line.as_bytes()),
        Err(HttpError::BadRequest(None))
    );
}

#[test]
fn chunked_size_limits() {
    let head = "POST /pub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    // A declared chunk over the limit fails before its data arrives.
    let buf = format!("{head}11\r\n");
    assert_eq!(parse(buf.as_bytes()), Err(too_big(MSG_TOO_BIG)));
    // So does a sum of small chunks.
    let buf = format!("{head}8\r\n01234567\r\n9\r\n");
    assert_eq!(parse(buf.as_bytes()), Err(too_big(MSG_TOO_BIG)));
    let buf = format!("{head}ffffffffffffffff\r\n");
    assert_eq!(parse(buf.as_bytes()), Err(too_big(MSG_TOO_BIG)));
}

#[test]
fn unsupported_transfer_encodings() {
    for te in [
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: identity\r\n",
    ] {
        let buf = format!("POST /mpub HTTP/1.1\r\nHost: h\r\n{te}\r\n");
        assert_eq!(
            parse(buf.as_bytes()),
            Err(HttpError::UnsupportedTransferEncoding),
            "{te:?}"
        );
    }
}

/// Feeds `buf` to a reader in the given pieces as a connection's buffer grows (the reader
/// may drop chunk framing from it); polls after each piece until a request completes. Returns
/// the request's facts, the bytes of the buffer left for the next request, and the reader.
fn read_pieces(buf: &[u8], pieces: &[usize]) -> (Result<Option<Facts>, HttpError>, Vec<u8>) {
    let mut reader = RequestReader::default();
    let mut rbuf = Vec::new();
    let mut at = 0;
    for &end in pieces.iter().chain(std::iter::once(&buf.len())) {
        rbuf.extend_from_slice(&buf[at..end.max(at)]);
        at = end.max(at);
        match reader.poll(&mut rbuf, 0, &limits()) {
            Ok(None) => continue,
            Ok(Some((req, used))) => {
                let facts = Facts::of(&req);
                rbuf.drain(..used);
                rbuf.extend_from_slice(&buf[at..]);
                return (Ok(Some(facts)), rbuf);
            }
            Err(e) => return (Err(e), rbuf),
        }
    }
    (Ok(None), rbuf)
}

/// What a test compares between two parses of one request.
#[derive(Debug, PartialEq, Eq)]
struct Facts {
    method: String,
    path: String,
    body: Vec<u8>,
    keep_alive: bool,
    chunked: bool,
    content_length: Option<u64>,
}

impl Facts {
    fn of(r: &Request<'_>) -> Facts {
        Facts {
            method: r.method.to_owned(),
            path: r.path.to_string(),
            body: r.body.to_vec(),
            keep_alive: r.keep_alive,
            chunked: r.chunked,
            content_length: r.content_length,
        }
    }
}

/// The whole-buffer parse in the same shape as [`read_pieces`].
fn whole(buf: &[u8]) -> (Result<Option<Facts>, HttpError>, Vec<u8>) {
    match parse(buf) {
        Ok(Some((req, used))) => (Ok(Some(Facts::of(&req))), buf[used..].to_vec()),
        Ok(None) => (Ok(None), buf.to_vec()),
        Err(e) => (Err(e), buf.to_vec()),
    }
}

#[test]
fn reader_split_at_every_byte_agrees_with_whole_parse() {
    let mut pipelined = CHUNKED.to_vec();
    pipelined.extend_from_slice(b"GET /ping HTTP/1.1\r\nHost: h\r\n\r\n");
    let bad_chunk = b"POST /mpub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nxy";
    let cases: [&[u8]; 5] = [
        PUB,
        CHUNKED,
        &pipelined,
        bad_chunk,
        b"GET / HTTP/1.1\r\nHost: h\r\n\r\n",
    ];
    for buf in cases {
        let (expect, rest) = whole(buf);
        for i in 0..=buf.len() {
            let (got, got_rest) = read_pieces(buf, &[i]);
            assert_eq!(
                got,
                expect,
                "{:?} split at {i}",
                String::from_utf8_lossy(buf)
            );
            if expect.is_ok() {
                assert_eq!(got_rest, rest, "split at {i}");
            }
        }
        let every: Vec<usize> = (0..buf.len()).collect();
        let (got, got_rest) = read_pieces(buf, &every);
        assert_eq!(got, expect, "byte by byte");
        if expect.is_ok() {
            assert_eq!(got_rest, rest);
        }
    }
}

#[test]
fn reader_keeps_only_the_decoded_body_of_a_chunked_request() {
    let head = b"POST /mpub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut reader = RequestReader::default();
    let mut rbuf = head.to_vec();
    assert!(matches!(reader.poll(&mut rbuf, 0, &limits()), Ok(None)));
    for _ in 0..60 {
        rbuf.extend_from_slice(b"1\r\nA\r\n");
        assert!(matches!(reader.poll(&mut rbuf, 0, &limits()), Ok(None)));
        // The framing is gone as soon as it is decoded: the buffer is only the head.
        assert_eq!(rbuf.len(), head.len());
    }
    rbuf.extend_from_slice(b"0\r\n\r\n");
    let (req, used) = reader.poll(&mut rbuf, 0, &limits()).unwrap().unwrap();
    assert_eq!((&*req.body, used), (&[b'A'; 60][..], head.len()));
    // One more chunk would pass the 64-byte /mpub limit: 413 before its data.
    let mut rbuf = head.to_vec();
    rbuf.extend_from_slice(&b"1\r\nA\r\n".repeat(64));
    rbuf.extend_from_slice(b"1\r\n");
    assert_eq!(
        reader.poll(&mut rbuf, 0, &limits()),
        Err(too_big(BODY_TOO_BIG))
    );
}

#[test]
fn encoded_size_cap_answers_the_routes_413() {
    // 60 one-byte body bytes, each padded with an extension: under the 64-byte decoded limit,
    // far over the encoded cap (6 per body byte + one line + trailers).
    let head = "POST /mpub HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunk = format!("1;{}\r\nA\r\n", "p".repeat(4000));
    let buf = format!("{head}{}", chunk.repeat(60));
    assert_eq!(parse(buf.as_bytes()), Err(too_big(BODY_TOO_BIG)));
    let (got, _) = read_pieces(
        buf.as_bytes(),
        &(0..buf.len()).step_by(1000).collect::<Vec<_>>(),
    );
    assert_eq!(got, Err(too_big(BODY_TOO_BIG)));
}

#[test]
fn garbage_is_refused_on_its_first_bytes_and_long_lines_at_the_cap() {
    let mut reader = RequestReader::default();
    let mut rbuf = b"\x16\x03\x01\x02\x00".to_vec(); // a TLS ClientHello's start
    assert_eq!(
        reader.poll(&mut rbuf, 0, &limits()),
        Err(HttpError::BadRequest(None))
    );
    // A request line that never ends is refused once it passes the head cap.
    let mut reader = RequestReader::default();
    let mut rbuf = b"GET /".to_vec();
    let mut result = Ok(None);
    for _ in 0..300 {
        rbuf.extend_from_slice(b"aaaa");
        result = reader.poll(&mut rbuf, 0, &limits()).map(|r| r.map(|_| ()));
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(HttpError::HeadTooLarge));
    assert!(rbuf.len() <= limits().max_head_bytes + 4);
}

#[test]
fn expect_continue() {
    let head = b"POST /pub?topic=t HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    let wants = |buf: &[u8]| {
        let mut reader = RequestReader::default();
        let mut rbuf = buf.to_vec();
        matches!(reader.poll(&mut rbuf, 0, &limits()), Ok(None)) && reader.wants_continue()
    };
    assert!(wants(head));
    assert!(!wants(&head[..head.len() - 1]), "head incomplete");
    let mut full = head.to_vec();
    full.extend_from_slice(b"abc");
    assert!(!wants(&full), "body already here");
    let no_expect = b"POST /pub?topic=t HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    assert!(!wants(no_expect));
    let too_big =
        b"POST /pub HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 99\r\n\r\n";
    assert!(!wants(too_big), "an error is answered, not continued");
    let http10 = b"POST /pub?topic=t HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    assert!(!wants(http10), "HTTP/1.0 has no 100 Continue");
}

#[test]
fn limits_from_options() {
    let l = HttpLimits::from_options(&Options::default());
    assert_eq!(l.max_msg_size, 1_048_576);
    assert_eq!(l.max_body_size, 5_242_880);
    assert_eq!(l.max_head_bytes, DEFAULT_MAX_HEAD_BYTES);
    assert_eq!(l.max_headers, MAX_HEADERS);
}

/// A small deterministic generator (xorshift64*) for the hostile-input sweep.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn hostile_inputs_never_panic() {
    let pieces: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"/pub",
        b"/mpub?topic=t&binary=1",
        b"?a=%zz",
        b" HTTP/1.1\r\n",
        b" HTTP/1.0\r\n",
        b"Host: h\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 99999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"\r\n",
        b"\n",
        b"abc",
        b"0\r\n\r\n",
        b"ffffffff\r\n",
        b"3;x\r\nabc\r\n",
        b"\x00\xff",
        b":",
        b" ",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let mut buf = Vec::new();
        for _ in 0..(rng.next() % 12) {
            if rng.next().is_multiple_of(5) {
                buf.push(rng.next() as u8);
            } else {
                let i = (rng.next() % pieces.len() as u64) as usize;
                buf.extend_from_slice(pieces[i]);
            }
        }
        for end in 0..=buf.len() {
            if let Ok(Some((_, used))) = parse(&buf[..end]) {
                assert!(used <= end, "{buf:?}");
            }
        }
        // Fed in random pieces, the reader agrees with the whole parse on the first request.
        let mut cuts: Vec<usize> = (0..rng.next() % 4)
            .map(|_| (rng.next() % (buf.len() as u64 + 1)) as usize)
            .collect();
        cuts.sort_unstable();
        let (got, _) = read_pieces(&buf, &cuts);
        let expect = whole(&buf).0;
        if got == Ok(None) && expect.is_err() {
            // The reader looks at a head again only when a line ends (or at the cap), so an
            // error inside an unfinished line shows once the line ends.
            let mut ended = buf.clone();
            ended.push(b'\n');
            assert_eq!(
                read_pieces(&ended, &cuts).0,
                expect,
                "{buf:?} cut at {cuts:?}"
            );
        } else {
            assert_eq!(got, expect, "{buf:?} cut at {cuts:?}");
        }
    }
}
