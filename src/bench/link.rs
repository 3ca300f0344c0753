//! The generator's side of a connection's stream: plain, or TLS and/or one compression, as
//! `--tls`, `--snappy` and `--deflate` ask. It reuses the server's layers
//! ([`crate::reactor::transport::Layered`], in its client form), so the bench and corqd
//! share one snappy codec, one deflate codec and one rustls buffering discipline.
//!
//! [`Dialer::dial`] opens a connection in blocking mode and runs the whole upgrade before the
//! run starts, in nsqd's order (reference §1.11):
//!
//! ```text
//! -> "  V2"  IDENTIFY {feature_negotiation, tls_v1, snappy, deflate, deflate_level}
//! <- IDENTIFY reply (JSON, plain)                     check every layer asked was granted
//! -> ClientHello ... <- handshake ...  <- OK (in TLS)          (--tls)
//! <- OK (compressed: the first frame of the new stream)        (--snappy / --deflate)
//! ```
//!
//! then turns the socket non-blocking for the mio loops. A plain connection sends only the
//! magic (no IDENTIFY, as before). [`Link`] is `Read + Write` for those loops: a plain link's
//! read and write are the socket calls themselves behind one enum branch, with no copy;
//! a layered one pumps bytes through the layers and hands out decoded bytes.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::protocol::{Upgrade, MAGIC_V2};
use crate::reactor::transport::{tls, Layered, OK_FRAME};

/// How long the blocking upgrade may wait for the server at each step.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest IDENTIFY reply accepted (nsqd's is a few hundred bytes).
const MAX_IDENTIFY_REPLY: usize = 64 * 1024;
/// Socket bytes read per call on a layered link.
const SCRATCH: usize = 64 * 1024;
/// Decoded bytes a layered link holds for its reader: the layers stop there.
const DECODED_CAP: usize = 256 * 1024;
/// The response frame type (nsqd's `FrameTypeResponse`).
const FRAME_RESPONSE: u32 = 0;

/// The stream layers of a run: nsqd's and go-nsq's names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransportOptions {
    /// `--tls`: upgrade every connection to TLS (IDENTIFY `tls_v1`).
    pub tls: bool,
    /// `--tls-root-ca-file`: the CA that signed the server's certificate.
    pub tls_root_ca_file: Option<String>,
    /// `--tls-insecure-skip-verify`: accept any server certificate.
    pub tls_insecure_skip_verify: bool,
    /// `--snappy`: the snappy framing format both ways.
    pub snappy: bool,
    /// `--deflate`: raw deflate both ways.
    pub deflate: bool,
    /// `--deflate-level`: asked of the server (it caps it at its `--max-deflate-level`), and
    /// the level of our own output.
    pub deflate_level: Option<i64>,
}

impl TransportOptions {
    /// Whether any layer is asked for.
    pub fn layered(&self) -> bool {
        self.tls || self.snappy || self.deflate
    }

    /// `tls+snappy`, `deflate`, ... or `plain`, for the summary.
    pub fn describe(&self) -> String {
        let names: Vec<&str> = [
            (self.tls, "tls"),
            (self.snappy, "snappy"),
            (self.deflate, "deflate"),
        ]
        .iter()
        .filter_map(|&(on, name)| on.then_some(name))
        .collect();
        if names.is_empty() {
            "plain".into()
        } else {
            names.join("+")
        }
    }

