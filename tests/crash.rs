//! Proof that corq loses nothing: kill -9 loops under load, torn tails, bit flips, a full disk.
//!
//! The crash loop runs `CORQ_CRASH_CYCLES` cycles (default 20; `docs/operations.md` shows the
//! longer run). Every test is bounded in time and uses its own data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::*;

/// A small deterministic PRNG (splitmix64), so a failing run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    let s = std::env::var("CORQ_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok());
    let s = s.unwrap_or_else(|| std::process::id() as u64 ^ 0x5EED);
    eprintln!("seed {s} (set CORQ_TEST_SEED to repeat)");
    s
}

/// What publishers sent and what the server acknowledged.
#[derive(Default)]
struct Ledger {
    sent: BTreeSet<String>,
    acked: BTreeSet<String>,
    finished: BTreeSet<String>,
    /// FINs written to the socket, confirmed or not (an unconfirmed one may or may not survive).
    fin_sent: BTreeSet<String>,
    /// Deliveries during the cycles of messages the consumer had already finished.
    redelivered_after_fin: usize,
}

/// Publishes `tag-N` bodies one at a time until the connection dies; never panics on I/O.
fn publish_until_dead(addr: SocketAddr, tag: String, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"  V2").is_err() {
        return;
    }
    for i in 0.. {
        let body = format!("{tag}-{i:06}");
        ledger.lock().unwrap().sent.insert(body.clone());
        let mut cmd = b"PUB crash\n".to_vec();
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(body.as_bytes());
        let mut reply = [0u8; 10];
        if s.write_all(&cmd).is_err() || s.read_exact(&mut reply).is_err() {
            return;
        }
        assert_eq!(
            &reply, b"\x00\x00\x00\x06\x00\x00\x00\x00OK",
            "unexpected reply to PUB"
        );
        ledger.lock().unwrap().acked.insert(body);
    }
}

/// Consumes and FINs until the connection dies, recording what it finished. A FIN counts as
/// finished once a later reply on the same connection arrived: after each FIN the consumer
/// publishes to a side topic, and the `OK` of that PUB proves (in strict mode) that the FIN is
/// on disk, whatever happens next.
fn finish_until_dead(addr: SocketAddr, ledger: Arc<Mutex<Ledger>>) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    if s.write_all(b"  V2SUB crash ch\nRDY 20\n").is_err() {
        return;
    }
    // Bodies FIN'd before each PUB still waiting for its OK, oldest first; the first OK on the
    // connection is SUB's.
    let mut waiting: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut subscribed = false;
    loop {
        let mut head = [0u8; 8];
        if s.read_exact(&mut head).is_err() {
            return;
        }
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut data = vec![0; size.saturating_sub(4)];
        if s.read_exact(&mut data).is_err() {
            return;
        }
        if head[4..] == [0, 0, 0, 0] && data == b"OK" {
            if !subscribed {
                subscribed = true;
            } else if let Some(body) = waiting.pop_front() {
                ledger.lock().unwrap().finished.insert(body);
            }
            continue;
        }
        if head[4..] != [0, 0, 0, 2] {
            continue; // heartbeats
        }
        let id = String::from_utf8_lossy(&data[10..26]).into_owned();
        let mut cmd = format!("FIN {id}\nPUB crash_fin_marks\n").into_bytes();
        cmd.extend_from_slice(&1u32.to_be_bytes());
        cmd.push(b'm');
        if s.write_all(&cmd).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&data[26..]).into_owned();
        ledger.lock().unwrap().fin_sent.insert(body.clone());
        waiting.push_back(body);
    }
}

/// Everything the channel delivers now, FIN'd as it comes, with delivery counts.
fn drain_all(addr: SocketAddr) -> BTreeMap<Vec<u8>, usize> {
    let mut got = BTreeMap::new();
    for (_, body) in subscribe_and_drain(addr, "crash") {
        *got.entry(body).or_insert(0) += 1;
    }
    got
}

