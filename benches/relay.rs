//! The floor: a relay that does the least any single-threaded NSQ server must do, so that
//! `corq bench` against it measures what this machine allows before corq does any work.
//!
//! One thread and one `mio` poll, like corqd's reactor: each turn reads every readable
//! connection (stopping at a short read), decodes with corq's own decoder, answers `PUB`/`MPUB`
//! with `OK` and appends the bodies to one in-memory log; then every channel (one per distinct
//! `SUB` channel name) hands the records past its cursor to its subscribers with room under
//! their RDY, round-robin, and each connection's output is written once. No disk, no CRC, no
//! timers, no in-flight map, no stats; a `FIN` only frees a slot, and message ids are log
//! offsets. What corqd's figures fall short of the relay's by is corq's own cost; what the relay
//! cannot reach is the machine's.
//!
//! Memory: chunks every channel has read past are reused. A pool is faulted in at start
//! (`--prefault-mib`, 256 by default: enough for an e2e run, whose channel keeps up); a
//! backlog beyond it (a fan-out whose consumers fall behind) faults in fresh pages as it grows,
//! as corqd's log does in the page cache. With `--fresh` nothing is reused: chunks every channel
//! passed are freed and every new chunk is new memory, which is what corqd's log costs (each
//! record goes into a page-cache page the kernel allocates for it, and a deleted segment's
//! pages are freed); with `--prefault-mib 0` too, the relay pays for memory exactly as corqd
//! does and only skips corqd's own work.
//!
//! ```text
//! cargo build --release --bench relay      # the binary: target/release/deps/relay-<hash>
//! taskset -c 0 target/release/deps/relay-<hash> 127.0.0.1:4150 [--prefault-mib 256] [--fresh] &
//! taskset -c 1 target/release/corq bench e2e --rate 50000 --connections 2 --consumers 4
//! ```
//!
//! It speaks the subset `corq bench` uses: the magic, IDENTIFY, SUB, RDY, PUB, MPUB, FIN, NOP,
//! CLS. Anything else, or a decode error, closes the connection.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

use corq::protocol::{
    decode, encode_message, encode_response, message_id_from_offset, Command, ConnState, DecodeCtx,
    Limits, MAGIC_V2,
};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// Read chunk per call; a connection's unparsed input may grow to hold one whole command.
const READ_CHUNK: usize = 64 * 1024;
/// The in-memory log grows in chunks of this size, so appending never copies what is stored.
const LOG_CHUNK: usize = 64 << 20;

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    magic_seen: bool,
    ctx: DecodeCtx,
    /// The channel this connection subscribed to.
    channel: Option<usize>,
    rdy: u64,
    in_flight: u64,
    closed: bool,
    /// Already on the list of connections to write this turn.
    dirty: bool,
}

impl Conn {
    fn room(&self) -> bool {
        self.in_flight < self.rdy
    }
}

/// Every published body, in order, stored as `[len: u32 LE][body]` in chunks. Chunks every
/// channel has read past go to a spare pool and are reused, so appending does not fault in
/// fresh pages (zeroing them cost 70 % of a relay that kept growing), and the pool is faulted
/// in at start (`--prefault-mib`).
struct MemLog {
    chunks: VecDeque<Vec<u8>>,
    /// The id of `chunks[0]`; ids only grow.
    first_chunk: usize,
    spare: Vec<Vec<u8>>,
    /// Free passed chunks instead of keeping them for reuse (`--fresh`).
    fresh: bool,
    /// Records appended so far (the next message id).
    count: u64,
}

/// A channel's place in the [`MemLog`].
#[derive(Default)]
struct Cursor {
    chunk: usize,
    pos: usize,
    /// The id of the record at this place.
    offset: u64,
}

impl MemLog {
    fn new(prefault_bytes: usize, fresh: bool) -> MemLog {
        let spare = (0..prefault_bytes.div_ceil(LOG_CHUNK))
            .map(|_| {
                let mut chunk = vec![0u8; LOG_CHUNK];
                // `vec!` of zeros maps untouched pages; writing one byte a page faults them in.
                chunk.iter_mut().step_by(4096).for_each(|b| *b = 1);
                chunk.clear();
                chunk
            })
            .collect();
        MemLog {
            chunks: VecDeque::new(),
            first_chunk: 0,
            spare,
            fresh,
            count: 0,
        }
    }

    fn append(&mut self, body: &[u8]) {
        let need = 4 + body.len();
        if self
            .chunks
            .back()
            .is_none_or(|c| c.capacity() - c.len() < need)
        {
            let chunk = self
                .spare
                .pop()
                .filter(|c| c.capacity() >= need)
                .unwrap_or_else(|| Vec::with_capacity(LOG_CHUNK.max(need)));
            self.chunks.push_back(chunk);
        }
        if let Some(chunk) = self.chunks.back_mut() {
            let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
            chunk.extend_from_slice(&len.to_le_bytes());
            chunk.extend_from_slice(body);
            self.count += 1;
        }
    }

