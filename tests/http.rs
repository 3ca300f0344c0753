//! The HTTP API over real sockets: every endpoint's status, headers and body, its effects seen
//! over the TCP protocol, and hostile HTTP input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::util::*;

/// One HTTP response.
#[derive(Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Reads one response (Content-Length bodies only: corq always sends one, except Go's
/// connection-level errors, which close).
fn read_response(s: &mut TcpStream) -> Resp {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(
            n == 1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(": ").unwrap();
            (k.to_owned(), v.to_owned())
        })
        .collect();
    let len = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap());
    let body = match len {
        Some(n) => {
            let mut b = vec![0; n];
            s.read_exact(&mut b).unwrap();
            b
        }
        None => {
            let mut b = Vec::new();
            s.read_to_end(&mut b).unwrap();
            b
        }
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s
}

fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Resp {
    let mut s = connect(addr);
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut s = connect(addr);
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    read_response(&mut s)
}

pub(crate) fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Resp {
    request(addr, "POST", path, body)
}

fn assert_error(r: &Resp, status: u16, code: &str) {
    assert_eq!(
        (r.status, r.text()),
        (status, format!("{{\"message\":\"{code}\"}}")),
        "{r:?}"
    );
    assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
}

#[test]
fn ping_and_info() {
    let (s, _dir) = start_server();
    let r = get(s.http, "/ping");
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    assert_eq!(
        r.header("X-NSQ-Content-Type"),
        None,
        "/ping is plain text, as nsqd"
    );
    let info = get(s.http, "/info").json();
    assert_eq!(info["tcp_port"], s.addr.port());
    assert_eq!(info["http_port"], s.http.port());
    assert_eq!(
        info["max_heartbeat_interval"], 60_000_000_000u64,
        "durations are ns, as nsqd"
    );
    assert_eq!(
        info["version"],
        corq::NSQD_VERSION,
        "what NSQ's tools compare"
    );
}

#[test]
fn pub_and_mpub_reach_a_tcp_consumer() {
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.sub("hp", "ch");
    c.cmd("RDY 10", None);
    let r = post(s.http, "/pub?topic=hp", b"one");
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    assert_eq!(r.header("X-NSQ-Content-Type"), Some("nsq; version=1.0"));
    assert_eq!(
        post(s.http, "/mpub?topic=hp", b"two\n\nthree\n").status,
        200
    );
    let mut binary = 2u32.to_be_bytes().to_vec();
    for m in [&b"four"[..], b"five"] {
        binary.extend_from_slice(&(m.len() as u32).to_be_bytes());
        binary.extend_from_slice(m);
    }
    assert_eq!(
        post(s.http, "/mpub?topic=hp&binary=true", &binary).status,
        200
    );
    let bodies: Vec<Vec<u8>> = (0..5).map(|_| c.expect_message().3).collect();
    assert_eq!(
        bodies,
        [&b"one"[..], b"two", b"three", b"four", b"five"].map(|b| b.to_vec())
    );
}

#[test]
fn pub_with_defer_is_not_delivered_early() {
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.sub("hd", "ch");
    c.cmd("RDY 1", None);
    let start = Instant::now();
    assert_eq!(
        post(s.http, "/pub?topic=hd&defer=300", b"later").status,
        200
    );
    assert_eq!(c.expect_message().3, b"later");
    assert!(start.elapsed() >= Duration::from_millis(300));
}

