//! The HTTP side of the loop: serving the requests in a conn's buffer as they arrive, and the
//! HTTP deadlines (`--http-header-timeout`, `--http-idle-timeout`).
//!
//! Both deadlines share one wheel timer per conn, armed for the earlier of the two and
//! re-checked when it fires (see [`super::conn::HttpState`]): a read only records its time.
//! The header deadline runs from a request's first byte until its head is complete; the idle
//! deadline from the last byte read, between requests or within one. Time a conn spends
//! waiting for our own durable ack does not count against it.

use log::debug;

use crate::broker::Now;
use crate::http::serve::Served;

use super::conn::Phase;
use super::transport;
use super::EventLoop;

impl EventLoop {
    /// Serves every complete HTTP request in a conn's buffer. The reader keeps its place, so
    /// this costs only the bytes that arrived since the last call; chunk framing is dropped as
    /// it is decoded, so the buffer holds a head, a partial chunk and pipelined requests.
    pub(super) fn decode_http(&mut self, key: usize, client: usize, now: Now) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(http) = &mut self.http else {
            return;
        };
        http.conn_is_tls = !matches!(conn.transport, transport::Transport::Plain);
        let mut used_total = 0;
        while !self.broker.is_closing(client) && !self.broker.is_blocked(client) {
            let reader = &mut conn.http.reader;
            let buf = (&mut conn.rbuf, used_total);
            match http.serve(&mut self.broker, client, reader, buf, now) {
                Served::Handled(used) => used_total += used,
                Served::Incomplete | Served::Waiting | Served::Close => break,
            }
        }
        conn.consume(used_total);
        // The header deadline runs from a request's first byte until its head is complete.
        let in_head = !conn.rbuf.is_empty() && conn.http.reader.in_head();
        match (in_head, conn.http.head_since_ms) {
            (true, None) => {
                conn.http.head_since_ms = Some(now.mono_ms);
                self.arm_http_timer(key, now);
            }
            (false, Some(_)) => conn.http.head_since_ms = None,
            _ => {}
        }
    }

    /// Sets an HTTP conn's wheel timer for its earlier deadline, unless one already fires by
    /// then (a late timer is simply re-armed when it fires).
    fn arm_http_timer(&mut self, key: usize, now: Now) {
        let (header, idle) = (
            self.broker.config().http_header_timeout,
            self.broker.config().http_idle_timeout,
        );
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(due) = conn.http.due(header, idle) else {
            return;
        };
        let due = due.max(now.timer_base_ms());
        if let Some((id, at)) = conn.http.timer {
            if at <= due {
                return;
            }
            self.broker.cancel_timer(id);
        }
        conn.http.timer = Some((self.broker.conn_deadline(key, due), due));
    }

    /// A conn's deadline timer fired: a conn still waiting for its magic is closed; an HTTP
    /// conn is closed if its header or idle deadline has passed, else its timer is re-armed.
    pub(super) fn on_conn_deadline(&mut self, key: usize, now: Now) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            Phase::Magic => {
                conn.handshake_timer = None;
                debug!(
                    "conn {key} ({}): no magic within the handshake deadline",
                    conn.remote
                );
                self.mark_closing(key);
            }
            Phase::Http { client } => {
                conn.http.timer = None;
                if self.broker.is_blocked(client) {
                    // Waiting for our own durable ack is not the client's idleness.
                    conn.http.last_read_ms = now.mono_ms;
                    conn.http.head_since_ms = conn.http.head_since_ms.map(|_| now.mono_ms);
                }
                let cfg = self.broker.config();
                let due = conn
                    .http
                    .due(cfg.http_header_timeout, cfg.http_idle_timeout);
                if due.is_some_and(|due| due <= now.mono_ms) {
                    let what = if conn.http.head_since_ms.is_some() {
                        "no request head within --http-header-timeout"
                    } else {
                        "idle for --http-idle-timeout"
                    };
                    debug!("conn {key} ({}): {what}", conn.remote);
                    self.mark_closing(key);
                } else {
                    self.arm_http_timer(key, now);
                }
            }
            Phase::Lingering { .. } => {
                conn.http.timer = None;
                self.mark_closing(key);
            }
            Phase::V2 { .. } => {
                conn.handshake_timer = None;
                if let transport::Transport::Layered(l) = &conn.transport {
                    if l.handshaking() {
                        debug!(
                            "conn {key} ({}): TLS handshake deadline passed",
                            conn.remote
                        );
                        self.mark_closing(key);
                    }
                }
            }
        }
    }
}
