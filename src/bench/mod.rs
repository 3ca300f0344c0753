//! `corq bench`: a load generator that speaks NSQ (plain, or over TLS, snappy or deflate), with
//! HDR-histogram latencies measured without coordinated omission. Point it at corqd or at any
//! nsqd.
//!
//! | file | owns |
//! |------|------|
//! | `mod.rs`    | [`BenchConfig`] and its validation, [`run`]: threads, merging the results |
//! | `cli.rs`    | [`cli::BenchArgs`], the `corq bench` flags, and [`cli::main`] |
//! | `wire.rs`   | pre-built PUB/MPUB frames with stamp (and sequence) slots, in-place frame scanning, FIN and REQ |
//! | `link.rs`   | a connection's stream: plain, or TLS/snappy/deflate through the server's layers ([`TransportOptions`]) |
//! | `conn.rs`   | one non-blocking connection: closed-loop publisher or consumer |
//! | `driver.rs` | a `mio` loop driving many connections from one thread |
//! | `pacer.rs`  | the open-loop publisher and its consumers in one (spinning) thread: a fixed schedule, intended times in the bodies |
//! | `supervise.rs` | the main thread during a run: start, warm-up, stop rules, the progress line |
//! | `stats.rs`  | per-thread recorders, shared progress counters, the [`Report`] and its summary |
//! | `hgrm.rs`   | HdrHistogram's percentile-distribution text (`--hgrm`) |
//! | `plot.rs`   | the latency-by-percentile SVG (`--plot`) |
//! | `output.rs` | writing `--json`, `--hgrm`, `--plot` |
//! | `probe.rs` | `corq disk-probe`: this disk's pwrite+fdatasync latency, the strict-mode ceiling |
//! | `sink.rs`   | a fake NSQ server: the generator's ceiling, and a server that stalls on purpose |
//!
//! Modes: `pub` (publishers only), `sub` (consumers draining a backlog), `pubsub` (both, on
//! `--channels` channels) and `e2e` (`pubsub` at a fixed `--rate`, one PUB per message).
//!
//! A run: consumers connect and SUB first; once every SUB is answered publishing starts, the
//! warm-up runs, and the measurement window opens. Every body starts with a stamp, ns since a
//! shared origin `Instant` (the same clock for publishers and consumers, all in this process):
//! the intended send time when paced, the write time when closed-loop. Consumers record
//! receive − stamp; publishers record `OK` − send (intended) time.

pub mod cli;
mod conn;
mod driver;
pub mod hgrm;
mod link;
mod output;
mod pacer;
pub mod plot;
pub mod probe;
pub mod sink;
mod stats;
mod supervise;
pub mod wire;

pub use link::TransportOptions;
pub use output::{write_outputs, Outputs};
pub use stats::{Latency, Report, Throughput};

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use conn::{Consumer, Publisher, Role};
use driver::Plan;
use link::Dialer;
use stats::{Progress, Recorder};
use wire::{PublishTemplate, ReqPicker, SEQ_LEN, STAMP_LEN, UNIQUE_MIN_SIZE};

/// Largest `--size`: nsqd's default `--max-msg-size` is 1 MiB; 64 MiB keeps frame sizes in u32
/// with room, for servers configured higher.
pub const MAX_SIZE: usize = 64 * 1024 * 1024;
/// How long consumers may see nothing before a backlog counts as drained (`sub`), or before
/// a run gives up on messages still in transit (`pubsub`, `e2e`).
pub const IDLE_MS: u64 = 2000;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Publishers only.
    Pub,
    /// Consumers only, draining what is there.
    Sub,
    /// Publishers and consumers at once.
    Pubsub,
    /// Publishers at a fixed rate and consumers; latency per message.
    E2e,
}

impl Mode {
    /// The mode's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Pub => "pub",
            Mode::Sub => "sub",
            Mode::Pubsub => "pubsub",
            Mode::E2e => "e2e",
        }
    }

    /// True when the mode publishes.
    pub fn publishes(self) -> bool {
        self != Mode::Sub
    }

    /// True when the mode consumes.
    pub fn consumes(self) -> bool {
        self != Mode::Pub
    }
}

