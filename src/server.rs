//! The embedding API: build a server from a [`Config`], run it on the calling thread, stop it
//! from anywhere with a [`Handle`].
//!
//! ```no_run
//! let server = corq::Server::bind(corq::Options::local("/tmp/queue").validate().unwrap()).unwrap();
//! let handle = server.handle();
//! std::thread::spawn(move || server.run());
//! handle.shutdown();
//! ```

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use log::{info, warn};
use mio::net::TcpListener;

use crate::broker::StartError;
use crate::config::Config;
use crate::reactor::{EventLoop, Shared};
use crate::timer::{Clock, MonotonicClock};

/// Why the server could not start.
#[derive(Debug)]
pub enum ServerError {
    /// Binding the TCP listener failed.
    Bind(SocketAddr, std::io::Error),
    /// Binding the HTTP listener failed.
    BindHttp(SocketAddr, std::io::Error),
    /// A flag's value cannot be used.
    Config(crate::config::ConfigError),
    /// The data directory could not be opened.
    Start(StartError),
    /// The event loop could not be set up or failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(a, e) => write!(f, "--tcp-address {a}: cannot listen: {e}"),
            ServerError::BindHttp(a, e) => write!(f, "--http-address {a}: cannot listen: {e}"),
            ServerError::Config(e) => write!(f, "{e}"),
            ServerError::Start(e) => write!(f, "--data-path: {e}"),
            ServerError::Io(e) => write!(f, "event loop: {e}"),
        }
    }
}

impl std::error::Error for ServerError {}

/// A bound, ready server. [`Server::run`] runs it on the calling thread.
#[derive(Debug)]
pub struct Server {
    event_loop: EventLoop,
    tcp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    https_addr: Option<SocketAddr>,
    cpu: Option<usize>,
}

/// Stops a running server from any thread.
#[derive(Debug, Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    /// Asks the server to shut down cleanly; [`Server::run`] returns once it has.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = self.shared.waker.wake() {
            warn!("waking the event loop: {e}");
        }
    }
}

impl Server {
    /// Opens the data directory (recovering every log) and binds the TCP listener.
    ///
    /// # Errors
    /// A [`ServerError`] naming the flag whose value could not be used.
    pub fn bind(cfg: Config) -> Result<Server, ServerError> {
        Self::bind_with_clock(cfg, Box::new(MonotonicClock::new()))
    }

    /// As [`Server::bind`], with the monotonic clock supplied (tests drive time by hand).
    ///
    /// # Errors
    /// As [`Server::bind`].
    pub fn bind_with_clock(
        cfg: Config,
        clock: Box<dyn Clock + Send>,
    ) -> Result<Server, ServerError> {
        let cpu = cfg.cpu;
        let addr = cfg.tcp_address;
        let listener = TcpListener::bind(addr).map_err(|e| ServerError::Bind(addr, e))?;
        widen_backlog(&listener);
        let tcp_addr = listener.local_addr().map_err(ServerError::Io)?;
        let (http_listener, http_addr) =
            bind_optional(cfg.http_socket_addr().map_err(ServerError::Config)?)?;
        let (https_listener, https_addr) =
            bind_optional(cfg.https_socket_addr().map_err(ServerError::Config)?)?;
        let listeners = crate::reactor::Listeners {
            tcp: listener,
            http: http_listener,
            https: https_listener,
        };
        let event_loop = EventLoop::new(listeners, cfg, clock)?;
        info!("TCP: listening on {tcp_addr}");
        if let Some(a) = http_addr {
            info!("HTTP: listening on {a}");
        }
        if let Some(a) = https_addr {
            info!("HTTPS: listening on {a}");
        }
        Ok(Server {
            event_loop,
            tcp_addr,
            http_addr,
            https_addr,
            cpu,
        })
    }

    /// The address the TCP listener is bound to (the real port when the flag asked for 0).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// The address the HTTP listener is bound to, unless `--http-address` is empty.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address the HTTPS listener is bound to, when TLS is configured and
    /// `--https-address` is set.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https_addr
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.event_loop.shared(),
        }
    }

    /// Runs the server on the calling thread until a [`Handle`] (or a signal, see
    /// [`install_signal_handlers`]) stops it.
    ///
    /// # Errors
    /// If the event loop itself fails.
    pub fn run(mut self) -> Result<(), ServerError> {
        if let Some(cpu) = self.cpu {
            pin_to_cpu(cpu);
        }
        self.event_loop.run().map_err(ServerError::Io)
    }
}

/// The accept queue length asked for (the kernel caps it at `net.core.somaxconn`, as Go's
/// listeners and so nsqd's do).
const LISTEN_BACKLOG: libc::c_int = 4096;

/// Raises the listener's accept queue from the standard library's 128: a burst of connects
/// while the loop is busy must queue, not have its SYNs dropped (each drop costs the client a
/// one-second retransmit).
fn widen_backlog(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own and that is already listening just resizes its queue.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) };
    if rc != 0 {
        warn!("listen backlog: {}", std::io::Error::last_os_error());
    }
}

/// The handle SIGTERM and SIGINT stop; set once per process.
static SIGNAL_HANDLE: OnceLock<Handle> = OnceLock::new();

extern "C" fn on_signal(_: libc::c_int) {
    // Only async-signal-safe work here: an atomic store and an eventfd write.
    if let Some(h) = SIGNAL_HANDLE.get() {
        h.shared.stop.store(true, Ordering::Release);
        let _ = h.shared.waker.wake();
    }
}

/// Makes SIGTERM and SIGINT shut the server down cleanly (what `corqd` does).
pub fn install_signal_handlers(handle: Handle) {
    if SIGNAL_HANDLE.set(handle).is_err() {
        warn!("signal handlers already installed");
        return;
    }
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only does async-signal-safe work (see on_signal).
    unsafe {
        libc::signal(libc::SIGTERM, handler);
        libc::signal(libc::SIGINT, handler);
    }
}

/// Pins the calling thread to one CPU core (`--cpu`), and the helpers off it (see `cpu.rs`);
/// a failure is logged, not fatal.
fn pin_to_cpu(cpu: usize) {
    match crate::cpu::pin_reactor(cpu) {
        Ok(()) => info!("reactor pinned to CPU {cpu}; helper threads use the other cores"),
        Err(e) => warn!("--cpu {cpu}: sched_setaffinity failed: {e}"),
    }
}

/// Binds an optional HTTP or HTTPS listener (`None` when that API is off): the listener and the
/// address it actually got (port 0 picks one).
fn bind_optional(
    addr: Option<SocketAddr>,
) -> Result<(Option<TcpListener>, Option<SocketAddr>), ServerError> {
    let Some(a) = addr else {
        return Ok((None, None));
    };
    let l = TcpListener::bind(a).map_err(|e| ServerError::BindHttp(a, e))?;
    widen_backlog(&l);
    let local = l.local_addr().map_err(ServerError::Io)?;
    Ok((Some(l), Some(local)))
}
