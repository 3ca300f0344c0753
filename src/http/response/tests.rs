use super::*;

fn ctx11() -> ReplyCtx {
    ReplyCtx {
        version: HttpVersion::Http11,
        keep_alive: true,
        date: None,
    }
}

fn s(out: &[u8]) -> &str {
    std::str::from_utf8(out).unwrap()
}

#[test]
fn v1_text_ok() {
    let mut out = Vec::new();
    ok_text(&mut out, &ctx11(), "OK");
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK"
    );
}

#[test]
fn v1_empty_ok() {
    let mut out = Vec::new();
    ok_empty(&mut out, &ctx11());
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn v1_json_and_errors() {
    let mut out = Vec::new();
    json(&mut out, &ctx11(), &[1, 2]);
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 5\r\n\r\n[1,2]"
    );
    let mut out = Vec::new();
    let close = ReplyCtx {
        keep_alive: false,
        ..ctx11()
    };
    error_json(&mut out, &close, 400, "MISSING_ARG_TOPIC");
    assert_eq!(
        s(&out),
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 31\r\nConnection: close\r\n\r\n{\"message\":\"MISSING_ARG_TOPIC\"}"
    );
    assert_eq!(
        error_body("NOK - \"disk\""),
        br#"{"message":"NOK - \"disk\""}"#
    );
}

#[test]
fn plain_ping_has_no_v1_header() {
    let mut out = Vec::new();
    plain(&mut out, &ctx11(), 500, "NOK - disk full");
    assert_eq!(
        s(&out),
        "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 15\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nNOK - disk full"
    );
}

#[test]
fn http10_replies() {
    let mut out = Vec::new();
    let keep = ReplyCtx {
        version: HttpVersion::Http10,
        keep_alive: true,
        date: None,
    };
    plain(&mut out, &keep, 200, "OK");
    assert_eq!(
        s(&out),
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: keep-alive\r\n\r\nOK"
    );
    let mut out = Vec::new();
    let close = ReplyCtx {
        keep_alive: false,
        ..keep
    };
    plain(&mut out, &close, 200, "OK");
    assert!(s(&out).starts_with("HTTP/1.0 200 OK\r\n"));
    assert!(
        !s(&out).contains("Connection"),
        "1.0 closes without saying so"
    );
}

#[test]
fn not_allowed_and_options() {
    let mut out = Vec::new();
    method_not_allowed(&mut out, &ctx11(), "OPTIONS, POST");
    assert_eq!(
        s(&out),
        "HTTP/1.1 405 Method Not Allowed\r\nAllow: OPTIONS, POST\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 32\r\n\r\n{\"message\":\"METHOD_NOT_ALLOWED\"}"
    );
    let mut out = Vec::new();
    options(&mut out, &ctx11(), "GET, OPTIONS");
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nAllow: GET, OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn redirects() {
    let mut out = Vec::new();
    redirect(&mut out, &ctx11(), "GET", 301, "/stats", "format=json");
    assert_eq!(
        s(&out),
        "HTTP/1.1 301 Moved Permanently\r\nContent-Type: text/html; charset=utf-8\r\nLocation: /stats?format=json\r\nContent-Length: 53\r\n\r\n<a href=\"/stats?format=json\">Moved Permanently</a>.\n\n"
    );
    let mut out = Vec::new();
    redirect(&mut out, &ctx11(), "POST", 307, "/a b", "");
    assert_eq!(
        s(&out),
        "HTTP/1.1 307 Temporary Redirect\r\nLocation: /a%20b\r\nContent-Length: 0\r\n\r\n"
    );
}

#[test]
fn date_header_and_format() {
    assert_eq!(&http_date(784111777).0, b"Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(&http_date(0).0, b"Thu, 01 Jan 1970 00:00:00 GMT");
    assert_eq!(&http_date(1795567278).0, b"Wed, 25 Nov 2026 00:41:18 GMT");
    let mut out = Vec::new();
    let ctx = ReplyCtx {
        date: Some(http_date(0)),
        ..ctx11()
    };
    ok_text(&mut out, &ctx, "OK");
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nDate: Thu, 01 Jan 1970 00:00:00 GMT\r\nContent-Length: 2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nOK"
    );
}

#[test]
fn connection_level_errors_are_gos_bytes() {
    let cases: &[(HttpError, &str)] = &[
        (
            HttpError::BadRequest(None),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request",
        ),
        (
            HttpError::BadRequest(Some("missing required Host header")),
            "HTTP/1.1 400 Bad Request: missing required Host header\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: missing required Host header",
        ),
        (
            HttpError::HeadTooLarge,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n431 Request Header Fields Too Large",
        ),
        (
            HttpError::UnsupportedTransferEncoding,
            "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\nUnsupported transfer encoding",
        ),
        (
            HttpError::BodyTooLarge {
                reply: crate::http::routes::MSG_TOO_BIG,
                version: HttpVersion::Http11,
            },
            "HTTP/1.1 413 Request Entity Too Large\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 25\r\nConnection: close\r\n\r\n{\"message\":\"MSG_TOO_BIG\"}",
        ),
    ];
    for (err, want) in cases {
        let mut out = Vec::new();
        write_http_error(&mut out, err, None);
        assert_eq!(s(&out), *want, "{err:?}");
    }
}

#[test]
fn tls_required_body_is_hand_formatted() {
    let mut out = Vec::new();
    tls_required(&mut out, &ctx11(), 14152);
    assert!(s(&out).starts_with("HTTP/1.1 403 Forbidden\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\n"));
    assert!(s(&out).ends_with("\r\n\r\n{\"message\": \"TLS_REQUIRED\", \"https_port\": 14152}"));
}

#[test]
fn continue_bytes() {
    assert_eq!(CONTINUE_100, b"HTTP/1.1 100 Continue\r\n\r\n");
}

#[test]
fn route_errors() {
    let mut out = Vec::new();
    route_error(&mut out, &ctx11(), "GET", "", &RouteError::NotFound);
    assert_eq!(
        s(&out),
        "HTTP/1.1 404 Not Found\r\nContent-Type: application/json; charset=utf-8\r\nX-Nsq-Content-Type: nsq; version=1.0\r\nContent-Length: 23\r\n\r\n{\"message\":\"NOT_FOUND\"}"
    );
    let mut out = Vec::new();
    let allow = RouteError::MethodNotAllowed {
        allow: "GET, OPTIONS".into(),
    };
    route_error(&mut out, &ctx11(), "POST", "", &allow);
    assert!(s(&out).starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET, OPTIONS\r\n"));
    let mut out = Vec::new();
    let moved = RouteError::Redirect {
        status: 307,
        path: "/pub".into(),
    };
    route_error(&mut out, &ctx11(), "POST", "topic=t", &moved);
    assert!(s(&out).contains("\r\nLocation: /pub?topic=t\r\n"));
}

#[test]
fn metrics_reply() {
    let mut out = Vec::new();
    metrics(&mut out, &ctx11(), "corq_healthy 1\n");
    assert_eq!(
        s(&out),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 15\r\n\r\ncorq_healthy 1\n"
    );
}
