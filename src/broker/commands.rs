//! The command handlers: one function per NSQ command, in nsqd's check order. State and
//! parameter checks already happened in `protocol::decode`; these do the domain checks and
//! queue the replies.

use log::{debug, info, warn};

use crate::protocol::{self, identify, names, Command, ConnState, MessageId, ProtoError};
use crate::storage::{DeadReason, Log, NewRecord, StorageError};
use crate::timer::Wheel;

use super::auth::{Applied, Gate};
use super::channel::{self, AckError, Channel, ReqAt, Requeued};
use super::client::{Client, ClientKey};
use super::durable::{AckReply, PendingAck, PubVerb};
use super::peers::PeerEvent;
use super::settings;
use super::timeouts::ChannelKeys;
use super::topic::Topic;
use super::{fatal, queue_pump, queue_storage, topic_dir, Broker, Now, TimerEvent};

impl Broker {
    /// Runs one decoded command for a client. [`Applied::Retry`]: the command waits for the
    /// auth server (an expired grant is being refreshed) and must be decoded again later.
    pub fn apply(&mut self, ck: ClientKey, cmd: Command<'_>, now: Now) -> Applied {
        let Some(c) = self.clients.get_mut(ck) else {
            return Applied::Done;
        };
        c.last_read_ms = now.mono_ms;
        // Without auth, nothing to judge: the common case costs one test per command.
        let gate = if self.auth_enabled() {
            self.auth_gate(ck, &cmd, now)
        } else {
            Gate::Pass
        };
        match gate {
            Gate::Pass => {}
            Gate::Failed => return Applied::Done,
            Gate::Wait => return Applied::Retry,
        }
        match cmd {
            Command::Identify { body } => self.identify(ck, body, now),
            Command::Auth { secret } => self.auth_command(ck, secret),
            Command::Sub { topic, channel } => self.sub(ck, topic, channel),
            Command::Pub { topic, body } => {
                self.publish(ck, PubVerb::Pub, topic, std::iter::once(body), 0, now)
            }
            Command::Mpub { topic, bodies } => {
                self.publish(ck, PubVerb::Mpub, topic, bodies, 0, now)
            }
            Command::Dpub {
                topic,
                defer_ms,
                body,
            } => self.publish(
                ck,
                PubVerb::Dpub,
                topic,
                std::iter::once(body),
                defer_ms,
                now,
            ),
            Command::Rdy { count } => self.rdy(ck, count),
            Command::Fin { id } => self.fin(ck, &id, now),
            Command::Req { id, timeout_ms, .. } => self.req(ck, &id, timeout_ms, now),
            Command::Touch { id } => self.touch(ck, &id, now),
            Command::MpubAuth { .. } => {
                if let Some(c) = self.clients.get_mut(ck) {
                    c.auth.mpub_checked = true;
                }
            }
            Command::Nop => {}
            Command::Cls => self.cls(ck),
        }
        Applied::Done
    }

    fn identify(&mut self, ck: ClientKey, body: &[u8], now: Now) {
        let id = match identify::parse_identify(body, &self.identify_limits) {
            Ok(id) => id,
            Err(e) => return self.fail(ck, &e),
        };
        let up = match identify::negotiate(&id, &self.server_info) {
            Ok(up) => up,
            Err(e) => return self.fail(ck, &e),
        };
        let reply = id
            .feature_negotiation
            .then(|| identify::identify_response(&id, &self.server_info, &up));
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        let first = !c.identified;
        c.identified = true;
        c.snappy = up.snappy;
        c.deflate = up.deflate;
        if up.any() {
            // The reactor switches the stream after this reply (nsqd sends it in plain).
            c.upgrade = Some(up);
        }
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
        if !known {
            let event = PeerEvent::ChannelCreated(topic_name.to_owned(), channel_name.to_owned());
            self.peer_event(event);
        }
        if let Some(c) = self.clients.get_mut(ck) {
            c.state = ConnState::Subscribed;
            c.sub = Some((tk, chk));
        }
        self.respond(ck, b"OK");
    }

