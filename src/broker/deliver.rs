//! Delivery and timers: the pass that hands messages to ready consumers, and what the wheel
//! fires (in-flight timeouts, deferrals, heartbeats, the periodic maintenance step).

use log::{debug, info};

use crate::protocol::{self, encode};
use crate::storage::DeadReason;

use super::channel::{self, InFlight, Requeued};
use super::client::{Client, ClientKey};
use super::timeouts::ChannelKeys;
use super::{queue_pump, queue_storage, Broker, Now, TimerEvent};
use crate::timer::TimerId;

/// Messages one delivery pass may hand out (or skip) before the loop turn ends and the next
/// turn goes on. Why: with many channels a pass was most of a turn, so a publisher's next
/// batch, which arrives during it, waited for all of it before being read, and so did every
/// timer and every other connection. Measured with `benches/turns.sh` in a 10-channel fan-out
/// (`pubsub --size 200 --batch 200 --connections 4 --channels 10 --consumers 1`): turn p50
/// 0.48 -> 0.22 ms, p99.9 2.6 -> 1.3 ms, ingest 1.14 -> 1.34 M msg/s, delivered 3.22 -> 3.18 M
/// msg/s; with `--rdy 2500` p99.9 3.7 -> 1.3 ms, ingest 0.97 -> 1.36 M msg/s, but delivered
/// 4.05 -> 2.58 M msg/s (smaller writes per consumer per turn): under overload publishers are
/// served first, and the backlog waits in the log. A pass that stops early costs one more
/// turn (an `epoll_wait` that does not sleep).
pub const PASS_BUDGET: usize = 512;

impl Broker {
    pub(super) fn queue_pump(&mut self, tk: usize, chk: usize) {
        if let Some(ch) = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
        {
            queue_pump(&mut self.pump_queue, tk, chk, ch);
        }
    }

    /// The delivery pass: every channel touched this turn hands messages to its ready
    /// consumers, first queued first, until [`PASS_BUDGET`] messages were handled. The channel
    /// the budget ran out in goes to the back of the queue, and the channels not reached stay
    /// at its front: the next turn's pass (which the reactor runs without waiting, see
    /// [`Self::pump_pending`]) goes on from there.
    pub fn pump(&mut self, now: Now) {
        let mut left = PASS_BUDGET;
        while left > 0 {
            let Some((tk, chk)) = self.pump_queue.pop_front() else {
                break;
            };
            let handled = self.pump_channel(tk, chk, now, left);
            left -= handled;
            if left == 0 {
                // It may have more for its consumers: after the channels waiting now.
                self.queue_pump(tk, chk);
            }
            if !self.expired_queue.is_empty() {
                // May append to a dead-letter topic and queue its channels for this pass.
                self.flush_expired(now);
            }
        }
    }

    /// Whether channels wait for a delivery pass (the last one ran out of budget).
    pub fn pump_pending(&self) -> bool {
        !self.pump_queue.is_empty()
    }

