//! TLS, snappy and deflate on the TCP protocol (reference §1.11), against clients built from
//! independent implementations (rustls' client, `snap`'s frame reader/writer, `flate2`'s
//! stream codecs), with certificates the `openssl` CLI makes for each test; and the hostile
//! rows: garbage instead of a ClientHello, a stalled handshake, corrupt and truncated
//! compressed streams, a decompression bomb.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use corq::reactor::transport::tls::provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::util::{
    test_options, ChildServer, Raw, TempDir, TestServer, FRAME_ERROR, FRAME_MESSAGE,
    FRAME_RESPONSE, READ_TIMEOUT,
};

/// A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the CA and
/// a self-signed "rogue" client certificate, as PEM files in `dir`.
pub(crate) struct Certs(PathBuf);

impl Certs {
    pub(crate) fn make(dir: &Path) -> Certs {
        let run = |args: &[&str]| {
            let ok = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .stderr(std::process::Stdio::null())
                .status()
                .expect("the openssl CLI is installed (.ci/run installs it)")
                .success();
            assert!(ok, "openssl {args:?}");
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let req = |name: &str, cn: &str| {
            let (key, csr, subj) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("/CN={cn}"),
            );
            let mut a = vec!["req"];
            a.extend(ec);
            a.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run(&a);
        };
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=corq-test-ca",
        ]);
        run(&a);
        std::fs::write(dir.join("srv.ext"), "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n").unwrap();
        std::fs::write(
            dir.join("cli.ext"),
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, cn, ext) in [
            ("server", "localhost", "srv.ext"),
            ("client", "corq-client", "cli.ext"),
        ] {
            req(name, cn);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        let mut a = vec!["req", "-x509"];
        a.extend(ec);
        a.extend([
            "-keyout",
            "rogue.key",
            "-out",
            "rogue.pem",
            "-days",
            "2",
            "-subj",
            "/CN=rogue",
        ]);
        run(&a);
        Certs(dir.to_path_buf())
    }

    pub(crate) fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    /// A rustls client trusting the test CA, presenting `cert` (`client` or `rogue`) if given.
    fn client_config(&self, cert: Option<&str>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(self.file("ca.pem")).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let b = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match cert {
            Some(name) => {
                let chain = CertificateDer::pem_file_iter(self.file(&format!("{name}.pem")))
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(self.file(&format!("{name}.key"))).unwrap();
                b.with_client_auth_cert(chain, key).unwrap()
            }
            None => b.with_no_client_auth(),
        };
        Arc::new(cfg)
    }
}

/// The client's stream: plain or TLS.
enum Io {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Read for Io {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(b),
            Io::Tls(s) => s.read(b),
        }
    }
}

