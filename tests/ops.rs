//! Operating corq: JSON logs (`--log-format=json`), the peek endpoints (`/channel/peek`,
//! `/topic/peek`) and the dashboard's files.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Small segments and messages, so a test's files stay small.
const SMALL: [&str; 4] = ["--max-bytes-per-file", "65536", "--max-msg-size", "16384"];

fn small_options(dir: &std::path::Path) -> corq::Options {
    let mut o = test_options(dir);
    o.max_bytes_per_file = 65536;
    o.max_msg_size = 16384;
    o
}

/// Every line the child logged so far, each parsed as JSON (the test fails on one that is not).
fn json_lines(server: &ChildServer) -> Vec<Value> {
    let log = server.log.lock().unwrap();
    log.iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Waits (generously) until a logged JSON line satisfies `pred`; returns it.
fn wait_for_json(server: &ChildServer, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = json_lines(server).into_iter().find(|v| pred(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no JSON log line {what} in {:#?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn msg_has(v: &Value, needle: &str) -> bool {
    v["msg"].as_str().is_some_and(|m| m.contains(needle))
}

/// Flips one byte inside `marker` in `file` (a record body: the CRC then fails).
fn flip_inside(file: &std::path::Path, marker: &[u8]) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the marker is in the segment");
    bytes[at + marker.len() / 2] ^= 0xff;
    std::fs::write(file, &bytes).unwrap();
}

#[test]
fn json_logs_are_one_object_per_line_and_name_the_topic_of_recovery_and_quarantine_warnings() {
    let dir = TempDir::new("jsonlog");
    {
        let server = TestServer::start(small_options(dir.path()));
        let mut p = Raw::connect(server.addr);
        p.publish("good", b"first-good-message-MARKER-0123456789");
        p.publish("good", b"second-good-message");
        p.publish("bad", b"b0");
        drop(p);
        server.stop();
    }
    let topics = dir.path().join("topics");
    let seg = |t: &str| {
        topics
            .join(format!("{t}.topic"))
            .join(format!("{:020}.log", 0))
    };
    flip_inside(&seg("good"), b"MARKER-0123456789");
    let mut bytes = std::fs::read(seg("bad")).unwrap();
    bytes[..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(seg("bad"), &bytes).unwrap();

    let mut args = SMALL.to_vec();
    args.push("--log-format=json");
    let server = ChildServer::start(dir.path(), &args);
    let quarantine = wait_for_json(&server, "saying topic bad is quarantined", |v| {
        msg_has(v, "QUARANTINED")
    });
    assert_eq!(quarantine["topic"], "bad", "{quarantine}");
    assert_eq!(quarantine["level"], "WARN", "{quarantine}");
    let damage = wait_for_json(&server, "about the damaged record", |v| {
        msg_has(v, "skipped damaged bytes")
    });
    assert_eq!(damage["topic"], "good", "{damage}");

    // A client error that closes the connection names the client.
    let mut c = Raw::connect(server.addr);
    c.cmd("BOGUS", None);
    c.expect_error("E_INVALID invalid command BOGUS");
    let closed = wait_for_json(&server, "about the closed client", |v| {
        msg_has(v, "closing") && v["level"] == "ERROR"
    });
    assert!(
        closed["client"]
            .as_str()
            .is_some_and(|a| a.starts_with("127.0.0.1:")),
        "{closed}"
    );
    assert!(closed.get("channel").is_none(), "not subscribed: {closed}");

    let lines = json_lines(&server);
    assert!(lines.len() >= 5, "{lines:?}");
    for v in &lines {
        for key in ["ts", "level", "target", "msg"] {
            assert!(v[key].is_string(), "{key} missing in {v}");
        }
        let ts = v["ts"].as_str().unwrap();
        // 2026-12-04T17:45:58.123456Z
        assert!(
            ts.len() == 27 && ts.as_bytes()[10] == b'T' && ts.ends_with('Z'),
            "{ts}"
        );
    }
    server.terminate();
}

// ----- peek ----------------------------------------------------------------------------------

fn peek(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http_request(addr, "GET", path, b"");
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn stats_channel(addr: SocketAddr, topic: &str, channel: &str) -> Value {
    let s: Value = serde_json::from_str(&http_get(addr, "/stats?format=json")).unwrap();
    let t = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["topic_name"] == topic)
        .unwrap()
        .clone();
    t["channels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel_name"] == channel)
        .unwrap()
        .clone()
}

fn b64(s: &str) -> String {
    // Test-side encoder, independent of the server's: RFC 4648 with padding.
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn bodies(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body_base64"].as_str().unwrap().to_owned())
        .collect()
}

fn states(v: &Value) -> Vec<String> {
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["state"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn channel_peek_shows_queued_messages_without_delivering_them() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..5 {
        p.publish("pk", format!("msg-{i}").as_bytes());
    }
    http_request(
        server.http,
        "POST",
        "/channel/create?topic=pk&channel=c",
        b"",
    );
    // The first channel starts at the oldest message: all five are queued for it.
    let before = stats_channel(server.http, "pk", "c");
    let v = peek(server.http, "/channel/peek?topic=pk&channel=c&count=3");
    let want: Vec<String> = (0..3).map(|i| b64(&format!("msg-{i}"))).collect();
    assert_eq!(bodies(&v), want, "{v}");
    assert_eq!(states(&v), ["queued"; 3]);
    let m0 = &v["messages"][0];
    assert_eq!(m0["attempts"], 0, "{m0}");
    assert!(m0["deliver_at"].is_null(), "{m0}");
    assert!(
        m0["timestamp"].as_i64().unwrap() > 1_600_000_000_000_000_000,
        "{m0}"
    );
    assert_eq!(m0["id"].as_str().unwrap().len(), 16, "{m0}");
    // The default count is 10: all five.
    let all = peek(server.http, "/channel/peek?topic=pk&channel=c");
    assert_eq!(bodies(&all).len(), 5, "{all}");

    // Peeking changed nothing: same depth, nothing in flight, and a consumer gets every
    // message with attempts 1.
    let after = stats_channel(server.http, "pk", "c");
    for key in [
        "depth",
        "in_flight_count",
        "message_count",
        "deferred_count",
    ] {
        assert_eq!(before[key], after[key], "{key}: {before} vs {after}");
    }
    assert_eq!(after["depth"], 5, "{after}");
    let mut c = Raw::connect(server.addr);
    c.sub("pk", "c");
    c.cmd("RDY 10", None);
    for i in 0..5 {
        let (_, attempts, _, body) = c.expect_message();
        assert_eq!((attempts, body), (1, format!("msg-{i}").into_bytes()));
    }
    server.stop();
}

#[test]
fn channel_peek_lists_in_flight_and_deferred_sets() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..3 {
        p.publish("pk", format!("m{i}").as_bytes());
    }
    let mut c = Raw::connect(server.addr);
    c.sub("pk", "c");
    c.cmd("RDY 2", None);
    let (_, _, id0, _) = c.expect_message();
    let (_, _, _, _) = c.expect_message();
    // No more deliveries; then one of the two goes back with a long delay: deferred.
    c.cmd("RDY 0", None);
    c.cmd(&format!("REQ {id0} 600000"), None);
    // Wait until the broker has applied the REQ (stats are read on the same loop).
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats_channel(server.http, "pk", "c")["deferred_count"] != 1 {
        assert!(Instant::now() < deadline, "REQ not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let inf = peek(
        server.http,
        "/channel/peek?topic=pk&channel=c&state=in_flight",
    );
    assert_eq!(bodies(&inf), [b64("m1")], "{inf}");
    assert_eq!(states(&inf), ["in_flight"]);
    assert_eq!(inf["messages"][0]["attempts"], 1, "{inf}");

    let def = peek(
        server.http,
        "/channel/peek?topic=pk&channel=c&state=deferred",
    );
    assert_eq!(bodies(&def), [b64("m0")], "{def}");
    assert_eq!(states(&def), ["deferred"]);
    let due = def["messages"][0]["deliver_at"].as_i64().unwrap();
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    assert!(
        due > now_ns + 500_000_000_000,
        "due in ~10 min: {due} vs {now_ns}"
    );
    assert_eq!(def["messages"][0]["id"], id0, "{def}");

    // The default view is what comes next: m2, still queued.
    let next = peek(server.http, "/channel/peek?topic=pk&channel=c");
    assert_eq!(bodies(&next), [b64("m2")], "{next}");
    server.stop();
}

#[test]
fn topic_peek_reads_from_the_oldest_record() {
    let dir = TempDir::new("tpeek");
    let server = TestServer::start(small_options(dir.path()));
    let mut p = Raw::connect(server.addr);
    // 10 KB bodies in 64 KB segments: several segments.
    for i in 0..20 {
        let mut b = format!("t{i}:").into_bytes();
        b.resize(10_000, b'x');
        p.publish("tp", &b);
    }
    let v = peek(server.http, "/topic/peek?topic=tp&count=2");
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2, "{v}");
    let first = msgs[0]["body_base64"].as_str().unwrap();
    assert!(first.starts_with(&b64("t0:x")[..4]), "{first}");
    assert_eq!(msgs[0]["id"], "0000000000000000", "{v}");
    assert_eq!(msgs[1]["id"], "0000000000000001", "{v}");
    let all = peek(server.http, "/topic/peek?topic=tp&count=1000");
    assert_eq!(all["messages"].as_array().unwrap().len(), 20);
    server.stop();
}

#[test]
fn peek_bad_input_is_400_and_unknown_names_404() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    p.publish("pk", b"x");
    http_request(
        server.http,
        "POST",
        "/channel/create?topic=pk&channel=c",
        b"",
    );
    let cases: &[(&str, u16, &str)] = &[
        ("/channel/peek?channel=c", 400, "MISSING_ARG_TOPIC"),
        (
            "/channel/peek?topic=b@d&channel=c",
            400,
            "INVALID_ARG_TOPIC",
        ),
        ("/channel/peek?topic=pk", 400, "MISSING_ARG_CHANNEL"),
        (
            "/channel/peek?topic=pk&channel=",
            400,
            "INVALID_ARG_CHANNEL",
        ),
        (
            "/channel/peek?topic=pk&channel=c&count=1001",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=pk&channel=c&count=0",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=pk&channel=c&count=ten",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=pk&channel=c&count=-1",
            400,
            "INVALID_COUNT",
        ),
        (
            "/channel/peek?topic=pk&channel=c&state=gone",
            400,
            "INVALID_STATE",
        ),
        (
            "/channel/peek?topic=pk&channel=c&count=%zz",
            400,
            "INVALID_REQUEST",
        ),
        ("/channel/peek?topic=nope&channel=c", 404, "TOPIC_NOT_FOUND"),
        (
            "/channel/peek?topic=pk&channel=nope",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        ("/topic/peek", 400, "MISSING_ARG_TOPIC"),
        ("/topic/peek?topic=b@d", 400, "INVALID_ARG_TOPIC"),
        (
            "/topic/peek?topic=pk&count=99999999999999999999",
            400,
            "INVALID_COUNT",
        ),
        ("/topic/peek?topic=nope", 404, "TOPIC_NOT_FOUND"),
    ];
    for (path, status, code) in cases {
        let (got, body) = http_request(server.http, "GET", path, b"");
        assert_eq!(got, *status, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["message"], *code, "{path}: {body}");
    }
    // Nothing was created or changed by any of them.
    let s: Value = serde_json::from_str(&http_get(server.http, "/stats?format=json")).unwrap();
    let names: Vec<&str> = s["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["topic_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pk"]);
    let ch = stats_channel(server.http, "pk", "c");
    assert_eq!(
        (ch["depth"].clone(), ch["in_flight_count"].clone()),
        (1.into(), 0.into())
    );
    assert_eq!(s["topics"][0]["channels"].as_array().unwrap().len(), 1);
    server.stop();
}

/// Drops a file's pages from the page cache, as time does to the old end of a large backlog.
fn evict_from_page_cache(path: &std::path::Path) {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    f.sync_all().unwrap();
    // SAFETY: plain syscall on an open fd; no memory is passed.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(rc, 0, "posix_fadvise(DONTNEED) on {}", path.display());
}

#[test]
fn a_peek_of_cold_pages_waits_for_a_helper_to_read_them_and_answers_in_order() {
    let dir = TempDir::new("coldpeek");
    let mut args = SMALL.to_vec();
    args.extend(["--log-level", "debug", "--log-format=json"]);
    let server = ChildServer::start(dir.path(), &args);
    let mut p = Raw::connect(server.addr);
    let body = |i: usize| format!("cold-{i:04}-{}", "x".repeat(990));
    for i in 0..200 {
        p.publish("cold", body(i).as_bytes());
    }
    // 200 KB in 64 KiB segments, none of it read by corqd (no channel): out of the cache.
    let topic_dir = dir.path().join("topics").join("cold.topic");
    let mut segments = 0;
    for entry in std::fs::read_dir(&topic_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "log") {
            evict_from_page_cache(&path);
            segments += 1;
        }
    }
    assert!(segments >= 3, "{segments} segment(s)");

    // The peek and a ping pipelined on one connection: the peek waits without the request
    // behind it overtaking it, and both are answered.
    let mut s = std::net::TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let requests = "GET /topic/peek?topic=cold&count=150 HTTP/1.1\r\nHost: x\r\n\r\n\
                    GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    std::io::Write::write_all(&mut s, requests.as_bytes()).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    let (first, rest) = reply.split_once("\r\n\r\n").expect("a reply head");
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{reply}");
    let ping_at = rest.rfind("HTTP/1.1 200 OK").expect("the ping's reply");
    assert!(rest[ping_at..].ends_with("OK"), "{reply}");
    let v: Value = serde_json::from_str(&rest[..ping_at]).unwrap();
    let want: Vec<String> = (0..150).map(|i| b64(&body(i))).collect();
    assert_eq!(bodies(&v), want);

    let waited = wait_for_json(&server, "saying the peek waited for its pages", |v| {
        msg_has(v, "not all cached")
    });
    assert!(msg_has(&waited, "topic cold"), "{waited}");
    server.terminate();
}

#[test]
fn pipelined_peeks_between_other_requests_arrive_whole_and_in_order() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..3 {
        p.publish("pipe", format!("p{i}").as_bytes());
    }
    // A ping's reply is still queued when the first peek is answered (the peek's reply is
    // appended), and the second peek follows a peek (its reply is appended to one handed over).
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let requests = [
        get("/ping"),
        get("/topic/peek?topic=pipe&count=2"),
        get("/topic/peek?topic=pipe&count=3"),
        "GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
    ]
    .concat();
    let mut s = std::net::TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    std::io::Write::write_all(&mut s, requests.as_bytes()).unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    // Four responses, each a head and a Content-Length body.
    let mut bodies_seen = Vec::new();
    let mut rest = reply.as_str();
    while !rest.is_empty() {
        let (head, after) = rest.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200 OK"), "{reply}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .expect("a Content-Length")
            .trim()
            .parse()
            .unwrap();
        bodies_seen.push(after[..len].to_owned());
        rest = &after[len..];
    }
    assert_eq!(bodies_seen.len(), 4, "{reply}");
    assert_eq!(
        (bodies_seen[0].as_str(), bodies_seen[3].as_str()),
        ("OK", "OK")
    );
    let two: Value = serde_json::from_str(&bodies_seen[1]).unwrap();
    let three: Value = serde_json::from_str(&bodies_seen[2]).unwrap();
    assert_eq!(bodies(&two), [b64("p0"), b64("p1")]);
    assert_eq!(bodies(&three), [b64("p0"), b64("p1"), b64("p2")]);
    server.stop();
}

#[test]
fn channel_peek_lists_requeued_messages_first_with_their_attempts() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..3 {
        p.publish("rq", format!("r{i}").as_bytes());
    }
    let mut c = Raw::connect(server.addr);
    c.sub("rq", "c");
    c.cmd("RDY 2", None);
    let (_, _, _, _) = c.expect_message();
    let (_, _, id1, _) = c.expect_message();
    c.cmd("RDY 0", None);
    c.cmd(&format!("REQ {id1} 0"), None);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stats_channel(server.http, "rq", "c")["requeue_count"] != 1 {
        assert!(Instant::now() < deadline, "REQ not applied");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = peek(server.http, "/channel/peek?topic=rq&channel=c");
    assert_eq!(bodies(&v), [b64("r1"), b64("r2")], "{v}");
    assert_eq!(v["messages"][0]["attempts"], 1, "{v}");
    assert_eq!(v["messages"][0]["id"], id1, "{v}");
    assert_eq!(v["messages"][1]["attempts"], 0, "{v}");
    server.stop();
}

// ----- dashboard -----------------------------------------------------------------------------

#[test]
fn the_dashboard_is_served_at_root_and_ui_with_its_assets() {
    let (server, _dir) = start_server();
    for (path, ctype, needle) in [
        ("/", "text/html", "<script src=\"/ui/app.js\">"),
        ("/ui", "text/html", "<script src=\"/ui/app.js\">"),
        ("/ui/app.js", "text/javascript", "/stats?format=json"),
        ("/ui/style.css", "text/css", ".spark"),
    ] {
        let (head, body) = http_get_raw(server.http, path);
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {head}");
        assert!(
            head.contains(&format!("Content-Type: {ctype}")),
            "{path}: {head}"
        );
        assert!(body.contains(needle), "{path}");
    }
    let (head, _) = http_get_raw(server.http, "/ui/other.js");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    server.stop();
}