    /// A cursor at the log's current end.
    fn end(&self) -> Cursor {
        Cursor {
            chunk: self.first_chunk + self.chunks.len().saturating_sub(1),
            pos: self.chunks.back().map_or(0, Vec::len),
            offset: self.count,
        }
    }

    /// The record at `at`, moving `at` past it; `None` at the end.
    fn next(&self, at: &mut Cursor) -> Option<&[u8]> {
        loop {
            let chunk = self.chunks.get(at.chunk.checked_sub(self.first_chunk)?)?;
            if at.pos + 4 <= chunk.len() {
                let mut len = [0u8; 4];
                len.copy_from_slice(&chunk[at.pos..at.pos + 4]);
                let start = at.pos + 4;
                let end = start + u32::from_le_bytes(len) as usize;
                at.pos = end;
                at.offset += 1;
                return chunk.get(start..end);
            }
            if at.chunk + 1 >= self.first_chunk + self.chunks.len() {
                return None;
            }
            at.chunk += 1;
            at.pos = 0;
        }
    }

    /// Moves the chunks before chunk id `keep_from` to the spare pool (frees them if `fresh`).
    fn trim(&mut self, keep_from: usize) {
        while self.first_chunk < keep_from && self.chunks.len() > 1 {
            if let Some(mut chunk) = self.chunks.pop_front().filter(|_| !self.fresh) {
                chunk.clear();
                self.spare.push(chunk);
            }
            self.first_chunk += 1;
        }
    }
}

struct Channel {
    name: String,
    cursor: Cursor,
    subscribers: Vec<usize>,
    next_subscriber: usize,
}

struct Relay {
    conns: Slab<Conn>,
    log: MemLog,
    channels: Vec<Channel>,
    limits: Limits,
    dirty: Vec<usize>,
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidInput, what.to_owned());
    let addr: SocketAddr = args
        .iter()
        .find(|a| !a.starts_with("--") && a.contains(':'))
        .map_or("127.0.0.1:4150", String::as_str)
        .parse()
        .map_err(|e| invalid(&format!("address: {e}")))?;
    let prefault_bytes = match args.iter().position(|a| a == "--prefault-mib") {
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse::<usize>().ok())
            .and_then(|mib| mib.checked_mul(1 << 20))
            .ok_or_else(|| invalid("--prefault-mib needs a number of MiB"))?,
        None => 256 << 20,
    };
    let fresh = args.iter().any(|a| a == "--fresh");
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("relay listening on {}", listener.local_addr()?);
    let mut relay = Relay {
        conns: Slab::new(),
        log: MemLog::new(prefault_bytes, fresh),
        channels: Vec::new(),
        limits: Limits::default(),
        dirty: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut scratch = vec![0u8; READ_CHUNK];
    loop {
        poll.poll(&mut events, None)?;
        for ev in &events {
            if ev.token() == LISTENER {
                relay.accept(&listener, &poll)?;
                continue;
            }
            let key = ev.token().0;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                relay.read(key, &mut scratch);
            }
            if let Some(conn) = relay.conns.get_mut(key).filter(|_| ev.is_writable()) {
                mark_dirty(&mut relay.dirty, key, conn);
            }
        }
        relay.pump();
        relay.flush(&poll);
    }
}

