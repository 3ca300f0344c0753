//! Abusive clients: silent connections, many idle connections, a consumer that stops reading,
//! and a publisher that sends one byte at a time. Each costs the others nothing.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn a_connection_without_magic_is_closed_at_the_handshake_deadline() {
    let dir = TempDir::new("handshake");
    let opts = corq::Options {
        handshake_timeout: 300,
        ..test_options(dir.path())
    };
    let server = TestServer::start(opts);
    let mut silent = Raw::connect_no_magic(server.addr);
    let mut partial = Raw::connect_no_magic(server.addr);
    partial.send(b"  V");
    let start = Instant::now();
    silent.expect_closed();
    partial.expect_closed();
    assert!(
        start.elapsed() >= Duration::from_millis(290),
        "closed after {:?}",
        start.elapsed()
    );
    // A connection that did send the magic is not affected.
    let mut ok = Raw::connect(server.addr);
    std::thread::sleep(Duration::from_millis(400));
    ok.publish("hs", b"still here");
}

#[test]
fn ten_thousand_idle_connections_are_held() {
    // The server is a child process (corqd raises its own descriptor limit, as Go's runtime
    // does for nsqd); this process holds the 10,000 client ends.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on our own process with a valid struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    // Leave room for the other tests running in this process.
    let n = 10_000usize.min((lim.rlim_cur as usize).saturating_sub(2000));
    assert!(n >= 1000, "fd limit too low to test: {}", lim.rlim_cur);
    let dir = TempDir::new("idle");
    let child = ChildServer::start(dir.path(), &[]);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(Raw::connect(child.addr));
    }
    // Every one of them is served: a round trip on a sample, and the last one.
    for i in (0..n).step_by(n / 10) {
        conns[i].cmd("NOP", None);
        conns[i].publish("idle", b"x");
    }
    conns[n - 1].publish("idle", b"last");
    let rss_kib = std::fs::read_to_string(format!("/proc/{}/status", child.child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(str::to_owned)
        });
    eprintln!(
        "corqd with {n} idle connections: {}",
        rss_kib.unwrap_or_default()
    );
    drop(conns);
    child.terminate();
}

#[test]
fn a_consumer_that_stops_reading_does_not_starve_the_others() {
    let (server, _dir) = start_server();
    // 100 KiB messages: at RDY 2500 the stuck consumer could otherwise be handed ~250 MB.
    let body = vec![b'z'; 100 * 1024];
    let total = 600;
    let mut stuck = Raw::connect(server.addr);
    stuck.sub("slow", "ch");
    stuck.cmd("RDY 2500", None);
    let mut healthy = Raw::connect(server.addr);
    healthy.sub("slow", "ch");
    healthy.cmd("RDY 50", None);
    let addr = server.addr;
    let publisher = std::thread::spawn(move || {
        let mut p = Raw::connect(addr);
        for _ in 0..total {
            p.publish("slow", &body);
        }
    });
    // The healthy consumer gets everything the stuck one was not handed: the stuck one holds
    // at most its output limit plus what the kernel buffers.
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < total - 200 {
        assert!(
            Instant::now() < deadline,
            "healthy consumer starved at {got}"
        );
        let (_, _, id, body) = healthy.expect_message();
        assert_eq!(body.len(), 100 * 1024);
        healthy.cmd(&format!("FIN {id}"), None);
        got += 1;
    }
    publisher.join().unwrap();
    drop(stuck);
}

#[test]
fn a_slowloris_publisher_costs_the_others_nothing() {
    let (server, _dir) = start_server();
    let addr = server.addr;
    let slow = std::thread::spawn(move || {
        let mut c = Raw::connect(addr);
        let mut bytes = b"PUB loris\n".to_vec();
        bytes.extend_from_slice(&5u32.to_be_bytes());
        bytes.extend_from_slice(b"slow!");
        for b in bytes {
            c.send(&[b]);
            std::thread::sleep(Duration::from_millis(20));
        }
        c.expect_response(b"OK");
    });
    let mut fast = Raw::connect(server.addr);
    fast.sub("quick", "ch");
    fast.cmd("RDY 1", None);
    for i in 0..100 {
        fast.publish("quick", format!("{i}").as_bytes());
        let (_, _, id, _) = fast.expect_message();
        fast.cmd(&format!("FIN {id}"), None);
    }
    slow.join().unwrap();
    let mut rest = [0u8; 1];
    fast.stream
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let _ = fast.stream.read(&mut rest);
}

/// The reactor stops reading a socket at a short read (it emptied the socket); a hang-up is
/// still seen, whether it arrives with the last command or on its own after the reply, and
/// the connection is closed rather than left open.
#[test]
fn a_hang_up_after_a_command_closes_the_connection() {
    let (server, _dir) = start_server();
    let pub_cmd = |body: &[u8]| {
        let mut cmd = b"PUB hangup\n".to_vec();
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(body);
        cmd
    };
    // The hang-up in the same flight as the command.
    let mut together = Raw::connect(server.addr);
    together.send(&pub_cmd(b"with-the-command"));
    together.stream.shutdown(std::net::Shutdown::Write).unwrap();
    together.expect_response(b"OK");
    together.expect_closed();
    // The hang-up alone, once the command was read and answered.
    let mut after = Raw::connect(server.addr);
    after.send(&pub_cmd(b"then-later"));
    after.expect_response(b"OK");
    after.stream.shutdown(std::net::Shutdown::Write).unwrap();
    after.expect_closed();
    wait_until("both sessions ended", || {
        let stats: serde_json::Value = serde_json::from_str(&http_get(
            server.http,
            "/stats?format=json&include_clients=true",
        ))
        .unwrap();
        // nsqd's `producers` is null when there are none.
        stats["producers"].is_null()
    });
}
