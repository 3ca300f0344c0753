//! The HTTP handlers: one request from a connection's buffer, routed, checked in nsqd's order
//! (see the table in `routes.rs`), applied to the broker, answered into the client's output.
//!
//! This is the only part of `http/` that touches the broker; everything it calls in the other
//! files is pure. It never blocks: a request is handled only once all of it is buffered.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::broker::admin::AdminError;
use crate::broker::client::ClientKey;
use crate::broker::durable::PubVerb;
use crate::broker::peek::{PeekSet, PeekTarget};
use crate::broker::web::HttpPublish;
use crate::broker::{Broker, Now};

use super::info::{self, ConfigChange, Info, InfoRuntime};
use super::metrics::render_metrics;
use super::parse::{HttpLimits, Request};
use super::query::Query;
use super::reader::RequestReader;
use super::response::{self, ReplyCtx};
use super::routes::{self, ApiError, Route};
use super::stats::{apply_query, render_json, StatsQuery};
use super::text::{render_text, TextCtx};
use super::{mpub, route};

/// What the HTTP side of the server knows beyond the broker.
#[derive(Debug)]
pub struct HttpServer {
    /// Size caps for requests.
    pub limits: HttpLimits,
    /// The OS hostname, for `/info` and `broadcast_address`.
    pub hostname: String,
    /// The real HTTP port.
    pub http_port: i64,
    /// The real TCP port.
    pub tcp_port: i64,
    /// Start time, Unix seconds.
    pub start_time: i64,
    /// Start, for the text `/stats` uptime.
    pub started: Instant,
    /// `nsqlookupd_tcp_addresses`: `--lookupd-tcp-address`, or as last set by `PUT /config`.
    pub lookupd: Vec<String>,
    /// Set by a `PUT /config/nsqlookupd_tcp_addresses`; the reactor applies it to its peers.
    pub lookupd_changed: bool,
    /// `--tls-required=true`: plain HTTP answers 403 `TLS_REQUIRED` naming this HTTPS port.
    pub refuse_plain: Option<u16>,
    /// Whether the connection being served speaks TLS (set by the reactor per call).
    pub conn_is_tls: bool,
    /// Set by a request that must wait unanswered (a peek whose pages are being read in);
    /// `serve` takes it right after dispatching.
    request_waits: bool,
}

/// Bytes left in front of a peek's rendered body for its response head (status line,
/// `Content-Type`, `X-Nsq-Content-Type`, `Date`, `Content-Length`, `Connection`: ~200).
const PEEK_HEAD_ROOM: usize = 512;

/// What handling a connection's buffer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The request is not complete yet.
    Incomplete,
    /// The request is complete but waits (a peek whose pages are being read in): it stays in
    /// the buffer, unanswered, and is served again when the client is unblocked.
    Waiting,
    /// A request of this many bytes was answered.
    Handled(usize),
    /// The request could not be parsed; an error reply was written and the connection must
    /// close once it is sent.
    Close,
}

impl HttpServer {
    /// The HTTP side of a server with these options and ports.
    pub fn new(opts: &crate::Options, http_port: u16, tcp_port: u16) -> Self {
        let start_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        HttpServer {
            limits: HttpLimits::from_options(opts),
            hostname: hostname(),
            http_port: i64::from(http_port),
            tcp_port: i64::from(tcp_port),
            start_time,
            started: Instant::now(),
            lookupd: opts.lookupd_tcp_address.clone(),
            lookupd_changed: false,
            refuse_plain: None,
            conn_is_tls: false,
            request_waits: false,
        }
    }

