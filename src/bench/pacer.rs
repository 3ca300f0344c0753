//! The open-loop publisher (`e2e`, and `pub`/`pubsub` with `--rate`) and, in the same thread,
//! the consumers of the first generator thread. Message `k` is due at `start + k / rate`,
//! whatever the server does. If the thread falls behind (a stalled server, a full socket) it
//! sends the overdue messages at once, but each body still carries its *intended* time, so
//! consumers measure receive − intended and a stall shows up in the percentiles instead of
//! silently slowing the schedule (coordinated omission).
//!
//! The thread never sleeps while publishing is open: one pass reads the clock, appends every
//! command due by then to its connection's write buffer (one `write` per connection with
//! bytes pending), then polls every socket with a zero timeout and handles what arrived:
//! `OK`s (timed from the intended time) and message frames (timed from the stamp, FINed in
//! one write per read pass). Sleeping between messages cost two cross-core wake-ups per
//! message (pacer, then consumer), about 16–18 µs of CPU each and milliseconds of tail; a
//! spinning thread on its own core pays none. Its CPU therefore reads ~100 % by design.
//!
//! With `--spin false` the same thread sleeps instead until the next message is due or a
//! socket is ready: `ppoll` on the epoll descriptor with a nanosecond timeout and 1 ns timer
//! slack. That costs a wake-up per message, but fares better than spinning on a core that
//! other processes share (a spinning thread loses whole scheduler slices to them).
//!
//! Commands go round-robin over the publisher connections, `--batch` messages each (a batch
//! leaves when its last message is due). The `OK` for command `j` is matched by order on its
//! connection, so its ack latency is measured from the intended time of its last message, with
//! no shared state.

use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};

use super::conn::{read_more, Conn, Delta, ReadMore};
use super::driver::{ns_since, Plan};
use super::link::{Dialer, Link};
use super::stats::{Progress, Recorder};
use super::wire::{self, PublishTemplate, FRAME_ERROR, FRAME_RESPONSE};
use super::{BenchError, Control};
use crate::protocol::HEARTBEAT;

/// Poll timeout before publishing opens and after the schedule is done (only consumers'
/// stragglers are left): no schedule to keep, so the thread may sleep.
const IDLE_POLL: Duration = Duration::from_millis(1);
/// Readiness events fetched per poll.
const EVENTS: usize = 1024;
/// Initial read buffer of a publisher connection (it only receives `OK`s).
const READ_BUF: usize = 64 * 1024;
/// Longest sleep with `--spin false`, so control changes (stop) are seen promptly.
const MAX_SLEEP_NS: u64 = 10_000_000;

/// One paced connection.
#[derive(Debug)]
struct Paced {
    link: Link,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: Vec<u8>,
    rlen: usize,
    /// Commands written on this connection, and commands answered.
    sent: u64,
    acked: u64,
}

/// The schedule: `rate` messages per second from `start_ns`, `batch` per command.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Intended time of message 0, ns since the origin.
    pub start_ns: u64,
    /// Messages per second.
    pub rate: u64,
    /// Messages per command.
    pub batch: u64,
}

impl Schedule {
    /// Intended send time of message `k` (exact integer arithmetic: no drift over long runs).
    pub fn intended(&self, k: u64) -> u64 {
        self.start_ns + (u128::from(k) * 1_000_000_000 / u128::from(self.rate)) as u64
    }

    /// Intended send time of command `j`: when its last message is due.
    pub fn command_due(&self, j: u64) -> u64 {
        self.intended((j + 1) * self.batch - 1)
    }
}

/// What the paced thread publishes.
#[derive(Debug)]
pub struct PacedLoad<'a> {
    /// Publisher connections, commands round-robin over them.
    pub connections: usize,
    /// The command to send.
    pub template: &'a PublishTemplate,
    /// Messages per second.
    pub rate: u64,
    /// Commands to send under `--count`; `None` with `--duration`.
    pub commands: Option<u64>,
    /// Poll without sleeping while the schedule runs (`--spin`), else sleep until due.
    pub spin: bool,
}

/// Runs the paced publishers, and the consumers in `consumers`, until [`Control::stop`].
///
/// # Errors
/// Connection, socket or protocol errors, and fatal server errors.
pub fn run(
    dialer: &Dialer,
    load: &PacedLoad<'_>,
    consumers: Vec<Plan>,
    (topic, rdy): (&str, u64),
    control: &Control,
    progress: &Progress,
) -> Result<Recorder, BenchError> {
    set_timer_slack();
    let poll = Poll::new().map_err(|e| BenchError::Run(format!("poll: {e}")))?;
    let mut paced = Vec::with_capacity(load.connections);
    for i in 0..load.connections {
        let mut link = dialer.dial()?;
        // WRITABLE: a write left pending by a full socket is retried when space frees up.
        let both = Interest::READABLE | Interest::WRITABLE;
        register(&poll, link.socket(), i, both)?;
        paced.push(Paced::new(link));
    }
    let mut subs = Vec::with_capacity(consumers.len());
    for (i, plan) in consumers.into_iter().enumerate() {
        let mut link = dialer.dial()?;
        let both = Interest::READABLE | Interest::WRITABLE;
        register(&poll, link.socket(), load.connections + i, both)?;
        subs.push(Conn::new(link, plan.role, topic, &plan.channel, rdy));
    }
    for c in &mut subs {
        c.flush().map_err(io_err)?;
    }
    let mut spin = Spin {
        poll,
        events: Events::with_capacity(EVENTS),
        paced,
        subs,
        rec: Recorder::new(u64::MAX),
    };
    spin.run(load, control, progress)?;
    Ok(spin.rec)
}

