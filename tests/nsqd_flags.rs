//! An nsqd command line or config file starts corqd unchanged: every nsqd v1.3.0
//! flag with its default (reference §3), Go's flag and address forms, the TOML config file and
//! its precedence, one-line errors with exit code 1, `--log-prefix`, ignored flags logged, and
//! statsd with nsqd's metric names over a real UDP socket.

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::util::*;

/// Every nsqd v1.3.0 flag with its default, in the forms an nsqd command line uses (single
/// dash, `--flag value`, `--flag=value`, bools as `=true/false`), and the `/config` value nsqd
/// reports for it. The addresses and data path are the test's (ChildServer passes them), the
/// broadcast address is fixed, and `--node-id` (a hash of the hostname by default) is given.
const NSQD_DEFAULTS: &[(&[&str], &str, &str)] = &[
    (&["-log-level", "info"], "log_level", "2"),
    (&["--log-prefix=[nsqd] "], "log_prefix", r#""[nsqd] ""#),
    (&["-verbose=false"], "verbose", "false"),
    (&["-node-id", "5"], "id", "5"),
    (&["-worker-id=false"], "", ""),
    (
        &["--https-address", "0.0.0.0:4152"],
        "https_address",
        r#""0.0.0.0:4152""#,
    ),
    (
        &["-broadcast-address", "127.0.0.1"],
        "broadcast_address",
        r#""127.0.0.1""#,
    ),
    (&["-broadcast-tcp-port", "0"], "broadcast_tcp_port", "0"),
    (&["-broadcast-http-port=0"], "broadcast_http_port", "0"),
    (
        &["--auth-http-request-method", "get"],
        "auth_http_request_method",
        r#""get""#,
    ),
    (
        &["-http-client-connect-timeout", "2s"],
        "http_client_connect_timeout",
        "2000000000",
    ),
    (
        &["-http-client-request-timeout", "5s"],
        "http_client_request_timeout",
        "5000000000",
    ),
    (&["--topology-region="], "topology_region", r#""""#),
    (&["--topology-zone="], "topology_zone", r#""""#),
    (&["-mem-queue-size", "10000"], "mem_queue_size", "10000"),
    (
        &["-max-bytes-per-file", "104857600"],
        "max_bytes_per_file",
        "104857600",
    ),
    (&["-sync-every", "2500"], "sync_every", "2500"),
    (&["-sync-timeout", "2s"], "sync_timeout", "2000000000"),
    (
        &["-queue-scan-worker-pool-max", "4"],
        "queue_scan_worker_pool_max",
        "4",
    ),
    (
        &["-queue-scan-selection-count", "20"],
        "queue_scan_selection_count",
        "20",
    ),
    (&["-msg-timeout", "1m0s"], "msg_timeout", "60000000000"),
    (
        &["-max-msg-timeout", "15m0s"],
        "max_msg_timeout",
        "900000000000",
    ),
    (&["-max-msg-size", "1048576"], "max_msg_size", "1048576"),
    (&["-max-body-size", "5242880"], "max_body_size", "5242880"),
    (
        &["-max-req-timeout", "1h0m0s"],
        "max_req_timeout",
        "3600000000000",
    ),
    (
        &["-max-heartbeat-interval", "1m0s"],
        "max_heartbeat_interval",
        "60000000000",
    ),
    (&["-max-rdy-count", "2500"], "max_rdy_count", "2500"),
    (
        &["-max-output-buffer-size", "65536"],
        "max_output_buffer_size",
        "65536",
    ),
    (
        &["-max-output-buffer-timeout", "30s"],
        "max_output_buffer_timeout",
        "30000000000",
    ),
    (
        &["-min-output-buffer-timeout", "25ms"],
        "min_output_buffer_timeout",
        "25000000",
    ),
    (
        &["-output-buffer-timeout", "250ms"],
        "output_buffer_timeout",
        "250000000",
    ),
    (
        &["-max-channel-consumers", "0"],
        "max_channel_consumers",
        "0",
    ),
    (&["--statsd-address="], "statsd_address", r#""""#),
    (
        &["-statsd-prefix", "nsq.%s"],
        "statsd_prefix",
        r#""nsq.%s""#,
    ),
    (
        &["-statsd-interval", "1m0s"],
        "statsd_interval",
        "60000000000",
    ),
    (&["-statsd-mem-stats=true"], "statsd_mem_stats", "true"),
    (
        &["-statsd-udp-packet-size", "508"],
        "statsd_udp_packet_size",
        "508",
    ),
    (
        &["-statsd-exclude-ephemeral=false"],
        "statsd_exclude_ephemeral",
        "false",
    ),
    (
        &["-e2e-processing-latency-window-time", "10m0s"],
        "e2e_processing_latency_window_time",
        "600000000000",
    ),
    (&["--tls-cert="], "tls_cert", r#""""#),
    (&["--tls-key="], "tls_key", r#""""#),
    (
        &["--tls-client-auth-policy="],
        "tls_client_auth_policy",
        r#""""#,
    ),
    (&["--tls-root-ca-file="], "tls_root_ca_file", r#""""#),
    (&["-tls-required=false"], "tls_required", "0"),
    (&["-tls-min-version", "tls1.0"], "tls_min_version", "769"),
    (&["-deflate=true"], "deflate", "true"),
    (&["-max-deflate-level", "6"], "max_deflate_level", "6"),
    (&["-snappy=true"], "snappy", "true"),
];

/// The same defaults as an nsqd TOML config file, keyed as nsqd's `contrib/nsqd.cfg.example`.
const NSQD_CFG: &str = r#"
log_level = "info"
log_prefix = "[nsqd] "
verbose = false
id = 5
https_address = "0.0.0.0:4152"
broadcast_address = "127.0.0.1"
broadcast_tcp_port = 0
broadcast_http_port = 0
nsqlookupd_tcp_addresses = []
auth_http_addresses = []
auth_http_request_method = "get"
http_client_connect_timeout = "2s"
http_client_request_timeout = "5s"
topology_region = ""
topology_zone = ""
enable_experiment = []
mem_queue_size = 10000
max_bytes_per_file = 104857600
sync_every = 2500
sync_timeout = "2s"
queue_scan_worker_pool_max = 4
queue_scan_selection_count = 20
msg_timeout = "60s"
max_msg_timeout = "15m"
max_msg_size = 1048576
max_body_size = 5242880
max_req_timeout = "1h"
max_heartbeat_interval = "60s"
max_rdy_count = 2500
max_output_buffer_size = 65536
max_output_buffer_timeout = "30s"
min_output_buffer_timeout = "25ms"
output_buffer_timeout = "250ms"
max_channel_consumers = 0
statsd_address = ""
statsd_prefix = "nsq.%s"
statsd_interval = "60s"
statsd_mem_stats = true
statsd_udp_packet_size = 508
statsd_exclude_ephemeral = false
e2e_processing_latency_percentiles = [1.0, 0.99, 0.95]
e2e_processing_latency_window_time = "10m"
tls_cert = ""
tls_key = ""
tls_client_auth_policy = ""
tls_root_ca_file = ""
tls_required = false
tls_min_version = ""
deflate = true
max_deflate_level = 6
snappy = true
"#;

fn config(server: &ChildServer, opt: &str) -> String {
    let (status, body) = http_request(server.http, "GET", &format!("/config/{opt}"), b"");
    assert_eq!(status, 200, "/config/{opt}: {body}");
    body
}

fn assert_defaults_reported(server: &ChildServer) {
    for (_, opt, want) in NSQD_DEFAULTS {
        if !opt.is_empty() {
            assert_eq!(config(server, opt), *want, "/config/{opt}");
        }
    }
}

#[test]
fn every_nsqd_flag_with_its_default_starts() {
    let dir = TempDir::new("nsqd-flags");
    let args: Vec<&str> = NSQD_DEFAULTS
        .iter()
        .flat_map(|(a, _, _)| a.iter().copied())
        .collect();
    let server = ChildServer::start(dir.path(), &args);
    assert_defaults_reported(&server);
    let info: Value = serde_json::from_str(&http_get(server.http, "/info")).unwrap();
    assert_eq!(info["max_deflate_level"], 6);
    assert_eq!(info["broadcast_address"], "127.0.0.1");
    // The flags corq ignores are named once in the log, with the reason.
    wait_until("the ignored-flag notes", || {
        let log = server.log.lock().unwrap();
        [
            "--mem-queue-size",
            "--queue-scan-worker-pool-max",
            "--node-id",
            "--worker-id",
        ]
        .iter()
        .all(|f| {
            log.iter()
                .filter(|l| l.contains(&format!("{f} is accepted")))
                .count()
                == 1
        })
    });
    server.terminate();
}

#[test]
fn nsqd_config_file_with_every_key_starts() {
    let dir = TempDir::new("nsqd-cfg");
    let cfg = dir.path().join("nsqd.cfg");
    std::fs::write(&cfg, NSQD_CFG).unwrap();
    let server = ChildServer::start(dir.path(), &["--config", cfg.to_str().unwrap()]);
    assert_defaults_reported(&server);
    assert_eq!(
        config(&server, "e2e_processing_latency_percentiles"),
        "[1.0,0.99,0.95]"
    );
    assert_eq!(config(&server, "nsqlookupd_tcp_addresses"), "[]");
    assert_eq!(config(&server, "auth_http_addresses"), "[]");
    server.terminate();
}

#[test]
fn command_line_over_file_over_default() {
    let dir = TempDir::new("nsqd-prec");
    let cfg = dir.path().join("nsqd.cfg");
    std::fs::write(
        &cfg,
        "max_rdy_count = 100\nmsg_timeout = \"30s\"\nsnappy = false\n",
    )
    .unwrap();
    let path = cfg.to_str().unwrap();
    let server = ChildServer::start(dir.path(), &["-config", path, "-max-rdy-count", "200"]);
    assert_eq!(
        config(&server, "max_rdy_count"),
        "200",
        "command line over file"
    );
    assert_eq!(
        config(&server, "msg_timeout"),
        "30000000000",
        "file over default"
    );
    assert_eq!(config(&server, "snappy"), "false", "file over default");
    assert_eq!(
        config(&server, "max_req_timeout"),
        "3600000000000",
        "default"
    );
    server.terminate();
}

#[test]
fn bad_config_is_one_line_naming_the_key_and_exit_1() {
    let dir = TempDir::new("nsqd-bad");
    let cases = [
        ("max_rdy_count = \"lots\"\n", "max_rdy_count"),
        ("msg_timeout = \"soon\"\n", "msg_timeout"),
        ("tls_min_version = \"ssl3.0\"\n", "tls_min_version"),
        ("max_deflate_level = 10\n", "max_deflate_level"),
        ("msg_timeout = \n", "line 1"),
    ];
    for (text, needle) in cases {
        let cfg = dir.path().join("bad.cfg");
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_corqd"))
            .args(["--data-path", dir.path().to_str().unwrap(), "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.contains(needle) && err.contains("bad.cfg"),
            "{text}: {err}"
        );
    }
}

#[test]
fn go_address_forms_listen_and_dial() {
    let dir = TempDir::new("nsqd-addr");
    let server = ChildServer::start(
        dir.path(),
        &["-tcp-address", "localhost:0", "--http-address=[::1]:0"],
    );
    assert!(
        server.addr.ip().is_loopback() && server.http.is_ipv6(),
        "{} {}",
        server.addr,
        server.http
    );
    assert_eq!(http_get(server.http, "/ping"), "OK");
    let dial = format!("localhost:{}", server.addr.port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_corq"))
        .args(["pub", "--nsqd-tcp-address", &dial, "t"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    assert!(child.wait().unwrap().success(), "corq pub to {dial}");
    let stats: Value = serde_json::from_str(&http_get(server.http, "/stats?format=json")).unwrap();
    assert_eq!(stats["topics"][0]["message_count"], 1);
    server.terminate();
    let any = ChildServer::start(dir.path(), &["--tcp-address", ":0"]);
    // Serving means past the signal-handler set-up, so SIGTERM is a clean stop.
    assert_eq!(http_get(any.http, "/ping"), "OK");
    assert!(
        any.addr.ip().is_unspecified(),
        ":0 listens on every interface: {}",
        any.addr
    );
    any.terminate();
}

#[test]
fn log_prefix_starts_every_line() {
    let dir = TempDir::new("nsqd-prefix");
    let server = ChildServer::start(dir.path(), &["--log-prefix", "[corq-test] "]);
    assert_eq!(http_get(server.http, "/ping"), "OK");
    {
        let log = server.log.lock().unwrap();
        assert!(!log.is_empty());
        assert!(log.iter().all(|l| l.starts_with("[corq-test] ")), "{log:?}");
    }
    server.terminate();
}

#[test]
fn statsd_sends_nsqds_names_as_udp() {
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    sink.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let dir = TempDir::new("statsd");
    let mut opts = test_options(dir.path());
    opts.statsd_address = sink.local_addr().unwrap().to_string();
    opts.statsd_interval = 1000;
    opts.statsd_udp_packet_size = 200;
    opts.broadcast_address = "127.0.0.1".into();
    let server = TestServer::start(opts);
    // One MPUB, so no push can see part of it.
    let (status, _) = http_request(server.http, "POST", "/mpub?topic=t", b"hello\nhello\nhello");
    assert_eq!(status, 200);
    let prefix = format!("nsq.127_0_0_1_{}.", server.http.port());
    let mut lines: Vec<String> = Vec::new();
    let mut buf = [0u8; 2048];
    let want = format!("{prefix}topic.t.message_count:3|c");
    // `mem.gc_runs` is the last line of a push: wait for the whole push that counts the MPUB.
    let end = format!("{prefix}mem.gc_runs:0|c");
    wait_until("a statsd push counting topic t", || {
        if let Ok(n) = sink.recv(&mut buf) {
            assert!(n <= 200, "a datagram of {n} bytes exceeds the packet size");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.extend(text.lines().map(str::to_owned));
        }
        let at = lines.iter().position(|l| *l == want);
        at.is_some_and(|i| lines[i..].contains(&end))
    });
    for l in [
        "topic.t.message_bytes:15|c",
        "topic.t.depth:3|g",
        "topic.t.backend_depth:3|g",
        "mem.gc_pause_usec_99:0|g",
    ] {
        assert!(lines.contains(&format!("{prefix}{l}")), "{l} in {lines:?}");
    }
    // The next push sends the counter's change since this one: nothing new was published.
    lines.clear();
    let zero = format!("{prefix}topic.t.message_count:0|c");
    wait_until("the next push's delta", || {
        if let Ok(n) = sink.recv(&mut buf) {
            lines.extend(
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .map(str::to_owned),
            );
        }
        lines.contains(&zero)
    });
    server.stop();
}

/// `corqd`'s threads by name, each with the cores it may run on (`/proc/PID/task`).
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap();
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        out.push((comm.trim().to_owned(), cpus));
    }
    out
}

/// The reactor pins itself (and moves the helpers) when it starts running, just after it logs
/// its listeners: waits for its word.
fn wait_for_pin(server: &ChildServer) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !server
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("reactor pinned to CPU 0"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            server.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The scheduling policy (`/proc/PID/task/TID/stat` field 41: 0 normal, 5 `SCHED_IDLE`) of
/// each of `corqd`'s threads named `name`.
fn thread_policies(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        // A thread may end between the listing and the reads: skip it.
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        if comm.trim() != name {
            continue;
        }
        // Fields after the name, which is in parentheses: field 3 is the first of them.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let policy = after_name.split(' ').nth(41 - 3).unwrap();
        out.push(policy.parse().unwrap());
    }
    out
}

/// Starts a server with `flags`, makes its background storage lane start a thread (an interval
/// sync due by record count, not yet late, runs there) and returns that thread's policy.
fn background_lane_policy(flags: &[&str]) -> u32 {
    let dir = TempDir::new("bg-policy");
    let mut args = vec!["--sync-every", "2"];
    args.extend_from_slice(flags);
    let server = ChildServer::start(dir.path(), &args);
    if flags.contains(&"--cpu") {
        wait_for_pin(&server);
    }
    let (status, _) = http_request(server.http, "POST", "/mpub?topic=t", b"one\ntwo");
    assert_eq!(status, 200);
    // The lane thread is named before it sets its own policy: wait until the sync it ran has
    // completed, which it did only after setting it.
    wait_until("the interval sync", || topic_log_syncs(&server, "t") > 0);
    let policies = thread_policies(server.child.id(), "corq-storage-bg");
    server.terminate();
    assert_eq!(policies.len(), 1, "{policies:?}");
    policies[0]
}

/// Syncs of `topic`'s log completed so far, from `/stats`.
fn topic_log_syncs(server: &ChildServer, topic: &str) -> u64 {
    let path = format!("/stats?format=json&topic={topic}");
    let stats: Value = serde_json::from_str(&http_get(server.http, &path)).unwrap();
    stats["topics"][0]["log_syncs"].as_u64().unwrap_or(0)
}

/// Without `--cpu` the background helper may share the reactor's core: it runs at
/// `SCHED_IDLE`, so a woken reactor preempts it at once. With `--cpu` it never shares that
/// core, and at `SCHED_IDLE` it could be starved on its own cores while holding a page lock
/// the reactor's next write waits for: it keeps normal priority.
#[test]
fn background_helpers_idle_unless_the_reactor_has_its_own_core() {
    const SCHED_OTHER: u32 = 0;
    const SCHED_IDLE: u32 = 5;
    assert_eq!(background_lane_policy(&[]), SCHED_IDLE);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core: the helpers share it, and stay idle-class");
        return;
    }
    assert_eq!(background_lane_policy(&["--cpu", "0"]), SCHED_OTHER);
}

#[test]
fn cpu_gives_the_reactor_its_core_and_the_helpers_the_others() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cores < 2 {
        eprintln!("one core: the helpers share it, nothing to check");
        return;
    }
    let dir = TempDir::new("cpu-flag");
    // Strict mode: the publish below waits for a sync, so a sync-lane thread surely exists.
    let server = ChildServer::start(dir.path(), &["--cpu", "0", "--sync-every", "1"]);
    wait_for_pin(&server);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    // The storage lanes start their threads as work arrives: this one after the pin.
    let (status, _) = http_request(server.http, "POST", "/pub?topic=t", b"hello");
    assert_eq!(status, 200);
    // A helper spawned before the pin and not yet scheduled moves itself when it first runs:
    // wait (with a deadline) until every one has.
    let on_reactor_core = |cpus: &str| cpus.split([',', '-']).next() == Some("0");
    let mut threads = thread_cpus(server.child.id());
    while threads
        .iter()
        .any(|(n, c)| n.starts_with("corq-") && on_reactor_core(c))
    {
        assert!(std::time::Instant::now() < deadline, "{threads:?}");
        std::thread::sleep(Duration::from_millis(10));
        threads = thread_cpus(server.child.id());
    }
    let reactor = threads.iter().find(|(name, _)| name == "corqd").unwrap();
    assert_eq!(reactor.1, "0", "{threads:?}");
    let helpers: Vec<_> = threads
        .iter()
        .filter(|(n, _)| n.starts_with("corq-"))
        .collect();
    for started in ["corq-checkpoint", "corq-sync"] {
        assert!(
            helpers.iter().any(|(n, _)| n == started),
            "{started} should run: {threads:?}"
        );
    }
    for (name, cpus) in helpers {
        assert!(
            !on_reactor_core(cpus),
            "{name} may run on the reactor's core: {cpus}"
        );
    }
    server.terminate();
}
