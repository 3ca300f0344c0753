//! AUTH against an auth server (`--auth-http-address`): a fake auth server on 127.0.0.1:0 in
//! this file records every request and answers per secret (or stalls until released).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::util::*;

/// What the fake answers.
#[derive(Clone)]
enum Reply {
    /// A status and a JSON body.
    Json(u16, String),
    /// Hold the connection, unanswered, until `release`; then answer this.
    Stall(u16, String),
}

/// Decides the reply from (secret, how many requests came before this one).
type Answer = Arc<dyn Fn(&str, usize) -> Reply + Send + Sync>;

struct FakeAuth {
    addr: SocketAddr,
    /// Every request: head and body as text.
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    release: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAuth {
    fn start(answer: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> FakeAuth {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let release = Arc::new(AtomicBool::new(false));
        let answer: Answer = Arc::new(answer);
        let (reqs, stop2, rel) = (requests.clone(), stop.clone(), release.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (reqs, rel, stop, answer) =
                    (reqs.clone(), rel.clone(), stop2.clone(), answer.clone());
                std::thread::spawn(move || serve(conn, &reqs, &rel, &stop, &*answer));
            }
        });
        FakeAuth {
            addr,
            requests,
            stop,
            release,
            thread: Some(thread),
        }
    }

    /// A grant for every secret.
    fn granting(json: &str) -> FakeAuth {
        let json = json.to_owned();
        FakeAuth::start(move |_, _| Reply::Json(200, json.clone()))
    }

    fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn request(&self, i: usize) -> String {
        self.requests.lock().unwrap()[i].clone()
    }
}

impl Drop for FakeAuth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.release.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn serve(
    mut s: TcpStream,
    reqs: &Mutex<Vec<String>>,
    release: &AtomicBool,
    stop: &AtomicBool,
    answer: &(dyn Fn(&str, usize) -> Reply + Send + Sync),
) {
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while raw.len() < head_end + len {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let body = String::from_utf8_lossy(&raw[head_end..]).into_owned();
    let secret = if head.starts_with("POST") {
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["secret"][0].as_str().unwrap_or("").to_owned()
    } else {
        let target = head.split(' ').nth(1).unwrap_or("");
        target
            .split(['?', '&'])
            .find_map(|kv| kv.strip_prefix("secret="))
            .unwrap_or("")
            .to_owned()
    };
    let n = {
        let mut r = reqs.lock().unwrap();
        r.push(format!("{head}{body}"));
        r.len() - 1
    };
    let (status, json) = match answer(&secret, n) {
        Reply::Json(st, j) => (st, j),
        Reply::Stall(st, j) => {
            while !release.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
            (st, j)
        }
    };
    let _ = write!(
        s,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
        json.len()
    );
}

/// A corqd using `auth` addresses, with `tune` applied to its options.
fn server(auth: &[String], tune: impl FnOnce(&mut corq::Options)) -> (TestServer, TempDir) {
    let dir = TempDir::new("auth");
    let mut opts = test_options(dir.path());
    opts.auth_http_address = auth.to_vec();
    tune(&mut opts);
    (TestServer::start(opts), dir)
}

const GRANT: &str = r#"{"ttl":3600,"identity":"alice","identity_url":"https://id/alice","authorizations":[
  {"topic":"^pub_","channels":[".*"],"permissions":["publish"]},
  {"topic":"^sub_t$","channels":["^ch"],"permissions":["subscribe"]},
  {"topic":"^strict$","channels":["^only$"],"permissions":["publish","subscribe"]}]}"#;

fn auth_ok(c: &mut Raw, secret: &str) {
    c.cmd("AUTH", Some(secret.as_bytes()));
    c.expect_response(
        br#"{"identity":"alice","identity_url":"https://id/alice","permission_count":3}"#,
    );
}

