//! One lookupd connection's state machine (see the parent module for the sequence).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use log::{debug, info, warn};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token, Waker};

use super::helpers::{self, Report};
use super::wire::{self, Identity, LookupdInfo};
use super::{CONNECT_TIMEOUT_MS, PING_INTERVAL_MS, REPLY_TIMEOUT_MS};
use crate::broker::Broker;

/// The first reconnect delay; it doubles per failure up to [`MAX_BACKOFF_MS`].
const BASE_BACKOFF_MS: u64 = 200;
/// The longest reconnect delay (nsqd retries at its 15 s ping interval).
const MAX_BACKOFF_MS: u64 = 15_000;
/// How long a name may take to resolve before the attempt counts as failed.
const RESOLVE_TIMEOUT_MS: u64 = 10_000;
/// Output a lookupd may leave unread before it is dropped (and later re-registered in full).
const MAX_OUTPUT: usize = 16 * 1024 * 1024;
/// Bytes per read call.
const READ_CHUNK: usize = 16 * 1024;

/// Where a connection is.
#[derive(Debug)]
enum State {
    /// Not connected; the next attempt starts at `retry_at` (monotonic ms).
    Idle { retry_at: u64 },
    /// A helper thread is resolving the name for attempt `gen`, started at `since`.
    Resolving { gen: u64, since: u64 },
    /// A non-blocking connect is under way.
    Connecting { stream: TcpStream, deadline: u64 },
    /// Connected: hello and registrations sent (or queued).
    Open { stream: TcpStream },
}

/// The reply each command in flight expects, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// lookupd's JSON info.
    Identify,
    /// `OK`.
    Ok,
}

/// One lookupd.
#[derive(Debug)]
pub struct Peer {
    /// The configured `host:port`.
    pub addr: String,
    /// A readiness event arrived since the last drive.
    pub ready: bool,
    state: State,
    /// Bytes to send.
    out: Vec<u8>,
    /// Bytes received, not yet parsed.
    inb: Vec<u8>,
    /// Replies owed, oldest first.
    expect: VecDeque<Expect>,
    /// When the oldest owed reply must have come.
    reply_deadline: Option<u64>,
    /// When to send the next PING.
    next_ping: u64,
    /// Consecutive failed attempts (sets the backoff).
    failures: u32,
    /// The last write hit `WouldBlock`: wait for a writable event before trying again.
    write_blocked: bool,
    /// lookupd's HTTP address from its IDENTIFY reply.
    info: Option<LookupdInfo>,
}

impl Peer {
    /// A lookupd to connect to at the first drive.
    pub fn new(addr: String) -> Self {
        Peer {
            addr,
            ready: false,
            state: State::Idle { retry_at: 0 },
            out: Vec::new(),
            inb: Vec::new(),
            expect: VecDeque::new(),
            reply_deadline: None,
            next_ping: 0,
            failures: 0,
            write_blocked: false,
            info: None,
        }
    }

    /// lookupd's `broadcast_address:http_port`, once it has identified.
    pub fn http_addr(&self) -> Option<String> {
        let i = self.info.as_ref()?;
        (!i.broadcast_address.is_empty() && i.http_port != 0)
            .then(|| format!("{}:{}", i.broadcast_address, i.http_port))
    }

    /// When this peer next needs a turn.
    pub fn next_deadline(&self) -> Option<u64> {
        match &self.state {
            State::Idle { retry_at } => Some(*retry_at),
            State::Resolving { since, .. } => Some(since + RESOLVE_TIMEOUT_MS),
            State::Connecting { deadline, .. } => Some(*deadline),
            State::Open { .. } => Some(
                self.reply_deadline
                    .map_or(self.next_ping, |d| d.min(self.next_ping)),
            ),
        }
    }

    /// Starts connection attempt `gen`: dial an IP literal at once, resolve a name on a
    /// helper thread.
    #[allow(clippy::too_many_arguments)]
    pub fn begin(
        &mut self,
        gen: u64,
        slot: usize,
        now: u64,
        token: Token,
        reg: &Registry,
        tx: &Sender<Report>,
        waker: &Arc<Waker>,
    ) {
        match self.addr.parse::<SocketAddr>() {
            Ok(a) => self.connect(a, now, token, reg),
            Err(_) => {
                self.state = State::Resolving { gen, since: now };
                helpers::resolve(self.addr.clone(), slot, gen, tx.clone(), waker.clone());
            }
        }
    }

