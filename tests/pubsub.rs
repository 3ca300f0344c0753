//! Delivery semantics over the wire: channels, consumers, RDY, FIN/REQ/TOUCH, timeouts, DPUB.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::util::*;

fn count_messages(frames: &[(u32, Vec<u8>)]) -> usize {
    frames.iter().filter(|(ft, _)| *ft == FRAME_MESSAGE).count()
}

#[test]
fn first_channel_gets_the_backlog_later_channels_start_at_the_tail() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..3 {
        p.publish("bl", format!("old{i}").as_bytes());
    }
    let mut first = Raw::connect(server.addr);
    first.sub("bl", "one");
    let mut second = Raw::connect(server.addr);
    second.sub("bl", "two");
    p.publish("bl", b"new");
    first.cmd("RDY 10", None);
    second.cmd("RDY 10", None);
    let bodies: Vec<Vec<u8>> = (0..4).map(|_| first.expect_message().3).collect();
    assert_eq!(
        bodies,
        vec![
            b"old0".to_vec(),
            b"old1".to_vec(),
            b"old2".to_vec(),
            b"new".to_vec()
        ]
    );
    assert_eq!(second.expect_message().3, b"new");
    assert_eq!(count_messages(&second.sync()), 0);
}

#[test]
fn every_channel_gets_every_message_and_consumers_share_them() {
    let (server, _dir) = start_server();
    let mut a1 = Raw::connect(server.addr);
    a1.sub("fan", "a");
    let mut a2 = Raw::connect(server.addr);
    a2.sub("fan", "a");
    let mut b = Raw::connect(server.addr);
    b.sub("fan", "b");
    for c in [&mut a1, &mut a2, &mut b] {
        c.cmd("RDY 100", None);
    }
    let mut p = Raw::connect(server.addr);
    let mut mpub = Vec::new();
    mpub.extend_from_slice(&40u32.to_be_bytes());
    for i in 0..40u32 {
        let body = format!("m{i:02}");
        mpub.extend_from_slice(&(body.len() as u32).to_be_bytes());
        mpub.extend_from_slice(body.as_bytes());
    }
    p.cmd("MPUB fan", Some(&mpub));
    p.expect_response(b"OK");
    let b_bodies: Vec<Vec<u8>> = (0..40).map(|_| b.expect_message().3).collect();
    assert_eq!(b_bodies.iter().collect::<HashSet<_>>().len(), 40);
    // Every frame the MPUB caused was written before each consumer's own later reply.
    let mut seen = HashSet::new();
    let mut per_consumer = Vec::new();
    for c in [&mut a1, &mut a2] {
        let frames = c.sync();
        per_consumer.push(frames.len());
        for (ft, data) in frames {
            assert_eq!(ft, FRAME_MESSAGE);
            seen.insert(data[26..].to_vec());
        }
    }
    assert_eq!(
        per_consumer.iter().sum::<usize>(),
        40,
        "each message exactly once per channel"
    );
    assert_eq!(seen.len(), 40);
    assert!(
        per_consumer.iter().all(|&n| n > 0),
        "both consumers share the channel: {per_consumer:?}"
    );
}

#[test]
fn rdy_caps_in_flight_and_fin_frees_a_slot() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    for i in 0..5 {
        p.publish("rdy", format!("{i}").as_bytes());
    }
    let mut c = Raw::connect(server.addr);
    c.sub("rdy", "ch");
    c.cmd("RDY 2", None);
    let frames = c.sync();
    assert_eq!(count_messages(&frames), 2, "RDY 2 must cap in-flight at 2");
    let id = String::from_utf8(frames[0].1[10..26].to_vec()).unwrap();
    c.cmd(&format!("FIN {id}"), None);
    let frames = c.sync();
    assert_eq!(count_messages(&frames), 1, "a FIN frees exactly one slot");
    c.cmd(&format!("FIN {id}"), None);
    c.expect_error(&format!("E_FIN_FAILED FIN {id} failed ID not in flight"));
    c.cmd("RDY 0", None);
    assert_eq!(count_messages(&c.sync()), 0);
}

#[test]
fn fin_from_another_client_is_refused() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    p.publish("own", b"x");
    let mut a = Raw::connect(server.addr);
    a.sub("own", "ch");
    let mut b = Raw::connect(server.addr);
    b.sub("own", "ch");
    a.cmd("RDY 1", None);
    let (_, _, id, _) = a.expect_message();
    b.cmd(&format!("FIN {id}"), None);
    b.expect_error(&format!(
        "E_FIN_FAILED FIN {id} failed client does not own message"
    ));
    a.cmd(&format!("FIN {id}"), None);
    assert!(a.sync().is_empty());
}

#[test]
fn req_zero_redelivers_with_attempts_raised() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.publish("req", b"again");
    c.sub("req", "ch");
    c.cmd("RDY 1", None);
    let (ts, attempts, id, _) = c.expect_message();
    assert_eq!(attempts, 1);
    c.cmd(&format!("REQ {id} 0"), None);
    let (ts2, attempts, id2, body) = c.expect_message();
    assert_eq!((attempts, id2, ts2, body), (2, id, ts, b"again".to_vec()));
}

#[test]
fn req_with_delay_is_not_redelivered_early() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.publish("reqd", b"later");
    c.sub("reqd", "ch");
    c.cmd("RDY 1", None);
    let (_, _, id, _) = c.expect_message();
    let start = Instant::now();
    c.cmd(&format!("REQ {id} 300"), None);
    let (_, attempts, _, _) = c.expect_message();
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "redelivered after {:?}",
        start.elapsed()
    );
    assert_eq!(attempts, 2);
}

