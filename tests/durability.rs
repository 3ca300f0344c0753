//! Strict durability (`--sync-every=1`): every OK waits for its sync, replies keep command order,
//! and many publishers share syncs.

use std::collections::BTreeSet;

use crate::util::*;

fn strict_server(dir: &TempDir) -> TestServer {
    TestServer::start(corq::Options {
        sync_every: 1,
        ..test_options(dir.path())
    })
}

#[test]
fn strict_mode_replies_keep_command_order() {
    let dir = TempDir::new("strict-order");
    let server = strict_server(&dir);
    let mut c = Raw::connect(server.addr);
    c.sub("so", "ch");
    // A publish whose OK waits for a sync, then a command that fails at once: the error
    // must not overtake the OK.
    let mut bytes = b"PUB so\n\x00\x00\x00\x01a".to_vec();
    bytes.extend_from_slice(b"FIN 0000000000000000\n");
    c.send(&bytes);
    c.expect_response(b"OK");
    c.expect_error("E_FIN_FAILED FIN 0000000000000000 failed ID not in flight");
}

#[test]
fn strict_mode_pipelined_publishers_all_get_ok_and_nothing_is_lost() {
    let dir = TempDir::new("strict-many");
    let server = strict_server(&dir);
    let addr = server.addr;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut p = Raw::connect(addr);
                let mut bytes = Vec::new();
                for i in 0..100 {
                    let body = format!("t{t}-{i:03}");
                    bytes.extend_from_slice(b"PUB sm\n");
                    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
                    bytes.extend_from_slice(body.as_bytes());
                }
                p.send(&bytes);
                for _ in 0..100 {
                    p.expect_response(b"OK");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = Raw::connect(addr);
    c.sub("sm", "ch");
    c.cmd("RDY 1000", None);
    let mut got = BTreeSet::new();
    while got.len() < 400 {
        let (_, _, id, body) = c.expect_message();
        c.cmd(&format!("FIN {id}"), None);
        assert!(got.insert(body), "duplicate");
    }
}

/// A strict-mode HTTP publish answers after its sync; a client that asked for the connection to
/// close (`Connection: close`, or HTTP/1.0 without keep-alive) still gets that answer first.
#[test]
fn strict_mode_http_publish_answers_a_closing_request_before_closing() {
    let dir = TempDir::new("strict-http-close");
    let server = strict_server(&dir);
    // `http_request` sends HTTP/1.1 with `Connection: close`.
    let (status, body) = http_request(server.http, "POST", "/pub?topic=shc", b"one");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, body) = http_request(server.http, "POST", "/mpub?topic=shc", b"two\nthree");
    assert_eq!((status, body.as_str()), (200, "OK"));

    let mut s = std::net::TcpStream::connect(server.http).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(
        &mut s,
        b"POST /pub?topic=shc HTTP/1.0\r\nContent-Length: 4\r\n\r\nfour",
    )
    .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply:?}");
    assert!(reply.ends_with("\r\n\r\nOK"), "{reply:?}");

    let stats = http_get(server.http, "/stats?format=json&topic=shc");
    assert!(stats.contains(r#""message_count":4"#), "{stats}");
}
