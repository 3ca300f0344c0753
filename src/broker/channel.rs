//! A channel: a cursor into its topic's log plus the messages it has taken out of the log and
//! not yet finished.
//!
//! nsqd copies every message into every channel's queue; corq does not. A channel owns:
//!
//! - `cursor`: the next log offset it has never looked at;
//! - `requeued`: messages ready to go again (REQ 0, timed out, deferral due, restored at start);
//! - `in_flight`: messages a client holds, each with its timeout (on the channel's
//!   [`TimeoutQueue`], or a wheel timer of its own: see `timeouts.rs`);
//! - `deferred`: messages waiting for a deadline (REQ with a delay, DPUB), each with its timer.
//!
//! A message is in at most one of those places, which is what makes FIN/REQ/TOUCH checks O(1)
//! and keeps nsqd's "one ID cannot be in flight twice" for free.
//!
//! Entries are keyed by the message's **id offset** (the offset of the record it was published
//! as: what clients FIN, REQ and TOUCH by, and what timer payloads name) and carry a
//! **location** (`loc`: where its record is now). The two differ once a long-unfinished message
//! has been *carried* forward (re-appended as a kind-2 record, see `broker/carry.rs`) so the old
//! segment can go; the ack floor is computed from locations. The channel never touches
//! sockets or the wheel's internals: it is handed the wheel and gets `TimerId`s back.

use std::collections::{hash_map::Entry, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::timer::{TimerId, Wheel};

use super::client::ClientKey;
use super::timeouts::{ChannelKeys, TimeoutQueue};
use super::TimerEvent;

/// A hasher for log offsets: they are dense integers, so one multiply spreads them well enough
/// and FIN's map lookup costs a few ns instead of SipHash's ~20.
#[derive(Debug, Default, Clone, Copy)]
pub struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits of n × 2^64/φ are well mixed.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by log offset.
pub type OffsetMap<V> = HashMap<u64, V, BuildHasherDefault<OffsetHasher>>;

/// A message a client holds.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    /// Who holds it; `None` once that client disconnected (nsqd lets it time out anyway).
    pub client: Option<ClientKey>,
    /// When it times out (monotonic ms).
    pub deadline_ms: u64,
    /// Whether it has a wheel timer of its own (in [`Channel::own_timers`]); if not, the
    /// channel's [`TimeoutQueue`] holds its deadline.
    pub own_timer: bool,
    /// Deliveries so far, this one included.
    pub attempts: u16,
    /// Monotonic ms of this delivery: TOUCH may not push the timeout past it + max-msg-timeout.
    pub delivered_ms: u64,
    /// The message's publish time (wall ns), for the e2e latency recorded at FIN.
    pub timestamp_ns: i64,
    /// Where its record is now (equals the id offset unless it was carried).
    pub loc: u64,
}

/// A message waiting for a deadline before it may be delivered.
#[derive(Debug, Clone, Copy)]
pub struct Deferred {
    /// Fires when it is due.
    pub timer: TimerId,
    /// Deliveries so far.
    pub attempts: u16,
    /// Wall-clock due time in ns, kept so a checkpoint can carry the deadline over a restart.
    pub due_wall_ns: i64,
    /// Where its record is now (equals the id offset unless it was carried).
    pub loc: u64,
}

/// A message ready to be delivered again (also how a message is handed to [`Channel::defer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requeued {
    /// Its id offset: the offset it was published at, from which its NSQ id derives.
    pub offset: u64,
    /// Deliveries so far.
    pub attempts: u16,
    /// Where its record is now (equals `offset` unless it was carried).
    pub loc: u64,
}

impl Requeued {
    /// A message that still sits where it was published.
    pub fn at(offset: u64, attempts: u16) -> Requeued {
        Requeued {
            offset,
            attempts,
            loc: offset,
        }
    }
}

/// A carried copy that is written but not yet known durable: the entry keeps reading (and
/// pinning) the original until the copy is on stable storage, so no checkpoint ever names a
/// location a crash could lose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Carrying {
    /// The location the entry had when it was carried.
    pub from: u64,
    /// The carried record's offset.
    pub to: u64,
}

