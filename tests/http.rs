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
    assert_eq!(ch["message_count"], 2);
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
