//! Failure handling where messages change state: dead letters (max attempts, TTL) and the
//! requeue backoff.
//!
//! A dead letter is an append to the topic `<topic>.dead` of a kind-3 record holding the body
//! byte for byte and the metadata (original id and publish time, topic, channel, attempts,
//! reason; layout in `storage/record.rs`), never a side channel: the dead-letter topic is an
//! ordinary topic, consumed, paused, emptied and checkpointed like any other. An ephemeral
//! topic's dead letters are dropped (and counted): its dead-letter topic could not outlive it.
//!
//! Durability: the dead letter is appended before the source channel forgets the message, in
//! the same loop turn, and both reach disk by the usual policy (the log's sync, the
//! checkpoint). A crash between the two can deliver the message once more on its channel (the
//! checkpoint still lists it) while the dead letter is also kept: at least once, never lost.

use log::{error, warn};

use crate::storage::{DeadMeta, DeadReason, NewRecord};

use super::channel::{ms_to_ns, Requeued};
use super::settings::{dead_letter_name_fits, dead_letter_topic};
use super::{queue_pump, queue_storage, Broker, Now};

/// Most body bytes one `GET /topic/dead` collects (1000 records of up to `--max-msg-size`
/// each would otherwise build a reply of up to a GiB on the reactor thread).
pub const MAX_DEAD_BYTES: usize = 4 << 20;

/// A dead letter read back for `GET /topic/dead` (a domain value; `http` renders it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its offset in the dead-letter topic (its id there).
    pub offset: u64,
    /// When it was dead-lettered, ns.
    pub timestamp_ns: i64,
    /// Deliveries it had on its channel.
    pub attempts: u16,
    /// Its id in its own topic (`None`: a record without metadata, e.g. published directly).
    pub orig_id: Option<u64>,
    /// Its original publish time.
    pub orig_timestamp_ns: Option<i64>,
    /// Where it died.
    pub topic: Option<String>,
    /// The channel it died on.
    pub channel: Option<String>,
    /// Why.
    pub reason: Option<DeadReason>,
    /// The body, byte for byte.
    pub body: Vec<u8>,
}

/// The requeue delay of a message that failed its `attempts`-th delivery with backoff `base_ms`:
/// `base × 2^(attempts−1)`, capped at `cap_ms` (`--max-req-timeout`).
pub fn backoff_ms(base_ms: u64, attempts: u16, cap_ms: u64) -> u64 {
    let exp = u32::from(attempts.max(1) - 1);
    let factor = 1u64
        .checked_shl(exp)
        .filter(|_| exp < 64)
        .unwrap_or(u64::MAX);
    base_ms.saturating_mul(factor).min(cap_ms)
}

impl Broker {
    /// Whether a message that just failed its `attempts`-th delivery on the channel must be
    /// dead-lettered instead of requeued.
    pub(super) fn exhausted(&self, tk: usize, chk: usize, attempts: u16) -> bool {
        let max = self.resolved(tk, Some(chk)).max_attempts();
        max > 0 && u64::from(attempts) >= max
    }

    /// The delay a REQ 0 or a timeout of a message that had `attempts` deliveries gets: the
    /// channel's backoff, or 0 when it is off.
    pub(super) fn backoff_for(&self, tk: usize, chk: usize, attempts: u16) -> u64 {
        let base = self.resolved(tk, Some(chk)).requeue_backoff_ms();
        if base == 0 {
            return 0;
        }
        backoff_ms(base, attempts, self.cfg.max_req_timeout)
    }

    /// Dead-letters a message its channel has already let go of. Returns false when the dead
    /// letter could not be written (the caller decides whether to requeue).
    pub(super) fn dead_letter(
        &mut self,
        tk: usize,
        chk: usize,
        msg: Requeued,
        reason: DeadReason,
        now: Now,
    ) -> bool {
        let Some(topic) = self.topics.get_mut(tk) else {
            return false;
        };
        let Some(ch) = topic.channels.get_mut(chk) else {
            return false;
        };
        ch.dead_letter_count += 1;
        let channel = ch.name.clone();
        let name = topic.name.clone();
        let dead_name = match dead_letter_topic(&name) {
            Some(d) if !topic.ephemeral && dead_letter_name_fits(&name) => d,
            // Ephemeral topics (and, after a restart, a name too long for `.dead` that was
            // created before the flag was set) drop their dead letters; the count says so.
            _ => return true,
        };
        let (timestamp, body) = match topic.log.read(msg.loc) {
            Ok(rec) => (rec.timestamp_ns, rec.body.to_vec()),
            Err(e) => {
                warn!("topic {name}: dead letter {} unreadable: {e}", msg.offset);
                return true;
            }
        };
        let dk = match self.topic_key(&dead_name) {
            Ok(dk) => dk,
            Err(e) => {
                error!("topic {name}: cannot open {dead_name}: {e}");
                return false;
            }
        };
        let meta = DeadMeta {
            orig_id: msg.offset,
            orig_timestamp_ns: timestamp,
            reason,
            topic: &name,
            channel: &channel,
        };
        let rec = NewRecord {
            dead: Some(meta),
            attempts: msg.attempts,
            ..NewRecord::message(now.wall_ns, 0, &body)
        };
        let dead = &mut self.topics[dk];
        if let Err(e) = dead.log.append(&rec) {
            error!("topic {dead_name}: dead letter from {name}/{channel} not written: {e}");
            return false;
        }
        dead.message_count += 1;
        dead.message_bytes += body.len() as u64;
        queue_storage(&mut self.storage_due, dk, dead);
        if !dead.paused {
            for (k, ch) in dead.channels.iter_mut() {
                queue_pump(&mut self.pump_queue, dk, k, ch);
            }
        }
        true
    }