#[test]
fn pub_errors_in_nsqds_order() {
    let (s, _dir) = start_server();
    assert_error(&post(s.http, "/pub", b""), 400, "MSG_EMPTY");
    assert_error(&post(s.http, "/pub", b"x"), 400, "MISSING_ARG_TOPIC");
    assert_error(&post(s.http, "/pub?topic=bad!", b"x"), 400, "INVALID_TOPIC");
    assert_error(
        &post(s.http, "/pub?topic=t&defer=-1", b"x"),
        400,
        "INVALID_DEFER",
    );
    assert_error(
        &post(s.http, "/pub?topic=t&defer=3600001", b"x"),
        400,
        "INVALID_DEFER",
    );
    assert_error(
        &post(s.http, "/mpub?topic=t&binary=true", b"\x00\x00"),
        413,
        "BAD_BODY",
    );
    // Too big is refused from the declared length, before any body byte is sent.
    let mut c = connect(s.http);
    c.write_all(b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n")
        .unwrap();
    let r = read_response(&mut c);
    assert_error(&r, 413, "MSG_TOO_BIG");
}

#[test]
fn stats_json_and_text_show_real_figures() {
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.identify(r#"{"client_id":"cons1","hostname":"h1","user_agent":"probe/1.0"}"#);
    c.sub("st", "ch");
    for body in ["a", "b", "c"] {
        assert_eq!(post(s.http, "/pub?topic=st", body.as_bytes()).status, 200);
    }
    c.cmd("RDY 2", None);
    let (_, _, id, _) = c.expect_message();
    c.expect_message();
    c.cmd("RDY 0", None); // so the FIN frees no slot for the third message
    c.cmd(&format!("FIN {id}"), None);
    assert!(c.sync().is_empty());
    let j = get(s.http, "/stats?format=json&topic=st").json();
    assert_eq!(j["health"], "OK");
    let t = &j["topics"][0];
    assert_eq!(
        (t["topic_name"].as_str(), t["message_count"].as_u64()),
        (Some("st"), Some(3))
    );
    let ch = &t["channels"][0];
    assert_eq!(ch["channel_name"], "ch");
    assert_eq!(ch["depth"], 1, "one message not yet delivered");
    assert_eq!(ch["in_flight_count"], 1);
    assert_eq!(
        ch["message_count"], 3,
        "nsqd: messages that reached the channel"
    );
    assert_eq!(ch["client_count"], 1);
    let client = &ch["clients"][0];
    assert_eq!(
        (client["client_id"].as_str(), client["state"].as_i64()),
        (Some("cons1"), Some(3))
    );
    assert_eq!(
        (
            client["finish_count"].as_u64(),
            client["ready_count"].as_i64()
        ),
        (Some(1), Some(0))
    );
    assert!(
        j["producers"].as_array().is_some_and(|p| !p.is_empty()),
        "the sync publisher is a producer"
    );
    let no_clients = get(s.http, "/stats?format=json&topic=st&include_clients=false").json();
    assert!(no_clients["topics"][0]["channels"][0]["clients"].is_null());
    let missing = get(s.http, "/stats?format=json&topic=nope").json();
    assert!(
        missing["topics"].is_null(),
        "nsqd answers null topics for an unknown topic filter"
    );
    let text = get(s.http, "/stats?topic=st").text();
    assert!(
        text.contains("   [st             ] depth: 0     be-depth: 0     msgs: 3 "),
        "{text}"
    );
    let ch_line =
        "      [ch                       ] depth: 1     be-depth: 1     inflt: 1    def: 0 ";
    assert!(text.contains(ch_line), "{text}");
    assert!(
        text.contains("] state: 3 inflt: 1    rdy: 0    fin: 1 "),
        "{text}"
    );
}

#[test]
fn pause_and_unpause_over_http_gate_delivery() {
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.sub("pz", "ch");
    c.cmd("RDY 10", None);
    for (path, what) in [
        ("/channel/pause?topic=pz&channel=ch", "channel"),
        ("/topic/pause?topic=pz", "topic"),
    ] {
        assert_eq!(post(s.http, path, b"").status, 200);
        assert_eq!(post(s.http, "/pub?topic=pz", what.as_bytes()).status, 200);
        assert!(
            c.sync().iter().all(|(ft, _)| *ft != FRAME_MESSAGE),
            "a paused {what} delivered"
        );
        let unpause = path.replace("pause", "unpause");
        assert_eq!(post(s.http, &unpause, b"").status, 200);
        assert_eq!(c.expect_message().3, what.as_bytes());
    }
    let stats = get(s.http, "/stats?format=json").json();
    assert_eq!(stats["topics"][0]["paused"], false);
}

#[test]
fn topic_and_channel_actions() {
    let (s, _dir) = start_server();
    assert_error(
        &post(s.http, "/channel/create?topic=nt&channel=c", b""),
        404,
        "TOPIC_NOT_FOUND",
    );
    assert_eq!(post(s.http, "/topic/create?topic=nt", b"").status, 200);
    assert_eq!(
        post(s.http, "/channel/create?topic=nt&channel=c", b"").status,
        200
    );
    assert_error(
        &post(s.http, "/channel/delete?topic=nt&channel=zz", b""),
        404,
        "CHANNEL_NOT_FOUND",
    );
    assert_error(
        &post(s.http, "/channel/create?topic=nt&channel=b!", b""),
        400,
        "INVALID_ARG_CHANNEL",
    );
    // Empty the channel: published messages are gone for it.
    assert_eq!(post(s.http, "/pub?topic=nt", b"gone").status, 200);
    assert_eq!(
        post(s.http, "/channel/empty?topic=nt&channel=c", b"").status,
        200
    );
    let mut c = Raw::connect(s.addr);
    c.sub("nt", "c");
    c.cmd("RDY 5", None);
    assert!(c.sync().iter().all(|(ft, _)| *ft != FRAME_MESSAGE));
    // Deleting the topic closes its consumers and forgets it.
    let r = post(s.http, "/topic/delete?topic=nt", b"");
    assert_eq!((r.status, r.body.len()), (200, 0));
    c.expect_closed();
    assert!(get(s.http, "/stats?format=json&topic=nt").json()["topics"].is_null());
    assert_error(
        &post(s.http, "/topic/delete?topic=nt", b""),
        404,
        "TOPIC_NOT_FOUND",
    );
}

#[test]
fn unknown_paths_wrong_methods_and_config() {
    let (s, _dir) = start_server();
    assert_error(&get(s.http, "/nope"), 404, "NOT_FOUND");
    let r = get(s.http, "/pub");
    assert_eq!(r.status, 405);
    assert!(
        r.header("Allow").is_some_and(|a| a.contains("POST")),
        "{r:?}"
    );
    assert_eq!(get(s.http, "/config/max_msg_size").text(), "1048576");
    assert_error(&get(s.http, "/config/no_such_thing"), 400, "INVALID_OPTION");
    let r = request(s.http, "PUT", "/config/log_level", b"warn");
    assert_eq!(r.status, 200, "{r:?}");
}

#[test]
fn keep_alive_and_pipelined_requests() {
    let (s, _dir) = start_server();
    let mut c = connect(s.http);
    let one = "POST /pub?topic=ka HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na";
    c.write_all(format!("{one}{one}GET /ping HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(read_response(&mut c).text(), "OK");
    assert_eq!(read_response(&mut c).text(), "OK");
    assert_eq!(read_response(&mut c).text(), "OK");
    // The same connection goes on serving.
    c.write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut c).status, 200);
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "Connection: close closes"
    );
}

/// A refused body is not read, and closing a socket with unread input sends a reset that can
/// destroy the reply before the client reads it. Like Go's HTTP server (nsqd's), corqd shuts its
/// side and discards the rest first, so a client that reads late still gets its 413.
#[test]
fn refused_body_reply_survives_a_client_that_reads_late() {
    let dir = TempDir::new("linger");
    let mut opts = test_options(dir.path());
    opts.max_msg_size = 1024;
    opts.max_body_size = 1024;
    let s = TestServer::start(opts);
    for path in ["/pub?topic=t", "/mpub?topic=t"] {
        let (read, reply) = post_and_read_late(s.http, path, &[b'x'; 200 * 1024]);
        assert!(read.is_ok(), "{path}: {read:?} after {reply:?}");
        assert!(reply.starts_with("HTTP/1.1 413 "), "{path}: {reply}");
        assert!(reply.contains("TOO_BIG"), "{path}: {reply}");
    }
    assert_eq!(post(s.http, "/pub?topic=t", b"small").status, 200);
}

#[test]
fn hostile_http_input_gets_an_error_or_a_close_and_others_are_served() {
    let (s, _dir) = start_server();
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "oversized head",
            format!("GET /ping HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000)).into_bytes(),
            431,
        ),
        ("bad request line", b"HELLO\r\n\r\n".to_vec(), 400),
        (
            "oversized body",
            b"POST /mpub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n".to_vec(),
            413,
        ),
    ];
    for (name, bytes, status) in cases {
        let mut c = connect(s.http);
        c.write_all(&bytes).unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, status, "{name}: {r:?}");
        let mut rest = Vec::new();
        let _ = c.read_to_end(&mut rest);
    }
    // One byte at a time: the request completes, and others are served meanwhile.
    let addr = s.http;
    let slow = std::thread::spawn(move || {
        let mut c = connect(addr);
        for b in b"POST /pub?topic=slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc" {
            c.write_all(&[*b]).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        read_response(&mut c).status
    });
    for _ in 0..50 {
        assert_eq!(get(s.http, "/ping").status, 200);
    }
    assert_eq!(slow.join().unwrap(), 200);
}

