//! `corqd`: the corq server. Parses flags, sets up logging, runs the server until SIGTERM/SIGINT.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let opts = corq::Options::parse();
    let level = corq::config::parse_level(&opts.log_level).unwrap_or(log::LevelFilter::Info);
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("CORQ_LOG")
        .init();
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corqd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(opts: corq::Options) -> Result<(), Box<dyn std::error::Error>> {
    let cfg = opts.validate()?;
    let server = corq::Server::bind(cfg)?;
    corq::server::install_signal_handlers(server.handle());
    server.run()?;
    Ok(())
}
