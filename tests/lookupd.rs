//! `corq lookupd` and corqd's lookupd registration, with real processes and sockets: a cluster
//! of three nodes, a node deleting a topic or dying, channel pre-creation on a new node, a
//! lookupd that is down, restarted, garbage-answering or stalled, the runtime address change,
//! and hostile input to lookupd itself.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use corq::client::{Consumer, Producer};
use corq::lookupd::{Lookupd, LookupdHandle, LookupdOptions};
use serde_json::Value;

use crate::util::*;

/// An in-process `corq lookupd`, stopped on drop.
struct TestLookupd {
    tcp: SocketAddr,
    http: SocketAddr,
    handle: LookupdHandle,
    thread: Option<JoinHandle<()>>,
}

impl TestLookupd {
    fn start() -> TestLookupd {
        TestLookupd::start_on(LookupdOptions::local())
    }

    fn start_on(opts: LookupdOptions) -> TestLookupd {
        let mut l = Lookupd::bind(&opts).unwrap();
        let (tcp, http, handle) = (l.tcp_addr(), l.http_addr(), l.handle());
        let thread = std::thread::spawn(move || l.run().unwrap());
        TestLookupd {
            tcp,
            http,
            handle,
            thread: Some(thread),
        }
    }

    /// The `tcp_port`s of `/lookup?topic=`'s producers (empty on 404).
    fn producer_ports(&self, topic: &str) -> Vec<u16> {
        let (status, body) = http_request(self.http, "GET", &format!("/lookup?topic={topic}"), b"");
        if status == 404 {
            return Vec::new();
        }
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let mut ports: Vec<u16> = v["producers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                assert_eq!(p["broadcast_address"], "127.0.0.1");
                p["tcp_port"].as_u64().unwrap() as u16
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    fn nodes(&self) -> usize {
        let body = http_get(self.http, "/nodes");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["producers"].as_array().unwrap().len()
    }

    fn channels(&self, topic: &str) -> Vec<String> {
        let body = http_get(self.http, &format!("/channels?topic={topic}"));
        let v: Value = serde_json::from_str(&body).unwrap();
        serde_json::from_value(v["channels"].clone()).unwrap()
    }
}

impl Drop for TestLookupd {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

/// A corqd registering with `lookupds`, broadcasting 127.0.0.1.
fn node(lookupds: &[SocketAddr]) -> (TestServer, TempDir) {
    let dir = TempDir::new("lkp");
    let mut opts = test_options(dir.path());
    opts.broadcast_address = "127.0.0.1".into();
    opts.lookupd_tcp_address = lookupds.iter().map(|a| a.to_string()).collect();
    (TestServer::start(opts), dir)
}

fn sorted(mut v: Vec<u16>) -> Vec<u16> {
    v.sort_unstable();
    v
}

#[test]
fn three_nodes_register_and_leave_by_topic_delete() {
    let lk = TestLookupd::start();
    let nodes: Vec<_> = (0..3).map(|_| node(&[lk.tcp])).collect();
    for (i, (n, _)) in nodes.iter().enumerate() {
        Producer::connect(n.addr)
            .unwrap()
            .publish("lt", format!("m{i}").as_bytes())
            .unwrap();
    }
    let all = sorted(nodes.iter().map(|(n, _)| n.addr.port()).collect());
    wait_until("all three nodes in /lookup", || {
        lk.producer_ports("lt") == all
    });
    assert_eq!(lk.nodes(), 3);

    let (status, _) = http_request(nodes[0].0.http, "POST", "/topic/delete?topic=lt", b"");
    assert_eq!(status, 200);
    let rest = sorted(vec![nodes[1].0.addr.port(), nodes[2].0.addr.port()]);
    wait_until("node 0 gone from /lookup", || {
        lk.producer_ports("lt") == rest
    });

    let (status, _) = http_request(
        nodes[1].0.http,
        "POST",
        "/channel/create?topic=lt&channel=lc",
        b"",
    );
    assert_eq!(status, 200);
    wait_until("the channel in /channels", || lk.channels("lt") == ["lc"]);
}

#[test]
fn killed_node_leaves_when_its_connection_drops() {
    let lk = TestLookupd::start();
    let dir = TempDir::new("lkk");
    let tcp = lk.tcp.to_string();
    let flags = [
        "--lookupd-tcp-address",
        &tcp,
        "--broadcast-address",
        "127.0.0.1",
    ];
    let child = ChildServer::start(dir.path(), &flags);
    Producer::connect(child.addr)
        .unwrap()
        .publish("kt", b"x")
        .unwrap();
    let port = child.addr.port();
    wait_until("the node registered", || lk.producer_ports("kt") == [port]);
    child.kill9();
    wait_until("the killed node unregistered", || {
        lk.producer_ports("kt").is_empty() && lk.nodes() == 0
    });
    // The topic key stays (nsqlookupd keeps registrations until they are deleted).
    assert!(http_get(lk.http, "/topics").contains("\"kt\""));
}

#[test]
fn new_node_precreates_channels_that_exist_elsewhere() {
    let lk = TestLookupd::start();
    let (a, _da) = node(&[lk.tcp]);
    let mut sub = Raw::connect(a.addr);
    sub.sub("pt", "pc");
    wait_until("channel pc known to lookupd", || {
        lk.channels("pt") == ["pc"]
    });

    let (b, _db) = node(&[lk.tcp]);
    wait_until("node b connected", || lk.nodes() == 2);
    // A consumer on another channel creates the topic on b first: pc, when lookupd's answer
    // brings it, is then a second channel and must still start at the topic's first message.
    let mut first = Raw::connect(b.addr);
    first.sub("pt", "first");
    let mut p = Producer::connect(b.addr).unwrap();
    for i in 0..5 {
        p.publish("pt", format!("b{i}").as_bytes()).unwrap();
    }
    wait_until("pc pre-created on node b", || {
        http_get(b.http, "/stats?format=json&topic=pt").contains("\"channel_name\":\"pc\"")
    });
    let mut c = Consumer::connect(b.addr, "pt", "pc").unwrap();
    c.rdy(10).unwrap();
    for i in 0..5 {
        let m = c
            .next_message(Duration::from_secs(10))
            .unwrap()
            .expect("a message");
        assert_eq!(
            m.body,
            format!("b{i}").into_bytes(),
            "published before the channel existed"
        );
        c.fin(&m.id).unwrap();
    }
}

#[test]
fn lookupd_down_at_start_then_up_then_restarted() {
    // A port nobody listens on (bound, then released).
    let tcp = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (n, _d) = node(&[tcp]);
    // The node serves while its lookupd is unreachable.
    Producer::connect(n.addr)
        .unwrap()
        .publish("dt", b"x")
        .unwrap();
    let opts = LookupdOptions {
        tcp_address: tcp,
        ..LookupdOptions::local()
    };
    let lk = TestLookupd::start_on(opts.clone());
    let port = n.addr.port();
    wait_until("registration once lookupd is up", || {
        lk.producer_ports("dt") == [port]
    });
    let http = lk.http;
    drop(lk);
    Producer::connect(n.addr)
        .unwrap()
        .publish("dt2", b"y")
        .unwrap();
    let lk = TestLookupd::start_on(LookupdOptions {
        http_address: http,
        ..opts
    });
    wait_until("everything registered again after a restart", || {
        lk.producer_ports("dt") == [port] && lk.producer_ports("dt2") == [port]
    });
}

/// A fake lookupd that answers every connection with `reply` (or, if empty, never answers)
/// and counts connections.
fn fake_lookupd(reply: &'static [u8]) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            seen.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let _ = s.read(&mut buf);
                if !reply.is_empty() {
                    let _ = s.write_all(reply);
                }
                // Read (and never answer) until corqd closes the connection.
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    (addr, count)
}

#[test]
fn garbage_and_stalled_lookupds_never_stop_the_node() {
    let (garbage, tries) = fake_lookupd(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    let (stalled, stalled_tries) = fake_lookupd(b"");
    let (huge, huge_tries) = fake_lookupd(b"\xff\xff\xff\xffxxxx");
    let (n, _d) = node(&[garbage, stalled, huge]);
    let mut p = Producer::connect(n.addr).unwrap();
    let mut c = Consumer::connect(n.addr, "gt", "gc").unwrap();
    c.rdy(100).unwrap();
    for round in 0..3 {
        for i in 0..20 {
            p.publish("gt", format!("{round}-{i}").as_bytes()).unwrap();
        }
        for _ in 0..20 {
            let m = c
                .next_message(Duration::from_secs(10))
                .unwrap()
                .expect("delivery");
            c.fin(&m.id).unwrap();
        }
    }
    // corqd dropped the garbage answers and the silent lookupd (after its reply deadline)
    // and came back, with backoff, to try again.
    wait_until("reconnects after garbage and silence", || {
        tries.load(Ordering::SeqCst) >= 2
            && huge_tries.load(Ordering::SeqCst) >= 2
            && stalled_tries.load(Ordering::SeqCst) >= 2
    });
    assert_eq!(http_get(n.http, "/ping"), "OK");
}

#[test]
fn put_config_changes_the_lookupd_set() {
    let lk = TestLookupd::start();
    let (n, _d) = node(&[]);
    Producer::connect(n.addr)
        .unwrap()
        .publish("ct", b"x")
        .unwrap();
    let body = format!("[\"{}\"]", lk.tcp);
    let (status, reply) = http_request(
        n.http,
        "PUT",
        "/config/nsqlookupd_tcp_addresses",
        body.as_bytes(),
    );
    assert_eq!((status, reply.as_str()), (200, body.as_str()));
    let port = n.addr.port();
    wait_until("registered after PUT", || lk.producer_ports("ct") == [port]);
    let (status, _) = http_request(n.http, "PUT", "/config/nsqlookupd_tcp_addresses", b"[]");
    assert_eq!(status, 200);
    wait_until("dropped after PUT []", || lk.nodes() == 0);
}

/// Sends `bytes` on a fresh V1 connection and reads every reply frame until lookupd closes.
fn v1_session(addr: SocketAddr, bytes: &[u8]) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    // lookupd closes on a fatal error, possibly with our bytes still unread on its side, which
    // makes the close a reset: keep what arrived before it (a write into the reset is fine too).
    let _ = s.write_all(bytes);
    let mut all = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("reading lookupd's replies: {e}"),
        }
    }
    let mut frames = Vec::new();
    let mut rest = &all[..];
    while rest.len() >= 4 {
        let n = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
        frames.push(String::from_utf8_lossy(&rest[4..4 + n]).into_owned());
        rest = &rest[4 + n..];
    }
    frames
}

#[test]
fn lookupd_hostile_input_gets_nsqlookupds_errors_and_it_keeps_serving() {
    let lk = TestLookupd::start();
    let body = br#"{"broadcast_address":"127.0.0.1","hostname":"h","http_port":1,"tcp_port":2,"version":"1.3.0"}"#;
    let mut identify = b"IDENTIFY\n".to_vec();
    identify.extend_from_slice(&(body.len() as u32).to_be_bytes());
    identify.extend_from_slice(body);
    let twice = [&b"  V1"[..], &identify, &identify].concat();
    let frames = v1_session(lk.tcp, &twice);
    assert_eq!(frames.len(), 2);
    assert!(
        frames[0].starts_with("{\"broadcast_address\":\"127.0.0.1\""),
        "{frames:?}"
    );
    assert_eq!(frames[1], "E_INVALID cannot IDENTIFY again");
    assert_eq!(v1_session(lk.tcp, b"  V2PING\n"), ["E_BAD_PROTOCOL"]);
    let unidentified = v1_session(lk.tcp, b"  V1PING\nREGISTER t\nPING\n");
    assert_eq!(unidentified, ["OK", "E_INVALID client must IDENTIFY"]);
    let mut huge = b"  V1IDENTIFY\n".to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes()[..]);
    assert_eq!(
        v1_session(lk.tcp, &huge),
        ["E_BAD_BODY IDENTIFY failed to read body size"]
    );
    let big = (1u32 << 20).to_be_bytes();
    let frames = v1_session(lk.tcp, &[&b"  V1IDENTIFY\n"[..], &big].concat());
    assert_eq!(
        frames,
        [format!(
            "E_BAD_BODY IDENTIFY body too big {} > 65536",
            1 << 20
        )]
    );
    let bad_topic = [&b"  V1"[..], &identify, b"REGISTER a/b\n"].concat();
    assert_eq!(
        v1_session(lk.tcp, &bad_topic)[1],
        "E_BAD_TOPIC REGISTER topic name 'a/b' is not valid"
    );
    // HTTP: an oversized body is refused before it is read, a malformed request gets Go's 400.
    let (status, body) = http_request(
        lk.http,
        "POST",
        "/topic/create?topic=x",
        &vec![b'x'; 100 * 1024],
    );
    assert_eq!(
        (status, body.as_str()),
        (413, r#"{"message":"BODY_TOO_BIG"}"#)
    );
    let (status, _) = http_request(lk.http, "GET", "/lookup?topic=%zz", b"");
    assert_eq!(status, 400);
    // Still serving, and none of the above registered anything.
    assert_eq!(http_get(lk.http, "/ping"), "OK");
    assert_eq!(http_get(lk.http, "/topics"), r#"{"topics":[]}"#);
}

/// A refused body is not read, and closing a socket with unread input sends a reset that can
/// destroy the reply before the client reads it: lookupd shuts its side and discards the rest
/// first (as Go's HTTP server does), so a client that reads late still gets its 413.
#[test]
fn refused_body_reply_survives_a_client_that_reads_late() {
    let lk = TestLookupd::start();
    let (read, reply) = post_and_read_late(lk.http, "/topic/create?topic=x", &[b'x'; 200 * 1024]);
    assert!(read.is_ok(), "{read:?} after {reply:?}");
    assert!(reply.starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(reply.ends_with(r#"{"message":"BODY_TOO_BIG"}"#), "{reply}");
    assert_eq!(http_get(lk.http, "/ping"), "OK");
}

#[test]
fn clean_shutdown_unregisters_ephemeral_topics() {
    let lk = TestLookupd::start();
    let (n, _d) = node(&[lk.tcp]);
    let mut c = Raw::connect(n.addr);
    c.sub("et#ephemeral", "ec#ephemeral");
    wait_until("the ephemeral topic registered", || {
        http_get(lk.http, "/topics").contains("et#ephemeral")
    });
    assert_eq!(
        http_get(n.http, "/config/broadcast_tcp_port"),
        "0",
        "0 means the bound port"
    );
    n.stop();
    // A dropped connection alone leaves registration keys behind; the UNREGISTER sent at a
    // clean shutdown removes an ephemeral topic left without producers.
    wait_until("the ephemeral topic unregistered", || {
        !http_get(lk.http, "/topics").contains("et#ephemeral")
    });
    assert_eq!(lk.nodes(), 0);
}
