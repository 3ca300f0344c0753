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

pub mod admin;
pub mod alerts;
pub mod auth;
mod carry;
pub mod channel;
pub mod client;
mod commands;
mod datapath;
pub mod dead;
pub mod dedup;
mod deliver;
pub mod durable;
pub mod limits;
mod maintenance;
pub mod peek;
pub mod peers;
pub mod replay;
mod restore;
pub mod settings;
pub mod snapshot;
pub mod timeouts;
pub mod topic;
pub mod web;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use log::{debug, error};
use slab::Slab;

use crate::config::Config;
use crate::protocol::identify::{IdentifyLimits, ServerInfo};
use crate::protocol::{encode, DecodeCtx, Limits, ProtoError};
use crate::storage::checkpoint::Checkpointer;
use crate::storage::{LogConfig, StorageError, StorageWorker};
use crate::timer::Wheel;

use channel::Channel;
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
    /// The in-flight timeout of a message with a wheel timer of its own (one whose deadline
    /// came earlier than its channel's timeout queue allowed, see `timeouts.rs`).
    InFlight {
        /// Topic key.
        topic: usize,
        /// Channel key within the topic.
        channel: usize,
        /// The message's id offset (where it was published; not where a carried copy is).
        offset: u64,
    },
    /// A channel's timeout queue is due (see `timeouts.rs`).
    Timeouts {
        /// Topic key.
        topic: usize,
        /// Channel key within the topic.
        channel: usize,
    },
    /// A deferred message is due.
    Deferred {
        /// Topic key.
        topic: usize,
        /// Channel key within the topic.
        channel: usize,
        /// The message's id offset (where it was published; not where a carried copy is).
        offset: u64,
    },
    /// Time to send a heartbeat to a client, or to close it for missing two.
    Heartbeat(ClientKey),
    /// The periodic step: sync the logs, trim them, checkpoint the channels.
    Maintenance,
    /// A connection's deadline (by reactor token): the handshake (no magic by now closes it),
    /// or an HTTP conn's header or idle deadline; the reactor decides what it means.
    Handshake(usize),
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
    /// Another server holds the data path's lock.
    Locked(PathBuf, std::io::Error),
    /// The data path is a file.
    NotADirectory(PathBuf),
    /// The data path cannot be used: what failed (create, write, sync a file) and why.
    DataPath {
        /// The path the failing call was made on.
        path: PathBuf,
        /// What could not be done.
        what: &'static str,
        /// The OS error.
        err: std::io::Error,
    },
    /// A topic could not be opened and `--strict-recovery` forbids quarantining it.
    Strict(String, String),
}

