//! nsqd's default `/stats` text format (reference §2.5; nsqd `printStats` and
//! `ClientV2Stats.String`), byte for byte, and the pieces of Go formatting it needs: `%-Nd`
//! padding, `time.Duration.String`, RFC 3339 UTC times and `NanoSecondToHuman`.
//!
//! The first line is nsqd's `nsqd v<version> (built w/go...)`; corq keeps the `nsqd v<version>`
//! prefix and puts its own build string in the parentheses. No known tool parses this format.

use std::fmt::Write as _;

use super::stats::{ChannelStats, ClientStats, E2eLatency, MemStats, Stats, TopicStats};

/// What the text format needs beyond the snapshot: the build string and the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextCtx<'a> {
    /// Goes in the first line's parentheses, e.g. `corq 0.1.0`.
    pub build: &'a str,
    /// The current time, Unix nanoseconds (for the clients' `connected:` durations).
    pub now_unix_ns: i64,
    /// Time since start, nanoseconds (the `uptime` line, full Go precision).
    pub uptime_ns: i64,
}

/// Appends the text `/stats` for an already filtered snapshot ([`super::stats::apply_query`]).
pub fn render_text(stats: &Stats, ctx: &TextCtx<'_>, out: &mut String) {
    // Writes into a String cannot fail.
    let _ = writeln!(out, "nsqd v{} ({})", stats.version, ctx.build);
    let _ = writeln!(out, "start_time {}", rfc3339(stats.start_time));
    let _ = writeln!(out, "uptime {}", go_duration(ctx.uptime_ns));
    let _ = writeln!(out, "\nHealth: {}", stats.health);
    if let Some(m) = &stats.memory {
        write_memory(m, out);
    }
    let topics = stats.topics.as_deref().unwrap_or_default();
    if topics.is_empty() {
        out.push_str("\nTopics: None\n");
    } else {
        out.push_str("\nTopics:");
    }
    for t in topics {
        write_topic(t, ctx, out);
    }
    if stats.producers.is_empty() {
        out.push_str("\nProducers: None\n");
    } else {
        out.push_str("\nProducers:\n");
        for p in &stats.producers {
            out.push_str("   ");
            write_client(p, ctx, out);
            out.push('\n');
        }
    }
}

fn write_memory(m: &MemStats, out: &mut String) {
    out.push_str("\nMemory:\n");
    let rows: [(&str, u64); 9] = [
        ("heap_objects", m.heap_objects),
        ("heap_idle_bytes", m.heap_idle_bytes),
        ("heap_in_use_bytes", m.heap_in_use_bytes),
        ("heap_released_bytes", m.heap_released_bytes),
        ("gc_pause_usec_100", m.gc_pause_usec_100),
        ("gc_pause_usec_99", m.gc_pause_usec_99),
        ("gc_pause_usec_95", m.gc_pause_usec_95),
        ("next_gc_bytes", m.next_gc_bytes),
        ("gc_total_runs", u64::from(m.gc_total_runs)),
    ];
    for (name, v) in rows {
        let _ = writeln!(out, "   {name:<25}\t{v}");
    }
}

fn write_topic(t: &TopicStats, ctx: &TextCtx<'_>, out: &mut String) {
    let prefix = if t.paused { "*P " } else { "   " };
    let _ = writeln!(
        out,
        "\n{prefix}[{:<15}] depth: {:<5} be-depth: {:<5} msgs: {:<8} e2e%: {}",
        t.topic_name,
        t.depth,
        t.backend_depth,
        t.message_count,
        e2e_text(&t.e2e_processing_latency)
    );
    if let Some(why) = &t.quarantined {
        let _ = writeln!(out, "    QUARANTINED: {why}");
    }
    let dedups = t.dedup_count.unwrap_or(0);
    if let Some(s) = t.settings.filter(|s| s.dedup_window_ms() > 0 || dedups > 0) {
        let window = go_duration(ms_ns(s.dedup_window_ms()));
        let _ = writeln!(out, "    dedup_window: {window} deduplicated: {dedups}");
    }
    for c in &t.channels {
        write_channel(c, ctx, out);
    }
}

fn write_channel(c: &ChannelStats, ctx: &TextCtx<'_>, out: &mut String) {
    let prefix = if c.paused { "   *P " } else { "      " };
    let _ = writeln!(
        out,
        "{prefix}[{:<25}] depth: {:<5} be-depth: {:<5} inflt: {:<4} def: {:<4} re-q: {:<5} timeout: {:<5} msgs: {:<8} e2e%: {}",
        c.channel_name,
        c.depth,
        c.backend_depth,
        c.in_flight_count,
        c.deferred_count,
        c.requeue_count,
        c.timeout_count,
        c.message_count,
        e2e_text(&c.e2e_processing_latency)
    );
    write_failure_line(c, out);
    for cl in c.clients.as_deref().unwrap_or_default() {
        out.push_str("        ");
        write_client(cl, ctx, out);
        out.push('\n');
    }
}

/// corq's failure-handling line under a channel, only when a setting is on or a counter moved
/// (so a server with the features off prints nsqd's text unchanged).
fn write_failure_line(c: &ChannelStats, out: &mut String) {
    let (dead, expired) = (
        c.dead_letter_count.unwrap_or(0),
        c.expired_count.unwrap_or(0),
    );
    let Some(s) = c.settings else { return };
    let on = s.max_attempts() > 0 || s.requeue_backoff_ms() > 0 || s.message_ttl_ms() > 0;
    if !on && dead == 0 && expired == 0 {
        return;
    }
    let _ = writeln!(
        out,
        "        max_attempts: {} requeue_backoff: {} message_ttl: {} dead-lettered: {dead} expired: {expired}",
        s.max_attempts(),
        go_duration(ms_ns(s.requeue_backoff_ms())),
        go_duration(ms_ns(s.message_ttl_ms())),
    );
}