    /// Looks a topic up, creating it (and its log) on first use.
    pub(super) fn topic_key(&mut self, name: &str) -> Result<usize, StorageError> {
        if let Some(&tk) = self.topic_index.get(name) {
            return Ok(tk);
        }
        if let Some(q) = self.quarantined.get(name) {
            // Never open a second log over files left for inspection.
            return Err(StorageError::Failed(q.reason.clone()));
        }
        if self.cfg.max_attempts > 0
            && !names::is_ephemeral(name)
            && !settings::is_dead_letter_topic(name)
            && !settings::dead_letter_name_fits(name)
        {
            // --max-attempts applies to every topic: one whose `<topic>.dead` could not exist
            // is refused when it is created, not when its first message dies.
            return Err(StorageError::Failed(format!(
                "topic {name}: its dead-letter topic {name}{} would be longer than {} bytes \
                 (--max-attempts is set)",
                settings::DEAD_SUFFIX,
                names::MAX_NAME_LEN
            )));
        }
        let mut cfg = self.log_config();
        if names::is_ephemeral(name) {
            cfg.max_bytes_per_file = super::ephemeral_segment_bytes(&cfg);
        }
        let log = Log::open(&topic_dir(&self.data_dir, name), cfg)?;
        let mut topic = Topic::new(name, log, 0);
        topic.track_e2e = !self.cfg.e2e_processing_latency_percentile.is_empty();
        if !topic.ephemeral {
            self.topology_changed = true;
        }
        info!("topic {name}: created");
        self.peer_event(PeerEvent::TopicCreated(name.to_owned()));
        let tk = self.topics.insert(topic);
        self.topic_index.insert(name.to_owned(), tk);
        Ok(tk)
    }

