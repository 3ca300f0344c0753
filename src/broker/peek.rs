//! Peek: what a channel would deliver next, what it holds in flight or deferred, and what a
//! topic's log holds from its oldest record, without delivering anything or changing
//! attempts (`/channel/peek`, `/topic/peek`).
//!
//! The answer is a domain value ([`Peek`]); `http::peek` renders it. Peek runs on the reactor
//! thread like every broker query, so its work is bounded per request, whatever the backlog:
//!
//! - at most [`MAX_PEEK_COUNT`] messages, and no more body bytes than [`PEEK_BODY_BUDGET`]
//!   (always at least one message): reading (CRC) and rendering them is the cost. Bodies are
//!   borrowed from the log's map, not copied;
//! - the log is read from the channel's cursor (or the topic's head) forward, so the work is
//!   O(count + records skipped), never O(backlog); skipped records (carried copies, corrupt
//!   ones) count against [`PEEK_SCAN_LIMIT`];
//! - the in-flight and deferred sets are hash tables: at most [`PEEK_SET_SCAN`] entries are
//!   looked at and the soonest of those returned (exact for sets up to that size);
//! - no disk wait: the bytes a peek will read from the log may have left the page cache (the
//!   old end of a large backlog), and faulting a megabyte in from disk would hold the loop for
//!   tens of ms. [`Broker::peek_must_wait`] checks first; if pages are missing, a helper thread
//!   reads them in (`Log::warm_job`), the client waits like one waiting for a durable ack, and
//!   its request is served again when the job is done, once, from whatever is then cached.
//!   Requeued, deferred and in-flight messages are read where they are, without this (they are
//!   few, and usually recent).

use crate::protocol::encode::message_id_from_offset;
use crate::protocol::MessageId;
use crate::storage::{Log, Record};

use super::admin::AdminError;
use super::channel::Channel;
use super::client::ClientKey;
use super::{Broker, Now};

/// The most messages one peek returns (`count` above it is refused by the HTTP layer).
pub const MAX_PEEK_COUNT: usize = 1000;
/// Body bytes one peek renders before it stops early (at least one message is always returned).
pub const PEEK_BODY_BUDGET: usize = 1024 * 1024;
/// Log records one peek looks at, returned or skipped.
pub const PEEK_SCAN_LIMIT: usize = 100_000;
/// Entries of an in-flight or deferred table one peek looks at.
pub const PEEK_SET_SCAN: usize = 50_000;

/// Record bytes besides the body, allowed per message when sizing what a peek will read
/// (header, alignment, a dedup key).
const PEEK_RECORD_OVERHEAD: usize = 64;

/// Whether a client's peek waited for its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeekWarmth {
    /// No peek waits: the next one checks its pages.
    #[default]
    Cold,
    /// A warm job for this topic key is running; the client is blocked until it is done.
    Waiting(usize),
    /// The job is done: the request served again now runs without checking again (so a page
    /// evicted meanwhile cannot make it wait forever).
    Warmed,
}

/// What a peek request asks for, as `peek_must_wait` sizes it.
#[derive(Debug, Clone, Copy)]
pub struct PeekTarget<'q> {
    /// The topic.
    pub topic: &'q str,
    /// The channel, or `None` for a topic peek (its log from the head).
    pub channel: Option<&'q str>,
    /// Which set of the channel (ignored for a topic peek).
    pub set: PeekSet,
    /// How many messages.
    pub count: usize,
}

/// Where a peeked message is in its channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekState {
    /// Ready to be delivered (requeued, or not yet taken from the log).
    Queued,
    /// Waiting for a deadline (REQ with a delay, DPUB).
    Deferred,
    /// Held by a client.
    InFlight,
}

/// Which messages of a channel to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeekSet {
    /// The next ones it would deliver: requeued first, then the log from its cursor.
    Next,
    /// The deferred set, soonest first.
    Deferred,
    /// The in-flight set, longest-held first.
    InFlight,
}