/// Milliseconds as nanoseconds for [`go_duration`], saturating.
fn ms_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

/// `ClientV2Stats.String`: the producer form when the client has publish counts, else the
/// consumer form.
fn write_client(c: &ClientStats, ctx: &TextCtx<'_>, out: &mut String) {
    let id = format!(
        "{}:{} {}",
        c.hostname,
        port_of(&c.remote_address),
        c.user_agent
    );
    let since_ns = c.connect_ts.saturating_mul(1_000_000_000);
    let elapsed = ctx.now_unix_ns.saturating_sub(since_ns);
    // Go's Truncate(time.Second): toward zero.
    let connected = go_duration(elapsed - elapsed % 1_000_000_000);
    if c.pub_counts.is_empty() {
        let _ = write!(
            out,
            "[{} {id:<21}] state: {} inflt: {:<4} rdy: {:<4} fin: {:<8} re-q: {:<8} msgs: {:<8} connected: {connected}",
            c.version,
            c.state,
            c.in_flight_count,
            c.ready_count,
            c.finish_count,
            c.requeue_count,
            c.message_count,
        );
        return;
    }
    let total = c
        .pub_counts
        .iter()
        .fold(0u64, |acc, p| acc.wrapping_add(p.count));
    let topics: Vec<String> = c
        .pub_counts
        .iter()
        .map(|p| format!("{}={}", p.topic, p.count))
        .collect();
    let _ = write!(
        out,
        "[{} {id:<21}] msgs: {total:<8} topics: {} connected: {connected}",
        c.version,
        topics.join(","),
    );
}

/// The port of `host:port` or `[v6]:port` as Go's `net.SplitHostPort` finds it; `""` when it
/// fails (nsqd ignores the error).
fn port_of(addr: &str) -> &str {
    if let Some(rest) = addr.strip_prefix('[') {
        return rest
            .split_once("]:")
            .map(|(_, p)| p)
            .filter(|p| !p.contains(':'))
            .unwrap_or("");
    }
    match addr.split_once(':') {
        Some((_, p)) if !p.contains(':') => p,
        _ => "",
    }
}

/// quantile `Result.String`: each value through `NanoSecondToHuman`, joined with `, `.
fn e2e_text(e: &E2eLatency) -> String {
    let parts: Vec<String> = e
        .percentiles
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|p| nanos_to_human(p.value))
        .collect();
    parts.join(", ")
}

/// nsqd's `stringy.NanoSecondToHuman`: `%0.1f` and the largest unit the value strictly exceeds.
pub fn nanos_to_human(v: f64) -> String {
    let (v, suffix) = if v > 1e9 {
        (v / 1e9, "s")
    } else if v > 1e6 {
        (v / 1e6, "ms")
    } else if v > 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    format!("{v:.1}{suffix}")
}

/// Go's `time.Duration.String` for nanoseconds: `0s`, `12ns`, `1.5µs`, `3.8ms`,
/// `1m25.526619492s`, `2h0m0s`.
pub fn go_duration(ns: i64) -> String {
    let neg = ns < 0;
    let mut u = ns.unsigned_abs();
    let mut s = String::new();
    if u < 1_000_000_000 {
        let (prec, unit) = match u {
            0 => return "0s".to_owned(),
            1..=999 => (0, "ns"),
            1_000..=999_999 => (3, "µs"),
            _ => (6, "ms"),
        };
        let frac = frac_digits(&mut u, prec);
        let _ = write!(s, "{u}{frac}{unit}");
    } else {
        let frac = frac_digits(&mut u, 9);
        let secs = u % 60;
        let mins = u / 60;
        if mins > 0 {
            let hours = mins / 60;
            if hours > 0 {
                let _ = write!(s, "{hours}h");
            }
            let _ = write!(s, "{}m", mins % 60);
        }
        let _ = write!(s, "{secs}{frac}s");
    }
    if neg {
        s.insert(0, '-');
    }
    s
}

/// Go's `fmtFrac`: divides `u` by 10^prec and returns `.digits` without trailing zeros
/// (nothing when the fraction is zero).
fn frac_digits(u: &mut u64, prec: u32) -> String {
    let scale = 10u64.pow(prec);
    let frac = *u % scale;
    *u /= scale;
    if frac == 0 {
        return String::new();
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    format!(".{}", digits.trim_end_matches('0'))
}

/// A civil UTC time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Days since 1970-01-01.
    pub days: i64,
    /// Year.
    pub year: i64,
    /// Month, 1..=12.
    pub month: i64,
    /// Day of month, 1..=31.
    pub day: i64,
    /// Hour.
    pub hour: i64,
    /// Minute.
    pub minute: i64,
    /// Second.
    pub second: i64,
}

/// Splits Unix seconds into a UTC date and time (Howard Hinnant's `civil_from_days`).
pub fn civil(unix_secs: i64) -> Civil {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        days,
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs % 3600 / 60,
        second: secs % 60,
    }
}

/// Go's `time.RFC3339` for a UTC time: `2026-11-25T00:41:18Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    let c = civil(unix_secs);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests;
