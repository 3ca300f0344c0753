//! One lookupd connection: its socket, its bounded input and output buffers, and the protocol
//! state (magic, V1 session, or HTTP). [`Conn::service`] does one readiness pass.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use log::debug;
use mio::net::TcpStream;

use super::http::{self as api, Filters};
use super::registry::Registry;
use super::tcp::{self, SelfInfo};
use crate::http::parse::{parse_request, HttpLimits, DEFAULT_MAX_HEAD_BYTES, MAX_HEADERS};
use crate::http::response::{self, ReplyCtx};

/// The most a connection may buffer unhandled: the longest V1 command (a line plus an IDENTIFY
/// body), or an HTTP head plus the largest body accepted.
const MAX_INPUT: usize = tcp::MAX_LINE + 4 + tcp::MAX_IDENTIFY_BODY + HTTP_MAX_BODY;
/// The largest HTTP request body (nsqlookupd reads and ignores bodies; corq refuses big ones
/// with 413 `BODY_TOO_BIG`).
const HTTP_MAX_BODY: usize = 64 * 1024;
/// Output above this stops the handling of more input until the peer reads (a client that
/// pipelines `/debug` requests without reading cannot grow our memory without bound).
const OUTPUT_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Bytes read per `read` call.
const READ_CHUNK: usize = 16 * 1024;
/// The most a closing connection reads and discards after its last reply (see
/// [`Conn::linger`]); a peer that sends more than this is cut off with whatever it gets.
const LINGER_MAX: usize = 256 * 1024;

/// Which protocol the connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// TCP, before the 4-byte magic.
    Magic,
    /// TCP, after `"  V1"`.
    V1,
    /// The HTTP API.
    Http,
}

/// A connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The peer's address (its registry id once identified).
    pub remote: SocketAddr,
    /// Protocol state.
    kind: Kind,
    /// Set by IDENTIFY: the id the registry knows this peer by.
    pub peer_id: Option<String>,
    /// Bytes read, not yet handled.
    input: Vec<u8>,
    /// Bytes to write.
    output: Vec<u8>,
    /// Close once `output` is written (a fatal error, `Connection: close`).
    close_after_write: bool,
    /// The peer closed its side.
    eof: bool,
    /// Our side is shut for writing and the peer's remaining bytes are being discarded; the
    /// count discarded so far.
    lingering: Option<usize>,
}

impl Conn {
    /// A fresh connection.
    pub fn new(stream: TcpStream, remote: SocketAddr, kind: Kind) -> Self {
        Conn {
            stream,
            remote,
            kind,
            peer_id: None,
            input: Vec::new(),
            output: Vec::new(),
            close_after_write: false,
            eof: false,
            lingering: None,
        }
    }

    /// One pass: read what is there, handle it, write. Returns true when the connection is
    /// finished and must be closed.
    pub fn service(&mut self, reg: &mut Registry, me: &SelfInfo, f: Filters, now: i64) -> bool {
        if self.lingering.is_some() {
            return self.linger();
        }
        loop {
            let read = self.read_some();
            let handled = self.handle(reg, me, f, now);
            if self.write_some().is_err() {
                return true;
            }
            if self.close_after_write {
                if self.eof {
                    return true;
                }
                if !self.output.is_empty() {
                    return false;
                }
                return self.start_linger();
            }
            match read {
                // Nothing new to read: go round again only if handling made room or progress
                // (output below the high-water mark may let buffered requests run).
                Ok(0) if handled == 0 => return self.eof,
                Ok(_) => continue,
                Err(()) => return true,
            }
        }
    }

