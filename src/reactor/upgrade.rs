//! Switching a connection to TLS and/or compression after IDENTIFY, and the TLS handshake's
//! progress (reference §1.11). The broker only says which upgrades IDENTIFY agreed to
//! ([`crate::broker::Broker::take_upgrade`]); the layers themselves live in
//! [`super::transport`].

use log::{debug, error};

use crate::broker::Now;
use crate::protocol::Upgrade;

use super::transport::{Layered, Transport};
use super::EventLoop;

/// nsqd's TLS handshake deadline.
const TLS_HANDSHAKE_MS: u64 = 5000;

impl EventLoop {
    /// Applies the upgrades of the IDENTIFY whose command ended at `used` in the conn's buffer.
    /// Everything queued so far (the IDENTIFY reply) leaves in plain ahead of the layers; the
    /// bytes after the command already read are the client's first layered bytes.
    pub(super) fn upgrade(
        &mut self,
        key: usize,
        client: usize,
        used: usize,
        up: &Upgrade,
        now: Now,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.transport, Transport::Plain) {
            // A second IDENTIFY asking for upgrades: nsqd would stack a second TLS or
            // compression layer on the first; corq refuses (the reply already queued goes out
            // through the existing layers first).
            let e = crate::protocol::ProtoError::fatal(
                crate::protocol::E_IDENTIFY_FAILED,
                "IDENTIFY failed the stream is already upgraded",
            );
            self.broker.fail(client, &e);
            return;
        }
        let prefix = match self.broker.output(client) {
            Some(out) => {
                let p = out.pending().to_vec();
                out.consume(p.len());
                p
            }
            None => Vec::new(),
        };
        let rest = conn.rbuf.get(used..).unwrap_or_default().to_vec();
        conn.rbuf.clear();
        let mut layered = match Layered::new(up, self.tls.as_ref(), &prefix) {
            Ok(l) => l,
            Err(e) => {
                error!("conn {key} ({}): upgrade failed: {e}", conn.remote);
                self.mark_closing(key);
                return;
            }
        };
        if let Err(e) = layered.ingest(&rest) {
            error!("conn {key} ({}): {e}", conn.remote);
            self.mark_closing(key);
            return;
        }
        conn.transport = Transport::Layered(Box::new(layered));
        debug!(
            "conn {key} ({}): upgraded (tls {}, snappy {}, deflate {} level {})",
            conn.remote, up.tls, up.snappy, up.deflate, up.deflate_level
        );
        if up.tls {
            let due = now.timer_base_ms().saturating_add(TLS_HANDSHAKE_MS);
            if let Some(t) = conn.handshake_timer.take() {
                self.broker.cancel_timer(t);
            }
            conn.handshake_timer = Some(self.broker.conn_deadline(key, due));
        }
        // Bytes already read may hold the ClientHello (or compressed commands): read again
        // without waiting for an event.
        self.still_readable.push(key);
        self.flush_conn(key);
    }

    /// After a layered read: report a completed TLS handshake to the broker and send what
    /// rustls wants to send (handshake messages are not broker output).
    pub(super) fn after_layered_read(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Transport::Layered(l) = &mut conn.transport else {
            return;
        };
        if let Some(info) = l.take_established() {
            if let Some(t) = conn.handshake_timer.take() {
                self.broker.cancel_timer(t);
            }
            if let Some(client) = conn.phase.client() {
                debug!("conn {key} ({}): TLS established: {info:?}", conn.remote);
                self.broker.set_tls(client, info);
            }
        }
        if conn.transport_wants_write() {
            self.flush_conn(key);
        }
    }
}
