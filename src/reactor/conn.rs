//! One TCP connection: its socket, its read buffer, and the byte-moving around them.
//!
//! A `Conn` knows nothing of NSQ commands: it reads until `WouldBlock` into a buffer with a hard
//! cap, and writes a byte slice until `WouldBlock`. The reactor decodes what it read and hands
//! the commands to the broker, which is linked to this conn by its client key only.

use std::io::{self, Read};
use std::net::SocketAddr;

use mio::net::TcpStream;

use crate::http::RequestReader;
use crate::timer::TimerId;

use super::transport::{self, Transport};

/// A drained read buffer keeps at most this much capacity: enough for the next burst of
/// commands, small enough that idle connections cost almost nothing.
const KEEP_CAPACITY: usize = 64 * 1024;

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
    /// Speaking HTTP/1.x as the broker's client `key`.
    Http {
        /// The broker's key for this session.
        client: usize,
    },
    /// An HTTP conn whose last reply is out: our side is shut for writing, the broker session
    /// is gone, and what the peer still sends is read and discarded until its EOF, a cap or a
    /// deadline (see `Reactor::start_linger`).
    Lingering {
        /// Bytes discarded so far.
        discarded: usize,
    },
}

/// What one read call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were appended to the read buffer.
    Data(usize),
    /// This many bytes were appended, and the socket has no more for now (a short read).
    Last(usize),
    /// The socket has no more bytes for now.
    Drained,
    /// The peer closed its side (or the socket failed).
    Closed,
    /// The transport layers failed (TLS error, corrupt compressed stream): close after one
    /// last write (a TLS alert).
    Failed,
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
    /// Bytes read and not yet decoded (a partial command, or commands waiting while the
    /// client is throttled).
    pub rbuf: Vec<u8>,
    /// Whether WRITABLE interest is registered (only while output is left over).
    pub writable_registered: bool,
    /// Set once the conn must be reaped at the end of the turn.
    pub closing: bool,
    /// Reading paused (output backlog, or a durable ack pending); resumed when that clears.
    pub throttled: bool,
    /// Poll reported the peer's end closed (or an error): this conn is read until a read says
    /// so, never stopped at a short read (see [`Conn::read_once`]).
    pub peer_closed: bool,
    /// The handshake deadline timer, until the magic arrives.
    pub handshake_timer: Option<crate::timer::TimerId>,
    /// Close once the pending output is written (a fatal error or `Connection: close`).
    pub close_when_drained: bool,
    /// The request being received and the deadlines (HTTP conns only).
    pub http: HttpState,
    /// Plain, or TLS and/or compression layers under `rbuf` and the output.
    pub transport: Transport,
}

/// An HTTP connection's request progress and deadlines (`--http-header-timeout`,
/// `--http-idle-timeout`). Both are checked lazily: one wheel timer per conn, set for the
/// earlier deadline; when it fires the deadlines are recomputed from these fields, so a read
/// only stores a time and never touches the wheel.
#[derive(Debug, Default)]
pub struct HttpState {
    /// Where the current request's parse got to, so a read costs only its new bytes.
    pub reader: RequestReader,
    /// The wheel timer armed for this conn, and the ms it is due at.
    pub timer: Option<(TimerId, u64)>,
    /// When bytes last arrived (wheel ms): the idle deadline counts from here.
    pub last_read_ms: u64,
    /// When the current request's first byte was seen, while its head is incomplete: the
    /// header deadline counts from here.
    pub head_since_ms: Option<u64>,
}

