//! Bounded topics, alerts and their webhook, retention and replay, over real
//! sockets: TCP publishers and consumers, the HTTP API, and a webhook receiver on a
//! `std::net` listener.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::http::{get, post};
use crate::util::{test_options, wait_until, Raw, TempDir, TestServer, FRAME_ERROR};

/// Generous deadline for anything that happens "soon" on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(30);

fn stats_topic(http: SocketAddr, topic: &str) -> Value {
    let stats = get(http, "/stats?format=json").json();
    stats["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic_name"] == topic))
        .cloned()
        .unwrap_or_else(|| panic!("no topic {topic} in {stats}"))
}

/// Waits until the FINs sent on another connection were applied: a FIN has no reply, and a
/// rewind (on HTTP) that overtook them would find those messages still in flight.
fn wait_all_finished(http: SocketAddr, topic: &str, channel: &str) {
    wait_until("every FIN applied", || {
        let t = stats_topic(http, topic);
        let channels = t["channels"].as_array().cloned().unwrap_or_default();
        channels
            .iter()
            .find(|c| c["channel_name"] == channel)
            .is_some_and(|c| c["in_flight_count"] == 0)
    });
}

fn create(http: SocketAddr, topic: &str, channel: &str) {
    assert_eq!(
        post(http, &format!("/topic/create?topic={topic}"), b"").status,
        200
    );
    let r = post(
        http,
        &format!("/channel/create?topic={topic}&channel={channel}"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Receives `n` messages, FINs them, returns their bodies and attempts.
fn take(c: &mut Raw, n: usize) -> Vec<(String, u16)> {
    (0..n)
        .map(|_| {
            let (_, attempts, id, body) = c.expect_message();
            c.cmd(&format!("FIN {id}"), None);
            (String::from_utf8(body).unwrap(), attempts)
        })
        .collect()
}

fn consumer(addr: SocketAddr, topic: &str, channel: &str) -> Raw {
    let mut c = Raw::connect(addr);
    c.sub(topic, channel);
    c.cmd("RDY 100", None);
    c
}

/// A PUB that must be refused: the error frame's text.
fn refused_pub(addr: SocketAddr, topic: &str) -> String {
    let mut p = Raw::connect(addr);
    p.cmd(&format!("PUB {topic}"), Some(b"over"));
    let (ft, data) = p.frame_skip_heartbeats();
    assert_eq!(ft, FRAME_ERROR, "{}", String::from_utf8_lossy(&data));
    String::from_utf8(data).unwrap()
}

#[test]
fn bounded_topic_refuses_at_the_limit_and_resumes_after_draining() {
    let dir = TempDir::new("bounded");
    let mut opts = test_options(dir.path());
    opts.max_topic_depth = 3;
    let s = TestServer::start(opts);
    create(s.http, "b", "c");
    let mut p = Raw::connect(s.addr);
    for i in 0..3 {
        p.publish("b", format!("m{i}").as_bytes());
    }
    // At the limit: TCP PUB and MPUB, HTTP pub and mpub are refused; nothing is appended.
    let e = refused_pub(s.addr, "b");
    assert!(
        e.starts_with("E_PUB_FAILED PUB failed topic b is full"),
        "{e}"
    );
    let mut m = Raw::connect(s.addr);
    let mut body = 2u32.to_be_bytes().to_vec();
    for b in [b"x1", b"x2"] {
        body.extend_from_slice(&2u32.to_be_bytes());
        body.extend_from_slice(b);
    }
    m.cmd("MPUB b", Some(&body));
    let (ft, data) = m.frame_skip_heartbeats();
    assert_eq!(ft, FRAME_ERROR);
    assert!(
        data.starts_with(b"E_MPUB_FAILED"),
        "{}",
        String::from_utf8_lossy(&data)
    );
    let r = post(s.http, "/pub?topic=b", b"over");
    assert_eq!(r.status, 503);
    assert!(
        r.json()["message"].as_str().unwrap().contains("is full"),
        "{}",
        r.text()
    );
    assert_eq!(post(s.http, "/mpub?topic=b", b"y1\ny2").status, 503);
    let t = stats_topic(s.http, "b");
    assert_eq!(t["message_count"], 3, "{t}");
    assert_eq!(t["fill_ratio"], 1.0, "{t}");
    // Draining frees room: every accepted message arrives, then publishes are accepted.
    let mut c = consumer(s.addr, "b", "c");
    let got = take(&mut c, 3);
    assert_eq!(
        got.iter().map(|g| g.0.as_str()).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    wait_until("room again", || {
        stats_topic(s.http, "b")["fill_ratio"] == 0.0
    });
    Raw::connect(s.addr).publish("b", b"again");
    assert_eq!(post(s.http, "/pub?topic=b", b"again2").status, 200);
    let got = take(&mut c, 2);
    assert_eq!(got[0].0, "again");
    s.stop();
}

#[test]
fn max_topic_bytes_per_topic_and_topic_without_channels() {
    let (s, _dir) = crate::util::start_server();
    assert_eq!(post(s.http, "/topic/create?topic=nb", b"").status, 200);
    let r = post(s.http, "/topic/config?topic=nb&max_topic_bytes=1000", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    // No channel: the topic's own backlog counts.
    let body = [b'z'; 300];
    let mut accepted = 0;
    while post(s.http, "/pub?topic=nb", &body).status == 200 {
        accepted += 1;
        assert!(accepted < 10, "never refused");
    }
    assert!((2..=4).contains(&accepted), "{accepted} accepted");
    // Another topic is not bounded (the override is per topic).
    for _ in 0..10 {
        assert_eq!(post(s.http, "/pub?topic=free", &body).status, 200);
    }
    // The first channel takes the buffered backlog; draining it reopens the topic.
    let mut c = consumer(s.addr, "nb", "c");
    assert_eq!(take(&mut c, accepted).len(), accepted);
    wait_until("room", || {
        post(s.http, "/pub?topic=nb", &body).status == 200
    });
    s.stop();
}

/// A webhook receiver: every POST's JSON body, answered 200.
fn receiver() -> (SocketAddr, Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let mut raw = Vec::new();
            let mut buf = [0u8; 4096];
            let doc = loop {
                let Ok(n) = conn.read(&mut buf) else {
                    break None;
                };
                if n == 0 {
                    break None;
                }
                raw.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&raw).into_owned();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    assert!(head.starts_with("POST /hook HTTP/1.0"), "{head}");
                    break serde_json::from_str::<Value>(&body[..len]).ok();
                }
            };
            let _ = conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Some(d) = doc {
                if tx.send(d).is_err() {
                    return;
                }
            }
        }
    });
    (addr, rx)
}

