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

#[test]
fn tools_fail_readably() {
    // Nothing listens on port 1: a clear message and a non-zero exit, no panic.
    let out = corq()
        .args(["tail", "--nsqd-tcp-address", "127.0.0.1:1", "t"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("corq: "), "{err}");
    // The server's refusal is passed on: nsqd's error text, non-zero exit.
    let (server, _dir) = start_server();
    let mut child = corq()
        .args([
            "pub",
            "--nsqd-tcp-address",
            &server.addr.to_string(),
            "bad!",
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"x\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("E_BAD_TOPIC"), "{err}");
    let out = corq().args(["frobnicate"]).output().unwrap();
    assert!(!out.status.success());
}
