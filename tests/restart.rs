//! Restarts: after a clean shutdown exactly the unfinished messages come back; after kill -9
//! every acknowledged message comes back; a DPUB keeps its deadline across a restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn clean_restart_brings_back_exactly_the_unfinished() {
    let dir = TempDir::new("clean");
    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    for i in 0..10 {
        c.publish("cr", format!("m{i}").as_bytes());
    }
    c.sub("cr", "ch");
    c.cmd("RDY 6", None);
    let mut ids = Vec::new();
    let mut in_flight = Vec::new();
    for i in 0..6 {
        let (_, _, id, body) = c.expect_message();
        if i < 4 {
            ids.push(id);
        } else {
            in_flight.push(body);
        }
    }
    // RDY 0 first, so the FINs free no slot for more deliveries.
    c.cmd("RDY 0", None);
    for id in ids {
        c.cmd(&format!("FIN {id}"), None);
    }
    assert!(c.sync().is_empty());
    drop(c);
    server.stop();

    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.sub("cr", "ch");
    c.cmd("RDY 100", None);
    let got = drain(&mut c);
    let bodies: BTreeSet<Vec<u8>> = got.iter().map(|(_, b)| b.clone()).collect();
    let expected: BTreeSet<Vec<u8>> = (4..10).map(|i| format!("m{i}").into_bytes()).collect();
    assert_eq!(
        bodies, expected,
        "exactly the unfinished messages come back"
    );
    assert_eq!(got.len(), 6, "and each once");
    for (attempts, body) in &got {
        let was_in_flight = in_flight.contains(body);
        assert_eq!(
            *attempts,
            if was_in_flight { 2 } else { 1 },
            "attempts of {body:?}"
        );
    }
}

#[test]
fn kill_9_loses_no_acknowledged_message() {
    let dir = TempDir::new("kill9");
    let child = ChildServer::start(dir.path(), &[]);
    let mut p = Raw::connect(child.addr);
    let mut c = Raw::connect(child.addr);
    c.sub("k9", "ch");
    for i in 0..200 {
        p.publish("k9", format!("m{i:03}").as_bytes());
    }
    // Consume and finish the first 50.
    c.cmd("RDY 50", None);
    for _ in 0..50 {
        let (_, _, id, _) = c.expect_message();
        c.cmd(&format!("FIN {id}"), None);
    }
    child.kill9();

    let child = ChildServer::start(dir.path(), &[]);
    let mut c = Raw::connect(child.addr);
    c.sub("k9", "ch");
    c.cmd("RDY 200", None);
    let got: BTreeSet<Vec<u8>> = drain(&mut c).into_iter().map(|(_, b)| b).collect();
    for i in 50..200 {
        let body = format!("m{i:03}").into_bytes();
        assert!(
            got.contains(&body),
            "acknowledged, unfinished message {i} lost after kill -9"
        );
    }
    for b in &got {
        let s = String::from_utf8(b.clone()).unwrap();
        assert!(
            s.starts_with('m') && s[1..].parse::<u32>().is_ok_and(|n| n < 200),
            "never-sent body {s:?}"
        );
    }
    child.terminate();
}

#[test]
fn dpub_keeps_its_deadline_across_a_restart() {
    let dir = TempDir::new("dpubrs");
    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.sub("dr", "ch");
    let start = Instant::now();
    c.cmd("DPUB dr 1500", Some(b"later"));
    c.expect_response(b"OK");
    c.cmd("RDY 1", None);
    // Not yet due: nothing delivered before the restart.
    assert!(c.sync().is_empty());
    drop(c);
    server.stop();

    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.sub("dr", "ch");
    c.cmd("RDY 1", None);
    let (_, _, _, body) = c.expect_message();
    assert_eq!(body, b"later");
    assert!(
        start.elapsed() >= Duration::from_millis(1500),
        "delivered after {:?}, before its deadline",
        start.elapsed()
    );
}

#[test]
fn ephemeral_topics_and_channels_do_not_survive_a_restart() {
    let dir = TempDir::new("ephrs");
    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.sub("durable_t", "e#ephemeral");
    c.publish("durable_t", b"x");
    c.publish("gone#ephemeral", b"y");
    drop(c);
    server.stop();
    let cp = std::fs::read_to_string(dir.path().join("corq.dat")).unwrap();
    assert!(
        cp.contains("durable_t") && !cp.contains("ephemeral"),
        "checkpoint: {cp}"
    );
    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.sub("gone#ephemeral", "ch");
    c.cmd("RDY 10", None);
    assert!(
        c.sync().is_empty(),
        "an ephemeral topic's messages must not come back"
    );
}