/// Why a FIN, REQ or TOUCH was refused (both are nsqd's non-fatal `E_*_FAILED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckError {
    /// Never delivered, already finished, requeued or timed out.
    NotInFlight,
    /// In flight to another client.
    NotOwner,
}

impl AckError {
    /// nsqd's wording, after `<CMD> <id> failed `.
    pub fn reason(self) -> &'static str {
        match self {
            AckError::NotInFlight => "ID not in flight",
            AckError::NotOwner => "client does not own message",
        }
    }
}

/// One channel of a topic.
#[derive(Debug)]
pub struct Channel {
    /// The channel's name (valid per nsqd's rules).
    pub name: String,
    /// `#ephemeral`: deleted with its last consumer, never checkpointed.
    pub ephemeral: bool,
    /// A paused channel delivers nothing; its clients keep their RDY.
    pub paused: bool,
    /// The next log offset this channel has never taken.
    pub cursor: u64,
    /// Ready to go again, oldest first; delivered before anything new from the log.
    pub requeued: VecDeque<Requeued>,
    /// Held by clients.
    pub in_flight: OffsetMap<InFlight>,
    /// The deadlines of the messages in flight that have no wheel timer of their own.
    pub timeouts: TimeoutQueue,
    /// The wheel timers of the messages in flight that have one of their own (a deadline
    /// earlier than the queue's last, see `timeouts.rs`): rare, so kept apart from
    /// [`InFlight`], which stays small.
    pub own_timers: OffsetMap<TimerId>,
    /// Waiting for a deadline.
    pub deferred: OffsetMap<Deferred>,
    /// Messages (by id) whose carried copy waits to become durable before the entry moves.
    pub carrying: OffsetMap<Carrying>,
    /// Subscribed clients, in subscription order.
    pub consumers: Vec<ClientKey>,
    /// Where the round-robin pick of the next consumer resumes.
    next_consumer: usize,
    /// Messages that reached this channel (nsqd's count: each published message once, when
    /// it is appended while the channel exists; not deliveries or requeues).
    pub message_count: u64,
    /// REQs.
    pub requeue_count: u64,
    /// In-flight timeouts.
    pub timeout_count: u64,
    /// Whether the channel is already queued for the broker's delivery pass this turn.
    pub pump_queued: bool,
    /// Publish-to-FIN latency, when `--e2e-processing-latency-percentile` is set.
    pub e2e: Option<crate::stats::E2eLatency>,
    /// Settings set on this channel (`/channel/config`); `None` entries inherit the topic's.
    pub overrides: super::settings::Overrides,
    /// Messages that failed `max_attempts` times (or expired with max attempts on) and went to
    /// the dead-letter topic (or were dropped, for an ephemeral topic).
    pub dead_letter_count: u64,
    /// Messages not delivered because they were older than `message_ttl`.
    pub expired_count: u64,
}

impl Channel {
    /// A channel that starts reading its topic's log at `cursor`.
    pub fn new(name: &str, cursor: u64) -> Self {
        Channel {
            name: name.to_owned(),
            ephemeral: crate::protocol::names::is_ephemeral(name),
            paused: false,
            cursor,
            requeued: VecDeque::new(),
            in_flight: OffsetMap::default(),
            timeouts: TimeoutQueue::default(),
            own_timers: OffsetMap::default(),
            deferred: OffsetMap::default(),
            carrying: OffsetMap::default(),
            consumers: Vec::new(),
            next_consumer: 0,
            message_count: 0,
            requeue_count: 0,
            timeout_count: 0,
            pump_queued: false,
            e2e: None,
            overrides: super::settings::Overrides::default(),
            dead_letter_count: 0,
            expired_count: 0,
        }
    }

    /// Picks the next consumer, round robin, for which `ready` holds.
    pub fn pick_consumer(&mut self, mut ready: impl FnMut(ClientKey) -> bool) -> Option<ClientKey> {
        let n = self.consumers.len();
        for i in 0..n {
            let idx = (self.next_consumer + i) % n;
            let ck = self.consumers[idx];
            if ready(ck) {
                self.next_consumer = (idx + 1) % n;
                return Some(ck);
            }
        }
        None
    }

