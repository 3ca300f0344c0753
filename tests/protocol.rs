//! Wire-level behaviour: exact frames for good and bad input, and that one client's bad input
//! never costs another client anything.

use crate::util::*;

/// One malformed input: what is sent after the magic, the exact error frame expected (None =
/// the server closes without one), and whether the connection must then be closed.
struct Row {
    name: &'static str,
    setup: &'static [&'static str],
    send: Vec<u8>,
    error: Option<&'static str>,
    fatal: bool,
}

fn line(s: &str) -> Vec<u8> {
    format!("{s}\n").into_bytes()
}

fn with_body(l: &str, size: u32, body: &[u8]) -> Vec<u8> {
    let mut v = line(l);
    v.extend_from_slice(&size.to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn rows() -> Vec<Row> {
    let big_line = vec![b'A'; 20_000];
    vec![
        Row {
            name: "empty line",
            setup: &[],
            send: line(""),
            error: Some("E_INVALID invalid command "),
            fatal: true,
        },
        Row {
            name: "lowercase verb",
            setup: &[],
            send: line("sub t c"),
            error: Some("E_INVALID invalid command sub"),
            fatal: true,
        },
        Row {
            name: "unknown verb",
            setup: &[],
            send: line("FOO"),
            error: Some("E_INVALID invalid command FOO"),
            fatal: true,
        },
        Row {
            name: "line over 16 KiB",
            setup: &[],
            send: big_line,
            error: None,
            fatal: true,
        },
        Row {
            name: "PUB no topic",
            setup: &[],
            send: line("PUB"),
            error: Some("E_INVALID PUB insufficient number of parameters"),
            fatal: true,
        },
        Row {
            name: "PUB bad topic",
            setup: &[],
            send: line("PUB bad!"),
            error: Some("E_BAD_TOPIC PUB topic name \"bad!\" is not valid"),
            fatal: true,
        },
        Row {
            name: "PUB double space",
            setup: &[],
            send: line("PUB  t"),
            error: Some("E_BAD_TOPIC PUB topic name \"\" is not valid"),
            fatal: true,
        },
        Row {
            name: "PUB size 0",
            setup: &[],
            send: with_body("PUB t", 0, b""),
            error: Some("E_BAD_MESSAGE PUB invalid message body size 0"),
            fatal: true,
        },
        Row {
            name: "PUB too big",
            setup: &[],
            send: with_body("PUB t", 2_097_152, b""),
            error: Some("E_BAD_MESSAGE PUB message too big 2097152 > 1048576"),
            fatal: true,
        },
        Row {
            name: "PUB size >= 2^31",
            setup: &[],
            send: with_body("PUB t", 0x8000_0000, b""),
            error: Some("E_BAD_MESSAGE PUB invalid message body size -2147483648"),
            fatal: true,
        },
        Row {
            name: "MPUB bad topic",
            setup: &[],
            send: line("MPUB a/b"),
            error: Some("E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"a/b\" is not valid"),
            fatal: true,
        },
        Row {
            name: "MPUB count 0",
            setup: &[],
            send: with_body("MPUB t", 4, &[0, 0, 0, 0]),
            error: Some("E_BAD_BODY MPUB invalid message count 0"),
            fatal: true,
        },
        Row {
            name: "MPUB body too big",
            setup: &[],
            send: with_body("MPUB t", 6_291_456, b""),
            error: Some("E_BAD_BODY MPUB body too big 6291456 > 5242880"),
            fatal: true,
        },
        Row {
            name: "DPUB bad timeout",
            setup: &[],
            send: line("DPUB t -5"),
            error: Some("E_INVALID DPUB could not parse timeout -5"),
            fatal: true,
        },
        Row {
            name: "DPUB timeout too long",
            setup: &[],
            send: line("DPUB t 3600001"),
            error: Some("E_INVALID DPUB timeout 3600001 out of range 0-3600000"),
            fatal: true,
        },
        Row {
            name: "RDY before SUB",
            setup: &[],
            send: line("RDY 1"),
            error: Some("E_INVALID cannot RDY in current state"),
            fatal: true,
        },
        Row {
            name: "FIN before SUB",
            setup: &[],
            send: line("FIN 0000000000000000"),
            error: Some("E_INVALID cannot FIN in current state"),
            fatal: true,
        },
        Row {
            name: "CLS before SUB",
            setup: &[],
            send: line("CLS"),
            error: Some("E_INVALID cannot CLS in current state"),
            fatal: true,
        },
        Row {
            name: "SUB bad channel",
            setup: &[],
            send: line("SUB t bad!"),
            error: Some("E_BAD_CHANNEL SUB channel name \"bad!\" is not valid"),
            fatal: true,
        },
        Row {
            name: "SUB twice",
            setup: &["SUB t c"],
            send: line("SUB t c"),
            error: Some("E_INVALID cannot SUB in current state"),
            fatal: true,
        },
        Row {
            name: "RDY over max",
            setup: &["SUB t c"],
            send: line("RDY 2501"),
            error: Some("E_INVALID RDY count 2501 out of range 0-2500"),
            fatal: true,
        },
        Row {
            name: "RDY negative",
            setup: &["SUB t c"],
            send: line("RDY -1"),
            error: Some("E_INVALID RDY could not parse count -1"),
            fatal: true,
        },
        Row {
            name: "FIN short id",
            setup: &["SUB t c"],
            send: line("FIN 123"),
            error: Some("E_INVALID invalid message ID"),
            fatal: true,
        },
        Row {
            name: "FIN unknown id",
            setup: &["SUB t c"],
            send: line("FIN 0000000000000000"),
            error: Some("E_FIN_FAILED FIN 0000000000000000 failed ID not in flight"),
            fatal: false,
        },
        Row {
            name: "REQ unknown id",
            setup: &["SUB t c"],
            send: line("REQ 00000000000000zz 0"),
            error: Some("E_REQ_FAILED REQ 00000000000000zz failed ID not in flight"),
            fatal: false,
        },
        Row {
            name: "TOUCH unknown id",
            setup: &["SUB t c"],
            send: line("TOUCH 0000000000000001"),
            error: Some("E_TOUCH_FAILED TOUCH 0000000000000001 failed ID not in flight"),
            fatal: false,
        },
        Row {
            name: "IDENTIFY bad JSON",
            setup: &[],
            send: with_body("IDENTIFY", 5, b"{oops"),
            error: Some("E_BAD_BODY IDENTIFY failed to decode JSON body"),
            fatal: true,
        },
        Row {
            name: "IDENTIFY heartbeat too long",
            setup: &[],
            send: with_body("IDENTIFY", 29, b"{\"heartbeat_interval\":999999}"),
            error: Some("E_BAD_BODY IDENTIFY heartbeat interval (999999) is invalid"),
            fatal: true,
        },
        Row {
            name: "AUTH without auth",
            setup: &[],
            send: with_body("AUTH", 3, b"abc"),
            error: Some("E_AUTH_DISABLED AUTH disabled"),
            fatal: true,
        },
    ]
}

#[test]
fn hostile_input_table() {
    let (server, _dir) = start_server();
    for row in rows() {
        let mut c = Raw::connect(server.addr);
        for s in row.setup {
            c.cmd(s, None);
            c.expect_response(b"OK");
        }
        c.send(&row.send);
        if let Some(e) = row.error {
            let (ft, data) = c.frame_skip_heartbeats();
            assert_eq!(
                (ft, String::from_utf8_lossy(&data).into_owned()),
                (FRAME_ERROR, e.to_owned()),
                "row {:?}",
                row.name
            );
        }
        if row.fatal {
            c.expect_closed();
        } else {
            // A non-fatal error leaves the connection usable.
            let frames = c.sync();
            assert!(
                frames.is_empty(),
                "row {:?}: unexpected frames {frames:?}",
                row.name
            );
        }
        // The server still answers the next client.
        let mut next = Raw::connect(server.addr);
        next.publish("still_alive", b"yes");
    }
}

#[test]
fn bad_magic_gets_bare_e_bad_protocol() {
    let (server, _dir) = start_server();
    for magic in [&b"  V1"[..], b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x02"] {
        let mut c = Raw::connect_no_magic(server.addr);
        c.send(magic);
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut c.stream, &mut bytes).unwrap();
        assert_eq!(
            bytes, b"\x00\x00\x00\x12\x00\x00\x00\x01E_BAD_PROTOCOL",
            "magic {magic:?}"
        );
    }
}

#[test]
fn identify_with_feature_negotiation_replies_json_in_nsqd_order() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    let reply = c.identify(
        r#"{"client_id":"c1","hostname":"h","feature_negotiation":true,"user_agent":"probe/1"}"#,
    );
    let expected = format!(
        "{{\"max_rdy_count\":2500,\"version\":\"{}\",\"max_msg_timeout\":900000,\"msg_timeout\":60000,\"tls_v1\":false,\"deflate\":false,\"deflate_level\":6,\"max_deflate_level\":6,\"snappy\":false,\"sample_rate\":0,\"auth_required\":false,\"output_buffer_size\":16384,\"output_buffer_timeout\":250}}",
        corq::NSQD_VERSION
    );
    assert_eq!(String::from_utf8(reply).unwrap(), expected);
    let mut plain = Raw::connect(server.addr);
    assert_eq!(plain.identify(r#"{"client_id":"c2"}"#), b"OK");
}

#[test]
fn pipelined_commands_split_at_every_byte_are_all_answered() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    let mut bytes = Vec::new();
    for i in 0..5u8 {
        bytes.extend_from_slice(b"PUB pipe\n");
        bytes.extend_from_slice(&2u32.to_be_bytes());
        bytes.extend_from_slice(&[b'm', b'0' + i]);
    }
    bytes.extend_from_slice(b"NOP\n");
    for b in &bytes {
        c.send(std::slice::from_ref(b));
    }
    for _ in 0..5 {
        c.expect_response(b"OK");
    }
    c.sub("pipe", "ch");
    c.cmd("RDY 5", None);
    for i in 0..5u8 {
        let (_, attempts, _, body) = c.expect_message();
        assert_eq!((attempts, body), (1, vec![b'm', b'0' + i]));
    }
}

#[test]
fn heartbeats_are_sent_and_two_missed_close_the_connection() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.identify(r#"{"heartbeat_interval":1000}"#);
    let start = std::time::Instant::now();
    assert_eq!(c.frame(), (FRAME_RESPONSE, b"_heartbeat_".to_vec()));
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(990),
        "heartbeat came early"
    );
    // No NOP: the connection goes once 2 intervals pass with no command (nsqd may or may not
    // get one more heartbeat out at the same instant; nothing else may come).
    while let Some(f) = c.try_frame() {
        assert_eq!(f, (FRAME_RESPONSE, b"_heartbeat_".to_vec()));
    }
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(1990),
        "closed early"
    );
}

#[test]
fn cls_answers_close_wait_and_fin_still_works() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.publish("clst", b"one");
    c.sub("clst", "ch");
    c.cmd("RDY 1", None);
    let (_, _, id, _) = c.expect_message();
    c.cmd("CLS", None);
    c.expect_response(b"CLOSE_WAIT");
    c.cmd(&format!("FIN {id}"), None);
    c.cmd("RDY 1", None); // ignored after CLS, as nsqd
    assert!(c.sync().is_empty());
    c.cmd("CLS", None);
    c.expect_error("E_INVALID cannot CLS in current state");
    c.expect_closed();
}

#[test]
fn max_channel_consumers_refuses_the_extra_subscriber() {
    let dir = TempDir::new("maxcons");
    let opts = corq::Options {
        max_channel_consumers: 1,
        ..test_options(dir.path())
    };
    let server = TestServer::start(opts);
    let mut a = Raw::connect(server.addr);
    a.sub("mc", "ch");
    let mut b = Raw::connect(server.addr);
    b.cmd("SUB mc ch", None);
    b.expect_error("E_SUB_FAILED SUB failed consumers for mc:ch exceeds limit of 1");
    b.expect_closed();
}
