//! Recovery keeps every intact record: a real `corqd` is filled, stopped cleanly, its segment
//! files damaged the way a bad disk or a careless operator would, and restarted. A consumer
//! must then receive every intact message, in order, and the server must name what it lost.
//!
//! Layout used to place the damage (docs/storage-format.md): a 32-byte segment header, then
//! records of a 36-byte header plus the body, padded to 8 bytes; a 100-byte body makes a
//! 136-byte record.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::crash::{consume_in_order, fill, segments};
use crate::util::*;

const HEADER: usize = 32;
const RECORD: usize = 136;
const WIDTH: usize = 100;
/// Small segments, so a few thousand messages make several.
const SMALL: [&str; 4] = ["--max-bytes-per-file", "65536", "--max-msg-size", "1024"];

/// The count `/metrics` reports for the topic's skipped records.
fn skipped(http: SocketAddr, topic: &str) -> Option<u64> {
    let prefix = format!("corq_topic_corrupt_records_skipped_total{{topic=\"{topic}\"}} ");
    http_get(http, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
        .and_then(|v| v.trim().parse().ok())
}

/// The warnings the server logged.
fn warnings(child: &ChildServer) -> Vec<String> {
    let log = child.log.lock().unwrap();
    log.iter().filter(|l| l.contains("WARN")).cloned().collect()
}

/// Asserts one warning names all of `parts`.
fn assert_warned(child: &ChildServer, parts: &[&str]) {
    let w = warnings(child);
    for l in &w {
        eprintln!("  {l}");
    }
    assert!(
        w.iter().any(|l| parts.iter().all(|p| l.contains(p))),
        "no warning names {parts:?}; warnings: {w:#?}"
    );
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn base_of(p: &Path) -> u64 {
    file_name(p).trim_end_matches(".log").parse().unwrap()
}

/// Asserts a consumer received exactly `bodies` without the indexes in `lost`, in order
/// (compared as one line per body, so a failure prints readably).
fn assert_delivered(got: Vec<Vec<u8>>, bodies: &[String], lost: std::ops::Range<usize>) {
    let got: Vec<String> = got
        .into_iter()
        .map(|b| {
            String::from_utf8_lossy(&b)
                .trim_start_matches(['m', '0'])
                .to_owned()
        })
        .collect();
    let keep = bodies.iter().enumerate().filter(|(i, _)| !lost.contains(i));
    let want: Vec<String> = keep
        .map(|(_, b)| b.trim_start_matches(['m', '0']).to_owned())
        .collect();
    assert_eq!(
        (got.len(), got.join(" ")),
        (want.len(), want.join(" ")),
        "delivered bodies (leading m0.. stripped) differ; lost should be {lost:?}"
    );
}

fn patch(path: &Path, at: usize, f: impl FnOnce(&mut [u8])) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes[at..]);
    std::fs::write(path, &bytes).unwrap();
}

/// Publishing still works and delivers exactly the new message (appends continue cleanly).
fn publish_after(child: &ChildServer, topic: &str) {
    let mut p = Raw::connect(child.addr);
    p.publish(topic, b"after");
    assert_eq!(consume_in_order(child.addr, topic), vec![b"after".to_vec()]);
}

#[test]
fn flipped_byte_in_an_early_record_of_the_newest_segment_costs_only_that_record() {
    let dir = TempDir::new("rec-flip");
    let bodies = fill(dir.path(), "rflip", 300, WIDTH, &[]);
    let segs = segments(dir.path(), "rflip");
    assert_eq!(segs.len(), 1, "want one (the newest) segment");
    // One body byte of record 5.
    patch(&segs[0], HEADER + 5 * RECORD + 36 + 10, |b| b[0] ^= 0x01);

    let child = ChildServer::start(dir.path(), &[]);
    assert_delivered(consume_in_order(child.addr, "rflip"), &bodies, 5..6);
    assert_warned(&child, &[&file_name(&segs[0]), "offsets 5..6"]);
    assert_eq!(skipped(child.http, "rflip"), Some(1));
    publish_after(&child, "rflip");
    child.terminate();
}

#[test]
fn bad_length_in_an_older_segment_costs_only_that_record() {
    let dir = TempDir::new("rec-len");
    let bodies = fill(dir.path(), "rlen", 3000, WIDTH, &SMALL);
    let segs = segments(dir.path(), "rlen");
    assert!(segs.len() >= 3, "want several segments, got {}", segs.len());
    // Record 3's length field in the oldest (sealed) segment: past the end of the file.
    let at = HEADER + 3 * RECORD;
    patch(&segs[0], at, |b| {
        b[..4].copy_from_slice(&0xFFFF_FF00u32.to_le_bytes())
    });

    let child = ChildServer::start(dir.path(), &SMALL);
    assert_delivered(consume_in_order(child.addr, "rlen"), &bodies, 3..4);
    assert_warned(&child, &[&file_name(&segs[0]), "offsets 3..4"]);
    assert_eq!(skipped(child.http, "rlen"), Some(1));
    child.terminate();
}

#[test]
fn missing_middle_segment_is_named_and_counted() {
    let dir = TempDir::new("rec-gap");
    let bodies = fill(dir.path(), "rgap", 3000, WIDTH, &SMALL);
    let segs = segments(dir.path(), "rgap");
    assert!(segs.len() >= 4, "want several segments, got {}", segs.len());
    let (from, to) = (base_of(&segs[2]), base_of(&segs[3]));
    std::fs::remove_file(&segs[2]).unwrap();

    let child = ChildServer::start(dir.path(), &SMALL);
    let lost = from as usize..to as usize;
    assert_delivered(consume_in_order(child.addr, "rgap"), &bodies, lost);
    assert_warned(&child, &[&format!("offsets {from}..{to}")]);
    assert_eq!(skipped(child.http, "rgap"), Some(to - from));
    child.terminate();
}

#[test]
fn overflowing_segment_name_is_refused_and_left_alone() {
    let dir = TempDir::new("rec-name");
    let bodies = fill(dir.path(), "rname", 50, WIDTH, &[]);
    let topic_dir: PathBuf = dir.path().join("topics").join("rname.topic");
    // A segment whose base is the last u64: any record in it, or the next append, would wrap.
    let bad = topic_dir.join(format!("{}.log", u64::MAX));
    std::fs::write(&bad, vec![0u8; 4096]).unwrap();

    let child = ChildServer::start(dir.path(), &[]);
    assert_delivered(consume_in_order(child.addr, "rname"), &bodies, 0..0);
    assert_warned(&child, &[&file_name(&bad)]);
    publish_after(&child, "rname");
    child.terminate();
    // Refused, not repaired: the file is exactly as it was, for the operator to look at.
    assert_eq!(std::fs::read(&bad).unwrap(), vec![0u8; 4096]);
}