fn register(
    poll: &Poll,
    s: &mut mio::net::TcpStream,
    token: usize,
    i: Interest,
) -> Result<(), BenchError> {
    poll.registry()
        .register(s, Token(token), i)
        .map_err(|e| BenchError::Run(format!("register: {e}")))
}

fn io_err(e: io::Error) -> BenchError {
    BenchError::Run(format!("write: {e}"))
}

/// The spinning thread's state: tokens `0..paced.len()` are publishers, the rest consumers.
struct Spin {
    poll: Poll,
    events: Events,
    paced: Vec<Paced>,
    subs: Vec<Conn>,
    rec: Recorder,
}

impl Spin {
    fn run(
        &mut self,
        load: &PacedLoad<'_>,
        control: &Control,
        progress: &Progress,
    ) -> Result<(), BenchError> {
        let origin = control.origin;
        let clock = move || ns_since(origin);
        let n = self.paced.len() as u64;
        let mut sched: Option<Schedule> = None;
        let mut next = 0u64; // the next command to send
        let mut done = false; // the schedule is over and every command answered
        while !control.stop.load(Ordering::Relaxed) {
            let publishing = control.publishing.load(Ordering::Relaxed);
            // Read every pass, as the driver threads do: with relaxed loads, `publishing`
            // may be seen before the warm-up's end is.
            self.rec.measure_from_ns = control.measure_from_ns.load(Ordering::Relaxed);
            if publishing && sched.is_none() {
                sched = Some(Schedule {
                    start_ns: clock(),
                    rate: load.rate,
                    batch: load.template.batch() as u64,
                });
            }
            let mut delta = Delta::default();
            let sending = publishing && load.commands != Some(next);
            if let (Some(s), true) = (&sched, sending) {
                let due = Due {
                    now: clock(),
                    last: load.commands,
                };
                delta.sent = queue_due(&mut self.paced, load.template, s, &mut next, due);
            }
            for c in self.paced.iter_mut().filter(|c| c.has_output()) {
                c.flush()?;
            }
            let waiting = sched.is_some() && !done;
            let timeout = match (&sched, waiting) {
                (Some(s), true) if !load.spin => {
                    let until = if sending {
                        s.command_due(next).saturating_sub(clock())
                    } else {
                        MAX_SLEEP_NS
                    };
                    sleep_until_ready(&self.poll, until.min(MAX_SLEEP_NS))?;
                    Duration::ZERO
                }
                (_, true) => Duration::ZERO,
                (_, false) => IDLE_POLL,
            };
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(BenchError::Run(format!("poll: {e}")));
                }
            }
            for event in self.events.iter() {
                let t = event.token().0;
                if let Some(c) = self.paced.get_mut(t) {
                    let s = sched.as_ref();
                    delta.published += c.read_oks(t as u64, n, s, &mut self.rec, origin)?;
                } else if let Some(c) = self.subs.get_mut(t - self.paced.len()) {
                    if event.is_readable() {
                        c.on_readable(&clock, false, &mut self.rec, &mut delta)?;
                    }
                    c.flush().map_err(io_err)?;
                }
            }
            if sched.is_some() && !sending {
                done = self.paced.iter().all(|c| c.acked == c.sent);
            }
            self.rec.sent += delta.sent;
            Progress::add(&progress.published, delta.published);
            Progress::add(&progress.consumed, delta.consumed);
            Progress::add(&progress.requeued, delta.requeued);
            Progress::add(&progress.sent, delta.sent);
            Progress::add(&control.subscribed, delta.subscribed);
        }
        Ok(())
    }
}

/// Sleeps up to `ns` or until the epoll descriptor of `poll` has an event (`--spin false`).
/// `ppoll` takes a nanosecond timeout where `epoll_wait` rounds up to whole milliseconds.
fn sleep_until_ready(poll: &Poll, ns: u64) -> Result<(), BenchError> {
    if ns == 0 {
        return Ok(());
    }
    let mut fd = libc::pollfd {
        fd: poll.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: one valid pollfd we own for the call; the timespec lives on the stack; a null
    // sigmask leaves the signal mask unchanged.
    let r = unsafe { libc::ppoll(&mut fd, 1, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(BenchError::Run(format!("ppoll: {e}")));
        }
    }
    Ok(())
}

/// Asks for 1 ns timer slack on this thread: the default 50 µs would add up to 50 µs of
/// lateness to every sleeping send (`--spin false`), the order of the latencies measured.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
    }
}

