//! statsd output (nsqd `statsd.go`; reference §3.2): every `--statsd-interval` the broker's
//! `/stats` snapshot becomes statsd lines with nsqd's names, packed into UDP datagrams of at
//! most `--statsd-udp-packet-size` bytes and sent from the reactor on a non-blocking socket.
//!
//! Line format: `<prefix><stat>:<value>|c` (a counter: the change since the last push) or
//! `|g` (a gauge), one per line. The prefix is `--statsd-prefix` with `%s` replaced by the host
//! key (`<broadcast address>:<broadcast HTTP port>` with `.` and `:` turned into `_`), and a `.`
//! appended if missing: `nsq.127_0_0_1_4151.`.
//!
//! Nothing here waits: a datagram the kernel will not take now (`WouldBlock`), or any send
//! error, drops the rest of that push; the first error is logged and the next ones are not
//! until a push gets through again.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};

use log::{error, info, warn};

use crate::broker::Broker;
use crate::config::Options;
use crate::http::stats::{E2eLatency, TopicStats};
use crate::protocol::names::is_ephemeral;

/// What the renderer needs besides the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// The full prefix, ending in `.`.
    pub prefix: String,
    /// `--statsd-mem-stats`.
    pub mem_stats: bool,
    /// `--statsd-exclude-ephemeral`.
    pub exclude_ephemeral: bool,
}

/// The counters of the last push, by topic and by (topic, channel): the next push sends
/// differences from them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Last {
    /// Topic → (message_count, message_bytes).
    topics: HashMap<String, (u64, u64)>,
    /// (topic, channel) → (message_count, requeue_count, timeout_count).
    channels: HashMap<(String, String), (u64, u64, u64)>,
}

/// The statsd pusher owned by the peers module.
#[derive(Debug)]
pub struct Statsd {
    /// Non-blocking, connected to the statsd address.
    socket: UdpSocket,
    /// Where it sends (for logs).
    target: SocketAddr,
    format: Format,
    /// `--statsd-interval`, ms.
    interval_ms: u64,
    /// `--statsd-udp-packet-size`.
    packet_size: usize,
    /// When the next push is due (monotonic ms); `None` until the first step, which starts
    /// the first interval.
    next_at: Option<u64>,
    last: Last,
    /// A send error was logged and no push has got through since.
    failing: bool,
}

/// nsqd's host key: `.` and `:` become `_`.
pub fn host_key(host_port: &str) -> String {
    host_port.replace(['.', ':'], "_")
}

/// `--statsd-prefix` with `%s` replaced by the host key, ending in `.` (empty stays empty).
pub fn full_prefix(prefix: &str, broadcast_address: &str, http_port: u16) -> String {
    let key = host_key(&format!("{broadcast_address}:{http_port}"));
    let mut p = prefix.replace("%s", &key);
    if !p.is_empty() && !p.ends_with('.') {
        p.push('.');
    }
    p
}

impl Statsd {
    /// The pusher for `opts`, or `None` when `--statsd-address` is empty or unusable (logged:
    /// the server runs without statsd, as nsqd does when it cannot dial). The address is
    /// resolved here, once, at start.
    pub fn new(opts: &Options, broadcast_address: &str, http_port: u16) -> Option<Self> {
        if opts.statsd_address.is_empty() {
            return None;
        }
        let target = match opts.statsd_address.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                error!(
                    "statsd: cannot resolve {}; not sending stats",
                    opts.statsd_address
                );
                return None;
            }
        };
        let local: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local)
            .and_then(|s| s.connect(target).map(|()| s))
            .and_then(|s| s.set_nonblocking(true).map(|()| s));
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                error!("statsd: cannot create a UDP socket to {target}: {e}; not sending stats");
                return None;
            }
        };
        let prefix = full_prefix(&opts.statsd_prefix, broadcast_address, http_port);
        info!(
            "statsd: pushing to {target} every {} ms as {prefix}*",
            opts.statsd_interval
        );
        Some(Statsd {
            socket,
            target,
            format: Format {
                prefix,
                mem_stats: opts.statsd_mem_stats,
                exclude_ephemeral: opts.statsd_exclude_ephemeral,
            },
            interval_ms: opts.statsd_interval,
            packet_size: opts.statsd_udp_packet_size,
            next_at: None,
            last: Last::default(),
            failing: false,
        })
    }

    /// When the next push is due (0, meaning now, before the first step).
    pub fn next_deadline(&self) -> u64 {
        self.next_at.unwrap_or(0)
    }

    /// Pushes if due (nsqd's ticker: the first push is one interval after start).
    pub fn step(&mut self, now: u64, broker: &Broker) {
        let due = *self
            .next_at
            .get_or_insert(now.saturating_add(self.interval_ms));
        if now < due {
            return;
        }
        self.next_at = Some(now.saturating_add(self.interval_ms));
        let stats = broker.stats_snapshot(0);
        let mut topics = stats.topics.unwrap_or_default();
        topics.retain(|t| t.quarantined.is_none());
        topics.sort_by(|a, b| a.topic_name.cmp(&b.topic_name));
        let rss = if self.format.mem_stats {
            broker.metrics_extras().process_rss_bytes
        } else {
            None
        };
        let lines = render(&topics, rss, &self.format, &mut self.last);
        self.send(&pack(&lines, self.packet_size));
    }

    fn send(&mut self, packets: &[Vec<u8>]) {
        for p in packets {
            if let Err(e) = self.socket.send(p) {
                if !self.failing {
                    warn!(
                        "statsd: sending to {} failed: {e}; this push is dropped",
                        self.target
                    );
                    self.failing = true;
                }
                return;
            }
        }
        if std::mem::take(&mut self.failing) {
            info!("statsd: sending to {} works again", self.target);
        }
    }
}

