//! corqd as a lookupd peer (nsqd `lookup.go`, `lookup_peer.go`; reference §4.2): one
//! non-blocking connection per `--lookupd-tcp-address`, on the reactor's own `mio::Poll`.
//!
//! The module owns those connections and nothing else. The broker reports topology changes as
//! [`PeerEvent`]s and never sees a socket; the reactor hands readiness events for the tokens
//! this module owns ([`owns`]) to [`Peers::on_event`] and calls [`Peers::step`] once per turn.
//!
//! Per lookupd: resolve the name (a helper thread; an IP literal needs none) → connect
//! (non-blocking, 1 s deadline) → `"  V1"`, IDENTIFY with nsqd's JSON, one REGISTER per
//! topic/channel (pipelined) → REGISTER/UNREGISTER for every change → PING every 15 s. Every
//! reply must come within [`REPLY_TIMEOUT_MS`]; a missing, oversized, erroring or garbage reply
//! closes the connection, and it is retried with exponential backoff (up to 15 s) and a full
//! re-registration. Output is bounded: a lookupd that does not read is dropped, not buffered
//! for. Nothing here blocks: a dead, stalled or garbage lookupd costs the loop nothing but
//! these bounded buffers.
//!
//! On a runtime topic creation the lookupds' `/channels?topic=` are queried on a helper
//! thread, and the non-ephemeral channels named are created ([`Broker::precreate_channel`]).
//!
//! The statsd pusher ([`statsd`], `--statsd-address`) is the other outbound peer: a
//! non-blocking UDP socket driven by the same step, its interval part of [`Peers::next_deadline`].

mod conn;
pub mod helpers;
pub mod statsd;
pub mod webhook;
pub mod wire;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::Duration;

use log::{info, warn};
use mio::{Registry, Token, Waker};
use slab::Slab;

use crate::broker::peers::PeerEvent;
use crate::broker::Broker;
use crate::config::Options;
use conn::Peer;
use helpers::{ChannelQueries, QueryLimits, Report};
use statsd::Statsd;
use wire::Identity;

/// The first token of the peer range (below the reactor's listener and waker tokens, far above
/// any connection slab key).
const TOKEN_BASE: usize = usize::MAX - 8192;
/// The most lookupds (nsqd has no limit; clusters run 2–3).
pub const MAX_PEERS: usize = 1024;
/// How long a lookupd may take to answer a command (nsqd: 1 s; more here so a loaded host
/// does not flap its registrations).
pub const REPLY_TIMEOUT_MS: u64 = 5_000;
/// How long a connect may take (nsqd's dial timeout).
pub const CONNECT_TIMEOUT_MS: u64 = 1_000;
/// nsqd's ping interval.
pub const PING_INTERVAL_MS: u64 = 15_000;

/// Whether a reactor token belongs to a lookupd connection.
pub fn owns(token: Token) -> bool {
    (TOKEN_BASE..TOKEN_BASE + MAX_PEERS).contains(&token.0)
}

/// Every lookupd connection.
#[derive(Debug)]
pub struct Peers {
    /// What IDENTIFY says.
    me: Identity,
    /// One entry per configured lookupd; the slab key plus [`TOKEN_BASE`] is its token.
    peers: Slab<Peer>,
    /// Reports from the helper threads.
    reports: Receiver<Report>,
    /// Given to each helper.
    report_tx: Sender<Report>,
    /// Wakes the reactor when a helper reports.
    waker: Arc<Waker>,
    /// The pre-creation worker (absent if its thread could not start).
    queries: Option<ChannelQueries>,
    /// `--max-body-size`: bounds every lookupd reply.
    max_body: usize,
    /// The bounds of a `/channels` query (`--http-client-*-timeout`, `--max-body-size`).
    query_limits: QueryLimits,
    /// Connection attempts so far: tags helper reports so stale ones are ignored.
    attempts: u64,
    /// The statsd pusher, when `--statsd-address` is set (a UDP peer, driven by the same step).
    statsd: Option<Statsd>,
}

impl Peers {
    /// The peers for `opts.lookupd_tcp_address`, advertising the bound ports unless the
    /// `--broadcast-*-port` flags say otherwise. Nothing connects before the first [`step`].
    ///
    /// [`step`]: Peers::step
    pub fn new(opts: &Options, tcp_port: u16, http_port: u16, waker: Arc<Waker>) -> Self {
        let hostname = crate::http::serve::hostname();
        let broadcast_address = if opts.broadcast_address.is_empty() {
            hostname.clone()
        } else {
            opts.broadcast_address.clone()
        };
        let pick = |flag: u16, bound: u16| if flag == 0 { bound } else { flag };
        let me = Identity {
            broadcast_address,
            hostname,
            http_port: pick(opts.broadcast_http_port, http_port),
            tcp_port: pick(opts.broadcast_tcp_port, tcp_port),
            version: crate::NSQD_VERSION.to_owned(),
        };
        let (report_tx, reports) = channel();
        let max_body = opts.max_body_size as usize;
        let statsd = Statsd::new(opts, &me.broadcast_address, me.http_port);
        let mut peers = Peers {
            me,
            peers: Slab::new(),
            reports,
            report_tx,
            waker,
            queries: None,
            max_body,
            query_limits: QueryLimits {
                max_body,
                connect: Duration::from_millis(opts.http_client_connect_timeout),
                request: Duration::from_millis(opts.http_client_request_timeout),
            },
            attempts: 0,
            statsd,
        };
        peers.add_all(&opts.lookupd_tcp_address);
        peers
    }