#[test]
fn commands_before_auth_get_auth_first() {
    let fake = FakeAuth::granting(GRANT);
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    let reply = c.identify(r#"{"feature_negotiation":true}"#);
    assert!(String::from_utf8_lossy(&reply).contains(r#""auth_required":true"#));
    c.cmd("PUB pub_t", Some(b"x"));
    c.expect_error("E_AUTH_FIRST AUTH required before PUB");
    c.expect_closed();
    for (line, body, verb) in [
        ("SUB sub_t ch", None, "SUB"),
        ("DPUB pub_t 10", Some(&b"x"[..]), "DPUB"),
        ("MPUB pub_t", Some(&b"\0\0\0\x01\0\0\0\x01x"[..]), "MPUB"),
    ] {
        let mut c = Raw::connect(srv.addr);
        c.cmd(line, body);
        c.expect_error(&format!("E_AUTH_FIRST AUTH required before {verb}"));
        c.expect_closed();
    }
    // Refused before any query: the auth server was never asked.
    assert_eq!(fake.count(), 0);
    // MPUB is checked after its line, before its body (nsqd's order): an MPUB with an invalid
    // body size gets E_AUTH_FIRST, not E_BAD_BODY.
    let mut c = Raw::connect(srv.addr);
    c.send(b"MPUB pub_t\n\0\0\0\0");
    c.expect_error("E_AUTH_FIRST AUTH required before MPUB");
    c.expect_closed();
}

#[test]
fn mpub_is_checked_before_its_body() {
    let fake = FakeAuth::granting(&GRANT.replace("3600", "1"));
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "s");
    // The line alone is enough for nsqd's verdict on an unauthorized topic.
    c.send(b"MPUB elsewhere\n");
    c.expect_error(r#"E_UNAUTHORIZED AUTH failed for MPUB on "elsewhere" """#);
    c.expect_closed();
    // Authorized MPUBs keep working across ttl refreshes made between line and body.
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "s");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while fake.count() < 4 {
        assert!(std::time::Instant::now() < deadline, "no refresh");
        c.cmd("MPUB pub_m", Some(b"\0\0\0\x02\0\0\0\x01a\0\0\0\x01b"));
        c.expect_response(b"OK");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_request_is_nsqds_and_a_bad_secret_fails() {
    let fake = FakeAuth::start(|secret, _| match secret {
        "good" => Reply::Json(200, GRANT.to_owned()),
        _ => Reply::Json(403, r#"{"message":"FORBIDDEN"}"#.to_owned()),
    });
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    c.cmd("AUTH", Some(b"bad"));
    c.expect_error("E_AUTH_FAILED AUTH failed");
    c.expect_closed();
    let req = fake.request(0);
    assert!(
        req.starts_with(
            "GET /auth?common_name=&remote_ip=127.0.0.1&secret=bad&tls=false HTTP/1.0\r\n"
        ),
        "{req}"
    );
    assert!(
        req.contains("\r\nAccept: application/vnd.nsq; version=1.0\r\n"),
        "{req}"
    );
    assert!(
        req.contains(&format!("\r\nHost: {}\r\n", fake.addr)),
        "{req}"
    );
    // The good secret works, and a second AUTH is refused.
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "good");
    c.cmd("AUTH", Some(b"good"));
    c.expect_error("E_INVALID AUTH already set");
    c.expect_closed();
}

#[test]
fn grants_limit_publish_and_subscribe() {
    let fake = FakeAuth::granting(GRANT);
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut p = Raw::connect(srv.addr);
    auth_ok(&mut p, "s");
    p.publish("pub_a", b"1");
    // Patterns match unanchored unless they anchor themselves: "^pub_" allows "pub_b".
    p.cmd("MPUB pub_b", Some(b"\0\0\0\x01\0\0\0\x01x"));
    p.expect_response(b"OK");
    p.cmd("DPUB pub_b 5", Some(b"x"));
    p.expect_response(b"OK");
    let stats = http_get(srv.http, "/stats?format=json");
    assert!(
        stats.contains(
            r#""authed":true,"auth_identity":"alice","auth_identity_url":"https://id/alice""#
        ),
        "{stats}"
    );
    p.cmd("PUB other", Some(b"x"));
    p.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "other" """#);
    p.expect_closed();
    let mut s = Raw::connect(srv.addr);
    auth_ok(&mut s, "s");
    s.sub("sub_t", "chx"); // "^ch" is open at the end
    let mut s = Raw::connect(srv.addr);
    auth_ok(&mut s, "s");
    s.cmd("SUB sub_t other", None);
    s.expect_error(r#"E_UNAUTHORIZED AUTH failed for SUB on "sub_t" "other""#);
    s.expect_closed();
    // nsqd's quirk: a publish needs a channel pattern matching "", and "^only$" does not.
    let mut q = Raw::connect(srv.addr);
    auth_ok(&mut q, "s");
    q.cmd("PUB strict", Some(b"x"));
    q.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "strict" """#);
    q.expect_closed();
    // A subscribe-only grant does not allow publishing.
    let mut q = Raw::connect(srv.addr);
    auth_ok(&mut q, "s");
    q.cmd("PUB sub_t", Some(b"x"));
    q.expect_error(r#"E_UNAUTHORIZED AUTH failed for PUB on "sub_t" """#);
}

#[test]
fn an_empty_grant_is_unauthorized() {
    let fake = FakeAuth::granting(r#"{"ttl":60,"identity":"x","authorizations":[]}"#);
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    c.cmd("AUTH", Some(b"s"));
    c.expect_error("E_UNAUTHORIZED AUTH no authorizations found");
    c.expect_closed();
}

#[test]
fn post_sends_the_parameters_as_json() {
    let fake = FakeAuth::granting(GRANT);
    let (srv, _d) = server(&[format!("http://{}/check/", fake.addr)], |o| {
        o.auth_http_request_method = "post".into();
    });
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "se\"cret");
    let req = fake.request(0);
    assert!(req.starts_with("POST /check/ HTTP/1.0\r\n"), "{req}");
    assert!(
        req.contains("\r\nContent-Type: application/json\r\n"),
        "{req}"
    );
    assert!(
        req.ends_with(
            r#"{"common_name":[""],"remote_ip":["127.0.0.1"],"secret":["se\"cret"],"tls":["false"]}"#
        ),
        "{req}"
    );
}

/// Publishes to `topic` every 50 ms until something other than `OK` comes back; returns it.
fn publish_until_refused(c: &mut Raw, topic: &str) -> (u32, Vec<u8>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        assert!(std::time::Instant::now() < deadline, "never refused");
        c.cmd(&format!("PUB {topic}"), Some(b"x"));
        let f = c.frame_skip_heartbeats();
        if f != (FRAME_RESPONSE, b"OK".to_vec()) {
            return f;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_expired_grant_is_asked_for_again() {
    // The first answer grants pub_t for 1 s; later ones only grant another topic.
    let fake = FakeAuth::start(|_, n| {
        let topic = if n == 0 { "^pub_t$" } else { "^elsewhere$" };
        let json = format!(
            r#"{{"ttl":1,"identity":"alice","identity_url":"https://id/alice","authorizations":[{{"topic":"{topic}","channels":[".*"],"permissions":["publish"]}},{{"topic":"a","channels":[],"permissions":[]}},{{"topic":"b","channels":[],"permissions":[]}}]}}"#
        );
        Reply::Json(200, json)
    });
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "s");
    assert_eq!(fake.count(), 1);
    let f = publish_until_refused(&mut c, "pub_t");
    assert_eq!(
        (f.0, String::from_utf8_lossy(&f.1).into_owned()),
        (
            FRAME_ERROR,
            r#"E_UNAUTHORIZED AUTH failed for PUB on "pub_t" """#.to_owned()
        )
    );
    assert_eq!(
        fake.count(),
        2,
        "one re-query, made by the first PUB after the ttl"
    );
    assert!(fake.request(1).contains("secret=s&"), "the same secret");
}

#[test]
fn a_failed_refresh_is_auth_failed() {
    let fake = FakeAuth::start(|_, n| {
        if n == 0 {
            Reply::Json(200, GRANT.replace("3600", "1"))
        } else {
            Reply::Json(500, "{}".into())
        }
    });
    let (srv, _d) = server(&[fake.addr.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    auth_ok(&mut c, "s");
    let f = publish_until_refused(&mut c, "pub_t");
    assert_eq!(
        (f.0, String::from_utf8_lossy(&f.1).into_owned()),
        (FRAME_ERROR, "E_AUTH_FAILED AUTH failed".to_owned())
    );
    c.expect_closed();
}

#[test]
fn a_stalled_auth_server_holds_up_only_its_client() {
    let fake = FakeAuth::start(|secret, _| match secret {
        "stall" => Reply::Stall(200, GRANT.to_owned()),
        _ => Reply::Json(200, GRANT.to_owned()),
    });
    let (srv, _d) = server(&[fake.addr.to_string()], |o| {
        // Longer than the test: only the release ends the stall.
        o.http_client_request_timeout = 600_000;
    });
    let mut other = Raw::connect(srv.addr);
    auth_ok(&mut other, "good");
    // The stalled client pipelines a PUB behind its AUTH.
    let mut stuck = Raw::connect(srv.addr);
    let mut both = b"AUTH\n\0\0\0\x05stall".to_vec();
    both.extend_from_slice(b"PUB pub_t\n\0\0\0\x01x");
    stuck.send(&both);
    wait_until("the stalled AUTH reached the auth server", || {
        fake.count() == 2
    });
    // Meanwhile everyone else is served: publishes, a new connection, the HTTP API.
    other.publish("pub_t", b"during the stall");
    let mut third = Raw::connect(srv.addr);
    third.cmd("NOP", None);
    third.identify("{}");
    assert_eq!(http_get(srv.http, "/ping"), "OK");
    // Nothing was answered to the stalled client yet: its AUTH reply cannot exist before the
    // auth server answers.
    stuck.stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let r = stuck.stream.read(&mut byte);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "{r:?}"
    );
    stuck.stream.set_nonblocking(false).unwrap();
    fake.release.store(true, Ordering::SeqCst);
    stuck.expect_response(
        br#"{"identity":"alice","identity_url":"https://id/alice","permission_count":3}"#,
    );
    stuck.expect_response(b"OK");
}

#[test]
fn waiting_for_the_auth_server_is_not_a_missed_heartbeat() {
    let fake = FakeAuth::start(|_, _| Reply::Stall(200, GRANT.to_owned()));
    let (srv, _d) = server(&[fake.addr.to_string()], |o| {
        o.http_client_request_timeout = 600_000;
    });
    let mut c = Raw::connect(srv.addr);
    c.identify(r#"{"heartbeat_interval":1000}"#);
    c.cmd("AUTH", Some(b"s"));
    wait_until("the AUTH reached the auth server", || fake.count() == 1);
    // Longer than two heartbeat intervals without a command read: nsqd would not close a
    // connection whose AUTH call is still running, and neither may corqd.
    std::thread::sleep(Duration::from_millis(3000));
    fake.release.store(true, Ordering::SeqCst);
    c.expect_response(
        br#"{"identity":"alice","identity_url":"https://id/alice","permission_count":3}"#,
    );
    c.publish("pub_t", b"x");
}

#[test]
fn hostile_auth_replies_fail_auth() {
    let fake = FakeAuth::start(|secret, _| {
        let body = match secret {
            "notjson" => "<html>hello</html>",
            "array" => "[1,2]",
            "perm" => {
                r#"{"ttl":5,"authorizations":[{"topic":".*","channels":[".*"],"permissions":["admin"]}]}"#
            }
            "regex" => {
                r#"{"ttl":5,"authorizations":[{"topic":"(","channels":[".*"],"permissions":["publish"]}]}"#
            }
            "ttl0" => {
                r#"{"ttl":0,"authorizations":[{"topic":".*","channels":[".*"],"permissions":["publish"]}]}"#
            }
            "deep" => return Reply::Json(200, "[".repeat(10_000)),
            "huge" => return Reply::Json(200, " ".repeat(6 << 20)),
            _ => return Reply::Stall(200, GRANT.to_owned()),
        };
        Reply::Json(200, body.to_owned())
    });
    let (srv, _d) = server(&[fake.addr.to_string()], |o| {
        // The stalled case ends by this timeout (the release only comes when the test ends).
        o.http_client_request_timeout = 300;
    });
    for secret in [
        "notjson", "array", "perm", "regex", "ttl0", "deep", "huge", "stall",
    ] {
        let mut c = Raw::connect(srv.addr);
        c.cmd("AUTH", Some(secret.as_bytes()));
        c.expect_error("E_AUTH_FAILED AUTH failed");
        c.expect_closed();
    }
    // And the server is fine.
    assert_eq!(http_get(srv.http, "/ping"), "OK");
}

#[test]
fn an_unreachable_auth_server_fails_auth_and_the_server_keeps_serving() {
    // A port nobody listens on.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (srv, _d) = server(&[dead.to_string()], |_| {});
    let mut c = Raw::connect(srv.addr);
    c.cmd("AUTH", Some(b"s"));
    c.expect_error("E_AUTH_FAILED AUTH failed");
    c.expect_closed();
    let mut d = Raw::connect(srv.addr);
    d.identify("{}");
    assert_eq!(http_get(srv.http, "/ping"), "OK");
    // With a live server beside the dead one, whichever comes first, AUTH succeeds.
    let fake = FakeAuth::granting(GRANT);
    let (srv, _d) = server(&[dead.to_string(), fake.addr.to_string()], |_| {});
    for _ in 0..4 {
        let mut c = Raw::connect(srv.addr);
        auth_ok(&mut c, "s");
        c.publish("pub_t", b"x");
    }
}

#[test]
fn bad_auth_flags_are_refused() {
    let dir = TempDir::new("auth-flags");
    let mut o = test_options(dir.path());
    o.auth_http_request_method = "put".into();
    let err = o.validate().unwrap_err().0;
    assert_eq!(err, "--auth-http-request-method must be post or get");
    let mut o = test_options(dir.path());
    o.auth_http_address = vec!["https://auth.example/auth".into()];
    let err = o.validate().unwrap_err().0;
    assert!(
        err.contains("--auth-http-address") && err.contains("https"),
        "{err}"
    );
    let o = test_options(dir.path());
    assert_eq!(
        (
            o.auth_http_request_method.as_str(),
            o.http_client_connect_timeout,
            o.http_client_request_timeout
        ),
        ("get", 2000, 5000)
    );
}
