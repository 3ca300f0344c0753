//! [`Conn`]: one V2 connection. Writes are buffered until [`Conn::flush`]; reads go through
//! an internal buffer parsed with [`parse_frame`], so a read that times out mid-frame loses
//! nothing and the next call resumes.

use super::{parse_frame, ClientError, Frame};
use crate::protocol::MAGIC_V2;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// A raw protocol V2 connection (magic already sent).
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    /// Received bytes not yet returned as frames; `rpos` is where the unparsed part starts
    /// (compacted lazily so pipelined small frames are not copied one by one).
    rbuf: Vec<u8>,
    rpos: usize,
    /// Commands queued by `send_*`, written by `flush`.
    wbuf: Vec<u8>,
}

impl Conn {
    /// Connects and sends the `"  V2"` magic.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<Conn> {
        Conn::from_stream(TcpStream::connect(addr)?)
    }

    /// Wraps an already connected stream and sends the magic.
    pub fn from_stream(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            wbuf: Vec::new(),
        };
        conn.send_raw(MAGIC_V2);
        conn.flush()?;
        Ok(conn)
    }

    /// Sets the socket read timeout (`None`: block forever).
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(timeout)
    }

    /// The underlying stream, e.g. for `shutdown` or a write timeout in tests.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Queues `line + "\n"` and, if given, `[u32 BE len][body]`. Call [`Conn::flush`] to send.
    pub fn send_command(&mut self, line: &str, body: Option<&[u8]>) -> io::Result<()> {
        self.wbuf.extend_from_slice(line.as_bytes());
        self.wbuf.push(b'\n');
        if let Some(body) = body {
            let len = u32::try_from(body.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "body over 4 GiB"))?;
            self.wbuf.extend_from_slice(&len.to_be_bytes());
            self.wbuf.extend_from_slice(body);
        }
        Ok(())
    }

    /// Queues arbitrary bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Writes everything queued.
    pub fn flush(&mut self) -> io::Result<()> {
        self.stream.write_all(&self.wbuf)?;
        self.wbuf.clear();
        Ok(())
    }

    /// Reads the next frame, heartbeats included, blocking up to the read timeout.
    ///
    /// # Errors
    /// [`ClientError::Io`] on a socket error, timeout (see [`ClientError::is_timeout`]) or EOF;
    /// [`ClientError::Protocol`] for a malformed frame.
    pub fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some((frame, used)) = parse_frame(&self.rbuf[self.rpos..])? {
                self.consume(used);
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    /// Reads the next frame that is not a heartbeat, answering heartbeats with `NOP`.
    pub fn read_reply(&mut self) -> Result<Frame, ClientError> {
        loop {
            let frame = self.read_frame()?;
            if !frame.is_heartbeat() {
                return Ok(frame);
            }
            self.send_command("NOP", None)?;
            self.flush()?;
        }
    }

    /// Sends IDENTIFY with `data` as its JSON body and returns the reply frame (JSON or `OK`
    /// as a response, or an error frame).
    pub fn identify(&mut self, data: &serde_json::Value) -> Result<Frame, ClientError> {
        let body = serde_json::to_vec(data)
            .map_err(|e| ClientError::Protocol(format!("IDENTIFY body: {e}")))?;
        self.send_command("IDENTIFY", Some(&body))?;
        self.flush()?;
        self.read_reply()
    }

    /// Reads a reply and requires the response `want` (e.g. `OK`, `CLOSE_WAIT`).
    pub fn expect_response(&mut self, want: &[u8]) -> Result<(), ClientError> {
        match self.read_reply()? {
            Frame::Response(d) if d == want => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    fn consume(&mut self, used: usize) {
        self.rpos += used;
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        }
    }

    /// One socket read appended to `rbuf`; the buffer grows only by bytes actually received.
    fn fill(&mut self) -> Result<(), ClientError> {
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        let start = self.rbuf.len();
        self.rbuf.resize(start + READ_CHUNK, 0);
        let read = loop {
            match self.stream.read(&mut self.rbuf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                self.rbuf.truncate(start);
                return Err(e.into());
            }
        };
        self.rbuf.truncate(start + n);
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed").into());
        }
        Ok(())
    }
}

/// The error for a frame that is not the reply expected: a server error frame becomes
/// [`ClientError::Server`]/[`ClientError::NonFatal`], anything else a protocol error.
pub(crate) fn unexpected(frame: Frame) -> ClientError {
    match frame {
        Frame::Error(d) => ClientError::from_error_frame(&d),
        Frame::Response(d) => ClientError::Protocol(format!(
            "unexpected response {:?}",
            String::from_utf8_lossy(&d)
        )),
        Frame::Message(m) => ClientError::Protocol(format!("unexpected message {}", m.id_str())),
    }
}