    /// Checks the combination, naming the flags at fault.
    ///
    /// # Errors
    /// A message for [`BenchError::Config`].
    pub fn validate(&self) -> Result<(), String> {
        if self.snappy && self.deflate {
            return Err(
                "--snappy and --deflate cannot be used together: a connection has one \
                        compression (nsqd refuses both with E_IDENTIFY_FAILED); pick one"
                    .into(),
            );
        }
        if !self.tls && (self.tls_root_ca_file.is_some() || self.tls_insecure_skip_verify) {
            let flag = if self.tls_root_ca_file.is_some() {
                "--tls-root-ca-file"
            } else {
                "--tls-insecure-skip-verify"
            };
            return Err(format!("{flag} applies to TLS connections: add --tls"));
        }
        if self.tls && self.tls_root_ca_file.is_some() && self.tls_insecure_skip_verify {
            return Err(
                "--tls-root-ca-file and --tls-insecure-skip-verify contradict each \
                        other: verify against the CA, or skip verification"
                    .into(),
            );
        }
        if self.tls && self.tls_root_ca_file.is_none() && !self.tls_insecure_skip_verify {
            return Err(
                "--tls needs --tls-root-ca-file PATH (the CA that signed the server's \
                        certificate) or --tls-insecure-skip-verify: corq has no system CA pool"
                    .into(),
            );
        }
        match self.deflate_level {
            Some(l) if !self.deflate => Err(format!("--deflate-level {l} needs --deflate")),
            Some(l) if !(1..=9).contains(&l) => {
                Err(format!("--deflate-level {l} is out of range: use 1..=9"))
            }
            _ => Ok(()),
        }
    }
}

/// Opens the connections of a run, every one with the same layers. Shared by the threads.
#[derive(Debug)]
pub struct Dialer {
    addr: SocketAddr,
    opts: TransportOptions,
    /// Built once per run (`--tls`): loading the CA file per connection would be waste.
    tls: Option<Arc<ClientConfig>>,
}

impl Dialer {
    /// A dialer for `addr` with `opts` (already validated).
    ///
    /// # Errors
    /// [`BenchError::Config`] for a CA file that cannot be read, naming the flag.
    pub fn new(addr: SocketAddr, opts: &TransportOptions) -> Result<Dialer, BenchError> {
        let tls = if opts.tls {
            let ca = opts.tls_root_ca_file.as_deref();
            let cfg = tls::client_config(ca, opts.tls_insecure_skip_verify);
            Some(cfg.map_err(BenchError::Config)?)
        } else {
            None
        };
        Ok(Dialer {
            addr,
            opts: opts.clone(),
            tls,
        })
    }

    /// A connected, non-blocking, `TCP_NODELAY` link that has sent the magic and, when
    /// layered, completed IDENTIFY and every upgrade.
    ///
    /// # Errors
    /// The connection failure (naming the address), a server that refuses or does not
    /// grant a layer, or a failed handshake.
    pub fn dial(&self) -> Result<Link, BenchError> {
        let addr = self.addr;
        let fail = |e: io::Error| BenchError::Run(format!("cannot connect to {addr}: {e}"));
        let mut s = std::net::TcpStream::connect(addr).map_err(fail)?;
        s.set_nodelay(true).map_err(fail)?;
        s.set_read_timeout(Some(SETUP_TIMEOUT)).map_err(fail)?;
        s.write_all(MAGIC_V2).map_err(fail)?;
        let layers = if self.opts.layered() {
            Some(self.upgrade(&mut s)?)
        } else {
            None
        };
        s.set_read_timeout(None).map_err(fail)?;
        s.set_nonblocking(true).map_err(fail)?;
        let stream = TcpStream::from_std(s);
        Ok(match layers {
            None => Link::Plain(stream),
            Some(l) => Link::Layered(stream, l),
        })
    }

