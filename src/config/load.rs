//! From a command line (and the `--config` file it names) to a validated [`Config`], the way
//! nsqd resolves its options (Go's `flag` package, then `mreiferson/go-options`):
//!
//! - **Go flag syntax.** `-name`, `--name`, `-name value`, `--name=value`; a bool flag takes its
//!   value only as `--name=false`. [`normalize_args`] rewrites every known flag to clap's
//!   `--name=value` form before clap sees it (clap has no single-dash long flags, and a value
//!   glued with `=` cannot be mistaken for a flag even when it starts with `-`).
//! - **Precedence:** command line, then the config file, then the default. A file key whose flag
//!   is on the command line is skipped; the others become `--flag=value` arguments placed
//!   before the command line's.
//! - **The file** is TOML with nsqd's keys: the flag name with `-` turned into `_`, except `id`
//!   (`--node-id`), `nsqlookupd_tcp_addresses`, `auth_http_addresses` and
//!   `e2e_processing_latency_percentiles`. Durations are strings (`"60s"`) or integers
//!   (milliseconds, as go-options reads them); repeatable flags take arrays or a
//!   comma-separated string. A key nsqd does not have is noted and ignored, as nsqd ignores it.
//!   A value that does not parse is a one-line error naming the file and the key.

use std::ffi::OsString;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, CommandFactory, FromArgMatches};

use super::values::IGNORED_FLAGS;
use super::{parse_duration_ms, Config, ConfigError, Options};

/// Config-file keys that are not the flag's name with `_` (nsqd's `cfg` struct tags).
const CFG_NAMES: &[(&str, &str)] = &[
    ("id", "node-id"),
    ("nsqlookupd_tcp_addresses", "lookupd-tcp-address"),
    ("auth_http_addresses", "auth-http-address"),
    (
        "e2e_processing_latency_percentiles",
        "e2e-processing-latency-percentile",
    ),
];

/// Flags that cannot be set from the file (they are not options).
const NOT_IN_FILE: &[&str] = &["config", "help", "version"];

/// The result of [`load`]: the validated configuration and what to log once logging is set up.
#[derive(Debug)]
pub struct Loaded {
    /// The configuration to run with.
    pub cfg: Config,
    /// Lines to log at `info` (ignored flags and why, unknown config-file keys).
    pub notes: Vec<String>,
}

/// Why [`load`] failed.
#[derive(Debug)]
pub enum LoadError {
    /// A command-line error, `--help` or `--version`: clap prints it and picks the exit code
    /// (2 for a usage error, as Go's flag package; 0 for help and version).
    Usage(clap::Error),
    /// A bad config file or value: one line, exit code 1.
    Config(ConfigError),
}

impl From<clap::Error> for LoadError {
    fn from(e: clap::Error) -> Self {
        LoadError::Usage(e)
    }
}

impl From<ConfigError> for LoadError {
    fn from(e: ConfigError) -> Self {
        LoadError::Config(e)
    }
}

/// Parses `args` (with the program name first) and the `--config` file, and validates.
///
/// # Errors
/// [`LoadError::Usage`] for the command line, [`LoadError::Config`] for the file or a value
/// out of range.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let argv = normalize_args(args.into_iter().map(Into::into).collect());
    let cmd = Options::command();
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let mut given: Vec<String> = cmd
        .get_arguments()
        .filter(|a| first.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut notes = Vec::new();
    let mut file_args: Vec<OsString> = Vec::new();
    let mut from_file: Vec<(String, String)> = Vec::new();
    if let Some(path) = first.get_one::<std::path::PathBuf>("config") {
        let table = read_table(path)?;
        for (key, value) in &table {
            let Some(arg) = arg_for_key(&cmd, key) else {
                notes.push(format!(
                    "config file {}: unknown key {key:?} ignored",
                    path.display()
                ));
                continue;
            };
            if first.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine) {
                continue; // the command line wins
            }
            let long = arg.get_long().unwrap_or_default().to_owned();
            let flag_args = file_value_args(&cmd, arg, &long, value)
                .map_err(|why| file_error(path, key, value, &why))?;
            given.push(long.clone());
            from_file.push((long, key.clone()));
            file_args.extend(flag_args);
        }
    }
    let mut all = argv;
    let rest = all.split_off(1.min(all.len()));
    all.extend(file_args);
    all.extend(rest);
    let matches = cmd.try_get_matches_from(all)?;
    let opts = Options::from_arg_matches(&matches)?;
    let cfg = opts.validate().map_err(|e| name_file_key(e, &from_file))?;
    for (flag, why) in IGNORED_FLAGS {
        if given.iter().any(|g| g == flag) {
            notes.push(format!(
                "--{flag} is accepted for nsqd compatibility and ignored: {why}"
            ));
        }
    }
    Ok(Loaded { cfg, notes })
}

