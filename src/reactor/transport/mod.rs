//! The stream layers under a connection's byte buffers: plain, or TLS and/or one compression
//! (snappy or deflate, inside TLS when both). The protocol decoder and the broker see plain
//! bytes either way.
//!
//! A connection starts [`Transport::Plain`], whose read and write are the socket calls
//! themselves: TLS costs the plain path one enum branch per read and write. An IDENTIFY that
//! negotiates an upgrade turns it into [`Transport::Layered`], a pipeline of buffers:
//!
//! ```text
//! read:  socket -> raw_in -> [rustls] -> plain_in -> [inflate | snappy decode] -> conn rbuf
//! write: broker output -> [deflate | snappy encode] -> [rustls] -> raw_out -> socket
//! ```
//!
//! Every stage is bounded: the decoded bytes stop at the conn's input cap (and resume when the
//! decoder drained them), `plain_in` holds at most [`PLAIN_IN_CAP`], rustls buffers at most a
//! record, and output is taken from the broker only while `raw_out` is small, so a client that
//! does not read keeps its backlog in the broker's output buffer, where backpressure sees it.
//! nsqd's order (reference §1.11): the IDENTIFY reply in plain, the TLS handshake, `OK` over
//! TLS; then compression starts, and its own `OK` is the first compressed frame.
//!
//! The same pipeline serves the other end of the wire: [`Layered::client`] is a client's
//! stream (a rustls `ClientConnection`, no prefix, no `OK` of its own), whose owner reads the
//! `OK` after TLS and then calls [`Layered::start_compression`] before reading the compressed
//! one (`corq bench`'s `bench::link`). Server and client share the codecs and the buffering.

pub mod deflate;
pub mod snappy;
pub mod tls;

use std::io::{self, Read, Write};
use std::sync::Arc;

use rustls::{ClientConnection, Connection, ServerConfig, ServerConnection};

use crate::protocol::{TlsInfo, Upgrade};
use deflate::{DeflateDecoder, DeflateEncoder};
use snappy::{SnappyDecoder, SnappyEncoder};

/// The response frame `OK`, sent after each upgrade.
pub const OK_FRAME: &[u8] = b"\0\0\0\x06\0\0\0\0OK";
/// Plaintext out of TLS waiting for the decompressor: more than the largest snappy chunk.
const PLAIN_IN_CAP: usize = 128 * 1024;
/// Output taken from the broker per write while the socket keeps up.
const OUT_STEP: usize = 64 * 1024;
/// Raw input that no stage takes: only a broken invariant gets here, so fail loudly.
const RAW_IN_CAP: usize = 1 << 20;

/// A connection's stream: plain bytes on the socket, or layers.
#[derive(Debug, Default)]
pub enum Transport {
    /// No layers: the socket's bytes are the protocol's.
    #[default]
    Plain,
    /// TLS and/or compression.
    Layered(Box<Layered>),
}

/// The compression layer.
#[derive(Debug)]
enum Codec {
    None,
    Snappy(Box<(SnappyDecoder, SnappyEncoder)>),
    Deflate(DeflateDecoder, DeflateEncoder),
}

/// The layered stream's state and buffers.
#[derive(Debug)]
pub struct Layered {
    /// The server's or (bench) the client's side of TLS.
    tls: Option<Connection>,
    /// Whether the handshake completion was reported ([`Layered::take_established`]).
    tls_reported: bool,
    codec: Codec,
    raw_in: Vec<u8>,
    plain_in: Vec<u8>,
    /// Compressed output on its way into TLS (reused).
    mid_out: Vec<u8>,
    raw_out: Vec<u8>,
    raw_out_pos: usize,
}

