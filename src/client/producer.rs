//! [`Producer`]: publishing. Each publish waits for its `OK` (responses carry no correlation
//! id, so replies pair with commands by order); [`Producer::publish_pipelined`] keeps a window
//! of PUBs outstanding for throughput.

use super::conn::{unexpected, Conn};
use super::{ClientError, Frame};
use std::net::ToSocketAddrs;

/// A publishing connection (no IDENTIFY needed: nsqd's defaults apply).
#[derive(Debug)]
pub struct Producer {
    conn: Conn,
}

impl Producer {
    /// Connects and sends the magic.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Producer, ClientError> {
        Ok(Producer {
            conn: Conn::connect(addr)?,
        })
    }

    /// The raw connection, for timeouts and tests.
    pub fn conn(&mut self) -> &mut Conn {
        &mut self.conn
    }

    /// `PUB <topic>` and wait for `OK`.
    ///
    /// # Errors
    /// [`ClientError::Server`] with the error frame's text, or I/O / protocol errors.
    pub fn publish(&mut self, topic: &str, body: &[u8]) -> Result<(), ClientError> {
        self.conn
            .send_command(&format!("PUB {topic}"), Some(body))?;
        self.conn.flush()?;
        self.expect_ok()
    }

    /// `MPUB <topic>` with `[u32 count]([u32 len][bytes])*` and wait for `OK`.
    pub fn mpub(&mut self, topic: &str, bodies: &[&[u8]]) -> Result<(), ClientError> {
        let mut body = Vec::new();
        put_len(&mut body, bodies.len())?;
        for b in bodies {
            put_len(&mut body, b.len())?;
            body.extend_from_slice(b);
        }
        self.conn
            .send_command(&format!("MPUB {topic}"), Some(&body))?;
        self.conn.flush()?;
        self.expect_ok()
    }

    /// `DPUB <topic> <defer_ms>` and wait for `OK`.
    pub fn dpub(&mut self, topic: &str, defer_ms: u64, body: &[u8]) -> Result<(), ClientError> {
        self.conn
            .send_command(&format!("DPUB {topic} {defer_ms}"), Some(body))?;
        self.conn.flush()?;
        self.expect_ok()
    }

    /// Publishes every body with up to `window` PUBs awaiting their `OK` (0 counts as 1).
    /// Returns the number of `OK`s, which is all of them on success.
    ///
    /// # Errors
    /// The first error frame or I/O error; PUBs sent after it are unaccounted for.
    pub fn publish_pipelined<I, B>(
        &mut self,
        topic: &str,
        bodies: I,
        window: usize,
    ) -> Result<usize, ClientError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let window = window.max(1);
        let line = format!("PUB {topic}");
        let (mut outstanding, mut acked) = (0usize, 0usize);
        for body in bodies {
            if outstanding == window {
                self.conn.flush()?;
                self.expect_ok()?;
                outstanding -= 1;
                acked += 1;
            }
            self.conn.send_command(&line, Some(body.as_ref()))?;
            outstanding += 1;
        }
        self.conn.flush()?;
        for _ in 0..outstanding {
            self.expect_ok()?;
            acked += 1;
        }
        Ok(acked)
    }

    fn expect_ok(&mut self) -> Result<(), ClientError> {
        match self.conn.read_reply()? {
            Frame::Response(d) if d == b"OK" => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), ClientError> {
    let len = u32::try_from(len).map_err(|_| ClientError::Protocol("MPUB over 4 GiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}
