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
    let gap_ns = 1_000_000_000 / rate;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let out = vec![b'x'; MSG * MAX_BATCH];
    let mut input = vec![0u8; 64 * 1024];
    let (mut sent, mut echoed_bytes, mut echoed) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let due = |i: u64| Duration::from_nanos(i * gap_ns);
    while echoed < total {
        let now = start.elapsed();
        let mut batch = 0;
        while sent + (batch as u64) < total && due(sent + batch as u64) <= now && batch < MAX_BATCH
        {
            batch += 1;
        }
        let mut written = 0;
        while written < batch * MSG {
            match conn.write(&out[written..batch * MSG]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    read_echoes(conn, &mut input, &mut echoed_bytes, &mut echoed, &mut |i| {
                        record(&mut hist, start.elapsed(), due(i))
                    })?;
                }
                Err(e) => return Err(e),
            }
        }
        sent += batch as u64;
        read_echoes(conn, &mut input, &mut echoed_bytes, &mut echoed, &mut |i| {
            record(&mut hist, start.elapsed(), due(i))
        })?;
    }
    Ok(hist)
}

/// Reads whatever has come back and calls `done(i)` for every message `i` now complete.
fn read_echoes(
    conn: &mut TcpStream,
    input: &mut [u8],
    echoed_bytes: &mut u64,
    echoed: &mut u64,
    done: &mut dyn FnMut(u64),
) -> io::Result<()> {
    match conn.read(input) {
        Ok(0) => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "echo closed")),
        Ok(n) => {
            *echoed_bytes += n as u64;
            while *echoed_bytes >= (*echoed + 1) * MSG as u64 {
                done(*echoed);
                *echoed += 1;
            }
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(e),
    }
}

fn record(hist: &mut Histogram<u64>, now: Duration, due: Duration) {
    let ns = u64::try_from(now.saturating_sub(due).as_nanos()).unwrap_or(u64::MAX);
    hist.saturating_record(ns.max(1));
}

/// Pins the calling thread to `cpu` (a machine with fewer cores keeps the thread where it is).
fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write only inside it, and
    // sched_setaffinity reads it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}