/// The change of a counter since the last push; a counter that went down (its topic was
/// deleted and created again) counts from zero.
fn delta(now: u64, last: u64) -> u64 {
    now.checked_sub(last).unwrap_or(now)
}

/// Renders one push in nsqd's order and names, updating `last` to this push's counters.
pub fn render(topics: &[TopicStats], rss: Option<u64>, f: &Format, last: &mut Last) -> Vec<String> {
    let p = &f.prefix;
    let mut out = Vec::new();
    let mut next = Last::default();
    for t in topics {
        if f.exclude_ephemeral && is_ephemeral(&t.topic_name) {
            continue;
        }
        let name = &t.topic_name;
        let (lc, lb) = last.topics.get(name).copied().unwrap_or_default();
        out.push(format!(
            "{p}topic.{name}.message_count:{}|c",
            delta(t.message_count, lc)
        ));
        out.push(format!(
            "{p}topic.{name}.message_bytes:{}|c",
            delta(t.message_bytes, lb)
        ));
        out.push(format!("{p}topic.{name}.depth:{}|g", t.depth));
        out.push(format!(
            "{p}topic.{name}.backend_depth:{}|g",
            t.backend_depth
        ));
        e2e_lines(
            &mut out,
            &format!("{p}topic.{name}"),
            &t.e2e_processing_latency,
        );
        next.topics
            .insert(name.clone(), (t.message_count, t.message_bytes));
        for c in &t.channels {
            if f.exclude_ephemeral && is_ephemeral(&c.channel_name) {
                continue;
            }
            let key = (name.clone(), c.channel_name.clone());
            let (lm, lr, lt) = last.channels.get(&key).copied().unwrap_or_default();
            let cp = format!("{p}topic.{name}.channel.{}", c.channel_name);
            out.push(format!(
                "{cp}.message_count:{}|c",
                delta(c.message_count, lm)
            ));
            out.push(format!("{cp}.depth:{}|g", c.depth));
            out.push(format!("{cp}.backend_depth:{}|g", c.backend_depth));
            out.push(format!("{cp}.in_flight_count:{}|g", c.in_flight_count));
            out.push(format!("{cp}.deferred_count:{}|g", c.deferred_count));
            out.push(format!(
                "{cp}.requeue_count:{}|c",
                delta(c.requeue_count, lr)
            ));
            out.push(format!(
                "{cp}.timeout_count:{}|c",
                delta(c.timeout_count, lt)
            ));
            out.push(format!("{cp}.clients:{}|g", c.client_count));
            e2e_lines(&mut out, &cp, &c.e2e_processing_latency);
            next.channels
                .insert(key, (c.message_count, c.requeue_count, c.timeout_count));
        }
    }
    if f.mem_stats {
        mem_lines(&mut out, p, rss);
    }
    *last = next;
    out
}

/// `<stat>.e2e_processing_latency_<pct>` gauges, pct = quantile × 100 as Go's `%.0f`, the
/// value in whole nanoseconds.
fn e2e_lines(out: &mut Vec<String>, stat: &str, e2e: &E2eLatency) {
    for pc in e2e.percentiles.iter().flatten() {
        let pct = pc.quantile * 100.0;
        out.push(format!(
            "{stat}.e2e_processing_latency_{pct:.0}:{}|g",
            pc.value as i64
        ));
    }
}

/// The memory figures corq has a true value for under nsqd's names: the resident set size as
/// `mem.heap_in_use_bytes`, and no garbage collector (pauses 0, no runs). nsqd's other Go-heap
/// gauges (`heap_objects`, `heap_idle_bytes`, `heap_released_bytes`, `next_gc_bytes`) have no
/// meaning here and are not sent.
fn mem_lines(out: &mut Vec<String>, p: &str, rss: Option<u64>) {
    if let Some(rss) = rss {
        out.push(format!("{p}mem.heap_in_use_bytes:{rss}|g"));
    }
    for pct in ["100", "99", "95"] {
        out.push(format!("{p}mem.gc_pause_usec_{pct}:0|g"));
    }
    out.push(format!("{p}mem.gc_runs:0|c"));
}

