//! `corq`: corq's toolbox. `pub` turns stdin lines into messages (like NSQ's to_nsq), `tail`
//! prints a topic's messages (like nsq_tail), `bench` is the load generator (`corq::bench`). All
//! speak plain NSQ, so they work with any nsqd.
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corq::client::{Consumer, Producer};

#[derive(Parser)]
#[command(
    name = "corq",
    version,
    about = "corq's tools: publish, tail and benchmark over the NSQ protocol"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Publish each line of stdin as a message (MPUB in batches)
    Pub {
        /// nsqd (or corqd) TCP address (Go forms: `:4150`, `localhost:4150`, `[::1]:4150`)
        #[arg(long, default_value = "127.0.0.1:4150", value_parser = corq::config::parse_dial_addr)]
        nsqd_tcp_address: SocketAddr,
        /// lines per MPUB (1 = plain PUB)
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// topic to publish to
        topic: String,
    },
    /// Print a topic's messages to stdout, one per line
    Tail {
        /// nsqd (or corqd) TCP address (Go forms: `:4150`, `localhost:4150`, `[::1]:4150`)
        #[arg(long, default_value = "127.0.0.1:4150", value_parser = corq::config::parse_dial_addr)]
        nsqd_tcp_address: SocketAddr,
        /// channel to consume (default: an ephemeral one, as nsq_tail)
        #[arg(long)]
        channel: Option<String>,
        /// exit after this many messages (0 = run forever)
        #[arg(short = 'n', long, default_value_t = 0)]
        count: u64,
        /// topic to tail
        topic: String,
    },
    /// Load-generate against an NSQ server: throughput and HDR latency percentiles
    Bench(Box<corq::bench::cli::BenchArgs>),
    /// Run a wire-compatible nsqlookupd (nsqlookupd's flags and defaults)
    Lookupd(corq::lookupd::LookupdOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The tools log warnings only; lookupd is a server and logs its lifecycle (--log-level).
    let level = match &cli.cmd {
        Cmd::Lookupd(o) => {
            corq::config::parse_level(&o.log_level).unwrap_or(log::LevelFilter::Info)
        }
        _ => log::LevelFilter::Warn,
    };
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("CORQ_LOG")
        .init();
    let result = match cli.cmd {
        Cmd::Pub {
            nsqd_tcp_address,
            batch,
            topic,
        } => publish(nsqd_tcp_address, batch.max(1), &topic),
        Cmd::Tail {
            nsqd_tcp_address,
            channel,
            count,
            topic,
        } => tail(nsqd_tcp_address, channel, count, &topic),
        Cmd::Bench(args) => corq::bench::cli::main(&args).map_err(Into::into),
        Cmd::Lookupd(opts) => corq::lookupd::main(&opts).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corq: {e}");
            ExitCode::FAILURE
        }
    }
}

fn publish(addr: SocketAddr, batch: usize, topic: &str) -> Result<(), Box<dyn std::error::Error>> {
    let mut producer = Producer::connect(addr)?;
    let mut lines: Vec<Vec<u8>> = Vec::with_capacity(batch);
    let send =
        |p: &mut Producer, lines: &mut Vec<Vec<u8>>| -> Result<(), corq::client::ClientError> {
            match lines.len() {
                0 => Ok(()),
                1 => p.publish(topic, &lines[0]),
                _ => p.mpub(topic, &lines.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            }?;
            lines.clear();
            Ok(())
        };
    for line in std::io::stdin().lock().split(b'\n') {
        let line = line?;
        // Empty lines are skipped: NSQ refuses empty messages.
        if !line.is_empty() {
            lines.push(line);
        }
        if lines.len() >= batch {
            send(&mut producer, &mut lines)?;
        }
    }
    send(&mut producer, &mut lines)?;
    Ok(())
}

fn tail(
    addr: SocketAddr,
    channel: Option<String>,
    count: u64,
    topic: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let channel =
        channel.unwrap_or_else(|| format!("tail{:06}#ephemeral", std::process::id() % 1_000_000));
    let mut consumer = Consumer::connect(addr, topic, &channel)?;
    consumer.rdy(200)?;
    let mut out = std::io::stdout().lock();
    let mut seen = 0;
    while count == 0 || seen < count {
        if let Some(m) = consumer.next_message(Duration::from_secs(1))? {
            out.write_all(&m.body)?;
            out.write_all(b"\n")?;
            out.flush()?;
            consumer.fin(&m.id)?;
            seen += 1;
        }
    }
    Ok(())
}
