//! `corq lookupd`: a wire-compatible nsqlookupd (reference §4), on its own small `mio` loop.
//!
//! It owns two listeners (the lookup TCP protocol V1 and the HTTP API), a slab of connections
//! and the [`registry::Registry`]. Everything runs on the calling thread; nothing blocks. A
//! loop turn: poll (no timers are needed: activity and tombstones are judged by timestamp when
//! a query asks), accept, read each readable connection until `WouldBlock` and handle every
//! complete command or request in its buffer, write what is pending (`WRITABLE` only for
//! leftovers), close what finished. A TCP peer whose connection closes stops producing
//! everything it registered, as in nsqlookupd.
//!
//! - [`registry`]: producers, topics, channels, tombstones, activity filtering (pure).
//! - [`tcp`]: the V1 protocol: decode, apply, reply (pure).
//! - [`http`]: the HTTP endpoints (pure), over the project's HTTP parser and reply helpers.

pub mod http;
pub mod registry;
pub mod tcp;

mod conn;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use log::{debug, error, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::config::parse_duration_ms;
use conn::{Conn, Kind};
use registry::Registry;

/// The TCP listener's token.
const TCP_LISTENER: Token = Token(usize::MAX - 1);
/// The HTTP listener's token.
const HTTP_LISTENER: Token = Token(usize::MAX - 2);
/// The waker's token (a [`LookupdHandle`] stopping the loop).
const WAKER: Token = Token(usize::MAX - 3);
/// Events taken per poll.
const EVENTS_CAPACITY: usize = 256;

/// nsqlookupd's flags, names and defaults.
#[derive(Debug, Clone, Args)]
pub struct LookupdOptions {
    /// <addr>:<port> to listen on for TCP clients
    #[arg(long, default_value = "0.0.0.0:4160")]
    pub tcp_address: SocketAddr,
    /// <addr>:<port> to listen on for HTTP clients
    #[arg(long, default_value = "0.0.0.0:4161")]
    pub http_address: SocketAddr,
    /// address of this lookupd node, (default to the OS hostname)
    #[arg(long, default_value = "", hide_default_value = true)]
    pub broadcast_address: String,
    /// duration of time a producer will remain in the active list since its last ping
    #[arg(long, default_value = "5m0s", value_parser = parse_duration_ms)]
    pub inactive_producer_timeout: u64,
    /// duration of time a producer will remain tombstoned if registration remains
    #[arg(long, default_value = "45s", value_parser = parse_duration_ms)]
    pub tombstone_lifetime: u64,
    /// set log verbosity: debug, info, warn, error, or fatal
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// log format: text, or json (one object per line, as corqd's --log-format)
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text)]
    pub log_format: crate::logging::LogFormat,
}

impl LookupdOptions {
    /// Defaults on loopback ports the OS picks (tests, embedding).
    pub fn local() -> Self {
        LookupdOptions {
            tcp_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_address: SocketAddr::from(([127, 0, 0, 1], 0)),
            broadcast_address: "127.0.0.1".into(),
            inactive_producer_timeout: 300_000,
            tombstone_lifetime: 45_000,
            log_level: "info".into(),
            log_format: crate::logging::LogFormat::Text,
        }
    }
}

/// Stops a running lookupd from another thread.
#[derive(Debug, Clone)]
pub struct LookupdHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl LookupdHandle {
    /// Asks the loop to stop; [`Lookupd::run`] returns soon after.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            warn!("waking lookupd: {e}");
        }
    }
}

/// A bound lookupd, ready to run.
#[derive(Debug)]
pub struct Lookupd {
    poll: Poll,
    tcp: TcpListener,
    http: TcpListener,
    conns: Slab<Conn>,
    reg: Registry,
    me: tcp::SelfInfo,
    filters: http::Filters,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
}

/// Unix time in nanoseconds (the registry's clock).
fn unix_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Milliseconds to nanoseconds, saturating.
fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms)
        .unwrap_or(i64::MAX)
        .saturating_mul(1_000_000)
}