    /// PUB, MPUB and DPUB: append to the topic's log, answer OK, wake the topic's channels.
    fn publish<'a>(
        &mut self,
        ck: ClientKey,
        verb: PubVerb,
        topic_name: &str,
        bodies: impl Iterator<Item = &'a [u8]>,
        defer_ms: u64,
        now: Now,
    ) {
        let known = match self.publish_target(topic_name) {
            Ok(known) => known,
            Err(full) => {
                debug!(topic = topic_name; "{} refused: {full}", verb.name());
                return self.fail(ck, &verb.failed(&full));
            }
        };
        match self.publish_keyed(ck, (topic_name, known), bodies, defer_ms, &[], now) {
            Err(e) => {
                warn!(topic = topic_name; "topic {topic_name}: {} failed: {e}", verb.name());
                self.fail(ck, &verb.failed(&e));
            }
            Ok(Some(upto)) => {
                let ack = PendingAck {
                    checkpoint_gen: 0,
                    reply: AckReply::Nsq,
                    client: ck,
                    upto: upto.1,
                    verb,
                };
                self.park_ack(upto.0, ack);
            }
            Ok(None) => self.respond(ck, b"OK"),
        }
    }

    /// Appends the bodies to the topic's log (creating the topic on first use), counts them,
    /// and wakes the topic's channels. `topic` is the name and, if the caller already looked it
    /// up, its key. In strict mode returns the topic and the offset the log must be durable up
    /// to before the publisher may hear `OK`; otherwise `None`.
    ///
    /// The dedup window: a body whose key (its hash, or the hash of `dedup_id` when that is
    /// not empty) is in the topic's window is not appended, and still answered `OK` (in strict
    /// mode once everything appended before it is durable: the copy it duplicates may still be
    /// on its way to disk).
    pub(super) fn publish_keyed<'a>(
        &mut self,
        ck: ClientKey,
        (topic_name, known): (&str, Option<usize>),
        bodies: impl Iterator<Item = &'a [u8]>,
        defer_ms: u64,
        dedup_id: &[u8],
        now: Now,
    ) -> Result<Option<(usize, u64)>, StorageError> {
        let tk = match known {
            Some(tk) => tk,
            None => self.topic_key(topic_name)?,
        };
        let deliver_at_ns = if defer_ms == 0 {
            0
        } else {
            now.wall_ns.saturating_add(channel::ms_to_ns(defer_ms))
        };
        let strict = self.strict();
        let window_ms = self.topic_setting(tk, settings::DEDUP_WINDOW);
        let topic = &mut self.topics[tk];
        let at = (now.wall_ns, deliver_at_ns);
        let (count, bytes) = if window_ms == 0 {
            if !topic.dedup.is_empty() {
                topic.dedup.clear();
            }
            append_bodies(&mut topic.log, bodies, dedup_id, at)?
        } else {
            topic.dedup.expire(now.wall_ns, window_ms);
            append_new_bodies(topic, &self.dedup_hasher, bodies, dedup_id, at)?
        };
        if count == 0 {
            // All duplicates: nothing to sync for them, but what they duplicate may still be on
            // its way to disk (then its sync, already due, answers them too).
            let tail = topic.log.tail();
            let wait = strict && topic.log.durable_offset() < tail;
            return Ok(wait.then_some((tk, tail)));
        }
        queue_storage(&mut self.storage_due, tk, topic);
        topic.message_count += count;
        topic.message_bytes += bytes;
        if let Some(c) = self.clients.get_mut(ck) {
            c.count_publish(topic_name, count);
        }
        let tail = topic.log.tail();
        for (chk, ch) in topic.channels.iter_mut() {
            // nsqd counts a message for a channel when it is put into it (deliveries and
            // requeues do not count); in corq it is in every channel once appended.
            ch.message_count += count;
            if deliver_at_ns != 0 && !topic.paused {
                defer_new_records(
                    ch,
                    (tk, chk),
                    tail - count..tail,
                    deliver_at_ns,
                    now,
                    &mut self.wheel,
                );
            }
            if !topic.paused {
                queue_pump(&mut self.pump_queue, tk, chk, ch);
            }
        }
        Ok(strict.then(|| (tk, topic.log.tail())))
    }

    /// Whether the client's grant lets `cmd` run (auth on): the commands nsqd checks are
    /// SUB and the publishes.
    fn auth_gate(&mut self, ck: ClientKey, cmd: &Command<'_>, now: Now) -> Gate {
        match cmd {
            Command::Sub { topic, channel } => self.check_auth(ck, "SUB", topic, channel, now),
            Command::Pub { topic, .. } => self.check_auth(ck, "PUB", topic, "", now),
            // Checked before the body (`MpubAuth`); unless that somehow did not happen.
            Command::Mpub { topic, .. } if !self.take_mpub_checked(ck) => {
                self.check_auth(ck, "MPUB", topic, "", now)
            }
            Command::MpubAuth { topic } => self.check_auth(ck, "MPUB", topic, "", now),
            Command::Dpub { topic, .. } => self.check_auth(ck, "DPUB", topic, "", now),
            _ => Gate::Pass,
        }
    }

    /// Whether the client's MPUB was already checked from its header (and forgets it).
    fn take_mpub_checked(&mut self, ck: ClientKey) -> bool {
        self.clients
            .get_mut(ck)
            .is_some_and(|c| std::mem::take(&mut c.auth.mpub_checked))
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

    fn fin(&mut self, ck: ClientKey, id: &MessageId, now: Now) {
        let result = match self.in_flight_target(ck, id) {
            Some((tk, chk, offset)) => self.channel_op(tk, chk, |ch, wheel| {
                ch.fin(offset, ck, now.wall_ns, wheel).map(|_| ())
            }),
            None => Err(AckError::NotInFlight),
        };
        match result {
            Ok(()) => self.released_in_flight(ck, |c| c.finish_count += 1),
            Err(why) => self.ack_failed(ck, protocol::E_FIN_FAILED, "FIN", id, why),
        }
    }

    /// A FIN or REQ took a message back from a client: one more slot under its RDY, so its
    /// channel may deliver again; `count` bumps the matching counter.
    fn released_in_flight(&mut self, ck: ClientKey, count: impl FnOnce(&mut Client)) {
        self.note_ack(ck);
        if let Some(c) = self.clients.get_mut(ck) {
            c.in_flight = c.in_flight.saturating_sub(1);
            count(c);
            if let Some((tk, chk)) = c.sub {
                self.queue_pump(tk, chk);
            }
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
                    now_ms: now.timer_base_ms(),
                    wall_ns: now.wall_ns,
                    event,
                };
                self.req_in((tk, chk, offset), ck, delay_ms, at, now)
            }
            None => Err(AckError::NotInFlight),
        };
        match result {
            Ok(()) => self.released_in_flight(ck, |c| c.requeue_count += 1),
            Err(why) => self.ack_failed(ck, protocol::E_REQ_FAILED, "REQ", id, why),
        }
    }

    /// REQ on a channel: an explicit delay is honoured as nsqd does, unless the message has had
    /// its attempts (then it is dead-lettered); a REQ 0 goes through the backoff.
    fn req_in(
        &mut self,
        (tk, chk, offset): (usize, usize, u64),
        ck: ClientKey,
        delay_ms: u64,
        at: ReqAt,
        now: Now,
    ) -> Result<(), AckError> {
        let attempts = self
            .topics
            .get(tk)
            .and_then(|t| t.channels.get(chk))
            .and_then(|ch| ch.in_flight.get(&offset))
            .map_or(0, |e| e.attempts);
        if delay_ms > 0 && !self.exhausted(tk, chk, attempts) {
            return self.channel_op(tk, chk, |ch, wheel| ch.req(offset, ck, delay_ms, at, wheel));
        }
        let msg = self.channel_op(tk, chk, |ch, wheel| ch.take_for_req(offset, ck, wheel))?;
        self.requeue_failed(tk, chk, msg, DeadReason::Req, now);
        Ok(())
    }

    fn touch(&mut self, ck: ClientKey, id: &MessageId, now: Now) {
        let timeout = self
            .clients
            .get(ck)
            .map_or(0, |c| c.settings.msg_timeout_ms);
        let deadline_ms = now.timer_base_ms().saturating_add(timeout);
        let max = self.cfg.max_msg_timeout;
        let result = match self.in_flight_target(ck, id) {
            Some((tk, chk, offset)) => self.channel_op(tk, chk, |ch, wheel| {
                let keys = ChannelKeys {
                    topic: tk,
                    channel: chk,
                };
                ch.touch(offset, ck, deadline_ms, max, keys, wheel)
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
}

/// Appends a record per body, written at `(timestamp, deliver_at)` ns; returns how many and
/// their bytes. (Kept apart from the dedup path, [`append_new_bodies`]: this one is the plain
/// publish, and small enough to be inlined into it.)
fn append_bodies<'a, 'k>(
    log: &mut Log,
    bodies: impl Iterator<Item = &'a [u8]>,
    dedup_id: &'k [u8],
    (timestamp_ns, deliver_at_ns): (i64, i64),
) -> Result<(u64, u64), StorageError> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let records = bodies.map(|body| {
        count += 1;
        bytes += body.len() as u64;
        NewRecord {
            dedup_key: dedup_id,
            ..NewRecord::message(timestamp_ns, deliver_at_ns, body)
        }
    });
    append_all(log, records)?;
    Ok((count, bytes))
}

/// As [`append_bodies`], for a topic with a dedup window: a body whose key is in the window
/// (or earlier in this batch) is not appended, only counted as a hit. Only what was appended
/// enters the window: a failed append may be retried.
fn append_new_bodies<'a, 'k>(
    topic: &mut Topic,
    hasher: &super::dedup::DedupHasher,
    bodies: impl Iterator<Item = &'a [u8]>,
    dedup_id: &'k [u8],
    at: (i64, i64),
) -> Result<(u64, u64), StorageError> {
    let mut keys = Vec::new();
    let mut dups = 0u64;
    let dedup = &topic.dedup;
    let new = bodies.filter(|body| {
        let key = hasher.key(dedup_id, body);
        let dup = dedup.contains(key) || keys.contains(&key);
        if dup {
            dups += 1;
        } else {
            keys.push(key);
        }
        !dup
    });
    let appended = append_bodies(&mut topic.log, new, dedup_id, at)?;
    for key in keys {
        topic.dedup.insert(key, at.0);
    }
    topic.dedup.hits += dups;
    Ok(appended)
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

/// A deferred publish goes straight into the deferred set of every channel whose cursor is at
/// it (nothing unread before it), as nsqd puts a DPUB into each channel's deferred queue at
/// once: `/stats` shows it as deferred, not as depth, even with no consumer to read it. In a
/// channel with unread messages before it, it is taken (and deferred) when the cursor gets
/// there, as before.
fn defer_new_records(
    ch: &mut Channel,
    (topic, channel): (usize, usize),
    new: std::ops::Range<u64>,
    deliver_at_ns: i64,
    now: Now,
    wheel: &mut Wheel<TimerEvent>,
) {
    let wait_ms = u64::try_from(deliver_at_ns.saturating_sub(now.wall_ns) / 1_000_000 + 1)
        .unwrap_or(u64::MAX);
    while new.contains(&ch.cursor) {
        let offset = ch.cursor;
        ch.cursor += 1;
        let event = TimerEvent::Deferred {
            topic,
            channel,
            offset,
        };
        let due_ms = now.timer_base_ms().saturating_add(wait_ms);
        ch.defer(Requeued::at(offset, 0), due_ms, deliver_at_ns, event, wheel);
    }
}
