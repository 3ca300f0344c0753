//! Helpers shared by the integration tests: a server on 127.0.0.1:0 with its own data dir,
//! a raw wire connection that speaks frames byte for byte, and a child `corqd` process for
//! crash tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use corq::{Handle, Options, Server};

/// How long any single read in a test may wait before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("corq-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        lock_released().insert(self.0.clone());
    }
}

/// Temp dirs already removed. `let (server, _dir) = start_server();` drops the dir before the
/// server, whose final checkpoint then makes it again: the server removes it once stopped.
static RELEASED: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn lock_released() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    RELEASED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// An in-process server on its own thread; stopped (cleanly) on drop.
pub struct TestServer {
    /// Where its TCP listener is.
    pub addr: SocketAddr,
    /// Where its HTTP listener is.
    pub http: SocketAddr,
    /// Where its HTTPS listener is, when TLS is configured.
    pub https: Option<SocketAddr>,
    handle: Handle,
    thread: Option<JoinHandle<()>>,
    data_path: PathBuf,
}

/// Options for a test server: loopback, port 0, the given data dir.
pub fn test_options(dir: &Path) -> Options {
    Options::local(dir)
}

impl TestServer {
    /// Starts a server with these options.
    pub fn start(opts: Options) -> TestServer {
        let data_path = opts.data_path.clone();
        let server = Server::bind(opts.validate().unwrap()).unwrap();
        let addr = server.tcp_addr();
        let http = server.http_addr().expect("tests run with HTTP on");
        let https = server.https_addr();
        let handle = server.handle();
        let thread = std::thread::spawn(move || server.run().unwrap());
        TestServer {
            addr,
            http,
            https,
            handle,
            thread: Some(thread),
            data_path,
        }
    }

    /// Stops the server and waits for its clean shutdown (final checkpoint written).
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.handle.shutdown();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        if lock_released().contains(&self.data_path) {
            let _ = std::fs::remove_dir_all(&self.data_path);
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// A server with default options on a fresh data dir (the dir lives as long as the tuple).
pub fn start_server() -> (TestServer, TempDir) {
    let dir = TempDir::new("srv");
    (TestServer::start(test_options(dir.path())), dir)
}

/// Frame types on the wire.
pub const FRAME_RESPONSE: u32 = 0;
/// Error frame.
pub const FRAME_ERROR: u32 = 1;
/// Message frame.
pub const FRAME_MESSAGE: u32 = 2;

/// A raw protocol connection: the tests see exactly what the server writes.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    /// Connects and sends the V2 magic.
    pub fn connect(addr: SocketAddr) -> Raw {
        let mut raw = Raw::connect_no_magic(addr);
        raw.send(b"  V2");
        raw
    }

    /// Connects without sending anything.
    pub fn connect_no_magic(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Raw { stream }
    }

    /// Sends raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a command line (a `\n` is added) with an optional size-prefixed body.
    pub fn cmd(&mut self, line: &str, body: Option<&[u8]>) {
        let mut buf = format!("{line}\n").into_bytes();
        if let Some(b) = body {
            buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
            buf.extend_from_slice(b);
        }
        self.send(&buf);
    }

    /// Reads one frame: (type, data). Panics on EOF or timeout.
    pub fn frame(&mut self) -> (u32, Vec<u8>) {
        self.try_frame().expect("expected a frame, got EOF")
    }

    /// Reads one frame, or None at EOF.
    pub fn try_frame(&mut self) -> Option<(u32, Vec<u8>)> {
        let mut head = [0u8; 8];
        match self.stream.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("reading a frame: {e}"),
        }
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let ft = u32::from_be_bytes(head[4..].try_into().unwrap());
        assert!((4..64 << 20).contains(&size), "bad frame size {size}");
        let mut data = vec![0; size - 4];
        self.stream.read_exact(&mut data).unwrap();
        Some((ft, data))
    }

    /// Reads a frame, skipping heartbeats.
    pub fn frame_skip_heartbeats(&mut self) -> (u32, Vec<u8>) {
        loop {
            let f = self.frame();
            if f != (FRAME_RESPONSE, b"_heartbeat_".to_vec()) {
                return f;
            }
        }
    }