    /// Removes a consumer and lets its in-flight messages run out their timeouts unowned.
    pub fn remove_consumer(&mut self, ck: ClientKey) {
        self.consumers.retain(|&c| c != ck);
        for entry in self.in_flight.values_mut() {
            if entry.client == Some(ck) {
                entry.client = None;
            }
        }
    }

    /// Checks that `offset` is in flight to `ck`.
    fn owned(&self, offset: u64, ck: ClientKey) -> Result<InFlight, AckError> {
        match self.in_flight.get(&offset) {
            None => Err(AckError::NotInFlight),
            Some(e) if e.client != Some(ck) => Err(AckError::NotOwner),
            Some(e) => Ok(*e),
        }
    }

    /// Puts message `offset` in flight (`entry.own_timer` is ignored): its deadline joins the
    /// channel's timeout queue, or gets a wheel timer of its own if it is earlier than the
    /// queue's last (see `timeouts.rs`).
    #[inline]
    pub fn put_in_flight(
        &mut self,
        offset: u64,
        mut entry: InFlight,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
    ) {
        entry.own_timer = self.file_timeout(offset, entry.deadline_ms, keys, wheel);
        self.in_flight.insert(offset, entry);
    }

    /// Files a deadline for message `offset` on the queue, or as a wheel timer of its own if
    /// the queue cannot take it (returns whether it did that).
    #[inline]
    fn file_timeout(
        &mut self,
        offset: u64,
        deadline_ms: u64,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
    ) -> bool {
        if self.timeouts.accepts(deadline_ms) {
            self.timeouts.push(deadline_ms, offset, keys, wheel);
            return false;
        }
        let timer = wheel.insert(deadline_ms, keys.in_flight(offset));
        self.own_timers.insert(offset, timer);
        true
    }

    /// Forgets the timeout of message `offset`, which just left flight.
    #[inline]
    fn forget_timeout(&mut self, offset: u64, entry: &InFlight, wheel: &mut Wheel<TimerEvent>) {
        if entry.own_timer {
            if let Some(timer) = self.own_timers.remove(&offset) {
                wheel.cancel(timer);
            }
        } else {
            self.timeouts
                .finished(offset, entry.deadline_ms, &self.in_flight);
        }
    }

    /// Takes `offset` out of flight if `ck` holds it, and forgets its timeout: one map probe,
    /// where checking with [`Self::owned`] and then removing would hash and probe twice on
    /// every FIN.
    #[inline]
    fn take_owned(
        &mut self,
        offset: u64,
        ck: ClientKey,
        wheel: &mut Wheel<TimerEvent>,
    ) -> Result<InFlight, AckError> {
        let entry = match self.in_flight.entry(offset) {
            Entry::Vacant(_) => return Err(AckError::NotInFlight),
            Entry::Occupied(e) if e.get().client != Some(ck) => return Err(AckError::NotOwner),
            Entry::Occupied(e) => e.remove(),
        };
        self.forget_timeout(offset, &entry, wheel);
        Ok(entry)
    }

    /// FIN: forgets the message (recording its e2e latency). Returns its attempts.
    pub fn fin(
        &mut self,
        offset: u64,
        ck: ClientKey,
        now_wall_ns: i64,
        wheel: &mut Wheel<TimerEvent>,
    ) -> Result<u16, AckError> {
        let entry = self.take_owned(offset, ck, wheel)?;
        if let Some(e2e) = &mut self.e2e {
            e2e.record(now_wall_ns.saturating_sub(entry.timestamp_ns));
        }
        Ok(entry.attempts)
    }

    /// REQ: back to the queue now (`delay_ms == 0`) or after a delay.
    pub fn req(
        &mut self,
        offset: u64,
        ck: ClientKey,
        delay_ms: u64,
        at: ReqAt,
        wheel: &mut Wheel<TimerEvent>,
    ) -> Result<(), AckError> {
        let entry = self.take_owned(offset, ck, wheel)?;
        self.requeue_count += 1;
        let msg = Requeued {
            offset,
            attempts: entry.attempts,
            loc: entry.loc,
        };
        if delay_ms == 0 {
            self.requeued.push_back(msg);
        } else {
            let due_wall_ns = at.wall_ns.saturating_add(ms_to_ns(delay_ms));
            self.defer(msg, at.now_ms + delay_ms, due_wall_ns, at.event, wheel);
        }
        Ok(())
    }

