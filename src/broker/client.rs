//! One connected client's session state, as the broker sees it.
//!
//! The socket itself belongs to `reactor::Conn`; the two are linked by keys only (the conn's
//! token here, the client's key there). What lives here is what nsqd keeps in `client_v2.go`:
//! the state machine (`Init → Subscribed → Closing`), the negotiated IDENTIFY settings, the RDY
//! and in-flight counts, the counters `/stats` shows, and the output buffer the broker writes
//! frames into and the reactor drains.

use std::net::SocketAddr;

use crate::protocol::ConnState;
use crate::timer::TimerId;

/// A key into the broker's client slab.
pub type ClientKey = usize;

/// Bytes waiting to be written to one connection, drained from the front by the reactor.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Frames, oldest first; `buf[pos..]` is still unwritten.
    pub buf: Vec<u8>,
    /// How much of `buf` the socket has taken so far.
    pub pos: usize,
}

impl OutBuf {
    /// The bytes not yet written.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Marks `n` more bytes as written; forgets everything once all of it is.
    pub fn consume(&mut self, n: usize) {
        self.pos += n;
        if self.pos >= self.buf.len() {
            // Keep the allocation: the next turn's frames reuse it.
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Number of bytes not yet written.
    pub fn len(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings a client negotiated with IDENTIFY (or the server defaults, before one).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Free text the client calls itself; nsqd shows the remote IP until an IDENTIFY.
    pub client_id: String,
    /// The client's host name, as it says.
    pub hostname: String,
    /// e.g. `pynsq/0.9.1`.
    pub user_agent: String,
    /// Heartbeat period; `None` when the client disabled heartbeats (it may then not SUB).
    pub heartbeat_ms: Option<u64>,
    /// How long a delivered message may stay un-FINished before it is requeued.
    pub msg_timeout_ms: u64,
    /// 0 disables sampling; 1..=99 keeps roughly that percentage of the channel's messages.
    pub sample_rate: u32,
    /// Reported in IDENTIFY and /stats. corq writes at the end of every loop turn, which is never
    /// later than nsqd's buffered flush would be.
    pub output_buffer_size: usize,
    /// Reported in IDENTIFY and /stats; see `output_buffer_size`.
    pub output_buffer_timeout_ms: u64,
}

/// One client session.
#[derive(Debug)]
pub struct Client {
    /// The reactor's token of the connection this session speaks over.
    pub token: usize,
    /// Where the connection comes from.
    pub remote: SocketAddr,
    /// nsqd's state machine, as the decoder needs it.
    pub state: ConnState,
    /// Negotiated settings.
    pub settings: Settings,
    /// Whether an IDENTIFY has been applied; as nsqd, only the first one changes the heartbeat.
    pub identified: bool,
    /// The topic and channel this client consumes from, once subscribed.
    pub sub: Option<(usize, usize)>,
    /// The last RDY: a cap on `in_flight`, not a credit counter (nsqd semantics).
    pub rdy: u64,
    /// Messages delivered to this client and not yet FIN'd, REQ'd or timed out.
    pub in_flight: u64,
    /// Messages delivered to this client.
    pub message_count: u64,
    /// FINs from this client.
    pub finish_count: u64,
    /// REQs from this client.
    pub requeue_count: u64,
    /// Monotonic ms of the last command read, for the 2-missed-heartbeats close.
    pub last_read_ms: u64,
    /// Monotonic ms of the last heartbeat sent.
    pub last_heartbeat_ms: u64,
    /// The heartbeat timer, cancelled when the session ends.
    pub heartbeat_timer: Option<TimerId>,
    /// Frames waiting for the socket.
    pub out: OutBuf,
    /// Whether the client is already on the broker's dirty list this turn.
    pub dirty: bool,
    /// Set once the session must end; the reactor flushes what it can and closes the socket.
    pub closing: bool,
    /// Strict mode: publishes of this client still waiting for their durable `OK`.
    pub awaiting_acks: u32,
    /// Strict mode: the checkpoint generation that holds this client's latest FIN or REQ
    /// (0 = none). Its later publishes are answered only once that checkpoint is on disk, so
    /// any later `OK` proves the FIN survives a crash.
    pub fin_gen: u64,
    /// Stream upgrades the last IDENTIFY agreed to, until the reactor takes them.
    pub upgrade: Option<crate::protocol::Upgrade>,
    /// Snappy was negotiated (shown in /stats).
    pub snappy: bool,
    /// Deflate was negotiated (shown in /stats).
    pub deflate: bool,
    /// The TLS handshake completed on this connection.
    pub tls: bool,
    /// Whether an HTTP peek of this client waits for its pages (see `broker/peek.rs`).
    pub peek_warmth: super::peek::PeekWarmth,
    /// The TLS client certificate's subject common name, if the client sent one.
    pub tls_cn: Option<String>,
    /// `TLS1.2` or `TLS1.3` once TLS is on (as nsqd's /stats).
    pub tls_version: String,
    /// The cipher suite's Go name once TLS is on.
    pub tls_cipher: String,
    /// Delivery stops while this much output waits for the socket (`--max-output-buffer-size`):
    /// a consumer that stops reading costs at most this much memory, whatever its RDY.
    pub out_limit: usize,
    /// Set when delivery skipped this client for a full output buffer; the write that drains
    /// it wakes its channel.
    pub output_blocked: bool,
    /// Wall-clock ns at connect, for /stats.
    pub connect_ts_ns: i64,
    /// Messages published per topic, in first-publish order (nsqd's `pub_counts`).
    pub pub_counts: Vec<(String, u64)>,
    /// An HTTP connection (no heartbeats; replies are HTTP, not frames).
    pub http: bool,
    /// HTTP: `100 Continue` was already sent for the request being read.
    pub continue_sent: bool,
    /// AUTH: the secret, the grant and any outstanding auth query.
    pub auth: super::auth::ClientAuth,
}

impl Client {
    /// Whether this connection speaks TLS, and the client certificate's common name (what
    /// nsqd sends the auth server as `tls` and `common_name`).
    pub fn tls_state(&self) -> (bool, Option<String>) {
        (self.tls, self.tls_cn.clone())
    }

    /// A fresh session with the server's default settings.
    pub fn new(
        token: usize,
        remote: SocketAddr,
        defaults: Settings,
        now_ms: u64,
        wall_ns: i64,
    ) -> Self {
        Client {
            token,
            remote,
            state: ConnState::Init,
            settings: defaults,
            identified: false,
            sub: None,
            rdy: 0,
            in_flight: 0,
            message_count: 0,
            finish_count: 0,
            requeue_count: 0,
            last_read_ms: now_ms,
            last_heartbeat_ms: now_ms,
            heartbeat_timer: None,
            out: OutBuf::default(),
            dirty: false,
            closing: false,
            awaiting_acks: 0,
            fin_gen: 0,
            upgrade: None,
            snappy: false,
            deflate: false,
            tls: false,
            peek_warmth: super::peek::PeekWarmth::Cold,
            tls_cn: None,
            tls_version: String::new(),
            tls_cipher: String::new(),
            out_limit: usize::MAX,
            output_blocked: false,
            connect_ts_ns: wall_ns,
            pub_counts: Vec::new(),
            http: false,
            continue_sent: false,
            auth: super::auth::ClientAuth::default(),
        }
    }

    /// Counts `n` messages published to `topic` (allocates only on a client's first publish to
    /// a topic).
    pub fn count_publish(&mut self, topic: &str, n: u64) {
        match self.pub_counts.iter_mut().find(|(t, _)| t == topic) {
            Some((_, count)) => *count += n,
            None => self.pub_counts.push((topic.to_owned(), n)),
        }
    }

    /// nsqd's `IsReadyForMessages`: subscribed, not closing, and below its RDY cap.
    pub fn is_ready(&self) -> bool {
        self.state == ConnState::Subscribed && !self.closing && self.in_flight < self.rdy
    }

    /// `is_ready`, and room in the output buffer; remembers when only the buffer was in the way.
    pub fn take_ready(&mut self) -> bool {
        if !self.is_ready() {
            return false;
        }
        if self.out.len() >= self.out_limit {
            self.output_blocked = true;
            return false;
        }
        true
    }
}