impl Now {
    /// The base a delay is counted from when setting a timer. The clock reads whole ms rounded
    /// down, so "now" may be up to 1 ms behind real time; counting from one past it guarantees
    /// a timer set for `d` ms never fires before `d` ms of real time have passed.
    pub fn timer_base_ms(&self) -> u64 {
        self.mono_ms.saturating_add(1)
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Storage(e) => write!(f, "{e}"),
            StartError::Io(p, e) => write!(f, "{}: {e}", p.display()),
            StartError::BadCheckpoint(p, e) => {
                write!(f, "{}: invalid checkpoint: {e}", p.display())
            }
            // nsqd's words (`failed to lock data-path: cannot flock directory ...`), our name.
            StartError::Locked(p, e) => write!(
                f,
                "failed to lock data-path: cannot flock directory {} - {e} (possibly in use by another instance of corqd)",
                p.display()
            ),
            StartError::NotADirectory(p) => {
                write!(f, "{} is a file, not a directory", p.display())
            }
            StartError::DataPath { path, what, err } => {
                write!(f, "{}: {what}: {err}", path.display())
            }
            StartError::Strict(topic, why) => write!(
                f,
                "topic {topic} cannot be opened and --strict-recovery is set: {why}"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// Output buffers smaller than this are not worth keeping after their session ends.
const SPARE_MIN: usize = 256 * 1024;
/// The largest output buffer kept after its session ends.
const SPARE_MAX: usize = 4 << 20;

/// The broker.
#[derive(Debug)]
pub struct Broker {
    /// The validated configuration.
    cfg: Config,
    /// The per-topic settings' server-wide defaults, from `cfg` (made once: settings are
    /// resolved on every publish).
    defaults: settings::Settings<u64>,
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
    /// Channels to run the delivery pass over, first queued first (a channel a pass cut short
    /// goes to the back, see [`Broker::pump`]).
    pump_queue: VecDeque<(usize, usize)>,
    /// Writes checkpoints off the reactor thread.
    checkpointer: Checkpointer,
    /// Runs the logs' blocking work (fsync, segment creation) off the reactor thread.
    worker: StorageWorker,
    /// Whether topics or channels changed since the last checkpoint (checkpoint sooner).
    topology_changed: bool,
    /// xorshift state for sample_rate.
    rng: u64,
    /// Reactor tokens of clients whose last durable ack was sent this turn.
    unblocked: Vec<usize>,
    /// Clients whose peek waits for a warm job (see `peek.rs`).
    peeks_warming: Vec<ClientKey>,
    /// The largest output buffer of a closed session, kept for the next large reply (see
    /// [`Broker::take_spare_buffer`]).
    spare_out: Vec<u8>,
    /// Reactor tokens whose handshake deadline passed this turn.
    expired_handshakes: Vec<usize>,
    /// Topics whose logs may have storage work or a sync deadline (see `storage_step`).
    storage_due: Vec<usize>,
    /// Reused list of topics whose jobs finished this turn.
    applied: Vec<usize>,
    /// Topics whose logs failed to open at start: name → why, and their checkpoint entry
    /// (written back unchanged). They answer errors; their files are left alone.
    quarantined: HashMap<String, Quarantined>,
    /// Messages the delivery pass found expired on a channel with max attempts on: written to
    /// the dead-letter topic right after that channel's pass.
    expired_queue: Vec<(usize, usize, channel::Requeued)>,
    /// This process's dedup-window hash keys.
    dedup_hasher: dedup::DedupHasher,
    /// Strict mode: a publish waits for a checkpoint holding its client's earlier FINs/REQs
    /// (the turn's end submits one: the group commit of acknowledgements).
    acks_dirty: bool,
    /// The newest checkpoint generation seen on disk (parked publishes waiting on a newer one
    /// are looked at again when it moves).
    seen_written: u64,
    /// The data path's `flock`, held for the broker's life.
    _lock: datapath::DataPathLock,
    /// Topic and channel creations and deletions since the reactor last took them, for the
    /// lookupd peers (`peers`): the broker reports, the reactor's peer module talks.
    peer_events: Vec<peers::PeerEvent>,
    /// The auth server helpers, when `--auth-http-address` is set (`start_auth`).
    auth: Option<crate::auth::AuthPool>,
    /// Tags auth queries, so an answer for a departed session is dropped.
    auth_serial: u64,
    /// Alerts firing and the webhook (`alerts.rs`).
    alerts: alerts::Alerts,
}

/// A topic left closed at start because its log could not be opened.
#[derive(Debug, Clone)]
pub struct Quarantined {
    /// Why its log could not be opened.
    pub reason: String,
    /// Its checkpoint entry, if it had one: kept in every checkpoint until the topic is fixed.
    pub state: Option<crate::storage::checkpoint::TopicState>,
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
            version: crate::NSQD_VERSION.to_owned(),
            max_msg_timeout_ms: cfg.max_msg_timeout,
            max_deflate_level: cfg.max_deflate_level,
            auth_required: !cfg.auth_http_address.is_empty(),
            tls: cfg.tls_configured(),
            snappy: cfg.snappy,
            deflate: cfg.deflate,
        };
        let lock = datapath::claim(&data_dir)?;
        // Strict mode: FINs are made durable by a checkpoint that publishers wait for, so the
        // checkpoint thread wakes the reactor too (both share the one waker).
        let notify = std::sync::Arc::new(std::sync::Mutex::new(notify));
        let wake = |n: &std::sync::Arc<std::sync::Mutex<Box<dyn Fn() + Send>>>| {
            let n = std::sync::Arc::clone(n);
            Box::new(move || {
                if let Ok(f) = n.lock() {
                    f();
                }
            }) as Box<dyn Fn() + Send>
        };
        let strict = cfg.sync_every == 1;
        let checkpointer = Checkpointer::spawn_notified(
            data_dir.join(CHECKPOINT_FILE),
            strict.then(|| wake(&notify)),
        )
        .map_err(|e| StartError::Io(data_dir.clone(), e))?;
        let worker =
            StorageWorker::spawn(wake(&notify)).map_err(|e| StartError::Io(data_dir.clone(), e))?;
        let mut broker = Broker {
            defaults: settings::defaults(&cfg),
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
            pump_queue: VecDeque::new(),
            checkpointer,
            worker,
            topology_changed: false,
            unblocked: Vec::new(),
            peeks_warming: Vec::new(),
            spare_out: Vec::new(),
            expired_handshakes: Vec::new(),
            storage_due: Vec::new(),
            applied: Vec::new(),
            rng: 0x2545_F491_4F6C_DD1D ^ now.wall_ns as u64,
            quarantined: HashMap::new(),
            expired_queue: Vec::new(),
            dedup_hasher: dedup::DedupHasher::default(),
            acks_dirty: false,
            seen_written: 0,
            _lock: lock,
            peer_events: Vec::new(),
            auth: None,
            auth_serial: 0,
            alerts: alerts::Alerts::default(),
        };
        broker.restore(now)?;
        if !broker.cfg.alert_webhook_url.is_empty() {
            // The URL was checked with the flags; only the thread can fail here.
            match crate::peers::webhook::Webhook::start(&broker.cfg.alert_webhook_url) {
                Ok(w) => broker.alerts.webhook = Some(w),
                Err(e) => log::error!("alert webhook not started: {e}"),
            }
        }
        let keys: Vec<usize> = broker.topics.iter().map(|(k, _)| k).collect();
        for tk in keys {
            broker.rebuild_dedup(tk, now.wall_ns);
        }
        // What was loaded is registered in full on each lookupd connect; only changes made
        // while running are events (nsqd does not pre-create channels for loaded topics).
        broker.peer_events.clear();
        let first = now.mono_ms + broker.cfg.sync_timeout;
        broker.wheel.insert(first, TimerEvent::Maintenance);
        Ok(broker)
    }

    /// The log configuration every topic uses (an ephemeral one with smaller segments, see
    /// [`ephemeral_segment_bytes`]).
    fn log_config(&self) -> LogConfig {
        LogConfig {
            max_bytes_per_file: self.cfg.max_bytes_per_file,
            max_msg_size: self.cfg.max_msg_size,
            sync_every: self.cfg.sync_every,
            sync_timeout_ms: self.cfg.sync_timeout,
            ..LogConfig::default()
        }
    }

    // ----- sessions -----------------------------------------------------------------------

    /// A new connection finished its magic: start a session and its heartbeat.
    pub fn connect(&mut self, token: usize, remote: SocketAddr, now: Now) -> ClientKey {
        let ck = self.new_client(token, remote, now);
        self.schedule_heartbeat(ck, now.mono_ms);
        debug!("client {ck} connected from {remote}");
        ck
    }

    /// A session with the server's default settings, not yet heartbeating.
    fn new_client(&mut self, token: usize, remote: SocketAddr, now: Now) -> ClientKey {
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
        self.clients[ck].out_limit = usize::try_from(self.cfg.max_output_buffer_size)
            .unwrap_or(usize::MAX)
            .max(1);
        ck
    }

    /// The connection is gone: end the session. Its in-flight messages wait for their timeouts,
    /// as in nsqd; an ephemeral channel (and topic) left without consumers is deleted.
    pub fn disconnect(&mut self, ck: ClientKey) {
        let Some(mut client) = self.clients.try_remove(ck) else {
            return;
        };
        self.keep_spare(std::mem::take(&mut client.out.buf));
        if client.awaiting_acks > 0 {
            self.drop_acks_of(ck);
        }
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

    /// Keeps a buffer done with (a closed session's output, or the one a large reply replaced)
    /// if it is large and larger than the one kept: the next large reply reuses its pages
    /// instead of faulting in fresh ones (about 1 ms per 1.5 MB reply on the benchmark VM). At
    /// most one is kept, of at most [`SPARE_MAX`] bytes.
    fn keep_spare(&mut self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if (SPARE_MIN..=SPARE_MAX).contains(&cap) && cap > self.spare_out.capacity() {
            buf.clear();
            self.spare_out = buf;
        }
    }

    /// The kept buffer (empty, possibly without capacity), for a large reply.
    pub fn take_spare_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.spare_out)
    }