#[test]
fn metrics_exposes_prometheus_families() {
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.sub("mt", "ch");
    assert_eq!(post(s.http, "/pub?topic=mt", b"x").status, 200);
    let r = get(s.http, "/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    let text = r.text();
    for family in [
        "corq_topic_depth",
        "corq_topic_messages_total",
        "corq_channel_depth",
        "corq_channel_in_flight",
        "corq_topic_log_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "missing {family}:\n{text}"
        );
    }
    assert!(
        text.contains("corq_topic_messages_total{topic=\"mt\"} 1"),
        "{text}"
    );
}

#[test]
fn strict_mode_http_publish_answers_after_the_sync() {
    let dir = TempDir::new("strict-http");
    let s = TestServer::start(corq::Options {
        sync_every: 1,
        ..test_options(dir.path())
    });
    for i in 0..20 {
        let r = post(s.http, "/pub?topic=sh", format!("m{i}").as_bytes());
        assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    }
    let r = post(s.http, "/mpub?topic=sh", b"a\nb\n");
    assert_eq!(r.status, 200);
}

/// The head of a chunked `/pub` to topic `t`.
fn chunked_pub_head(t: &str) -> String {
    format!("POST /pub?topic={t} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
}

/// The `corq_http_connections` gauge (the asking connection included).
fn http_connections(addr: SocketAddr) -> u64 {
    let text = get(addr, "/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix("corq_http_connections "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no corq_http_connections in {text}"))
}