impl Relay {
    fn accept(&mut self, listener: &TcpListener, poll: &Poll) -> io::Result<()> {
        loop {
            let (mut stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            stream.set_nodelay(true)?;
            let entry = self.conns.vacant_entry();
            poll.registry().register(
                &mut stream,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            entry.insert(Conn {
                stream,
                input: Vec::with_capacity(READ_CHUNK),
                output: Vec::with_capacity(READ_CHUNK),
                magic_seen: false,
                ctx: DecodeCtx {
                    state: ConnState::Init,
                    heartbeats_disabled: false,
                    mpub_auth: false,
                },
                channel: None,
                rdy: 0,
                in_flight: 0,
                closed: false,
                dirty: false,
            });
        }
    }

    /// Reads until the socket is empty (a short read says so), then applies what arrived.
    fn read(&mut self, key: usize, scratch: &mut [u8]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        loop {
            match conn.stream.read(scratch) {
                Ok(0) => {
                    conn.closed = true;
                    break;
                }
                Ok(n) => {
                    conn.input.extend_from_slice(&scratch[..n]);
                    if n < scratch.len() {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    conn.closed = true;
                    break;
                }
            }
        }
        let input = std::mem::take(&mut conn.input);
        let used = self.apply(key, &input);
        let conn = &mut self.conns[key];
        conn.input = input;
        conn.input.drain(..used);
        mark_dirty(&mut self.dirty, key, conn);
    }

    /// Applies every whole command in `input`; returns the bytes used.
    fn apply(&mut self, key: usize, input: &[u8]) -> usize {
        let mut pos = 0;
        if !self.conns[key].magic_seen {
            if input.len() < MAGIC_V2.len() {
                return 0;
            }
            if &input[..MAGIC_V2.len()] != MAGIC_V2 {
                self.conns[key].closed = true;
                return input.len();
            }
            self.conns[key].magic_seen = true;
            pos = MAGIC_V2.len();
        }
        while pos < input.len() {
            let found = decode(&input[pos..], &self.conns[key].ctx, &self.limits);
            let (cmd, used) = match found {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(_) => {
                    self.conns[key].closed = true;
                    return input.len();
                }
            };
            pos += used;
            self.command(key, cmd);
        }
        pos
    }

    fn command(&mut self, key: usize, cmd: Command<'_>) {
        let conn = &mut self.conns[key];
        match cmd {
            Command::Identify { .. } => encode_response(&mut conn.output, b"OK"),
            Command::Pub { body, .. } => {
                self.log.append(body);
                encode_response(&mut conn.output, b"OK");
            }
            Command::Mpub { bodies, .. } => {
                bodies.for_each(|b| self.log.append(b));
                encode_response(&mut conn.output, b"OK");
            }
            Command::Sub { channel, .. } => {
                conn.ctx.state = ConnState::Subscribed;
                encode_response(&mut conn.output, b"OK");
                let ch = self.channel(channel);
                self.conns[key].channel = Some(ch);
                self.channels[ch].subscribers.push(key);
            }
            Command::Rdy { count } => conn.rdy = count,
            Command::Fin { .. } => conn.in_flight = conn.in_flight.saturating_sub(1),
            Command::Cls => encode_response(&mut conn.output, b"CLOSE_WAIT"),
            _ => {}
        }
    }

    /// The channel named `name`, made on first use at the log's start (as a bench topic's
    /// first channel sees every message), or at its end once the log was trimmed.
    fn channel(&mut self, name: &str) -> usize {
        if let Some(i) = self.channels.iter().position(|c| c.name == name) {
            return i;
        }
        let cursor = if self.log.first_chunk == 0 {
            Cursor::default()
        } else {
            self.log.end()
        };
        self.channels.push(Channel {
            name: name.to_owned(),
            cursor,
            subscribers: Vec::new(),
            next_subscriber: 0,
        });
        self.channels.len() - 1
    }

    /// Each channel hands the records past its cursor to subscribers with room, round-robin;
    /// then chunks every channel has passed are recycled.
    fn pump(&mut self) {
        for ch in &mut self.channels {
            let mut idle = 0;
            while ch.cursor.offset < self.log.count && idle < ch.subscribers.len() {
                ch.next_subscriber = (ch.next_subscriber + 1) % ch.subscribers.len();
                let key = ch.subscribers[ch.next_subscriber];
                let Some(conn) = self.conns.get_mut(key).filter(|c| c.room()) else {
                    idle += 1;
                    continue;
                };
                idle = 0;
                let id = message_id_from_offset(ch.cursor.offset);
                let Some(body) = self.log.next(&mut ch.cursor) else {
                    break;
                };
                conn.in_flight += 1;
                encode_message(&mut conn.output, 0, 1, &id, body);
                mark_dirty(&mut self.dirty, key, conn);
            }
        }
        if let Some(slowest) = self.channels.iter().map(|c| c.cursor.chunk).min() {
            self.log.trim(slowest);
        }
    }

    /// Writes each touched connection's output once; drops the closed ones.
    fn flush(&mut self, poll: &Poll) {
        let mut dirty = std::mem::take(&mut self.dirty);
        for &key in &dirty {
            let Some(conn) = self.conns.get_mut(key) else {
                continue;
            };
            conn.dirty = false;
            let mut written = 0;
            while written < conn.output.len() {
                match conn.stream.write(&conn.output[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        conn.closed = true;
                        break;
                    }
                }
            }
            conn.output.drain(..written);
            if conn.closed {
                let mut conn = self.conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
                if let Some(ch) = conn.channel {
                    self.channels[ch].subscribers.retain(|&k| k != key);
                }
            }
        }
        dirty.clear();
        self.dirty = dirty;
    }
}

fn mark_dirty(dirty: &mut Vec<usize>, key: usize, conn: &mut Conn) {
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(key);
    }
}
