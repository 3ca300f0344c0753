//! The event loop: one `mio::Poll` on the calling thread, multiplexing every connection.
//!
//! It owns the listener, the slab of connections and the loop turn; it knows no NSQ semantics.
//! It moves bytes: reads them, has `protocol::decode` turn them into commands, hands those to
//! the broker, and writes back what the broker queued. One loop turn:
//!
//! 1. **Poll** with a timeout from the wheel's next deadline (0 if a connection still has
//!    unread bytes from a capped read); retry on `EINTR`.
//! 2. **I/O events:** the listener accepts until `WouldBlock`; a readable connection is read
//!    until a short read (the socket is empty; see `Conn::read_once`), `WouldBlock` or its
//!    per-turn budget (then it goes on the still-readable list, since mio is edge-triggered)
//!    and every complete command is decoded and applied; a writable one
//!    gets its leftover output; the waker token means another thread wants our attention.
//! 3. **Timers:** `now` is read once and the wheel fires what is due (timeouts, deferrals,
//!    heartbeats, the periodic sync/retention/checkpoint step).
//! 4. **Storage step:** the auth servers' answers are applied (`Broker::auth_step`), then the
//!    logs appended to this turn write their pending bytes (one `pwrite`
//!    each: the `OK`s below must not leave before their records are in the log), finished
//!    storage jobs are applied and due ones handed to the helper threads.
//! 5. **Delivery:** the broker's pump hands messages to ready consumers of every channel that
//!    something touched this turn, up to a budget per pass (`PASS_BUDGET`); what is left waits
//!    for the next turn, which then polls without sleeping. Then the lookupd peers (`peers`)
//!    take their turn: the broker's topology events become REGISTER/UNREGISTER lines, their
//!    sockets are driven, and a due statsd push is sent (non-blocking UDP).
//! 6. **Before sleep:** each connection with pending output gets one write pass, registering
//!    `WRITABLE` only for leftovers; conns marked closing are reaped, so a token is never reused
//!    within one batch of events. (Replies queued before the delivery pass are written just
//!    before it, so a publisher's `OK` does not wait for the fan-out it triggered.)
//!
//! `docs/architecture.md` states these phases too; keep the two in step.

pub mod conn;
mod http;
pub mod transport;
mod upgrade;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{debug, error, info, trace, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::broker::auth::Applied;
use crate::broker::{Broker, Now};
use crate::config::Config;
use crate::http::serve::HttpServer;
use crate::peers::{self, Peers};
use crate::protocol::{self, decode, Command, DecodeError, MAX_LINE};
use crate::server::ServerError;
use crate::timer::Clock;

use conn::{Conn, Phase, ReadOutcome};

/// The TCP (protocol V2) listener's token.
const LISTENER: Token = Token(usize::MAX - 1);
/// The HTTP listener's token.
const HTTP_LISTENER: Token = Token(usize::MAX - 3);
/// The HTTPS listener's token.
const HTTPS_LISTENER: Token = Token(usize::MAX - 4);
/// The waker's token.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Bytes one connection may read in one turn before others get theirs.
const READ_BUDGET: usize = 256 * 1024;
/// The same for an HTTP connection: one read. A chunked body is decoded byte by byte as it
/// arrives, which costs more per byte than a V2 command; with a smaller share per turn, twenty
/// connections pushing bodies keep a turn short and `/ping` answered quickly.
const HTTP_READ_BUDGET: usize = READ_SCRATCH;
/// Output a client may have waiting before we stop reading its commands (backpressure against
/// a publisher that pipelines without reading its `OK`s).
const OUTPUT_HIGH_WATER: usize = 4 * 1024 * 1024;
/// Size of the shared read buffer: one read call takes at most this much.
const READ_SCRATCH: usize = 64 * 1024;
/// How long a closing HTTP conn waits for the peer's EOF, and the most it reads and discards
/// meanwhile (Go's HTTP server, nsqd's, waits 500 ms; see `Reactor::start_linger`).
const LINGER_MS: u64 = 500;
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// Events taken per poll.
const EVENTS_CAPACITY: usize = 1024;

/// The bound listeners the loop serves.
#[derive(Debug)]
pub struct Listeners {
    /// Protocol V2.
    pub tcp: TcpListener,
    /// The HTTP API, unless `--http-address` is empty.
    pub http: Option<TcpListener>,
    /// The HTTP API over TLS.
    pub https: Option<TcpListener>,
}

/// State shared with other threads: the stop flag and the waker.
#[derive(Debug)]
pub struct Shared {
    /// Set to ask the loop to stop.
    pub stop: AtomicBool,
    /// Wakes the loop out of `poll`.
    pub waker: Arc<Waker>,
}

/// Which listener an accept is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listen {
    Tcp,
    Http,
    Https,
}