    /// TOUCH: moves the timeout to `deadline_ms` (now + the client's `msg_timeout`), but never
    /// past delivery + `max_msg_timeout_ms`.
    pub fn touch(
        &mut self,
        offset: u64,
        ck: ClientKey,
        deadline_ms: u64,
        max_msg_timeout_ms: u64,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
    ) -> Result<(), AckError> {
        let entry = self.owned(offset, ck)?;
        let cap = entry.delivered_ms.saturating_add(max_msg_timeout_ms);
        let deadline = deadline_ms.min(cap);
        let own_timer = if entry.own_timer {
            if let Some(&timer) = self.own_timers.get(&offset) {
                wheel.reschedule(timer, deadline);
            }
            true
        } else if deadline == entry.deadline_ms {
            // Still live on the queue as it is.
            false
        } else {
            // Its queue entry goes stale (the deadline no longer matches).
            self.file_timeout(offset, deadline, keys, wheel)
        };
        if let Some(e) = self.in_flight.get_mut(&offset) {
            e.deadline_ms = deadline;
            e.own_timer = own_timer;
        }
        self.timeouts.keep_bounded(&self.in_flight);
        Ok(())
    }

    /// Puts a message in the deferred set with a timer that fires `event` at `due_ms`.
    pub fn defer(
        &mut self,
        msg: Requeued,
        due_ms: u64,
        due_wall_ns: i64,
        event: TimerEvent,
        wheel: &mut Wheel<TimerEvent>,
    ) {
        let timer = wheel.insert(due_ms, event);
        self.deferred.insert(
            msg.offset,
            Deferred {
                timer,
                attempts: msg.attempts,
                due_wall_ns,
                loc: msg.loc,
            },
        );
    }

    /// A message's own in-flight timer fired: the message leaves flight (the broker requeues,
    /// defers or dead-letters it). Returns its entry: who held it, to fix their count, and its
    /// attempts. (A message whose deadline is on the queue is not touched: its timeout comes
    /// from [`Self::timeouts_due`].)
    pub fn timed_out(&mut self, offset: u64) -> Option<InFlight> {
        self.own_timers.remove(&offset)?;
        let entry = self.in_flight.remove(&offset)?;
        self.timeout_count += 1;
        Some(entry)
    }

    /// The channel's queue timer fired at `now_ms`: takes every message whose queued deadline
    /// passed out of flight, into `out` as `(offset, entry)`, and re-arms the timer.
    pub fn timeouts_due(
        &mut self,
        now_ms: u64,
        keys: ChannelKeys,
        wheel: &mut Wheel<TimerEvent>,
        out: &mut Vec<(u64, InFlight)>,
    ) {
        let before = out.len();
        self.timeouts
            .fire(now_ms, &mut self.in_flight, out, keys, wheel);
        self.timeout_count += (out.len() - before) as u64;
    }

    /// REQ of a message the broker requeues itself (backoff or dead letter): takes it out of
    /// flight, counting the REQ. Returns it as a requeued message.
    pub fn take_for_req(
        &mut self,
        offset: u64,
        ck: ClientKey,
        wheel: &mut Wheel<TimerEvent>,
    ) -> Result<Requeued, AckError> {
        let entry = self.take_owned(offset, ck, wheel)?;
        self.requeue_count += 1;
        Ok(Requeued {
            offset,
            attempts: entry.attempts,
            loc: entry.loc,
        })
    }

    /// A deferral is due: the message is ready.
    pub fn deferred_due(&mut self, offset: u64) -> bool {
        match self.deferred.remove(&offset) {
            Some(d) => {
                self.requeued.push_back(Requeued {
                    offset,
                    attempts: d.attempts,
                    loc: d.loc,
                });
                true
            }
            None => false,
        }
    }

    /// The lowest log offset this channel still needs (by location): every record below it
    /// is finished or has a durable carried copy the channel reads instead.
    pub fn ack_floor(&self) -> u64 {
        self.unfinished()
            .fold(self.cursor, |floor, m| floor.min(m.loc))
    }