    /// Takes the bytes that arrived for HTTP client `ck` (its request starts at `start` in
    /// `buf`; `reader` remembers how far it got) and answers the request once it is complete.
    pub fn serve(
        &mut self,
        broker: &mut Broker,
        ck: ClientKey,
        reader: &mut RequestReader,
        (buf, start): (&mut Vec<u8>, usize),
        now: Now,
    ) -> Served {
        match reader.poll(buf, start, &self.limits) {
            Ok(None) => {
                // curl waits a second for `100 Continue` before sending a body; say it once.
                if reader.wants_continue() && !broker.take_continue(ck, true) {
                    broker.write_to(ck, |out| out.extend_from_slice(response::CONTINUE_100));
                }
                Served::Incomplete
            }
            Ok(Some((req, used))) => {
                broker.take_continue(ck, false);
                let ctx = ReplyCtx::for_request(&req);
                match self.refuse_plain.filter(|_| !self.conn_is_tls) {
                    Some(port) => {
                        broker.write_to(ck, |out| response::tls_required(out, &ctx, port))
                    }
                    None => self.dispatch(broker, ck, &req, &ctx, now),
                }
                if std::mem::take(&mut self.request_waits) {
                    return Served::Waiting;
                }
                // A strict-mode publish answers later (`http_publish_reply` closes then):
                // closing now would drop its reply.
                if !ctx.keep_alive && !broker.is_blocked(ck) {
                    broker.close_silently(ck);
                }
                Served::Handled(used)
            }
            Err(e) => {
                broker.write_to(ck, |out| response::write_http_error(out, &e, None));
                broker.close_silently(ck);
                Served::Close
            }
        }
    }

    fn dispatch(
        &mut self,
        broker: &mut Broker,
        ck: ClientKey,
        req: &Request<'_>,
        ctx: &ReplyCtx,
        now: Now,
    ) {
        let route = match route(req.method, &req.path) {
            Ok(r) => r,
            Err(e) => {
                return broker.write_to(ck, |out| {
                    response::route_error(out, ctx, req.method, req.raw_query, &e)
                })
            }
        };
        let result = match route {
            Route::Ping => return self.ping(broker, ck, ctx),
            Route::Info => self.info(broker, ck, ctx),
            Route::Pub => return self.publish(broker, ck, req, ctx, now),
            Route::Mpub => return self.mpub(broker, ck, req, ctx, now),
            Route::Stats => self.stats(broker, ck, req, ctx),
            Route::Metrics => self.metrics(broker, ck, ctx),
            Route::ChannelPeek | Route::TopicPeek => {
                peek(broker, ck, (&route, req), ctx, now).map(|waits| self.request_waits = waits)
            }
            Route::Dashboard(name) => dashboard(broker, ck, name, ctx),
            Route::ConfigGet(name) => self.config_get(broker, ck, &name, ctx),
            Route::ConfigPut(name) => self.config_put(broker, ck, &name, &req.body, ctx),
            Route::TopicConfigGet
            | Route::TopicConfigSet
            | Route::ChannelConfigGet
            | Route::ChannelConfigSet
            | Route::TopicDead => {
                return super::config::serve(broker, ck, &route, req.query.as_ref().ok(), ctx);
            }
            Route::ChannelRewind => {
                return super::replay::serve(broker, ck, req.query.as_ref().ok(), false, ctx);
            }
            Route::ChannelCreate if req.query.as_ref().is_ok_and(|q| q.has("from")) => {
                return super::replay::serve(broker, ck, req.query.as_ref().ok(), true, ctx);
            }
            Route::Options { allow } => {
                return broker.write_to(ck, |out| response::options(out, ctx, &allow));
            }
            admin => admin_action(broker, &admin, req)
                .map(|()| broker.write_to(ck, |out| response::ok_empty(out, ctx))),
        };
        if let Err(e) = result {
            broker.write_to(ck, |out| response::api_error(out, ctx, e));
        }
    }

    fn ping(&self, broker: &mut Broker, ck: ClientKey, ctx: &ReplyCtx) {
        let health = broker.health();
        broker.write_to(ck, |out| match health {
            Ok(()) => response::plain(out, ctx, 200, "OK"),
            Err(e) => response::plain(out, ctx, 500, &format!("NOK - {e}")),
        });
    }

    fn info(&self, broker: &mut Broker, ck: ClientKey, ctx: &ReplyCtx) -> Result<(), ApiError> {
        let rt = InfoRuntime {
            version: crate::NSQD_VERSION,
            hostname: &self.hostname,
            http_port: self.http_port,
            tcp_port: self.tcp_port,
            start_time: self.start_time,
        };
        let info = Info::new(&broker.config().opts, &rt);
        broker.write_to(ck, |out| response::json(out, ctx, &info));
        Ok(())
    }

