//! The broker: topics, channels and client sessions, driven by decoded commands and timers.
//!
//! Everything here runs on the reactor thread and nowhere else (design invariant 1). The broker
//! never touches a socket or reads the clock: the reactor hands it decoded [`Command`]s with the
//! time ([`Now`]), and takes back the bytes it queued for each client ([`Broker::take_dirty`],
//! [`Broker::output`]) and the sessions it wants closed.
//!
//! One handler function per command, each checking in nsqd's order (state and parameters are
//! already checked by `protocol::decode`; here come the domain checks). Delivery is a separate
//! pass ([`Broker::pump`]) over the channels that something touched this turn, so one loop
//! turn's publishes, RDYs and FINs turn into one batch of frames per client.

pub mod channel;
pub mod client;
mod restore;
pub mod topic;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use log::{debug, info, warn};
use slab::Slab;

use crate::config::Config;
use crate::protocol::identify::{self, IdentifyLimits, ServerInfo};
use crate::protocol::{
    self, encode, names, Command, ConnState, DecodeCtx, Limits, MessageId, ProtoError,
};
use crate::storage::checkpoint::Checkpointer;
use crate::storage::{Log, LogConfig, NewRecord, StorageError, StorageWorker};
use crate::timer::Wheel;

use channel::{AckError, Channel, InFlight, ReqAt};
use client::{Client, ClientKey, OutBuf, Settings};
use topic::Topic;

/// The time, as the reactor read it once for this phase of the loop turn.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    /// Monotonic milliseconds: the timing wheel's clock.
    pub mono_ms: u64,
    /// Wall-clock nanoseconds since the Unix epoch: message timestamps and DPUB deadlines, which
    /// must mean the same thing after a restart.
    pub wall_ns: i64,
}

/// What the broker's timers fire. Keys are cancelled before they can go stale: a channel cancels
/// its timers when deleted, a client its heartbeat when it disconnects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerEvent {
    /// A message's in-flight timeout.
    InFlight {
        /// Topic key.
        topic: usize,
        /// Channel key within the topic.
        channel: usize,
        /// Log offset of the message.
        offset: u64,
    },
    /// A deferred message is due.
    Deferred {
        /// Topic key.
        topic: usize,
        /// Channel key within the topic.
        channel: usize,
        /// Log offset of the message.
        offset: u64,
    },
    /// Time to send a heartbeat to a client, or to close it for missing two.
    Heartbeat(ClientKey),
    /// The periodic step: sync the logs, trim them, checkpoint the channels.
    Maintenance,
}

/// Errors that stop the broker from starting.
#[derive(Debug)]
pub enum StartError {
    /// A topic's log could not be opened.
    Storage(StorageError),
    /// The checkpoint or the data directory could not be read.
    Io(PathBuf, std::io::Error),
    /// The checkpoint is not valid JSON of the expected shape.
    BadCheckpoint(PathBuf, String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StartError::BadCheckpoint(p, e) => {
                write!(f, "{}: invalid checkpoint: {e}", p.display())
            }
        }
    }
}

impl std::error::Error for StartError {}

/// The broker.
#[derive(Debug)]
pub struct Broker {
    /// The validated configuration.
    cfg: Config,
    /// Limits for the decoder.
    limits: Limits,
    /// Ranges for IDENTIFY's fields.
    identify_limits: IdentifyLimits,
    /// What IDENTIFY replies say about the server.
    server_info: ServerInfo,
    /// Where topic logs and the checkpoint live.
    data_dir: PathBuf,
    /// The topics.
    topics: Slab<Topic>,
    /// Topic name → key.
    topic_index: HashMap<String, usize>,
    /// Connected client sessions.
    clients: Slab<Client>,
    /// Every timer of the broker.
    wheel: Wheel<TimerEvent>,
    /// Reused buffer for what the wheel fires.
    fired: Vec<TimerEvent>,
    /// Clients with output queued (or marked closing) this turn.
    dirty: Vec<ClientKey>,
    /// Channels to run the delivery pass over.
    pump_queue: Vec<(usize, usize)>,
    /// Writes checkpoints off the reactor thread.
    checkpointer: Checkpointer,
    /// Runs the logs' blocking work (fsync, segment creation) off the reactor thread.
    worker: StorageWorker,
    /// Whether topics or channels changed since the last checkpoint (checkpoint sooner).
    topology_changed: bool,
    /// xorshift state for sample_rate.
    rng: u64,
}

