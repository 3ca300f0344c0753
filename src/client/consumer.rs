//! [`Consumer`]: IDENTIFY (with feature negotiation) + SUB, then RDY-driven delivery.
//! Remember nsqd's RDY is an in-flight cap, not a credit: `RDY 1` once and FIN every message
//! keeps messages flowing.

use super::conn::{unexpected, Conn};
use super::{ClientError, Frame, Message};
use std::collections::VecDeque;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

/// How long [`Consumer::connect`] waits for each handshake reply (IDENTIFY, SUB).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscribed connection.
#[derive(Debug)]
pub struct Consumer {
    conn: Conn,
    /// Messages that arrived while [`Consumer::cls`] waited for `CLOSE_WAIT`.
    pending: VecDeque<Message>,
}

impl Consumer {
    /// Connects, sends IDENTIFY (`feature_negotiation: true`), then `SUB topic channel`.
    /// The consumer starts at RDY 0: call [`Consumer::rdy`].
    pub fn connect(
        addr: impl ToSocketAddrs,
        topic: &str,
        channel: &str,
    ) -> Result<Consumer, ClientError> {
        let identify = serde_json::json!({
            "feature_negotiation": true,
            "user_agent": format!("corq-client/{}", crate::VERSION),
        });
        Consumer::connect_with(addr, topic, channel, &identify)
    }

    /// As [`Consumer::connect`] with a caller-chosen IDENTIFY body.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        topic: &str,
        channel: &str,
        identify: &serde_json::Value,
    ) -> Result<Consumer, ClientError> {
        let mut conn = Conn::connect(addr)?;
        // A server that never answers must not hang the caller forever.
        conn.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        match conn.identify(identify)? {
            // JSON with feature_negotiation, `OK` without.
            Frame::Response(_) => {}
            other => return Err(unexpected(other)),
        }
        conn.send_command(&format!("SUB {topic} {channel}"), None)?;
        conn.flush()?;
        conn.expect_response(b"OK")?;
        conn.set_read_timeout(None)?;
        Ok(Consumer {
            conn,
            pending: VecDeque::new(),
        })
    }

    /// The raw connection, for timeouts and tests.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// `RDY n`: allow up to `n` messages in flight.
    pub fn rdy(&mut self, n: u64) -> Result<(), ClientError> {
        self.command(&format!("RDY {n}"))
    }

    /// `FIN id`. A failure arrives later as [`ClientError::NonFatal`] from `next_message`.
    pub fn fin(&mut self, id: &[u8; 16]) -> Result<(), ClientError> {
        self.command(&format!("FIN {}", String::from_utf8_lossy(id)))
    }

    /// `REQ id delay_ms`: requeue, redelivered after the delay.
    pub fn req(&mut self, id: &[u8; 16], delay_ms: u64) -> Result<(), ClientError> {
        self.command(&format!("REQ {} {delay_ms}", String::from_utf8_lossy(id)))
    }

    /// `TOUCH id`: reset the message's timeout.
    pub fn touch(&mut self, id: &[u8; 16]) -> Result<(), ClientError> {
        self.command(&format!("TOUCH {}", String::from_utf8_lossy(id)))
    }

    /// `CLS` and wait for `CLOSE_WAIT`. Messages received meanwhile are kept for
    /// [`Consumer::next_message`]; FIN/REQ/TOUCH still work afterwards.
    pub fn cls(&mut self) -> Result<(), ClientError> {
        self.command("CLS")?;
        loop {
            match self.conn.read_reply()? {
                Frame::Response(d) if d == b"CLOSE_WAIT" => return Ok(()),
                Frame::Message(m) => self.pending.push_back(m),
                other => return Err(unexpected(other)),
            }
        }
    }

    /// The next message, waiting at most `timeout`; `Ok(None)` if none came in time.
    /// Heartbeats are answered with `NOP`.
    ///
    /// # Errors
    /// [`ClientError::NonFatal`] for `E_FIN_FAILED`/`E_REQ_FAILED`/`E_TOUCH_FAILED` (keep
    /// going), [`ClientError::Server`] for a fatal error frame, I/O and protocol errors.
    pub fn next_message(&mut self, timeout: Duration) -> Result<Option<Message>, ClientError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(Some(m));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.conn.set_read_timeout(Some(left))?;
            match self.conn.read_frame() {
                Ok(f) if f.is_heartbeat() => self.command("NOP")?,
                Ok(Frame::Message(m)) => return Ok(Some(m)),
                Ok(other) => return Err(unexpected(other)),
                Err(e) if e.is_timeout() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn command(&mut self, line: &str) -> Result<(), ClientError> {
        self.conn.send_command(line, None)?;
        self.conn.flush()?;
        Ok(())
    }
}
