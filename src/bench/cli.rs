//! The `corq bench` command line: [`BenchArgs`] (clap) turned into a [`BenchConfig`], the run,
//! the summary on stdout and the requested files. The `corq` binary only forwards to
//! [`main`], so everything here is testable in-process.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::sink::{Sink, SinkOptions};
use super::{run, write_outputs, BenchConfig, BenchError, Mode, Outputs, TransportOptions};
use crate::config::parse_duration_ms;

/// What `corq bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Publishers only (closed loop, or open loop with --rate)
    Pub,
    /// Consumers draining a topic's backlog
    Sub,
    /// Publishers and consumers at once, on --channels channels
    Pubsub,
    /// Publishing at a fixed --rate, latency per message (no coordinated omission)
    E2e,
    /// Run a fake NSQ server that answers everything at once (the generator's own ceiling)
    Sink,
}

/// `corq bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// what to run
    #[arg(value_enum)]
    pub mode: ModeArg,
    /// nsqd (or corqd) TCP address (Go forms: `:4150`, `localhost:4150`); for `sink`, where
    /// to listen
    #[arg(long, default_value = "127.0.0.1:4150", value_parser = crate::config::parse_dial_addr)]
    pub nsqd_tcp_address: SocketAddr,
    /// topic to publish to and consume from
    #[arg(long, default_value = "bench")]
    pub topic: String,
    /// channel to consume (with --channels K: this name plus 0..K)
    #[arg(long, default_value = "bench")]
    pub channel: String,
    /// message size in bytes (at least 8: every body starts with a timestamp)
    #[arg(long, default_value_t = 200)]
    pub size: usize,
    /// messages per publish: 1 = PUB, more = MPUB [default: 200; e2e: 1]
    #[arg(long)]
    pub batch: Option<usize>,
    /// publisher connections (sub: consumer connections per channel)
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// consumer connections per channel in pubsub and e2e [default: --connections]
    #[arg(long)]
    pub consumers: Option<usize>,
    /// PUB/MPUB commands in flight per publisher connection (closed loop)
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// how long to measure, after the warm-up (Go syntax: 10s, 500ms, 1m)
    #[arg(long, default_value = "10s", value_parser = parse_duration_ms)]
    pub duration: u64,
    /// messages to publish (sub: to consume) instead of a duration; sink: backlog to serve
    #[arg(long, conflicts_with = "duration")]
    pub count: Option<u64>,
    /// run this long before measuring [default: 2s; sub: 0s, the backlog is the workload]
    #[arg(long, value_parser = parse_duration_ms)]
    pub warmup: Option<u64>,
    /// RDY per consumer connection
    #[arg(long, default_value_t = 200)]
    pub rdy: u64,
    /// channels to consume (fan-out)
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// offered load in messages/s: open-loop publishing (required for e2e)
    #[arg(long)]
    pub rate: Option<u64>,
    /// generator threads for the closed-loop publishers and the consumers (with --rate, the
    /// first one also runs the paced publishers)
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// with --rate: poll without ever sleeping while publishing (for a generator pinned to a
    /// core of its own; its CPU then reads ~100 %). false: sleep until the next message is due
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub spin: bool,
    /// write a sequence number after each body's timestamp, so no two bodies are equal (for a
    /// server with a dedup window); needs --size 16 or more
    #[arg(long)]
    pub unique_bodies: bool,
    /// share of deliveries consumers answer `REQ <id> 0` instead of FIN (deterministic: 0.1 is
    /// every 10th delivery of each consumer connection)
    #[arg(long, default_value_t = 0.0, value_name = "F")]
    pub req_ratio: f64,
    /// upgrade every connection to TLS after IDENTIFY (tls_v1), as nsqd clients do; needs
    /// --tls-root-ca-file or --tls-insecure-skip-verify
    #[arg(long)]
    pub tls: bool,
    /// with --tls: the CA (PEM) that signed the server's certificate, checked against the
    /// address's IP
    #[arg(long, value_name = "PATH")]
    pub tls_root_ca_file: Option<String>,
    /// with --tls: accept any server certificate (go-nsq's tls_insecure_skip_verify)
    #[arg(long)]
    pub tls_insecure_skip_verify: bool,
    /// compress both directions with the snappy framing format (inside TLS with --tls)
    #[arg(long)]
    pub snappy: bool,
    /// compress both directions with raw deflate (inside TLS with --tls)
    #[arg(long)]
    pub deflate: bool,
    /// with --deflate: the level asked of the server and used for our output, 1..=9 [default: 6]
    #[arg(long, value_name = "N")]
    pub deflate_level: Option<i64>,
    /// write the configuration and results as JSON
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// write the latency distribution in HdrHistogram's .hgrm text format (µs)
    #[arg(long, value_name = "FILE")]
    pub hgrm: Option<PathBuf>,
    /// write a latency-by-percentile plot (SVG)
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

