//! One TCP connection: its socket, its read buffer, and the byte-moving around them.
//!
//! A `Conn` knows nothing of NSQ commands: it reads until `WouldBlock` into a buffer with a hard
//! cap, and writes a byte slice until `WouldBlock`. The reactor decodes what it read and hands
//! the commands to the broker, which is linked to this conn by its client key only.

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::TcpStream;

/// How much a single read asks for.
const READ_CHUNK: usize = 64 * 1024;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the 4-byte `"  V2"` magic.
    Magic,
    /// Speaking protocol V2 as the broker's client `key`.
    V2 {
        /// The broker's key for this session.
        client: usize,
    },
}

/// What a read pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// The socket has no more bytes for now.
    Drained,
    /// The per-turn budget ran out before `WouldBlock`: read again next turn (edge-triggered
    /// readiness will not say so again).
    Budget,
    /// The peer closed its side (or the socket failed).
    Closed,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Magic or V2.
    pub phase: Phase,
    /// Bytes read and not yet decoded, from `rpos` on.
    pub rbuf: Vec<u8>,
    /// How much of `rbuf` has been decoded.
    pub rpos: usize,
    /// Whether WRITABLE interest is registered (only while output is left over).
    pub writable_registered: bool,
    /// Set once the conn must be reaped at the end of the turn.
    pub closing: bool,
    /// Reading paused by backpressure; resumed when the output drains.
    pub throttled: bool,
}

impl Conn {
    /// Wraps an accepted socket.
    pub fn new(stream: TcpStream, remote: SocketAddr) -> Self {
        Conn {
            stream,
            remote,
            phase: Phase::Magic,
            rbuf: Vec::new(),
            rpos: 0,
            writable_registered: false,
            closing: false,
            throttled: false,
        }
    }

    /// Reads until `WouldBlock`, the budget, or the buffer cap (`max_buffered` undecoded bytes:
    /// the decoder has already checked that a command that large is allowed).
    pub fn read_some(&mut self, budget: usize, max_buffered: usize) -> ReadOutcome {
        self.compact();
        let mut total = 0;
        loop {
            if total >= budget || self.rbuf.len() >= max_buffered {
                return ReadOutcome::Budget;
            }
            let start = self.rbuf.len();
            let want = READ_CHUNK.min(max_buffered - start).max(1);
            self.rbuf.resize(start + want, 0);
            let result = self.stream.read(&mut self.rbuf[start..]);
            let got = match result {
                Ok(n) => n,
                Err(e) => {
                    self.rbuf.truncate(start);
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                        io::ErrorKind::Interrupted => continue,
                        _ => return ReadOutcome::Closed,
                    }
                }
            };
            self.rbuf.truncate(start + got);
            if got == 0 {
                return ReadOutcome::Closed;
            }
            total += got;
        }
    }

    /// Drops the decoded prefix of the read buffer.
    fn compact(&mut self) {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // A big MPUB grew the buffer; don't keep megabytes per idle connection.
        if self.rbuf.is_empty() && self.rbuf.capacity() > 4 * READ_CHUNK {
            self.rbuf = Vec::new();
        }
    }

    /// The bytes read and not yet decoded.
    pub fn unread(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    /// Writes as much of `data` as the socket takes; returns how much, or an error that ends
    /// the connection.
    pub fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut written = 0;
        while written < data.len() {
            match self.stream.write(&data[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(written)
    }
}