/// Reads both clocks.
fn now(clock: &dyn Clock) -> Now {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Now {
        mono_ms: clock.now_ms(),
        wall_ns: i64::try_from(wall.as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The event loop.
pub struct EventLoop {
    poll: Poll,
    events: Events,
    listener: Option<TcpListener>,
    /// The HTTP listener, when `--http-address` is set.
    http_listener: Option<TcpListener>,
    /// The HTTPS listener, when TLS is configured and `--https-address` is set.
    https_listener: Option<TcpListener>,
    /// The HTTP API's state and handlers.
    http: Option<HttpServer>,
    conns: Slab<Conn>,
    broker: Broker,
    clock: Box<dyn Clock + Send>,
    shared: Arc<Shared>,
    /// Conns whose last read was capped: read them again without waiting for an event.
    still_readable: Vec<usize>,
    /// Reused list of conns to close at the end of the turn.
    to_close: Vec<usize>,
    /// The largest undecoded input a conn may buffer: the longest command nsqd accepts.
    max_buffered: usize,
    /// Reused list of (conn key, readable, writable) from one poll.
    ready: Vec<(usize, bool, bool)>,
    /// One read buffer shared by every connection: bytes go from here into a conn's own buffer
    /// only as far as they arrive, so idle connections hold none.
    scratch: Vec<u8>,
    /// The lookupd connections (`--lookupd-tcp-address`); their tokens are `peers::owns`'.
    peers: Peers,
    /// The TLS configuration, when `--tls-cert` and `--tls-key` are set.
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `--tls-required` (true or tcp-https): commands but IDENTIFY need TLS on the TCP protocol.
    tls_required: bool,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("conns", &self.conns.len())
            .field("broker", &self.broker)
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// Builds the loop around a bound listener, opening the broker (and so the data directory)
    /// with a storage helper that wakes this loop.
    ///
    /// # Errors
    /// If the poll instance, the waker, the listener registration or the broker fail.
    pub fn new(
        listeners: Listeners,
        cfg: Config,
        clock: Box<dyn Clock + Send>,
    ) -> Result<EventLoop, ServerError> {
        let Listeners {
            tcp: mut listener,
            http: http_listener,
            https: mut https_listener,
        } = listeners;
        let poll = Poll::new().map_err(ServerError::Io)?;
        if let Some(l) = &mut https_listener {
            poll.registry()
                .register(l, HTTPS_LISTENER, Interest::READABLE)
                .map_err(ServerError::Io)?;
        }
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(ServerError::Io)?;
        let mut http_listener = http_listener;
        let mut http = None;
        if let Some(l) = &mut http_listener {
            poll.registry()
                .register(l, HTTP_LISTENER, Interest::READABLE)
                .map_err(ServerError::Io)?;
            let http_port = l.local_addr().map_err(ServerError::Io)?.port();
            let tcp_port = listener.local_addr().map_err(ServerError::Io)?.port();
            http = Some(HttpServer::new(&cfg.opts, http_port, tcp_port));
        }
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(ServerError::Io)?);
        let peers = {
            let tcp_port = listener.local_addr().map_err(ServerError::Io)?.port();
            let http_port = http_listener
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map_or(0, |a| a.port());
            Peers::new(&cfg.opts, tcp_port, http_port, waker.clone())
        };
        let notify_waker = waker.clone();
        let notify = Box::new(move || {
            // A failed wake only delays the result to the next turn.
            let _ = notify_waker.wake();
        });
        let tls = transport::tls::server_config(&cfg.opts)
            .map_err(|e| ServerError::Config(crate::config::ConfigError(e)))?;
        let tls_required = cfg.tls_required_level() > 0;
        if let (Some(h), Some(a)) = (&mut http, &https_listener) {
            // nsqd: with --tls-required=true (not tcp-https) plain HTTP answers 403.
            if cfg.tls_required_level() == 2 {
                h.refuse_plain = Some(a.local_addr().map_err(ServerError::Io)?.port());
            }
        }
        let mut broker = Broker::open(cfg, now(&*clock), notify).map_err(ServerError::Start)?;
        // The auth helpers wake the loop through the same waker.
        let auth_waker = waker.clone();
        broker
            .start_auth(Arc::new(move || {
                let _ = auth_waker.wake();
            }))
            .map_err(ServerError::Io)?;
        let limits = broker.limits();
        let max_buffered = MAX_LINE + 8 + limits.max_body_size.max(limits.max_msg_size) as usize;
        Ok(EventLoop {
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener: Some(listener),
            http_listener,
            https_listener,
            http,
            conns: Slab::new(),
            broker,
            clock,
            shared: Arc::new(Shared {
                stop: AtomicBool::new(false),
                waker,
            }),
            still_readable: Vec::new(),
            to_close: Vec::new(),
            max_buffered,
            ready: Vec::new(),
            scratch: vec![0; READ_SCRATCH],
            peers,
            tls,
            tls_required,
        })
    }

    /// The flag and waker other threads use to reach the loop.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn now(&self) -> Now {
        now(&*self.clock)
    }

    /// Runs until asked to stop, then shuts down cleanly: stop accepting, flush the logs,
    /// checkpoint the channels, close the connections.
    ///
    /// # Errors
    /// Only if `poll` itself fails; one connection's failure closes that connection alone.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.shared.stop.load(Ordering::Acquire) {
            self.turn()?;
        }
        info!("shutting down");
        self.listener = None;
        self.http_listener = None;
        let now_ms = self.clock.now_ms();
        self.peers
            .shutdown(&self.broker, self.poll.registry(), now_ms);
        self.broker.shutdown();
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.flush_conn(key);
            self.close(key);
        }
        Ok(())
    }

    /// One loop turn (see the module doc for the phases).
    fn turn(&mut self) -> io::Result<()> {
        let timeout = self.poll_timeout();
        if let Err(e) = self.poll.poll(&mut self.events, timeout) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut readable = std::mem::take(&mut self.still_readable);
        let (mut accept, mut accept_http, mut accept_https) = (false, false, false);
        self.ready.clear();
        for event in self.events.iter() {
            match event.token() {
                LISTENER => accept = true,
                HTTP_LISTENER => accept_http = true,
                HTTPS_LISTENER => accept_https = true,
                WAKER => trace!("woken"),
                token if peers::owns(token) => self.peers.on_event(token),
                Token(key) => {
                    if event.is_read_closed() || event.is_error() {
                        if let Some(c) = self.conns.get_mut(key) {
                            c.peer_closed = true;
                        }
                    }
                    let read = event.is_readable() || event.is_read_closed() || event.is_error();
                    self.ready.push((key, read, event.is_writable()));
                }
            }
        }
        let ready = std::mem::take(&mut self.ready);
        for &(key, read, write) in &ready {
            if write {
                self.flush_conn(key);
            }
            if read {
                readable.push(key);
            }
        }
        self.ready = ready;
        if accept {
            self.accept_all(Listen::Tcp);
        }
        if accept_http {
            self.accept_all(Listen::Http);
        }
        if accept_https {
            self.accept_all(Listen::Https);
        }
        let now = self.now();
        for key in readable.drain(..) {
            self.read_conn(key, now);
        }
        self.still_readable.append(&mut readable);
        self.still_readable.sort_unstable();
        self.still_readable.dedup();
        let now = self.now();
        self.broker.on_timers(now);
        let expired: Vec<usize> = self.broker.take_expired_handshakes().collect();
        for key in expired {
            self.on_conn_deadline(key, now);
        }
        // Auth servers' answers: their sessions' input runs again below (unblocked).
        self.broker.auth_step(now);
        self.broker.storage_step(now);
        let unblocked: Vec<usize> = self.broker.take_unblocked().collect();
        for token in unblocked {
            // Its buffered commands can run now; decode them next turn without waiting.
            self.still_readable.push(token);
        }
        // Replies first: a publisher's OK must not wait behind the delivery pass its own
        // publish triggered (with many channels that pass is most of the turn), or the
        // publisher's next batch waits too.
        self.write_pending();
        self.broker.pump(now);
        self.step_peers();
        self.broker.checkpoint_if_changed();
        self.write_pending();
        self.reap();
        Ok(())
    }

    /// The lookupd peers' turn: a `PUT /config/nsqlookupd_tcp_addresses` is applied, then
    /// the broker's topology events are sent and the connections driven (`peers::Peers::step`).
    fn step_peers(&mut self) {
        if let Some(http) = &mut self.http {
            if std::mem::take(&mut http.lookupd_changed) {
                self.peers
                    .set_addresses(&http.lookupd, self.poll.registry());
            }
        }
        let now_ms = self.clock.now_ms();
        self.peers
            .step(now_ms, &mut self.broker, self.poll.registry());
    }

    /// How long poll may sleep: until the next timer, not at all if input is waiting.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.still_readable.is_empty() || self.broker.pump_pending() {
            // Input left unread, or a delivery pass cut short by its budget: go on at once.
            return Some(Duration::ZERO);
        }
        let deadline = match (self.broker.next_deadline(), self.peers.next_deadline()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Duration::from_millis(
            deadline.saturating_sub(self.clock.now_ms()),
        ))
    }

    /// Accepts every pending connection of one listener.
    fn accept_all(&mut self, which: Listen) {
        let listener = match which {
            Listen::Tcp => &self.listener,
            Listen::Http => &self.http_listener,
            Listen::Https => &self.https_listener,
        };
        let http = which != Listen::Tcp;
        let Some(listener) = listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((mut stream, remote)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    if let Err(e) =
                        self.poll
                            .registry()
                            .register(&mut stream, token, Interest::READABLE)
                    {
                        warn!("register {remote}: {e}");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let now = now(&*self.clock);
                    let conn = if http {
                        let client = self.broker.connect_http(token.0, remote, now);
                        let mut conn = Conn::new(stream, remote, Phase::Http { client });
                        conn.http.last_read_ms = now.mono_ms;
                        if which == Listen::Https {
                            // The idle deadline below bounds the handshake too.
                            match self.tls.as_ref().map(transport::Layered::https) {
                                Some(Ok(l)) => conn.transport = transport::Transport::Layered(l),
                                _ => {
                                    self.broker.disconnect(client);
                                    continue;
                                }
                            }
                        }
                        // Only the idle deadline runs until the first byte arrives.
                        let idle = self.broker.config().http_idle_timeout;
                        if idle > 0 {
                            let due = now.timer_base_ms().saturating_add(idle);
                            let id = self.broker.conn_deadline(token.0, due);
                            conn.http.timer = Some((id, due));
                        }
                        conn
                    } else {
                        let mut conn = Conn::new(stream, remote, Phase::Magic);
                        conn.handshake_timer = Some(self.broker.handshake_deadline(token.0, now));
                        conn
                    };
                    entry.insert(conn);
                    debug!("accepted {remote} as conn {}", token.0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log, and try again on the next readiness event.
                    error!("accept: {e}");
                    break;
                }
            }
        }
    }

    /// Reads a conn and runs every complete command in what it read, until the socket is
    /// drained, the per-turn budget is spent, or the client must wait (throttled).
    fn read_conn(&mut self, key: usize, mut now: Now) {
        if self
            .conns
            .get(key)
            .is_some_and(|c| matches!(c.phase, Phase::Lingering { .. }))
        {
            return self.linger_read(key);
        }
        let mut total = 0;
        // The last read emptied the socket (see `Conn::read_once`).
        let mut drained = false;
        loop {
            self.decode_all(key, now);
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.closing {
                return;
            }
            if let Some(client) = conn.phase.client() {
                // Backpressure: take no more input while the client is not reading its replies
                // or waits for a durable ack; flush_conn or the ack resumes it.
                let backlog = self.broker.output(client).map_or(0, |o| o.len());
                if backlog > OUTPUT_HIGH_WATER || self.broker.is_blocked(client) {
                    conn.throttled = true;
                    return;
                }
            }
            if conn.rbuf.len() >= self.max_buffered && matches!(conn.phase, Phase::Http { .. }) {
                // Every HTTP request fits the buffer (head cap + body limit, chunk framing
                // dropped as it is decoded), and this one is neither waiting nor answered: it
                // made no progress, and would never read again. Fail rather than spin.
                error!(
                    "conn {key} ({}): HTTP request stuck at the buffer cap",
                    conn.remote
                );
                self.mark_closing(key);
                return;
            }
            if drained {
                return;
            }
            let budget = match conn.phase {
                Phase::Http { .. } => HTTP_READ_BUDGET,
                _ => READ_BUDGET,
            };
            if total >= budget || conn.rbuf.len() >= self.max_buffered {
                self.still_readable.push(key);
                return;
            }
            match conn.read_once(&mut self.scratch, self.max_buffered) {
                outcome @ (ReadOutcome::Data(n) | ReadOutcome::Last(n)) => {
                    drained = matches!(outcome, ReadOutcome::Last(_));
                    total += n;
                    conn.http.last_read_ms = self.clock.now_ms();
                    if !matches!(conn.transport, transport::Transport::Plain) {
                        self.after_layered_read(key);
                    }
                    // Time the commands from when they were read, not from when poll returned:
                    // a REQ or DPUB delay counted from an earlier instant could fire early.
                    now = self.now();
                }
                ReadOutcome::Drained => return,
                ReadOutcome::Failed => {
                    // One write for a TLS alert, then close (nsqd logs and closes too).
                    self.flush_conn(key);
                    self.mark_closing(key);
                    return;
                }
                ReadOutcome::Closed => {
                    // Commands already read were applied; their replies are best effort and
                    // leave with everyone's in this turn's write pass, after the storage step
                    // has written their records (see `Log::flush`), before the conn is reaped.
                    self.mark_closing(key);
                    return;
                }
            }
        }
    }

    /// Decodes and applies every complete command in a conn's buffer.
    fn decode_all(&mut self, key: usize, now: Now) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Phase::Http { client } = conn.phase {
            return self.decode_http(key, client, now);
        }
        let mut used_total = 0;
        loop {
            let buf = &conn.rbuf[used_total..];
            let client = match conn.phase {
                Phase::Magic => match protocol::decode_magic(buf) {
                    Ok(None) => break,
                    Ok(Some(n)) => {
                        used_total += n;
                        if let Some(t) = conn.handshake_timer.take() {
                            self.broker.cancel_timer(t);
                        }
                        let client = self.broker.connect(key, conn.remote, now);
                        conn.phase = Phase::V2 { client };
                        continue;
                    }
                    Err(e) => {
                        // No session yet: write the bare error frame directly, then close.
                        let mut frame = Vec::new();
                        protocol::encode::encode_error(&mut frame, &e);
                        let _ = conn.write_some(&frame);
                        conn.closing = true;
                        self.to_close.push(key);
                        break;
                    }
                },
                Phase::V2 { client } => client,
                // Served by decode_http; nothing is decoded after the last reply.
                Phase::Http { .. } | Phase::Lingering { .. } => break,
            };
            let Some(ctx) = self.broker.decode_ctx(client) else {
                break; // closing, or waiting (for a durable ack, the auth server, a peek)
            };
            if self.tls_required && !self.broker.is_tls(client) {
                if let Some(e) = transport::tls_required_error(buf, MAX_LINE) {
                    self.broker.fail(client, &e);
                    break;
                }
            }
            match decode::decode(buf, &ctx, self.broker.limits()) {
                Ok(None) => break,
                Ok(Some((cmd, used))) => {
                    // Only IDENTIFY negotiates a stream upgrade.
                    let identify = matches!(cmd, Command::Identify { .. });
                    // A command waiting for the auth server stays in the buffer (the client
                    // is blocked now, so the loop stops) and is decoded again when it answers.
                    if self.broker.apply(client, cmd, now) == Applied::Done {
                        used_total += used;
                        if identify {
                            if let Some(up) = self.broker.take_upgrade(client) {
                                self.upgrade(key, client, used_total, &up, now);
                                return;
                            }
                        }
                    }
                }
                Err(DecodeError::Proto(e)) => {
                    self.broker.fail(client, &e);
                    break;
                }
                Err(DecodeError::CloseSilently) => {
                    self.broker.close_silently(client);
                    break;
                }
            }
        }
        conn.consume(used_total);
    }

    /// Writes what the broker queued for every client that has output.
    fn write_pending(&mut self) {
        let dirty = self.broker.take_dirty();
        for &client in &dirty {
            let Some(token) = self.broker.client_token(client) else {
                continue;
            };
            if self.broker.is_closing(client) {
                // Close once the last reply (an error frame, a `Connection: close` response)
                // is out; flush_conn closes it when the output drains.
                if let Some(conn) = self.conns.get_mut(token) {
                    conn.close_when_drained = true;
                }
            }
            self.flush_conn(token);
        }
        self.broker.return_dirty(dirty);
    }

    /// One write pass for a conn; WRITABLE interest only while output is left over.
    fn flush_conn(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(client) = conn.phase.client() else {
            return;
        };
        let Some(out) = self.broker.output(client) else {
            return;
        };
        if !out.is_empty() || conn.transport_wants_write() {
            match conn.write_some(out.pending()) {
                Ok(n) => out.consume(n),
                Err(e) => {
                    debug!("conn {key}: write failed: {e}");
                    conn.closing = true;
                    self.to_close.push(key);
                    return;
                }
            }
        }
        let want_writable = !out.is_empty() || conn.transport_wants_write();
        let drained_below_high_water = out.len() <= OUTPUT_HIGH_WATER;
        if conn.close_when_drained && !want_writable {
            if matches!(conn.phase, Phase::Http { .. })
                && matches!(conn.transport, transport::Transport::Plain)
            {
                self.start_linger(key);
            } else {
                conn.closing = true;
                self.to_close.push(key);
            }
            return;
        }
        self.broker.output_written(client);
        if want_writable != conn.writable_registered {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) = self
                .poll
                .registry()
                .reregister(&mut conn.stream, Token(key), interest)
            {
                warn!("conn {key}: reregister: {e}");
            }
            conn.writable_registered = want_writable;
        }
        // A conn paused by backpressure may have commands waiting in its buffer or socket.
        if drained_below_high_water && conn.throttled {
            conn.throttled = false;
            self.still_readable.push(key);
        }
    }

    /// An HTTP conn's last reply (an error, or `Connection: close`) is out. Closing a socket
    /// with unread input makes the kernel send a reset, and a reset can destroy the reply in
    /// the peer's receive buffer before it reads it (a client that sent a refused 200 KiB body
    /// got `ECONNRESET` instead of its 413). So, as Go's HTTP server does: end the broker
    /// session, shut our side for writing, and read and discard what the peer still sends until
    /// its EOF, [`LINGER_MAX_BYTES`] or [`LINGER_MS`], whichever comes first. TLS conns close
    /// at once (their close is the TLS layer's).
    fn start_linger(&mut self, key: usize) {
        let due = self.clock.now_ms().saturating_add(LINGER_MS);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(client) = conn.phase.client() {
            self.broker.disconnect(client);
        }
        conn.phase = Phase::Lingering { discarded: 0 };
        conn.close_when_drained = false;
        conn.rbuf = Vec::new();
        if let Some((t, _)) = conn.http.timer.take() {
            self.broker.cancel_timer(t);
        }
        if conn.stream.shutdown(std::net::Shutdown::Write).is_err() {
            return self.mark_closing(key);
        }
        if conn.writable_registered {
            let _ =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, Token(key), Interest::READABLE);
            conn.writable_registered = false;
        }
        conn.http.timer = Some((self.broker.conn_deadline(key, due), due));
        // Bytes may be waiting already, with no readiness event to come for them.
        self.still_readable.push(key);
    }

    /// Reads and discards a lingering conn's input; closes it at EOF, on an error, or once
    /// [`LINGER_MAX_BYTES`] are discarded.
    fn linger_read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        loop {
            let outcome = conn.discard_once(&mut self.scratch);
            let Phase::Lingering { discarded } = &mut conn.phase else {
                return;
            };
            match outcome {
                ReadOutcome::Data(n) | ReadOutcome::Last(n) => {
                    *discarded = discarded.saturating_add(n);
                    if *discarded >= LINGER_MAX_BYTES {
                        break;
                    }
                }
                ReadOutcome::Drained => return,
                ReadOutcome::Closed | ReadOutcome::Failed => break,
            }
        }
        self.mark_closing(key);
    }

    fn mark_closing(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if !conn.closing {
                conn.closing = true;
                self.to_close.push(key);
            }
        }
    }

    /// Closes the conns marked this turn.
    fn reap(&mut self) {
        let mut to_close = std::mem::take(&mut self.to_close);
        for key in to_close.drain(..) {
            self.close(key);
        }
        self.to_close = to_close;
    }

    fn close(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(t) = conn.handshake_timer.take() {
            self.broker.cancel_timer(t);
        }
        if let Some((t, _)) = conn.http.timer.take() {
            self.broker.cancel_timer(t);
        }
        if let Some(client) = conn.phase.client() {
            self.broker.disconnect(client);
        }
        debug!("closed conn {key} ({})", conn.remote);
    }
}