    /// Reads until `WouldBlock`, EOF or the input cap; the count read, `Err` on a socket error.
    fn read_some(&mut self) -> Result<usize, ()> {
        let mut total = 0;
        let mut chunk = [0u8; READ_CHUNK];
        while !self.eof && self.input.len() < MAX_INPUT && self.output.len() < OUTPUT_HIGH_WATER {
            let room = (MAX_INPUT - self.input.len()).min(READ_CHUNK);
            match self.stream.read(&mut chunk[..room]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.input.extend_from_slice(&chunk[..n]);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("{}: read: {e}", self.remote);
                    return Err(());
                }
            }
        }
        Ok(total)
    }

    /// The last reply is out: shut our side for writing and start discarding what the peer still
    /// sends. Closing a socket with unread input makes the kernel send a reset, and a reset can
    /// destroy the reply in the peer's receive buffer before it reads it (a client that wrote a
    /// refused 100 KiB body then saw `ECONNRESET` instead of its 413). Go's HTTP server lingers
    /// the same way. Returns true when the connection can be closed at once.
    fn start_linger(&mut self) -> bool {
        self.input = Vec::new();
        if self.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return true;
        }
        self.lingering = Some(0);
        self.linger()
    }

    /// Reads and discards until the peer's EOF (then true: close), `WouldBlock` (false: wait for
    /// the next readable event), an error, or [`LINGER_MAX`] bytes.
    fn linger(&mut self) -> bool {
        let mut chunk = [0u8; READ_CHUNK];
        let mut discarded = self.lingering.unwrap_or(0);
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(n) => {
                    discarded = discarded.saturating_add(n);
                    if discarded >= LINGER_MAX {
                        return true;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.lingering = Some(discarded);
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Writes until done or `WouldBlock`.
    fn write_some(&mut self) -> io::Result<()> {
        let mut written = 0;
        while written < self.output.len() {
            match self.stream.write(&self.output[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.output.drain(..written);
        Ok(())
    }

    /// Handles every complete command or request in the input; returns the bytes used.
    fn handle(&mut self, reg: &mut Registry, me: &SelfInfo, f: Filters, now: i64) -> usize {
        let mut used = 0;
        // Taken out so the handlers may borrow `self` mutably; put back below.
        let input = std::mem::take(&mut self.input);
        while !self.close_after_write && self.output.len() < OUTPUT_HIGH_WATER {
            let buf = input.get(used..).unwrap_or_default();
            let step = match self.kind {
                Kind::Magic => self.magic(buf),
                Kind::V1 => self.v1(buf, reg, me, now),
                Kind::Http => self.http(buf, reg, f, now),
            };
            match step {
                Some(n) => used += n,
                None => break,
            }
        }
        self.input = input;
        self.input.drain(..used);
        used
    }

    fn magic(&mut self, buf: &[u8]) -> Option<usize> {
        match tcp::check_magic(buf) {
            Ok(false) => None,
            Ok(true) => {
                self.kind = Kind::V1;
                Some(4)
            }
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }

    fn v1(&mut self, buf: &[u8], reg: &mut Registry, me: &SelfInfo, now: i64) -> Option<usize> {
        match tcp::decode(buf, self.peer_id.is_some()) {
            Ok(None) => None,
            Ok(Some((cmd, used))) => {
                let remote = self.remote.to_string();
                let reply = tcp::exec(reg, &mut self.peer_id, &remote, cmd, me, now);
                tcp::encode_reply(&mut self.output, &reply);
                Some(used)
            }
            Err(e) => {
                self.fail(&e);
                None
            }
        }
    }

    /// A fatal error: reply, then close.
    fn fail(&mut self, e: &tcp::LookupError) {
        debug!("{}: {}", self.remote, e.text());
        tcp::encode_reply(&mut self.output, e.text().as_bytes());
        self.close_after_write = true;
    }

    fn http(&mut self, buf: &[u8], reg: &mut Registry, f: Filters, now: i64) -> Option<usize> {
        let limits = HttpLimits {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: MAX_HEADERS,
            max_msg_size: HTTP_MAX_BODY as u64,
            max_body_size: HTTP_MAX_BODY as u64,
        };
        match parse_request(buf, &limits) {
            Ok(None) => None,
            Ok(Some((req, used))) => {
                let mut ctx = ReplyCtx::for_request(&req);
                ctx.date = Some(response::http_date(now / 1_000_000_000));
                api::handle(reg, &req, &ctx, f, now, &mut self.output);
                if !ctx.keep_alive {
                    self.close_after_write = true;
                }
                Some(used)
            }
            Err(e) => {
                let date = Some(response::http_date(now / 1_000_000_000));
                response::write_http_error(&mut self.output, &e, date);
                self.close_after_write = true;
                None
            }
        }
    }
}
