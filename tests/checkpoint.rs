//! The data path and the checkpoint at start-up: one server per data path, an unusable data
//! path refused with its name, a checkpoint checked against the logs (never trusted blindly),
//! and a topic whose log cannot be opened quarantined while the rest are served.
//!
//! Most cases build a state with an in-process server, edit the files, and restart a child
//! `corqd` whose exit code and log lines are checked.

use std::collections::HashSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::*;

/// Small segments (about six records of [`body`] each), so a test has several.
const SMALL: [&str; 4] = ["--max-bytes-per-file", "65536", "--max-msg-size", "16384"];

fn small_options(dir: &Path) -> corq::Options {
    let mut o = test_options(dir);
    o.max_bytes_per_file = 65536;
    o.max_msg_size = 16384;
    o
}

/// Message `i`'s body: its number, then padding (10 KB, so segments fill quickly).
fn body(i: u64) -> Vec<u8> {
    let mut b = format!("m{i}:").into_bytes();
    b.resize(10_000, b'x');
    b
}

/// Publishes `n` messages to topic `t`, lets channel `ch` take `take` of them without
/// finishing them, and stops cleanly: the checkpoint has `take` pending entries.
fn setup(dir: &Path, n: u64, take: u64) {
    let server = TestServer::start(small_options(dir));
    let mut p = Raw::connect(server.addr);
    p.sub("t", "ch");
    for i in 0..n {
        let mut q = Raw::connect(server.addr);
        q.publish("t", &body(i));
    }
    p.cmd(&format!("RDY {take}"), None);
    for _ in 0..take {
        p.expect_message();
    }
    drop(p);
    server.stop();
}

fn checkpoint_path(dir: &Path) -> PathBuf {
    dir.join("corq.dat")
}

/// The checkpoint as JSON (either version).
fn read_checkpoint(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(checkpoint_path(dir)).unwrap()).unwrap()
}

/// Edits the checkpoint and writes it back as version 1 (no checksum: what an older corq
/// wrote, and the format whose content nothing else verifies).
fn edit_as_v1(dir: &Path, edit: impl FnOnce(&mut Value)) {
    let mut cp = read_checkpoint(dir);
    let obj = cp.as_object_mut().unwrap();
    obj.remove("crc32");
    obj.insert("version".into(), 1.into());
    edit(&mut cp);
    std::fs::write(checkpoint_path(dir), serde_json::to_vec(&cp).unwrap()).unwrap();
}

/// Topic `t`'s channel `ch` in a checkpoint.
fn channel(cp: &mut Value) -> &mut Value {
    &mut cp["topics"][0]["channels"][0]
}

/// Everything channel `ch` of `topic` is sent, FIN'ed: (id offset, attempts, body).
fn drain_ids(addr: SocketAddr, topic: &str) -> Vec<(u64, u16, Vec<u8>)> {
    let mut c = Raw::connect(addr);
    c.sub(topic, "ch");
    c.cmd("RDY 2500", None);
    let mut got = Vec::new();
    loop {
        let frames = c.sync();
        if frames.is_empty() {
            return got;
        }
        for (ft, data) in frames {
            assert_eq!(ft, FRAME_MESSAGE, "{:?}", String::from_utf8_lossy(&data));
            let id = String::from_utf8(data[10..26].to_vec()).unwrap();
            let attempts = u16::from_be_bytes([data[8], data[9]]);
            c.cmd(&format!("FIN {id}"), None);
            got.push((
                u64::from_str_radix(&id, 16).unwrap(),
                attempts,
                data[26..].to_vec(),
            ));
        }
    }
}

/// Every delivered id carries its own body, and no id comes twice.
fn assert_own_bodies_once(got: &[(u64, u16, Vec<u8>)]) {
    let mut seen = HashSet::new();
    for (id, _, b) in got {
        assert!(seen.insert(*id), "id {id} delivered twice");
        assert_eq!(
            b,
            &body(*id),
            "id {id} delivered with another message's body"
        );
    }
}

fn ids(got: &[(u64, u16, Vec<u8>)]) -> Vec<u64> {
    let mut v: Vec<u64> = got.iter().map(|g| g.0).collect();
    v.sort_unstable();
    v
}

