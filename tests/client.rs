//! The project's own client against a real server, and the embedding example end to end.

use std::collections::BTreeSet;
use std::time::Duration;

use corq::client::{ClientError, Consumer, Producer};

use crate::util::*;

#[test]
fn producer_and_consumer_round_trip() {
    let (server, _dir) = start_server();
    let mut p = Producer::connect(server.addr).unwrap();
    p.publish("cl", b"one").unwrap();
    p.mpub("cl", &[b"two", b"three"]).unwrap();
    p.dpub("cl", 50, b"four").unwrap();
    let sent = p
        .publish_pipelined("cl", (5..105).map(|i| format!("m{i}")), 16)
        .unwrap();
    assert_eq!(sent, 100);
    let err = p.publish("bad!", b"x").unwrap_err();
    assert!(
        matches!(err, ClientError::Server(ref s) if s.starts_with("E_BAD_TOPIC")),
        "{err}"
    );

    let mut c = Consumer::connect(server.addr, "cl", "ch").unwrap();
    c.rdy(200).unwrap();
    let mut bodies = BTreeSet::new();
    while bodies.len() < 104 {
        let m = c
            .next_message(Duration::from_secs(10))
            .unwrap()
            .expect("message");
        assert_eq!(m.attempts, 1);
        c.fin(&m.id).unwrap();
        assert!(bodies.insert(m.body), "duplicate delivery");
    }
    assert!(bodies.contains(&b"four"[..]) && bodies.contains(&b"m104"[..]));
}

#[test]
fn consumer_req_touch_and_non_fatal_errors() {
    let (server, _dir) = start_server();
    Producer::connect(server.addr)
        .unwrap()
        .publish("cl2", b"x")
        .unwrap();
    let mut c = Consumer::connect(server.addr, "cl2", "ch").unwrap();
    c.rdy(1).unwrap();
    let m = c.next_message(Duration::from_secs(10)).unwrap().unwrap();
    c.touch(&m.id).unwrap();
    c.req(&m.id, 0).unwrap();
    let again = c.next_message(Duration::from_secs(10)).unwrap().unwrap();
    assert_eq!((again.id, again.attempts), (m.id, 2));
    c.fin(&again.id).unwrap();
    c.fin(&again.id).unwrap();
    let err = c.next_message(Duration::from_secs(10)).unwrap_err();
    assert!(
        matches!(err, ClientError::NonFatal(ref s) if s.contains("ID not in flight")),
        "{err}"
    );
    c.cls().unwrap();
}

#[path = "../examples/embed.rs"]
mod embed;

#[test]
fn the_embedding_example_runs() {
    // The example itself, compiled into this test so `cargo test --test integration` has it too.
    embed::main().unwrap();
}