/// The next document matching `alert`/`topic`: the first one set aside in `seen`, else the
/// next to arrive (the others are set aside).
fn next_doc(rx: &Receiver<Value>, alert: &str, topic: &str, seen: &mut Vec<Value>) -> Value {
    if let Some(i) = seen
        .iter()
        .position(|d| d["alert"] == alert && d["topic"] == topic)
    {
        return seen.remove(i);
    }
    let start = Instant::now();
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        let d = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {alert} document for {topic}; saw {seen:?}"));
        if d["alert"] == alert && d["topic"] == topic {
            return d;
        }
        seen.push(d);
    }
}

#[test]
fn alerts_fire_and_resolve_once_each_with_a_webhook() {
    let dir = TempDir::new("alerts");
    let (hook, rx) = receiver();
    let mut opts = test_options(dir.path());
    opts.max_topic_depth = 10;
    opts.sync_timeout = 50;
    opts.alert_latency = 300;
    opts.alert_webhook_url = format!("http://{hook}/hook");
    let s = TestServer::start(opts);
    create(s.http, "fill", "c");
    let mut p = Raw::connect(s.addr);
    for i in 0..8 {
        p.publish("fill", format!("f{i}").as_bytes());
    }
    let mut seen = Vec::new();
    let d = next_doc(&rx, "topic_fill", "fill", &mut seen);
    assert_eq!(d["state"], "firing", "{d}");
    assert_eq!(d["channel"], Value::Null, "{d}");
    assert_eq!(d["value"], 0.8, "{d}");
    assert_eq!(d["threshold"], 0.8, "{d}");
    assert!(d["time"].as_str().unwrap().ends_with('Z'), "{d}");
    // The oldest message waits past --alert-latency: the channel alert fires too.
    let d = next_doc(&rx, "channel_latency", "fill", &mut seen);
    assert_eq!(
        (d["state"].as_str(), d["channel"].as_str()),
        (Some("firing"), Some("c"))
    );
    assert!(d["value"].as_f64().unwrap() > 0.3, "{d}");
    assert_eq!(d["threshold"], 0.3, "{d}");
    let stats = stats_topic(s.http, "fill");
    assert!(
        stats["channels"][0]["oldest_message_age_ms"]
            .as_u64()
            .unwrap()
            > 300
    );
    let metrics = get(s.http, "/metrics").text();
    assert!(
        metrics.contains("corq_topic_fill_ratio{topic=\"fill\"} 0.8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("corq_channel_oldest_message_age_seconds{topic=\"fill\",channel=\"c\"}")
    );
    // Draining to 2 of 10 (under 70 %) resolves the fill alert, and the empty channel's
    // latency alert.
    let mut c = Raw::connect(s.addr);
    c.sub("fill", "c");
    c.cmd("RDY 6", None);
    take(&mut c, 6);
    let d = next_doc(&rx, "topic_fill", "fill", &mut seen);
    assert_eq!(d["state"], "resolved", "{d}");
    assert_eq!(d["threshold"], 0.7, "{d}");
    c.cmd("RDY 2", None);
    take(&mut c, 2);
    let d = next_doc(&rx, "channel_latency", "fill", &mut seen);
    assert_eq!(d["state"], "resolved", "{d}");
    // One document per change: none was repeated, and nothing more about this topic arrives
    // while nothing changes.
    assert!(seen.iter().all(|d| d["topic"] != "fill"), "{seen:?}");
    if let Ok(d) = rx.recv_timeout(Duration::from_millis(500)) {
        assert_ne!(d["topic"], "fill", "a repeated document: {d}");
    }
    s.stop();
}

#[test]
fn a_dead_webhook_never_stops_publishing() {
    // One receiver accepts and never answers; the other refuses connections.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let refused = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    for url in [
        format!("http://{}/hook", silent.local_addr().unwrap()),
        format!("http://{refused}/hook"),
    ] {
        let dir = TempDir::new("deadhook");
        let mut opts = test_options(dir.path());
        opts.sync_timeout = 50;
        opts.alert_latency = 1;
        opts.alert_webhook_url = url;
        let s = TestServer::start(opts);
        assert_eq!(post(s.http, "/topic/create?topic=d", b"").status, 200);
        // 100 channels whose oldest message is always late: far more alerts than the queue.
        for i in 0..100 {
            let r = post(
                s.http,
                &format!("/channel/create?topic=d&channel=c{i}"),
                b"",
            );
            assert_eq!(r.status, 200);
        }
        let mut p = Raw::connect(s.addr);
        p.publish("d", b"first");
        wait_until("webhook documents lost", || {
            let m = get(s.http, "/metrics").text();
            m.lines()
                .find_map(|l| l.strip_prefix("corq_alert_webhook_lost_total "))
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|v| v > 0)
        });
        for i in 0..2000 {
            p.publish("d", format!("m{i}").as_bytes());
        }
        assert_eq!(stats_topic(s.http, "d")["message_count"], 2001);
        s.stop();
    }
    drop(silent);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Waits until the wall clock has moved past `ms`.