/// Waits (generously) for a log line containing every needle; returns it.
fn wait_for_log(server: &ChildServer, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| needles.iter().all(|n| l.contains(n)))
            .cloned();
        if let Some(line) = found {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {needles:?} in {:#?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn log_lines_with(server: &ChildServer, needle: &str) -> usize {
    let log = server.log.lock().unwrap();
    log.iter().filter(|l| l.contains(needle)).count()
}

/// Runs `corqd` on `dir` and waits for it to exit (killing it after 30 s, which fails the
/// test): its exit code and everything it wrote to stderr.
fn run_to_exit(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut child = corqd_command(dir, extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corqd on {} did not exit", dir.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap().code(), err)
}

// ----- the data path ----------------------------------------------------------------------

#[test]
fn a_second_server_on_the_same_data_path_exits_1_and_the_first_keeps_its_messages() {
    let dir = TempDir::new("lock");
    let first = ChildServer::start(dir.path(), &[]);
    let mut p = Raw::connect(first.addr);
    for i in 0..200 {
        p.publish("t", &body(i));
    }
    let (code, err) = run_to_exit(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("failed to lock data-path: cannot flock directory")
            && err.contains("(possibly in use by another instance of corqd)")
            && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
    // The first is still serving, and after a restart every acknowledged message is there.
    p.publish("t", &body(200));
    drop(p);
    first.terminate();
    let again = ChildServer::start(dir.path(), &[]);
    let got = drain_ids(again.addr, "t");
    assert_own_bodies_once(&got);
    assert_eq!(ids(&got), (0..=200).collect::<Vec<_>>());
    again.terminate();
}

#[test]
fn an_embedded_second_server_gets_the_lock_error_from_bind() {
    let dir = TempDir::new("lock-embed");
    let first = TestServer::start(test_options(dir.path()));
    let err = corq::Server::bind(test_options(dir.path()).validate().unwrap())
        .expect_err("a second server on the same data path must not bind")
        .to_string();
    assert!(
        err.starts_with("--data-path: failed to lock data-path: cannot flock directory"),
        "{err}"
    );
    first.stop();
    // Released with the first server: the path can be used again.
    TestServer::start(test_options(dir.path())).stop();
}

#[test]
fn a_data_path_under_a_file_exits_1_naming_the_path() {
    let dir = TempDir::new("dp-under");
    std::fs::write(dir.path().join("f"), b"x").unwrap();
    let bad = dir.path().join("f").join("data");
    let (code, err) = run_to_exit(&bad, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("Not a directory"), "{err}");
    assert!(
        !err.contains("checkpoint"),
        "blamed on the checkpoint: {err}"
    );
}

#[test]
fn a_data_path_that_is_a_file_is_named_as_such() {
    let dir = TempDir::new("dp-file");
    let file = dir.path().join("data");
    std::fs::write(&file, b"x").unwrap();
    let (code, err) = run_to_exit(&file, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("{} is a file, not a directory", file.display())),
        "{err}"
    );
    assert!(
        !err.contains("checkpoint"),
        "blamed on the checkpoint: {err}"
    );
}

/// A read-only directory: a read-only tmpfs when running as root (permissions do not stop
/// root), mode 0500 otherwise.
#[test]
fn a_read_only_data_path_exits_1_naming_the_path_and_the_error() {
    let dir = TempDir::new("dp-ro");
    let ro = dir.path().join("ro");
    std::fs::create_dir(&ro).unwrap();
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(&ro)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            println!("skipped: running as root and a read-only tmpfs cannot be mounted here");
            return;
        }
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o500)).unwrap();
    }
    let (code, err) = run_to_exit(&ro, &[]);
    if root {
        let _ = Command::new("umount").arg(&ro).status();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&ro.display().to_string()), "{err}");
    assert!(
        err.contains("cannot create a file")
            && (err.contains("Read-only file system") || err.contains("Permission denied")),
        "{err}"
    );
}

// ----- the checkpoint ---------------------------------------------------------------------