/// Everything a run needs; `--json` writes it next to the results.
#[derive(Debug, Clone, Serialize)]
pub struct BenchConfig {
    /// What to do.
    pub mode: Mode,
    /// The server's TCP address.
    pub address: SocketAddr,
    /// Topic to publish to and consume from.
    pub topic: String,
    /// Channel to consume (with `channels > 1`: this name plus an index).
    pub channel: String,
    /// Message size in bytes (≥ 8: the stamp).
    pub size: usize,
    /// Messages per publish command: 1 = PUB, more = MPUB.
    pub batch: usize,
    /// Publisher connections (`sub`: consumer connections per channel).
    pub connections: usize,
    /// Consumer connections per channel (`pubsub`, `e2e`).
    pub consumers: usize,
    /// Publish commands in flight per closed-loop publisher.
    pub pipeline: usize,
    /// How long to measure, after the warm-up (when `count` is `None`).
    pub duration_ms: u64,
    /// Messages to publish (or, in `sub`, to consume) instead of a duration.
    pub count: Option<u64>,
    /// Run this long before measuring.
    pub warmup_ms: u64,
    /// RDY per consumer connection.
    pub rdy: u64,
    /// Channels to consume (fan-out).
    pub channels: usize,
    /// Offered rate in messages/s for open-loop publishing (`e2e`; optional for `pub`/`pubsub`).
    pub rate: Option<u64>,
    /// Generator threads driving the closed-loop and consumer connections.
    pub threads: usize,
    /// Open loop: the paced thread polls without sleeping while the schedule runs.
    pub spin: bool,
    /// Every body carries a sequence number after its stamp, so no two are equal.
    pub unique_bodies: bool,
    /// Share of deliveries consumers answer REQ 0 instead of FIN (0 = none), every
    /// `1 / req_ratio`-th one.
    pub req_ratio: f64,
    /// TLS and compression of every connection (`--tls`, `--snappy`, `--deflate`, ...).
    pub transport: TransportOptions,
}

impl BenchConfig {
    /// A configuration with the CLI's defaults for `mode`.
    pub fn new(mode: Mode, address: SocketAddr) -> BenchConfig {
        BenchConfig {
            mode,
            address,
            topic: "bench".into(),
            channel: "bench".into(),
            size: 200,
            batch: if mode == Mode::E2e { 1 } else { 200 },
            connections: 4,
            consumers: 4,
            pipeline: 1,
            duration_ms: 10_000,
            count: None,
            warmup_ms: if mode == Mode::Sub { 0 } else { 2000 },
            rdy: 200,
            channels: 1,
            rate: None,
            threads: 1,
            spin: true,
            unique_bodies: false,
            req_ratio: 0.0,
            transport: TransportOptions::default(),
        }
    }