    /// Expects a response frame with exactly this data.
    pub fn expect_response(&mut self, data: &[u8]) {
        let (ft, got) = self.frame_skip_heartbeats();
        assert_eq!(
            (ft, String::from_utf8_lossy(&got)),
            (FRAME_RESPONSE, String::from_utf8_lossy(data))
        );
    }

    /// Expects an error frame with exactly this data.
    pub fn expect_error(&mut self, data: &str) {
        let (ft, got) = self.frame_skip_heartbeats();
        assert_eq!(
            (ft, String::from_utf8_lossy(&got).into_owned()),
            (FRAME_ERROR, data.to_owned())
        );
    }

    /// Expects the server to close the connection (EOF) with nothing more sent.
    pub fn expect_closed(&mut self) {
        let mut rest = Vec::new();
        let r = self.stream.read_to_end(&mut rest);
        match r {
            Ok(_) => assert!(
                rest.is_empty(),
                "expected EOF, got {} more bytes: {:?}",
                rest.len(),
                String::from_utf8_lossy(&rest)
            ),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset,
                "expected EOF, got {e}"
            ),
        }
    }

    /// Expects a message frame; returns (timestamp, attempts, id, body).
    pub fn expect_message(&mut self) -> (i64, u16, String, Vec<u8>) {
        let (ft, data) = self.frame_skip_heartbeats();
        assert_eq!(
            ft,
            FRAME_MESSAGE,
            "expected a message, got {:?}",
            String::from_utf8_lossy(&data)
        );
        let ts = i64::from_be_bytes(data[..8].try_into().unwrap());
        let attempts = u16::from_be_bytes(data[8..10].try_into().unwrap());
        let id = String::from_utf8(data[10..26].to_vec()).unwrap();
        (ts, attempts, id, data[26..].to_vec())
    }

    /// Publishes and expects OK.
    pub fn publish(&mut self, topic: &str, body: &[u8]) {
        self.cmd(&format!("PUB {topic}"), Some(body));
        self.expect_response(b"OK");
    }

    /// SUB and expects OK.
    pub fn sub(&mut self, topic: &str, channel: &str) {
        self.cmd(&format!("SUB {topic} {channel}"), None);
        self.expect_response(b"OK");
    }

    /// IDENTIFY with a JSON body; returns the reply frame data.
    pub fn identify(&mut self, json: &str) -> Vec<u8> {
        self.cmd("IDENTIFY", Some(json.as_bytes()));
        let (ft, data) = self.frame();
        assert_eq!(
            ft,
            FRAME_RESPONSE,
            "IDENTIFY failed: {}",
            String::from_utf8_lossy(&data)
        );
        data
    }

    /// Two round trips that prove every earlier command was processed and every frame the
    /// server produced for them was sent: the frames read meanwhile are returned. (Two, because
    /// the server writes a turn's replies before the messages that turn's delivery pass adds.)
    pub fn sync(&mut self) -> Vec<(u32, Vec<u8>)> {
        let mut before = Vec::new();
        for _ in 0..2 {
            self.cmd("PUB corq_test_sync", Some(b"x"));
            loop {
                let f = self.frame_skip_heartbeats();
                if f == (FRAME_RESPONSE, b"OK".to_vec()) {
                    break;
                }
                before.push(f);
            }
        }
        before
    }
}

/// `GET path` over a fresh HTTP/1.1 connection (`Connection: close`); returns the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let (head, body) = http_get_raw(addr, path);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body
}

/// `GET path` over a fresh HTTP/1.1 connection (`Connection: close`), whatever its status;
/// returns the raw response head and the body.
pub fn http_get_raw(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    (head.to_owned(), body.to_owned())
}

/// Drains a subscribed connection: every message it is sent, FIN'ing each, until two round
/// trips show nothing more; returns (attempts, body) in delivery order.
pub fn drain(c: &mut Raw) -> Vec<(u16, Vec<u8>)> {
    let mut got = Vec::new();
    loop {
        let frames = c.sync();
        if frames.is_empty() {
            return got;
        }
        for (ft, data) in frames {
            assert_eq!(ft, FRAME_MESSAGE);
            let attempts = u16::from_be_bytes([data[8], data[9]]);
            c.cmd(
                &format!("FIN {}", String::from_utf8_lossy(&data[10..26])),
                None,
            );
            got.push((attempts, data[26..].to_vec()));
        }
    }
}

