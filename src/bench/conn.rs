//! One generator connection driven by [`super::driver`]: a closed-loop publisher keeping up to
//! `--pipeline` PUB/MPUB commands outstanding, or a consumer that SUBs, sets RDY and FINs every
//! message (or REQs the `--req-ratio` share of them). Both own one read buffer and one write buffer for the life of the run, parse frames
//! in place and write everything a read pass produced in one `write` (batched FINs, batched
//! commands), so the hot path allocates nothing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::Arc;

use super::link::Link;
use super::stats::Recorder;
use super::wire::{self, PublishTemplate, ReqPicker, FRAME_ERROR, FRAME_MESSAGE, FRAME_RESPONSE};
use super::BenchError;
use crate::client::NON_FATAL_ERRORS;
use crate::protocol::HEARTBEAT;

/// Initial read buffer: many frames per `read` call, without a syscall per frame.
const READ_BUF: usize = 256 * 1024;

/// What the connection does.
#[derive(Debug)]
pub enum Role {
    /// A closed-loop publisher.
    Publisher(Publisher),
    /// A consumer of one channel.
    Consumer(Consumer),
}

/// Closed-loop publishing state.
#[derive(Debug)]
pub struct Publisher {
    /// The command to send, shared by every publisher of the run.
    pub template: Arc<PublishTemplate>,
    /// Commands allowed in flight (`--pipeline`).
    pub pipeline: usize,
    /// Commands still to send under `--count`; `None` with `--duration`.
    pub quota: Option<u64>,
    /// Send time (ns since origin) of each outstanding command, oldest first: replies carry no
    /// correlation ID, so the n-th `OK` answers the n-th command.
    pub sent_at: VecDeque<u64>,
    /// Sequence number of the next body (`--unique-bodies`): publisher `i` starts at
    /// `i << 40`, so the publishers of a run never share one.
    pub next_seq: u64,
}

/// Consuming state.
#[derive(Debug)]
pub struct Consumer {
    /// True once SUB's `OK` came back.
    pub subscribed: bool,
    /// Record receive − stamp latency (only when this run's publishers stamped the bodies).
    pub record_latency: bool,
    /// Which deliveries are answered REQ 0 instead of FIN (`--req-ratio`).
    pub req: ReqPicker,
}

/// What one pass over a connection produced, for the shared progress counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delta {
    /// Messages acknowledged.
    pub published: u64,
    /// Messages received.
    pub consumed: u64,
    /// Deliveries answered REQ.
    pub requeued: u64,
    /// Messages written.
    pub sent: u64,
    /// SUBs acknowledged.
    pub subscribed: u64,
}

/// A non-blocking connection with its buffers.
#[derive(Debug)]
pub struct Conn {
    /// The socket (registered with the driver's `Poll`) and its layers, if any.
    link: Link,
    /// Received bytes; `rbuf[..rlen]` is valid, frames are parsed from the front.
    rbuf: Vec<u8>,
    rlen: usize,
    /// Bytes to send; `wbuf[wpos..]` is still unsent.
    wbuf: Vec<u8>,
    wpos: usize,
    /// Publisher or consumer.
    pub role: Role,
}

impl Conn {
    /// Wraps a dialed link (the magic already sent) and queues the role's opening commands.
    pub fn new(link: Link, role: Role, topic: &str, channel: &str, rdy: u64) -> Conn {
        let mut wbuf = Vec::with_capacity(64 * 1024);
        if let Role::Consumer(_) = role {
            // Pipelined: nsqd processes commands in order, so RDY after SUB is valid.
            wbuf.extend_from_slice(format!("SUB {topic} {channel}\nRDY {rdy}\n").as_bytes());
        }
        Conn {
            link,
            rbuf: vec![0; READ_BUF],
            rlen: 0,
            wbuf,
            wpos: 0,
            role,
        }
    }

    /// Queues publish commands up to the pipeline window (and quota), stamped `now_ns`.
    pub fn fill(&mut self, now_ns: u64, delta: &mut Delta) {
        let Role::Publisher(p) = &mut self.role else {
            return;
        };
        while p.sent_at.len() < p.pipeline && p.quota != Some(0) {
            p.template.append(&mut self.wbuf, now_ns, p.next_seq);
            p.next_seq = p.next_seq.wrapping_add(p.template.batch() as u64);
            p.sent_at.push_back(now_ns);
            if let Some(q) = &mut p.quota {
                *q -= 1;
            }
            delta.sent += p.template.batch() as u64;
        }
    }