    /// The addresses currently configured.
    pub fn addresses(&self) -> Vec<String> {
        self.peers.iter().map(|(_, p)| p.addr.clone()).collect()
    }

    fn add_all(&mut self, addrs: &[String]) {
        for a in addrs {
            let a = a.trim();
            if a.is_empty() || self.peers.iter().any(|(_, p)| p.addr == a) {
                continue;
            }
            if self.peers.len() >= MAX_PEERS {
                warn!("lookupd {a}: more than {MAX_PEERS} lookupds, ignored");
                continue;
            }
            info!("lookupd {a}: added");
            self.peers.insert(Peer::new(a.to_owned()));
        }
    }

    /// `PUT /config/nsqlookupd_tcp_addresses`: drop the peers not listed, add the new ones.
    pub fn set_addresses(&mut self, addrs: &[String], registry: &Registry) {
        let keep: Vec<&str> = addrs.iter().map(|a| a.trim()).collect();
        let gone: Vec<usize> = self
            .peers
            .iter()
            .filter(|(_, p)| !keep.contains(&p.addr.as_str()))
            .map(|(k, _)| k)
            .collect();
        for key in gone {
            let mut p = self.peers.remove(key);
            info!("lookupd {}: removed", p.addr);
            p.close(registry);
        }
        self.add_all(addrs);
    }

    /// A readiness event for one of [`owns`]'s tokens.
    pub fn on_event(&mut self, token: Token) {
        if let Some(p) = self.peers.get_mut(token.0.wrapping_sub(TOKEN_BASE)) {
            p.ready = true;
        }
    }

    /// The earliest time (monotonic ms) a peer needs attention.
    pub fn next_deadline(&self) -> Option<u64> {
        let statsd = self.statsd.as_ref().map(Statsd::next_deadline);
        self.peers
            .iter()
            .filter_map(|(_, p)| p.next_deadline())
            .chain(statsd)
            .min()
    }

    /// One turn: apply helper reports, send the broker's topology events, drive every
    /// connection (connect, read replies, ping, time out, reconnect), write.
    pub fn step(&mut self, now: u64, broker: &mut Broker, registry: &Registry) {
        while let Ok(report) = self.reports.try_recv() {
            self.apply_report(report, now, broker, registry);
        }
        for event in broker.take_peer_events() {
            self.broadcast(&event, now);
            if let PeerEvent::TopicCreated(topic) = event {
                self.query_channels(topic);
            }
        }
        for (key, p) in self.peers.iter_mut() {
            let token = Token(TOKEN_BASE + key);
            if p.drive(now, &self.me, broker, registry, self.max_body) {
                self.attempts += 1;
                p.begin(
                    self.attempts,
                    key,
                    now,
                    token,
                    registry,
                    &self.report_tx,
                    &self.waker,
                );
            }
        }
        if let Some(s) = &mut self.statsd {
            s.step(now, broker);
        }
    }

    fn apply_report(&mut self, report: Report, now: u64, broker: &mut Broker, reg: &Registry) {
        match report {
            Report::Resolved { slot, gen, result } => {
                let Some(p) = self.peers.get_mut(slot) else {
                    return;
                };
                let token = Token(TOKEN_BASE + slot);
                p.resolved(gen, result, now, token, reg);
            }
            Report::Channels { topic, channels } => {
                for c in channels {
                    broker.precreate_channel(&topic, &c);
                }
            }
        }
    }

    /// Sends one change to every connected lookupd.
    fn broadcast(&mut self, event: &PeerEvent, now: u64) {
        let (verb, topic, channel) = match event {
            PeerEvent::TopicCreated(t) => ("REGISTER", t, None),
            PeerEvent::ChannelCreated(t, c) => ("REGISTER", t, Some(c.as_str())),
            PeerEvent::ChannelDeleted(t, c) => ("UNREGISTER", t, Some(c.as_str())),
            PeerEvent::TopicDeleted(t) => ("UNREGISTER", t, None),
        };
        for (_, p) in self.peers.iter_mut() {
            p.command(verb, topic, channel, now);
        }
    }

    /// nsqd's pre-creation query for a topic created at run time, on the helper thread.
    fn query_channels(&mut self, topic: String) {
        let addrs: Vec<String> = self
            .peers
            .iter()
            .filter_map(|(_, p)| p.http_addr())
            .collect();
        if addrs.is_empty() {
            if !self.peers.is_empty() {
                warn!("topic {topic}: no available lookupd to query for channels to pre-create");
            }
            return;
        }
        if self.queries.is_none() {
            let tx = self.report_tx.clone();
            self.queries = ChannelQueries::spawn(tx, self.waker.clone(), self.query_limits);
        }
        if let Some(q) = &self.queries {
            q.submit(topic, addrs);
        }
    }

    /// Clean shutdown: UNREGISTER every topic on every connected lookupd (best effort, one
    /// non-blocking write), then close. lookupd drops the producer when the connection
    /// closes anyway; the UNREGISTERs also make it forget this node's ephemeral topics.
    pub fn shutdown(&mut self, broker: &Broker, registry: &Registry, now: u64) {
        let mut topics: Vec<String> = broker.registrations().into_iter().map(|(t, _)| t).collect();
        topics.dedup();
        for (_, p) in self.peers.iter_mut() {
            for t in &topics {
                p.command("UNREGISTER", t, None, now);
            }
            p.flush_once();
            p.close(registry);
        }
    }
}