impl Write for Io {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(b),
            Io::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// The read side with its decompressor.
enum Rx {
    Plain(Io),
    Snappy(snap::read::FrameDecoder<Io>),
    Deflate(flate2::read::DeflateDecoder<Io>),
}

/// The write side's compressor.
enum Tx {
    Plain,
    Snappy(Box<snap::write::FrameEncoder<Vec<u8>>>),
    Deflate(flate2::write::DeflateEncoder<Vec<u8>>),
}

/// A protocol client that upgrades as a real client library does.
struct Client {
    rx: Option<Rx>,
    tx: Tx,
    /// Decoded bytes not yet parsed into frames.
    inbuf: Vec<u8>,
}

#[derive(Clone, Copy, Default)]
struct Mode {
    tls: bool,
    snappy: bool,
    deflate: bool,
}

impl Client {
    /// Connects, IDENTIFYs with `mode` and runs the upgrades (TLS, then compression), reading
    /// the `OK` after each. Returns the client and the IDENTIFY reply.
    fn connect(addr: SocketAddr, mode: Mode, tls: Option<Arc<ClientConfig>>) -> (Client, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.write_all(b"  V2").unwrap();
        let json = format!(
            r#"{{"client_id":"t","feature_negotiation":true,"tls_v1":{},"snappy":{},"deflate":{},"deflate_level":3}}"#,
            mode.tls, mode.snappy, mode.deflate
        );
        let mut c = Client {
            rx: Some(Rx::Plain(Io::Plain(s))),
            tx: Tx::Plain,
            inbuf: Vec::new(),
        };
        c.cmd("IDENTIFY", Some(json.as_bytes()));
        let (ft, reply) = c.frame_exact();
        let reply = String::from_utf8(reply).unwrap();
        assert_eq!(ft, FRAME_RESPONSE, "{reply}");
        if mode.tls {
            let Some(Rx::Plain(Io::Plain(s))) = c.rx.take() else {
                unreachable!()
            };
            let conn =
                ClientConnection::new(tls.unwrap(), ServerName::try_from("localhost").unwrap())
                    .unwrap();
            c.rx = Some(Rx::Plain(Io::Tls(Box::new(StreamOwned::new(conn, s)))));
            let (ft, ok) = c.frame_exact();
            assert_eq!((ft, &ok[..]), (FRAME_RESPONSE, &b"OK"[..]), "after TLS");
        }
        if mode.snappy || mode.deflate {
            let Some(Rx::Plain(io)) = c.rx.take() else {
                unreachable!()
            };
            if mode.snappy {
                c.rx = Some(Rx::Snappy(snap::read::FrameDecoder::new(io)));
                c.tx = Tx::Snappy(Box::new(snap::write::FrameEncoder::new(Vec::new())));
            } else {
                c.rx = Some(Rx::Deflate(flate2::read::DeflateDecoder::new(io)));
                c.tx = Tx::Deflate(flate2::write::DeflateEncoder::new(
                    Vec::new(),
                    flate2::Compression::new(3),
                ));
            }
            c.expect_ok("after compression");
        }
        (c, reply)
    }

