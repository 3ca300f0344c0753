//! The `corq` tools against a real server: `corq pub` (stdin lines → messages, like to_nsq) and
//! `corq tail` (like nsq_tail), and their readable errors.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::util::*;

fn corq() -> Command {
    Command::new(env!("CARGO_BIN_EXE_corq"))
}

#[test]
fn pub_publishes_stdin_lines_and_tail_prints_them() {
    let (server, _dir) = start_server();
    let addr = server.addr.to_string();
    let mut child = corq()
        .args(["pub", "--nsqd-tcp-address", &addr, "--batch", "2", "tools"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"one\ntwo\n\nthree\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let out = corq()
        .args([
            "tail",
            "--nsqd-tcp-address",
            &addr,
            "--channel",
            "t",
            "-n",
            "3",
            "tools",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "one\ntwo\nthree\n",
        "empty lines are skipped"
    );
}

/// Runs `corq args...` with `stdin`; returns (success, stderr).
fn run(args: &[&str], stdin: &[u8]) -> (bool, String) {
    let mut child = corq()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The tool may exit before reading its input (a refused name): ignore a broken pipe.
    let _ = child.stdin.take().unwrap().write_all(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn tools_fail_readably() {
    // Nothing listens on port 1: the error names the address, exit is non-zero, no panic.
    for tool in ["tail", "pub"] {
        let (ok, err) = run(&[tool, "--nsqd-tcp-address", "127.0.0.1:1", "t"], b"x\n");
        assert!(!ok);
        assert_eq!(
            err.trim_end(),
            "corq: connecting to 127.0.0.1:1: Connection refused",
            "{tool}"
        );
    }
    // The server's refusal is passed on: nsqd's error text, non-zero exit.
    let dir = TempDir::new("tools");
    let server = TestServer::start(corq::Options {
        max_msg_size: 16,
        ..test_options(dir.path())
    });
    let addr = server.addr.to_string();
    let (ok, err) = run(&["pub", "--nsqd-tcp-address", &addr, "t"], &[b'x'; 100]);
    assert!(!ok);
    assert!(err.contains("E_BAD_MESSAGE"), "{err}");
    let out = corq().args(["frobnicate"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn tools_refuse_invalid_names_before_connecting() {
    // `echo hi | corq pub 'bad topic'` used to exit 0 having published to `bad`.
    let (server, _dir) = start_server();
    let addr = server.addr.to_string();
    let (ok, err) = run(&["pub", "--nsqd-tcp-address", &addr, "bad topic"], b"hi\n");
    assert!(!ok);
    assert!(
        err.starts_with("corq: invalid topic name \"bad topic\": "),
        "{err}"
    );
    for bad_args in [
        &["tail", "--nsqd-tcp-address", &addr, "bad!"][..],
        &["tail", "--nsqd-tcp-address", &addr, "--channel", "a b", "t"],
        &["pub", "--nsqd-tcp-address", &addr, &"x".repeat(65)],
    ] {
        let (ok, err) = run(bad_args, b"hi\n");
        assert!(!ok, "{bad_args:?}");
        assert!(err.starts_with("corq: invalid "), "{bad_args:?}: {err}");
    }
    let stats = http_get(server.http, "/stats?format=json");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["topics"].as_array().map(Vec::len), Some(0), "{stats}");
}