/// Packs lines (each ended by `\n`) into datagrams of at most `size` bytes, as nsqd's boundary
/// buffered writer does: a line never spans two datagrams, and a line longer than `size` goes
/// alone.
pub fn pack(lines: &[String], size: usize) -> Vec<Vec<u8>> {
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    for l in lines {
        let len = l.len() + 1;
        if !cur.is_empty() && cur.len() + len > size {
            packets.push(std::mem::take(&mut cur));
        }
        cur.extend_from_slice(l.as_bytes());
        cur.push(b'\n');
    }
    if !cur.is_empty() {
        packets.push(cur);
    }
    packets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::stats::{ChannelStats, Percentile};

    fn topic(name: &str, count: u64, channels: Vec<ChannelStats>) -> TopicStats {
        TopicStats {
            topic_name: name.into(),
            message_count: count,
            message_bytes: count * 10,
            depth: 2,
            backend_depth: 2,
            channels,
            ..TopicStats::default()
        }
    }

    fn fmt(exclude_ephemeral: bool, mem_stats: bool) -> Format {
        Format {
            prefix: full_prefix("nsq.%s", "127.0.0.1", 4151),
            mem_stats,
            exclude_ephemeral,
        }
    }

    #[test]
    fn prefix_is_nsqds_host_key() {
        assert_eq!(
            full_prefix("nsq.%s", "127.0.0.1", 4151),
            "nsq.127_0_0_1_4151."
        );
        assert_eq!(full_prefix("app", "h", 1), "app.");
        assert_eq!(full_prefix("a.%s.b.", "h.x", 2), "a.h_x_2.b.");
        assert_eq!(full_prefix("", "h", 1), "");
    }

    #[test]
    fn names_values_and_counter_deltas() {
        let ch = ChannelStats {
            channel_name: "c".into(),
            message_count: 3,
            requeue_count: 1,
            in_flight_count: 1,
            client_count: 1,
            e2e_processing_latency: E2eLatency {
                count: 3,
                percentiles: Some(vec![Percentile {
                    quantile: 0.99,
                    value: 1234.9,
                }]),
            },
            ..ChannelStats::default()
        };
        let mut last = Last::default();
        let lines = render(
            &[topic("t", 3, vec![ch.clone()])],
            None,
            &fmt(false, false),
            &mut last,
        );
        let p = "nsq.127_0_0_1_4151.";
        let want = [
            "topic.t.message_count:3|c",
            "topic.t.message_bytes:30|c",
            "topic.t.depth:2|g",
            "topic.t.backend_depth:2|g",
            "topic.t.channel.c.message_count:3|c",
            "topic.t.channel.c.depth:0|g",
            "topic.t.channel.c.backend_depth:0|g",
            "topic.t.channel.c.in_flight_count:1|g",
            "topic.t.channel.c.deferred_count:0|g",
            "topic.t.channel.c.requeue_count:1|c",
            "topic.t.channel.c.timeout_count:0|c",
            "topic.t.channel.c.clients:1|g",
            "topic.t.channel.c.e2e_processing_latency_99:1234|g",
        ];
        let want: Vec<String> = want.iter().map(|l| format!("{p}{l}")).collect();
        assert_eq!(lines, want);
        // Next push: counters are deltas; a topic that shrank (re-created) counts from zero.
        let lines = render(
            &[topic("t", 5, vec![ch])],
            None,
            &fmt(false, false),
            &mut last,
        );
        assert_eq!(lines[0], format!("{p}topic.t.message_count:2|c"));
        assert_eq!(lines[4], format!("{p}topic.t.channel.c.message_count:0|c"));
        let lines = render(
            &[topic("t", 1, vec![])],
            None,
            &fmt(false, false),
            &mut last,
        );
        assert_eq!(lines[0], format!("{p}topic.t.message_count:1|c"));
    }

    #[test]
    fn ephemeral_exclusion_and_memory() {
        let eph = ChannelStats {
            channel_name: "tail#ephemeral".into(),
            ..ChannelStats::default()
        };
        let topics = [topic("t", 1, vec![eph]), topic("x#ephemeral", 1, vec![])];
        let all = render(&topics, Some(4096), &fmt(false, true), &mut Last::default());
        assert!(all.iter().any(|l| l.contains("x#ephemeral")));
        assert!(all.iter().any(|l| l.contains("tail#ephemeral")));
        assert!(all
            .iter()
            .any(|l| l.ends_with("mem.heap_in_use_bytes:4096|g")));
        assert!(all.iter().any(|l| l.ends_with("mem.gc_runs:0|c")));
        let some = render(&topics, None, &fmt(true, false), &mut Last::default());
        assert!(some
            .iter()
            .all(|l| !l.contains("#ephemeral") && !l.contains("mem.")));
        assert_eq!(some.len(), 4, "{some:?}");
    }

    #[test]
    fn packing_respects_the_packet_size() {
        let lines: Vec<String> = (0..10).map(|i| format!("line{i}:{i}|c")).collect();
        let packets = pack(&lines, 30);
        assert!(packets.iter().all(|p| p.len() <= 30), "{packets:?}");
        let joined: Vec<u8> = packets.concat();
        assert_eq!(joined, format!("{}\n", lines.join("\n")).into_bytes());
        assert!(packets.iter().all(|p| p.ends_with(b"\n")));
        let long = vec!["x".repeat(50), "y".into()];
        let packets = pack(&long, 20);
        assert_eq!(packets.len(), 2, "a long line goes alone");
    }
}
