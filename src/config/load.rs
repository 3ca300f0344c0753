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
    /// Lines to log once logging is set up: ignored flags and why (info); unknown config-file
    /// keys and ignored trailing arguments (warn).
    pub notes: Vec<(log::Level, String)>,
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
    let Normalized { args: argv, rest } =
        normalize_args(args.into_iter().map(Into::into).collect());
    let cmd = Options::command();
    let first = cmd.clone().try_get_matches_from(&argv)?;
    let mut given: Vec<String> = cmd
        .get_arguments()
        .filter(|a| first.value_source(a.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|a| a.get_long().map(str::to_owned))
        .collect();
    let mut notes = Vec::new();
    if !rest.is_empty() {
        let rest: Vec<_> = rest.iter().map(|a| a.to_string_lossy()).collect();
        notes.push((
            log::Level::Warn,
            format!("arguments after the flags are ignored, as nsqd ignores them: {rest:?}"),
        ));
    }
    let mut file_args: Vec<OsString> = Vec::new();
    let mut from_file: Vec<(String, String)> = Vec::new();
    if let Some(path) = first.get_one::<std::path::PathBuf>("config") {
        let table = read_table(path)?;
        for (key, value) in &table {
            let Some(arg) = arg_for_key(&cmd, key) else {
                let note = format!(
                    "--config {}: unknown key {key:?} ignored, as nsqd ignores it",
                    path.display()
                );
                notes.push((log::Level::Warn, note));
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
    let cfg = opts
        .validate()
        .map_err(|e| name_file_key(e, &first, &from_file))?;
    for (flag, why) in IGNORED_FLAGS {
        if given.iter().any(|g| g == flag) {
            let note = format!("--{flag} is accepted for nsqd compatibility and ignored: {why}");
            notes.push((log::Level::Info, note));
        }
    }
    Ok(Loaded { cfg, notes })
}

/// A command line split as Go's flag package splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The program name and the flags, in clap's form.
    pub args: Vec<OsString>,
    /// What follows the flags: from the first argument that is not a flag (or after `--`) on.
    /// nsqd takes no arguments and ignores these, so corqd does too (with a warning).
    pub rest: Vec<OsString>,
}

/// Rewrites Go-style flags into clap's form: `-name` → `--name`, and `--name value` →
/// `--name=value` for a known flag that takes a value. Unknown flags pass unchanged (clap
/// reports them). As in Go, flags end at the first argument that is not one, or at `--`.
pub fn normalize_args(args: Vec<OsString>) -> Normalized {
    let cmd = Options::command();
    let mut out: Vec<OsString> = Vec::with_capacity(args.len());
    let mut rest = Vec::new();
    let mut iter = args.into_iter();
    out.extend(iter.next());
    while let Some(arg) = iter.next() {
        let Some(s) = arg.to_str() else {
            out.push(arg);
            continue;
        };
        if s == "--" {
            rest.extend(iter.by_ref());
            break;
        }
        if !s.starts_with('-') || s == "-" {
            rest.push(arg);
            rest.extend(iter.by_ref());
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
    Normalized { args: out, rest }
}

/// Whether Go reads the next argument as this flag's value (every non-bool flag).
fn takes_separate_value(arg: &Arg) -> bool {
    arg.get_action().takes_values() && !arg.is_require_equals_set()
}

/// The largest config file read (nsqd's example is 4 KiB; this bounds a mistaken path such as
/// `/dev/zero`).
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads and parses the config file into a TOML table.
fn read_table(path: &Path) -> Result<toml::Table, ConfigError> {
    use std::io::Read;
    let fail = |why: String| ConfigError(format!("--config {}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!("larger than {MAX_CONFIG_BYTES} bytes")));
    }
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

/// A validation error about a flag the file set names the file and the key too.
fn name_file_key(
    e: ConfigError,
    first: &clap::ArgMatches,
    from_file: &[(String, String)],
) -> ConfigError {
    let hit = from_file.iter().find(|(long, _)| {
        e.0.contains(&format!("--{long} ")) || e.0.ends_with(&format!("--{long}"))
    });
    match hit {
        Some((_, key)) => {
            let path = first
                .get_one::<std::path::PathBuf>("config")
                .map_or_else(String::new, |p| p.display().to_string());
            ConfigError(format!("{} (--config {path}: key {key})", e.0))
        }
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TlsRequired;

    fn norm(args: &[&str]) -> Vec<String> {
        let args = std::iter::once("corqd").chain(args.iter().copied());
        let out = normalize_args(args.map(OsString::from).collect());
        assert!(out.rest.is_empty(), "{out:?}");
        out.args
            .into_iter()
            .skip(1)
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    fn opts(args: &[&str]) -> Result<Options, String> {
        let args = std::iter::once("corqd").chain(args.iter().copied());
        match load(args) {
            Ok(l) => Ok(l.cfg.opts),
            Err(LoadError::Usage(e)) => Err(e.to_string()),
            Err(LoadError::Config(e)) => Err(e.0),
        }
    }

    /// A config file with `text`, deleted on drop.
    struct File(std::path::PathBuf);
    impl File {
        fn new(tag: &str, text: &str) -> File {
            let p = std::env::temp_dir().join(format!("corq-cfg-{tag}-{}.cfg", std::process::id()));
            std::fs::write(&p, text).unwrap();
            File(p)
        }
        fn arg(&self) -> String {
            self.0.display().to_string()
        }
    }
    impl Drop for File {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn single_dash_and_separate_values_become_clap_form() {
        assert_eq!(norm(&["-tcp-address", ":4150"]), ["--tcp-address=:4150"]);
        assert_eq!(
            norm(&["-snappy=false", "-verbose"]),
            ["--snappy=false", "--verbose"]
        );
        assert_eq!(norm(&["--statsd-prefix", "-x"]), ["--statsd-prefix=-x"]);
        assert_eq!(norm(&["-tls-required", "-h"]), ["--tls-required", "--help"]);
        assert_eq!(norm(&["-version"]), ["--version"]);
        // Unknown flags and everything after `--` are left for clap to judge.
        assert_eq!(norm(&["-nope=x"]), ["-nope=x"]);
        // As in Go, flags end at the first non-flag or at `--`; the rest is set aside.
        let split = |a: &[&str]| {
            let args = std::iter::once("corqd").chain(a.iter().copied());
            let n = normalize_args(args.map(OsString::from).collect());
            (n.args.len() - 1, n.rest.len())
        };
        assert_eq!(split(&["--snappy", "false", "--tcp-address", ":1"]), (1, 3));
        assert_eq!(split(&["--", "-snappy"]), (0, 1));
        assert_eq!(split(&["-", "-snappy"]), (0, 2));
        assert_eq!(
            norm(&["-max-rdy-count"]),
            ["--max-rdy-count"],
            "no value left"
        );
    }

    #[test]
    fn go_syntax_parses() {
        let o = opts(&[
            "-max-rdy-count",
            "7",
            "--msg-timeout",
            "1s",
            "--msg-timeout=2s",
            "-snappy=false",
            "-deflate=0",
            "-tls-required",
            "-tls-cert",
            "c.pem",
            "-tls-key=k.pem",
            "-lookupd-tcp-address",
            "a:1,b:2",
            "--lookupd-tcp-address",
            "c:3",
            "-tcp-address",
            ":4150",
        ])
        .unwrap();
        assert_eq!(o.max_rdy_count, 7);
        assert_eq!(
            o.msg_timeout, 2000,
            "the last of a repeated flag wins, as in Go"
        );
        assert!(!o.snappy && !o.deflate);
        assert_eq!(
            o.tls_required,
            TlsRequired::Yes,
            "a bare --tls-required means true"
        );
        assert_eq!(o.lookupd_tcp_address, ["a:1", "b:2", "c:3"]);
        assert_eq!(o.tcp_address.to_string(), "0.0.0.0:4150");
        // A Go bool takes its value only with '=': `false` ends the flags, as in Go.
        let l = load(["corqd", "--snappy", "false", "--max-rdy-count", "1"])
            .ok()
            .unwrap();
        assert!(l.cfg.snappy && l.cfg.max_rdy_count == 2500);
        assert!(
            l.notes[0].1.contains("ignored, as nsqd ignores them"),
            "{:?}",
            l.notes
        );
        assert!(opts(&["--max-deflate-level", "10"])
            .unwrap_err()
            .contains("[1,9]"));
    }

    #[test]
    fn file_values_under_command_line_over_defaults() {
        let f = File::new(
            "prec",
            "msg_timeout = \"30s\"\nmax_rdy_count = 100\nsync_timeout = 1500\n\
             nsqlookupd_tcp_addresses = [\"a:1\", \"b:2\"]\nlog_level = 1\nsnappy = false\n\
             e2e_processing_latency_percentiles = [1.0, 0.99]\nid = 5\n",
        );
        let o = opts(&["--config", &f.arg(), "--max-rdy-count", "200"]).unwrap();
        assert_eq!(o.max_rdy_count, 200, "command line over file");
        assert_eq!(o.msg_timeout, 30_000, "file over default");
        assert_eq!(o.sync_timeout, 1500, "an integer duration is milliseconds");
        assert_eq!(o.lookupd_tcp_address, ["a:1", "b:2"]);
        assert_eq!(o.log_level, "debug");
        assert!(!o.snappy);
        assert_eq!(o.e2e_processing_latency_percentile, [1.0, 0.99]);
        assert_eq!(o.node_id, Some(5));
        assert_eq!(o.max_msg_size, 1_048_576, "default");
        let o = opts(&["-config", &f.arg(), "-lookupd-tcp-address", "c:3"]).unwrap();
        assert_eq!(
            o.lookupd_tcp_address,
            ["c:3"],
            "a command-line list replaces the file's"
        );
    }

    #[test]
    fn bad_files_are_one_line_naming_the_key() {
        let one_line = |e: &str| assert!(!e.contains('\n'), "one line: {e}");
        let f = File::new("badval", "max_rdy_count = \"lots\"\n");
        let e = opts(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("max_rdy_count") && e.contains(&f.arg()), "{e}");
        one_line(&e);
        let f = File::new("range", "max_rdy_count = 0\n");
        let e = opts(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("--max-rdy-count must be > 0") && e.contains("key max_rdy_count"),
            "{e}"
        );
        assert!(e.contains(&f.arg()), "{e}");
        let f = File::new("toml", "msg_timeout = \n");
        let e = opts(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("line 1") && e.contains("TOML"), "{e}");
        one_line(&e);
        let f = File::new("array", "msg_timeout = [\"1s\"]\n");
        assert!(opts(&["--config", &f.arg()])
            .unwrap_err()
            .contains("msg_timeout"));
        let f = File::new("dur", "msg_timeout = \"soon\"\n");
        let e = opts(&["--config", &f.arg()]).unwrap_err();
        assert!(e.contains("msg_timeout") && e.contains("soon"), "{e}");
        one_line(&e);
        let e = opts(&["--config", "/nonexistent/nsqd.cfg"]).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
        let e = opts(&["--config", "/dev/zero"]).unwrap_err();
        assert!(e.contains("larger than"), "a bounded read: {e}");
        let f = File::new("table", "[msg_timeout]\nx = 1\n");
        let e = opts(&["--config", &f.arg()]).unwrap_err();
        assert!(
            e.contains("msg_timeout") && e.contains("expected a string"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_ignored_flags_are_noted() {
        let f = File::new(
            "notes",
            "mem_queue_size = 0\nlog_dir = \"x\"\nnode_id = 3\n",
        );
        let args = ["corqd", "--config", &f.arg(), "--verbose"];
        let Ok(l) = load(args) else { panic!("loads") };
        let notes: Vec<&str> = l.notes.iter().map(|(_, n)| n.as_str()).collect();
        let notes = notes.join("\n");
        assert!(notes.contains("\"log_dir\" ignored"), "{notes}");
        assert!(
            notes.contains("\"node_id\" ignored"),
            "nsqd's key is id: {notes}"
        );
        assert!(notes.contains("--mem-queue-size is accepted"), "{notes}");
        assert!(notes.contains("--verbose is accepted"), "{notes}");
        assert!(!notes.contains("--node-id"), "{notes}");
    }
}