#[test]
fn msg_timeout_requeues_and_touch_extends() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.identify(r#"{"msg_timeout":1000}"#);
    c.publish("to", b"slow");
    c.publish("to", b"touched");
    c.sub("to", "ch");
    c.cmd("RDY 2", None);
    let start = Instant::now();
    let (_, _, id_slow, _) = c.expect_message();
    let (_, _, id_touched, _) = c.expect_message();
    std::thread::sleep(Duration::from_millis(600));
    c.cmd(&format!("TOUCH {id_touched}"), None);
    // The untouched one times out at ~1 s and comes back with attempts 2.
    let (_, attempts, id, _) = c.expect_message();
    assert!(
        start.elapsed() >= Duration::from_millis(1000),
        "timed out early: {:?}",
        start.elapsed()
    );
    assert_eq!((attempts, id.as_str()), (2, id_slow.as_str()));
    // The touched one is still in flight (its deadline moved to ~1.6 s): FIN succeeds.
    c.cmd(&format!("FIN {id_touched}"), None);
    assert!(c.sync().is_empty(), "FIN of a touched message must succeed");
}

#[test]
fn a_shorter_msg_timeout_after_a_longer_one_on_the_same_channel_still_fires_on_time() {
    // The first consumer's deadline is queued at ~8 s; the second's 1 s deadline (nsqd's
    // minimum) comes after it in delivery order but must not wait behind it.
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    p.publish("mix", b"long");
    p.publish("mix", b"short");
    let mut long = Raw::connect(server.addr);
    long.identify(r#"{"msg_timeout":8000}"#);
    long.sub("mix", "ch");
    long.cmd("RDY 1", None);
    let (_, _, id_long, _) = long.expect_message();
    let mut short = Raw::connect(server.addr);
    short.identify(r#"{"msg_timeout":1000}"#);
    short.sub("mix", "ch");
    short.cmd("RDY 2", None);
    let start = Instant::now();
    let (_, attempts, id, body) = short.expect_message();
    assert_eq!((attempts, body.as_slice()), (1, b"short".as_slice()));
    // Not finished: it times out at ~1 s and comes back to the same consumer.
    let (_, attempts, again, _) = short.expect_message();
    let waited = start.elapsed();
    assert_eq!((attempts, again.as_str()), (2, id.as_str()));
    assert!(
        waited >= Duration::from_millis(1000) && waited < Duration::from_millis(6000),
        "the 1 s timeout fired after {waited:?}"
    );
    // The long one is still in flight all along.
    long.cmd(&format!("FIN {id_long}"), None);
    assert!(
        long.sync().is_empty(),
        "FIN of the long-timeout message must succeed"
    );
}

#[test]
fn dpub_is_delivered_after_its_delay_and_not_before() {
    let (server, _dir) = start_server();
    let mut c = Raw::connect(server.addr);
    c.sub("dp", "ch");
    c.cmd("RDY 5", None);
    let mut p = Raw::connect(server.addr);
    let start = Instant::now();
    p.cmd("DPUB dp 400", Some(b"deferred"));
    p.expect_response(b"OK");
    p.publish("dp", b"now");
    assert_eq!(c.expect_message().3, b"now");
    let (_, attempts, _, body) = c.expect_message();
    assert!(
        start.elapsed() >= Duration::from_millis(400),
        "DPUB came after {:?}",
        start.elapsed()
    );
    assert_eq!((attempts, body), (1, b"deferred".to_vec()));
}

#[test]
fn a_disconnected_consumers_messages_go_to_another_after_the_timeout() {
    let (server, _dir) = start_server();
    let mut p = Raw::connect(server.addr);
    p.publish("gone", b"orphan");
    let mut a = Raw::connect(server.addr);
    a.identify(r#"{"msg_timeout":1000}"#);
    a.sub("gone", "ch");
    a.cmd("RDY 1", None);
    a.expect_message();
    drop(a);
    let mut b = Raw::connect(server.addr);
    b.sub("gone", "ch");
    b.cmd("RDY 1", None);
    let (_, attempts, _, body) = b.expect_message();
    assert_eq!((attempts, body), (2, b"orphan".to_vec()));
}

#[test]
fn an_ephemeral_channel_goes_with_its_last_consumer() {
    let (server, _dir) = start_server();
    let mut keep = Raw::connect(server.addr);
    keep.sub("eph", "durable");
    let mut a = Raw::connect(server.addr);
    a.sub("eph", "e#ephemeral");
    keep.publish("eph", b"m1");
    a.cmd("RDY 1", None);
    let (_, _, id, _) = a.expect_message();
    // Put m1 back in the channel's queue with nobody ready for it, then leave.
    a.cmd("RDY 0", None);
    a.cmd(&format!("REQ {id} 0"), None);
    assert!(a.sync().is_empty());
    drop(a);
    keep.sync(); // the server has seen the disconnect once it answers later commands
    keep.publish("eph", b"m2");
    let mut b = Raw::connect(server.addr);
    b.sub("eph", "e#ephemeral");
    b.cmd("RDY 10", None);
    keep.publish("eph", b"m3");
    let bodies: Vec<Vec<u8>> = b
        .sync()
        .into_iter()
        .map(|(_, d)| d[26..].to_vec())
        .collect();
    assert_eq!(
        bodies,
        vec![b"m3".to_vec()],
        "a new ephemeral channel starts empty at the tail"
    );
}