impl Lookupd {
    /// Binds both listeners.
    ///
    /// # Errors
    /// The flag whose address could not be bound, or a poll set-up failure.
    pub fn bind(opts: &LookupdOptions) -> Result<Lookupd, String> {
        let bind = |flag: &str, a: SocketAddr| {
            TcpListener::bind(a).map_err(|e| format!("--{flag} {a}: cannot listen: {e}"))
        };
        let mut tcp = bind("tcp-address", opts.tcp_address)?;
        let mut http = bind("http-address", opts.http_address)?;
        let io = |e: io::Error| format!("event loop: {e}");
        let poll = Poll::new().map_err(io)?;
        poll.registry()
            .register(&mut tcp, TCP_LISTENER, Interest::READABLE)
            .map_err(io)?;
        poll.registry()
            .register(&mut http, HTTP_LISTENER, Interest::READABLE)
            .map_err(io)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).map_err(io)?);
        let tcp_addr = tcp.local_addr().map_err(io)?;
        let http_addr = http.local_addr().map_err(io)?;
        let hostname = crate::http::serve::hostname();
        let broadcast = if opts.broadcast_address.is_empty() {
            hostname.clone()
        } else {
            opts.broadcast_address.clone()
        };
        info!("TCP: listening on {tcp_addr}");
        info!("HTTP: listening on {http_addr}");
        Ok(Lookupd {
            poll,
            tcp,
            http,
            conns: Slab::new(),
            reg: Registry::new(),
            me: tcp::SelfInfo {
                broadcast_address: broadcast,
                hostname,
                http_port: http_addr.port(),
                tcp_port: tcp_addr.port(),
                version: crate::NSQD_VERSION.to_owned(),
            },
            filters: http::Filters {
                inactive_ns: ms_to_ns(opts.inactive_producer_timeout),
                tombstone_ns: ms_to_ns(opts.tombstone_lifetime),
            },
            stop: Arc::new(AtomicBool::new(false)),
            waker,
            tcp_addr,
            http_addr,
        })
    }

    /// The bound TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// A handle that stops the loop.
    pub fn handle(&self) -> LookupdHandle {
        LookupdHandle {
            stop: self.stop.clone(),
            waker: self.waker.clone(),
        }
    }

    /// Runs until stopped.
    ///
    /// # Errors
    /// Only if `poll` itself fails; a connection's failure closes that connection.
    pub fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        let mut ready = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self.poll.poll(&mut events, None::<Duration>) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            ready.clear();
            for event in events.iter() {
                match event.token() {
                    TCP_LISTENER => self.accept(false),
                    HTTP_LISTENER => self.accept(true),
                    WAKER => {}
                    Token(key) => ready.push(key),
                }
            }
            for &key in &ready {
                self.service(key);
            }
        }
        info!("lookupd: shutting down");
        Ok(())
    }

    fn accept(&mut self, http: bool) {
        let listener = if http { &self.http } else { &self.tcp };
        loop {
            match listener.accept() {
                Ok((mut stream, remote)) => {
                    let entry = self.conns.vacant_entry();
                    let token = Token(entry.key());
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                        warn!("register {remote}: {e}");
                        continue;
                    }
                    let kind = if http { Kind::Http } else { Kind::Magic };
                    entry.insert(Conn::new(stream, remote, kind));
                    debug!("accepted {remote} ({})", if http { "http" } else { "tcp" });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    error!("accept: {e}");
                    break;
                }
            }
        }
    }

    /// Reads, handles and writes one connection; closes it when it is done.
    fn service(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let now = unix_ns();
        let done = conn.service(&mut self.reg, &self.me, self.filters, now);
        if done {
            self.close(key);
        }
    }

    fn close(&mut self, key: usize) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(id) = conn.peer_id.take() {
            info!("peer {id} disconnected: unregistering everything it produced");
            self.reg.disconnect(&id);
        }
        debug!("closed {}", conn.remote);
    }
}

/// `corq lookupd`: binds, installs SIGTERM/SIGINT handling, runs until stopped.
///
/// # Errors
/// A bind or loop failure, naming the flag.
pub fn main(opts: &LookupdOptions) -> Result<(), String> {
    if crate::config::parse_level(&opts.log_level).is_none() {
        return Err(format!("--log-level {:?}: unknown level", opts.log_level));
    }
    let mut lookupd = Lookupd::bind(opts)?;
    install_signal_handler(lookupd.handle());
    lookupd.run().map_err(|e| format!("event loop: {e}"))
}

/// The handle SIGTERM and SIGINT stop.
static SIGNAL_HANDLE: std::sync::OnceLock<LookupdHandle> = std::sync::OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work: an atomic store and an eventfd write.
    if let Some(h) = SIGNAL_HANDLE.get() {
        h.stop.store(true, Ordering::Release);
        let _ = h.waker.wake();
    }
}

fn install_signal_handler(handle: LookupdHandle) {
    if SIGNAL_HANDLE.set(handle).is_err() {
        return;
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only does async-signal-safe work (see on_signal).
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}