    /// Hands up to `budget` messages of one channel to its ready consumers. Returns how many
    /// it handled (delivered, deferred, expired, sampled out or skipped).
    fn pump_channel(&mut self, tk: usize, chk: usize, now: Now, budget: usize) -> usize {
        let settings = self.resolved(tk, Some(chk));
        let ttl_ns = channel::ms_to_ns(settings.message_ttl_ms());
        let dead_letter_expired = settings.max_attempts() > 0;
        let Some(topic) = self.topics.get_mut(tk) else {
            return 0;
        };
        let Some(ch) = topic.channels.get_mut(chk) else {
            return 0;
        };
        ch.pump_queued = false;
        if ch.paused {
            return 0;
        }
        let mut handled = 0;
        let keys = ChannelKeys {
            topic: tk,
            channel: chk,
        };
        let clients = &mut self.clients;
        let cursor_before = ch.cursor;
        while handled < budget {
            let Some(ck) = ch.pick_consumer(|c| clients.get_mut(c).is_some_and(Client::take_ready))
            else {
                break;
            };
            handled += 1;
            // Requeued messages first (they are the oldest); then new ones, unless the topic is
            // paused (a paused topic hands nothing new to its channels). `offset` is the id,
            // `msg.loc` where the record is now (they differ for a carried message).
            let (msg, fresh) = if let Some(r) = ch.requeued.pop_front() {
                (r, false)
            } else if !topic.paused && ch.cursor < topic.log.tail() {
                ch.cursor += 1;
                (Requeued::at(ch.cursor - 1, 0), true)
            } else {
                break;
            };
            let (offset, attempts) = (msg.offset, msg.attempts);
            // Every channel reads the same records, moments apart: the first read verifies
            // the CRC, the others trust it while its epoch lasts (see `VerifyEpoch`).
            let rec = match topic.verified.read(&topic.log, msg.loc, now.mono_ms) {
                Ok(rec) => rec,
                Err(e) => {
                    // Corrupt (already counted and logged by the log) or missing: never deliver.
                    debug!("topic {}: skipping offset {}: {e}", topic.name, msg.loc);
                    continue;
                }
            };
            if fresh && rec.carried_from.is_some() {
                // A carried copy belongs to the channel that wrote it, which reaches it by its
                // entry's location; for a reading cursor it is not a new message.
                continue;
            }
            if fresh && rec.deliver_at_ns > now.wall_ns {
                let wait_ms = u64::try_from((rec.deliver_at_ns - now.wall_ns) / 1_000_000 + 1)
                    .unwrap_or(u64::MAX);
                let event = TimerEvent::Deferred {
                    topic: tk,
                    channel: chk,
                    offset,
                };
                ch.defer(
                    msg,
                    now.timer_base_ms().saturating_add(wait_ms),
                    rec.deliver_at_ns,
                    event,
                    &mut self.wheel,
                );
                continue;
            }
            if ttl_ns > 0 && now.wall_ns.saturating_sub(rec.timestamp_ns) > ttl_ns {
                // Too old to deliver: dead-lettered (after the pass) or dropped, and counted.
                ch.expired_count += 1;
                if dead_letter_expired {
                    self.expired_queue.push((tk, chk, msg));
                }
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
            let deadline_ms = now
                .timer_base_ms()
                .saturating_add(client.settings.msg_timeout_ms);
            let entry = InFlight {
                client: Some(ck),
                deadline_ms,
                own_timer: false,
                attempts,
                delivered_ms: now.mono_ms,
                timestamp_ns: rec.timestamp_ns,
                loc: msg.loc,
            };
            ch.put_in_flight(offset, entry, keys, &mut self.wheel);
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
        let reader = ch.cursor;
        if reader != cursor_before {
            // Once per pass that read new records, not per message (see the method).
            topic.release_read_pages(reader);
            // A reader behind the page-cache window gets its next segments read ahead
            // (`storage/log/window.rs`); otherwise a compare.
            if let Some(job) = topic.log.read_ahead_job(reader) {
                self.worker.submit(tk as u64, job);
            }
        }
        handled
    }

    /// Arms the handshake deadline of a new connection (`--handshake-timeout`: nsqd waits
    /// forever for the magic, but a connection that never speaks should not hold a slot).
    pub fn handshake_deadline(&mut self, token: usize, now: Now) -> TimerId {
        let due = now
            .timer_base_ms()
            .saturating_add(self.cfg.handshake_timeout);
        self.wheel.insert(due, TimerEvent::Handshake(token))
    }

    /// Arms a connection deadline the reactor keeps itself (an HTTP conn's header or idle
    /// deadline) at wheel time `due_ms`; it comes back through [`Self::take_expired_handshakes`].
    pub fn conn_deadline(&mut self, token: usize, due_ms: u64) -> TimerId {
        self.wheel.insert(due_ms, TimerEvent::Handshake(token))
    }

    /// Cancels a timer the reactor holds (a handshake or HTTP deadline).
    pub fn cancel_timer(&mut self, id: TimerId) {
        self.wheel.cancel(id);
    }

    /// Takes the tokens of connections whose deadline (handshake, HTTP header or idle) passed.
    pub fn take_expired_handshakes(&mut self) -> std::vec::Drain<'_, usize> {
        self.expired_handshakes.drain(..)
    }

    /// Called after each write to a client's socket: a consumer whose delivery stopped on a
    /// full output buffer gets messages again once it drained below the limit.
    pub fn output_written(&mut self, ck: ClientKey) {
        let Some(c) = self.clients.get_mut(ck) else {
            return;
        };
        if c.output_blocked && c.out.len() < c.out_limit {
            c.output_blocked = false;
            if let Some((tk, chk)) = c.sub {
                self.queue_pump(tk, chk);
            }
        }
    }

    /// The earliest time (monotonic ms) at which a timer may fire or a log's sync falls due.
    pub fn next_deadline(&self) -> Option<u64> {
        // Only topics on the storage list can have a sync deadline (see `storage_step`).
        let syncs = self
            .storage_due
            .iter()
            .filter_map(|&tk| self.topics.get(tk))
            .filter_map(|t| t.log.next_sync_deadline_ms());
        syncs.chain(self.wheel.next_deadline()).min()
    }

    /// The storage step of the loop turn: apply what the helper thread finished, and hand it
    /// the syncs and segment pre-creations that are due.
    ///
    /// Only the topics on the storage list are visited, not every topic: a topic joins it when
    /// it is appended to, when one of its jobs finishes, and at each maintenance step, and stays
    /// while its log has unsynced records waiting for the sync timeout.
    /// Every log on the list is flushed first (`Log::poll_jobs`).
    pub fn storage_step(&mut self, now: Now) {
        let mut applied = std::mem::take(&mut self.applied);
        while let Some((key, done)) = self.worker.try_recv() {
            // A result for a deleted topic (or a reused key) is ignored by the log itself.
            let Some(tk) = usize::try_from(key).ok() else {
                continue;
            };
            if done.is_warmed() {
                // Even for a topic deleted meanwhile: its peeks must not wait forever.
                self.peeks_warmed(tk);
            }
            if let Some(topic) = self.topics.get_mut(tk) {
                topic.log.apply(done);
                queue_storage(&mut self.storage_due, tk, topic);
                applied.push(tk);
            }
        }
        // Acks can only be released where a sync result just arrived, or a checkpoint that
        // parked publishes wait for (durable FIN) reached the disk.
        self.release_acks(&applied);
        self.release_checkpointed();
        applied.clear();
        self.applied = applied;
        let mut due = std::mem::take(&mut self.storage_due);
        let mut failed_now = Vec::new();
        due.retain(|&tk| {
            let Some(topic) = self.topics.get_mut(tk) else {
                return false;
            };
            for job in topic.log.poll_jobs(now.mono_ms) {
                self.worker.submit(tk as u64, job);
            }
            if topic.log.failure().is_some() && !topic.pending_acks.is_empty() {
                // Its write failed: no sync will come to answer the strict publishers waiting.
                failed_now.push(tk);
            }
            topic.storage_queued = topic.log.next_sync_deadline_ms().is_some();
            topic.storage_queued
        });
        self.storage_due = due;
        self.release_acks(&failed_now);
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
                } => self.on_in_flight_timeout(topic, channel, offset, now),
                TimerEvent::Timeouts { topic, channel } => {
                    self.on_timeouts_due(ChannelKeys { topic, channel }, now);
                }
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
                TimerEvent::Handshake(token) => self.expired_handshakes.push(token),
            }
        }
        self.fired = fired;
    }

    fn on_in_flight_timeout(&mut self, tk: usize, chk: usize, offset: u64, now: Now) {
        let Some(ch) = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
        else {
            return;
        };
        if let Some(entry) = ch.timed_out(offset) {
            self.after_timeout(tk, chk, offset, entry, now);
        }
    }

    /// A channel's timeout queue is due: every message whose deadline passed times out.
    fn on_timeouts_due(&mut self, keys: ChannelKeys, now: Now) {
        let Some(ch) = self
            .topics
            .get_mut(keys.topic)
            .and_then(|t| t.channels.get_mut(keys.channel))
        else {
            return;
        };
        let mut due = Vec::new();
        ch.timeouts_due(now.mono_ms, keys, &mut self.wheel, &mut due);
        for (offset, entry) in due {
            self.after_timeout(keys.topic, keys.channel, offset, entry, now);
        }
    }

    /// A message left flight by timing out: requeued, deferred or dead-lettered, and its
    /// client (if still there) has a slot under its RDY again.
    fn after_timeout(&mut self, tk: usize, chk: usize, offset: u64, entry: InFlight, now: Now) {
        let msg = Requeued {
            offset,
            attempts: entry.attempts,
            loc: entry.loc,
        };
        self.requeue_failed(tk, chk, msg, DeadReason::Timeout, now);
        if let Some(c) = entry.client.and_then(|ck| self.clients.get_mut(ck)) {
            c.in_flight = c.in_flight.saturating_sub(1);
            if let Some((tk, chk)) = c.sub {
                // The client has one more slot under its RDY.
                self.queue_pump(tk, chk);
            }
        }
    }

    pub(super) fn schedule_heartbeat(&mut self, ck: ClientKey, now_ms: u64) {
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
        // Waiting for the auth server is not the client's silence (nsqd sets no read deadline
        // while its AUTH call runs): the deadline restarts when the answer is in.
        if now.mono_ms >= c.last_read_ms + 2 * hb && !c.auth.is_pending() {
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
}

/// A fast, good-enough random number for sampling.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[cfg(test)]
mod tests {
    use super::PASS_BUDGET;
    use crate::broker::client::ClientKey;
    use crate::broker::{Broker, Now};
    use crate::client::{parse_frame, Frame};
    use crate::protocol::Command;
    use crate::storage::testutil::TempDir;

    const NOW: Now = Now {
        mono_ms: 1,
        wall_ns: 1,
    };

    /// Message frames queued for `ck`, taken out of its output buffer.
    fn messages_sent(b: &mut Broker, ck: ClientKey) -> usize {
        let Some(out) = b.output(ck) else {
            return 0;
        };
        let (mut frames, mut at) = (0, 0);
        let bytes = out.pending();
        while let Some((frame, used)) = parse_frame(&bytes[at..]).expect("frames") {
            frames += usize::from(matches!(frame, Frame::Message(_)));
            at += used;
        }
        let n = bytes.len();
        out.consume(n);
        frames
    }

    /// A consumer subscribed to `channel` of topic `t`, not ready yet (RDY 0).
    fn unready_subscriber(b: &mut Broker, token: usize, channel: &str) -> ClientKey {
        let addr = "127.0.0.1:1".parse().expect("addr");
        let ck = b.connect(token, addr, NOW);
        b.apply(
            ck,
            Command::Sub {
                topic: "t",
                channel,
            },
            NOW,
        );
        messages_sent(b, ck); // the SUB's OK
        ck
    }

    fn subscriber(b: &mut Broker, token: usize, channel: &str) -> ClientKey {
        let ck = unready_subscriber(b, token, channel);
        b.apply(ck, Command::Rdy { count: 2500 }, NOW);
        ck
    }

    #[test]
    fn a_pass_stops_at_its_budget_and_the_next_goes_on_with_the_channel_not_served() {
        let tmp = TempDir::new("budget");
        let mut b = Broker::open_for_test(tmp.path(), NOW);
        let a = subscriber(&mut b, 1, "a");
        let c = subscriber(&mut b, 2, "c");
        let publisher = b.connect(3, "127.0.0.1:2".parse().expect("addr"), NOW);
        let per_channel = PASS_BUDGET + PASS_BUDGET / 2;
        for _ in 0..per_channel {
            b.apply(
                publisher,
                Command::Pub {
                    topic: "t",
                    body: b"m",
                },
                NOW,
            );
        }
        b.storage_step(NOW);
        let mut passes = Vec::new();
        while b.pump_pending() {
            b.pump(NOW);
            passes.push((messages_sent(&mut b, a), messages_sent(&mut b, c)));
            assert!(passes.len() < 10, "passes never end: {passes:?}");
        }
        // The first channel takes the whole first pass; the second, which the budget did not
        // reach, comes first in the next one, before the rest of the first.
        assert_eq!(passes[0], (PASS_BUDGET, 0));
        assert_eq!(passes[1], (0, PASS_BUDGET));
        let total = passes.iter().fold((0, 0), |(x, y), p| (x + p.0, y + p.1));
        assert_eq!(total, (per_channel, per_channel), "{passes:?}");
        assert!(passes.iter().all(|p| p.0 + p.1 <= PASS_BUDGET));
    }

    /// Flips a bit of `body`'s first byte in whichever file under `dir` holds it.
    fn flip_on_disk(dir: &std::path::Path, body: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut stack = vec![dir.to_path_buf()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(
                    std::fs::read_dir(&path)
                        .expect("dir")
                        .map(|e| e.expect("entry").path()),
                );
                continue;
            }
            let bytes = std::fs::read(&path).expect("read");
            if let Some(at) = bytes.windows(body.len()).position(|w| w == body) {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                f.seek(SeekFrom::Start(at as u64)).expect("seek");
                f.write_all(&[bytes[at] ^ 1]).expect("write");
                return;
            }
        }
        panic!("no file holds {body:?}");
    }

    #[test]
    fn a_crc_check_vouches_for_its_epoch_only() {
        use crate::broker::topic::VERIFY_SPAN_MS;
        let tmp = TempDir::new("verify-epoch");
        let mut b = Broker::open_for_test(tmp.path(), NOW);
        let first = subscriber(&mut b, 1, "first");
        // Two more channels whose consumers are not ready yet.
        let waiting = [
            unready_subscriber(&mut b, 2, "same-tick"),
            unready_subscriber(&mut b, 3, "next-tick"),
        ];
        let publisher = b.connect(4, "127.0.0.1:2".parse().expect("addr"), NOW);
        for body in [&b"body-one"[..], b"body-two", b"body-three"] {
            b.apply(publisher, Command::Pub { topic: "t", body }, NOW);
        }
        b.storage_step(NOW);
        b.pump(NOW);
        assert_eq!(messages_sent(&mut b, first), 3, "all three pass their CRC");
        // The bytes of the second change on disk (and so in the page cache the log maps).
        flip_on_disk(tmp.path(), b"body-two");
        // Within the tick of the first reads their check still vouches for the bytes: the
        // trade `VerifyEpoch` makes (a change on disk is seen from the next tick on).
        b.apply(waiting[0], Command::Rdy { count: 10 }, NOW);
        b.pump(NOW);
        assert_eq!(messages_sent(&mut b, waiting[0]), 3);
        // In the next tick the record is checked again, fails, and is never delivered.
        let next = Now {
            mono_ms: NOW.mono_ms + VERIFY_SPAN_MS,
            wall_ns: 1,
        };
        b.apply(waiting[1], Command::Rdy { count: 10 }, next);
        b.pump(next);
        assert_eq!(
            messages_sent(&mut b, waiting[1]),
            2,
            "the changed record is skipped"
        );
    }
}