fn crash_loop(consume: bool) {
    let cycles: usize = std::env::var("CORQ_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng(seed());
    let dir = TempDir::new("crashloop");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    // The channel exists from the start, so every message is kept for it.
    let child = ChildServer::start(dir.path(), &["--sync-every", "1"]);
    Raw::connect(child.addr).sub("crash", "ch");
    child.terminate();
    // Strict mode: FINs are durable in the same group commit (a checkpoint per turn), so the
    // default --sync-timeout is kept: no finished message may come back however short a cycle.
    let flags: &[&str] = &["--sync-every", "1"];
    for cycle in 0..cycles {
        let child = ChildServer::start(dir.path(), flags);
        let mut workers = Vec::new();
        for p in 0..3 {
            let (addr, l) = (child.addr, ledger.clone());
            workers.push(std::thread::spawn(move || {
                publish_until_dead(addr, format!("c{cycle}p{p}"), l)
            }));
        }
        if consume {
            let (addr, l) = (child.addr, ledger.clone());
            workers.push(std::thread::spawn(move || finish_until_dead(addr, l)));
        }
        std::thread::sleep(Duration::from_millis(30 + rng.below(200)));
        child.kill9();
        for w in workers {
            w.join().unwrap();
        }
    }
    let child = ChildServer::start(dir.path(), &[]);
    let got = drain_all(child.addr);
    child.terminate();

    let ledger = ledger.lock().unwrap();
    for body in got.keys() {
        let body =
            String::from_utf8(body.clone()).expect("a delivered body is not even UTF-8: corrupted");
        assert!(
            ledger.sent.contains(&body),
            "delivered a message that was never sent: {body:?}"
        );
    }
    let must_come_back: Vec<&String> = ledger
        .acked
        .iter()
        .filter(|b| !ledger.fin_sent.contains(*b))
        .collect();
    for body in &must_come_back {
        assert!(
            got.contains_key(body.as_bytes()),
            "acknowledged, unfinished message lost: {body}"
        );
    }
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    let unacked_made_it = got
        .keys()
        .filter(|b| !ledger.acked.contains(&*String::from_utf8_lossy(b)))
        .count();
    let finished_repeated = got
        .keys()
        .filter(|b| ledger.finished.contains(&*String::from_utf8_lossy(b)))
        .count();
    eprintln!(
        "crash loop ({cycles} cycles, consume={consume}): sent {}, acked {}, finished before crashes {}, \
         delivered after {} (duplicates {duplicates}, unacked that made it {unacked_made_it}, \
         finished that repeated {})",
        ledger.sent.len(),
        ledger.acked.len(),
        ledger.finished.len(),
        got.len(),
        finished_repeated + ledger.redelivered_after_fin
    );
    assert!(
        ledger.acked.len() > cycles,
        "the load was too light to prove anything"
    );
    // Durable FIN: a FIN followed by an OK on its connection survives kill -9.
    assert_eq!(
        finished_repeated, 0,
        "finished messages (FIN followed by an OK) were delivered again after a crash"
    );
    if consume {
        assert!(!ledger.finished.is_empty(), "the consumer finished nothing");
    }
}

#[test]
fn crash_loop_loses_no_acknowledged_message() {
    crash_loop(false);
}

#[test]
fn crash_loop_with_consumers_brings_back_every_unfinished_message() {
    crash_loop(true);
}

/// Strict mode with many publishers at once keeps several syncs in flight (see
/// `storage/log/syncs.rs`), and small segments make them roll mid-run (so some syncs carry the
/// directory fsync of a new segment): every PUB still gets its OK, and every acknowledged
/// message is there after a kill -9.
#[test]
fn strict_mode_many_publishers_all_get_ok_and_survive_kill9() {
    const PUBLISHERS: usize = 32;
    const EACH: usize = 40;
    let dir = TempDir::new("strict-kill9");
    // The smallest segment corqd accepts; ~300 KB of records fill several.
    let flags = [
        "--sync-every",
        "1",
        "--max-bytes-per-file",
        "65536",
        "--max-msg-size",
        "4096",
    ];
    let child = ChildServer::start(dir.path(), &flags);
    let mut c = Raw::connect(child.addr);
    c.sub("crash", "ch"); // the channel keeps every message for the drain below
    drop(c);
    let sent: Vec<String> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let addr = child.addr;
                s.spawn(move || {
                    let mut conn = Raw::connect(addr);
                    (0..EACH)
                        .map(|i| {
                            let body = format!("p{p:02}-{i:03}-{}", "x".repeat(200));
                            let mut cmd = b"PUB crash\n".to_vec();
                            cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
                            cmd.extend_from_slice(body.as_bytes());
                            conn.send(&cmd);
                            conn.expect_response(b"OK");
                            body
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    assert_eq!(sent.len(), PUBLISHERS * EACH, "every PUB got its OK");
    assert!(
        segments(dir.path(), "crash").len() > 1,
        "the segments did not roll: the test proves less than it says"
    );
    child.kill9();
    let child = ChildServer::start(dir.path(), &flags);
    let got = drain_all(child.addr);
    child.terminate();
    for body in &sent {
        assert!(
            got.contains_key(body.as_bytes()),
            "acknowledged message lost after kill -9: {body}"
        );
    }
    assert_eq!(got.len(), sent.len(), "delivered something never sent");
}

/// The topic's segment files, oldest first.
pub fn segments(dir: &Path, topic: &str) -> Vec<PathBuf> {
    let tdir = dir.join("topics").join(format!("{topic}.topic"));
    let mut v: Vec<PathBuf> = std::fs::read_dir(tdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    v.sort();
    v
}

/// One past the last non-zero byte: where the records of a preallocated segment end.
fn data_end(path: &Path) -> usize {
    let bytes = std::fs::read(path).unwrap();
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// Whether any of the topic's segment files holds `needle` (read with plain `read`, as a
/// restarted process would see the page cache).
fn in_segment_files(dir: &Path, topic: &str, needle: &[u8]) -> bool {
    segments(dir, topic).iter().any(|p| {
        let bytes = std::fs::read(p).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    })
}

#[test]
fn an_ok_means_the_record_is_already_in_the_segment_file() {
    // Appends are buffered and written once per loop turn (`Log::flush`); the turn writes them
    // before any reply leaves, so whatever an OK acknowledged survives a kill -9 right after.
    let dir = TempDir::new("ok-in-file");
    let server = TestServer::start(test_options(dir.path()));
    let mut c = Raw::connect(server.addr);
    c.publish("okfile", b"plain-pub-0001");
    assert!(in_segment_files(dir.path(), "okfile", b"plain-pub-0001"));
    let mut mpub = b"MPUB okfile\n".to_vec();
    let bodies: [&[u8]; 2] = [b"mpub-body-one", b"mpub-body-two"];
    let mut payload = (bodies.len() as u32).to_be_bytes().to_vec();
    for b in bodies {
        payload.extend_from_slice(&(b.len() as u32).to_be_bytes());
        payload.extend_from_slice(b);
    }
    mpub.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    mpub.extend_from_slice(&payload);
    c.send(&mpub);
    c.expect_response(b"OK");
    assert!(bodies
        .iter()
        .all(|b| in_segment_files(dir.path(), "okfile", b)));
    // A publisher that hangs up right after its PUB still gets its OK (in the turn that read
    // the hang-up, before the conn is reaped), and that reply too waits for the write.
    let mut last = Raw::connect(server.addr);
    let mut cmd = b"PUB okfile\n".to_vec();
    cmd.extend_from_slice(&14u32.to_be_bytes());
    cmd.extend_from_slice(b"pub-then-close");
    last.send(&cmd);
    last.stream.shutdown(std::net::Shutdown::Write).unwrap();
    last.expect_response(b"OK");
    assert!(in_segment_files(dir.path(), "okfile", b"pub-then-close"));
    server.stop();
}

/// Publishes `n` bodies `m00000`.. zero-padded to `width` bytes and stops the server cleanly.
pub fn fill(dir: &Path, topic: &str, n: usize, width: usize, extra: &[&str]) -> Vec<String> {
    let child = ChildServer::start(dir, extra);
    let mut c = Raw::connect(child.addr);
    c.sub(topic, "ch");
    let bodies: Vec<String> = (0..n).map(|i| format!("m{i:0w$}", w = width - 1)).collect();
    let mut p = Raw::connect(child.addr);
    for b in &bodies {
        p.publish(topic, b.as_bytes());
    }
    drop((c, p));
    child.terminate();
    bodies
}

pub fn consume_in_order(addr: SocketAddr, topic: &str) -> Vec<Vec<u8>> {
    subscribe_and_drain(addr, topic)
        .into_iter()
        .map(|(_, body)| body)
        .collect()
}

#[test]
fn torn_tail_recovers_everything_before_the_cut() {
    // Layout (docs/storage-format.md): a 32-byte segment header, then records of a 36-byte
    // header plus the body, padded to 8 bytes: a 6-byte body makes a 48-byte record.
    const HEADER: usize = 32;
    const RECORD: usize = 48;
    let mut rng = Rng(seed());
    for round in 0..4 {
        let dir = TempDir::new("torn");
        let bodies = fill(dir.path(), "torn", 200, 6, &[]);
        let last = segments(dir.path(), "torn").pop().unwrap();
        // The last record's padding is zeros, so the data ends 6 bytes early.
        let end = data_end(&last);
        assert_eq!(
            end,
            HEADER + 200 * RECORD - 6,
            "the record layout changed: update this test"
        );
        // Cut inside a record's header or body (not in its padding, where a cut may or may not
        // cost the record): records before it are kept, it and everything after are not.
        let kept = rng.below(200) as usize;
        let cut = HEADER + kept * RECORD + rng.below(42) as usize;
        let garbage: Vec<u8> = (0..1 + rng.below(300)).map(|_| rng.next() as u8).collect();
        let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
        f.set_len(cut as u64).unwrap();
        drop(f);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap()
            .write_all(&garbage)
            .unwrap();

        let child = ChildServer::start(dir.path(), &[]);
        let got = consume_in_order(child.addr, "torn");
        let expected: Vec<Vec<u8>> = bodies[..kept]
            .iter()
            .map(|b| b.clone().into_bytes())
            .collect();
        assert_eq!(
            got, expected,
            "round {round}: cut at byte {cut} must keep exactly {kept} records"
        );
        let mut p = Raw::connect(child.addr);
        p.publish("torn", b"after");
        assert_eq!(
            consume_in_order(child.addr, "torn"),
            vec![b"after".to_vec()]
        );
        let warned = child.log.lock().unwrap().iter().any(|l| l.contains("WARN"));
        assert!(warned, "the cut must be logged as a warning");
        child.terminate();
    }
}

#[test]
fn bit_flips_in_closed_segments_never_deliver_a_corrupt_message() {
    let mut rng = Rng(seed());
    let dir = TempDir::new("flips");
    let small = ["--max-bytes-per-file", "65536", "--max-msg-size", "1024"];
    let bodies = fill(dir.path(), "flip", 3000, 100, &small);
    let mut segs = segments(dir.path(), "flip");
    segs.pop(); // the active segment stays intact: torn tails are the other test
    assert!(
        segs.len() >= 3,
        "want several closed segments, got {}",
        segs.len()
    );
    let flips = 6;
    for _ in 0..flips {
        let seg = &segs[rng.below(segs.len() as u64) as usize];
        let mut bytes = std::fs::read(seg).unwrap();
        let end = data_end(seg);
        let at = 32 + rng.below((end - 32) as u64) as usize;
        bytes[at] ^= 1 << rng.below(8);
        std::fs::write(seg, &bytes).unwrap();
    }
    let child = ChildServer::start(dir.path(), &small);
    let got = consume_in_order(child.addr, "flip");
    let sent: BTreeSet<Vec<u8>> = bodies.iter().map(|b| b.clone().into_bytes()).collect();
    let mut seen = BTreeSet::new();
    for body in &got {
        assert!(
            sent.contains(body),
            "a corrupted body was delivered: {body:?}"
        );
        assert!(seen.insert(body.clone()), "delivered twice: {body:?}");
    }
    let lost = bodies.len() - got.len();
    let warnings: Vec<String> = child
        .log
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("WARN"))
        .cloned()
        .collect();
    for w in &warnings {
        eprintln!("  {w}");
    }
    let warnings = warnings.len();
    eprintln!(
        "bit flips: {flips} flipped bits, {lost} of {} messages not delivered, {warnings} warnings",
        bodies.len()
    );
    assert!(lost >= 1, "a flipped bit in a record must cost that record");
    assert!(
        warnings >= 1,
        "each skipped record must be named in a warning"
    );
    let metrics = http_get(child.http, "/metrics");
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("corq_topic_corrupt_records_skipped_total{topic=\"flip\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok());
    assert_eq!(
        counted,
        Some(lost as u64),
        "/metrics must count the skipped records:\n{metrics}"
    );
    // Recovery resynchronises after a bad record (a flipped length included): each flip
    // costs at most the record it hit.
    assert!(
        lost <= flips,
        "lost {lost}: more than the {flips} records hit"
    );
    child.terminate();
}

#[test]
fn a_full_disk_fails_publishes_and_the_server_keeps_serving() {
    let Some(dir) = tmpfs("6m") else {
        eprintln!(
            "skipped: cannot mount a tmpfs here (the storage unit tests cover the allocation seam)"
        );
        return;
    };
    let _unmount = Unmount(dir.path().to_owned());
    // A filler file we can delete to free space later.
    std::fs::write(dir.path().join("filler"), vec![1u8; 2 << 20]).unwrap();
    let flags = ["--max-bytes-per-file", "1048576", "--max-msg-size", "65536"];
    let child = ChildServer::start(dir.path(), &flags);
    let mut consumer = Raw::connect(child.addr);
    consumer.sub("full", "ch");
    let body = vec![b'f'; 60 * 1024];
    let mut p = Raw::connect(child.addr);
    let mut published = 0;
    let error = loop {
        p.cmd("PUB full", Some(&body));
        let (ft, data) = p.frame_skip_heartbeats();
        if ft == FRAME_ERROR {
            break String::from_utf8_lossy(&data).into_owned();
        }
        published += 1;
        assert!(published < 1000, "the disk never filled up");
    };
    assert!(error.starts_with("E_PUB_FAILED PUB failed"), "{error}");
    p.expect_closed();
    // Still serving: the consumer gets what was published.
    consumer.cmd("RDY 2500", None);
    for _ in 0..published {
        let (_, _, id, got) = consumer.expect_message();
        assert_eq!(got.len(), body.len());
        consumer.cmd(&format!("FIN {id}"), None);
    }
    // Free space: publishing works again.
    std::fs::remove_file(dir.path().join("filler")).unwrap();
    let mut p = Raw::connect(child.addr);
    p.publish("full", b"room again");
    let (_, _, _, got) = consumer.expect_message();
    assert_eq!(got, b"room again");
    drop((p, consumer));
    child.terminate();
}