/// One peeked message; its body is borrowed from the log's map (render it, then drop it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekedMessage<'a> {
    /// Its NSQ id.
    pub id: MessageId,
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Deliveries so far.
    pub attempts: u16,
    /// Its state in the channel; `None` for a topic peek (the log knows no states).
    pub state: Option<PeekState>,
    /// When it becomes deliverable (wall ns), for a deferred message or a future DPUB.
    pub deliver_at_ns: Option<i64>,
    /// Its body, in the log's map: peek copies nothing.
    pub body: &'a [u8],
    /// For a dead letter (record kind 3): where and why it died.
    pub dead: Option<crate::storage::DeadMeta<'a>>,
}

/// A peek's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peek<'a> {
    /// The messages, in delivery (or log) order.
    pub messages: Vec<PeekedMessage<'a>>,
    /// Set when [`PEEK_BODY_BUDGET`] or [`PEEK_SCAN_LIMIT`] ended the peek before `count`.
    pub truncated: bool,
    /// Body bytes taken so far, against [`PEEK_BODY_BUDGET`].
    bytes: usize,
}

impl<'a> Peek<'a> {
    fn with_capacity(count: usize) -> Peek<'a> {
        Peek {
            messages: Vec::with_capacity(count.min(MAX_PEEK_COUNT)),
            truncated: false,
            bytes: 0,
        }
    }

    /// Adds a message (the caller checked [`Peek::fits`]).
    fn push(&mut self, id: u64, rec: &Record<'a>, attempts: u16, state: Option<PeekState>) {
        let deliver_at_ns = match state {
            Some(PeekState::InFlight) => None,
            _ => (rec.deliver_at_ns > 0).then_some(rec.deliver_at_ns),
        };
        self.bytes = self.bytes.saturating_add(rec.body.len());
        self.messages.push(PeekedMessage {
            id: message_id_from_offset(id),
            timestamp_ns: rec.timestamp_ns,
            attempts,
            state,
            deliver_at_ns,
            body: rec.body,
            dead: rec.dead,
        });
    }

    /// Whether the next message of `len` body bytes still fits the budget.
    fn fits(&mut self, len: usize) -> bool {
        let fits = self.messages.is_empty() || self.bytes.saturating_add(len) <= PEEK_BODY_BUDGET;
        self.truncated |= !fits;
        fits
    }
}

impl Broker {
    /// Called before a peek runs. If the log bytes it will read are not all in the page cache,
    /// hands a job that reads them in to a helper thread, blocks `ck` until it is done, and
    /// returns `true`: the caller leaves the request unanswered and serves it again when the
    /// client is unblocked. `false`: run the peek now (its pages are cached, it reads no log
    /// range, the topic or channel does not exist, or this is that second time).
    pub fn peek_must_wait(&mut self, ck: ClientKey, target: PeekTarget<'_>) -> bool {
        let Some(c) = self.clients.get_mut(ck) else {
            return false;
        };
        if c.peek_warmth == PeekWarmth::Warmed {
            c.peek_warmth = PeekWarmth::Cold;
            return false;
        }
        let Some(job) = self.peek_warm_job(target) else {
            return false;
        };
        let Some(&tk) = self.topic_index.get(target.topic) else {
            return false;
        };
        log::debug!(
            "peek of topic {}: its pages are not all cached; reading them in on a helper first",
            target.topic
        );
        self.worker.submit(tk as u64, job);
        if let Some(c) = self.clients.get_mut(ck) {
            c.peek_warmth = PeekWarmth::Waiting(tk);
        }
        self.peeks_warming.push(ck);
        true
    }

