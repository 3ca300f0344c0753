//! `corq`: corq's toolbox. `pub` turns stdin lines into messages (like NSQ's to_nsq), `tail`
//! prints a topic's messages (like nsq_tail), `bench` is the load generator (`corq::bench`). All
//! speak plain NSQ, so they work with any nsqd.
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use corq::client::{ClientError, Consumer, Producer};
use corq::protocol::names;

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
    /// Measure this disk's pwrite+fdatasync latency, as a topic's log syncs (strict mode's limit)
    DiskProbe(corq::bench::probe::ProbeArgs),
    /// Run a wire-compatible nsqlookupd (nsqlookupd's flags and defaults)
    Lookupd(corq::lookupd::LookupdOptions),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The tools log warnings only; lookupd is a server and logs its lifecycle (--log-level).
    let (format, level) = match &cli.cmd {
        Cmd::Lookupd(o) => (
            o.log_format,
            corq::config::parse_level(&o.log_level).unwrap_or(log::LevelFilter::Info),
        ),
        _ => (corq::logging::LogFormat::Text, log::LevelFilter::Warn),
    };
    corq::logging::init(format, level, "CORQ_LOG", "");
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
        Cmd::DiskProbe(args) => corq::bench::probe::main(&args).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corq: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Refuses a name nsqd would refuse, before connecting: a shell-split `'bad topic'` must not
/// publish to `bad`.
fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if names::is_valid_topic_name(name) {
        return Ok(());
    }
    Err(format!(
        "invalid {kind} name {name:?}: use 1 to {} characters from a-z A-Z 0-9 . _ -, \
         optionally ending in {}",
        names::MAX_NAME_LEN,
        names::EPHEMERAL_SUFFIX
    ))
}

/// A failed connection names the address: `connecting to 127.0.0.1:4150: Connection refused`.
fn connecting(addr: SocketAddr) -> impl FnOnce(ClientError) -> String {
    move |e| match e {
        ClientError::Io(e) => format!("connecting to {addr}: {}", io_text(&e)),
        other => format!("connecting to {addr}: {other}"),
    }
}

/// An OS error's text without Rust's ` (os error N)` suffix.
fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rsplit_once(" (os error ") {
        Some((msg, _)) => msg.to_owned(),
        None => text,
    }
}

fn publish(addr: SocketAddr, batch: usize, topic: &str) -> Result<(), Box<dyn std::error::Error>> {
    check_name("topic", topic)?;
    let mut producer = Producer::connect(addr).map_err(connecting(addr))?;
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
    check_name("topic", topic)?;
    check_name("channel", &channel)?;
    let mut consumer = Consumer::connect(addr, topic, &channel).map_err(connecting(addr))?;
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
