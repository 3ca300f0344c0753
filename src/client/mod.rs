//! A small blocking NSQ client over `std::net::TcpStream`, used by the `corq` tools, the
//! integration tests and the benches. It also documents the protocol from the client's side.
//!
//! | file | owns |
//! |------|------|
//! | `mod.rs`      | [`ClientError`], [`Frame`], [`Message`] and the pure frame parser [`parse_frame`] |
//! | `conn.rs`     | [`Conn`]: magic, buffered command writes, resumable frame reads |
//! | `producer.rs` | [`Producer`]: PUB, MPUB, DPUB, pipelined PUB |
//! | `consumer.rs` | [`Consumer`]: IDENTIFY + SUB, RDY, FIN/REQ/TOUCH, CLS |
//!
//! It depends on nothing server-side: frames are parsed here, and only the pure constants of
//! [`crate::protocol`] are shared. Heartbeats (`_heartbeat_`) are answered with `NOP`
//! transparently by [`Producer`] and [`Consumer`]; [`Conn`] shows them raw.

mod conn;
mod consumer;
mod producer;

pub use conn::Conn;
pub use consumer::Consumer;
pub use producer::Producer;

use std::{fmt, io};

/// The largest frame the client accepts (size field). Anything bigger is a protocol error,
/// never an allocation: a TLS alert or garbage read as a length must not cost 4 GiB (KAFKA-4090).
pub const MAX_FRAME_SIZE: u32 = 64 * 1024 * 1024;

/// Frame type codes on the wire.
const FRAME_RESPONSE: u32 = 0;
const FRAME_ERROR: u32 = 1;
const FRAME_MESSAGE: u32 = 2;

/// Bytes of a message frame's data before the body: timestamp, attempts, id.
const MESSAGE_HEADER_LEN: usize = 26;

/// The error codes nsqd does not close the connection for.
pub const NON_FATAL_ERRORS: [&str; 3] = ["E_FIN_FAILED", "E_REQ_FAILED", "E_TOUCH_FAILED"];

/// Everything that can go wrong talking to a server.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed (includes read timeouts and EOF).
    Io(io::Error),
    /// The server sent a fatal error frame (it closes the connection); the frame's text.
    Server(String),
    /// The server sent a non-fatal error frame (`E_FIN_FAILED`, `E_REQ_FAILED`,
    /// `E_TOUCH_FAILED`); the connection is still usable.
    NonFatal(String),
    /// The server sent something the protocol does not allow here (bad size, unexpected frame).
    Protocol(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Io(e) => write!(f, "i/o error: {e}"),
            ClientError::Server(s) => write!(f, "server error: {s}"),
            ClientError::NonFatal(s) => write!(f, "non-fatal server error: {s}"),
            ClientError::Protocol(s) => write!(f, "protocol error: {s}"),
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ClientError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl ClientError {
    /// The error for an error frame's data: non-fatal for the three codes nsqd keeps the
    /// connection open for, fatal otherwise.
    pub fn from_error_frame(data: &[u8]) -> Self {
        let text = String::from_utf8_lossy(data).into_owned();
        let code = text.split(' ').next().unwrap_or("");
        if NON_FATAL_ERRORS.contains(&code) {
            ClientError::NonFatal(text)
        } else {
            ClientError::Server(text)
        }
    }

    /// True for a read that timed out (`WouldBlock` or `TimedOut`, depending on the OS).
    pub fn is_timeout(&self) -> bool {
        matches!(self, ClientError::Io(e)
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

/// A message delivered to a consumer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Delivery count, 1 on the first delivery.
    pub attempts: u16,
    /// The ID to FIN/REQ/TOUCH with (16 ASCII hex bytes).
    pub id: [u8; 16],
    /// The message body.
    pub body: Vec<u8>,
}

impl Message {
    /// The ID as a string (lossy for a non-ASCII ID, which a correct server never sends).
    pub fn id_str(&self) -> String {
        String::from_utf8_lossy(&self.id).into_owned()
    }
}

/// One server → client frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Type 0: `OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON.
    Response(Vec<u8>),
    /// Type 1: `"<CODE> <description>"`.
    Error(Vec<u8>),
    /// Type 2: a message.
    Message(Message),
}

impl Frame {
    /// True for the heartbeat response frame.
    pub fn is_heartbeat(&self) -> bool {
        matches!(self, Frame::Response(d) if d == crate::protocol::HEARTBEAT)
    }
}

/// Parses one frame from the front of `buf`: `Ok(None)` until it is complete, else the frame
/// and the bytes it used. Sizes are checked before anything is copied.
///
/// # Errors
/// [`ClientError::Protocol`] for a size below 4 or above [`MAX_FRAME_SIZE`], an unknown frame
/// type, or a message frame too short for its header.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, ClientError> {
    let Some(size) = be_u32(buf, 0) else {
        return Ok(None);
    };
    if !(4..=MAX_FRAME_SIZE).contains(&size) {
        return Err(ClientError::Protocol(format!("bad frame size {size}")));
    }
    let total = 4 + size as usize;
    let Some(frame) = buf.get(4..total) else {
        return Ok(None);
    };
    let (ty, data) = frame.split_at(4);
    let frame = match be_u32(ty, 0) {
        Some(FRAME_RESPONSE) => Frame::Response(data.to_vec()),
        Some(FRAME_ERROR) => Frame::Error(data.to_vec()),
        Some(FRAME_MESSAGE) => Frame::Message(parse_message(data)?),
        other => {
            return Err(ClientError::Protocol(format!(
                "unknown frame type {other:?}"
            )))
        }
    };
    Ok(Some((frame, total)))
}

fn be_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(b.try_into().ok()?))
}

/// `[i64 BE ts][u16 BE attempts][16-byte id][body]`.
fn parse_message(data: &[u8]) -> Result<Message, ClientError> {
    if data.len() < MESSAGE_HEADER_LEN {
        return Err(ClientError::Protocol(format!(
            "message frame of {} bytes",
            data.len()
        )));
    }
    let (head, body) = data.split_at(MESSAGE_HEADER_LEN);
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&head[..8]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&head[10..]);
    Ok(Message {
        timestamp_ns: i64::from_be_bytes(ts),
        attempts: u16::from_be_bytes([head[8], head[9]]),
        id,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests;
