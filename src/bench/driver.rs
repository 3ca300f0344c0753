//! A generator thread: one `mio::Poll` driving many [`Conn`]s (closed-loop publishers and
//! consumers), so a handful of threads can keep hundreds of connections busy. Each thread owns
//! its [`Recorder`]; the shared state it touches is a few relaxed atomics per loop pass.
//!
//! Loop pass: poll (10 ms timeout, so control changes are seen promptly) → for each event read
//! until `WouldBlock`, handle frames, refill the publisher window, write → if publishing just
//! started, fill every publisher → add this pass's counts to [`Progress`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use super::conn::{Conn, Delta, Role};
use super::link::Dialer;
use super::stats::{Progress, Recorder};
use super::{BenchError, Control};

/// Poll timeout: how late a thread may notice a change of [`Control`] when its sockets are idle.
const POLL_TIMEOUT: Duration = Duration::from_millis(10);
/// Readiness events fetched per poll.
const EVENTS: usize = 1024;

/// One connection to open: its role and the channel it subscribes to (consumers).
#[derive(Debug)]
pub struct Plan {
    /// Publisher or consumer state.
    pub role: Role,
    /// Channel for a consumer's SUB.
    pub channel: String,
}

/// Connects every planned connection, then runs the loop until [`Control::stop`].
///
/// # Errors
/// The first connection failure, socket error, protocol error or fatal server error.
pub fn run(
    dialer: &Dialer,
    topic: &str,
    rdy: u64,
    plans: Vec<Plan>,
    control: &Control,
    progress: &Progress,
) -> Result<Recorder, BenchError> {
    let mut poll = Poll::new().map_err(|e| BenchError::Run(format!("poll: {e}")))?;
    let mut conns = Vec::with_capacity(plans.len());
    for (i, plan) in plans.into_iter().enumerate() {
        let mut link = dialer.dial()?;
        poll.registry()
            .register(
                link.socket(),
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| BenchError::Run(format!("register: {e}")))?;
        conns.push(Conn::new(link, plan.role, topic, &plan.channel, rdy));
    }
    event_loop(&mut poll, &mut conns, control, progress)
}

fn event_loop(
    poll: &mut Poll,
    conns: &mut [Conn],
    control: &Control,
    progress: &Progress,
) -> Result<Recorder, BenchError> {
    let origin = control.origin;
    let clock = move || ns_since(origin);
    let mut rec = Recorder::new(u64::MAX);
    let mut events = Events::with_capacity(EVENTS);
    let mut was_publishing = false;
    for c in conns.iter_mut() {
        c.flush().map_err(io_err)?;
    }
    while !control.stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(POLL_TIMEOUT)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(BenchError::Run(format!("poll: {e}")));
        }
        rec.measure_from_ns = control.measure_from_ns.load(Ordering::Relaxed);
        let publishing = control.publishing.load(Ordering::Relaxed);
        let mut delta = Delta::default();
        for event in events.iter() {
            // A token is an index into `conns`, which never shrinks during the loop.
            let Some(conn) = conns.get_mut(event.token().0) else {
                continue;
            };
            if event.is_readable() {
                conn.on_readable(&clock, publishing, &mut rec, &mut delta)?;
            }
            conn.flush().map_err(io_err)?;
        }
        if publishing && !was_publishing {
            let now = clock();
            for conn in conns.iter_mut() {
                conn.fill(now, &mut delta);
                conn.flush().map_err(io_err)?;
            }
        }
        was_publishing = publishing;
        rec.sent += delta.sent;
        Progress::add(&progress.published, delta.published);
        Progress::add(&progress.consumed, delta.consumed);
        Progress::add(&progress.requeued, delta.requeued);
        Progress::add(&progress.sent, delta.sent);
        Progress::add(&control.subscribed, delta.subscribed);
    }
    Ok(rec)
}

fn io_err(e: std::io::Error) -> BenchError {
    BenchError::Run(format!("write: {e}"))
}

/// Nanoseconds since `origin` (a run is far shorter than the 584 years a u64 holds).
#[inline]
pub fn ns_since(origin: Instant) -> u64 {
    origin.elapsed().as_nanos() as u64
}
