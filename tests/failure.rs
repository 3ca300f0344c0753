//! Failure handling: per-topic/per-channel settings over HTTP and their
//! persistence, max attempts and dead-letter topics, server-side backoff, message TTL.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{get, post};
use crate::util::{test_options, ChildServer, Raw, TempDir, TestServer, FRAME_MESSAGE};

/// Generous deadline for anything that happens "soon" on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

fn channel_stats(http: SocketAddr, topic: &str, channel: &str) -> Value {
    let stats = get(http, "/stats?format=json").json();
    let t = stats["topics"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["topic_name"] == topic))
        .cloned()
        .unwrap_or_else(|| panic!("no topic {topic} in {stats}"));
    t["channels"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["channel_name"] == channel))
        .cloned()
        .unwrap_or_else(|| panic!("no channel {channel} in {t}"))
}

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Creates a topic and channel over HTTP (nsqd wants the topic first).
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

fn consumer(addr: SocketAddr, topic: &str, channel: &str) -> Raw {
    let mut c = Raw::connect(addr);
    c.sub(topic, channel);
    c.cmd("RDY 10", None);
    c
}

fn topic_settings(http: SocketAddr, topic: &str) -> Value {
    let r = get(http, &format!("/topic/config?topic={topic}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["settings"].clone()
}

#[test]
fn settings_are_validated_all_or_nothing_and_survive_a_restart() {
    let dir = TempDir::new("fail-config");
    let s = TestServer::start(test_options(dir.path()));
    create(s.http, "t", "c");
    let before = topic_settings(s.http, "t");
    assert_eq!(before["max_attempts"]["value"], 0);
    assert_eq!(before["max_attempts"]["override"], Value::Null);

    let r = post(
        s.http,
        "/topic/config?topic=t&max_attempts=3&requeue_backoff=1s",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["settings"]["requeue_backoff"]["value"], "1s");
    let r = post(
        s.http,
        "/channel/config?topic=t&channel=c&message_ttl=1m0s",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let set = topic_settings(s.http, "t");

    // Every bad request is a 400 with a message and changes nothing, even its good keys.
    let long = "x".repeat(60);
    assert_eq!(
        post(s.http, &format!("/topic/create?topic={long}"), b"").status,
        200
    );
    for (path, needle) in [
        ("/topic/config?topic=t&max_attempts=-1", "max_attempts"),
        ("/topic/config?topic=t&max_attempts=lots", "max_attempts"),
        ("/topic/config?topic=t&max_attempts=70000", "max_attempts"),
        ("/topic/config?topic=t&requeue_backoff=5", "requeue_backoff"),
        (
            "/topic/config?topic=t&requeue_backoff=-1s",
            "requeue_backoff",
        ),
        (
            "/topic/config?topic=t&requeue_backoff=2h",
            "max-req-timeout",
        ),
        (
            "/topic/config?topic=t&max_attempts=1&message_ttl=soon",
            "message_ttl",
        ),
        ("/topic/config?topic=t&no_such_key=1", "no_such_key"),
        ("/topic/config?topic=t", "no setting"),
        (
            "/channel/config?topic=t&channel=c&dedup_window=1s",
            "topic setting",
        ),
        (
            &format!("/topic/config?topic={long}&max_attempts=1")[..],
            "64 bytes",
        ),
    ] {
        let r = post(s.http, path, b"");
        assert_eq!(r.status, 400, "{path}: {}", r.text());
        let msg = r.json()["message"].as_str().unwrap_or_default().to_owned();
        assert!(msg.contains(needle), "{path}: {msg}");
        assert_eq!(topic_settings(s.http, "t"), set, "{path} changed something");
    }
    assert_eq!(
        post(s.http, "/topic/config?topic=nope&max_attempts=1", b"").status,
        404
    );
    let r = post(
        s.http,
        "/channel/config?topic=t&channel=nope&max_attempts=1",
        b"",
    );
    assert_eq!(r.status, 404);
    let r = post(
        s.http,
        &format!("/topic/config?topic={long}&max_attempts=0"),
        b"",
    );
    assert_eq!(r.status, 200, "0 turns nothing on: {}", r.text());

    // /stats shows the resolved values; /metrics too.
    let c = channel_stats(s.http, "t", "c");
    assert_eq!(c["settings"]["max_attempts"], 3);
    assert_eq!(c["settings"]["message_ttl_ms"], 60_000);
    assert_eq!(c["dead_letter_count"], 0);
    let metrics = get(s.http, "/metrics").text();
    assert!(
        metrics
            .contains(r#"corq_channel_setting_requeue_backoff_seconds{topic="t",channel="c"} 1"#),
        "{metrics}"
    );
    s.stop();

    let s = TestServer::start(test_options(dir.path()));
    assert_eq!(
        topic_settings(s.http, "t"),
        set,
        "overrides survive a restart"
    );
    let r = get(s.http, "/channel/config?topic=t&channel=c").json();
    assert_eq!(r["settings"]["message_ttl"]["override"], "1m0s");
    assert_eq!(
        r["settings"]["max_attempts"]["value"], 3,
        "inherited from the topic"
    );
    s.stop();
}

#[test]
fn a_message_that_fails_max_attempts_lands_in_the_dead_letter_topic() {
    let dir = TempDir::new("fail-dead");
    let opts = crate::util::test_options(dir.path());
    let s = TestServer::start(corq::Options {
        max_attempts: 2,
        ..opts
    });
    let body = b"order 42 \x00\xff".to_vec();
    let mut p = Raw::connect(s.addr);
    p.publish("orders", &body);
    let mut c = consumer(s.addr, "orders", "billing");
    let (_, a1, id, got) = c.expect_message();
    assert_eq!((a1, &got), (1, &body));
    c.cmd(&format!("REQ {id} 0"), None);
    let (_, a2, id2, _) = c.expect_message();
    assert_eq!((a2, &id2), (2, &id));
    c.cmd(&format!("REQ {id} 0"), None);
    assert!(c.sync().is_empty(), "no third delivery after max attempts");

    let dead = get(s.http, "/topic/dead?topic=orders&count=5").json();
    assert_eq!(dead["dead_letter_topic"], "orders.dead");
    let msgs = dead["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs.len(), 1, "{dead}");
    let m = &msgs[0];
    assert_eq!(m["original_id"], id.as_str());
    assert_eq!(m["reason"], "req");
    assert_eq!(m["attempts"], 2);
    assert_eq!(
        (m["topic"].as_str(), m["channel"].as_str()),
        (Some("orders"), Some("billing"))
    );
    assert_eq!(m["body_base64"], "b3JkZXIgNDIgAP8=");
    assert_eq!(
        channel_stats(s.http, "orders", "billing")["dead_letter_count"],
        1
    );
    let metrics = get(s.http, "/metrics").text();
    assert!(
        metrics.contains(r#"corq_channel_dead_lettered_total{topic="orders",channel="billing"} 1"#),
        "{metrics}"
    );

    // The dead-letter topic is an ordinary topic: its consumer gets the body byte for byte.
    let mut d = consumer(s.addr, "orders.dead", "ops");
    let (_, attempts, _, got) = d.expect_message();
    assert_eq!((attempts, got), (1, body));

    // Dead-letter topics do not dead-letter; bad counts are refused.
    let r = post(
        s.http,
        "/topic/config?topic=orders.dead&max_attempts=1",
        b"",
    );
    assert_eq!(r.status, 400, "{}", r.text());
    for bad in ["0", "-1", "1001", "x"] {
        let r = get(s.http, &format!("/topic/dead?topic=orders&count={bad}"));
        assert_eq!(r.status, 400, "count={bad}: {}", r.text());
    }
    s.stop();
}

#[test]
fn a_timed_out_message_is_dead_lettered_with_reason_timeout() {
    let (s, _dir) = crate::util::start_server();
    create(s.http, "slow", "c");
    let r = post(
        s.http,
        "/channel/config?topic=slow&channel=c&max_attempts=1",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut c = Raw::connect(s.addr);
    c.identify(r#"{"msg_timeout":1000}"#);
    c.sub("slow", "c");
    c.cmd("RDY 1", None);
    Raw::connect(s.addr).publish("slow", b"never finished");
    let (_, attempts, id, _) = c.expect_message();
    assert_eq!(attempts, 1);
    let dead = eventually("the timeout's dead letter", || {
        let d = get(s.http, "/topic/dead?topic=slow").json();
        let m = d["messages"].as_array()?.first()?.clone();
        Some(m)
    });
    assert_eq!(dead["reason"], "timeout");
    assert_eq!(dead["original_id"], id.as_str());
    assert!(c.sync().is_empty(), "not delivered again");
    s.stop();
}

#[test]
fn requeue_backoff_doubles_per_attempt() {
    let dir = TempDir::new("fail-backoff");
    let s = TestServer::start(corq::Options {
        requeue_backoff: 300,
        ..test_options(dir.path())
    });
    Raw::connect(s.addr).publish("b", b"retry me");
    let mut c = consumer(s.addr, "b", "c");
    let (_, _, id, _) = c.expect_message();
    for attempt in 1..=3u16 {
        let sent = Instant::now();
        c.cmd(&format!("REQ {id} 0"), None);
        let (ft, data) = c.frame_skip_heartbeats();
        let waited = sent.elapsed();
        assert_eq!(ft, FRAME_MESSAGE);
        assert_eq!(u16::from_be_bytes([data[8], data[9]]), attempt + 1);
        let want = Duration::from_millis(300 << (attempt - 1));
        // The lower bound is a guarantee; the upper one only guards against "never".
        assert!(
            waited >= want,
            "attempt {attempt}: redelivered after {waited:?} < {want:?}"
        );
        assert!(
            waited < want + Duration::from_secs(15),
            "attempt {attempt}: {waited:?}"
        );
    }
    // An explicit delay is honoured as given, whatever the backoff would say.
    let sent = Instant::now();
    c.cmd(&format!("REQ {id} 100"), None);
    let _ = c.expect_message();
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
    assert!(
        waited < Duration::from_millis(2400),
        "not the 2.4 s backoff: {waited:?}"
    );
    s.stop();
}

#[test]
fn expired_messages_are_never_delivered_and_counted() {
    let dir = TempDir::new("fail-ttl");
    let s = TestServer::start(corq::Options {
        message_ttl: 300,
        ..test_options(dir.path())
    });
    create(s.http, "ttl", "drop");
    create(s.http, "ttl", "keep");
    let r = post(
        s.http,
        "/channel/config?topic=ttl&channel=keep&max_attempts=5",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    Raw::connect(s.addr).publish("ttl", b"stale");
    // A message is old once 300 ms have passed since its publish, whatever the load.
    std::thread::sleep(Duration::from_millis(400));
    let mut drop = consumer(s.addr, "ttl", "drop");
    let mut keep = consumer(s.addr, "ttl", "keep");
    assert!(
        drop.sync().is_empty(),
        "an expired message is not delivered"
    );
    assert!(
        keep.sync().is_empty(),
        "an expired message is not delivered"
    );
    assert_eq!(channel_stats(s.http, "ttl", "drop")["expired_count"], 1);
    assert_eq!(channel_stats(s.http, "ttl", "drop")["dead_letter_count"], 0);
    assert_eq!(channel_stats(s.http, "ttl", "keep")["expired_count"], 1);
    let dead = get(s.http, "/topic/dead?topic=ttl").json();
    let msgs = dead["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        msgs.len(),
        1,
        "only the channel with max attempts dead-letters: {dead}"
    );
    assert_eq!(
        (msgs[0]["reason"].as_str(), msgs[0]["channel"].as_str()),
        (Some("ttl"), Some("keep"))
    );
    // A fresh message still flows.
    Raw::connect(s.addr).publish("ttl", b"fresh");
    let (_, _, _, got) = drop.expect_message();
    assert_eq!(got, b"fresh");
    s.stop();
}

#[test]
fn with_max_attempts_on_a_topic_without_room_for_dead_is_refused() {
    let dir = TempDir::new("fail-long");
    let s = TestServer::start(corq::Options {
        max_attempts: 3,
        ..test_options(dir.path())
    });
    let mut p = Raw::connect(s.addr);
    let long = "y".repeat(60);
    p.cmd(&format!("PUB {long}"), Some(b"x"));
    let (ft, data) = p.frame();
    assert_eq!(ft, crate::util::FRAME_ERROR);
    assert!(
        String::from_utf8_lossy(&data).contains("dead-letter"),
        "{data:?}"
    );
    p.expect_closed();
    Raw::connect(s.addr).publish(&"y".repeat(59), b"fits");
    s.stop();
}

/// Publishes `body` over HTTP `/pub` with a `dedup_id`, expecting `OK`.
fn http_pub(http: SocketAddr, topic: &str, dedup_id: &str, body: &[u8]) {
    let r = post(
        http,
        &format!("/pub?topic={topic}&dedup_id={dedup_id}"),
        body,
    );
    assert_eq!((r.status, r.text()), (200, "OK".to_owned()));
}

#[test]
fn duplicates_before_and_after_a_restart_and_a_crash_are_delivered_once() {
    let dir = TempDir::new("fail-dedup");
    // Strict mode: an `OK` means the record is on disk, so the crash below keeps it.
    let flags = ["--dedup-window", "1h", "--sync-every", "1"];
    let s = ChildServer::start(dir.path(), &flags);
    let mut p = Raw::connect(s.addr);
    for body in ["a", "a", "b"] {
        p.publish("d", body.as_bytes());
    }
    http_pub(s.http, "d", "order-7", b"x");
    http_pub(s.http, "d", "order-7", b"x, sent again with other bytes");
    s.terminate();

    let s = ChildServer::start(dir.path(), &flags);
    Raw::connect(s.addr).publish("d", b"a");
    s.kill9();

    let s = ChildServer::start(dir.path(), &flags);
    let mut p = Raw::connect(s.addr);
    for body in ["a", "b", "c"] {
        p.publish("d", body.as_bytes());
    }
    http_pub(s.http, "d", "order-7", b"x, after a crash");
    let stats = get(s.http, "/stats?format=json").json();
    let t = &stats["topics"][0];
    assert_eq!(t["topic_name"], "d");
    assert_eq!(
        t["dedup_count"], 3,
        "a, b and order-7 since this start: {t}"
    );
    let metrics = get(s.http, "/metrics").text();
    assert!(
        metrics.contains(r#"corq_topic_dedup_entries{topic="d"} 4"#),
        "{metrics}"
    );
    // Bad ids are refused and publish nothing.
    let long = "k".repeat(129);
    for bad in ["", &long[..]] {
        let r = post(s.http, &format!("/pub?topic=d&dedup_id={bad}"), b"never");
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["message"], "INVALID_DEDUP_ID");
    }
    let bodies: Vec<Vec<u8>> = crate::util::subscribe_and_drain(s.addr, "d")
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    let want: Vec<Vec<u8>> = ["a", "b", "x", "c"]
        .iter()
        .map(|b| b.as_bytes().to_vec())
        .collect();
    assert_eq!(bodies, want, "each message once, in publish order");
    s.terminate();
}

#[test]
fn topic_dead_stops_at_its_byte_cap() {
    let (s, _dir) = crate::util::start_server();
    create(s.http, "big", "c");
    let r = post(
        s.http,
        "/channel/config?topic=big&channel=c&max_attempts=1&message_ttl=1ms",
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut p = Raw::connect(s.addr);
    for i in 0..5u8 {
        p.publish("big", &vec![i; 1 << 20]);
    }
    std::thread::sleep(Duration::from_millis(50)); // older than the 1 ms TTL
    let mut c = consumer(s.addr, "big", "c");
    assert!(c.sync().is_empty(), "expired messages are not delivered");
    eventually("five dead letters", || {
        let d = channel_stats(s.http, "big", "c");
        (d["dead_letter_count"] == 5).then_some(())
    });
    let dead = get(s.http, "/topic/dead?topic=big&count=10").json();
    let msgs = dead["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(msgs.len(), 4, "4 MiB of bodies, then the reply stops");
    assert_eq!(msgs[0]["reason"], "ttl");
    s.stop();
}
