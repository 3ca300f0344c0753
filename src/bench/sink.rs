//! A fake NSQ server, for two jobs: measuring the generator's own ceiling (`corq bench sink`:
//! a server that does nothing but answer) and testing the generator against a server that
//! misbehaves on purpose (a one-time stall).
//!
//! It speaks just enough V2: the magic, IDENTIFY (answers `OK`), PUB/MPUB (answers `OK`), SUB,
//! RDY, FIN, NOP, CLS. Commands are decoded with the server's own [`crate::protocol::decode`].
//! One thread reads each connection and answers once per read pass. A subscribed connection
//! also gets a writer thread that owns every write to its socket, fed through a channel, so
//! frames from different threads never interleave.
//!
//! With [`SinkOptions::route`], published bodies go to the subscribers round-robin (one
//! implicit channel; RDY is not enforced). With [`SinkOptions::backlog`], subscribers share a
//! backlog of generated messages, RDY-limited, for the consumer-side ceiling.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::protocol::{
    decode, encode_message, encode_response, message_id_from_offset, Command, ConnState, DecodeCtx,
    Limits, MAGIC_V2,
};

/// What the fake server does beyond answering.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Deliver published bodies to subscribers, round-robin.
    pub route: bool,
    /// Sleep once for the duration, while handling the n-th published message (1-based), before
    /// answering or routing it: a stalled server.
    pub stall: Option<(u64, Duration)>,
    /// Generated messages to serve to subscribers (shared by all of them, RDY-limited): a
    /// backlog for `sub` mode's ceiling.
    pub backlog: u64,
    /// Bytes per generated message.
    pub backlog_size: usize,
}

/// What a subscribed connection's writer thread is told.
#[derive(Debug)]
enum Out {
    /// Bytes to write as they are (responses, routed message frames).
    Bytes(Vec<u8>),
    /// A new RDY count.
    Rdy(u64),
    /// This many messages were FINed.
    Fin(u64),
}

/// State shared by every connection of one sink.
#[derive(Debug)]
struct Shared {
    opts: SinkOptions,
    /// Messages published so far (decides the stall).
    published: AtomicU64,
    /// Generated messages not yet served.
    backlog: AtomicU64,
    /// Where routed messages go (connection id, writer); round-robin index.
    subscribers: Mutex<Vec<(u64, Sender<Out>)>>,
    /// Numbers connections, so a leaving subscriber can be found in `subscribers`.
    next_conn: AtomicU64,
    next_subscriber: AtomicUsize,
    /// Set on drop: the accept loop exits.
    stop: AtomicBool,
}

/// A running fake server; stops accepting on drop.
#[derive(Debug)]
pub struct Sink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds `addr` (port 0 picks one) and starts accepting.
    ///
    /// # Errors
    /// The bind failed.
    pub fn start(addr: SocketAddr, opts: SinkOptions) -> io::Result<Sink> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            backlog: AtomicU64::new(opts.backlog),
            opts,
            published: AtomicU64::new(0),
            subscribers: Mutex::new(Vec::new()),
            next_conn: AtomicU64::new(0),
            next_subscriber: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let accept = std::thread::spawn(move || accept_loop(&listener, &s));
        Ok(Sink {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Messages published to it so far.
    pub fn published(&self) -> u64 {
        self.shared.published.load(Ordering::Relaxed)
    }

    /// Blocks until the accept loop ends (never, unless dropped elsewhere): `corq bench sink`.
    pub fn wait(mut self) {
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let shared = Arc::clone(shared);
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &shared) {
                log::debug!("sink connection: {e}");
            }
        });
    }
}

/// Where a connection's answers go: straight to the socket until SUB, then via its writer.
enum Reply {
    Direct(TcpStream),
    Writer(Sender<Out>),
}

/// Serves one connection; when it ends, a subscriber is taken off the routing list so no
/// message is routed to a client that has left.
fn serve(stream: TcpStream, shared: &Arc<Shared>) -> io::Result<()> {
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let result = serve_commands(stream, shared, id);
    lock(&shared.subscribers).retain(|(conn, _)| *conn != id);
    result
}

fn serve_commands(mut stream: TcpStream, shared: &Arc<Shared>, id: u64) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic)?;
    if &magic != MAGIC_V2 {
        return Ok(());
    }
    let reply = &mut Reply::Direct(stream.try_clone()?);
    let mut ctx = DecodeCtx {
        state: ConnState::Init,
        heartbeats_disabled: false,
        mpub_auth: false,
    };
    let limits = Limits::default();
    let (mut buf, mut len) = (vec![0u8; 1 << 20], 0usize);
    let mut out = Vec::new();
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let (mut pos, mut fins) = (0, 0);
        loop {
            let (cmd, used) = match decode(&buf[pos..len], &ctx, &limits) {
                Ok(Some(found)) => found,
                Ok(None) => break,
                // A fake server has no error replies: it hangs up, as nsqd does on fatal ones.
                Err(_) => return Ok(()),
            };
            pos += used;
            if let Command::Fin { .. } = cmd {
                fins += 1; // told to the writer once per pass, not once per FIN
            } else if let Some(writer) = handle(cmd, &mut ctx, &mut out, reply, (shared, id))? {
                *reply = Reply::Writer(writer);
            }
        }
        buf.copy_within(pos..len, 0);
        len -= pos;
        if fins > 0 {
            to_writer(reply, Out::Fin(fins));
        }
        send(reply, &mut out)?;
    }
}