    /// IDENTIFY, then TLS and compression in nsqd's order, each confirmed by its `OK`.
    fn upgrade(&self, s: &mut std::net::TcpStream) -> Result<Box<Layers>, BenchError> {
        let up = self.identify(s)?;
        let tls = match (&self.tls, up.tls) {
            (Some(cfg), true) => {
                let name = ServerName::IpAddress(self.addr.ip().into());
                let conn = ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| BenchError::Run(format!("TLS: {e}")))?;
                Some(conn)
            }
            _ => None,
        };
        let mut l = Box::new(Layers::new(Layered::client(tls)));
        if up.tls {
            l.expect_ok(s, "the TLS upgrade")?;
        }
        if up.snappy || up.deflate {
            l.layered.start_compression(&up);
            l.expect_ok(s, "the compression upgrade")?;
        }
        Ok(l)
    }

    /// Sends IDENTIFY and checks that its reply granted every layer asked for.
    fn identify(&self, s: &mut std::net::TcpStream) -> Result<Upgrade, BenchError> {
        let o = &self.opts;
        // nsqd's default level, and ours when --deflate-level is not given.
        let level = o.deflate_level.unwrap_or(6);
        let body = format!(
            r#"{{"client_id":"corq-bench","hostname":"corq-bench","user_agent":"corq-bench/{}","feature_negotiation":true,"tls_v1":{},"snappy":{},"deflate":{},"deflate_level":{level}}}"#,
            env!("CARGO_PKG_VERSION"),
            o.tls,
            o.snappy,
            o.deflate
        );
        let mut cmd = b"IDENTIFY\n".to_vec();
        // cannot truncate: the body is a few hundred bytes.
        cmd.extend_from_slice(&(body.len() as u32).to_be_bytes());
        cmd.extend_from_slice(body.as_bytes());
        let io = |e: io::Error| BenchError::Run(format!("IDENTIFY: {e}"));
        s.write_all(&cmd).map_err(io)?;
        let (ft, data) = read_frame_exact(s).map_err(io)?;
        let text = String::from_utf8_lossy(&data);
        if ft != FRAME_RESPONSE {
            return Err(BenchError::Run(format!("IDENTIFY: server error: {text}")));
        }
        let reply: IdentifyReply = serde_json::from_slice(&data).map_err(|_| {
            BenchError::Run(format!(
                "IDENTIFY: expected a JSON reply (feature negotiation), got {text:?}"
            ))
        })?;
        for (asked, granted, flag, field) in [
            (o.tls, reply.tls_v1, "--tls", "tls_v1"),
            (o.snappy, reply.snappy, "--snappy", "snappy"),
            (o.deflate, reply.deflate, "--deflate", "deflate"),
        ] {
            if asked && !granted {
                return Err(BenchError::Run(format!(
                    "{flag}: the server did not grant it (IDENTIFY reply {field}: false; \
                     corqd/nsqd need --tls-cert and --tls-key for TLS, --snappy/--deflate on)"
                )));
            }
        }
        Ok(Upgrade {
            tls: o.tls,
            snappy: o.snappy,
            deflate: o.deflate,
            deflate_level: level,
        })
    }
}

/// The fields of nsqd's IDENTIFY reply the upgrade needs.
#[derive(Debug, Deserialize)]
struct IdentifyReply {
    #[serde(default)]
    tls_v1: bool,
    #[serde(default)]
    snappy: bool,
    #[serde(default)]
    deflate: bool,
}

/// One frame read exactly from a plain blocking socket (no byte past it: the next layer
/// owns those).
fn read_frame_exact(s: &mut std::net::TcpStream) -> io::Result<(u32, Vec<u8>)> {
    let mut head = [0u8; 8];
    s.read_exact(&mut head)?;
    let [a, b, c, d, e, f, g, h] = head;
    let size = u32::from_be_bytes([a, b, c, d]) as usize;
    let ft = u32::from_be_bytes([e, f, g, h]);
    if !(4..=MAX_IDENTIFY_REPLY).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame size {size}"),
        ));
    }
    let mut data = vec![0; size - 4];
    s.read_exact(&mut data)?;
    Ok((ft, data))
}

/// A layered link's state: the layers and the decoded bytes not yet handed out.
#[derive(Debug)]
pub struct Layers {
    layered: Layered,
    /// Decoded bytes; `decoded[dpos..]` are not yet read.
    decoded: Vec<u8>,
    dpos: usize,
    /// Socket reads land here before [`Layered::ingest`].
    scratch: Vec<u8>,
}

impl Layers {
    fn new(layered: Layered) -> Layers {
        Layers {
            layered,
            decoded: Vec::new(),
            dpos: 0,
            scratch: vec![0; SCRATCH],
        }
    }