impl HttpState {
    /// The earlier of the header and idle deadlines (wheel ms); a timeout of 0 is off.
    pub fn due(&self, header_ms: u64, idle_ms: u64) -> Option<u64> {
        let idle = (idle_ms > 0).then(|| self.last_read_ms.saturating_add(idle_ms));
        let header = self
            .head_since_ms
            .filter(|_| header_ms > 0)
            .map(|t| t.saturating_add(header_ms));
        match (idle, header) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Phase {
    /// The broker session of a conn past the handshake.
    pub fn client(self) -> Option<usize> {
        match self {
            Phase::Magic | Phase::Lingering { .. } => None,
            Phase::V2 { client } | Phase::Http { client } => Some(client),
        }
    }
}

impl Conn {
    /// Wraps an accepted socket in the given phase.
    pub fn new(stream: TcpStream, remote: SocketAddr, phase: Phase) -> Self {
        Conn {
            stream,
            remote,
            phase,
            rbuf: Vec::new(),
            writable_registered: false,
            closing: false,
            throttled: false,
            peer_closed: false,
            handshake_timer: None,
            close_when_drained: false,
            http: HttpState::default(),
            transport: Transport::Plain,
        }
    }

    /// One read into `scratch` (shared by every connection, so an idle connection holds no
    /// read buffer); what arrives is appended to this connection's buffer, through the
    /// transport layers if any (which stop adding once the buffer holds `limit` bytes).
    ///
    /// A plain read that filled less than `scratch` emptied the socket's receive queue, so it
    /// is [`ReadOutcome::Last`]: the reactor does not read again until poll reports new
    /// input (epoll(7): for a stream socket a short read means the data is exhausted, and
    /// what arrives later raises a new edge). That saves the read that would only have said
    /// `EWOULDBLOCK`, one per readable connection per turn: at 50 k msg/s e2e, about two of
    /// the eight system calls per message. Not once the peer closed: its end-of-file raised
    /// no edge of its own, so such a conn is read until a read reports it.
    pub fn read_once(&mut self, scratch: &mut [u8], limit: usize) -> ReadOutcome {
        if let Transport::Layered(l) = &mut self.transport {
            return read_layered(l, &mut self.stream, &mut self.rbuf, scratch, limit);
        }
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => {
                    self.rbuf.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() && !self.peer_closed {
                        return ReadOutcome::Last(n);
                    }
                    return ReadOutcome::Data(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Reads and discards what the peer sends (a lingering conn); `Data(n)` per read, like
    /// [`Conn::read_once`], without keeping the bytes.
    pub fn discard_once(&mut self, scratch: &mut [u8]) -> ReadOutcome {
        loop {
            match self.stream.read(scratch) {
                Ok(0) => return ReadOutcome::Closed,
                Ok(n) => return ReadOutcome::Data(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return ReadOutcome::Closed,
            }
        }
    }

    /// Whether the transport layers have bytes for the socket beyond the broker's output.
    pub fn transport_wants_write(&self) -> bool {
        match &self.transport {
            Transport::Plain => false,
            Transport::Layered(l) => l.wants_write(),
        }
    }

    /// Drops the first `n` decoded bytes of the read buffer.
    pub fn consume(&mut self, n: usize) {
        self.rbuf.drain(..n.min(self.rbuf.len()));
        if self.rbuf.is_empty() && self.rbuf.capacity() > KEEP_CAPACITY {
            // A big MPUB grew the buffer; don't keep megabytes per connection.
            self.rbuf = Vec::new();
        }
    }

    /// Writes as much of `data` as the socket takes (through the layers, if any); returns
    /// how much of `data` was taken, or an error that ends the connection.
    pub fn write_some(&mut self, data: &[u8]) -> io::Result<usize> {
        match &mut self.transport {
            Transport::Plain => transport::write_some(&mut self.stream, data),
            Transport::Layered(l) => l.send(&mut self.stream, data),
        }
    }
}

/// A layered read: first what the layers already hold, then one socket read.
fn read_layered(
    l: &mut transport::Layered,
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    scratch: &mut [u8],
    limit: usize,
) -> ReadOutcome {
    let failed = |e: io::Error| {
        log::error!("transport: {e}");
        ReadOutcome::Failed
    };
    match l.pump(rbuf, limit) {
        Ok(0) => {}
        Ok(n) => return ReadOutcome::Data(n),
        Err(e) => return failed(e),
    }
    loop {
        match stream.read(scratch) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => {
                if let Err(e) = l.ingest(&scratch[..n]).and_then(|()| l.pump(rbuf, limit)) {
                    return failed(e);
                }
                return ReadOutcome::Data(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::HttpState;

    #[test]
    fn http_deadline_is_the_earlier_of_header_and_idle_and_zero_is_off() {
        let mut st = HttpState {
            last_read_ms: 1000,
            ..HttpState::default()
        };
        assert_eq!(
            st.due(300, 5000),
            Some(6000),
            "no request started: idle only"
        );
        st.head_since_ms = Some(900);
        assert_eq!(st.due(300, 5000), Some(1200), "header deadline first");
        assert_eq!(st.due(300, 100), Some(1100), "idle first");
        assert_eq!(st.due(0, 5000), Some(6000), "header off");
        assert_eq!(st.due(300, 0), Some(1200), "idle off");
        assert_eq!(st.due(0, 0), None);
        // A read moves the idle deadline; the header deadline stays with the request.
        st.last_read_ms = 2000;
        assert_eq!(st.due(300, 5000), Some(1200));
        st.head_since_ms = None;
        assert_eq!(st.due(300, 5000), Some(7000));
    }
}
