//! Strict durability (`--sync-every=1`): a publisher's `OK` waits until its records are on
//! stable storage.
//!
//! A publish appends as usual, then parks a [`PendingAck`] on its topic instead of answering.
//! The storage worker syncs the log (every append made before a sync starts shares it: group
//! commit), and when the log's durable offset passes the ack's last record the `OK` is queued.
//! While a client waits for an ack its later commands stay unread in its buffer, so replies
//! keep the order of the commands (a client can pipeline; it just cannot overtake itself).
//!
//! A failed sync is not retried: the log refuses further appends, and every waiting publish
//! gets `E_PUB_FAILED` (or MPUB/DPUB), because after a failed fsync the kernel may have dropped
//! the dirty pages and the page cache no longer tells what is on disk.

use super::client::ClientKey;
use super::{fatal, Broker};
use crate::http::ReplyCtx;
use crate::protocol;

/// Which publish command an ack (or a failure) answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubVerb {
    /// PUB
    Pub,
    /// MPUB
    Mpub,
    /// DPUB
    Dpub,
}

impl PubVerb {
    /// The command's name, as it appears in error texts.
    pub fn name(self) -> &'static str {
        match self {
            PubVerb::Pub => "PUB",
            PubVerb::Mpub => "MPUB",
            PubVerb::Dpub => "DPUB",
        }
    }

    /// nsqd's error code for a failed publish of this kind.
    pub fn failed_code(self) -> &'static str {
        match self {
            PubVerb::Pub => protocol::E_PUB_FAILED,
            PubVerb::Mpub => protocol::E_MPUB_FAILED,
            PubVerb::Dpub => protocol::E_DPUB_FAILED,
        }
    }

    /// The fatal error for a publish that failed with `why`.
    pub fn failed(self, why: &dyn std::fmt::Display) -> protocol::ProtoError {
        fatal(self.failed_code(), &format!("{} failed {why}", self.name()))
    }
}

/// How a parked publish is answered: an NSQ frame, or an HTTP reply.
#[derive(Debug, Clone, Copy)]
pub enum AckReply {
    /// TCP protocol V2: an `OK` response frame (or a fatal error frame).
    Nsq,
    /// HTTP `/pub` or `/mpub`: `200 OK` (or 503 with what failed), with the request's reply
    /// context.
    Http(ReplyCtx),
}

/// A publisher's `OK`, waiting for the log to be durable up to `upto`.
#[derive(Debug, Clone, Copy)]
pub struct PendingAck {
    /// Who published.
    pub client: ClientKey,
    /// The log's tail after the publish: every offset below it must be durable.
    pub upto: u64,
    /// What was published.
    pub verb: PubVerb,
    /// How to answer.
    pub reply: AckReply,
    /// The checkpoint generation that must be on disk first (the publisher's earlier FINs and
    /// REQs, see `Client::fin_gen`); 0 = none. Set by `park_ack`.
    pub checkpoint_gen: u64,
}

/// Whether the client waits for a durable ack, for the auth server or for a peek's pages
/// ([`Broker::is_blocked`]).
pub(super) fn is_waiting(c: &super::Client) -> bool {
    c.awaiting_acks > 0
        || c.auth.is_pending()
        || matches!(c.peek_warmth, super::peek::PeekWarmth::Waiting(_))
}

impl Broker {
    /// Whether strict durability is on.
    pub(super) fn strict(&self) -> bool {
        self.cfg.sync_every == 1
    }

    /// Whether a client waits for a durable ack, for the auth server or for a peek's pages (its
    /// later commands must wait too).
    pub fn is_blocked(&self, ck: ClientKey) -> bool {
        self.clients.get(ck).is_some_and(is_waiting)
    }

    /// Takes the reactor tokens of clients that stopped waiting this turn: their buffered
    /// commands can run now.
    pub fn take_unblocked(&mut self) -> std::vec::Drain<'_, usize> {
        self.unblocked.drain(..)
    }

    /// Parks a publish's `OK` until its records are durable.
    pub(super) fn park_ack(&mut self, tk: usize, mut ack: PendingAck) {
        let written = self.checkpointer.written();
        if let Some(c) = self.clients.get_mut(ack.client) {
            c.awaiting_acks += 1;
            if c.fin_gen > written {
                ack.checkpoint_gen = c.fin_gen;
                // Only now is a checkpoint needed at the turn's end (a consumer that never
                // publishes costs no checkpoint per turn), unless one holding it was submitted.
                if c.fin_gen >= self.checkpointer.next_generation() {
                    self.acks_dirty = true;
                }
            }
        }
        if let Some(t) = self.topics.get_mut(tk) {
            t.pending_acks.push_back(ack);
        }
    }

    /// Answers every parked publish whose records are now durable, or fails them all if the
    /// topic's log failed.
    /// Only the given topics are looked at: a topic's acks change only when its sync results
    /// arrive.
    pub(super) fn release_acks(&mut self, topics: &[usize]) {
        let mut released = Vec::new();
        let written = self.checkpointer.written();
        for &tk in topics {
            let Some(topic) = self.topics.get_mut(tk) else {
                continue;
            };
            let failure = topic.log.failure().map(str::to_owned);
            let durable = topic.log.durable_offset();
            while let Some(ack) = topic.pending_acks.front().copied() {
                if failure.is_none() && (ack.upto > durable || ack.checkpoint_gen > written) {
                    break;
                }
                topic.pending_acks.pop_front();
                released.push((ack, failure.clone()));
            }
        }
        for (ack, failure) in released {
            match (ack.reply, failure) {
                (AckReply::Nsq, None) => self.respond(ack.client, b"OK"),
                (AckReply::Nsq, Some(why)) => self.fail(ack.client, &ack.verb.failed(&why)),
                (AckReply::Http(ctx), failure) => self.http_publish_reply(
                    ack.client,
                    &ctx,
                    failure.as_deref().map(|why| (ack.verb, why)),
                ),
            }
            if let Some(c) = self.clients.get_mut(ack.client) {
                c.awaiting_acks = c.awaiting_acks.saturating_sub(1);
                if c.awaiting_acks == 0 {
                    self.unblocked.push(c.token);
                }
            }
        }
    }

    /// Strict mode: notes that `ck` just finished or requeued a message: any checkpoint
    /// submitted from now on holds it. A later publish of the same client waits for one
    /// (see `park_ack`).
    pub(super) fn note_ack(&mut self, ck: ClientKey) {
        if !self.strict() {
            return;
        }
        let next = self.checkpointer.next_generation();
        if let Some(c) = self.clients.get_mut(ck) {
            c.fin_gen = next;
        }
    }

    /// Strict mode: when a newer checkpoint reached the disk, answers the publishes that
    /// waited for it.
    pub(super) fn release_checkpointed(&mut self) {
        let written = self.checkpointer.written();
        if written == self.seen_written {
            return;
        }
        self.seen_written = written;
        let waiting: Vec<usize> = self
            .topics
            .iter()
            .filter(|(_, t)| !t.pending_acks.is_empty())
            .map(|(tk, _)| tk)
            .collect();
        self.release_acks(&waiting);
    }

    /// Forgets a departing client's parked acks.
    pub(super) fn drop_acks_of(&mut self, ck: ClientKey) {
        for (_, topic) in self.topics.iter_mut() {
            topic.pending_acks.retain(|a| a.client != ck);
        }
    }
}
