//! What the HTTP API needs from the broker beyond the admin actions: sessions for HTTP
//! connections (so their replies use the same output buffers and write path as TCP clients),
//! raw reply writing, and publishing with an HTTP answer (parked in strict mode like a TCP
//! publish).

use std::net::SocketAddr;

use log::{debug, warn};

use crate::config::Config;
use crate::http::{response, ReplyCtx};

use super::client::ClientKey;
use super::durable::{AckReply, PendingAck, PubVerb};
use super::{Broker, Now};

/// What an HTTP publish asks for.
#[derive(Debug, Clone, Copy)]
pub struct HttpPublish<'t> {
    /// `/pub` is PUB, `/mpub` is MPUB (for logs and error texts).
    pub verb: PubVerb,
    /// The topic, already validated.
    pub topic: &'t str,
    /// `defer` in ms (0 = deliver at once).
    pub defer_ms: u64,
    /// `dedup_id`: the dedup window's key instead of the body's hash (empty = none).
    pub dedup_id: &'t [u8],
}

impl Broker {
    /// The configuration the server runs with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Records a log level changed through `PUT /config/log_level`, so `/config` reports it.
    pub fn set_log_level(&mut self, level: &str) {
        self.cfg.opts.log_level = level.to_owned();
    }

    /// A session for an HTTP connection: no heartbeats, no protocol state.
    pub fn connect_http(&mut self, token: usize, remote: SocketAddr, now: Now) -> ClientKey {
        let ck = self.new_client(token, remote, now);
        self.clients[ck].http = true;
        debug!("HTTP client {ck} connected from {remote}");
        ck
    }

    /// Appends reply bytes for a client and queues its connection for writing.
    pub fn write_to(&mut self, ck: ClientKey, write: impl FnOnce(&mut Vec<u8>)) {
        if let Some(c) = self.clients.get_mut(ck) {
            write(&mut c.out.buf);
            Self::mark_dirty(&mut self.dirty, ck, c);
        }
    }

    /// Queues `buf[start..]` for client `ck`, without copying it when nothing else is queued:
    /// `buf` becomes the client's output buffer. Otherwise the bytes are appended as
    /// [`Broker::write_to`] would. Whichever buffer is left over may be kept for the next large
    /// reply ([`Broker::take_spare_buffer`]). For a large reply built in its own buffer (a peek): the copy,
    /// and the fresh pages a megabyte-sized output buffer would fault in, are what it saves.
    pub fn write_owned(&mut self, ck: ClientKey, buf: Vec<u8>, start: usize) {
        let Some(c) = self.clients.get_mut(ck) else {
            return self.keep_spare(buf);
        };
        let left_over = if c.out.is_empty() {
            c.out.pos = start.min(buf.len());
            std::mem::replace(&mut c.out.buf, buf)
        } else {
            c.out
                .buf
                .extend_from_slice(buf.get(start..).unwrap_or_default());
            buf
        };
        Self::mark_dirty(&mut self.dirty, ck, c);
        self.keep_spare(left_over);
    }

    /// Whether `100 Continue` was sent for the request being read; sets the flag.
    pub fn take_continue(&mut self, ck: ClientKey, sent: bool) -> bool {
        self.clients
            .get_mut(ck)
            .is_some_and(|c| std::mem::replace(&mut c.continue_sent, sent))
    }

    /// `/pub` and `/mpub`: publishes and answers `200 OK` (after the sync in strict mode), or
    /// 503 saying what failed when the log refuses the write (nsqd answers `EXITING` to any
    /// failed put; corq is not exiting then, so it says why, in the TCP error's words).
    pub fn http_publish<'a>(
        &mut self,
        ck: ClientKey,
        what: HttpPublish<'_>,
        bodies: impl Iterator<Item = &'a [u8]>,
        now: Now,
        ctx: &ReplyCtx,
    ) {
        let HttpPublish {
            verb,
            topic,
            defer_ms,
            dedup_id,
        } = what;
        let known = match self.publish_target(topic) {
            Ok(known) => known,
            Err(full) => {
                log::debug!(topic; "HTTP {} refused: {full}", verb.name());
                return self.http_publish_reply(ck, ctx, Some((verb, &full)));
            }
        };
        match self.publish_keyed(ck, (topic, known), bodies, defer_ms, dedup_id, now) {
            Err(e) => {
                warn!(topic; "topic {topic}: HTTP {} failed: {e}", verb.name());
                self.http_publish_reply(ck, ctx, Some((verb, &e.to_string())));
            }
            Ok(Some((tk, upto))) => {
                let ack = PendingAck {
                    checkpoint_gen: 0,
                    reply: AckReply::Http(*ctx),
                    client: ck,
                    upto,
                    verb,
                };
                self.park_ack(tk, ack);
            }
            Ok(None) => self.http_publish_reply(ck, ctx, None),
        }
    }

    /// The answer to an HTTP publish: `200 OK`, or `503 {"message":"E_PUB_FAILED PUB failed
    /// <why>"}` (MPUB likewise) for a publish the storage refused.
    pub fn http_publish_reply(
        &mut self,
        ck: ClientKey,
        ctx: &ReplyCtx,
        failure: Option<(PubVerb, &str)>,
    ) {
        self.write_to(ck, |out| match failure {
            None => response::ok_text(out, ctx, "OK"),
            Some((verb, why)) => {
                let text = verb.failed(&why).frame_data();
                response::error_json(out, ctx, 503, &text);
            }
        });
        if !ctx.keep_alive {
            self.close_silently(ck);
        }
    }
}