/// Rewrites Go-style flags into clap's form: `-name` → `--name`, and `--name value` →
/// `--name=value` for a known flag that takes a value. Unknown arguments and everything after
/// `--` pass unchanged (clap reports them).
pub fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let cmd = Options::command();
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    out.extend(iter.next());
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            out.push(arg);
            out.extend(iter.by_ref());
            break;
        }
        let body = s.strip_prefix("--").or_else(|| s.strip_prefix('-'));
        let Some(body) = body.filter(|b| !b.is_empty() && !b.starts_with('-')) else {
            out.push(arg);
            continue;
        };
        let name = body.split_once('=').map_or(body, |(n, _)| n);
        if matches!(name, "help" | "h" | "version") {
            out.push(OsString::from(if name == "version" {
                "--version"
            } else {
                "--help"
            }));
            continue;
        }
        let Some(flag) = cmd.get_arguments().find(|a| a.get_long() == Some(name)) else {
            out.push(arg);
            continue;
        };
        let mut rewritten = OsString::from(format!("--{body}"));
        if !body.contains('=') && takes_separate_value(flag) {
            if let Some(value) = iter.next() {
                rewritten.push("=");
                rewritten.push(value);
            }
        }
        out.push(rewritten);
    }
    out
}

/// Whether Go reads the next argument as this flag's value (every non-bool flag).
fn takes_separate_value(arg: &Arg) -> bool {
    arg.get_action().takes_values() && !arg.is_require_equals_set()
}

/// Reads and parses the config file into a TOML table.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("--config {}: cannot read: {e}", path.display())))?;
    text.parse::<toml::Table>().map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text.get(..s.start).map_or(0, |t| t.lines().count().max(1))
        });
        let msg = e
            .message()
            .lines()
            .next()
            .unwrap_or("invalid TOML")
            .to_owned();
        ConfigError(format!(
            "--config {}: line {line}: not valid TOML: {msg}",
            path.display()
        ))
    })
}

/// The flag a config-file key sets, if nsqd has that key.
fn arg_for_key<'c>(cmd: &'c clap::Command, key: &str) -> Option<&'c Arg> {
    let long = CFG_NAMES
        .iter()
        .find(|(k, _)| *k == key)
        .map_or_else(|| key.replace('_', "-"), |(_, l)| (*l).to_owned());
    // A flag with a cfg name is set only through it, as in go-options.
    if CFG_NAMES.iter().any(|(k, l)| *l == long && *k != key) {
        return None;
    }
    if NOT_IN_FILE.contains(&long.as_str()) || key.contains('-') {
        return None;
    }
    cmd.get_arguments()
        .find(|a| a.get_long() == Some(long.as_str()))
}

/// The `--flag=value` arguments one file value stands for, each checked by clap alone so a bad
/// value is reported against its key.
fn file_value_args(
    cmd: &clap::Command,
    arg: &Arg,
    long: &str,
    value: &toml::Value,
) -> Result<Vec<OsString>, String> {
    let repeatable = matches!(arg.get_action(), ArgAction::Append);
    let items: Vec<&toml::Value> = match value {
        toml::Value::Array(items) if repeatable => items.iter().collect(),
        toml::Value::Array(_) => return Err("an array is not allowed here".into()),
        v => vec![v],
    };
    let is_duration = arg.get_default_values().first().is_some_and(|d| {
        let d = d.to_string_lossy();
        d.parse::<u64>().is_err() && parse_duration_ms(&d).is_ok()
    });
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let text = scalar_text(item, is_duration, long)?;
        out.push(OsString::from(format!("--{long}={text}")));
    }
    let mut check = vec![OsString::from("corqd")];
    check.extend(out.iter().cloned());
    if let Err(e) = cmd.clone().try_get_matches_from(check) {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or("invalid value");
        return Err(first.trim_start_matches("error: ").to_owned());
    }
    Ok(out)
}

/// One TOML scalar as flag text: an integer (or a digits-only string) for a duration is
/// milliseconds, as go-options reads it; `log_level` may be nsqd's integer (1 debug .. 5 fatal).
fn scalar_text(v: &toml::Value, is_duration: bool, long: &str) -> Result<String, String> {
    Ok(match v {
        toml::Value::String(s)
            if is_duration && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            format!("{s}ms")
        }
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) if is_duration => format!("{i}ms"),
        toml::Value::Integer(i) if long == "log-level" => {
            let names = ["debug", "info", "warn", "error", "fatal"];
            let idx = usize::try_from(*i).ok().and_then(|i| i.checked_sub(1));
            idx.and_then(|i| names.get(i))
                .ok_or("log_level must be 1 to 5 or a level name")?
                .to_string()
        }
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        _ => return Err("expected a string, number or bool".into()),
    })
}

fn file_error(path: &Path, key: &str, value: &toml::Value, why: &str) -> ConfigError {
    ConfigError(format!(
        "--config {}: {key} = {value}: {why}",
        path.display()
    ))
}

/// A validation error about a flag the file set names the key too.
fn name_file_key(e: ConfigError, from_file: &[(String, String)]) -> ConfigError {
    let hit = from_file.iter().find(|(long, _)| {
        e.0.contains(&format!("--{long} ")) || e.0.ends_with(&format!("--{long}"))
    });
    match hit {
        Some((_, key)) => ConfigError(format!("{} (config file key {key})", e.0)),
        None => e,
    }
}