    /// Takes the stream upgrades an IDENTIFY just agreed to (the reactor applies them after
    /// the reply it queued).
    pub fn take_upgrade(&mut self, ck: ClientKey) -> Option<crate::protocol::Upgrade> {
        self.clients.get_mut(ck)?.upgrade.take()
    }

    /// The TLS handshake of a client's connection completed.
    pub fn set_tls(&mut self, ck: ClientKey, tls: crate::protocol::TlsInfo) {
        if let Some(c) = self.clients.get_mut(ck) {
            c.tls = true;
            c.tls_cn = tls.common_name;
            c.tls_version = tls.version;
            c.tls_cipher = tls.cipher_suite;
        }
    }

    /// Whether a client's connection completed a TLS handshake.
    pub fn is_tls(&self, ck: ClientKey) -> bool {
        self.clients.get(ck).is_some_and(|c| c.tls)
    }

    /// The decoder's view of a session; `None` while its next command must not be decoded:
    /// the session is over ([`is_closing`](Self::is_closing)) or waits
    /// ([`is_blocked`](Self::is_blocked)). (One lookup of the client per command, not three.)
    pub fn decode_ctx(&self, ck: ClientKey) -> Option<DecodeCtx> {
        let c = self.clients.get(ck)?;
        if c.closing || durable::is_waiting(c) {
            return None;
        }
        Some(DecodeCtx {
            state: c.state,
            heartbeats_disabled: c.settings.heartbeat_ms.is_none(),
            mpub_auth: !c.http && self.auth_enabled() && !c.auth.mpub_checked,
        })
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
                // nsqd logs a client's fatal error at ERROR, naming the client; the JSON log
                // also names the topic and channel it consumed from.
                let (topic, channel) = c
                    .sub
                    .and_then(|(tk, chk)| {
                        let t = self.topics.get(tk)?;
                        Some((t.name.as_str(), t.channels.get(chk)?.name.as_str()))
                    })
                    .unwrap_or_default();
                error!(
                    client:% = c.remote, topic, channel;
                    "client {} ({}): closing: {}",
                    ck,
                    c.remote,
                    err.frame_data()
                );
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
}

/// An error that closes the connection.
pub(crate) fn fatal(code: &'static str, desc: &str) -> ProtoError {
    ProtoError {
        code,
        desc: desc.to_owned(),
        fatal: true,
    }
}

/// Puts a topic on the storage list (see `Broker::storage_step`) unless it already is.
pub(crate) fn queue_storage(list: &mut Vec<usize>, tk: usize, topic: &mut Topic) {
    if !topic.storage_queued {
        topic.storage_queued = true;
        list.push(tk);
    }
}

/// Queues a channel for the delivery pass unless it already is.
pub(crate) fn queue_pump(
    queue: &mut VecDeque<(usize, usize)>,
    tk: usize,
    chk: usize,
    ch: &mut Channel,
) {
    if !ch.pump_queued {
        ch.pump_queued = true;
        queue.push_back((tk, chk));
    }
}

/// Segment size of an `#ephemeral` topic: 4 MiB (or what the largest message needs, or the
/// configured size if smaller). Why: nsqd keeps an ephemeral topic in memory only and drops
/// what overflows `--mem-queue-size`; corq keeps one log per topic, so an ephemeral topic's
/// log lives on disk like any other but in small segments. Its file starts at 64 KiB and grows
/// on demand, retention frees each segment as soon as every channel has passed it (so the
/// disk held is the unconsumed messages plus at most one small segment and its spare), and
/// the whole directory is deleted with the topic and at start. Nothing is dropped.
pub(crate) fn ephemeral_segment_bytes(cfg: &LogConfig) -> u64 {
    const EPHEMERAL_SEGMENT: u64 = 4 * 1024 * 1024;
    let fits_largest = u64::from(cfg.max_msg_size).saturating_add(1024);
    EPHEMERAL_SEGMENT
        .max(fits_largest)
        .min(cfg.max_bytes_per_file)
}

#[cfg(test)]
mod ephemeral_tests {
    use super::ephemeral_segment_bytes;
    use crate::storage::LogConfig;