    /// `/pub`: `MSG_EMPTY` → query → topic → defer → dedup id → publish.
    fn publish(
        &self,
        broker: &mut Broker,
        ck: ClientKey,
        req: &Request<'_>,
        ctx: &ReplyCtx,
        now: Now,
    ) {
        let max_req = broker.config().max_req_timeout;
        let checked = (|| {
            if req.body.is_empty() {
                return Err(routes::MSG_EMPTY);
            }
            let q = query(req)?;
            let topic = routes::topic_arg(q)?;
            let defer = routes::defer_arg(q, max_req)?.unwrap_or(0);
            let dedup_id = routes::dedup_id_arg(q)?;
            Ok((topic, defer, dedup_id))
        })();
        match checked {
            Ok((topic, defer, dedup_id)) => {
                let bodies = std::iter::once(&req.body[..]);
                let what = HttpPublish {
                    verb: PubVerb::Pub,
                    topic,
                    defer_ms: defer,
                    dedup_id,
                };
                broker.http_publish(ck, what, bodies, now, ctx);
            }
            Err(e) => broker.write_to(ck, |out| response::api_error(out, ctx, e)),
        }
    }

    /// `/mpub`: query → topic → create the topic → split → publish all (zero messages is OK).
    fn mpub(
        &self,
        broker: &mut Broker,
        ck: ClientKey,
        req: &Request<'_>,
        ctx: &ReplyCtx,
        now: Now,
    ) {
        let (max_msg, max_body) = (self.limits.max_msg_size, self.limits.max_body_size);
        // Why the topic could not be created: answered as a failed MPUB, not `EXITING`.
        let mut create_failed = None;
        let checked = (|| {
            let q = query(req)?;
            let topic = routes::topic_arg(q)?;
            broker.create_topic(topic).map_err(|e| {
                create_failed = Some(match e {
                    AdminError::Storage(e) => e.to_string(),
                    other => other.code().to_owned(),
                });
                routes::EXITING
            })?;
            let bodies = if routes::mpub_binary(q) {
                mpub::split_binary(&req.body, max_msg, max_body)?
            } else {
                mpub::split_text(&req.body, max_msg, max_body)?
            };
            Ok((topic, bodies))
        })();
        match checked {
            Ok((_, bodies)) if bodies.is_empty() => {
                broker.write_to(ck, |out| response::ok_text(out, ctx, "OK"))
            }
            Ok((topic, bodies)) => {
                let what = HttpPublish {
                    verb: PubVerb::Mpub,
                    topic,
                    defer_ms: 0,
                    dedup_id: &[],
                };
                broker.http_publish(ck, what, bodies.into_iter(), now, ctx)
            }
            Err(_) if create_failed.is_some() => {
                let why = create_failed.unwrap_or_default();
                broker.http_publish_reply(ck, ctx, Some((PubVerb::Mpub, &why)))
            }
            Err(e) => broker.write_to(ck, |out| response::api_error(out, ctx, e)),
        }
    }

    fn stats(
        &self,
        broker: &mut Broker,
        ck: ClientKey,
        req: &Request<'_>,
        ctx: &ReplyCtx,
    ) -> Result<(), ApiError> {
        let q = StatsQuery::from_query(query(req)?);
        let mut stats = broker.stats_snapshot(self.start_time);
        super::stats::stamp_ages(&mut stats, unix_now_ns());
        apply_query(&mut stats, &q);
        if q.json {
            let body = render_json(&stats);
            let ct = response::ContentType::Set(response::JSON_TYPE);
            broker.write_to(ck, |out| {
                response::write_response(out, ctx, 200, ct, &body, true, &[])
            });
        } else {
            let now_unix_ns = unix_now_ns();
            let uptime_ns = self.started.elapsed().as_nanos() as i64;
            let build = format!("corq {}", crate::VERSION);
            let mut text = String::new();
            render_text(
                &stats,
                &TextCtx {
                    build: &build,
                    now_unix_ns,
                    uptime_ns,
                },
                &mut text,
            );
            broker.write_to(ck, |out| response::ok_text(out, ctx, &text));
        }
        Ok(())
    }