impl Layered {
    /// The layers an IDENTIFY agreed to. `prefix` (the IDENTIFY reply and anything queued
    /// before it) goes out in plain first; then the `OK` of each upgrade is queued over it.
    ///
    /// # Errors
    /// TLS negotiated without a server configuration, or rustls refusing to start.
    pub fn new(up: &Upgrade, tls: Option<&Arc<ServerConfig>>, prefix: &[u8]) -> io::Result<Self> {
        let mut l = Layered {
            tls: None,
            tls_reported: false,
            codec: Codec::None,
            raw_in: Vec::new(),
            plain_in: Vec::new(),
            mid_out: Vec::new(),
            raw_out: prefix.to_vec(),
            raw_out_pos: 0,
        };
        if up.tls {
            let cfg = tls.ok_or_else(|| io::Error::other("TLS is not configured"))?;
            let mut conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
            // Output enters rustls only while `raw_out` is short (`send`), which bounds it.
            conn.set_buffer_limit(None);
            // rustls holds this until the handshake completes, as nsqd sends it after.
            conn.writer().write_all(OK_FRAME)?;
            l.tls = Some(conn.into());
        }
        l.start_compression(up);
        if !matches!(l.codec, Codec::None) {
            l.encode(OK_FRAME)?;
        }
        Ok(l)
    }

    /// A client's stream after an IDENTIFY reply that granted upgrades: TLS from now on if
    /// `tls` is given (its ClientHello leaves with the first [`Layered::send`]), no
    /// compression yet. The owner reads the server's `OK` after TLS (exactly its 10 bytes:
    /// what follows is compressed), then calls [`Layered::start_compression`].
    pub fn client(tls: Option<ClientConnection>) -> Self {
        Layered {
            tls: tls.map(|mut c| {
                // As on the server: output enters rustls only while `raw_out` is short.
                c.set_buffer_limit(None);
                c.into()
            }),
            tls_reported: false,
            codec: Codec::None,
            raw_in: Vec::new(),
            plain_in: Vec::new(),
            mid_out: Vec::new(),
            raw_out: Vec::new(),
            raw_out_pos: 0,
        }
    }

    /// Switches both directions to the compression `up` agreed to (none if neither): on the
    /// server at once, on a client after the `OK` that ends the TLS upgrade.
    pub fn start_compression(&mut self, up: &Upgrade) {
        if up.snappy {
            self.codec = Codec::Snappy(Box::new((SnappyDecoder::new(), SnappyEncoder::new())));
        } else if up.deflate {
            let enc = DeflateEncoder::new(up.deflate_level);
            self.codec = Codec::Deflate(DeflateDecoder::new(), enc);
        }
    }

    /// An HTTPS connection: TLS from the first byte, nothing else.
    ///
    /// # Errors
    /// rustls refusing to start.
    pub fn https(cfg: &Arc<ServerConfig>) -> io::Result<Box<Self>> {
        let mut conn = ServerConnection::new(cfg.clone()).map_err(io::Error::other)?;
        conn.set_buffer_limit(None);
        Ok(Box::new(Layered {
            tls: Some(conn.into()),
            tls_reported: false,
            codec: Codec::None,
            raw_in: Vec::new(),
            plain_in: Vec::new(),
            mid_out: Vec::new(),
            raw_out: Vec::new(),
            raw_out_pos: 0,
        }))
    }