    #[test]
    fn ephemeral_segments_are_small_but_hold_the_largest_message() {
        let cfg = LogConfig::default();
        assert_eq!(ephemeral_segment_bytes(&cfg), 4 << 20);
        let big = LogConfig {
            max_msg_size: 10 << 20,
            max_bytes_per_file: 100 << 20,
            ..cfg.clone()
        };
        assert_eq!(ephemeral_segment_bytes(&big), (10 << 20) + 1024);
        let small = LogConfig {
            max_bytes_per_file: 1 << 20,
            max_msg_size: 1000,
            ..cfg
        };
        assert_eq!(
            ephemeral_segment_bytes(&small),
            1 << 20,
            "never past the setting"
        );
    }
}

#[cfg(test)]
impl Broker {
    /// A broker with the default options and its data in `dir` (unit tests).
    pub(crate) fn open_for_test(dir: &Path, now: Now) -> Broker {
        let cfg = crate::Options::local(dir).validate().expect("options");
        Broker::open(cfg, now, Box::new(|| {})).expect("open")
    }
}

#[cfg(test)]
mod spare_buffer_tests {
    use super::{Broker, Now, SPARE_MAX};
    use crate::storage::testutil::TempDir;

    #[test]
    fn a_closed_sessions_large_output_buffer_is_kept_once_and_bounded() {
        let tmp = TempDir::new("spare");
        let now = Now {
            mono_ms: 1,
            wall_ns: 1,
        };
        let mut b = Broker::open_for_test(tmp.path(), now);
        let addr = "127.0.0.1:1".parse().expect("addr");
        let sizes = [1 << 20, 64 << 10, SPARE_MAX * 2, 2 << 20];
        let clients: Vec<_> = (0..sizes.len())
            .map(|i| b.connect_http(10 + i, addr, now))
            .collect();
        for (&ck, &n) in clients.iter().zip(&sizes) {
            b.write_to(ck, |out| out.resize(n, b'x'));
        }
        for &ck in &clients {
            b.disconnect(ck);
        }
        // The largest within bounds (2 MiB) is kept, empty; too small and too large ones not.
        let spare = b.take_spare_buffer();
        assert!(spare.is_empty());
        assert!(
            (2 << 20..=SPARE_MAX).contains(&spare.capacity()),
            "{}",
            spare.capacity()
        );
        assert_eq!(b.take_spare_buffer().capacity(), 0, "kept once");
    }
}