    fn io(&mut self) -> &mut Io {
        match self.rx.as_mut().unwrap() {
            Rx::Plain(io) => io,
            Rx::Snappy(d) => d.get_mut(),
            Rx::Deflate(d) => d.get_mut(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let wire = match &mut self.tx {
            Tx::Plain => bytes.to_vec(),
            Tx::Snappy(e) => {
                e.write_all(bytes).unwrap();
                e.flush().unwrap();
                std::mem::take(e.get_mut())
            }
            Tx::Deflate(e) => {
                e.write_all(bytes).unwrap();
                e.flush().unwrap(); // a sync flush
                std::mem::take(e.get_mut())
            }
        };
        let io = self.io();
        io.write_all(&wire).unwrap();
        io.flush().unwrap();
    }

    fn cmd(&mut self, line: &str, body: Option<&[u8]>) {
        let mut buf = format!("{line}\n").into_bytes();
        if let Some(b) = body {
            buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
            buf.extend_from_slice(b);
        }
        self.send(&buf);
    }

    /// One frame read exactly, before a compression layer: the bytes after it belong to the
    /// next layer.
    fn frame_exact(&mut self) -> (u32, Vec<u8>) {
        let io = self.io();
        let mut head = [0u8; 8];
        io.read_exact(&mut head).unwrap();
        let size = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut data = vec![0; size - 4];
        io.read_exact(&mut data).unwrap();
        (u32::from_be_bytes(head[4..].try_into().unwrap()), data)
    }

    /// One frame, or None at EOF / a failed stream. Reads in large pieces, as client
    /// libraries do (flate2's reader blocks for input when asked for less than a flush holds).
    fn frame(&mut self) -> Option<(u32, Vec<u8>)> {
        loop {
            if self.inbuf.len() >= 8 {
                let size = u32::from_be_bytes(self.inbuf[..4].try_into().unwrap()) as usize;
                if self.inbuf.len() >= 4 + size {
                    let ft = u32::from_be_bytes(self.inbuf[4..8].try_into().unwrap());
                    let data = self.inbuf[8..4 + size].to_vec();
                    self.inbuf.drain(..4 + size);
                    return Some((ft, data));
                }
            }
            let rx: &mut dyn Read = match self.rx.as_mut().unwrap() {
                Rx::Plain(io) => io,
                Rx::Snappy(d) => d,
                Rx::Deflate(d) => d,
            };
            let mut tmp = vec![0u8; 1 << 16];
            match rx.read(&mut tmp) {
                Ok(0) => return None,
                Ok(n) => self.inbuf.extend_from_slice(&tmp[..n]),
                Err(e) => {
                    eprintln!("reading a frame: {e}");
                    return None;
                }
            }
        }
    }

    fn expect_ok(&mut self, what: &str) {
        let (ft, data) = self.frame().unwrap_or_else(|| panic!("{what}: EOF"));
        assert_eq!(
            (ft, String::from_utf8_lossy(&data).into_owned()),
            (FRAME_RESPONSE, "OK".to_owned()),
            "{what}"
        );
    }
}

/// A server with the test certificates and extra option changes.
pub(crate) fn tls_server(
    dir: &TempDir,
    certs: &Certs,
    tweak: impl FnOnce(&mut corq::config::Options),
) -> TestServer {
    let mut o = test_options(&dir.path().join("data"));
    o.tls_cert = certs.file("server.pem");
    o.tls_key = certs.file("server.key");
    o.https_address = String::new();
    tweak(&mut o);
    TestServer::start(o)
}

pub(crate) fn setup() -> (TempDir, Certs) {
    let dir = TempDir::new("transport");
    let cdir = dir.path().join("certs");
    std::fs::create_dir_all(&cdir).unwrap();
    let certs = Certs::make(&cdir);
    (dir, certs)
}

#[test]
fn publish_and_consume_over_every_layer_combination() {
    let (dir, certs) = setup();
    let srv = tls_server(&dir, &certs, |_| {});
    let cfg = certs.client_config(None);
    let modes = [
        Mode {
            tls: true,
            ..Mode::default()
        },
        Mode {
            snappy: true,
            ..Mode::default()
        },
        Mode {
            deflate: true,
            ..Mode::default()
        },
        Mode {
            tls: true,
            snappy: true,
            ..Mode::default()
        },
        Mode {
            tls: true,
            deflate: true,
            ..Mode::default()
        },
    ];
    // A large, compressible body crosses chunk and record boundaries.
    let big: Vec<u8> = (0..300_000u32).map(|i| b"corq"[(i % 4) as usize]).collect();
    for (i, mode) in modes.into_iter().enumerate() {
        let topic = format!("layers{i}");
        let (mut p, reply) = Client::connect(srv.addr, mode, Some(cfg.clone()));
        assert!(
            reply.contains(&format!(r#""tls_v1":{}"#, mode.tls)),
            "{reply}"
        );
        assert!(
            reply.contains(&format!(r#""snappy":{}"#, mode.snappy)),
            "{reply}"
        );
        assert!(
            reply.contains(&format!(r#""deflate":{}"#, mode.deflate)),
            "{reply}"
        );
        for n in 0..20 {
            p.cmd(&format!("PUB {topic}"), Some(format!("m{n}").as_bytes()));
            p.expect_ok("PUB");
        }
        p.cmd(&format!("PUB {topic}"), Some(&big));
        p.expect_ok("big PUB");
        let (mut c, _) = Client::connect(srv.addr, mode, Some(cfg.clone()));
        c.cmd(&format!("SUB {topic} ch"), None);
        c.expect_ok("SUB");
        let stats = crate::util::http_get(srv.http, &format!("/stats?format=json&topic={topic}"));
        let want = [
            (mode.tls, r#""tls":true,"tls_cipher_suite":"TLS_"#),
            (mode.tls, r#""tls_version":"TLS1.3""#),
            (mode.snappy, r#""snappy":true"#),
            (mode.deflate, r#""deflate":true"#),
        ];
        for (on, text) in want {
            assert_eq!(stats.contains(text), on, "mode {i}: {text} in {stats}");
        }
        c.cmd("RDY 100", None);
        let mut got = Vec::new();
        while got.len() < 21 {
            let (ft, data) = c
                .frame()
                .unwrap_or_else(|| panic!("mode {i}: EOF after {}", got.len()));
            if ft == FRAME_RESPONSE {
                continue; // a heartbeat
            }
            assert_eq!(ft, FRAME_MESSAGE);
            c.cmd(
                &format!("FIN {}", String::from_utf8_lossy(&data[10..26])),
                None,
            );
            got.push(data[26..].to_vec());
        }
        assert_eq!(got[0], b"m0", "mode {i}");
        assert_eq!(got[19], b"m19", "mode {i}");
        assert_eq!(got[20], big, "mode {i}");
    }
    srv.stop();
}

#[test]
fn identify_negotiation_defaults_and_both_compressions_refused() {
    let dir = TempDir::new("negotiate");
    let srv = TestServer::start(test_options(dir.path()));
    let mut r = Raw::connect(srv.addr);
    let reply = r.identify(r#"{"feature_negotiation":true,"snappy":true,"tls_v1":true}"#);
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.contains(r#""tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":true"#), "{reply}");
    drop(r);
    let mut r = Raw::connect(srv.addr);
    r.cmd(
        "IDENTIFY",
        Some(br#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#),
    );
    r.expect_error("E_IDENTIFY_FAILED cannot enable both deflate and snappy compression");
    r.expect_closed();
    srv.stop();

    let mut o = test_options(dir.path());
    o.snappy = false;
    o.deflate = false;
    let srv = TestServer::start(o);
    let mut r = Raw::connect(srv.addr);
    let reply = String::from_utf8(
        r.identify(r#"{"feature_negotiation":true,"snappy":true,"deflate":true}"#),
    )
    .unwrap();
    assert!(
        reply.contains(r#""deflate":false"#) && reply.contains(r#""snappy":false"#),
        "{reply}"
    );
    r.publish("still_plain", b"x");
    srv.stop();
}

#[test]
fn tls_required_refuses_plain_commands_with_nsqds_error() {
    let (dir, certs) = setup();
    let srv = tls_server(&dir, &certs, |o| {
        o.tls_required = corq::config::TlsRequired::Yes
    });
    let mut r = Raw::connect(srv.addr);
    r.cmd("PUB t", Some(b"x"));
    r.expect_error("E_INVALID cannot PUB in current state (TLS required)");
    r.expect_closed();
    let mut r = Raw::connect(srv.addr);
    r.identify(r#"{"feature_negotiation":true}"#);
    r.cmd("NOP", None);
    r.expect_error("E_INVALID cannot NOP in current state (TLS required)");
    r.expect_closed();
    let (mut c, _) = Client::connect(
        srv.addr,
        Mode {
            tls: true,
            ..Mode::default()
        },
        Some(certs.client_config(None)),
    );
    c.cmd("PUB t", Some(b"x"));
    c.expect_ok("PUB over TLS");
    // A second IDENTIFY asking for TLS again is refused (corq does not stack layers).
    c.cmd(
        "IDENTIFY",
        Some(br#"{"feature_negotiation":true,"tls_v1":true}"#),
    );
    let (ft, reply) = c.frame().expect("the JSON reply");
    assert_eq!(ft, FRAME_RESPONSE);
    assert!(String::from_utf8_lossy(&reply).contains(r#""tls_v1":true"#));
    let (ft, err) = c.frame().expect("the error");
    assert_eq!(
        (ft, String::from_utf8_lossy(&err).into_owned()),
        (
            FRAME_ERROR,
            "E_IDENTIFY_FAILED IDENTIFY failed the stream is already upgraded".to_owned()
        )
    );
    assert!(c.frame().is_none(), "closed");
    srv.stop();
}

#[test]
fn require_verify_refuses_clients_without_a_valid_certificate() {
    let (dir, certs) = setup();
    let srv = tls_server(&dir, &certs, |o| {
        o.tls_client_auth_policy = "require-verify".into();
        o.tls_root_ca_file = certs.file("ca.pem");
    });
    let tls = Mode {
        tls: true,
        ..Mode::default()
    };
    for bad in [None, Some("rogue")] {
        let mut s = TcpStream::connect(srv.addr).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        s.write_all(b"  V2IDENTIFY\n\0\0\0\x28{\"feature_negotiation\":true,\"tls_v1\":true}")
            .unwrap();
        let mut head = [0u8; 4];
        s.read_exact(&mut head).unwrap();
        let mut json = vec![0; u32::from_be_bytes(head) as usize];
        s.read_exact(&mut json).unwrap();
        let conn = ClientConnection::new(
            certs.client_config(bad),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        let mut t = StreamOwned::new(conn, s);
        let mut buf = [0u8; 10];
        let r = t.read_exact(&mut buf);
        assert!(r.is_err(), "{bad:?}: the handshake must fail, got {buf:?}");
    }
    // The common name the auth server gets (`Client::tls_state`) comes from this parse.
    for (name, cn) in [
        ("client", "corq-client"),
        ("rogue", "rogue"),
        ("server", "localhost"),
    ] {
        let der = CertificateDer::from_pem_file(certs.file(&format!("{name}.pem"))).unwrap();
        assert_eq!(
            corq::reactor::transport::tls::common_name(&der).as_deref(),
            Some(cn)
        );
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            let _ = corq::reactor::transport::tls::common_name(&der[..cut]); // no panic
        }
    }
    let (mut c, _) = Client::connect(srv.addr, tls, Some(certs.client_config(Some("client"))));
    c.cmd("PUB t", Some(b"x"));
    c.expect_ok("PUB with a CA-signed client certificate");
    srv.stop();
}

/// IDENTIFY asking for `what`, read the JSON reply; the stream is then upgraded.
fn identify_raw(addr: SocketAddr, what: &str) -> Raw {
    let mut r = Raw::connect(addr);
    let reply = r.identify(&format!(r#"{{"feature_negotiation":true,"{what}":true}}"#));
    assert!(String::from_utf8_lossy(&reply).contains(&format!(r#""{what}":true"#)));
    r
}

#[test]
fn garbage_instead_of_a_client_hello_and_a_stalled_handshake_are_closed() {
    let (dir, certs) = setup();
    let srv = tls_server(&dir, &certs, |_| {});
    let mut r = identify_raw(srv.addr, "tls_v1");
    r.send(&[0x42; 600]);
    let mut rest = Vec::new();
    let _ = r.stream.read_to_end(&mut rest); // an alert at most, then EOF
    assert!(rest.len() < 64, "only a TLS alert: {rest:?}");

    // A client that says tls_v1 and then sends half a ClientHello: closed at the 5 s
    // deadline, while others are served meanwhile.
    let mut stalled = identify_raw(srv.addr, "tls_v1");
    stalled.send(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]);
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut other = Raw::connect(srv.addr);
    other.publish("others_served", b"x");
    let start = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = stalled.stream.read_to_end(&mut rest);
    assert!(r.is_ok() || r.unwrap_err().kind() == std::io::ErrorKind::ConnectionReset);
    assert!(
        start.elapsed() < Duration::from_secs(59),
        "closed by the deadline, not our timeout"
    );
    srv.stop();
}

#[test]
fn corrupt_and_truncated_compressed_streams() {
    let dir = TempDir::new("corrupt");
    let srv = TestServer::start(test_options(dir.path()));
    // Half a snappy chunk waits; the rest completes the command.
    let mut enc = snap::write::FrameEncoder::new(Vec::new());
    enc.write_all(b"PUB half\n\0\0\0\x01x").unwrap();
    enc.flush().unwrap();
    let wire = enc.get_ref().clone();
    let mut r = identify_raw(srv.addr, "snappy");
    let mut dec = snap::read::FrameDecoder::new(r.stream.try_clone().unwrap());
    let mut frame = [0u8; 10];
    dec.read_exact(&mut frame).unwrap();
    assert_eq!(&frame[8..], b"OK", "the snappy upgrade's OK");
    let (a, b) = wire.split_at(wire.len() - 3);
    r.send(a);
    r.send(b);
    dec.read_exact(&mut frame).unwrap();
    assert_eq!(
        &frame[8..],
        b"OK",
        "PUB answered once its chunk was complete"
    );
    // A corrupt chunk (bad checksum) closes the connection.
    drop(dec);
    let mut bad = wire.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    r.send(&bad[10..]); // without a second stream identifier
    let mut rest = Vec::new();
    let _ = r.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a reply: {rest:?}");

    // Deflate: garbage closes.
    let mut r = identify_raw(srv.addr, "deflate");
    let mut ok = [0u8; 10];
    let mut dec = flate2::read::DeflateDecoder::new(&mut r.stream);
    dec.read_exact(&mut ok).unwrap();
    assert_eq!(&ok[8..], b"OK", "the deflate upgrade's OK");
    drop(dec);
    r.send(&[0xff; 64]);
    let mut rest = Vec::new();
    let _ = r.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a reply: {rest:?}");
    srv.stop();
}

/// One HTTPS request on a fresh connection (`Connection: close`); returns the whole reply.
fn https_request(addr: SocketAddr, cfg: Arc<ClientConfig>, head: &str, body: &[u8]) -> String {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let conn = ClientConnection::new(cfg, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut t = StreamOwned::new(conn, s);
    let mut req = format!(
        "{head} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    t.write_all(&req).unwrap();
    let mut reply = Vec::new();
    let _ = t.read_to_end(&mut reply); // EOF without close_notify is fine here
    String::from_utf8_lossy(&reply).into_owned()
}

#[test]
fn https_serves_the_api_and_tls_required_refuses_plain_http() {
    let (dir, certs) = setup();
    let srv = tls_server(&dir, &certs, |o| {
        o.https_address = "127.0.0.1:0".into();
        o.tls_required = corq::config::TlsRequired::Yes;
    });
    let https = srv.https.expect("an HTTPS listener when a cert is given");
    let cfg = certs.client_config(None);
    let reply = https_request(https, cfg.clone(), "POST /pub?topic=secure", b"hello");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nOK"), "{reply}");
    let reply = https_request(https, cfg, "GET /stats?format=json&topic=secure", b"");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains(r#""topic_name":"secure""#), "{reply}");
    assert!(reply.contains(r#""message_count":1"#), "{reply}");
    let (status, body) = crate::util::http_request(srv.http, "GET", "/ping", b"");
    assert_eq!(status, 403);
    assert_eq!(
        body,
        format!(
            "{{\"message\": \"TLS_REQUIRED\", \"https_port\": {}}}",
            https.port()
        )
    );
    srv.stop();

    // No certificate: no HTTPS listener.
    let dir = TempDir::new("nohttps");
    let srv = TestServer::start(test_options(dir.path()));
    assert!(srv.https.is_none());
    srv.stop();
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn a_deflate_bomb_is_closed_with_memory_bounded() {
    let dir = TempDir::new("bomb");
    let srv = ChildServer::start(dir.path(), &[]);
    let before = rss_kib(srv.child.id());
    // 1 MiB of zeros, sync-flushed, is a block sequence that can be repeated: 1 GiB claimed.
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    enc.flush().unwrap();
    let block = enc.get_ref().clone();
    let mut r = identify_raw(srv.addr, "deflate");
    let mut ok = [0u8; 10];
    flate2::read::DeflateDecoder::new(&mut r.stream)
        .read_exact(&mut ok)
        .unwrap();
    let mut sent = 0;
    for _ in 0..1024 {
        if r.stream.write_all(&block).is_err() {
            break; // closed under us: the point
        }
        sent += 1;
    }
    let mut rest = Vec::new();
    let _ = r.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "closed without a reply");
    let after = rss_kib(srv.child.id());
    assert!(
        after < before + 64 * 1024,
        "RSS grew from {before} KiB to {after} KiB ({sent} MiB claimed)"
    );
    // And it still serves.
    let mut ok = Raw::connect(srv.addr);
    ok.publish("after_bomb", b"x");
    srv.terminate();
}