    /// True while the TLS handshake has not completed.
    pub fn handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_handshaking())
    }

    /// Once, when the TLS handshake has completed: what the broker reports of it.
    pub fn take_established(&mut self) -> Option<TlsInfo> {
        let tls = self.tls.as_ref()?;
        if self.tls_reported || tls.is_handshaking() {
            return None;
        }
        self.tls_reported = true;
        let common_name = tls
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls::common_name(c));
        let version = match tls.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLS1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLS1.2",
            _ => "",
        };
        // rustls names TLS 1.3 suites TLS13_*; Go names them TLS_*.
        let cipher_suite = tls
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .map(|n| n.replacen("TLS13_", "TLS_", 1))
            .unwrap_or_default();
        Some(TlsInfo {
            common_name,
            version: version.to_owned(),
            cipher_suite,
        })
    }

    /// Whether the TLS handshake completed.
    pub fn is_tls(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| !t.is_handshaking())
    }

    /// Raw bytes from the socket (the bytes after IDENTIFY already read, or a new read).
    pub fn ingest(&mut self, data: &[u8]) -> io::Result<()> {
        if self.raw_in.len() > RAW_IN_CAP {
            return Err(io::Error::other("transport input stalled"));
        }
        self.raw_in.extend_from_slice(data);
        Ok(())
    }

    /// Moves input through the layers into `rbuf` while it is shorter than `limit`; returns
    /// how many bytes were added.
    ///
    /// # Errors
    /// A TLS failure (its alert is queued in the output) or a corrupt compressed stream.
    pub fn pump(&mut self, rbuf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
        let start = rbuf.len();
        loop {
            let before = (rbuf.len(), self.raw_in.len(), self.plain_in.len());
            if self.tls.is_some() {
                self.tls_in()?;
            } else if self.plain_in.is_empty() {
                std::mem::swap(&mut self.plain_in, &mut self.raw_in);
            } else {
                self.plain_in.append(&mut self.raw_in);
            }
            self.decode(rbuf, limit)?;
            if before == (rbuf.len(), self.raw_in.len(), self.plain_in.len()) {
                return Ok(rbuf.len() - start);
            }
        }
    }

    /// raw_in -> rustls -> plain_in, while plain_in has room.
    fn tls_in(&mut self) -> io::Result<()> {
        let Some(tls) = &mut self.tls else {
            return Ok(());
        };
        loop {
            while self.plain_in.len() < PLAIN_IN_CAP {
                let old = self.plain_in.len();
                self.plain_in.resize(old + 16 * 1024, 0);
                let got = tls.reader().read(&mut self.plain_in[old..]);
                match got {
                    Ok(n) => self.plain_in.truncate(old + n),
                    Err(_) => self.plain_in.truncate(old),
                }
                match got {
                    Ok(0) => break, // close_notify: the socket's EOF follows
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if self.raw_in.is_empty() || self.plain_in.len() >= PLAIN_IN_CAP {
                return Ok(());
            }
            let n = tls.read_tls(&mut self.raw_in.as_slice())?;
            self.raw_in.drain(..n);
            if let Err(e) = tls.process_new_packets() {
                // Queue the alert rustls prepared; the caller closes after one write.
                while tls.wants_write() {
                    if tls.write_tls(&mut self.raw_out).is_err() {
                        break;
                    }
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// plain_in -> decompressor -> rbuf.
    fn decode(&mut self, rbuf: &mut Vec<u8>, limit: usize) -> io::Result<()> {
        let bad = |e: &'static str| io::Error::new(io::ErrorKind::InvalidData, e);
        let used = match &mut self.codec {
            Codec::None => {
                let n = self.plain_in.len().min(limit.saturating_sub(rbuf.len()));
                rbuf.extend_from_slice(&self.plain_in[..n]);
                n
            }
            Codec::Snappy(c) => c.0.decode(&self.plain_in, rbuf, limit).map_err(bad)?,
            Codec::Deflate(d, _) => d.decode(&self.plain_in, rbuf, limit).map_err(bad)?,
        };
        self.plain_in.drain(..used);
        Ok(())
    }

    /// Plain output -> compressor -> TLS (or raw_out).
    fn encode(&mut self, data: &[u8]) -> io::Result<()> {
        let out = if self.tls.is_some() {
            &mut self.mid_out
        } else {
            &mut self.raw_out
        };
        match &mut self.codec {
            Codec::None => out.extend_from_slice(data),
            Codec::Snappy(c) => c.1.encode(data, out),
            Codec::Deflate(_, e) => e.encode(data, out),
        }
        if let Some(tls) = &mut self.tls {
            tls.writer().write_all(&self.mid_out)?;
            self.mid_out.clear();
        }
        Ok(())
    }

    /// Bytes still to go to the socket (or that rustls wants to send).
    pub fn wants_write(&self) -> bool {
        self.raw_out_pos < self.raw_out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Takes `data` into the layers [`OUT_STEP`] bytes at a time and writes, until all of it
    /// is written or the socket would block (so that, as on the plain path, output left over
    /// means a writable edge will come); returns how many bytes of `data` were taken.
    ///
    /// # Errors
    /// The socket failed.
    pub fn send(&mut self, sock: &mut impl Write, data: &[u8]) -> io::Result<usize> {
        let mut taken = 0;
        loop {
            if self.raw_out.len() - self.raw_out_pos < OUT_STEP && taken < data.len() {
                let n = (data.len() - taken).min(OUT_STEP);
                self.encode(&data[taken..taken + n])?;
                taken += n;
            }
            if let Some(tls) = &mut self.tls {
                while tls.wants_write() {
                    tls.write_tls(&mut self.raw_out)?;
                }
            }
            let n = write_some(sock, &self.raw_out[self.raw_out_pos..])?;
            self.raw_out_pos += n;
            if self.raw_out_pos < self.raw_out.len() {
                return Ok(taken); // would block
            }
            self.raw_out.clear();
            self.raw_out_pos = 0;
            if taken == data.len() {
                return Ok(taken);
            }
        }
    }
}

/// Writes as much of `data` as the socket takes.
///
/// # Errors
/// The socket failed (not `WouldBlock`).
pub fn write_some(sock: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < data.len() {
        match sock.write(&data[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// With `--tls-required`, nsqd's refusal of any command but IDENTIFY on a connection without
/// TLS, once the command's line is complete: `E_INVALID cannot <CMD> in current state (TLS
/// required)`.
pub fn tls_required_error(buf: &[u8], max_line: usize) -> Option<crate::protocol::ProtoError> {
    let window = buf.get(..max_line).unwrap_or(buf);
    let nl = window.iter().position(|&b| b == b'\n')?;
    let line = &buf[..nl]; // cannot panic: nl indexes window, a prefix of buf
    let name = line.split(|&b| b == b' ').next().unwrap_or(line);
    let name = name.strip_suffix(b"\r").unwrap_or(name);
    if name == b"IDENTIFY" {
        return None;
    }
    let desc = format!(
        "cannot {} in current state (TLS required)",
        String::from_utf8_lossy(name)
    );
    Some(crate::protocol::ProtoError::fatal(
        crate::protocol::E_INVALID,
        desc,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `from` sends, taken into `to` and decoded (up to `limit` bytes).
    fn carry(from: &mut Layered, data: &[u8], to: &mut Layered, limit: usize) -> Vec<u8> {
        let mut wire = Vec::new();
        assert_eq!(from.send(&mut wire, data).unwrap(), data.len());
        to.ingest(&wire).unwrap();
        let mut out = Vec::new();
        to.pump(&mut out, limit).unwrap();
        out
    }

    #[test]
    fn a_client_stream_talks_to_a_server_stream_for_each_compression() {
        for (snappy, deflate) in [(true, false), (false, true)] {
            let up = Upgrade {
                tls: false,
                snappy,
                deflate,
                deflate_level: 3,
            };
            let mut server = Layered::new(&up, None, b"reply").unwrap();
            let mut client = Layered::client(None);
            // The prefix leaves in plain, then the compressed OK: the client reads the one
            // plain frame exactly, starts its decompressor, and reads the OK.
            let mut wire = Vec::new();
            server.send(&mut wire, &[]).unwrap();
            assert!(wire.starts_with(b"reply"), "{snappy} {deflate}");
            client.ingest(&wire[5..]).unwrap();
            client.start_compression(&up);
            let mut ok = Vec::new();
            client.pump(&mut ok, OK_FRAME.len()).unwrap();
            assert_eq!(ok, OK_FRAME, "{snappy} {deflate}");
            // Both directions, larger than one snappy chunk and one deflate step.
            let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            assert_eq!(carry(&mut client, &big, &mut server, usize::MAX), big);
            assert_eq!(carry(&mut server, &big, &mut client, usize::MAX), big);
        }
    }

    #[test]
    fn a_client_stream_without_layers_passes_bytes_through_and_stops_at_the_limit() {
        let mut client = Layered::client(None);
        client.ingest(b"0123456789abc").unwrap();
        let mut out = Vec::new();
        assert_eq!(client.pump(&mut out, 10).unwrap(), 10);
        assert_eq!(out, b"0123456789");
        assert_eq!(client.pump(&mut out, usize::MAX).unwrap(), 3);
        assert!(!client.wants_write() && !client.handshaking());
    }
}
