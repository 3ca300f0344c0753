//! The open-loop publisher (`e2e`, and `pub`/`pubsub` with `--rate`): one thread sends message
//! `k` at its intended time `start + k / rate`, whatever the server does. If the thread falls
//! behind (a stalled server, a full socket) it sends the overdue messages at once, but each
//! body still carries its *intended* time, so consumers measure receive − intended and a stall
//! shows up in the percentiles instead of silently slowing the schedule (coordinated omission).
//!
//! Commands go round-robin over the connections, `--batch` messages each (a batch leaves when
//! its last message is due). The `OK` for command `j` is matched by order on its connection,
//! so its ack latency is measured from the intended time of its last message, with no shared
//! state. Waits use `ppoll` with a nanosecond timeout (and 1 ns timer slack), waking early
//! when an `OK` arrives, so `OK`s are timed when they come rather than at the next send.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::driver::ns_since;
use super::stats::{Progress, Recorder};
use super::wire::{self, PublishTemplate, FRAME_ERROR, FRAME_RESPONSE};
use super::{BenchError, Control};
use crate::protocol::{HEARTBEAT, MAGIC_V2};

/// Longest single wait, so control changes (stop) are seen promptly.
const MAX_WAIT_NS: u64 = 10_000_000;

/// One paced connection.
#[derive(Debug)]
struct Paced {
    stream: TcpStream,
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

/// Runs the paced publishers until the schedule ends (`--count`, or publishing switched off),
/// then waits for the outstanding `OK`s.
///
/// # Errors
/// Connection, socket or protocol errors, and fatal server errors.
pub fn run(
    addr: SocketAddr,
    connections: usize,
    template: &PublishTemplate,
    rate: u64,
    commands: Option<u64>,
    control: &Control,
    progress: &Progress,
) -> Result<Recorder, BenchError> {
    let result = paced(
        addr,
        connections,
        template,
        rate,
        commands,
        control,
        progress,
    );
    if result.is_err() {
        control.stop.store(true, Ordering::Relaxed);
    }
    result
}

fn paced(
    addr: SocketAddr,
    connections: usize,
    template: &PublishTemplate,
    rate: u64,
    commands: Option<u64>,
    control: &Control,
    progress: &Progress,
) -> Result<Recorder, BenchError> {
    set_timer_slack();
    let mut conns = (0..connections)
        .map(|_| Paced::connect(addr))
        .collect::<Result<Vec<_>, _>>()?;
    if !wait_for_start(control) {
        return Ok(Recorder::new(u64::MAX));
    }
    let origin = control.origin;
    let sched = Schedule {
        start_ns: ns_since(origin),
        rate,
        batch: template.batch() as u64,
    };
    let mut rec = Recorder::new(control.measure_from_ns.load(Ordering::Relaxed));
    let n = conns.len() as u64;
    let mut next = 0u64; // the next command to send
    let mut waiter = Waiter::default();
    loop {
        if control.stop.load(Ordering::Relaxed) {
            break;
        }
        let sending = control.publishing.load(Ordering::Relaxed) && commands != Some(next);
        let sent = if sending {
            let due = Due {
                now: ns_since(origin),
                last: commands,
            };
            queue_due(&mut conns, template, &sched, &mut next, due)
        } else {
            0
        };
        rec.sent += sent;
        Progress::add(&progress.sent, sent);
        for c in conns.iter_mut().filter(|c| c.wpos < c.wbuf.len()) {
            c.flush()?;
        }
        if !sending && conns.iter().all(|c| c.acked == c.sent) {
            break;
        }
        let wait = if sending {
            sched.command_due(next).saturating_sub(ns_since(origin))
        } else {
            MAX_WAIT_NS
        };
        waiter.wait(&conns, wait.min(MAX_WAIT_NS))?;
        let mut acked = 0;
        for (i, c) in conns.iter_mut().enumerate() {
            if waiter.ready(i) {
                acked += c.read_oks(i as u64, n, &sched, &mut rec, origin)?;
            }
        }
        Progress::add(&progress.published, acked);
    }
    Ok(rec)
}

/// Waits until publishing opens; false if the run stopped first.
fn wait_for_start(control: &Control) -> bool {
    while !control.publishing.load(Ordering::Relaxed) {
        if control.stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
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
        template.append_stamped(&mut c.wbuf, |i| sched.intended(first + i as u64));
        c.sent += 1;
        *next += 1;
        sent += sched.batch;
    }
    sent
}

impl Paced {
    fn connect(addr: SocketAddr) -> Result<Paced, BenchError> {
        let stream = TcpStream::connect(addr)
            .and_then(|s| s.set_nodelay(true).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .map_err(|e| BenchError::Run(format!("cannot connect to {addr}: {e}")))?;
        Ok(Paced {
            stream,
            wbuf: MAGIC_V2.to_vec(),
            wpos: 0,
            rbuf: vec![0; 64 * 1024],
            rlen: 0,
            sent: 0,
            acked: 0,
        })
    }

    /// One write of what is pending; a partial write leaves the rest for the next pass
    /// (`ppoll` watches `POLLOUT` while bytes are pending).
    fn flush(&mut self) -> Result<(), BenchError> {
        match self.stream.write(&self.wbuf[self.wpos..]) {
            Ok(0) => return Err(BenchError::Run("write returned 0".into())),
            Ok(k) => self.wpos += k,
            // The server is not reading (stalled): keep the bytes, the schedule goes on.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BenchError::Run(format!("write: {e}"))),
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        }
        Ok(())
    }

    /// Reads once and times every `OK` that read completed. Connection `index` of `n` carries
    /// commands `index, index + n, …`, so its `m`-th `OK` answers command `m × n + index`.
    ///
    /// One read per wake-up: `ppoll` is level-triggered, so anything left is reported again at
    /// once, and a second read that would only say `WouldBlock` costs a syscall per message at
    /// low rates.
    fn read_oks(
        &mut self,
        index: u64,
        n: u64,
        sched: &Schedule,
        rec: &mut Recorder,
        origin: std::time::Instant,
    ) -> Result<u64, BenchError> {
        if self.rlen == self.rbuf.len() {
            let len = self.rbuf.len();
            self.rbuf.resize(len * 2, 0);
        }
        let got = match self.stream.read(&mut self.rbuf[self.rlen..]) {
            Ok(0) => return Err(BenchError::Run("server closed the connection".into())),
            Ok(k) => k,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                return Ok(0)
            }
            Err(e) => return Err(BenchError::Run(format!("read: {e}"))),
        };
        self.rlen += got;
        let now = ns_since(origin);
        let (mut pos, mut acked) = (0, 0);
        while let Some((f, used)) = wire::scan_frame(&self.rbuf[pos..self.rlen])
            .map_err(|e| BenchError::Run(format!("protocol error: {}", e.0)))?
        {
            pos += used;
            match (f.frame_type, f.data) {
                (FRAME_RESPONSE, HEARTBEAT) => self.wbuf.extend_from_slice(b"NOP\n"),
                (FRAME_RESPONSE, b"OK") => {
                    let due = sched.command_due(self.acked * n + index);
                    Recorder::latency(&mut rec.ack, now, due, rec.measure_from_ns);
                    rec.published.add(sched.batch, now, rec.measure_from_ns);
                    self.acked += 1;
                    acked += sched.batch;
                }
                (FRAME_ERROR, text) => {
                    let text = String::from_utf8_lossy(text);
                    return Err(BenchError::Run(format!("server error: {text}")));
                }
                (_, data) => {
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

/// `ppoll` over the paced connections, its `pollfd` array kept between calls.
#[derive(Debug, Default)]
struct Waiter {
    fds: Vec<libc::pollfd>,
}

impl Waiter {
    /// Sleeps up to `ns` (0: just checks), waking early when a connection has bytes to read
    /// or, with bytes pending, can write again.
    fn wait(&mut self, conns: &[Paced], ns: u64) -> Result<(), BenchError> {
        self.fds.clear();
        self.fds.extend(conns.iter().map(|c| libc::pollfd {
            fd: c.stream.as_raw_fd(),
            events: libc::POLLIN
                | if c.wpos < c.wbuf.len() {
                    libc::POLLOUT
                } else {
                    0
                },
            revents: 0,
        }));
        let ts = libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that we own for the call; the
        // timespec lives on the stack; a null sigmask leaves the signal mask unchanged.
        let r = unsafe {
            libc::ppoll(
                self.fds.as_mut_ptr(),
                self.fds.len() as libc::nfds_t,
                &ts,
                std::ptr::null(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(BenchError::Run(format!("ppoll: {e}")));
            }
            self.fds.iter_mut().for_each(|f| f.revents = 0);
        }
        Ok(())
    }

    /// True when connection `i` had an event (readable, error or hang-up: reading tells which).
    fn ready(&self, i: usize) -> bool {
        self.fds
            .get(i)
            .is_some_and(|f| f.revents & !libc::POLLOUT != 0)
    }
}

/// Asks for 1 ns timer slack on this thread: the default 50 µs would add up to 50 µs of
/// lateness to every scheduled send, which is the order of the latencies being measured.
fn set_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong);
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
