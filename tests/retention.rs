//! Retention that a long-unfinished message cannot pin.
//!
//! One message is REQ'd again and again for the whole run while many others flow through the
//! same channel (MPUB, delivered, FIN'd) on small segments. Without carrying forward, the
//! REQ'd message keeps its segment and every later one alive and the topic grows to hundreds of
//! segments; with it, the segment count stays at a handful. Afterwards the message must still
//! be there, with its original id, body and attempts, also after a clean restart.
//!
//! `CORQ_RETENTION_MESSAGES` sets how many messages flow (default 200 000; the figure
//! is 1 000 000).

use std::path::Path;
use std::time::{Duration, Instant};

use corq::Options;

use crate::util::{test_options, Raw, TempDir, TestServer, FRAME_MESSAGE};

const TOPIC: &str = "keep";
const CHANNEL: &str = "c";
/// Messages per MPUB (and the consumer's RDY).
const BATCH: usize = 500;
/// Body size of the flowing messages: 136 bytes on disk, ~480 records per 64 KiB segment.
const BODY_LEN: usize = 100;
/// How long the pinned message waits each time it is REQ'd.
const REQ_DELAY_MS: u64 = 300;
/// Segment files the topic may have at any time: the two newest, two or three in the
/// carry → durable → checkpoint pipeline (one maintenance period each, about one segment each
/// at the test's pace), and slack for late timers while the rest of the suite runs in
/// parallel (7 seen on an idle 2-core machine). Without carrying the count passes this after
/// about 4 000 messages and reaches ~420 at 200 000.
const MAX_SEGMENTS: usize = 10;
const PINNED: &[u8] = b"pinned message";
/// Each batch (about one segment) takes at least this long; equal to `--sync-timeout`.
const PACE: Duration = Duration::from_millis(20);

fn options(dir: &Path) -> Options {
    Options {
        max_bytes_per_file: 65536,
        max_msg_size: 1024,
        // Maintenance (carrying, retention, checkpoint) runs every sync-timeout.
        sync_timeout: 20,
        ..test_options(dir)
    }
}

/// The number of segment files of the topic.
fn segments(dir: &Path) -> usize {
    let topic = dir.join("topics").join(format!("{TOPIC}.topic"));
    let Ok(entries) = std::fs::read_dir(topic) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .count()
}

fn mpub_body(n: usize, seq: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + n * (4 + BODY_LEN));
    body.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let mut msg = format!("msg {:012}", seq + i).into_bytes();
        msg.resize(BODY_LEN, b'.');
        body.extend_from_slice(&(BODY_LEN as u32).to_be_bytes());
        body.extend_from_slice(&msg);
    }
    body
}

/// What the consumer knows of the pinned message.
struct Pinned {
    id: String,
    attempts: u16,
    seen: usize,
}

impl Pinned {
    /// Checks a delivery of the pinned message: same body, one more attempt.
    fn check(&mut self, attempts: u16, body: &[u8]) {
        assert_eq!(body, PINNED, "the pinned message's body changed");
        assert_eq!(
            attempts,
            self.attempts + 1,
            "attempts of the pinned message"
        );
        self.attempts = attempts;
        self.seen += 1;
    }

    /// Checks a delivery of the pinned message and REQs it again.
    fn redeliver(&mut self, c: &mut Raw, attempts: u16, body: &[u8], delay_ms: u64) {
        self.check(attempts, body);
        c.cmd(&format!("REQ {} {delay_ms}", self.id), None);
    }
}

/// Receives `n` flowing messages, FINs them (one write), and REQs the pinned one whenever it
/// comes by.
fn consume(c: &mut Raw, n: usize, pinned: &mut Pinned) {
    let mut fins = Vec::with_capacity(n * 22);
    let mut got = 0;
    while got < n {
        let (_, attempts, id, body) = c.expect_message();
        if id == pinned.id {
            pinned.redeliver(c, attempts, &body, REQ_DELAY_MS);
            continue;
        }
        assert_eq!(attempts, 1, "a flowing message was redelivered: {id}");
        fins.extend_from_slice(format!("FIN {id}\n").as_bytes());
        got += 1;
    }
    c.send(&fins);
}

/// Waits for the pinned message and checks it (nothing else may arrive).
fn await_pinned(c: &mut Raw, pinned: &mut Pinned) {
    let (_, attempts, id, body) = c.expect_message();
    assert_eq!(
        id, pinned.id,
        "expected the pinned message, got another one"
    );
    pinned.check(attempts, &body);
}

