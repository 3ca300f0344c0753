//! The blocking work lookupd peering needs, kept off the reactor thread: resolving a lookupd's
//! name (one short-lived thread per attempt) and nsqd's channel pre-creation query
//! (`GET /channels?topic=` on every lookupd, one long-lived worker with a bounded queue). Each
//! reports back over a channel and wakes the reactor.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{Sender, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use log::warn;
use mio::Waker;
use serde::Deserialize;

/// The bounds of one `/channels` query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// nsqd's `--max-body-size`: the largest answer read.
    pub max_body: usize,
    /// `--http-client-connect-timeout`.
    pub connect: Duration,
    /// `--http-client-request-timeout` (applied to each read and write).
    pub request: Duration,
}
/// Channel queries waiting for the worker; past this a new topic's query is skipped (logged).
const QUERY_QUEUE: usize = 1024;

/// What a helper reports to the reactor.
#[derive(Debug)]
pub enum Report {
    /// A lookupd address was resolved (or not) for connection attempt `gen` of peer `slot`.
    Resolved {
        /// The peer's slot.
        slot: usize,
        /// The attempt it was for (a later attempt makes it stale).
        gen: u64,
        /// The address to dial, or why there is none.
        result: Result<SocketAddr, String>,
    },
    /// The channels the lookupds know for a topic this node just created.
    Channels {
        /// The topic.
        topic: String,
        /// The union of the answers.
        channels: Vec<String>,
    },
}

/// Resolves `addr` on a new thread and reports it.
pub fn resolve(addr: String, slot: usize, gen: u64, tx: Sender<Report>, waker: Arc<Waker>) {
    let spawned = crate::cpu::spawn_helper("corq-resolve", move || {
        let result = pick(&addr);
        let _ = tx.send(Report::Resolved { slot, gen, result });
        let _ = waker.wake();
    });
    if let Err(e) = spawned {
        warn!("lookupd: cannot start a resolver thread: {e}");
    }
}

/// The first address of `addr`, IPv4 preferred (lookupds usually listen on IPv4 only).
fn pick(addr: &str) -> Result<SocketAddr, String> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("resolve {addr}: {e}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("resolve {addr}: no address"))
}

/// One pre-creation query: the topic, and the lookupds' `host:port` HTTP addresses.
type Query = (String, Vec<String>);

/// The pre-creation worker's queue.
#[derive(Debug)]
pub struct ChannelQueries {
    tx: SyncSender<Query>,
}

impl ChannelQueries {
    /// Starts the worker; `limits` bound each query.
    pub fn spawn(report: Sender<Report>, waker: Arc<Waker>, limits: QueryLimits) -> Option<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Query>(QUERY_QUEUE);
        let spawned = crate::cpu::spawn_helper("corq-lookupd-http", move || {
            for (topic, addrs) in rx {
                let channels = query_all(&topic, &addrs, limits);
                if report.send(Report::Channels { topic, channels }).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        });
        match spawned {
            Ok(_) => Some(ChannelQueries { tx }),
            Err(e) => {
                warn!("lookupd: cannot start the channel query thread: {e}");
                None
            }
        }
    }

    /// Queues a query without blocking.
    pub fn submit(&self, topic: String, addrs: Vec<String>) {
        if let Err(TrySendError::Full((topic, _))) = self.tx.try_send((topic, addrs)) {
            warn!("topic {topic}: lookupd channel query queue full, not pre-creating channels");
        }
    }
}

/// Asks every lookupd; the union of the successful answers (nsqd `GetLookupdTopicChannels`).
fn query_all(topic: &str, addrs: &[String], limits: QueryLimits) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for addr in addrs {
        match get_channels(addr, topic, limits) {
            Ok(list) => {
                for c in list {
                    if !all.contains(&c) {
                        all.push(c);
                    }
                }
            }
            Err(e) => warn!("topic {topic}: lookupd {addr} /channels: {e}"),
        }
    }
    all
}

/// `GET http://addr/channels?topic=` with nsqd's client timeouts and a bounded answer.
fn get_channels(addr: &str, topic: &str, limits: QueryLimits) -> Result<Vec<String>, String> {
    let sock = pick(addr)?;
    // A zero timeout means none to std; nsqd's zero means none too.
    let some = |d: Duration| (!d.is_zero()).then_some(d);
    let mut s = match some(limits.connect) {
        Some(t) => TcpStream::connect_timeout(&sock, t),
        None => TcpStream::connect(sock),
    }
    .map_err(|e| e.to_string())?;
    s.set_read_timeout(some(limits.request))
        .and_then(|()| s.set_write_timeout(some(limits.request)))
        .map_err(|e| e.to_string())?;
    // Topic names are [.a-zA-Z0-9_-] plus `#ephemeral`: only '#' needs escaping.
    let escaped = topic.replace('#', "%23");
    let req = format!(
        "GET /channels?topic={escaped} HTTP/1.0\r\nHost: {addr}\r\n\
         Accept: application/vnd.nsq; version=1.0\r\nUser-Agent: corqd\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let cap = u64::try_from(limits.max_body)
        .unwrap_or(u64::MAX)
        .saturating_add(16 * 1024);
    (&mut s)
        .take(cap)
        .read_to_end(&mut raw)
        .map_err(|e| e.to_string())?;
    parse_channels_reply(&raw)
}

/// Parses the HTTP/1.0 reply to `/channels`: a 200 with `{"channels":[...]}`.
fn parse_channels_reply(raw: &[u8]) -> Result<Vec<String>, String> {
    #[derive(Deserialize)]
    struct Reply {
        channels: Option<Vec<String>>,
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("status {status:?}"));
    }
    let reply: Reply =
        serde_json::from_slice(&raw[split + 4..]).map_err(|e| format!("bad JSON: {e}"))?;
    Ok(reply.channels.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_reply() {
        let ok = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"channels\":[\"a\",\"b\"]}";
        assert_eq!(parse_channels_reply(ok).unwrap(), vec!["a", "b"]);
        assert!(parse_channels_reply(b"HTTP/1.0 400 Bad\r\n\r\n{}").is_err());
        assert!(parse_channels_reply(b"garbage").is_err());
        assert!(parse_channels_reply(b"HTTP/1.0 200 OK\r\n\r\nnot json").is_err());
        assert_eq!(pick("127.0.0.1:4161").unwrap().port(), 4161);
        assert!(pick("no-port").is_err());
    }
}