/// Polls until `cond` holds, for at most [`READ_TIMEOUT`].
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < READ_TIMEOUT, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn twenty_clients_sending_one_byte_chunks_are_served_and_ping_answers_meanwhile() {
    // The body that once wedged the loop: 900,000 chunks `1\r\nA\r\n` (a legal 900 KB body, 5.4 MB encoded, more
    // than the read buffer) from 20 clients. The body used to be re-parsed whole on every turn
    // and stopped being read at the buffer cap: no request ever completed.
    use std::sync::{Arc, Barrier};
    const CLIENTS: usize = 20;
    const CHUNKS: usize = 900_000;
    let (s, _dir) = start_server();
    let body: Arc<Vec<u8>> = Arc::new(b"1\r\nA\r\n".repeat(CHUNKS));
    let mid = Arc::new(Barrier::new(CLIENTS + 1));
    let go_on = Arc::new(Barrier::new(CLIENTS + 1));
    let attackers: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (body, mid, go_on, addr) = (body.clone(), mid.clone(), go_on.clone(), s.http);
            std::thread::spawn(move || {
                // 108 MB of framing to decode in a debug build on a shared machine: generous
                // deadlines, as nothing here is about speed.
                let mut c = connect(addr);
                c.set_write_timeout(Some(READ_TIMEOUT * 12)).unwrap();
                c.set_read_timeout(Some(READ_TIMEOUT * 12)).unwrap();
                c.write_all(chunked_pub_head("wedge").as_bytes()).unwrap();
                // Cut inside a chunk: the server must keep its place across reads.
                let half = body.len() / 2 + 1;
                c.write_all(&body[..half]).unwrap();
                mid.wait();
                go_on.wait();
                c.write_all(&body[half..]).unwrap();
                c.write_all(b"0\r\n\r\n").unwrap();
                let r = read_response(&mut c);
                (r.status, r.text())
            })
        })
        .collect();
    mid.wait();
    // Every attacker is in the middle of its body: the server still answers.
    for _ in 0..5 {
        let r = get(s.http, "/ping");
        assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
    }
    assert!(http_connections(s.http) > CLIENTS as u64);
    go_on.wait();
    for a in attackers {
        assert_eq!(a.join().unwrap(), (200, "OK".to_owned()));
    }
    let stats = get(s.http, "/stats?format=json&topic=wedge").json();
    let topic = &stats["topics"][0];
    assert_eq!(topic["message_count"], CLIENTS as u64, "{stats}");
    assert_eq!(topic["message_bytes"], (CLIENTS * CHUNKS) as u64, "{stats}");
}