    /// Checks the options, naming the flag at fault.
    ///
    /// # Errors
    /// [`BenchError::Config`] with a message that names the flag and the fix.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |msg: String| Err(BenchError::Config(msg));
        if !(STAMP_LEN..=MAX_SIZE).contains(&self.size) {
            return bad(format!(
                "--size {} is out of range: every message carries an {STAMP_LEN}-byte timestamp, \
                 so use {STAMP_LEN}..={MAX_SIZE}",
                self.size
            ));
        }
        let batch_bytes = self.batch.saturating_mul(self.size + 4);
        if self.batch == 0 || batch_bytes > MAX_SIZE {
            return bad(format!(
                "--batch {} must be at least 1 and --batch × (--size + 4) at most {MAX_SIZE} bytes",
                self.batch
            ));
        }
        for (flag, v) in [
            ("--connections", self.connections),
            ("--consumers", self.consumers),
            ("--pipeline", self.pipeline),
            ("--channels", self.channels),
            ("--threads", self.threads),
        ] {
            if v == 0 {
                return bad(format!("{flag} must be at least 1"));
            }
        }
        if self.rate == Some(0) {
            return bad("--rate must be at least 1 message per second".into());
        }
        if self.mode == Mode::E2e && self.rate.is_none() {
            return bad(
                "e2e needs --rate N: the fixed offered load, in messages per second".into(),
            );
        }
        if self.mode == Mode::Sub && self.rate.is_some() {
            return bad("--rate applies to publishers; sub mode has none".into());
        }
        if self.unique_bodies && (self.size < UNIQUE_MIN_SIZE || !self.mode.publishes()) {
            return bad(format!(
                "--unique-bodies needs a publishing mode and --size of at least \
                 {UNIQUE_MIN_SIZE} (an {STAMP_LEN}-byte timestamp plus an {SEQ_LEN}-byte \
                 sequence number)"
            ));
        }
        if !(0.0..=1.0).contains(&self.req_ratio) {
            return bad(format!(
                "--req-ratio {} must be a fraction from 0 to 1",
                self.req_ratio
            ));
        }
        if self.req_ratio > 0.0 && !self.mode.consumes() {
            return bad("--req-ratio applies to consumers; pub mode has none".into());
        }
        if self.count == Some(0) || (self.count.is_none() && self.duration_ms == 0) {
            return bad("give a --duration above 0 or a --count above 0".into());
        }
        self.transport.validate().map_err(BenchError::Config)
    }

    /// A one-line description of the load, for the summary.
    pub fn shape(&self) -> String {
        let publish = match (self.batch, self.rate) {
            (1, Some(r)) => format!("PUB at {r} msg/s"),
            (b, Some(r)) => format!("MPUB {b} at {r} msg/s"),
            (1, None) => format!("PUB, pipeline {}", self.pipeline),
            (b, None) => format!("MPUB {b}, pipeline {}", self.pipeline),
        };
        let consume = format!(
            "{} channel(s) × {} consumer(s), RDY {}",
            self.channels,
            self.consumer_count(),
            self.rdy
        );
        let shape = match self.mode {
            Mode::Pub => format!("{} connection(s), {publish}", self.connections),
            Mode::Sub => consume,
            Mode::Pubsub | Mode::E2e => {
                format!("{} connection(s), {publish}; {consume}", self.connections)
            }
        };
        if self.transport.layered() {
            format!("{shape}; over {}", self.transport.describe())
        } else {
            shape
        }
    }

    /// Consumer connections per channel.
    pub(crate) fn consumer_count(&self) -> usize {
        if self.mode == Mode::Sub {
            self.connections
        } else {
            self.consumers
        }
    }

    fn channel_name(&self, i: usize) -> String {
        if self.channels == 1 {
            self.channel.clone()
        } else {
            format!("{}{i}", self.channel)
        }
    }
}