#[test]
fn a_version_1_checkpoint_still_loads() {
    let dir = TempDir::new("cp-v1");
    setup(dir.path(), 6, 2);
    edit_as_v1(dir.path(), |_| {});
    let server = ChildServer::start(dir.path(), &SMALL);
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    assert_eq!(ids(&got), (0..6).collect::<Vec<_>>());
    // The two that were in flight show their earlier delivery.
    assert!(got.iter().filter(|g| g.1 == 2).count() == 2, "{got:?}");
    assert_eq!(
        log_lines_with(&server, "dropping checkpoint pending entry"),
        0
    );
    server.terminate();
    let cp = std::fs::read(checkpoint_path(dir.path())).unwrap();
    assert!(
        cp.starts_with(br#"{"version":2,"crc32":""#),
        "rewritten as version 2"
    );
}

#[test]
fn a_pending_entry_pointing_at_another_message_is_dropped_never_delivered_with_its_body() {
    let dir = TempDir::new("cp-loc");
    setup(dir.path(), 6, 3);
    edit_as_v1(dir.path(), |cp| {
        let pending = &mut channel(cp)["pending"];
        // A one-digit flip: message 0 "carried" to where message 1 is.
        pending[0]["loc"] = 1.into();
        // Another: message 2's offset reads 5 (at or past the cursor, 3).
        pending[2]["offset"] = 5.into();
    });
    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(
        &server,
        &[
            "dropping checkpoint pending entry",
            "offset 0 (at 1)",
            "message 1 itself",
        ],
    );
    wait_for_log(&server, &["offset 5 is not below the channel's cursor 3"]);
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    // 0 and 2 were dropped (their entries were wrong); 1 comes back, then 3.. from the cursor.
    assert_eq!(ids(&got), vec![1, 3, 4, 5]);
    server.terminate();
}

#[test]
fn a_cursor_past_the_end_is_warned_about_with_the_count() {
    let dir = TempDir::new("cp-past");
    setup(dir.path(), 10, 0);
    edit_as_v1(dir.path(), |cp| channel(cp)["cursor"] = 2600.into());
    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(
        &server,
        &[
            "topic t channel ch",
            "cursor 2600 is 2590 offset(s) past the log's end 10",
        ],
    );
    // It starts at the end: the next message published is the next one delivered.
    let mut p = Raw::connect(server.addr);
    p.publish("t", &body(10));
    let got = drain_ids(server.addr, "t");
    assert_eq!(ids(&got), vec![10]);
    server.terminate();
}

#[test]
fn duplicate_topics_channels_and_pending_entries_keep_the_first() {
    let dir = TempDir::new("cp-dup");
    setup(dir.path(), 6, 2);
    edit_as_v1(dir.path(), |cp| {
        let ch = channel(cp);
        let first = ch["pending"][0].clone();
        ch["pending"].as_array_mut().unwrap().push(first.clone());
        ch["pending"].as_array_mut().unwrap().push(first);
        let ch = ch.clone();
        let mut ghost = ch.clone();
        ghost["name"] = "ghost".into();
        let topic = &mut cp["topics"][0];
        topic["channels"].as_array_mut().unwrap().push(ch);
        let mut twice = topic.clone();
        twice["channels"] = Value::Array(vec![ghost]);
        cp["topics"].as_array_mut().unwrap().push(twice);
    });
    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(
        &server,
        &["topic t is listed twice; keeping the first entry"],
    );
    wait_for_log(&server, &["channel ch is listed twice in the checkpoint"]);
    wait_for_log(&server, &["is listed twice; keeping the first"]);
    assert_eq!(
        log_lines_with(&server, "topic t: restored"),
        1,
        "one log opened"
    );
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    assert_eq!(ids(&got), (0..6).collect::<Vec<_>>());
    let stats: Value =
        serde_json::from_str(&http_get(server.http, "/stats?format=json&topic=t")).unwrap();
    let channels = &stats["topics"][0]["channels"];
    assert_eq!(channels.as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(channels[0]["channel_name"], "ch");
    server.terminate();
}

#[test]
fn a_deleted_first_segment_is_warned_about_naming_the_lost_range() {
    let dir = TempDir::new("cp-seg");
    setup(dir.path(), 20, 1);
    let tdir = dir.path().join("topics").join("t.topic");
    let mut segs: Vec<PathBuf> = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "{segs:?}");
    std::fs::remove_file(&segs[0]).unwrap();
    let second_base: u64 = segs[1]
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap();
    assert!(second_base >= 2, "{segs:?}");
    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(
        &server,
        &[
            "1 unfinished message(s) with ids in 0..=0 are lost",
            "first offset",
        ],
    );
    wait_for_log(
        &server,
        &[&format!("cursor 1 is below the log's first offset {second_base}: offsets 1..{second_base} are gone")],
    );
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    assert_eq!(ids(&got), (second_base..20).collect::<Vec<_>>());
    server.terminate();
}

#[test]
fn a_missing_checkpoint_with_topic_logs_present_is_warned_about() {
    let dir = TempDir::new("cp-gone");
    setup(dir.path(), 3, 0);
    std::fs::remove_file(checkpoint_path(dir.path())).unwrap();
    let server = ChildServer::start(dir.path(), &SMALL);
    let line = wait_for_log(&server, &["topic t: found on disk but the checkpoint"]);
    assert!(line.contains("WARN"), "{line}");
    let got = drain_ids(server.addr, "t");
    assert_eq!(ids(&got), vec![0, 1, 2]);
    server.terminate();
}

#[test]
fn a_checkpoint_failing_its_checksum_redelivers_everything_or_stops_when_strict() {
    let dir = TempDir::new("cp-crc");
    setup(dir.path(), 8, 2);
    let text = std::fs::read_to_string(checkpoint_path(dir.path())).unwrap();
    assert!(text.contains(r#""cursor":2,"#), "{text}");
    // A flipped digit that would skip messages were it believed.
    std::fs::write(
        checkpoint_path(dir.path()),
        text.replace(r#""cursor":2,"#, r#""cursor":7,"#),
    )
    .unwrap();
    let (code, err) = run_to_exit(dir.path(), &["--strict-recovery"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("checksum mismatch") && err.contains("corq.dat"),
        "{err}"
    );

    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(&server, &["DAMAGED CHECKPOINT", "checksum mismatch"]);
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    assert_eq!(ids(&got), (0..8).collect::<Vec<_>>(), "nothing lost");
    assert!(dir.path().join("corq.dat.damaged").exists());
    server.terminate();
}

#[test]
fn a_damaged_checkpoint_still_delivers_a_carried_message_whose_original_segment_is_gone() {
    let dir = TempDir::new("cp-carry");
    let first_seg = dir
        .path()
        .join("topics")
        .join("t.topic")
        .join(format!("{:020}.log", 0));
    {
        // Maintenance (carrying, retention, checkpoint) every 20 ms.
        let mut opts = small_options(dir.path());
        opts.sync_timeout = 20;
        let server = TestServer::start(opts);
        let mut held = Raw::connect(server.addr);
        held.sub("t", "ch");
        held.publish("t", &body(0));
        held.cmd("RDY 1", None);
        let (_, _, id, _) = held.expect_message();
        assert_eq!(id, "0000000000000000");
        // Message 0 stays in flight while 40 more flow through another consumer.
        let mut flow = Raw::connect(server.addr);
        flow.sub("t", "ch");
        flow.cmd("RDY 100", None);
        let mut publisher = Raw::connect(server.addr);
        for i in 1..=40 {
            publisher.publish("t", &body(i));
        }
        let flowed = drain(&mut flow);
        assert_eq!(flowed.len(), 40);
        let deadline = Instant::now() + Duration::from_secs(60);
        while first_seg.exists() {
            assert!(
                Instant::now() < deadline,
                "message 0 was never carried forward"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop((held, flow, publisher));
        server.stop();
    }
    let cp = read_checkpoint(dir.path());
    let pending = &cp["topics"][0]["channels"][0]["pending"][0];
    assert_eq!(pending["offset"], 0, "{cp}");
    assert!(pending["loc"].as_u64().is_some(), "{cp}");
    // Damage it: any change the checksum catches.
    let cursor = cp["topics"][0]["channels"][0]["cursor"].as_u64().unwrap();
    let text = std::fs::read_to_string(checkpoint_path(dir.path())).unwrap();
    let damaged = text.replace(
        &format!(r#""cursor":{cursor},"#),
        &format!(r#""cursor":{},"#, cursor + 1),
    );
    assert_ne!(damaged, text);
    std::fs::write(checkpoint_path(dir.path()), damaged).unwrap();

    let server = ChildServer::start(dir.path(), &SMALL);
    wait_for_log(&server, &["DAMAGED CHECKPOINT"]);
    let got = drain_ids(server.addr, "t");
    assert_own_bodies_once(&got);
    assert!(
        ids(&got).contains(&0),
        "the carried message is lost: {:?}",
        ids(&got)
    );
    server.terminate();
}

// ----- quarantine -------------------------------------------------------------------------

#[test]
fn a_topic_with_a_garbage_segment_header_is_quarantined_and_the_rest_served() {
    let dir = TempDir::new("quar");
    {
        let server = TestServer::start(test_options(dir.path()));
        let mut p = Raw::connect(server.addr);
        p.publish("good", b"g0");
        p.publish("bad", b"b0");
        drop(p);
        server.stop();
    }
    let bad_dir = dir.path().join("topics").join("bad.topic");
    let seg = bad_dir.join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[..8].copy_from_slice(b"GARBAGE!");
    std::fs::write(&seg, &bytes).unwrap();

    let (code, err) = run_to_exit(dir.path(), &["--strict-recovery"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("topic bad cannot be opened and --strict-recovery is set"),
        "{err}"
    );

    let server = ChildServer::start(dir.path(), &[]);
    wait_for_log(&server, &["topic bad: QUARANTINED", "bad magic"]);
    let mut c = Raw::connect(server.addr);
    c.cmd("PUB bad", Some(b"b1"));
    let (ft, data) = c.frame_skip_heartbeats();
    let text = String::from_utf8_lossy(&data);
    assert_eq!(ft, FRAME_ERROR, "{text}");
    assert!(
        text.starts_with("E_PUB_FAILED PUB failed") && text.contains("quarantined"),
        "{text}"
    );
    let mut c = Raw::connect(server.addr);
    c.cmd("SUB bad ch", None);
    let (ft, data) = c.frame_skip_heartbeats();
    let text = String::from_utf8_lossy(&data);
    assert_eq!(ft, FRAME_ERROR, "{text}");
    assert!(
        text.starts_with("E_SUB_FAILED SUB failed") && text.contains("quarantined"),
        "{text}"
    );
    let (status, reply) = http_request(server.http, "POST", "/pub?topic=bad", b"b2");
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply.contains("E_PUB_FAILED") && reply.contains("bad magic"),
        "{reply}"
    );
    assert!(!reply.contains("EXITING"), "{reply}");
    let (status, reply) = http_request(server.http, "POST", "/mpub?topic=bad", b"b3\nb4");
    assert_eq!(status, 503, "{reply}");
    assert!(reply.contains("E_MPUB_FAILED"), "{reply}");

    // The healthy topic is served.
    let mut p = Raw::connect(server.addr);
    p.publish("good", b"g1");
    let got = drain_ids(server.addr, "good");
    let bodies: Vec<&[u8]> = got.iter().map(|g| g.2.as_slice()).collect();
    assert_eq!(bodies, vec![&b"g0"[..], b"g1"]);

    let stats: Value = serde_json::from_str(&http_get(server.http, "/stats?format=json")).unwrap();
    let topics = stats["topics"].as_array().unwrap();
    let bad = topics
        .iter()
        .find(|t| t["topic_name"] == "bad")
        .expect("bad listed");
    assert!(
        bad["quarantined"]
            .as_str()
            .is_some_and(|q| q.contains("bad magic")),
        "{bad}"
    );
    let good = topics.iter().find(|t| t["topic_name"] == "good").unwrap();
    assert!(good.get("quarantined").is_none(), "{good}");
    server.terminate();

    // Its files are untouched, and the checkpoint still lists it.
    assert_eq!(std::fs::read(&seg).unwrap(), bytes);
    let cp = read_checkpoint(dir.path());
    let names: Vec<&str> = cp["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(
        names.contains(&"bad") && names.contains(&"good"),
        "{names:?}"
    );
}