fn subscribe(addr: std::net::SocketAddr, rdy: usize) -> Raw {
    let mut c = Raw::connect(addr);
    c.sub(TOPIC, CHANNEL);
    c.cmd(&format!("RDY {rdy}"), None);
    c
}

#[test]
fn a_requeued_message_does_not_pin_old_segments() {
    let total: usize = std::env::var("CORQ_RETENTION_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = TempDir::new("retention");
    let server = TestServer::start(options(dir.path()));
    let mut p = Raw::connect(server.addr);
    let mut c = subscribe(server.addr, BATCH);

    p.publish(TOPIC, PINNED);
    let (_, attempts, id, body) = c.expect_message();
    assert_eq!((attempts, &body[..]), (1, PINNED));
    let mut pinned = Pinned {
        id,
        attempts: 0,
        seen: 0,
    };
    pinned.redeliver(&mut c, attempts, &body, REQ_DELAY_MS);

    let start = Instant::now();
    let (mut pushed, mut max_segments) = (0, 0);
    let mut batch_started = start;
    while pushed < total {
        let n = BATCH.min(total - pushed);
        p.cmd(&format!("MPUB {TOPIC}"), Some(&mpub_body(n, pushed)));
        p.expect_response(b"OK");
        consume(&mut c, n, &mut pinned);
        pushed += n;
        // About one segment per maintenance period: the bound below is then about the design
        // (two live segments plus the carry/checkpoint pipeline), not about how fast this
        // machine is compared to the maintenance timer.
        let due = batch_started + PACE;
        batch_started = Instant::now().max(due);
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let mut now = segments(dir.path());
        max_segments = max_segments.max(now);
        // Under CPU contention (the rest of the suite runs in parallel) maintenance can run
        // late: give it a few periods to catch up before calling the segments pinned. Pinned
        // segments never come back under the bound, so this still fails without carrying.
        let grace = Instant::now() + Duration::from_secs(5);
        while now > MAX_SEGMENTS && Instant::now() < grace {
            std::thread::sleep(Duration::from_millis(20));
            now = segments(dir.path());
        }
        assert!(
            now <= MAX_SEGMENTS,
            "{now} segments after {pushed} messages: the REQ'd message pins old segments"
        );
    }
    let elapsed = start.elapsed();

    // The original segment went while the message kept its id.
    assert!(
        !dir.path()
            .join("topics")
            .join(format!("{TOPIC}.topic"))
            .join(format!("{:020}.log", 0))
            .exists(),
        "the first segment (holding the pinned message's original) was never deleted"
    );
    // Once more, deferred across a clean restart: it must come back by itself.
    await_pinned(&mut c, &mut pinned);
    c.cmd(&format!("REQ {} 1000", pinned.id), None);
    c.sync();
    let before_restart = pinned.attempts;
    drop(c);
    drop(p);
    server.stop();

    let server = TestServer::start(options(dir.path()));
    let mut c = subscribe(server.addr, 1);
    await_pinned(&mut c, &mut pinned);
    assert_eq!(pinned.attempts, before_restart + 1);
    c.cmd(&format!("FIN {}", pinned.id), None);
    await_pinned_gone(&mut c);
    eprintln!(
        "retention: {pushed} messages pushed in {:.1} s, max {max_segments} segment(s) of 64 KiB \
         seen (limit {MAX_SEGMENTS}), pinned message delivered {} time(s), attempts {} after \
         a clean restart",
        elapsed.as_secs_f64(),
        pinned.seen,
        pinned.attempts
    );
}

/// After FIN nothing else comes: a short read finds no message frame.
fn await_pinned_gone(c: &mut Raw) {
    c.stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut head = [0u8; 8];
    match std::io::Read::read_exact(&mut c.stream, &mut head) {
        Err(_) => {}
        Ok(()) => {
            let ft = u32::from_be_bytes(head[4..].try_into().unwrap());
            let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
            let mut data = vec![0; size - 4];
            std::io::Read::read_exact(&mut c.stream, &mut data).unwrap();
            assert_ne!(
                ft,
                FRAME_MESSAGE,
                "a message arrived after the last FIN: {:?}",
                String::from_utf8_lossy(&data)
            );
        }
    }
}