    /// Every unfinished message below the cursor (in flight, deferred or requeued), with the
    /// attempts so far and, for a deferred one, its wall-clock due time (else 0).
    pub fn unfinished(&self) -> impl Iterator<Item = Requeued> + '_ {
        let in_flight = self.in_flight.iter().map(|(&offset, e)| Requeued {
            offset,
            attempts: e.attempts,
            loc: e.loc,
        });
        let deferred = self.deferred.iter().map(|(&offset, d)| Requeued {
            offset,
            attempts: d.attempts,
            loc: d.loc,
        });
        in_flight
            .chain(deferred)
            .chain(self.requeued.iter().copied())
    }

    /// Moves the entry of message `id` from location `from` to `to`. Returns false if the
    /// message is finished or somewhere else by now (then nothing changes).
    pub fn relocate(&mut self, id: u64, from: u64, to: u64) -> bool {
        let slot = if let Some(e) = self.in_flight.get_mut(&id) {
            &mut e.loc
        } else if let Some(d) = self.deferred.get_mut(&id) {
            &mut d.loc
        } else if let Some(r) = self.requeued.iter_mut().find(|r| r.offset == id) {
            &mut r.loc
        } else {
            return false;
        };
        if *slot != from {
            return false;
        }
        *slot = to;
        true
    }

    /// Switches every carried message whose copy is now durable (below `durable`) to its new
    /// location. Returns how many moved; copies of messages finished meanwhile are forgotten.
    pub fn settle_carried(&mut self, durable: u64) -> usize {
        let ready: Vec<(u64, Carrying)> = self
            .carrying
            .iter()
            .filter(|(_, c)| c.to < durable)
            .map(|(&id, &c)| (id, c))
            .collect();
        let mut moved = 0;
        for (id, c) in ready {
            self.carrying.remove(&id);
            moved += usize::from(self.relocate(id, c.from, c.to));
        }
        moved
    }

    /// Messages waiting to be delivered: the unread log plus the requeued ones.
    pub fn depth(&self, log_tail: u64) -> u64 {
        log_tail.saturating_sub(self.cursor) + self.requeued.len() as u64
    }

    /// Forgets every unfinished message and skips to `tail` (`/channel/empty`).
    pub fn empty(&mut self, tail: u64, wheel: &mut Wheel<TimerEvent>) {
        self.cancel_timers(wheel);
        self.in_flight.clear();
        self.deferred.clear();
        self.requeued.clear();
        self.carrying.clear();
        self.cursor = tail;
    }

    /// Forgets the in-flight, deferred, requeued and carrying entries of messages at or after
    /// `target` (a rewind: they come again from the log), cancelling their timers. Returns the
    /// clients that held the in-flight ones, one entry per message, to give their RDY room back.
    pub fn forget_from(&mut self, target: u64, wheel: &mut Wheel<TimerEvent>) -> Vec<ClientKey> {
        let mut released = Vec::new();
        // Their queued deadlines are left behind, stale (see `timeouts.rs`).
        self.in_flight.retain(|&id, e| {
            if id < target {
                return true;
            }
            released.extend(e.client);
            false
        });
        self.own_timers.retain(|&id, &mut timer| {
            if id < target {
                return true;
            }
            wheel.cancel(timer);
            false
        });
        self.timeouts.keep_bounded(&self.in_flight);
        self.deferred.retain(|&id, d| {
            if id < target {
                return true;
            }
            wheel.cancel(d.timer);
            false
        });
        self.requeued.retain(|r| r.offset < target);
        self.carrying.retain(|&id, _| id < target);
        released
    }

    /// Cancels every timer the channel owns (delete, empty, shutdown).
    pub fn cancel_timers(&mut self, wheel: &mut Wheel<TimerEvent>) {
        for (_, timer) in self.own_timers.drain() {
            wheel.cancel(timer);
        }
        self.timeouts.clear(wheel);
        for d in self.deferred.values() {
            wheel.cancel(d.timer);
        }
    }
}

/// The time and the timer payload a delayed REQ needs.
#[derive(Debug, Clone, Copy)]
pub struct ReqAt {
    /// Monotonic ms now.
    pub now_ms: u64,
    /// Wall-clock ns now.
    pub wall_ns: i64,
    /// What the deferral timer fires.
    pub event: TimerEvent,
}