#[test]
fn a_client_leaving_mid_body_is_noticed_and_its_connection_freed() {
    let (s, _dir) = start_server();
    assert_eq!(http_connections(s.http), 1, "only the asking connection");
    // More encoded bytes than the read buffer holds, and no last chunk: the server used to
    // stop reading at the cap and never saw the peer go.
    let mut c = connect(s.http);
    c.write_all(chunked_pub_head("gone").as_bytes()).unwrap();
    c.write_all(&b"1\r\nA\r\n".repeat(900_000)).unwrap();
    assert_eq!(http_connections(s.http), 2);
    drop(c);
    eventually("the abandoned connection is closed", || {
        http_connections(s.http) == 1
    });
    // nsqd creates the topic only once the body is read: nothing was published.
    let stats = get(s.http, "/stats?format=json").json();
    assert_eq!(stats["topics"].as_array().map(Vec::len), Some(0), "{stats}");
}

/// Reads until the server closes; panics if it sends anything or does not close.
fn expect_http_closed(c: &mut TcpStream) {
    let mut rest = Vec::new();
    match c.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest)),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

#[test]
fn a_half_sent_head_is_closed_at_the_header_deadline() {
    let dir = TempDir::new("http-header");
    let opts = corq::Options {
        http_header_timeout: 300,
        ..test_options(dir.path())
    };
    let s = TestServer::start(opts);
    let mut silent = connect(s.http);
    let mut half = connect(s.http);
    let start = Instant::now();
    half.write_all(b"GET /ping HTTP/1.1\r\nHo").unwrap();
    expect_http_closed(&mut half);
    assert!(start.elapsed() >= Duration::from_millis(290));
    // The header deadline runs from a request's first byte: a connection that has sent
    // nothing yet is only subject to the (longer) idle timeout, and is served.
    silent
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut silent).text(), "OK");
}

#[test]
fn idle_http_connections_are_closed_between_and_within_requests() {
    let dir = TempDir::new("http-idle");
    let opts = corq::Options {
        http_idle_timeout: 300,
        ..test_options(dir.path())
    };
    let s = TestServer::start(opts);
    let mut silent = connect(s.http);
    let mut kept_alive = connect(s.http);
    kept_alive
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut kept_alive).text(), "OK");
    let mut stalled = connect(s.http);
    stalled
        .write_all(b"POST /pub?topic=t HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .unwrap();
    let mut stalled_chunks = connect(s.http);
    stalled_chunks
        .write_all(format!("{}1\r\nA\r\n", chunked_pub_head("t")).as_bytes())
        .unwrap();
    for c in [
        &mut silent,
        &mut kept_alive,
        &mut stalled,
        &mut stalled_chunks,
    ] {
        expect_http_closed(c);
    }
    let stats = get(s.http, "/stats?format=json").json();
    assert_eq!(stats["topics"].as_array().map(Vec::len), Some(0), "{stats}");
}