impl BenchArgs {
    /// The run configuration, validated. `None` for `sink`, which is not a run.
    ///
    /// # Errors
    /// [`BenchError::Config`] naming the flag at fault.
    pub fn config(&self) -> Result<Option<BenchConfig>, BenchError> {
        let mode = match self.mode {
            ModeArg::Pub => Mode::Pub,
            ModeArg::Sub => Mode::Sub,
            ModeArg::Pubsub => Mode::Pubsub,
            ModeArg::E2e => Mode::E2e,
            ModeArg::Sink => return Ok(None),
        };
        let mut cfg = BenchConfig::new(mode, self.nsqd_tcp_address);
        cfg.topic.clone_from(&self.topic);
        cfg.channel.clone_from(&self.channel);
        cfg.size = self.size;
        cfg.batch = self.batch.unwrap_or(cfg.batch);
        cfg.connections = self.connections;
        cfg.consumers = self.consumers.unwrap_or(self.connections);
        cfg.pipeline = self.pipeline;
        cfg.duration_ms = self.duration;
        cfg.count = self.count;
        cfg.warmup_ms = self.warmup.unwrap_or(cfg.warmup_ms);
        cfg.rdy = self.rdy;
        cfg.channels = self.channels;
        cfg.rate = self.rate;
        cfg.threads = self.threads;
        cfg.spin = self.spin;
        cfg.unique_bodies = self.unique_bodies;
        cfg.req_ratio = self.req_ratio;
        cfg.transport = TransportOptions {
            tls: self.tls,
            tls_root_ca_file: self.tls_root_ca_file.clone(),
            tls_insecure_skip_verify: self.tls_insecure_skip_verify,
            snappy: self.snappy,
            deflate: self.deflate,
            deflate_level: self.deflate_level,
        };
        cfg.validate()?;
        Ok(Some(cfg))
    }
}

/// Runs `corq bench` with parsed arguments: prints the summary, writes the files.
///
/// # Errors
/// Invalid options, a failed run, or an output file that could not be written.
pub fn main(args: &BenchArgs) -> Result<(), BenchError> {
    let Some(cfg) = args.config()? else {
        let sink = Sink::start(
            args.nsqd_tcp_address,
            SinkOptions {
                route: true,
                stall: None,
                backlog: args.count.unwrap_or(0),
                backlog_size: args.size,
            },
        )
        .map_err(|e| BenchError::Run(format!("cannot listen on {}: {e}", args.nsqd_tcp_address)))?;
        eprintln!("corq bench sink: listening on {}", sink.addr());
        sink.wait();
        return Ok(());
    };
    let report = run(&cfg, true)?;
    print!("{}", report.summary());
    let outputs = Outputs {
        json: args.json.clone(),
        hgrm: args.hgrm.clone(),
        plot: args.plot.clone(),
    };
    write_outputs(&report, &outputs)
}