/// Subdirectory of the data path that holds one directory per topic.
pub const TOPICS_DIR: &str = "topics";
/// Suffix of a topic's directory: keeps the names `.` and `..`, valid topic names, harmless.
pub const TOPIC_DIR_SUFFIX: &str = ".topic";
/// The checkpoint file in the data path.
pub const CHECKPOINT_FILE: &str = "corq.dat";

/// The directory of a topic's log.
pub fn topic_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir
        .join(TOPICS_DIR)
        .join(format!("{name}{TOPIC_DIR_SUFFIX}"))
}

impl Broker {
    /// Opens the data directory: loads the checkpoint, reopens (and recovers) every topic's log.
    ///
    /// # Errors
    /// [`StartError`] naming the file that could not be read.
    /// `notify` is called from the storage helper thread whenever a job finishes; the reactor
    /// passes a closure that wakes its poll.
    pub fn open(cfg: Config, now: Now, notify: Box<dyn Fn() + Send>) -> Result<Broker, StartError> {
        let data_dir = if cfg.data_path.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            cfg.data_path.clone()
        };
        let limits = Limits {
            max_msg_size: cfg.max_msg_size,
            max_body_size: cfg.max_body_size,
            max_rdy_count: cfg.max_rdy_count,
            max_req_timeout_ms: cfg.max_req_timeout,
        };
        let identify_limits = IdentifyLimits {
            max_heartbeat_interval_ms: cfg.max_heartbeat_interval,
            max_output_buffer_size: cfg.max_output_buffer_size,
            min_output_buffer_timeout_ms: cfg.min_output_buffer_timeout,
            max_output_buffer_timeout_ms: cfg.max_output_buffer_timeout,
            max_msg_timeout_ms: cfg.max_msg_timeout,
            default_msg_timeout_ms: cfg.msg_timeout,
            default_output_buffer_timeout_ms: cfg.output_buffer_timeout,
            ..IdentifyLimits::default()
        };
        let server_info = ServerInfo {
            max_rdy_count: cfg.max_rdy_count,
            version: crate::VERSION.to_owned(),
            max_msg_timeout_ms: cfg.max_msg_timeout,
            max_deflate_level: 6,
            auth_required: false,
        };
        let checkpointer = Checkpointer::spawn(data_dir.join(CHECKPOINT_FILE))
            .map_err(|e| StartError::Io(data_dir.clone(), e))?;
        let worker =
            StorageWorker::spawn(notify).map_err(|e| StartError::Io(data_dir.clone(), e))?;
        let mut broker = Broker {
            cfg,
            limits,
            identify_limits,
            server_info,
            data_dir,
            topics: Slab::new(),
            topic_index: HashMap::new(),
            clients: Slab::new(),
            wheel: Wheel::new(now.mono_ms),
            fired: Vec::new(),
            dirty: Vec::new(),
            pump_queue: Vec::new(),
            checkpointer,
            worker,
            topology_changed: false,
            rng: 0x2545_F491_4F6C_DD1D ^ now.wall_ns as u64,
        };
        broker.restore(now)?;
        let first = now.mono_ms + broker.cfg.sync_timeout;
        broker.wheel.insert(first, TimerEvent::Maintenance);
        Ok(broker)
    }

    /// The log configuration every topic uses.
    fn log_config(&self) -> LogConfig {
        LogConfig {
            max_bytes_per_file: self.cfg.max_bytes_per_file,
            max_msg_size: self.cfg.max_msg_size,
            sync_every: self.cfg.sync_every,
            sync_timeout_ms: self.cfg.sync_timeout,
        }
    }

    // ----- sessions -----------------------------------------------------------------------

    /// A new connection finished its magic: start a session and its heartbeat.
    pub fn connect(&mut self, token: usize, remote: SocketAddr, now: Now) -> ClientKey {
        let ip = remote.ip().to_string();
        let settings = Settings {
            client_id: ip.clone(),
            hostname: ip,
            user_agent: String::new(),
            heartbeat_ms: Some(self.identify_limits.default_heartbeat_interval_ms),
            msg_timeout_ms: self.cfg.msg_timeout,
            sample_rate: 0,
            output_buffer_size: self.identify_limits.default_output_buffer_size,
            output_buffer_timeout_ms: self.cfg.output_buffer_timeout,
        };
        let ck = self.clients.insert(Client::new(
            token,
            remote,
            settings,
            now.mono_ms,
            now.wall_ns,
        ));
        self.schedule_heartbeat(ck, now.mono_ms);
        debug!("client {ck} connected from {remote}");
        ck
    }

    /// The connection is gone: end the session. Its in-flight messages wait for their timeouts,
    /// as in nsqd; an ephemeral channel (and topic) left without consumers is deleted.
    pub fn disconnect(&mut self, ck: ClientKey) {
        let Some(client) = self.clients.try_remove(ck) else {
            return;
        };
        if let Some(t) = client.heartbeat_timer {
            self.wheel.cancel(t);
        }
        let Some((tk, chk)) = client.sub else { return };
        let Some(topic) = self.topics.get_mut(tk) else {
            return;
        };
        let Some(ch) = topic.channels.get_mut(chk) else {
            return;
        };
        ch.remove_consumer(ck);
        if ch.ephemeral && ch.consumers.is_empty() {
            self.delete_channel(tk, chk);
        }
        debug!("client {ck} disconnected");
    }

    /// The decoder's view of a session.
    pub fn decode_ctx(&self, ck: ClientKey) -> DecodeCtx {
        match self.clients.get(ck) {
            Some(c) => DecodeCtx {
                state: c.state,
                heartbeats_disabled: c.settings.heartbeat_ms.is_none(),
            },
            None => DecodeCtx {
                state: ConnState::Closing,
                heartbeats_disabled: false,
            },
        }
    }

    /// The decoder's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether the session is over (fatal error, missed heartbeats, gone).
    pub fn is_closing(&self, ck: ClientKey) -> bool {
        self.clients.get(ck).is_none_or(|c| c.closing)
    }

    /// The reactor token of a client's connection.
    pub fn client_token(&self, ck: ClientKey) -> Option<usize> {
        self.clients.get(ck).map(|c| c.token)
    }

    /// Bytes queued for a client, for the reactor to write.
    pub fn output(&mut self, ck: ClientKey) -> Option<&mut OutBuf> {
        self.clients.get_mut(ck).map(|c| &mut c.out)
    }

    /// Takes the clients with output (or a close) queued since the last call. The caller hands
    /// the vector back with [`Broker::return_dirty`] so it is reused.
    pub fn take_dirty(&mut self) -> Vec<ClientKey> {
        for &ck in &self.dirty {
            if let Some(c) = self.clients.get_mut(ck) {
                c.dirty = false;
            }
        }
        std::mem::take(&mut self.dirty)
    }

    /// Gives back the vector from [`Broker::take_dirty`], emptied, to keep its allocation.
    pub fn return_dirty(&mut self, mut v: Vec<ClientKey>) {
        v.clear();
        if self.dirty.is_empty() {
            self.dirty = v;
        }
    }

    /// Marks a client as having output.
    fn mark_dirty(dirty: &mut Vec<ClientKey>, ck: ClientKey, client: &mut Client) {
        if !client.dirty {
            client.dirty = true;
            dirty.push(ck);
        }
    }

    /// Queues a response frame.
    fn respond(&mut self, ck: ClientKey, data: &[u8]) {
        if let Some(c) = self.clients.get_mut(ck) {
            encode::encode_response(&mut c.out.buf, data);
            Self::mark_dirty(&mut self.dirty, ck, c);
        }
    }

    /// Queues an error frame; a fatal one also ends the session once it is written.
    pub fn fail(&mut self, ck: ClientKey, err: &ProtoError) {
        if let Some(c) = self.clients.get_mut(ck) {
            encode::encode_error(&mut c.out.buf, err);
            if err.fatal {
                debug!("client {ck}: fatal {}", err.frame_data());
                c.closing = true;
            }
            Self::mark_dirty(&mut self.dirty, ck, c);
        }
    }

    /// Ends a session without an error frame (line too long, missed heartbeats).
    pub fn close_silently(&mut self, ck: ClientKey) {
        if let Some(c) = self.clients.get_mut(ck) {
            c.closing = true;
            Self::mark_dirty(&mut self.dirty, ck, c);
        }
    }

    // ----- commands -----------------------------------------------------------------------

    /// Runs one decoded command for a client.
    pub fn apply(&mut self, ck: ClientKey, cmd: Command<'_>, now: Now) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.last_read_ms = now.mono_ms;
        match cmd {
            Command::Identify { body } => self.identify(ck, body, now),
            Command::Auth { .. } => {
                self.fail(ck, &fatal(protocol::E_AUTH_DISABLED, "AUTH disabled"))
            }
            Command::Sub { topic, channel } => self.sub(ck, topic, channel),
            Command::Pub { topic, body } => {
                self.publish(ck, "PUB", topic, std::iter::once(body), 0, now)
            }
            Command::Mpub { topic, bodies } => self.publish(ck, "MPUB", topic, bodies, 0, now),
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => self.publish(ck, "DPUB", topic, std::iter::once(body), defer_ms, now),
            Command::Rdy { count } => self.rdy(ck, count),
            Command::Fin { id } => self.fin(ck, &id),
            Command::Req { id, timeout_ms, .. } => self.req(ck, &id, timeout_ms, now),
            Command::Touch { id } => self.touch(ck, &id, now),
            Command::Nop => {}
            Command::Cls => self.cls(ck),
        }
    }

    fn identify(&mut self, ck: ClientKey, body: &[u8], now: Now) {
        let id = match identify::parse_identify(body, &self.identify_limits) {
            Ok(id) => id,
            Err(e) => return self.fail(ck, &e),
        };
        let reply = id
            .feature_negotiation
            .then(|| identify::identify_response(&id, &self.server_info));
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let first = !c.identified;
        c.identified = true;
        let s = &mut c.settings;
        s.client_id = id.client_id;
        s.hostname = id.hostname;
        s.user_agent = id.user_agent;
        s.msg_timeout_ms = id.msg_timeout_ms;
        s.sample_rate = id.sample_rate;
        s.output_buffer_size = id.output_buffer_size;
        s.output_buffer_timeout_ms = id.output_buffer_timeout_ms;
        s.heartbeat_ms = id.heartbeat_interval_ms;
        // As nsqd: only the first IDENTIFY restarts the heartbeat ticker.
        if first {
            if let Some(t) = c.heartbeat_timer.take() {
                self.wheel.cancel(t);
            }
            c.last_heartbeat_ms = now.mono_ms;
            self.schedule_heartbeat(ck, now.mono_ms);
        }
        match reply {
            Some(json) => self.respond(ck, &json),
            None => self.respond(ck, b"OK"),
        }
    }

    fn sub(&mut self, ck: ClientKey, topic_name: &str, channel_name: &str) {
        let max = self.cfg.max_channel_consumers;
        if max > 0 {
            let count = self.topic_index.get(topic_name).and_then(|&tk| {
                let t = &self.topics[tk];
                t.channel_index
                    .get(channel_name)
                    .map(|&chk| t.channels[chk].consumers.len())
            });
            if count.unwrap_or(0) >= max {
                let desc = format!(
                    "SUB failed consumers for {topic_name}:{channel_name} exceeds limit of {max}"
                );
                return self.fail(ck, &fatal(protocol::E_SUB_FAILED, &desc));
            }
        }
        let tk = match self.topic_key(topic_name) {
            Ok(tk) => tk,
            Err(e) => {
                return self.fail(
                    ck,
                    &fatal(protocol::E_SUB_FAILED, &format!("SUB failed {e}")),
                )
            }
        };
        let topic = &mut self.topics[tk];
        let known = topic.channel_index.contains_key(channel_name);
        let chk = topic.channel_key(channel_name);
        topic.channels[chk].consumers.push(ck);
        if !known && !topic.ephemeral && !names::is_ephemeral(channel_name) {
            self.topology_changed = true;
            info!("topic {topic_name}: new channel {channel_name}");
        }
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ConnState::Subscribed;
            c.sub = Some((tk, chk));
        }
        self.respond(ck, b"OK");
    }

    /// Looks a topic up, creating it (and its log) on first use.
    fn topic_key(&mut self, name: &str) -> Result<usize, StorageError> {
        if let Some(&tk) = self.topic_index.get(name) {
            return Ok(tk);
        }
        let log = Log::open(&topic_dir(&self.data_dir, name), self.log_config())?;
        let topic = Topic::new(name, log, 0);
        if !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {name}: created");
        let tk = self.topics.insert(topic);
        self.topic_index.insert(name.to_owned(), tk);
        Ok(tk)
    }

    /// PUB, MPUB and DPUB: append to the topic's log, answer OK, wake the topic's channels.
    fn publish<'a>(
        &mut self,
        ck: ClientKey,
        verb: &str,
        topic_name: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
        defer_ms: u64,
        now: Now,
    ) {
        let failed = |e: &dyn std::fmt::Display| {
            let code = match verb {
                "MPUB" => protocol::E_MPUB_FAILED,
                "DPUB" => protocol::E_DPUB_FAILED,
                _ => protocol::E_PUB_FAILED,
            };
            fatal(code, &format!("{verb} failed {e}"))
        };
        let tk = match self.topic_key(topic_name) {
            Ok(tk) => tk,
            Err(e) => return self.fail(ck, &failed(&e)),
        };
        let deliver_at_ns = if defer_ms == 0 {
            0
        } else {
            now.wall_ns.saturating_add(channel::ms_to_ns(defer_ms))
        };
        let topic = &mut self.topics[tk];
        let mut count = 0u64;
        let mut bytes = 0u64;
        let records = bodies.map(|body| {
            count += 1;
            bytes += body.len() as u64;
            NewRecord {
                timestamp_ns: now.wall_ns,
                deliver_at_ns,
                attempts: 0,
                body,
            }
        });
        // A small stack of records keeps MPUB one log call without a per-publish allocation
        // for the common single-message case.
        let result = append_all(&mut topic.log, records);
        if let Err(e) = result {
            warn!("topic {topic_name}: {verb} failed: {e}");
            return self.fail(ck, &failed(&e));
        }
        topic.message_count += count;
        topic.message_bytes += bytes;
        if !topic.paused {
            for (chk, ch) in topic.channels.iter_mut() {
                queue_pump(&mut self.pump_queue, tk, chk, ch);
            }
        }
        self.respond(ck, b"OK");
    }

    fn rdy(&mut self, ck: ClientKey, count: u64) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        if c.state != ConnState::Subscribed {
            // After CLS nsqd ignores RDY; the decoder already refused it in other states.
            return;
        }
        c.rdy = count;
        if let Some((tk, chk)) = c.sub {
            self.queue_pump(tk, chk);
        }
    }

    /// The channel and offset a FIN/REQ/TOUCH names, or the non-fatal error nsqd gives.
    fn in_flight_target(&self, ck: ClientKey, id: &MessageId) -> Option<(usize, usize, u64)> {
        let (tk, chk) = self.clients.get(ck)?.sub?;
        let offset = protocol::offset_from_message_id(id)?;
        Some((tk, chk, offset))
    }

    fn ack_failed(
        &mut self,
        ck: ClientKey,
        code: &'static str,
        verb: &str,
        id: &MessageId,
        why: AckError,
    ) {
        let id = String::from_utf8_lossy(id);
        let err = ProtoError {
            code,
            desc: format!("{verb} {id} failed {}", why.reason()),
            fatal: false,
        };
        self.fail(ck, &err);
    }

    fn fin(&mut self, ck: ClientKey, id: &MessageId) {
        let result = match self.in_flight_target(ck, id) {
            Some((tk, chk, offset)) => {
                self.channel_op(tk, chk, |ch, wheel| ch.fin(offset, ck, wheel).map(|_| ()))
            }
            None => Err(AckError::NotInFlight),
        };
        match result {
            Ok(()) => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                    c.finish_count += 1;
                    if let Some((tk, chk)) = c.sub {
                        self.queue_pump(tk, chk);
                    }
                }
            }
            Err(why) => self.ack_failed(ck, protocol::E_FIN_FAILED, "FIN", id, why),
        }
    }

    fn req(&mut self, ck: ClientKey, id: &MessageId, delay_ms: u64, now: Now) {
        let result = match self.in_flight_target(ck, id) {
            Some((tk, chk, offset)) => {
                let event = TimerEvent::Deferred {
                    topic: tk,
                    channel: chk,
                    offset,
                };
                let at = ReqAt {
                    now_ms: now.mono_ms,
                    wall_ns: now.wall_ns,
                    event,
                };
                self.channel_op(tk, chk, |ch, wheel| ch.req(offset, ck, delay_ms, at, wheel))
            }
            None => Err(AckError::NotInFlight),
        };
        match result {
            Ok(()) => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.in_flight = c.in_flight.saturating_sub(1);
                    c.requeue_count += 1;
                    if let Some((tk, chk)) = c.sub {
                        self.queue_pump(tk, chk);
                    }
                }
            }
            Err(why) => self.ack_failed(ck, protocol::E_REQ_FAILED, "REQ", id, why),
        }
    }

    fn touch(&mut self, ck: ClientKey, id: &MessageId, now: Now) {
        let timeout = self
            .clients
            .get(ck)
            .map_or(0, |c| c.settings.msg_timeout_ms);
        let max = self.cfg.max_msg_timeout;
        let result = match self.in_flight_target(ck, id) {
            Some((tk, chk, offset)) => self.channel_op(tk, chk, |ch, wheel| {
                ch.touch(offset, ck, now.mono_ms, timeout, max, wheel)
            }),
            None => Err(AckError::NotInFlight),
        };
        if let Err(why) = result {
            self.ack_failed(ck, protocol::E_TOUCH_FAILED, "TOUCH", id, why);
        }
    }

    fn cls(&mut self, ck: ClientKey) {
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ConnState::Closing;
            c.rdy = 0;
        }
        self.respond(ck, b"CLOSE_WAIT");
    }

    /// Runs `op` on a channel with the wheel, or reports the message as not in flight.
    fn channel_op<T>(
        &mut self,
        tk: usize,
        chk: usize,
        op: impl FnOnce(&mut Channel, &mut Wheel<TimerEvent>) -> Result<T, AckError>,
    ) -> Result<T, AckError> {
        let ch = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
            .ok_or(AckError::NotInFlight)?;
        op(ch, &mut self.wheel)
    }

    // ----- delivery -----------------------------------------------------------------------

    fn queue_pump(&mut self, tk: usize, chk: usize) {
        if let Some(ch) = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
        {
            queue_pump(&mut self.pump_queue, tk, chk, ch);
        }
    }

    /// The delivery pass: every channel touched this turn hands messages to its ready consumers.
    pub fn pump(&mut self, now: Now) {
        while let Some((tk, chk)) = self.pump_queue.pop() {
            self.pump_channel(tk, chk, now);
        }
    }

    fn pump_channel(&mut self, tk: usize, chk: usize, now: Now) {
        let Some(topic) = self.topics.get_mut(tk) else {
            return;
        };
        let Some(ch) = topic.channels.get_mut(chk) else {
            return;
        };
        ch.pump_queued = false;
        if ch.paused {
            return;
        }
        let clients = &mut self.clients;
        while let Some(ck) = ch.pick_consumer(|c| clients.get(c).is_some_and(Client::is_ready)) {
            // Requeued messages first (they are the oldest); then new ones, unless the topic is
            // paused (a paused topic hands nothing new to its channels).
            let (offset, attempts, fresh) = if let Some(r) = ch.requeued.pop_front() {
                (r.offset, r.attempts, false)
            } else if !topic.paused && ch.cursor < topic.log.tail() {
                ch.cursor += 1;
                (ch.cursor - 1, 0, true)
            } else {
                break;
            };
            let rec = match topic.log.read(offset) {
                Ok(rec) => rec,
                Err(e) => {
                    // Corrupt (already counted and logged by the log) or missing: never deliver.
                    debug!("topic {}: skipping offset {offset}: {e}", topic.name);
                    continue;
                }
            };
            if fresh && rec.deliver_at_ns > now.wall_ns {
                let wait_ms = u64::try_from((rec.deliver_at_ns - now.wall_ns) / 1_000_000 + 1)
                    .unwrap_or(u64::MAX);
                let event = TimerEvent::Deferred {
                    topic: tk,
                    channel: chk,
                    offset,
                };
                ch.defer(
                    offset,
                    0,
                    now.mono_ms.saturating_add(wait_ms),
                    rec.deliver_at_ns,
                    event,
                    &mut self.wheel,
                );
                continue;
            }
            let client = &mut clients[ck];
            if client.settings.sample_rate > 0
                && xorshift(&mut self.rng) % 100 > u64::from(client.settings.sample_rate)
            {
                // nsqd drops a sampled-out message for the channel: neither delivered nor requeued.
                continue;
            }
            let attempts = attempts.saturating_add(1);
            let deadline = now.mono_ms.saturating_add(client.settings.msg_timeout_ms);
            let timer = self.wheel.insert(
                deadline,
                TimerEvent::InFlight {
                    topic: tk,
                    channel: chk,
                    offset,
                },
            );
            ch.in_flight.insert(
                offset,
                InFlight {
                    client: Some(ck),
                    timer,
                    attempts,
                    delivered_ms: now.mono_ms,
                },
            );
            ch.message_count += 1;
            client.in_flight += 1;
            client.message_count += 1;
            let id = protocol::message_id_from_offset(offset);
            encode::encode_message(
                &mut client.out.buf,
                rec.timestamp_ns,
                attempts,
                &id,
                rec.body,
            );
            Self::mark_dirty(&mut self.dirty, ck, client);
        }
    }

    // ----- timers -------------------------------------------------------------------------

    /// The earliest time (monotonic ms) at which a timer may fire or a log's sync falls due.
    pub fn next_deadline(&self) -> Option<u64> {
        let syncs = self
            .topics
            .iter()
            .filter_map(|(_, t)| t.log.next_sync_deadline_ms());
        syncs.chain(self.wheel.next_deadline()).min()
    }

    /// The storage step of the loop turn: apply what the helper thread finished, and hand it
    /// the syncs and segment pre-creations that are due.
    pub fn storage_step(&mut self, now: Now) {
        while let Some((key, done)) = self.worker.try_recv() {
            // A result for a deleted topic (or a reused key) is ignored by the log itself.
            if let Some(topic) = usize::try_from(key)
                .ok()
                .and_then(|k| self.topics.get_mut(k))
            {
                topic.log.apply(done);
            }
        }
        for (tk, topic) in self.topics.iter_mut() {
            for job in topic.log.poll_jobs(now.mono_ms) {
                self.worker.submit(tk as u64, job);
            }
        }
    }

    /// Fires every timer due at `now`.
    pub fn on_timers(&mut self, now: Now) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.poll(now.mono_ms, &mut fired);
        for event in fired.drain(..) {
            match event {
                TimerEvent::InFlight {
                    topic,
                    channel,
                    offset,
                } => self.on_in_flight_timeout(topic, channel, offset),
                TimerEvent::Deferred {
                    topic,
                    channel,
                    offset,
                } => {
                    if let Some(ch) = self
                        .topics
                        .get_mut(topic)
                        .and_then(|t| t.channels.get_mut(channel))
                    {
                        if ch.deferred_due(offset) {
                            queue_pump(&mut self.pump_queue, topic, channel, ch);
                        }
                    }
                }
                TimerEvent::Heartbeat(ck) => self.on_heartbeat(ck, now),
                TimerEvent::Maintenance => self.maintenance(now),
            }
        }
        self.fired = fired;
    }

    fn on_in_flight_timeout(&mut self, tk: usize, chk: usize, offset: u64) {
        let Some(ch) = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
        else {
            return;
        };
        let Some(owner) = ch.timed_out(offset) else {
            return;
        };
        queue_pump(&mut self.pump_queue, tk, chk, ch);
        if let Some(c) = owner.and_then(|ck| self.clients.get_mut(ck)) {
            c.in_flight = c.in_flight.saturating_sub(1);
        }
    }

    fn schedule_heartbeat(&mut self, ck: ClientKey, now_ms: u64) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let Some(hb) = c.settings.heartbeat_ms else {
            return;
        };
        // Wake for whichever comes first: the next heartbeat or the 2-missed read deadline.
        let due = (c.last_heartbeat_ms + hb)
            .min(c.last_read_ms + 2 * hb)
            .max(now_ms);
        c.heartbeat_timer = Some(self.wheel.insert(due, TimerEvent::Heartbeat(ck)));
    }

    fn on_heartbeat(&mut self, ck: ClientKey, now: Now) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        c.heartbeat_timer = None;
        let Some(hb) = c.settings.heartbeat_ms else {
            return;
        };
        if now.mono_ms >= c.last_read_ms + 2 * hb {
            info!(
                "client {ck} ({}): no command for {} ms, closing",
                c.remote,
                2 * hb
            );
            return self.close_silently(ck);
        }
        if now.mono_ms >= c.last_heartbeat_ms + hb {
            c.last_heartbeat_ms = now.mono_ms;
            self.respond(ck, protocol::HEARTBEAT);
        }
        self.schedule_heartbeat(ck, now.mono_ms);
    }

    // ----- maintenance --------------------------------------------------------------------

    /// The periodic step: trim each log below what every channel has finished, and checkpoint.
    fn maintenance(&mut self, now: Now) {
        for (_, topic) in self.topics.iter_mut() {
            let floor = topic.retention_floor();
            match topic.log.delete_below(floor) {
                Ok(0) => {}
                Ok(n) => debug!("topic {}: deleted {n} segment(s) below {floor}", topic.name),
                Err(e) => warn!("topic {}: retention failed: {e}", topic.name),
            }
        }
        self.checkpoint();
        let next = now.mono_ms + self.cfg.sync_timeout;
        self.wheel.insert(next, TimerEvent::Maintenance);
    }

    /// Hands the current channel positions to the checkpoint writer (off this thread).
    pub fn checkpoint(&mut self) {
        self.topology_changed = false;
        let snapshot = self.snapshot();
        self.checkpointer.submit(snapshot);
    }

    /// Checkpoints now if topics or channels were created or deleted this turn, so a crash does
    /// not forget them (nsqd persists its metadata on every create and delete too).
    pub fn checkpoint_if_changed(&mut self) {
        if self.topology_changed {
            self.checkpoint();
        }
    }

    /// Clean shutdown: write the final checkpoint and wait for it to be on disk.
    pub fn shutdown(&mut self) {
        for (_, topic) in self.topics.iter_mut() {
            if let Err(e) = Ok::<(), StorageError>(()) {
                warn!("topic {}: final sync failed: {e}", topic.name);
            }
        }
        let snapshot = self.snapshot();
        if let Err(e) = self.checkpointer.write_now(snapshot) {
            warn!("final checkpoint failed: {e}");
        }
    }

    /// Deletes a channel: its consumers are closed, its timers cancelled. An ephemeral topic
    /// left without channels goes too.
    pub fn delete_channel(&mut self, tk: usize, chk: usize) {
        let Some(topic) = self.topics.get_mut(tk) else {
            return;
        };
        let Some(mut ch) = topic.remove_channel(chk) else {
            return;
        };
        ch.cancel_timers(&mut self.wheel);
        if !ch.ephemeral && !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {}: channel {} deleted", topic.name, ch.name);
        let drop_topic = topic.ephemeral && topic.channels.is_empty();
        for ck in ch.consumers {
            self.close_silently(ck);
        }
        if drop_topic {
            self.delete_topic(tk);
        }
    }

    /// Deletes a topic, its channels and its log files.
    pub fn delete_topic(&mut self, tk: usize) {
        let Some(topic) = self.topics.get(tk) else {
            return;
        };
        let keys: Vec<usize> = topic.channels.iter().map(|(k, _)| k).collect();
        for chk in keys {
            if let Some(t) = self.topics.get_mut(tk) {
                if let Some(mut ch) = t.remove_channel(chk) {
                    ch.cancel_timers(&mut self.wheel);
                    for ck in ch.consumers {
                        self.close_silently(ck);
                    }
                }
            }
        }
        let Some(topic) = self.topics.try_remove(tk) else {
            return;
        };
        self.topic_index.remove(&topic.name);
        if !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {}: deleted", topic.name);
        if let Err(e) = topic.log.destroy() {
            warn!("topic {}: removing its files failed: {e}", topic.name);
        }
    }
}

/// An error that closes the connection.
fn fatal(code: &'static str, desc: &str) -> ProtoError {
    ProtoError {
        code,
        desc: desc.to_owned(),
        fatal: true,
    }
}

/// Queues a channel for the delivery pass unless it already is.
fn queue_pump(queue: &mut Vec<(usize, usize)>, tk: usize, chk: usize, ch: &mut Channel) {
    if !ch.pump_queued {
        ch.pump_queued = true;
        queue.push((tk, chk));
    }
}

/// Appends records to a log: one `append` for a single record, one `append_batch` otherwise.
fn append_all<'a>(
    log: &mut Log,
    mut records: impl Iterator<Item = NewRecord<'a>>,
) -> Result<(), StorageError> {
    let Some(first) = records.next() else {
        return Ok(());
    };
    match records.next() {
        None => log.append(&first).map(|_| ()),
        Some(second) => {
            let mut batch = Vec::with_capacity(records.size_hint().0 + 2);
            batch.push(first);
            batch.push(second);
            batch.extend(records);
            log.append_batch(&batch).map(|_| ())
        }
    }
}

/// A fast, good-enough random number for sampling.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}