/// Subscribes to `topic`/`ch` with RDY 2500, drains it (see [`drain`]) and leaves with `CLS`.
/// Why `CLS` before hanging up: the server may handle a publish from another connection
/// before it sees this one's EOF, and would then deliver that message here, to a consumer
/// about to vanish (the next consumer of `ch` would wait a whole message timeout for it).
/// `CLOSE_WAIT` proves the server stopped delivering to this connection.
pub fn subscribe_and_drain(addr: SocketAddr, topic: &str) -> Vec<(u16, Vec<u8>)> {
    let mut c = Raw::connect(addr);
    c.sub(topic, "ch");
    c.cmd("RDY 2500", None);
    let got = drain(&mut c);
    c.cmd("CLS", None);
    c.expect_response(b"CLOSE_WAIT");
    got
}

/// A `corqd` child process (for crash tests): killed on drop.
pub struct ChildServer {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its HTTP listener.
    pub http: SocketAddr,
    /// Every line it logged (stderr), for tests that check a warning was given.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

/// A `corqd` command on 127.0.0.1:0 (both listeners) with `dir` as data path and extra flags;
/// the caller sets up its stdio and spawns it.
pub fn corqd_command(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corqd"));
    cmd.args([
        "--tcp-address",
        "127.0.0.1:0",
        "--http-address",
        "127.0.0.1:0",
        "--data-path",
    ])
    .arg(dir)
    .args(extra);
    cmd
}

impl ChildServer {
    /// Starts `corqd` on 127.0.0.1:0 with `dir` as data path and extra flags; waits for its
    /// "listening" log line to learn the port.
    pub fn start(dir: &Path, extra: &[&str]) -> ChildServer {
        let mut child = corqd_command(dir, extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                for kind in ["TCP", "HTTP"] {
                    if let Some(addr) = line.split(&format!("{kind}: listening on ")).nth(1) {
                        // The address ends the text line, or the `msg` string of a JSON one.
                        let addr = addr.split(['"', ' ']).next().unwrap_or_default();
                        let _ = tx.send((kind, addr.trim().to_owned()));
                    }
                }
                keep.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut http) = (None, None);
        while addr.is_none() || http.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(("TCP", a)) => addr = Some(a.parse().unwrap()),
                Ok((_, a)) => http = Some(a.parse().unwrap()),
                Err(_) => panic!("corqd did not start: {:?}", log.lock().unwrap()),
            }
        }
        ChildServer {
            child,
            addr: addr.unwrap(),
            http: http.unwrap(),
            log,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, and the exit status must be success.
    pub fn terminate(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.success(), "corqd exited with {status}");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one HTTP/1.1 request with `Connection: close`, body whole; the socket to read from.
fn send_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s
}

/// POSTs `body` whole, waits until the reply has arrived and 200 ms more (time for a reset to
/// follow it), then reads to EOF: the read's result and the reply. For servers that refuse a
/// body unread and must still deliver the refusal.
pub fn post_and_read_late(
    addr: SocketAddr,
    path: &str,
    body: &[u8],
) -> (std::io::Result<usize>, String) {
    let mut s = send_request(addr, "POST", path, body);
    s.peek(&mut [0u8; 1]).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut reply = Vec::new();
    let read = s.read_to_end(&mut reply);
    (read, String::from_utf8_lossy(&reply).into_owned())
}

/// One HTTP/1.1 request with `Connection: close`: (status, body), whatever the status.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = send_request(addr, method, path, body);
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let all = String::from_utf8_lossy(&all).into_owned();
    let (head, body) = all.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}

/// Polls `cond` every 50 ms until it holds; panics naming `what` after a generous deadline
/// (the host may be loaded: never a timing assertion, only an upper bound on waiting).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mounts a tmpfs of `size` (e.g. `"64m"`) on a fresh directory; None when not permitted (not
/// root). Pair it with [`Unmount`].
pub fn tmpfs(size: &str) -> Option<TempDir> {
    let dir = TempDir::new("tmpfs");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(dir)
}

/// Unmounts a path on drop (declare it after the [`TempDir`] so it runs first).
pub struct Unmount(pub PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Bytes in use on the filesystem holding `path` (statvfs).
pub fn fs_used_bytes(path: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `st` is a plain C struct we own; `c` is a valid NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    (st.f_blocks - st.f_bfree) as u64 * st.f_frsize as u64
}