#[test]
fn channel_message_count_counts_messages_not_deliveries() {
    // nsqd counts a message for a channel once, when it reaches the channel: 3 publishes
    // delivered 5 times (2 REQs) count 3, in /stats JSON and text and in /metrics.
    let (s, _dir) = start_server();
    let mut c = Raw::connect(s.addr);
    c.sub("mc", "ch");
    for body in ["a", "b", "c"] {
        assert_eq!(post(s.http, "/pub?topic=mc", body.as_bytes()).status, 200);
    }
    c.cmd("RDY 1", None);
    let mut deliveries = 0;
    let mut reqs = 0;
    while deliveries < 5 {
        let (_, _, id, _) = c.expect_message();
        deliveries += 1;
        if reqs < 2 {
            c.cmd(&format!("REQ {id} 0"), None);
            reqs += 1;
        } else {
            c.cmd(&format!("FIN {id}"), None);
        }
    }
    assert!(c.sync().is_empty(), "nothing more to deliver");
    let j = get(s.http, "/stats?format=json&topic=mc").json();
    let ch = &j["topics"][0]["channels"][0];
    assert_eq!(
        (ch["message_count"].as_u64(), ch["requeue_count"].as_u64()),
        (Some(3), Some(2)),
        "{j}"
    );
    assert_eq!(
        ch["clients"][0]["message_count"], 5,
        "a client counts its deliveries"
    );
    let text = get(s.http, "/stats?topic=mc").text();
    let line = text
        .lines()
        .find(|l| l.contains("[ch "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(" re-q: 2 ") && line.contains(" msgs: 3 "),
        "{line}"
    );
    let metrics = get(s.http, "/metrics").text();
    assert!(
        metrics.contains("corq_channel_messages_total{topic=\"mc\",channel=\"ch\"} 3\n"),
        "{metrics}"
    );
    // A channel created later counts only what reaches it from then on.
    assert_eq!(
        post(s.http, "/channel/create?topic=mc&channel=late", b"").status,
        200
    );
    assert_eq!(post(s.http, "/pub?topic=mc", b"d").status, 200);
    let j = get(s.http, "/stats?format=json&topic=mc&channel=late").json();
    assert_eq!(j["topics"][0]["channels"][0]["message_count"], 1, "{j}");
}

#[test]
fn deferred_publish_without_a_ready_consumer_shows_as_deferred() {
    // gnsq's test_nsqd_http::test_publish: after emptying the channel, a deferred /pub shows
    // depth 0 and deferred_count 1, as in nsqd (it used to show depth 1, deferred 0).
    let (s, _dir) = start_server();
    assert_eq!(
        post(s.http, "/channel/create?topic=dt&channel=ch", b"").status,
        404
    );
    assert_eq!(post(s.http, "/topic/create?topic=dt", b"").status, 200);
    assert_eq!(
        post(s.http, "/channel/create?topic=dt&channel=ch", b"").status,
        200
    );
    assert_eq!(post(s.http, "/pub?topic=dt", b"sup").status, 200);
    assert_eq!(
        post(s.http, "/channel/empty?topic=dt&channel=ch", b"").status,
        200
    );
    assert_eq!(
        post(s.http, "/pub?topic=dt&defer=60000", b"sup").status,
        200
    );
    let j = get(s.http, "/stats?format=json&topic=dt").json();
    let ch = &j["topics"][0]["channels"][0];
    assert_eq!(
        (ch["depth"].as_i64(), ch["deferred_count"].as_i64()),
        (Some(0), Some(1)),
        "{j}"
    );
    // Over TCP too, and the message still arrives when it is due, not before.
    let mut p = Raw::connect(s.addr);
    let start = Instant::now();
    p.cmd("DPUB dt 300", Some(b"soon"));
    p.expect_response(b"OK");
    let j = get(s.http, "/stats?format=json&topic=dt").json();
    let ch = &j["topics"][0]["channels"][0];
    assert_eq!(
        (ch["depth"].as_i64(), ch["deferred_count"].as_i64()),
        (Some(0), Some(2)),
        "{j}"
    );
    let mut c = Raw::connect(s.addr);
    c.sub("dt", "ch");
    c.cmd("RDY 5", None);
    assert_eq!(c.expect_message().3, b"soon");
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "delivered early"
    );
    let j = get(s.http, "/stats?format=json&topic=dt").json();
    let ch = &j["topics"][0]["channels"][0];
    assert_eq!(
        (
            ch["in_flight_count"].as_i64(),
            ch["deferred_count"].as_i64()
        ),
        (Some(1), Some(1)),
        "{j}"
    );
}