    /// The warm job for the log range a peek will read, if any of it is not cached.
    fn peek_warm_job(&self, target: PeekTarget<'_>) -> Option<crate::storage::Job> {
        let t = &self.topics[*self.topic_index.get(target.topic)?];
        let from = match target.channel {
            None => t.log.head(),
            Some(_) if target.set != PeekSet::Next => return None,
            Some(name) => t.channels[*t.channel_index.get(name)?].cursor,
        };
        let count = target.count.min(MAX_PEEK_COUNT);
        let bytes = PEEK_BODY_BUDGET.saturating_add(count.saturating_mul(PEEK_RECORD_OVERHEAD));
        t.log.warm_job(from, count as u64, bytes)
    }

    /// A warm job for topic key `tk` is done: the peeks waiting for it run again.
    pub(super) fn peeks_warmed(&mut self, tk: usize) {
        let clients = &mut self.clients;
        let unblocked = &mut self.unblocked;
        self.peeks_warming.retain(|&ck| {
            let Some(c) = clients.get_mut(ck) else {
                return false; // gone meanwhile
            };
            match c.peek_warmth {
                PeekWarmth::Waiting(k) if k == tk => {
                    c.peek_warmth = PeekWarmth::Warmed;
                    unblocked.push(c.token);
                    false
                }
                PeekWarmth::Waiting(_) => true,
                _ => false,
            }
        });
    }

    /// Up to `count` messages of channel `channel` of `topic` from `set`.
    ///
    /// # Errors
    /// `TopicNotFound`, `ChannelNotFound`.
    pub fn peek_channel(
        &self,
        topic: &str,
        channel: &str,
        set: PeekSet,
        count: usize,
        now: Now,
    ) -> Result<Peek<'_>, AdminError> {
        let tk = *self
            .topic_index
            .get(topic)
            .ok_or(AdminError::TopicNotFound)?;
        let t = &self.topics[tk];
        let chk = *t
            .channel_index
            .get(channel)
            .ok_or(AdminError::ChannelNotFound)?;
        let ch = &t.channels[chk];
        let count = count.min(MAX_PEEK_COUNT);
        Ok(match set {
            PeekSet::Next => peek_next(ch, &t.log, count, now.wall_ns),
            PeekSet::Deferred => peek_deferred(ch, &t.log, count),
            PeekSet::InFlight => peek_in_flight(ch, &t.log, count),
        })
    }

    /// Up to `count` messages of `topic`'s log from its oldest retained record (carried copies
    /// are left out: they repeat a message already in the log or held by a channel).
    ///
    /// # Errors
    /// `TopicNotFound`.
    pub fn peek_topic(&self, topic: &str, count: usize) -> Result<Peek<'_>, AdminError> {
        let tk = *self
            .topic_index
            .get(topic)
            .ok_or(AdminError::TopicNotFound)?;
        let log = &self.topics[tk].log;
        let mut out = Peek::with_capacity(count);
        scan_log(log, log.head(), count.min(MAX_PEEK_COUNT), &mut out, |_| {
            None
        });
        Ok(out)
    }
}

/// Requeued messages first, then new ones from the cursor (a future DPUB is `Deferred`).
fn peek_next<'a>(ch: &Channel, log: &'a Log, count: usize, now_wall_ns: i64) -> Peek<'a> {
    let mut out = Peek::with_capacity(count);
    // Requeued entries whose record cannot be read are skipped; the scan limit bounds that.
    for r in ch.requeued.iter().take(PEEK_SCAN_LIMIT) {
        if out.messages.len() == count {
            return out;
        }
        // A corrupt or vanished record is never delivered, so it is not shown either.
        if let Ok(rec) = log.read(r.loc) {
            if !out.fits(rec.body.len()) {
                return out;
            }
            out.push(r.offset, &rec, r.attempts, Some(PeekState::Queued));
        }
    }
    let left = count - out.messages.len();
    scan_log(log, ch.cursor, left, &mut out, |rec| {
        Some(if rec.deliver_at_ns > now_wall_ns {
            PeekState::Deferred
        } else {
            PeekState::Queued
        })
    });
    out
}