    fn metrics(&self, broker: &mut Broker, ck: ClientKey, ctx: &ReplyCtx) -> Result<(), ApiError> {
        let mut stats = broker.stats_snapshot(self.start_time);
        super::stats::stamp_ages(&mut stats, unix_now_ns());
        let mut body = String::new();
        render_metrics(&stats, &broker.metrics_extras(), &mut body);
        broker.write_to(ck, |out| response::metrics(out, ctx, &body));
        Ok(())
    }

    fn config_get(
        &self,
        broker: &mut Broker,
        ck: ClientKey,
        name: &str,
        ctx: &ReplyCtx,
    ) -> Result<(), ApiError> {
        let value = info::config_value(&broker.config().opts, &self.hostname, &self.lookupd, name);
        let value = value.ok_or(routes::INVALID_OPTION)?;
        broker.write_to(ck, |out| response::json(out, ctx, &value));
        Ok(())
    }

    fn config_put(
        &mut self,
        broker: &mut Broker,
        ck: ClientKey,
        name: &str,
        body: &[u8],
        ctx: &ReplyCtx,
    ) -> Result<(), ApiError> {
        match info::config_put(name, body, self.limits.max_msg_size)? {
            ConfigChange::LookupdAddresses(addrs) => {
                self.lookupd = addrs;
                self.lookupd_changed = true;
            }
            ConfigChange::LogLevel(level) => {
                if let Some(l) = crate::config::parse_level(&level) {
                    log::set_max_level(l);
                }
                broker.set_log_level(&level);
            }
        }
        self.config_get(broker, ck, name, ctx)
    }
}

/// The parsed query, or nsqd's 400 `INVALID_REQUEST`.
fn query<'r>(req: &'r Request<'_>) -> Result<&'r Query, ApiError> {
    req.query.as_ref().map_err(|_| routes::INVALID_REQUEST)
}

/// The wall clock, ns since the Unix epoch (0 before it).
fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The topic and channel actions, in nsqd's check order.
fn admin_action(broker: &mut Broker, route: &Route, req: &Request<'_>) -> Result<(), ApiError> {
    let q = query(req)?;
    let not_found = |e: AdminError| match e {
        AdminError::TopicNotFound => routes::TOPIC_NOT_FOUND,
        AdminError::ChannelNotFound => routes::CHANNEL_NOT_FOUND,
        AdminError::Storage(_) => routes::INTERNAL_ERROR,
    };
    match route {
        Route::TopicCreate => broker.create_topic(routes::topic_arg(q)?),
        Route::TopicEmpty => broker.empty_topic(routes::topic_arg(q)?),
        Route::TopicDelete => broker.delete_topic_named(routes::existing_topic_arg(q)?),
        Route::TopicPause => broker.set_topic_paused(routes::existing_topic_arg(q)?, true),
        Route::TopicUnpause => broker.set_topic_paused(routes::existing_topic_arg(q)?, false),
        Route::ChannelCreate => {
            let (t, c) = routes::topic_channel_args(q)?;
            broker.create_channel(t, c)
        }
        Route::ChannelDelete
        | Route::ChannelEmpty
        | Route::ChannelPause
        | Route::ChannelUnpause => {
            let (t, c) = routes::topic_channel_args(q)?;
            match route {
                Route::ChannelDelete => broker.delete_channel_named(t, c),
                Route::ChannelEmpty => broker.empty_channel(t, c),
                Route::ChannelPause => broker.set_channel_paused(t, c, true),
                _ => broker.set_channel_paused(t, c, false),
            }
        }
        _ => Ok(()),
    }
    .map_err(not_found)
}