    /// During the blocking upgrade: sends what the layers hold (the handshake) and reads
    /// until exactly one frame, `OK`, is decoded; the bytes after it stay in the layers.
    fn expect_ok(&mut self, s: &mut std::net::TcpStream, what: &str) -> Result<(), BenchError> {
        let fail = |e: io::Error| BenchError::Run(format!("{what}: {e}"));
        let mut got = Vec::with_capacity(OK_FRAME.len());
        loop {
            self.layered.pump(&mut got, OK_FRAME.len()).map_err(fail)?;
            // What the input made rustls want to say (the ClientHello first, then Finished).
            self.layered.send(s, &[]).map_err(fail)?;
            if got.len() >= OK_FRAME.len() {
                break;
            }
            let n = s.read(&mut self.scratch).map_err(fail)?;
            if n == 0 {
                return Err(fail(io::ErrorKind::UnexpectedEof.into()));
            }
            self.layered.ingest(&self.scratch[..n]).map_err(fail)?;
        }
        if got != OK_FRAME {
            let text = String::from_utf8_lossy(got.get(8..).unwrap_or_default());
            return Err(BenchError::Run(format!(
                "{what}: expected OK, got {text:?}"
            )));
        }
        Ok(())
    }

    /// Decoded bytes into `buf`: what is held, then what the layers can make, then socket
    /// reads until `buf` is full or the socket would block. So a short read means the socket
    /// was drained, as on a plain socket (the callers skip the read that would block).
    fn read(&mut self, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            let held = &self.decoded[self.dpos..];
            let n = held.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&held[..n]);
            (filled, self.dpos) = (filled + n, self.dpos + n);
            if self.dpos == self.decoded.len() {
                self.decoded.clear();
                self.dpos = 0;
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            if self.layered.pump(&mut self.decoded, DECODED_CAP)? > 0 {
                continue;
            }
            match sock.read(&mut self.scratch) {
                Ok(0) => return Ok(filled),
                Ok(k) => self.layered.ingest(&self.scratch[..k])?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => return Ok(filled),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// One generator connection's stream.
#[derive(Debug)]
pub enum Link {
    /// The socket's bytes are the protocol's.
    Plain(TcpStream),
    /// TLS and/or compression between the socket and the protocol.
    Layered(TcpStream, Box<Layers>),
}

impl Link {
    /// The socket, to register with a `Poll`.
    pub fn socket(&mut self) -> &mut TcpStream {
        match self {
            Link::Plain(s) | Link::Layered(s, _) => s,
        }
    }

    /// Writes what the layers still hold for the socket (a write that met `WouldBlock`
    /// leaves it there). Nothing to do on a plain link: its caller's buffer holds the rest.
    ///
    /// # Errors
    /// The socket failed.
    pub fn flush_layers(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(_) => Ok(()),
            Link::Layered(s, l) => l.layered.send(s, &[]).map(drop),
        }
    }

    /// Whether the layers hold bytes for the socket.
    pub fn layers_pending(&self) -> bool {
        match self {
            Link::Plain(_) => false,
            Link::Layered(_, l) => l.layered.wants_write(),
        }
    }
}

impl Read for Link {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Layered(s, l) => l.read(s, buf),
        }
    }
}

impl Write for Link {
    /// A layered write takes bytes into the layers and writes until done or `WouldBlock`;
    /// nothing taken at all is `WouldBlock`, as a full socket would say.
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Layered(s, l) => match l.layered.send(s, buf)? {
                0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            },
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_layers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(f: impl FnOnce(&mut TransportOptions)) -> TransportOptions {
        let mut o = TransportOptions::default();
        f(&mut o);
        o
    }

    #[test]
    fn bad_combinations_name_their_flags() {
        let err = |o: TransportOptions| o.validate().unwrap_err();
        assert!(err(opts(|o| (o.snappy, o.deflate) = (true, true)))
            .starts_with("--snappy and --deflate"));
        let ca = Some("ca.pem".to_owned());
        assert!(err(opts(|o| o.tls_root_ca_file = ca.clone())).starts_with("--tls-root-ca-file"));
        assert!(err(opts(|o| o.tls_insecure_skip_verify = true))
            .starts_with("--tls-insecure-skip-verify"));
        assert!(err(opts(|o| o.tls = true)).contains("--tls-root-ca-file PATH"));
        assert!(err(opts(|o| o.deflate_level = Some(3))).contains("needs --deflate"));
        assert!(err(opts(|o| (o.deflate, o.deflate_level) = (true, Some(10)))).contains("1..=9"));
        let good = opts(|o| (o.tls, o.tls_root_ca_file, o.snappy) = (true, ca, true));
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.describe(), "tls+snappy");
        assert_eq!(TransportOptions::default().describe(), "plain");
    }
}