/// Milliseconds to nanoseconds, saturating.
pub fn ms_to_ns(ms: u64) -> i64 {
    i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> TimerEvent {
        TimerEvent::Deferred {
            topic: 0,
            channel: 0,
            offset: 0,
        }
    }

    const KEYS: ChannelKeys = ChannelKeys {
        topic: 0,
        channel: 0,
    };

    fn deliver(ch: &mut Channel, wheel: &mut Wheel<TimerEvent>, offset: u64, ck: ClientKey) {
        deliver_until(ch, wheel, offset, ck, 1000);
    }

    fn deliver_until(
        ch: &mut Channel,
        wheel: &mut Wheel<TimerEvent>,
        offset: u64,
        ck: ClientKey,
        deadline_ms: u64,
    ) {
        let entry = InFlight {
            client: Some(ck),
            deadline_ms,
            own_timer: false,
            attempts: 1,
            delivered_ms: 0,
            timestamp_ns: 0,
            loc: offset,
        };
        ch.put_in_flight(offset, entry, KEYS, wheel);
    }

    /// Runs the wheel to `now_ms` as the broker does; returns the offsets that timed out.
    fn time_passes(ch: &mut Channel, wheel: &mut Wheel<TimerEvent>, now_ms: u64) -> Vec<u64> {
        let mut fired = Vec::new();
        wheel.poll(now_ms, &mut fired);
        let mut out = Vec::new();
        for event in fired {
            match event {
                TimerEvent::Timeouts { .. } => ch.timeouts_due(now_ms, KEYS, wheel, &mut out),
                TimerEvent::InFlight { offset, .. } => {
                    out.extend(ch.timed_out(offset).map(|e| (offset, e)))
                }
                other => panic!("unexpected timer {other:?}"),
            }
        }
        out.into_iter().map(|(offset, _)| offset).collect()
    }

    #[test]
    fn fin_checks_owner_and_presence() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver(&mut ch, &mut wheel, 5, 1);
        assert_eq!(ch.fin(5, 2, 0, &mut wheel), Err(AckError::NotOwner));
        assert_eq!(ch.fin(5, 1, 0, &mut wheel), Ok(1));
        assert_eq!(ch.fin(5, 1, 0, &mut wheel), Err(AckError::NotInFlight));
        assert!(
            ch.timeouts.is_empty(),
            "FIN must drop the finished deadline"
        );
        assert_eq!(time_passes(&mut ch, &mut wheel, 5000), Vec::<u64>::new());
        assert!(
            wheel.is_empty(),
            "a queue timer with nothing left is not re-armed"
        );
    }

    #[test]
    fn req_requeues_or_defers_and_floor_follows() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 10);
        deliver(&mut ch, &mut wheel, 3, 1);
        deliver(&mut ch, &mut wheel, 7, 1);
        assert_eq!(ch.ack_floor(), 3);
        let at = ReqAt {
            now_ms: 0,
            wall_ns: 0,
            event: event(),
        };
        ch.req(3, 1, 0, at, &mut wheel).unwrap();
        assert_eq!(ch.requeued.front(), Some(&Requeued::at(3, 1)));
        ch.req(7, 1, 500, at, &mut wheel).unwrap();
        assert!(ch.deferred.contains_key(&7));
        assert_eq!(ch.requeue_count, 2);
        assert_eq!(ch.ack_floor(), 3);
        assert!(ch.deferred_due(7));
        assert_eq!(ch.requeued.len(), 2);
        ch.requeued.clear();
        assert_eq!(ch.ack_floor(), 10);
    }

    #[test]
    fn floor_follows_locations_and_carried_entries_keep_their_ids() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 1000);
        deliver(&mut ch, &mut wheel, 3, 1);
        ch.requeued.push_back(Requeued::at(5, 2));
        let at = ReqAt {
            now_ms: 0,
            wall_ns: 0,
            event: event(),
        };
        deliver(&mut ch, &mut wheel, 7, 1);
        ch.req(7, 1, 60_000, at, &mut wheel).unwrap();
        assert_eq!(ch.ack_floor(), 3);

        // Copies written at 990..993; nothing moves until they are durable.
        for (id, to) in [(3, 990), (5, 991), (7, 992), (9, 993)] {
            ch.carrying.insert(id, Carrying { from: id, to });
        }
        assert_eq!(ch.settle_carried(990), 0);
        assert_eq!(ch.ack_floor(), 3);
        // 9 is not an entry (finished meanwhile): its copy is forgotten, nothing moves.
        assert_eq!(ch.settle_carried(994), 3);
        assert!(ch.carrying.is_empty());
        assert_eq!(ch.ack_floor(), 990);

        // Ids are unchanged: FIN and the timers still find the entries by id.
        assert_eq!(ch.fin(3, 1, 0, &mut wheel), Ok(1));
        assert!(ch.deferred_due(7));
        let r = ch.requeued.back().copied().unwrap();
        assert_eq!((r.offset, r.loc, r.attempts), (7, 992, 1));
        assert_eq!(ch.requeued.front().map(|r| r.loc), Some(991));
        // A stale move (the entry is elsewhere by now) is refused.
        assert!(!ch.relocate(5, 5, 1));
        assert_eq!(ch.ack_floor(), 991);
    }

    #[test]
    fn timeout_of_a_departed_client_is_unowned() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        ch.consumers.push(4);
        deliver(&mut ch, &mut wheel, 0, 4);
        ch.remove_consumer(4);
        assert_eq!(ch.in_flight.get(&0).map(|e| e.client), Some(None));
        assert_eq!(time_passes(&mut ch, &mut wheel, 1000), vec![0]);
        assert_eq!(ch.timeout_count, 1);
        assert!(ch.in_flight.is_empty());
        assert_eq!(ch.timed_out(0).map(|e| e.client), None);
    }

    #[test]
    fn queued_timeouts_fire_in_order_and_only_when_due() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 1, 9, 100);
        deliver_until(&mut ch, &mut wheel, 2, 9, 100);
        deliver_until(&mut ch, &mut wheel, 3, 9, 200);
        assert!(ch.in_flight.values().all(|e| !e.own_timer) && ch.own_timers.is_empty());
        assert_eq!(wheel.len(), 1, "one wheel timer for the whole queue");
        assert_eq!(time_passes(&mut ch, &mut wheel, 99), Vec::<u64>::new());
        assert_eq!(time_passes(&mut ch, &mut wheel, 100), vec![1, 2]);
        assert_eq!(wheel.next_deadline(), Some(200));
        assert_eq!(time_passes(&mut ch, &mut wheel, 199), Vec::<u64>::new());
        assert_eq!(time_passes(&mut ch, &mut wheel, 250), vec![3]);
        assert_eq!(ch.timeout_count, 3);
        assert!(wheel.is_empty() && ch.timeouts.is_empty());
    }

    #[test]
    fn an_earlier_deadline_than_the_queue_allows_gets_its_own_timer() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        // A consumer with a 200 ms timeout, then one with 50 ms.
        deliver_until(&mut ch, &mut wheel, 1, 8, 200);
        deliver_until(&mut ch, &mut wheel, 2, 9, 50);
        assert!(!ch.in_flight[&1].own_timer);
        assert!(ch.in_flight[&2].own_timer && ch.own_timers.contains_key(&2));
        assert_eq!(time_passes(&mut ch, &mut wheel, 50), vec![2]);
        assert_eq!(time_passes(&mut ch, &mut wheel, 200), vec![1]);
        // FIN of a message with its own timer cancels it.
        deliver_until(&mut ch, &mut wheel, 3, 8, 900);
        deliver_until(&mut ch, &mut wheel, 4, 9, 300);
        assert_eq!(ch.fin(4, 9, 0, &mut wheel), Ok(1));
        assert_eq!(time_passes(&mut ch, &mut wheel, 899), Vec::<u64>::new());
        assert_eq!(time_passes(&mut ch, &mut wheel, 900), vec![3]);
    }

    #[test]
    fn touch_moves_a_queued_deadline_and_its_old_entry_goes_stale() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 1, 9, 100);
        deliver_until(&mut ch, &mut wheel, 2, 9, 100);
        // Later than the queue's back: a new entry at the back.
        ch.touch(1, 9, 300, u64::MAX, KEYS, &mut wheel).unwrap();
        assert!(!ch.in_flight[&1].own_timer);
        assert_eq!(time_passes(&mut ch, &mut wheel, 100), vec![2]);
        assert_eq!(time_passes(&mut ch, &mut wheel, 299), Vec::<u64>::new());
        assert_eq!(time_passes(&mut ch, &mut wheel, 300), vec![1]);
        // Capped at delivery + max: earlier than the back, so a timer of its own.
        deliver_until(&mut ch, &mut wheel, 3, 9, 1000);
        deliver_until(&mut ch, &mut wheel, 4, 9, 1000);
        ch.touch(3, 9, 5000, 600, KEYS, &mut wheel).unwrap();
        assert_eq!(ch.in_flight[&3].deadline_ms, 600);
        assert!(ch.in_flight[&3].own_timer);
        assert_eq!(
            ch.touch(3, 8, 700, 600, KEYS, &mut wheel),
            Err(AckError::NotOwner)
        );
        assert_eq!(time_passes(&mut ch, &mut wheel, 600), vec![3]);
        assert_eq!(time_passes(&mut ch, &mut wheel, 1000), vec![4]);
    }

    #[test]
    fn a_redelivered_message_times_out_by_its_new_deadline_only() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 6, 9, 100);
        deliver_until(&mut ch, &mut wheel, 5, 9, 100);
        let at = ReqAt {
            now_ms: 0,
            wall_ns: 0,
            event: event(),
        };
        ch.req(5, 9, 0, at, &mut wheel).unwrap();
        assert_eq!(ch.requeued.pop_front(), Some(Requeued::at(5, 1)));
        // Its old entry (100) is still queued behind 6's: it must not time the new delivery out.
        deliver_until(&mut ch, &mut wheel, 5, 9, 150);
        assert_eq!(ch.timeouts.len(), 3);
        assert_eq!(time_passes(&mut ch, &mut wheel, 100), vec![6]);
        assert_eq!(time_passes(&mut ch, &mut wheel, 150), vec![5]);
    }

    #[test]
    fn finished_deadlines_do_not_pile_up_behind_a_held_one() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 0, 9, 10);
        for offset in 1..10_000 {
            deliver_until(&mut ch, &mut wheel, offset, 9, 10 + offset);
            assert_eq!(ch.fin(offset, 9, 0, &mut wheel), Ok(1));
            let bound = 2 * ch.in_flight.len() + crate::broker::timeouts::SLACK;
            assert!(
                ch.timeouts.len() <= bound + 1,
                "{} entries",
                ch.timeouts.len()
            );
        }
        assert_eq!(time_passes(&mut ch, &mut wheel, 20_000), vec![0]);
        assert!(ch.timeouts.is_empty());
    }

    #[test]
    fn touching_one_message_again_and_again_keeps_the_queue_bounded() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 1, 9, 100);
        for now in 1..10_000 {
            ch.touch(1, 9, now + 100, u64::MAX, KEYS, &mut wheel)
                .unwrap();
            let bound = 2 * ch.in_flight.len() + crate::broker::timeouts::SLACK;
            assert!(
                ch.timeouts.len() <= bound + 1,
                "{} entries",
                ch.timeouts.len()
            );
        }
        assert_eq!(time_passes(&mut ch, &mut wheel, 10_098), Vec::<u64>::new());
        assert_eq!(time_passes(&mut ch, &mut wheel, 10_099), vec![1]);
    }

    #[test]
    fn emptying_the_channel_cancels_the_queue_timer() {
        let mut wheel = Wheel::new(0);
        let mut ch = Channel::new("c", 0);
        deliver_until(&mut ch, &mut wheel, 1, 9, 100);
        deliver_until(&mut ch, &mut wheel, 2, 9, 50);
        ch.empty(10, &mut wheel);
        assert!(wheel.is_empty() && ch.timeouts.is_empty() && ch.in_flight.is_empty());
        assert!(ch.own_timers.is_empty());
    }

    #[test]
    fn round_robin_skips_unready() {
        let mut ch = Channel::new("c", 0);
        ch.consumers = vec![1, 2, 3];
        assert_eq!(ch.pick_consumer(|c| c != 1), Some(2));
        assert_eq!(ch.pick_consumer(|c| c != 1), Some(3));
        assert_eq!(ch.pick_consumer(|c| c != 1), Some(2));
        assert_eq!(ch.pick_consumer(|_| false), None);
    }
}
