//! Client tests: the pure frame parser, and each client type against a scripted fake server
//! that asserts what the client sent byte for byte. Every socket has a read timeout.

use super::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
const ID: &[u8; 16] = b"18a7689298807000";

fn frame(ty: u32, data: &[u8]) -> Vec<u8> {
    let mut v = ((data.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&ty.to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn msg_frame(attempts: u16, id: &[u8; 16], body: &[u8]) -> Vec<u8> {
    let mut d = 1_700_000_000_000_000_000i64.to_be_bytes().to_vec();
    d.extend_from_slice(&attempts.to_be_bytes());
    d.extend_from_slice(id);
    d.extend_from_slice(body);
    frame(2, &d)
}

fn with_len(line: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = line.to_vec();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// The server side of one scripted connection.
struct Peer(TcpStream);

impl Peer {
    fn expect(&mut self, want: &[u8]) {
        let mut got = vec![0; want.len()];
        self.0.read_exact(&mut got).expect("read from client");
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    fn line(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = [0u8; 1];
        while b[0] != b'\n' {
            self.0.read_exact(&mut b).expect("read line");
            out.push(b[0]);
        }
        out
    }

    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("write to client");
    }

    fn ok(&mut self) {
        self.send(&frame(0, b"OK"));
    }
}

/// Runs `script` as the server of the first connection; returns its address and thread.
fn fake(script: impl FnOnce(&mut Peer) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let handle = thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(T)).expect("timeout");
        let mut peer = Peer(s);
        peer.expect(b"  V2");
        script(&mut peer);
    });
    (addr, handle)
}

fn producer(addr: SocketAddr) -> Producer {
    let mut p = Producer::connect(addr).expect("connect");
    p.conn().set_read_timeout(Some(T)).expect("timeout");
    p
}

#[test]
fn parse_frame_every_prefix_and_kinds() {
    let mut buf = frame(0, b"OK");
    buf.extend(frame(1, b"E_INVALID x"));
    buf.extend(msg_frame(3, ID, b"body"));
    for cut in 0..buf.len() {
        let mut pos = 0;
        while let Some((_, n)) = parse_frame(&buf[pos..cut]).expect("prefix is fine") {
            pos += n;
        }
    }
    let (f1, n1) = parse_frame(&buf).unwrap().unwrap();
    let (f2, n2) = parse_frame(&buf[n1..]).unwrap().unwrap();
    let (f3, n3) = parse_frame(&buf[n1 + n2..]).unwrap().unwrap();
    assert_eq!(n1 + n2 + n3, buf.len());
    assert_eq!(f1, Frame::Response(b"OK".to_vec()));
    assert_eq!(f2, Frame::Error(b"E_INVALID x".to_vec()));
    let Frame::Message(m) = f3 else {
        panic!("{f3:?}")
    };
    assert_eq!((m.attempts, &m.id, &m.body[..]), (3, ID, &b"body"[..]));
    assert_eq!(m.timestamp_ns, 1_700_000_000_000_000_000);
    assert!(parse_frame(&frame(0, b"_heartbeat_"))
        .unwrap()
        .unwrap()
        .0
        .is_heartbeat());
}

#[test]
fn parse_frame_rejects_bad_sizes_and_types() {
    let bad: Vec<Vec<u8>> = vec![
        vec![0, 0, 0, 3],
        vec![0, 0, 0, 0],
        vec![0xff, 0xff, 0xff, 0xff],
        (MAX_FRAME_SIZE + 1).to_be_bytes().to_vec(),
        frame(3, b"x"),
        frame(2, b"too short for a message header"[..25].as_ref()),
        b"\x15\x03\x03\x00\x02".to_vec(), // a TLS alert read as a size
    ];
    for b in bad {
        assert!(
            matches!(parse_frame(&b), Err(ClientError::Protocol(_))),
            "{b:?}"
        );
    }
}

#[test]
fn producer_publish_mpub_dpub_exact_bytes() {
    let (addr, server) = fake(|p| {
        p.expect(&with_len(b"PUB t1\n", b"hello"));
        p.ok();
        p.expect(&with_len(b"PUB t1\n", b"again"));
        p.send(&frame(0, b"_heartbeat_"));
        p.expect(b"NOP\n");
        p.ok();
        let mut mpub = b"MPUB t1\n\x00\x00\x00\x10\x00\x00\x00\x02".to_vec();
        mpub.extend_from_slice(b"\x00\x00\x00\x02m1\x00\x00\x00\x02m2");
        p.expect(&mpub);
        p.ok();
        p.expect(&with_len(b"DPUB t1 1000\n", b"later"));
        p.ok();
        p.expect(&with_len(b"PUB bad!\n", b"x"));
        p.send(&frame(
            1,
            b"E_BAD_TOPIC PUB topic name \"bad!\" is not valid",
        ));
    });
    let mut pr = producer(addr);
    pr.publish("t1", b"hello").unwrap();
    pr.publish("t1", b"again").unwrap();
    pr.mpub("t1", &[b"m1", b"m2"]).unwrap();
    pr.dpub("t1", 1000, b"later").unwrap();
    match pr.publish("bad!", b"x") {
        Err(ClientError::Server(s)) => {
            assert_eq!(s, "E_BAD_TOPIC PUB topic name \"bad!\" is not valid")
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn producer_pipelines_up_to_window() {
    let (addr, server) = fake(|p| {
        let pubs: Vec<Vec<u8>> = (0..5)
            .map(|i| with_len(b"PUB t\n", format!("m{i}").as_bytes()))
            .collect();
        // The client must send two before it waits for anything.
        p.expect(&pubs[0]);
        p.expect(&pubs[1]);
        for next in &pubs[2..] {
            p.ok();
            p.expect(next);
        }
        p.ok();
        p.ok();
    });
    let mut pr = producer(addr);
    let n = pr
        .publish_pipelined("t", (0..5).map(|i| format!("m{i}")), 2)
        .unwrap();
    assert_eq!(n, 5);
    server.join().unwrap();
}

#[test]
fn consumer_session_exact_bytes() {
    let (addr, server) = fake(|p| {
        assert_eq!(p.line(), b"IDENTIFY\n");
        let mut len = [0u8; 4];
        p.0.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        p.0.read_exact(&mut body).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["feature_negotiation"], true);
        p.send(&frame(0, br#"{"max_rdy_count":2500}"#));
        p.expect(b"SUB t c\n");
        p.ok();
        p.expect(b"RDY 1\n");
        p.send(&frame(0, b"_heartbeat_"));
        p.expect(b"NOP\n");
        p.send(&msg_frame(1, ID, b"msg0"));
        p.expect(b"FIN 18a7689298807000\n");
        p.send(&frame(
            1,
            b"E_FIN_FAILED FIN 18a7689298807000 failed ID not in flight",
        ));
        p.send(&msg_frame(2, ID, b"msg1"));
        p.expect(b"REQ 18a7689298807000 100\n");
        p.expect(b"TOUCH 18a7689298807000\n");
        p.expect(b"CLS\n");
        p.send(&msg_frame(1, ID, b"late"));
        p.send(&frame(0, b"CLOSE_WAIT"));
        p.send(&frame(1, b"E_INVALID cannot CLS in current state"));
    });
    let mut c = Consumer::connect(addr, "t", "c").unwrap();
    c.rdy(1).unwrap();
    let m = c.next_message(T).unwrap().expect("a message");
    assert_eq!(
        (m.attempts, &m.body[..], m.id_str().as_str()),
        (1, &b"msg0"[..], "18a7689298807000")
    );
    c.fin(&m.id).unwrap();
    match c.next_message(T) {
        Err(ClientError::NonFatal(s)) => assert!(s.starts_with("E_FIN_FAILED FIN 18a7")),
        other => panic!("{other:?}"),
    }
    let m = c
        .next_message(T)
        .unwrap()
        .expect("still usable after a non-fatal error");
    assert_eq!(m.body, b"msg1");
    c.req(&m.id, 100).unwrap();
    c.touch(&m.id).unwrap();
    c.cls().unwrap();
    assert_eq!(
        c.next_message(T).unwrap().expect("kept during cls").body,
        b"late"
    );
    assert!(matches!(c.next_message(T), Err(ClientError::Server(s)) if s.starts_with("E_INVALID")));
    server.join().unwrap();
}

#[test]
fn consumer_sub_error_is_fatal() {
    let (addr, server) = fake(|p| {
        p.line();
        let mut len = [0u8; 4];
        p.0.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        p.0.read_exact(&mut body).unwrap();
        p.ok(); // a server without feature negotiation answers OK
        p.expect(b"SUB t c!\n");
        p.send(&frame(
            1,
            b"E_BAD_CHANNEL SUB channel name \"c!\" is not valid",
        ));
    });
    let r = Consumer::connect(addr, "t", "c!");
    assert!(matches!(r, Err(ClientError::Server(s)) if s.starts_with("E_BAD_CHANNEL")));
    server.join().unwrap();
}

#[test]
fn next_message_times_out_and_resumes_mid_frame() {
    let (addr, server) = fake(|p| {
        p.line();
        let mut len = [0u8; 4];
        p.0.read_exact(&mut len).unwrap();
        let mut body = vec![0; u32::from_be_bytes(len) as usize];
        p.0.read_exact(&mut body).unwrap();
        p.ok();
        p.line();
        p.ok();
        p.expect(b"RDY 5\n");
        let m = msg_frame(1, ID, b"split");
        p.send(&m[..13]);
        thread::sleep(Duration::from_millis(300));
        p.send(&m[13..]);
        p.expect(b"NOP\n"); // keeps the socket open until the client is done
    });
    let mut c = Consumer::connect(addr, "t", "c").unwrap();
    c.rdy(5).unwrap();
    assert_eq!(c.next_message(Duration::from_millis(50)).unwrap(), None);
    let m = c.next_message(T).unwrap().expect("resumed");
    assert_eq!(m.body, b"split");
    c.conn().send_command("NOP", None).unwrap();
    c.conn().flush().unwrap();
    server.join().unwrap();
}

#[test]
fn oversized_frame_is_a_protocol_error() {
    let (addr, server) = fake(|p| {
        p.expect(&with_len(b"PUB t\n", b"x"));
        p.send(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
    });
    let mut pr = producer(addr);
    assert!(matches!(
        pr.publish("t", b"x"),
        Err(ClientError::Protocol(_))
    ));
    server.join().unwrap();
}

#[test]
fn eof_is_an_io_error() {
    let (addr, server) = fake(|p| p.expect(&with_len(b"PUB t\n", b"x")));
    let mut pr = producer(addr);
    let r = pr.publish("t", b"x");
    assert!(matches!(r, Err(ClientError::Io(_))), "{r:?}");
    server.join().unwrap();
}

#[test]
fn error_frame_classification() {
    assert!(matches!(
        ClientError::from_error_frame(b"E_REQ_FAILED x"),
        ClientError::NonFatal(_)
    ));
    assert!(matches!(
        ClientError::from_error_frame(b"E_TOUCH_FAILED x"),
        ClientError::NonFatal(_)
    ));
    assert!(matches!(
        ClientError::from_error_frame(b"E_BAD_PROTOCOL"),
        ClientError::Server(_)
    ));
    assert!(matches!(
        ClientError::from_error_frame(b"E_FIN_FAILEDX y"),
        ClientError::Server(_)
    ));
}
