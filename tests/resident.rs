//! Resident memory: the log pages delivery reads are released behind the
//! slowest channel, and a message left far behind that line is still delivered intact.

use crate::util::*;
use std::path::Path;

/// Body bytes per message: 6,000 of them make ~24 MiB of records.
const BODY_LEN: usize = 4000;
const MESSAGES: usize = 6000;
const MIB: u64 = 1024 * 1024;

fn body_for(i: usize) -> Vec<u8> {
    let mut body = format!("msg {i:012} ").into_bytes();
    body.extend((0..BODY_LEN - body.len()).map(|k| (i * 31 + k) as u8));
    body
}

fn mpub_body(from: usize, n: usize) -> Vec<u8> {
    let mut out = (n as u32).to_be_bytes().to_vec();
    for i in from..from + n {
        out.extend_from_slice(&(BODY_LEN as u32).to_be_bytes());
        out.extend_from_slice(&body_for(i));
    }
    out
}

/// This process's resident bytes (`Rss` in `/proc/self/smaps`) of every mapping of a file
/// under `dir`: the in-process server's segment maps (other tests' servers use other dirs).
fn resident_under(dir: &Path) -> u64 {
    let dir = dir.to_string_lossy().into_owned();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut ours = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && first.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            // A mapping's header: "start-end perms offset dev inode [path]".
            ours = line.contains(dir.as_str());
        } else if ours && first == "Rss:" {
            total += fields.next().unwrap_or("0").parse::<u64>().unwrap() * 1024;
        }
    }
    total
}

/// Takes `n` messages, checking each body, and FINs them (except the ones `keep` says).
fn consume(
    c: &mut Raw,
    range: std::ops::Range<usize>,
    mut keep: impl FnMut(usize) -> bool,
) -> Vec<String> {
    let mut kept = Vec::new();
    for i in range {
        let (_, _, id, body) = c.expect_message();
        assert!(body == body_for(i), "message {i}: wrong body");
        if keep(i) {
            kept.push(id);
        } else {
            c.cmd(&format!("FIN {id}"), None);
        }
    }
    kept
}

#[test]
fn pages_behind_the_slowest_channel_are_released_and_a_requeue_from_far_behind_still_reads() {
    let (srv, dir) = start_server();
    // Both channels exist before the first publish, so both start at offset 0.
    let mut fast = Raw::connect(srv.addr);
    fast.sub("rss", "fast");
    let mut slow = Raw::connect(srv.addr);
    slow.sub("rss", "slow");
    let mut p = Raw::connect(srv.addr);
    for from in (0..MESSAGES).step_by(100) {
        p.cmd("MPUB rss", Some(&mpub_body(from, 100)));
        p.expect_response(b"OK");
    }
    // The fast channel reads everything and keeps its first message in flight.
    fast.cmd("RDY 200", None);
    let held = consume(&mut fast, 0..MESSAGES, |i| i == 0);
    fast.sync();
    // The slow channel has read nothing: the pages the fast one read stay mapped for it.
    let before = resident_under(dir.path());
    assert!(before >= 16 * MIB, "reads mapped the log: {before} bytes");
    // Once the slow channel has read everything too, the line is the tail: released.
    slow.cmd("RDY 200", None);
    consume(&mut slow, 0..MESSAGES, |_| false);
    wait_until("the read pages to be released", || {
        resident_under(dir.path()) < 8 * MIB
    });
    // The held message is ~24 MiB behind the line: REQ'd, it comes back with its body.
    fast.cmd(&format!("REQ {} 0", held[0]), None);
    let (_, attempts, id, body) = fast.expect_message();
    assert_eq!((id.as_str(), attempts), (held[0].as_str(), 2));
    assert!(body == body_for(0), "requeued message: wrong body");
    fast.cmd(&format!("FIN {id}"), None);
    fast.sync();
}