fn send(reply: &mut Reply, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    match reply {
        Reply::Direct(s) => s.write_all(out)?,
        Reply::Writer(tx) => {
            let _ = tx.send(Out::Bytes(std::mem::take(out)));
        }
    }
    out.clear();
    Ok(())
}

/// Applies one command; returns a new writer channel when the connection just subscribed.
fn handle(
    cmd: Command<'_>,
    ctx: &mut DecodeCtx,
    out: &mut Vec<u8>,
    reply: &mut Reply,
    (shared, id): (&Arc<Shared>, u64),
) -> io::Result<Option<Sender<Out>>> {
    match cmd {
        Command::Identify { .. } => encode_response(out, b"OK"),
        Command::Pub { body, .. } => {
            publish(shared, body);
            encode_response(out, b"OK");
        }
        Command::Mpub { bodies, .. } => {
            bodies.for_each(|b| publish(shared, b));
            encode_response(out, b"OK");
        }
        Command::Sub { .. } => {
            ctx.state = ConnState::Subscribed;
            encode_response(out, b"OK");
            let Reply::Direct(stream) = reply else {
                return Ok(None);
            };
            let (tx, rx) = channel();
            let writer = stream.try_clone()?;
            let for_writer = Arc::clone(shared);
            std::thread::spawn(move || write_loop(writer, &rx, &for_writer));
            if shared.opts.route {
                lock(&shared.subscribers).push((id, tx.clone()));
            }
            send(reply, out)?;
            return Ok(Some(tx));
        }
        Command::Rdy { count } => to_writer(reply, Out::Rdy(count)),
        Command::Cls => encode_response(out, b"CLOSE_WAIT"),
        _ => {}
    }
    Ok(None)
}

fn to_writer(reply: &Reply, msg: Out) {
    if let Reply::Writer(tx) = reply {
        let _ = tx.send(msg);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicked connection thread must not take the whole fake server down with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a published message, stalls once if asked, and routes it.
fn publish(shared: &Shared, body: &[u8]) {
    let n = shared.published.fetch_add(1, Ordering::Relaxed) + 1;
    if let Some((at, pause)) = shared.opts.stall {
        if n == at {
            std::thread::sleep(pause);
        }
    }
    if !shared.opts.route {
        return;
    }
    let mut frame = Vec::with_capacity(body.len() + 34);
    encode_message(&mut frame, 0, 1, &message_id_from_offset(n), body);
    let mut subs = lock(&shared.subscribers);
    while !subs.is_empty() {
        let i = shared.next_subscriber.fetch_add(1, Ordering::Relaxed) % subs.len();
        match subs[i].1.send(Out::Bytes(frame)) {
            Ok(()) => return,
            // That subscriber's writer is gone (its client left): forget it, try the next.
            Err(std::sync::mpsc::SendError(Out::Bytes(f))) => {
                subs.swap_remove(i);
                frame = f;
            }
            Err(_) => return,
        }
    }
}

/// A subscribed connection's writer: drains its channel, tops the in-flight count up to RDY
/// from the generated backlog, and writes once per pass.
fn write_loop(mut stream: TcpStream, rx: &Receiver<Out>, shared: &Shared) {
    let body = vec![b'x'; shared.opts.backlog_size];
    let mut w = Window::default();
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        w.apply(first, &mut buf);
        while let Ok(m) = rx.try_recv() {
            w.apply(m, &mut buf);
        }
        let want = w.rdy.saturating_sub(w.in_flight);
        let take = shared
            .backlog
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b - b.min(want))
            })
            .map_or(0, |before| before.min(want));
        for _ in 0..take {
            w.next_id += 1;
            encode_message(&mut buf, 0, 1, &message_id_from_offset(w.next_id), &body);
        }
        w.in_flight += take;
        if stream.write_all(&buf).is_err() {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        buf.clear();
    }
}

/// A source subscriber's RDY window.
#[derive(Debug, Default)]
struct Window {
    rdy: u64,
    in_flight: u64,
    next_id: u64,
}

impl Window {
    fn apply(&mut self, m: Out, buf: &mut Vec<u8>) {
        match m {
            Out::Bytes(b) => buf.extend_from_slice(&b),
            Out::Rdy(n) => self.rdy = n,
            Out::Fin(n) => self.in_flight = self.in_flight.saturating_sub(n),
        }
    }
}