/// The moment of a queueing pass, and the command count not to reach (`--count`).
struct Due {
    now: u64,
    last: Option<u64>,
}

/// Appends every command due by `due.now`, round-robin over the connections, each message
/// stamped with its own intended time. Returns the messages queued.
fn queue_due(
    conns: &mut [Paced],
    template: &PublishTemplate,
    sched: &Schedule,
    next: &mut u64,
    due: Due,
) -> u64 {
    let n = conns.len() as u64;
    let mut sent = 0;
    while due.last != Some(*next) && sched.command_due(*next) <= due.now {
        let first = *next * sched.batch;
        let c = &mut conns[(*next % n) as usize];
        // The message index is the sequence number: unique over the run (`--unique-bodies`).
        template.append_stamped(&mut c.wbuf, |i| sched.intended(first + i as u64), first);
        c.sent += 1;
        *next += 1;
        sent += sched.batch;
    }
    sent
}

impl Paced {
    fn new(link: Link) -> Paced {
        Paced {
            link,
            wbuf: Vec::with_capacity(READ_BUF),
            wpos: 0,
            rbuf: vec![0; READ_BUF],
            rlen: 0,
            sent: 0,
            acked: 0,
        }
    }

    /// Commands not yet written, or bytes the link's layers still hold.
    fn has_output(&self) -> bool {
        self.wpos < self.wbuf.len() || self.link.layers_pending()
    }

    /// One write of what is pending; a partial write leaves the rest for the next pass.
    fn flush(&mut self) -> Result<(), BenchError> {
        if self.wpos < self.wbuf.len() {
            match self.link.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(BenchError::Run("write returned 0".into())),
                Ok(k) => self.wpos += k,
                // The server is not reading (stalled): keep the bytes, the schedule goes on.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(BenchError::Run(format!("write: {e}"))),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
            self.link.flush_layers().map_err(io_err)?;
        }
        Ok(())
    }

    /// Reads until the socket is drained (the poll is edge-triggered) and times every `OK`.
    /// Connection `index` of `n` carries commands `index, index + n, …`, so its `m`-th `OK`
    /// answers command `m × n + index`. Returns the messages acknowledged.
    fn read_oks(
        &mut self,
        index: u64,
        n: u64,
        sched: Option<&Schedule>,
        rec: &mut Recorder,
        origin: std::time::Instant,
    ) -> Result<u64, BenchError> {
        let mut acked = 0;
        loop {
            let ReadMore::Data { short } =
                read_more(&mut self.link, &mut self.rbuf, &mut self.rlen)?
            else {
                return Ok(acked);
            };
            acked += self.handle_frames(index, n, sched, rec, ns_since(origin))?;
            if short {
                return Ok(acked);
            }
        }
    }

    fn handle_frames(
        &mut self,
        index: u64,
        n: u64,
        sched: Option<&Schedule>,
        rec: &mut Recorder,
        now: u64,
    ) -> Result<u64, BenchError> {
        let (mut pos, mut acked) = (0, 0);
        while let Some((f, used)) = wire::scan_frame(&self.rbuf[pos..self.rlen])
            .map_err(|e| BenchError::Run(format!("protocol error: {}", e.0)))?
        {
            pos += used;
            match (f.frame_type, f.data, sched) {
                (FRAME_RESPONSE, HEARTBEAT, _) => self.wbuf.extend_from_slice(b"NOP\n"),
                (FRAME_RESPONSE, b"OK", Some(sched)) if self.acked < self.sent => {
                    let due = sched.command_due(self.acked * n + index);
                    Recorder::latency(&mut rec.ack, now, due, rec.measure_from_ns);
                    rec.published.add(sched.batch, now, rec.measure_from_ns);
                    self.acked += 1;
                    acked += sched.batch;
                }
                (FRAME_ERROR, text, _) => {
                    let text = String::from_utf8_lossy(text);
                    return Err(BenchError::Run(format!("server error: {text}")));
                }
                (_, data, _) => {
                    let data = String::from_utf8_lossy(data);
                    return Err(BenchError::Run(format!("unexpected frame {data:?}")));
                }
            }
        }
        self.rbuf.copy_within(pos..self.rlen, 0);
        self.rlen -= pos;
        Ok(acked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_exact_and_batches_leave_with_their_last_message() {
        let s = Schedule {
            start_ns: 1000,
            rate: 3,
            batch: 2,
        };
        assert_eq!(s.intended(0), 1000);
        assert_eq!(s.intended(1), 1000 + 333_333_333);
        assert_eq!(s.intended(3), 1000 + 1_000_000_000);
        assert_eq!(s.command_due(0), s.intended(1));
        assert_eq!(s.command_due(1), s.intended(3));
        let fast = Schedule {
            start_ns: 0,
            rate: 1_000_000,
            batch: 1,
        };
        assert_eq!(fast.intended(3_000_000_000), 3_000_000_000_000);
    }
}