    /// Requeues a message that left flight without a FIN (REQ 0 or a timeout): dead-lettered
    /// when it has had its attempts, deferred by the backoff when one is set, else ready now.
    pub(super) fn requeue_failed(
        &mut self,
        tk: usize,
        chk: usize,
        msg: Requeued,
        reason: DeadReason,
        now: Now,
    ) {
        if self.exhausted(tk, chk, msg.attempts) && self.dead_letter(tk, chk, msg, reason, now) {
            return;
        }
        let delay = self.backoff_for(tk, chk, msg.attempts);
        let Some(ch) = self
            .topics
            .get_mut(tk)
            .and_then(|t| t.channels.get_mut(chk))
        else {
            return;
        };
        if delay == 0 {
            ch.requeued.push_back(msg);
        } else {
            let event = super::TimerEvent::Deferred {
                topic: tk,
                channel: chk,
                offset: msg.offset,
            };
            let due_wall = now.wall_ns.saturating_add(ms_to_ns(delay));
            let due = now.timer_base_ms().saturating_add(delay);
            ch.defer(msg, due, due_wall, event, &mut self.wheel);
        }
        queue_pump(&mut self.pump_queue, tk, chk, ch);
    }

    /// Dead letters the delivery pass found (TTL-expired with max attempts on); written after
    /// the pass, when no channel is borrowed. One that cannot be written is lost (logged): the
    /// message had expired anyway.
    pub(super) fn flush_expired(&mut self, now: Now) {
        let mut queue = std::mem::take(&mut self.expired_queue);
        for (tk, chk, msg) in queue.drain(..) {
            if !self.dead_letter(tk, chk, msg, DeadReason::Ttl, now) {
                error!("topic key {tk}: expired message {} dropped", msg.offset);
            }
        }
        self.expired_queue = queue;
    }

    /// Up to `count` records of `topic`'s dead-letter topic (or of `topic` itself when it is one),
    /// oldest retained first, stopping once [`MAX_DEAD_BYTES`] of bodies are collected (at least
    /// one record is returned). An absent dead-letter topic lists nothing.
    pub fn dead_letters(&self, topic: &str, count: usize) -> (String, Vec<DeadLetter>) {
        let name = dead_letter_topic(topic).unwrap_or_else(|| topic.to_owned());
        let Some(t) = self
            .topic_index
            .get(&name)
            .and_then(|&k| self.topics.get(k))
        else {
            return (name, Vec::new());
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut offset = t.log.head();
        while offset < t.log.tail() && out.len() < count && bytes < MAX_DEAD_BYTES {
            // A corrupt record is skipped (the log counts and logs it), as delivery does.
            if let Ok(rec) = t.log.read(offset) {
                bytes += rec.body.len();
                let meta = rec.dead;
                out.push(DeadLetter {
                    offset,
                    timestamp_ns: rec.timestamp_ns,
                    attempts: rec.attempts,
                    orig_id: meta.map(|m| m.orig_id),
                    orig_timestamp_ns: meta.map(|m| m.orig_timestamp_ns),
                    topic: meta.map(|m| m.topic.to_owned()),
                    channel: meta.map(|m| m.channel.to_owned()),
                    reason: meta.map(|m| m.reason),
                    body: rec.body.to_vec(),
                });
            }
            offset += 1;
        }
        (name, out)
    }
}

#[cfg(test)]
mod tests {
    use super::backoff_ms;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_ms(1000, 1, 3_600_000), 1000);
        assert_eq!(backoff_ms(1000, 2, 3_600_000), 2000);
        assert_eq!(backoff_ms(1000, 3, 3_600_000), 4000);
        assert_eq!(backoff_ms(1000, 0, 3_600_000), 1000);
        assert_eq!(backoff_ms(1000, 13, 3_600_000), 3_600_000);
        assert_eq!(backoff_ms(1000, u16::MAX, 3_600_000), 3_600_000);
    }
}