    /// Writes queued bytes until done or `WouldBlock` (the driver retries on `WRITABLE`),
    /// and what the link's layers still hold.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.wpos < self.wbuf.len() {
            match self.link.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.wbuf.clear();
        self.wpos = 0;
        self.link.flush_layers()
    }

    /// Reads until `WouldBlock`, handling every complete frame after each read. `clock`
    /// gives ns since the origin; it is read once per `read` call, the receive time of the
    /// frames it returned. `publishing` says whether publishers may send more.
    pub fn on_readable(
        &mut self,
        clock: &dyn Fn() -> u64,
        publishing: bool,
        rec: &mut Recorder,
        delta: &mut Delta,
    ) -> Result<(), BenchError> {
        loop {
            let ReadMore::Data { short } =
                read_more(&mut self.link, &mut self.rbuf, &mut self.rlen)?
            else {
                return Ok(());
            };
            let now = clock();
            self.handle_frames(now, rec, delta)?;
            if publishing {
                self.fill(now, delta);
            }
            // A short read drained the socket: data arriving later raises a new edge, so the
            // read that would only return `WouldBlock` is skipped (one syscall per wake-up).
            if short {
                return Ok(());
            }
        }
    }

    /// Handles every complete frame in `rbuf`, then moves the partial tail to the front.
    fn handle_frames(
        &mut self,
        now: u64,
        rec: &mut Recorder,
        delta: &mut Delta,
    ) -> Result<(), BenchError> {
        let mut pos = 0;
        while let Some((frame, used)) = wire::scan_frame(&self.rbuf[pos..self.rlen])
            .map_err(|e| BenchError::Run(format!("protocol error: {}", e.0)))?
        {
            pos += used;
            match frame.frame_type {
                FRAME_RESPONSE if frame.data == HEARTBEAT => self.wbuf.extend_from_slice(b"NOP\n"),
                FRAME_RESPONSE => on_response(&mut self.role, frame.data, now, rec, delta)?,
                FRAME_MESSAGE => {
                    on_message(&mut self.role, frame.data, &mut self.wbuf, now, rec, delta);
                }
                FRAME_ERROR => on_error(frame.data)?,
                other => return Err(BenchError::Run(format!("unknown frame type {other}"))),
            }
        }
        self.rbuf.copy_within(pos..self.rlen, 0);
        self.rlen -= pos;
        Ok(())
    }
}

/// A delivery: answered FIN (latency recorded: this delivery ends the message's trip) or,
/// for the `--req-ratio` share, REQ 0 (counted; the redelivery is timed when it is FIN'd).
fn on_message(
    role: &mut Role,
    data: &[u8],
    wbuf: &mut Vec<u8>,
    now: u64,
    rec: &mut Recorder,
    delta: &mut Delta,
) {
    let (id, body) = wire::message_parts(data);
    rec.consumed.add(1, now, rec.measure_from_ns);
    delta.consumed += 1;
    let Role::Consumer(c) = role else {
        wire::append_fin(wbuf, id);
        return;
    };
    if c.req.pick() {
        wire::append_req(wbuf, id);
        rec.requeued += 1;
        delta.requeued += 1;
        return;
    }
    wire::append_fin(wbuf, id);
    if let (true, Some(stamp)) = (c.record_latency, wire::read_stamp(body)) {
        Recorder::latency(&mut rec.e2e, now, stamp, rec.measure_from_ns);
    }
}

/// A response frame other than a heartbeat: the `OK` to a publish, or to SUB.
fn on_response(
    role: &mut Role,
    data: &[u8],
    now: u64,
    rec: &mut Recorder,
    delta: &mut Delta,
) -> Result<(), BenchError> {
    match role {
        Role::Publisher(p) if data == b"OK" => {
            let Some(sent) = p.sent_at.pop_front() else {
                return Err(BenchError::Run("an OK with no publish outstanding".into()));
            };
            let batch = p.template.batch() as u64;
            rec.published.add(batch, now, rec.measure_from_ns);
            Recorder::latency(&mut rec.ack, now, sent, rec.measure_from_ns);
            delta.published += batch;
            Ok(())
        }
        Role::Consumer(c) if !c.subscribed && data == b"OK" => {
            c.subscribed = true;
            delta.subscribed += 1;
            Ok(())
        }
        _ => Err(BenchError::Run(format!(
            "unexpected response {:?}",
            String::from_utf8_lossy(data)
        ))),
    }
}

/// An error frame: fatal ones end the run; the non-fatal ones (a FIN for a message that timed
/// out, say) are logged and the run goes on.
fn on_error(data: &[u8]) -> Result<(), BenchError> {
    let text = String::from_utf8_lossy(data);
    let code = text.split(' ').next().unwrap_or("");
    if NON_FATAL_ERRORS.contains(&code) {
        log::warn!("server: {text}");
        Ok(())
    } else {
        Err(BenchError::Run(format!("server error: {text}")))
    }
}

/// What one [`read_more`] brought.
pub(super) enum ReadMore {
    /// `WouldBlock`: the socket is drained.
    Drained,
    /// Bytes were appended; `short` if they did not fill the buffer, i.e. the read drained the
    /// socket (with an edge-triggered poll, later data raises a new edge, so the read that
    /// would only return `WouldBlock` can be skipped).
    Data { short: bool },
}

/// One `read` from `link` into `rbuf[*rlen..]`, advancing `*rlen`; a full buffer is doubled
/// first (a frame larger than it: sizes are capped by `scan_frame`'s `MAX_FRAME_SIZE` check
/// before they get here).
///
/// # Errors
/// The server closed the connection, or the read failed.
pub(super) fn read_more(
    link: &mut Link,
    rbuf: &mut Vec<u8>,
    rlen: &mut usize,
) -> Result<ReadMore, BenchError> {
    if *rlen == rbuf.len() {
        let len = rbuf.len();
        rbuf.resize(len * 2, 0);
    }
    loop {
        match link.read(&mut rbuf[*rlen..]) {
            Ok(0) => return Err(BenchError::Run("server closed the connection".into())),
            Ok(n) => {
                let short = *rlen + n < rbuf.len();
                *rlen += n;
                return Ok(ReadMore::Data { short });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadMore::Drained),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BenchError::Run(format!("read: {e}"))),
        }
    }
}