fn clock_past(ms: u64) {
    wait_until("the clock to move", || now_ms() > ms);
}

fn rewind(http: SocketAddr, query: &str) -> Value {
    let r = post(http, &format!("/channel/rewind?{query}"), b"");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn peek_count(http: SocketAddr, topic: &str) -> usize {
    let r = get(http, &format!("/topic/peek?topic={topic}&count=1000")).json();
    r["messages"].as_array().map_or(0, Vec::len)
}

#[test]
fn retention_keeps_consumed_history_and_rewind_redelivers_from_a_time() {
    let dir = TempDir::new("replay");
    let mut opts = test_options(dir.path());
    opts.sync_timeout = 50;
    opts.max_bytes_per_file = 65536;
    opts.max_msg_size = 8192;
    let s = TestServer::start(opts);
    create(s.http, "kept", "c");
    create(s.http, "gone", "c");
    let r = post(s.http, "/topic/config?topic=kept&retention_time=1h", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut p = Raw::connect(s.addr);
    let body = |i: usize| format!("{i:03}{}", "x".repeat(4000));
    for i in 0..30 {
        p.publish("kept", body(i).as_bytes());
        p.publish("gone", body(i).as_bytes());
    }
    let mark = now_ms();
    clock_past(mark);
    let mark = now_ms();
    clock_past(mark);
    for i in 30..40 {
        p.publish("kept", body(i).as_bytes());
        p.publish("gone", body(i).as_bytes());
    }
    let mut kc = consumer(s.addr, "kept", "c");
    assert_eq!(take(&mut kc, 40).len(), 40);
    let mut gc = consumer(s.addr, "gone", "c");
    assert_eq!(take(&mut gc, 40).len(), 40);
    // Without retention consumed segments go; with it they stay.
    wait_until("consumed segments of 'gone' deleted", || {
        peek_count(s.http, "gone") < 40
    });
    assert_eq!(peek_count(s.http, "kept"), 40);
    wait_all_finished(s.http, "kept", "c");
    // From a time in ms: the 10 published after the mark, again, with fresh attempts.
    let r = rewind(s.http, &format!("topic=kept&channel=c&to={mark}"));
    assert_eq!(
        (r["queued"].as_u64(), r["clamped"].as_bool()),
        (Some(10), Some(false)),
        "{r}"
    );
    let again = take(&mut kc, 10);
    assert_eq!(again[0], (body(30), 1));
    assert_eq!(again[9].0, body(39));
    wait_all_finished(s.http, "kept", "c");
    // The same instant in RFC 3339.
    let secs = mark / 1000;
    let rfc = format!(
        "{}.{:03}Z",
        rfc3339_secs(secs).trim_end_matches('Z'),
        mark % 1000
    );
    let r = rewind(s.http, &format!("topic=kept&channel=c&to={rfc}"));
    assert_eq!(r["queued"], 10, "{rfc}: {r}");
    assert_eq!(take(&mut kc, 10)[0].0, body(30));
    wait_all_finished(s.http, "kept", "c");
    // earliest, and a time older than anything retained: from the oldest, saying so.
    let r = rewind(s.http, "topic=kept&channel=c&to=earliest");
    assert_eq!(
        (r["queued"].as_u64(), r["clamped"].as_bool()),
        (Some(40), Some(true))
    );
    assert_eq!(take(&mut kc, 40)[0].0, body(0));
    wait_all_finished(s.http, "kept", "c");
    let r = rewind(s.http, "topic=kept&channel=c&to=1970-01-01T00:00:00Z");
    assert_eq!(
        (r["queued"].as_u64(), r["clamped"].as_bool()),
        (Some(40), Some(true))
    );
    assert_eq!(take(&mut kc, 40).len(), 40);
    // A new channel from a point in time.
    let r = post(
        s.http,
        &format!("/channel/create?topic=kept&channel=late&from={mark}"),
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["queued"], 10);
    let mut lc = consumer(s.addr, "kept", "late");
    assert_eq!(take(&mut lc, 10)[0].0, body(30));
    // An existing channel is not rewound by create.
    let r = post(
        s.http,
        "/channel/create?topic=kept&channel=late&from=earliest",
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    s.stop();
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds (civil-from-days).
fn rfc3339_secs(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[test]
fn bad_inputs_get_400_and_change_nothing() {
    let (s, _dir) = crate::util::start_server();
    create(s.http, "t", "c");
    let mut p = Raw::connect(s.addr);
    p.publish("t", b"one");
    let cases: &[(&str, u16, &str)] = &[
        (
            "/channel/rewind?channel=c&to=earliest",
            400,
            "MISSING_ARG_TOPIC",
        ),
        (
            "/channel/rewind?topic=b!d&channel=c&to=earliest",
            400,
            "INVALID_ARG_TOPIC",
        ),
        (
            "/channel/rewind?topic=t&to=earliest",
            400,
            "MISSING_ARG_CHANNEL",
        ),
        ("/channel/rewind?topic=t&channel=c", 400, "MISSING_ARG_TO"),
        (
            "/channel/rewind?topic=t&channel=c&to=soon",
            400,
            "INVALID_ARG_TO",
        ),
        (
            "/channel/rewind?topic=t&channel=c&to=2026-13-01T00:00:00Z",
            400,
            "INVALID_ARG_TO",
        ),
        (
            "/channel/rewind?topic=t&channel=c&to=-5",
            400,
            "INVALID_ARG_TO",
        ),
        (
            "/channel/rewind?topic=nope&channel=c&to=earliest",
            404,
            "TOPIC_NOT_FOUND",
        ),
        (
            "/channel/rewind?topic=t&channel=nope&to=earliest",
            404,
            "CHANNEL_NOT_FOUND",
        ),
        (
            "/channel/create?topic=t&channel=d&from=yesterday",
            400,
            "INVALID_ARG_FROM",
        ),
        (
            "/topic/config?topic=t&max_topic_depth=-1",
            400,
            "invalid max_topic_depth",
        ),
        (
            "/topic/config?topic=t&max_topic_bytes=1k",
            400,
            "invalid max_topic_bytes",
        ),
        (
            "/topic/config?topic=t&retention_time=forever",
            400,
            "invalid retention_time",
        ),
        (
            "/channel/config?topic=t&channel=c&retention_bytes=5",
            400,
            "topic setting",
        ),
    ];
    for (path, status, msg) in cases {
        let r = post(s.http, path, b"");
        assert_eq!(r.status, *status, "{path}: {}", r.text());
        let m = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(m.contains(msg), "{path}: {m}");
    }
    let t = stats_topic(s.http, "t");
    assert_eq!(
        t["channels"].as_array().unwrap().len(),
        1,
        "no channel d: {t}"
    );
    assert_eq!(t["channels"][0]["depth"], 1, "{t}");
    let cfg = get(s.http, "/topic/config?topic=t").json();
    assert_eq!(cfg["settings"]["max_topic_depth"]["value"], 0, "{cfg}");
    s.stop();
}

#[test]
fn topic_peek_of_a_dead_letter_topic_shows_the_metadata() {
    let (s, _dir) = crate::util::start_server();
    create(s.http, "dl", "c");
    let r = post(
        s.http,
        "/channel/config?topic=dl&channel=c&max_attempts=1",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    Raw::connect(s.addr).publish("dl", b"doomed");
    let mut c = consumer(s.addr, "dl", "c");
    let (_, _, id, _) = c.expect_message();
    c.cmd(&format!("REQ {id} 0"), None);
    let peeked = || get(s.http, "/topic/peek?topic=dl.dead&count=10").json();
    wait_until("the dead letter", || {
        peeked()["messages"]
            .as_array()
            .is_some_and(|m| !m.is_empty())
    });
    let m = peeked()["messages"][0].clone();
    assert_eq!(m["original_id"], id.as_str(), "{m}");
    assert_eq!(
        (m["topic"].as_str(), m["channel"].as_str()),
        (Some("dl"), Some("c")),
        "{m}"
    );
    assert_eq!(m["reason"], "req", "{m}");
    assert_eq!(m["body_base64"], "ZG9vbWVk", "{m}");
    s.stop();
}

#[test]
fn rewind_over_messages_in_flight_delivers_them_again_fresh() {
    let (s, _dir) = crate::util::start_server();
    create(s.http, "fl", "c");
    let mut p = Raw::connect(s.addr);
    for i in 0..10 {
        p.publish("fl", format!("m{i}").as_bytes());
    }
    let mut c = Raw::connect(s.addr);
    c.sub("fl", "c");
    c.cmd("RDY 5", None);
    let held: Vec<String> = (0..5).map(|_| c.expect_message().2).collect();
    // Five in flight, RDY used up: the rewind forgets them and gives the room back.
    let r = rewind(s.http, "topic=fl&channel=c&to=earliest");
    assert_eq!(r["queued"], 5, "{r}");
    let again: Vec<(i64, u16, String, Vec<u8>)> = (0..5).map(|_| c.expect_message()).collect();
    for (i, (_, attempts, id, body)) in again.iter().enumerate() {
        assert_eq!(
            (body.as_slice(), *attempts),
            (format!("m{i}").as_bytes(), 1)
        );
        assert_eq!(id, &held[i], "the id is the message's offset");
        c.cmd(&format!("FIN {id}"), None);
    }
    let rest = take(&mut c, 5);
    assert_eq!(rest[4].0, "m9");
    wait_until("nothing in flight", || {
        let t = stats_topic(s.http, "fl");
        t["channels"][0]["in_flight_count"] == 0 && t["channels"][0]["depth"] == 0
    });
    s.stop();
}

#[test]
fn a_rewound_cursor_and_the_limit_settings_survive_a_restart() {
    let dir = TempDir::new("rewind-restart");
    let mut opts = test_options(dir.path());
    opts.retention_time = 3_600_000;
    let s = TestServer::start(opts.clone());
    create(s.http, "rr", "c");
    let r = post(s.http, "/topic/config?topic=rr&max_topic_depth=50", b"");
    assert_eq!(r.status, 200, "{}", r.text());
    let mut p = Raw::connect(s.addr);
    for i in 0..5 {
        p.publish("rr", format!("m{i}").as_bytes());
    }
    let mut c = consumer(s.addr, "rr", "c");
    take(&mut c, 5);
    wait_until("all finished", || {
        stats_topic(s.http, "rr")["channels"][0]["in_flight_count"] == 0
    });
    drop(c);
    assert_eq!(
        rewind(s.http, "topic=rr&channel=c&to=earliest")["queued"],
        5
    );
    s.stop();
    let s = TestServer::start(opts);
    let cfg = get(s.http, "/topic/config?topic=rr").json();
    assert_eq!(cfg["settings"]["max_topic_depth"]["override"], 50, "{cfg}");
    let mut c = consumer(s.addr, "rr", "c");
    let again = take(&mut c, 5);
    assert_eq!(again[0].0, "m0");
    assert_eq!(again[4].0, "m4");
    s.stop();
}