/// A peek's arguments, checked in the order of the table in `routes.rs`.
fn peek_target<'q>(route: &Route, q: &'q Query) -> Result<PeekTarget<'q>, ApiError> {
    if *route == Route::TopicPeek {
        let topic = routes::peek_topic_arg(q)?;
        let count = super::peek::count_arg(q)?;
        return Ok(PeekTarget {
            topic,
            channel: None,
            set: PeekSet::Next,
            count,
        });
    }
    let (topic, channel) = routes::topic_channel_args(q)?;
    let count = super::peek::count_arg(q)?;
    let set = super::peek::state_arg(q)?;
    Ok(PeekTarget {
        topic,
        channel: Some(channel),
        set,
        count,
    })
}

/// `/channel/peek` and `/topic/peek`, in the order of the table in `routes.rs`. The broker
/// answers with a [`crate::broker::peek::Peek`]; it is rendered here. `Ok(true)`: the request
/// waits unanswered for its log pages to be read into the page cache (see `broker/peek.rs`)
/// and is served again then. Only a request without a chunked body can wait: it is parsed
/// again from the buffer, and a chunked body is gone from there.
fn peek(
    broker: &mut Broker,
    ck: ClientKey,
    (route, req): (&Route, &Request<'_>),
    ctx: &ReplyCtx,
    now: Now,
) -> Result<bool, ApiError> {
    let target = peek_target(route, query(req)?)?;
    if !req.chunked && broker.peek_must_wait(ck, target) {
        return Ok(true);
    }
    let started = Instant::now();
    // A buffer whose pages are already faulted in, if a closed session left one.
    let mut buf = broker.take_spare_buffer();
    let found = match target.channel {
        None => broker.peek_topic(target.topic, target.count),
        Some(channel) => broker.peek_channel(target.topic, channel, target.set, target.count, now),
    };
    let peeked = found.map_err(|e| match e {
        AdminError::ChannelNotFound => routes::CHANNEL_NOT_FOUND,
        AdminError::TopicNotFound => routes::TOPIC_NOT_FOUND,
        AdminError::Storage(_) => routes::INTERNAL_ERROR,
    })?;
    let n = peeked.messages.len();
    // The body is rendered after room for the head, the head written into the room's end, and
    // the whole handed to the client's output without a copy (`Broker::write_owned`).
    buf.resize(PEEK_HEAD_ROOM, 0);
    super::peek::render_into(&mut buf, &peeked);
    let body_len = buf.len() - PEEK_HEAD_ROOM;
    let mut head = Vec::with_capacity(256);
    let parts = response::Head {
        status: 200,
        content_type: response::ContentType::Set(response::JSON_TYPE),
        v1_header: true,
        extra: &[],
    };
    response::write_head(&mut head, ctx, &parts, body_len);
    match PEEK_HEAD_ROOM.checked_sub(head.len()) {
        Some(start) => {
            buf[start..PEEK_HEAD_ROOM].copy_from_slice(&head);
            broker.write_owned(ck, buf, start);
        }
        // cannot happen: a peek's head is about 200 bytes; still, never a wrong reply.
        None => broker.write_to(ck, |out| {
            out.extend_from_slice(&head);
            out.extend_from_slice(buf.get(PEEK_HEAD_ROOM..).unwrap_or_default());
        }),
    }
    // Peek runs on the loop: how long it held it, reply queued (docs/operations.md quotes it).
    log::debug!(
        "peek: {n} message(s), {body_len} bytes of JSON in {:?}",
        started.elapsed()
    );
    Ok(false)
}

/// A dashboard file (no X-NSQ header: it is a page, not an API reply).
fn dashboard(
    broker: &mut Broker,
    ck: ClientKey,
    name: &str,
    ctx: &ReplyCtx,
) -> Result<(), ApiError> {
    let (ct, body) = super::dashboard::file(name).ok_or(routes::INTERNAL_ERROR)?;
    let ct = response::ContentType::Set(ct);
    broker.write_to(ck, |out| {
        response::write_response(out, ctx, 200, ct, body, false, &[])
    });
    Ok(())
}

/// The OS hostname (nsqd's default `--broadcast-address`).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".to_owned();
    }
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..len]).into_owned()
}