/// Why a run could not be done.
#[derive(Debug)]
pub enum BenchError {
    /// The options are inconsistent; the message names the flag.
    Config(String),
    /// The run failed: connection, socket, protocol or server error.
    Run(String),
    /// An output file could not be written.
    Output(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Config(s) | BenchError::Run(s) | BenchError::Output(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for BenchError {}

/// Flags and shared counters every generator thread reads once per loop pass.
#[derive(Debug)]
pub struct Control {
    /// The run's clock origin: every stamp and receive time is ns since this instant.
    pub origin: Instant,
    /// Publishers may send (set after the SUBs are answered, cleared at the end).
    pub publishing: AtomicBool,
    /// Every thread stops.
    pub stop: AtomicBool,
    /// End of the warm-up, ns since `origin` (with publishers: `u64::MAX` until they start).
    pub measure_from_ns: AtomicU64,
    /// SUBs answered so far.
    pub subscribed: AtomicU64,
}

impl Control {
    /// Passes a worker thread's result through; on an error, tells every other thread and the
    /// main loop to wind down instead of waiting for a count that will never come.
    fn stop_on_error<T>(&self, result: Result<T, BenchError>) -> Result<T, BenchError> {
        if result.is_err() {
            self.stop.store(true, Ordering::Relaxed);
        }
        result
    }
}

/// Runs one benchmark and returns its report. `progress_line` prints a line a second on
/// stderr when stderr is a terminal.
///
/// # Errors
/// [`BenchError::Config`] for invalid options, [`BenchError::Run`] when a connection fails.
pub fn run(cfg: &BenchConfig, progress_line: bool) -> Result<Report, BenchError> {
    cfg.validate()?;
    let dialer = Arc::new(Dialer::new(cfg.address, &cfg.transport)?);
    let control = Arc::new(Control {
        origin: Instant::now(),
        publishing: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        // Consumers without publishers count from the warm-up's end after the origin: their
        // messages start flowing as soon as each SUB is answered.
        measure_from_ns: AtomicU64::new(if cfg.mode.publishes() {
            u64::MAX
        } else {
            cfg.warmup_ms * 1_000_000
        }),
        subscribed: AtomicU64::new(0),
    });
    let progress = Arc::new(Progress::default());
    let cpu_start = stats::cpu_seconds();
    let threads = spawn_threads(cfg, &dialer, &control, &progress);
    let supervised = supervise::supervise(
        cfg,
        &control,
        &progress,
        progress_line && std::io::stderr().is_terminal(),
    );
    control.stop.store(true, Ordering::Relaxed);
    let mut merged = Recorder::new(control.measure_from_ns.load(Ordering::Relaxed));
    let mut first_err = supervised.err();
    for t in threads {
        match t.join() {
            Ok(Ok(rec)) => merged.merge(&rec),
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(_) => first_err = first_err.or(Some(BenchError::Run("a thread panicked".into()))),
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let wall = control.origin.elapsed().as_secs_f64();
    let cpu = 100.0 * (stats::cpu_seconds() - cpu_start) / wall.max(1e-9);
    let mut report = Report::new(cfg.clone(), merged, cpu);
    if cfg.mode.publishes() && cfg.mode.consumes() {
        let expected = Progress::get(&progress.sent) * cfg.channels as u64;
        // A REQ'd delivery is not a message done: its redelivery is.
        let finished =
            Progress::get(&progress.consumed).saturating_sub(Progress::get(&progress.requeued));
        report.lost = Some(expected.saturating_sub(finished));
    }
    Ok(report)
}

type Worker = std::thread::JoinHandle<Result<Recorder, BenchError>>;

/// Starts the pacer (when `--rate`) and the driver threads, connections dealt round-robin.
fn spawn_threads(
    cfg: &BenchConfig,
    dialer: &Arc<Dialer>,
    control: &Arc<Control>,
    progress: &Arc<Progress>,
) -> Vec<Worker> {
    let template = Arc::new(PublishTemplate::new(
        &cfg.topic,
        cfg.size,
        cfg.batch,
        cfg.unique_bodies,
    ));
    let per_conn = |i: usize| {
        cfg.count.map(|n| {
            let commands = n.div_ceil(cfg.batch as u64);
            let k = cfg.connections as u64;
            commands / k + u64::from((i as u64) < commands % k)
        })
    };
    let mut plans: Vec<Vec<Plan>> = (0..cfg.threads).map(|_| Vec::new()).collect();
    let mut deal = 0;
    let mut add = |plan: Plan| {
        plans[deal % cfg.threads].push(plan);
        deal += 1;
    };
    if cfg.mode.consumes() {
        for ch in 0..cfg.channels {
            for _ in 0..cfg.consumer_count() {
                add(Plan {
                    role: Role::Consumer(Consumer {
                        subscribed: false,
                        record_latency: cfg.mode.publishes(),
                        req: ReqPicker::new(cfg.req_ratio),
                    }),
                    channel: cfg.channel_name(ch),
                });
            }
        }
    }
    let mut workers = Vec::new();
    let paced = cfg.rate.filter(|_| cfg.mode.publishes());
    if paced.is_none() && cfg.mode.publishes() {
        for i in 0..cfg.connections {
            add(Plan {
                role: Role::Publisher(Publisher {
                    template: template.clone(),
                    pipeline: cfg.pipeline,
                    quota: per_conn(i),
                    sent_at: std::collections::VecDeque::with_capacity(cfg.pipeline),
                    next_seq: (i as u64) << 40,
                }),
                channel: String::new(),
            });
        }
    }
    let mut plans = plans.into_iter();
    if let Some(rate) = paced {
        // The paced publishers and the first thread's consumers share one spinning thread.
        let consumers = plans.next().unwrap_or_default();
        let commands = cfg.count.map(|n| n.div_ceil(cfg.batch as u64));
        let (c, p, t, cfg, d) = (
            control.clone(),
            progress.clone(),
            template.clone(),
            cfg.clone(),
            dialer.clone(),
        );
        workers.push(std::thread::spawn(move || {
            let load = pacer::PacedLoad {
                connections: cfg.connections,
                template: &t,
                rate,
                commands,
                spin: cfg.spin,
            };
            c.stop_on_error(pacer::run(
                &d,
                &load,
                consumers,
                (&cfg.topic, cfg.rdy),
                &c,
                &p,
            ))
        }));
    }
    for plan in plans.filter(|p| !p.is_empty()) {
        let (c, p, cfg, d) = (
            control.clone(),
            progress.clone(),
            cfg.clone(),
            dialer.clone(),
        );
        workers.push(std::thread::spawn(move || {
            c.stop_on_error(driver::run(&d, &cfg.topic, cfg.rdy, plan, &c, &p))
        }));
    }
    workers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: Mode) -> BenchConfig {
        BenchConfig::new(mode, "127.0.0.1:4150".parse().unwrap())
    }

    fn error(c: &BenchConfig) -> String {
        match c.validate() {
            Err(BenchError::Config(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_except_e2e_without_rate() {
        for mode in [Mode::Pub, Mode::Sub, Mode::Pubsub] {
            assert!(cfg(mode).validate().is_ok(), "{mode:?}");
        }
        assert!(error(&cfg(Mode::E2e)).contains("--rate"));
        let mut e2e = cfg(Mode::E2e);
        e2e.rate = Some(1000);
        assert!(e2e.validate().is_ok());
        assert_eq!((e2e.batch, cfg(Mode::Pub).batch), (1, 200));
        assert_eq!(
            (cfg(Mode::Sub).warmup_ms, cfg(Mode::Pub).warmup_ms),
            (0, 2000)
        );
    }

    #[test]
    fn each_bad_option_names_its_flag() {
        let mut c = cfg(Mode::Pub);
        c.size = 7;
        assert!(error(&c).starts_with("--size 7"));
        let mut c = cfg(Mode::Pub);
        c.batch = 0;
        assert!(error(&c).starts_with("--batch 0"));
        let mut c = cfg(Mode::Pub);
        c.batch = 1_000_000;
        assert!(error(&c).contains("--batch × (--size + 4)"));
        let mut c = cfg(Mode::Pubsub);
        c.channels = 0;
        assert_eq!(error(&c), "--channels must be at least 1");
        let mut c = cfg(Mode::Sub);
        c.rate = Some(5);
        assert!(error(&c).contains("--rate"));
        let mut c = cfg(Mode::Pub);
        c.count = Some(0);
        assert!(error(&c).contains("--count"));
    }

    #[test]
    fn unique_bodies_and_req_ratio_are_validated() {
        let mut c = cfg(Mode::Pub);
        c.unique_bodies = true;
        assert!(c.validate().is_ok());
        c.size = 15;
        assert!(error(&c).starts_with("--unique-bodies"), "{}", error(&c));
        let mut c = cfg(Mode::Sub);
        c.unique_bodies = true;
        assert!(error(&c).starts_with("--unique-bodies"));
        for mode in [Mode::Sub, Mode::Pubsub] {
            let mut c = cfg(mode);
            c.req_ratio = 0.1;
            assert!(c.validate().is_ok(), "{mode:?}");
        }
        let mut c = cfg(Mode::Pubsub);
        c.req_ratio = 1.5;
        assert!(error(&c).starts_with("--req-ratio 1.5"));
        c.req_ratio = f64::NAN;
        assert!(error(&c).starts_with("--req-ratio"));
        let mut c = cfg(Mode::Pub);
        c.req_ratio = 0.1;
        assert!(error(&c).contains("pub mode has none"));
    }

    #[test]
    fn shape_describes_the_load() {
        let mut c = cfg(Mode::E2e);
        c.rate = Some(50_000);
        assert_eq!(
            c.shape(),
            "4 connection(s), PUB at 50000 msg/s; 1 channel(s) × 4 consumer(s), RDY 200"
        );
        assert_eq!(
            cfg(Mode::Pub).shape(),
            "4 connection(s), MPUB 200, pipeline 1"
        );
        let mut c = cfg(Mode::Sub);
        c.channels = 3;
        assert_eq!(c.channel_name(2), "bench2");
    }
}
