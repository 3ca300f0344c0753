//! storage: a topic's memory-mapped, segmented, CRC-checked log.
//!
//! This module owns everything on disk for a topic: segment files, the record format, the
//! open-time recovery scan, retention (deleting old segments) and the sync (durability) policy.
//! It knows nothing about NSQ clients: the broker appends records, reads them back by offset,
//! and deletes segments every channel has passed.
//!
//! # Files
//!
//! | file            | owns |
//! |-----------------|------|
//! | `mod.rs`        | the public value types ([`LogConfig`], [`NewRecord`], [`Record`]) and this map |
//! | `error.rs`      | [`StorageError`] |
//! | `record.rs`     | the record byte layout, pure encode/decode with CRC |
//! | `segment.rs`    | one segment file: header layout, naming, allocation, the pending (not yet written) buffer, append/flush/read |
//! | `space.rs`      | disk on demand: initial size, growth steps, when to grow or pre-create, `fallocate`, the growth step and pre-created segment the helper makes |
//! | `recovery.rs`   | the open-time scan: rebuild indexes, cut torn tails, report stray files |
//! | `log.rs`        | [`Log`]: open, append/read/iterate, retention |
//! | `log/jobs.rs`   | [`Log`]'s background-job state: when to sync or pre-create, applying results |
//! | `log/resident.rs` | which mapped pages stay resident: releasing them behind the readers |
//! | `log/syncs.rs`  | the syncs of a log in flight at once, and the rule that turns their completions into its durable offset |
//! | `worker.rs`     | [`StorageWorker`]: the helper threads that run [`Job`]s (fsync, file creation) |
//! | `checkpoint.rs` | the broker's checkpoint file (`corq.dat`): topics, channels, positions |
//! | `testutil.rs`   | tests only: a temp dir deleted on drop, a seeded PRNG |
//!
//! # Threads
//!
//! A [`Log`] lives on one thread (the reactor). Anything that can block for long (fsync,
//! creating a segment, `fallocate`-ing its next growth step) is packaged as a [`Job`] by
//! [`Log::poll_jobs`], run by a [`StorageWorker`] (or inline by [`Log::run_jobs_inline`] when
//! there is no worker) and its [`JobDone`] handed back with [`Log::apply`].
//!
//! The on-disk format and the recovery policy are described in `docs/storage-format.md`.

pub mod checkpoint;
mod error;
mod log;
mod priority;
pub(crate) mod record; // pub(crate) for crate::fuzzing
pub(crate) mod recovery; // pub(crate) for crate::fuzzing
pub(crate) mod segment; // pub(crate) for crate::fuzzing
mod space;
mod worker;

#[cfg(test)]
pub(crate) mod testutil;

pub use self::error::StorageError;

/// The name of the log a file belongs to, for log lines: its directory's name without the
/// extension (a topic's log lives in `<topic>.topic/`, so this is the topic). Warnings about
/// a file carry it as their `topic` field (see `crate::logging`).
#[derive(Debug, Clone, Copy)]
pub struct LogName<'a>(pub &'a std::path::Path);

impl std::fmt::Display for LogName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stem = self.0.parent().and_then(std::path::Path::file_stem);
        f.write_str(&stem.map(|s| s.to_string_lossy()).unwrap_or_default())
    }
}
pub use self::log::{Log, LogIter};
pub use self::record::{DeadMeta, DeadReason, MAX_DEDUP_KEY_LEN};
pub use self::worker::{Job, JobDone, Notify, StorageWorker};

/// Tunables of one log. Defaults follow nsqd's flags of the same names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Segment size, header included (nsqd `--max-bytes-per-file`); default 100 MiB. A
    /// segment's file starts at 64 KiB and grows to this on demand (see `space.rs`). Must fit
    /// in a u32 (the index stores u32s).
    pub max_bytes_per_file: u64,
    /// Largest body accepted (nsqd `--max-msg-size`); default 1 MiB.
    pub max_msg_size: u32,
    /// Interval policy: sync after this many records (nsqd `--sync-every`, default 2500).
    /// `1` selects strict mode: a sync is started whenever appends are unsynced and none is in
    /// flight, and every append made before it starts shares it (group commit).
    pub sync_every: u64,
    /// ... or when the oldest unsynced append is this old (nsqd `--sync-timeout`, 2000 ms).
    pub sync_timeout_ms: u64,
    /// Bytes of log kept in the page cache behind the newest byte written: whole synced
    /// segments further back are dropped from it (see `log/window.rs`); default 2 GiB.
    pub page_cache_window: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_bytes_per_file: 100 * 1024 * 1024,
            max_msg_size: 1024 * 1024,
            sync_every: 2500,
            sync_timeout_ms: 2000,
            page_cache_window: 2 << 30,
        }
    }
}

/// A record to append. The offset is assigned by the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewRecord<'a> {
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Earliest delivery time for deferred messages (DPUB), ns; 0 = immediately.
    pub deliver_at_ns: i64,
    /// Delivery attempts so far (0 for a fresh publish).
    pub attempts: u16,
    /// `Some(id)` writes a carried record (kind 2): a re-appended copy of the unfinished
    /// message first written at offset `id`. `None` for a publish.
    pub carried_from: Option<u64>,
    /// `Some` writes a dead letter (kind 3) with this metadata before the body; ignored when
    /// `carried_from` is set.
    pub dead: Option<record::DeadMeta<'a>>,
    /// Non-empty writes a keyed message (kind 4): the publisher's dedup id, kept so the dedup
    /// window can be rebuilt from the log. Ignored when `carried_from` or `dead` is set.
    pub dedup_key: &'a [u8],
    /// The message body.
    pub body: &'a [u8],
}

impl NewRecord<'_> {
    /// A fresh publish (kind 1) of `body`.
    pub fn message(timestamp_ns: i64, deliver_at_ns: i64, body: &[u8]) -> NewRecord<'_> {
        NewRecord {
            timestamp_ns,
            deliver_at_ns,
            attempts: 0,
            carried_from: None,
            dead: None,
            dedup_key: &[],
            body,
        }
    }

    /// Bytes after the record header: the body, plus the original offset if carried.
    pub fn stored_len(&self) -> usize {
        let prefix = match (&self.carried_from, &self.dead) {
            (Some(_), _) => record::CARRIED_PREFIX_LEN,
            (None, Some(meta)) => meta.len(),
            (None, None) if !self.dedup_key.is_empty() => 1 + self.dedup_key.len(),
            (None, None) => 0,
        };
        self.body.len() + prefix
    }
}

/// A record read back from the log. `body` borrows the memory map: no copy is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's offset: dense per log, stable across restarts.
    pub offset: u64,
    /// Publish time, ns since the Unix epoch.
    pub timestamp_ns: i64,
    /// Earliest delivery time, ns; 0 = immediately.
    pub deliver_at_ns: i64,
    /// Delivery attempts recorded at append time.
    pub attempts: u16,
    /// For a carried record (kind 2), the offset of the original message (its id); `None` for
    /// a published message.
    pub carried_from: Option<u64>,
    /// For a dead letter (kind 3), its metadata; `None` otherwise.
    pub dead: Option<record::DeadMeta<'a>>,
    /// For a keyed message (kind 4), its dedup key; empty otherwise.
    pub dedup_key: &'a [u8],
    /// The body (without a carried record's prefix), borrowed from the segment's map.
    pub body: &'a [u8],
}
