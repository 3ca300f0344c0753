//! Carrying forward: retention that a few long-unfinished messages cannot pin.
//!
//! A channel's ack floor is the lowest location it still needs. One message REQ'd with a long
//! delay (or held in flight, or deferred) would keep every segment from its own onwards alive
//! while the rest of the channel moves on. So in the periodic maintenance step a channel whose
//! floor sits in a segment older than the newest two **carries** the few entries that hold it
//! there: each is re-appended at the tail as a kind-2 record (id, attempts and deadline kept;
//! see `storage/record.rs`), and once the copy is durable the entry's location moves to it.
//! Retention then trims below the new floor, as soon as a checkpoint naming the new locations
//! is on disk (`Topic::safe_floor`).
//!
//! Ids never change: FIN/REQ/TOUCH, timer payloads and the NSQ message id all use the id
//! offset; only reads use the location. A channel carries only its own entries, and every
//! channel's cursor skips carried records.
//!
//! # Invariants
//! - An entry's location moves only to a record that is durable, so a checkpoint never names a
//!   location a crash could lose.
//! - A segment is deleted only when neither the live state nor the checkpoint on disk needs it.

use log::{debug, warn};

use crate::storage::{Log, NewRecord};

use super::channel::{Carrying, Channel, Requeued};
use super::topic::Topic;

/// Carry only when the entries to move are at most this fraction (1/N) of the records between
/// the floor and the boundary. A channel whose old segments are mostly unfinished (a slow
/// consumer with a large RDY) gains little from copying them, and the bound keeps the write
/// amplification of carrying under 1/N of the traffic: each carried message moves at most
/// once per two segments written.
const MIN_RECORDS_PER_CARRIED: u64 = 8;

/// Settles carried copies that became durable, then carries what pins old segments. Returns
/// how many messages were carried this time.
pub(super) fn carry_forward(topic: &mut Topic) -> usize {
    let durable = topic.log.durable_offset();
    for (_, ch) in topic.channels.iter_mut() {
        ch.settle_carried(durable);
    }
    let Some(boundary) = topic.log.second_newest_base() else {
        return 0;
    };
    let mut carried = 0;
    let mut body = Vec::new();
    for (_, ch) in topic.channels.iter_mut() {
        let stuck = stuck_below(ch, boundary);
        for msg in stuck {
            match carry_one(&mut topic.log, ch, msg, &mut body) {
                Ok(()) => carried += 1,
                Err(e) => warn!(
                    topic = topic.name.as_str(), channel = ch.name.as_str();
                    "topic {} channel {}: cannot carry message {}: {e}",
                    topic.name, ch.name, msg.offset
                ),
            }
        }
    }
    if carried > 0 {
        debug!(
            "topic {}: carried {carried} message(s) past offset {boundary}",
            topic.name
        );
    }
    carried
}

/// The entries of `ch` located below `boundary` that are worth carrying (see
/// [`MIN_RECORDS_PER_CARRIED`]), excluding those whose copy is already on its way.
fn stuck_below(ch: &Channel, boundary: u64) -> Vec<Requeued> {
    // A cursor below the boundary pins the old segments by itself: carrying cannot help.
    let floor = ch.ack_floor();
    if ch.cursor < boundary || floor >= boundary {
        return Vec::new();
    }
    let below = ch.unfinished().filter(|m| m.loc < boundary);
    let stuck: Vec<Requeued> = below
        .filter(|m| !ch.carrying.contains_key(&m.offset))
        .collect();
    let span = boundary - floor;
    if (stuck.len() as u64).saturating_mul(MIN_RECORDS_PER_CARRIED) > span {
        return Vec::new();
    }
    stuck
}

/// Re-appends one message as a carried record and notes it as on its way.
fn carry_one(
    log: &mut Log,
    ch: &mut Channel,
    msg: Requeued,
    body: &mut Vec<u8>,
) -> Result<(), crate::storage::StorageError> {
    let rec = log.read(msg.loc)?;
    // Copied out: the append needs the log mutably, and the record borrows its map.
    body.clear();
    body.extend_from_slice(rec.body);
    let timestamp_ns = rec.timestamp_ns;
    let deliver_at_ns = ch.deferred.get(&msg.offset).map_or(0, |d| d.due_wall_ns);
    let to = log.append(&NewRecord {
        timestamp_ns,
        deliver_at_ns,
        attempts: msg.attempts,
        carried_from: Some(msg.offset),
        dead: None,
        dedup_key: &[],
        body,
    })?;
    ch.carrying
        .insert(msg.offset, Carrying { from: msg.loc, to });
    Ok(())
}