/// Reads up to `count` messages from `from` on into `out`, skipping carried copies, within the
/// scan limit and the body budget.
fn scan_log<'a>(
    log: &'a Log,
    from: u64,
    count: usize,
    out: &mut Peek<'a>,
    state: impl Fn(&Record<'a>) -> Option<PeekState>,
) {
    let want = out.messages.len() + count;
    for (seen, rec) in log.iter_from(from).enumerate() {
        if out.messages.len() >= want {
            return;
        }
        if seen >= PEEK_SCAN_LIMIT {
            out.truncated = true;
            return;
        }
        if rec.carried_from.is_some() {
            continue;
        }
        if !out.fits(rec.body.len()) {
            return;
        }
        out.push(rec.offset, &rec, 0, state(&rec));
    }
}

/// The deferred set, soonest deadline first.
fn peek_deferred<'a>(ch: &Channel, log: &'a Log, count: usize) -> Peek<'a> {
    let mut entries: Vec<(i64, u64, u64, u16)> = ch
        .deferred
        .iter()
        .take(PEEK_SET_SCAN)
        .map(|(&id, d)| (d.due_wall_ns, id, d.loc, d.attempts))
        .collect();
    let mut out = Peek::with_capacity(count);
    out.truncated = ch.deferred.len() > PEEK_SET_SCAN;
    soonest(&mut entries, count);
    for (due, id, loc, attempts) in entries {
        let Ok(rec) = log.read(loc) else { continue };
        if !out.fits(rec.body.len()) {
            break;
        }
        out.push(id, &rec, attempts, Some(PeekState::Deferred));
        if let Some(m) = out.messages.last_mut() {
            m.deliver_at_ns = Some(due);
        }
    }
    out
}

/// The in-flight set, earliest delivery first.
fn peek_in_flight<'a>(ch: &Channel, log: &'a Log, count: usize) -> Peek<'a> {
    let mut entries: Vec<(u64, u64, u64, u16)> = ch
        .in_flight
        .iter()
        .take(PEEK_SET_SCAN)
        .map(|(&id, f)| (f.delivered_ms, id, f.loc, f.attempts))
        .collect();
    let mut out = Peek::with_capacity(count);
    out.truncated = ch.in_flight.len() > PEEK_SET_SCAN;
    soonest(&mut entries, count);
    for (_, id, loc, attempts) in entries {
        let Ok(rec) = log.read(loc) else { continue };
        if !out.fits(rec.body.len()) {
            break;
        }
        out.push(id, &rec, attempts, Some(PeekState::InFlight));
    }
    out
}

/// Keeps the `count` smallest entries, sorted: O(n) selection, then a sort of `count`.
fn soonest<T: Ord>(entries: &mut Vec<T>, count: usize) {
    if entries.len() > count && count > 0 {
        entries.select_nth_unstable(count - 1);
    }
    entries.truncate(count);
    entries.sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soonest_keeps_the_smallest_in_order() {
        let mut v = vec![9, 3, 7, 1, 8, 2];
        soonest(&mut v, 3);
        assert_eq!(v, [1, 2, 3]);
        let mut v = vec![2, 1];
        soonest(&mut v, 5);
        assert_eq!(v, [1, 2]);
        let mut v = vec![2, 1];
        soonest(&mut v, 0);
        assert!(v.is_empty());
    }

    #[test]
    fn the_body_budget_always_lets_one_message_through() {
        let big = vec![0u8; PEEK_BODY_BUDGET + 1];
        let rec = Record {
            offset: 7,
            timestamp_ns: 1,
            deliver_at_ns: 0,
            attempts: 0,
            carried_from: None,
            dead: None,
            dedup_key: &[],
            body: &big,
        };
        let mut p = Peek::default();
        assert!(p.fits(big.len()));
        p.push(7, &rec, 0, None);
        assert!(!p.fits(1), "the budget is spent");
        assert!(p.truncated);
        assert_eq!(p.messages[0].id, message_id_from_offset(7));
    }
}
