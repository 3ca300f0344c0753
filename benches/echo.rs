//! The machine's own latency floor: one TCP connection over loopback, an echo thread pinned to
//! core 0 that blocks in `read` and writes back what it got, and a client pinned to core 1
//! that sends 200-byte messages on a fixed schedule (open loop, every message due at
//! `start + i / rate`, late ones sent in one write) and spins on a non-blocking read for the
//! echoes. It prints the round trip from each message's due time by percentile.
//!
//! That is one hop fewer than `corq bench e2e` measures through a server (publisher → server →
//! consumer), with no server work at all, so a tail this shows is the machine's (scheduler,
//! hypervisor, loopback), not any server's.
//!
//! ```text
//! cargo bench --bench echo -- 50000 10          # rate (msg/s) and seconds; prints p50 … max
//! cargo bench --bench echo -- 50000 10 --spin   # the echo thread spins instead of blocking
//! ```
//!
//! With `--spin` neither side ever sleeps, so no wake-up is on the path: what tail is left
//! comes from the threads losing their cores (to the host, or to the guest's own interrupts).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const MSG: usize = 200;
/// At most this many due messages go out in one write.
const MAX_BATCH: usize = 4096;

fn main() -> io::Result<()> {
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rate = numbers.first().copied().unwrap_or(50_000).max(1);
    let secs = numbers.get(1).copied().unwrap_or(10).max(1);
    let spin = std::env::args().any(|a| a == "--spin");
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || echo(&listener, spin));
    pin(1);
    let mut conn = TcpStream::connect(addr)?;
    conn.set_nodelay(true)?;
    conn.set_nonblocking(true)?;
    let hist = run(&mut conn, rate, secs)?;
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    println!(
        "echo{} at {rate} msg/s for {secs} s: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, \
         p99.99 {:.1} µs, max {:.1} µs",
        if spin { " (spinning)" } else { "" },
        us(0.5),
        us(0.99),
        us(0.999),
        us(0.9999),
        hist.max() as f64 / 1e3
    );
    Ok(())
}

/// The server side: pinned to core 0, each read written straight back; blocking reads, or
/// with `spin` non-blocking ones retried at once.
fn echo(listener: &TcpListener, spin: bool) -> io::Result<()> {
    pin(0);
    let (mut conn, _) = listener.accept()?;
    conn.set_nodelay(true)?;
    conn.set_nonblocking(spin)?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut written = 0;
        while written < n {
            match conn.write(&buf[written..n]) {
                Ok(w) => written += w,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// The client: sends on schedule, reads what came back, records each round trip in ns.
fn run(conn: &mut TcpStream, rate: u64, secs: u64) -> io::Result<Histogram<u64>> {
    let total = rate * secs;
    let out = vec![b'x'; MSG * MAX_BATCH];
    let mut echoes = Echoes {
        input: vec![0u8; 64 * 1024],
        bytes: 0,
        count: 0,
        hist: Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        start: Instant::now(),
        gap_ns: 1_000_000_000 / rate,
    };
    let mut sent = 0u64;
    while echoes.count < total {
        let now = echoes.start.elapsed();
        let mut batch = 0;
        while sent + (batch as u64) < total
            && echoes.due(sent + batch as u64) <= now
            && batch < MAX_BATCH
        {
            batch += 1;
        }
        let mut written = 0;
        while written < batch * MSG {
            match conn.write(&out[written..batch * MSG]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => echoes.read(conn)?,
                Err(e) => return Err(e),
            }
        }
        sent += batch as u64;
        echoes.read(conn)?;
    }
    Ok(echoes.hist)
}

/// The receiving side of the client: what has come back so far, and the round trips.
struct Echoes {
    input: Vec<u8>,
    /// Bytes echoed so far, and the whole messages among them.
    bytes: u64,
    count: u64,
    hist: Histogram<u64>,
    start: Instant,
    gap_ns: u64,
}

impl Echoes {
    /// When message `i` was due to be sent, from the start.
    fn due(&self, i: u64) -> Duration {
        Duration::from_nanos(i * self.gap_ns)
    }

    /// Reads whatever has come back and records the round trip of every message now whole.
    fn read(&mut self, conn: &mut TcpStream) -> io::Result<()> {
        match conn.read(&mut self.input) {
            Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "echo closed")),
            Ok(n) => {
                self.bytes += n as u64;
                let now = self.start.elapsed();
                while self.bytes >= (self.count + 1) * MSG as u64 {
                    let due = self.due(self.count);
                    record(&mut self.hist, now, due);
                    self.count += 1;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn record(hist: &mut Histogram<u64>, now: Duration, due: Duration) {
    let ns = u64::try_from(now.saturating_sub(due).as_nanos()).unwrap_or(u64::MAX);
    hist.saturating_record(ns.max(1));
}

/// Pins the calling thread to `cpu`; on a machine without that core it stays where it is.
fn pin(cpu: usize) {
    if let Err(e) = corq::cpu::pin_current_thread(cpu) {
        eprintln!("echo: not pinned to core {cpu}: {e}");
    }
}
