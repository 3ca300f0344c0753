//! `corqd`: the corq server. Parses flags, sets up logging, runs the server until SIGTERM/SIGINT.
use std::process::ExitCode;

use corq::config::{load, LoadError};

fn main() -> ExitCode {
    let loaded = match load(std::env::args_os()) {
        Ok(l) => l,
        Err(LoadError::Usage(e)) => e.exit(),
        Err(LoadError::Config(e)) => {
            eprintln!("corqd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = &loaded.cfg;
    let level = corq::config::parse_level(&opts.log_level).unwrap_or(log::LevelFilter::Info);
    corq::logging::init(opts.log_format, level, "CORQ_LOG", &opts.log_prefix);
    for (level, note) in &loaded.notes {
        log::log!(*level, "{note}");
    }
    match run(loaded.cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corqd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: corq::Config) -> Result<(), Box<dyn std::error::Error>> {
    raise_fd_limit();
    let server = corq::Server::bind(cfg)?;
    corq::server::install_signal_handlers(server.handle());
    server.run()?;
    Ok(())
}

/// Raises the soft open-files limit to the hard one, as Go's runtime does for nsqd: a queue
/// server holds one descriptor per client.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