    /// A resolver's answer.
    pub fn resolved(
        &mut self,
        gen: u64,
        result: Result<SocketAddr, String>,
        now: u64,
        token: Token,
        reg: &Registry,
    ) {
        if !matches!(self.state, State::Resolving { gen: g, .. } if g == gen) {
            return;
        }
        match result {
            Ok(a) => self.connect(a, now, token, reg),
            Err(e) => self.fail(&e, now, reg),
        }
    }

    fn connect(&mut self, addr: SocketAddr, now: u64, token: Token, reg: &Registry) {
        let mut stream = match TcpStream::connect(addr) {
            Ok(s) => s,
            Err(e) => return self.fail(&format!("connect {addr}: {e}"), now, reg),
        };
        if let Err(e) = reg.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            return self.fail(&format!("register: {e}"), now, reg);
        }
        debug!("lookupd {}: connecting to {addr}", self.addr);
        self.state = State::Connecting {
            stream,
            deadline: now + CONNECT_TIMEOUT_MS,
        };
    }

    /// One turn. Returns true when a new connection attempt should start now.
    pub fn drive(
        &mut self,
        now: u64,
        me: &Identity,
        broker: &Broker,
        reg: &Registry,
        max_body: usize,
    ) -> bool {
        let ready = std::mem::take(&mut self.ready);
        match &mut self.state {
            State::Idle { retry_at } => return now >= *retry_at,
            State::Resolving { since, .. } => {
                if now >= *since + RESOLVE_TIMEOUT_MS {
                    self.fail("resolve timed out", now, reg);
                }
                return false;
            }
            State::Connecting { stream, deadline } => {
                if !ready {
                    if now >= *deadline {
                        self.fail("connect timed out", now, reg);
                    }
                    return false;
                }
                match connected(stream) {
                    Ok(false) => return false,
                    Ok(true) => self.open(now, me, broker),
                    Err(e) => {
                        self.fail(&format!("connect: {e}"), now, reg);
                        return false;
                    }
                }
            }
            State::Open { .. } => {}
        }
        if let Err(e) = self.service(ready, now, max_body) {
            self.fail(&e, now, reg);
        }
        false
    }

    /// Connected: queue the hello and every registration, as nsqd does on each connect.
    fn open(&mut self, now: u64, me: &Identity, broker: &Broker) {
        let State::Connecting { stream, .. } =
            std::mem::replace(&mut self.state, State::Idle { retry_at: 0 })
        else {
            return;
        };
        self.state = State::Open { stream };
        self.out.clear();
        self.inb.clear();
        self.expect.clear();
        wire::encode_hello(&mut self.out, me);
        self.expect.push_back(Expect::Identify);
        for (topic, channel) in broker.registrations() {
            wire::encode_command(&mut self.out, "REGISTER", &topic, channel.as_deref());
            self.expect.push_back(Expect::Ok);
        }
        self.reply_deadline = Some(now + REPLY_TIMEOUT_MS);
        self.next_ping = now + PING_INTERVAL_MS;
        self.write_blocked = false;
    }

    /// Reads and checks replies, pings when due, enforces the reply deadline, writes.
    fn service(&mut self, ready: bool, now: u64, max_body: usize) -> Result<(), String> {
        if ready {
            self.write_blocked = false;
            self.read(max_body)?;
            self.parse_replies(now, max_body)?;
        }
        if now >= self.next_ping {
            self.push(b"PING\n", now);
            self.next_ping = now + PING_INTERVAL_MS;
        }
        if self.reply_deadline.is_some_and(|d| now >= d) {
            return Err("no reply in time".into());
        }
        if !self.write_blocked && !self.out.is_empty() {
            self.flush()?;
        }
        Ok(())
    }

    fn read(&mut self, max_body: usize) -> Result<(), String> {
        let State::Open { stream } = &mut self.state else {
            return Ok(());
        };
        let mut chunk = [0u8; READ_CHUNK];
        // Bounded: a full reply is at most 4 + max_body bytes and is parsed before more come.
        while self.inb.len() <= max_body.saturating_add(4) {
            match stream.read(&mut chunk) {
                Ok(0) => return Err("closed by lookupd".into()),
                Ok(n) => self.inb.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(())
    }

    fn parse_replies(&mut self, now: u64, max_body: usize) -> Result<(), String> {
        let mut used = 0;
        while let Some((data, n)) =
            wire::decode_reply(&self.inb[used..], max_body).map_err(|e| e.0)?
        {
            let want = self.expect.pop_front().ok_or("a reply nobody asked for")?;
            match want {
                Expect::Identify => {
                    let info = wire::parse_identify_reply(data).map_err(|e| e.0)?;
                    info!(
                        "lookupd {}: connected (lookupd {}:{}), registering",
                        self.addr, info.broadcast_address, info.http_port
                    );
                    self.info = Some(info);
                }
                Expect::Ok if data == b"OK" => {}
                Expect::Ok => {
                    let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
                    return Err(format!("answered {shown:?}"));
                }
            }
            used += n;
            self.reply_deadline = (!self.expect.is_empty()).then_some(now + REPLY_TIMEOUT_MS);
            if self.expect.is_empty() {
                // Every command so far was answered as it should be: the backoff starts over.
                // (Not on IDENTIFY alone, or a lookupd refusing every REGISTER would be
                // retried at the shortest delay forever.)
                self.failures = 0;
            }
        }
        self.inb.drain(..used);
        Ok(())
    }

    /// Queues a command expecting `OK`.
    fn push(&mut self, bytes: &[u8], now: u64) {
        self.out.extend_from_slice(bytes);
        if self.expect.is_empty() {
            self.reply_deadline = Some(now + REPLY_TIMEOUT_MS);
        }
        self.expect.push_back(Expect::Ok);
    }

    /// Queues `VERB topic [channel]` if connected (a connection being made registers the full
    /// state when it opens, so nothing is lost by skipping it here).
    pub fn command(&mut self, verb: &str, topic: &str, channel: Option<&str>, now: u64) {
        if !matches!(self.state, State::Open { .. }) {
            return;
        }
        let mut line = Vec::with_capacity(verb.len() + topic.len() + 70);
        wire::encode_command(&mut line, verb, topic, channel);
        if self.out.len() + line.len() > MAX_OUTPUT {
            // The lookupd is not reading: its reply deadline drops it, and the reconnect
            // registers everything again.
            debug!(
                "lookupd {}: output full, dropping {verb} {topic}",
                self.addr
            );
            return;
        }
        self.push(&line, now);
    }

    fn flush(&mut self) -> Result<(), String> {
        let State::Open { stream } = &mut self.state else {
            return Ok(());
        };
        let mut written = 0;
        while written < self.out.len() {
            match stream.write(&self.out[written..]) {
                Ok(0) => return Err("write returned 0".into()),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.write_blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("write: {e}")),
            }
        }
        self.out.drain(..written);
        Ok(())
    }

    /// One non-blocking write attempt (shutdown).
    pub fn flush_once(&mut self) {
        let _ = self.flush();
    }

    /// Closes the connection and schedules a retry with backoff.
    fn fail(&mut self, why: &str, now: u64, reg: &Registry) {
        self.failures = self.failures.saturating_add(1);
        let delay = backoff_ms(self.failures);
        warn!("lookupd {}: {why}; retrying in {delay} ms", self.addr);
        self.close(reg);
        self.state = State::Idle {
            retry_at: now + delay,
        };
    }

    /// Drops the connection (if any); the peer goes idle.
    pub fn close(&mut self, reg: &Registry) {
        let state = std::mem::replace(&mut self.state, State::Idle { retry_at: 0 });
        if let State::Connecting { mut stream, .. } | State::Open { mut stream } = state {
            let _ = reg.deregister(&mut stream);
        }
        self.out.clear();
        self.inb.clear();
        self.expect.clear();
        self.reply_deadline = None;
    }
}

/// The delay before the next attempt after `failures` consecutive failures (>= 1).
fn backoff_ms(failures: u32) -> u64 {
    let shift = failures.saturating_sub(1).min(16);
    (BASE_BACKOFF_MS << shift).min(MAX_BACKOFF_MS)
}

/// Whether a non-blocking connect has finished (mio's recipe: check `take_error`, then
/// `peer_addr`).
fn connected(stream: &TcpStream) -> io::Result<bool> {
    if let Some(e) = stream.take_error()? {
        return Err(e);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let got: Vec<u64> = (1..=9).map(backoff_ms).collect();
        assert_eq!(got, [200, 400, 800, 1600, 3200, 6400, 12800, 15000, 15000]);
        assert_eq!(backoff_ms(u32::MAX), MAX_BACKOFF_MS);
    }
}
