//! A channel's in-flight timeouts, kept in delivery order behind one wheel timer instead of
//! one wheel timer per message.
//!
//! Why: a delivery used to file a timer on the wheel and its FIN to cancel it, on every message
//! (in a 10-channel fan-out under callgrind, filing, the timer slab and cancelling cost about
//! 160 of the ~1,600 instructions a delivery takes). But a deadline is "now + the consumer's
//! `msg_timeout`", the clock only moves forward, and a channel's consumers nearly always share
//! one `msg_timeout`: a channel's deadlines come in order. So they go to the back of a queue, and
//! one wheel timer, due no later than the queue's front, wakes the channel
//! ([`TimerEvent::Timeouts`]).
//!
//! - A deadline earlier than the queue's back (a consumer with a shorter `msg_timeout` than one
//!   before it) would break the order: that message gets a wheel timer of its own
//!   ([`TimerEvent::InFlight`]), as every message used to. `InFlight::timer` says which.
//! - Nothing is removed from the middle. A FIN or REQ leaves its entry behind, *stale*; an entry
//!   is live only while its message is in flight, on the queue, with that same deadline. A TOUCH
//!   gives its message a new deadline and a new entry at the back (or a wheel timer, if the new
//!   deadline is earlier than the back's), which makes the old entry stale.
//! - A finished message's entry is popped at once when it is the front (the usual case:
//!   consumers finish in delivery order), with one compare. Otherwise the stale entries at the
//!   front are dropped (a map lookup each), and the whole queue is compacted once it holds more
//!   than `2 × in flight + `[`SLACK`] entries (checked too after a TOUCH and a rewind), so
//!   neither a message held for long at the front nor one touched again and again can make
//!   the entries pile up.
//! - Invariant: while the queue is not empty, `timer` is set and due no later than the front's
//!   deadline. It may be due earlier (the front it was set for was finished since); then it fires,
//!   finds nothing due, and is set again for the new front: one wheel operation per firing, not
//!   per message.

use std::collections::VecDeque;

use crate::timer::{TimerId, Wheel};

use super::channel::{InFlight, OffsetMap};
use super::TimerEvent;

/// Which channel a timer event is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKeys {
    /// Topic key.
    pub topic: usize,
    /// Channel key within the topic.
    pub channel: usize,
}

impl ChannelKeys {
    /// The event of a message's own wheel timer.
    pub fn in_flight(self, offset: u64) -> TimerEvent {
        TimerEvent::InFlight {
            topic: self.topic,
            channel: self.channel,
            offset,
        }
    }

    /// The event of the channel's queue timer.
    pub fn timeouts(self) -> TimerEvent {
        TimerEvent::Timeouts {
            topic: self.topic,
            channel: self.channel,
        }
    }
}

/// Stale entries tolerated beyond twice the messages in flight before a compaction.
pub const SLACK: usize = 64;

/// A deadline (monotonic ms) and the id offset of the message it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Due {
    deadline_ms: u64,
    offset: u64,
}

/// The queue of one channel (see the module docs).
#[derive(Debug, Default)]
pub struct TimeoutQueue {
    /// Non-decreasing deadlines, front first.
    entries: VecDeque<Due>,
    /// The wheel timer that wakes the channel; set whenever `entries` is not empty.
    timer: Option<TimerId>,
}

/// Whether `due` still stands for a message in flight on the queue with that deadline.
fn is_live(due: &Due, in_flight: &OffsetMap<InFlight>) -> bool {
    in_flight
        .get(&due.offset)
        .is_some_and(|e| !e.own_timer && e.deadline_ms == due.deadline_ms)
}

impl TimeoutQueue {
    /// Entries held, stale ones included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a deadline can join the queue without breaking its order.
    #[inline]
    pub fn accepts(&self, deadline_ms: u64) -> bool {
        self.entries
            .back()
            .is_none_or(|back| back.deadline_ms <= deadline_ms)
    }

    /// Adds a deadline the queue [`accepts`](Self::accepts), arming the channel's timer if
    /// none is set.
    #[inline]
    pub fn push(
        &mut self,
        deadline_ms: u64,
        offset: u64,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
    ) {
        debug_assert!(self.accepts(deadline_ms), "timeout queue out of order");
        self.entries.push_back(Due {
            deadline_ms,
            offset,
        });
        if self.timer.is_none() {
            self.timer = Some(wheel.insert(deadline_ms, keys.timeouts()));
        }
    }

    /// Message `offset`, whose deadline was `deadline_ms` on this queue, left flight (it is no
    /// longer in `in_flight`). Usually its entry is the front (consumers finish in order): it
    /// is popped with one compare and no lookup. Otherwise the stale entries at the front are
    /// dropped, and the queue is compacted if it grew past its bound.
    #[inline]
    pub fn finished(&mut self, offset: u64, deadline_ms: u64, in_flight: &OffsetMap<InFlight>) {
        let done = Due {
            deadline_ms,
            offset,
        };
        if self.entries.front() == Some(&done) {
            self.entries.pop_front();
        } else {
            self.drop_stale(in_flight);
        }
    }

    /// Drops stale entries at the front, and compacts the queue once it holds more than
    /// `2 × in flight + SLACK` entries.
    #[cold]
    fn drop_stale(&mut self, in_flight: &OffsetMap<InFlight>) {
        while let Some(front) = self.entries.front() {
            if is_live(front, in_flight) {
                break;
            }
            self.entries.pop_front();
        }
        self.keep_bounded(in_flight);
    }

    /// Compacts the queue (drops every stale entry) once it holds more than
    /// `2 × in flight + SLACK` entries. Called wherever entries go stale: a message leaving
    /// flight, a TOUCH, a rewind forgetting messages.
    pub fn keep_bounded(&mut self, in_flight: &OffsetMap<InFlight>) {
        if self.entries.len() > 2 * in_flight.len() + SLACK {
            self.entries.retain(|due| is_live(due, in_flight));
        }
    }

    /// The channel's timer fired at `now_ms`: takes every live entry due by then out of
    /// `in_flight` into `out` (as `(offset, entry)`), drops the stale ones passed on the way,
    /// and arms the timer again for the new front, if any.
    pub fn fire(
        &mut self,
        now_ms: u64,
        in_flight: &mut OffsetMap<InFlight>,
        out: &mut Vec<(u64, InFlight)>,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
    ) {
        self.timer = None;
        while let Some(&front) = self.entries.front() {
            if front.deadline_ms > now_ms {
                break;
            }
            self.entries.pop_front();
            if is_live(&front, in_flight) {
                if let Some(entry) = in_flight.remove(&front.offset) {
                    out.push((front.offset, entry));
                }
            }
        }
        self.drop_stale(in_flight);
        if let Some(front) = self.entries.front() {
            self.timer = Some(wheel.insert(front.deadline_ms, keys.timeouts()));
        }
    }

    /// Forgets every entry and cancels the timer (the channel is emptied or deleted).
    pub fn clear(&mut self, wheel: &mut Wheel<TimerEvent>) {
        self.entries.clear();
        if let Some(t) = self.timer.take() {
            wheel.cancel(t);
        }
    }
}
