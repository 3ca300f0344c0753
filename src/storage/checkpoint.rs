//! The checkpoint: which topics and channels exist, and where each channel stands.
//!
//! Written as compact JSON to `<data-path>/corq.dat` (nsqd keeps the same facts in `nsqd.dat`),
//! atomically: write `corq.dat.tmp`, fsync it, rename it over `corq.dat`, fsync the directory.
//! The writing runs on a helper thread ([`Checkpointer`]) so the reactor never waits on a disk;
//! only the final checkpoint of a clean shutdown is written synchronously.
//!
//! Format (version 2): one JSON object whose first two members are fixed, so a reader finds the
//! checksum without parsing:
//!
//! ```json
//! {"version":2,"crc32":"9f3a1c07","topics":[{"name":"t","paused":false,"distributed":0,"channels":[
//!   {"name":"c","paused":false,"cursor":120,"pending":[{"offset":97,"attempts":2,"due_wall_ns":0},
//!   {"offset":12,"attempts":9,"due_wall_ns":1764032400000000000,"loc":118}]}]}]}
//! ```
//!
//! | bytes / field | meaning |
//! |---|---|
//! | `{"version":2,"crc32":"` | fixed 22-byte prefix ([`V2_PREFIX`]) |
//! | 8 lowercase hex digits | CRC-32 (IEEE, `crc32fast`) of every byte after the `",` that follows them, up to the end of the file |
//! | `",` | fixed |
//! | `"topics":[...]}` | the checksummed rest: the topics, then the closing brace |
//! | `distributed` | offsets below it went to channels that existed then; a first channel starts here |
//! | `cursor` | the next offset the channel has never taken |
//! | `pending` | messages below `cursor` not yet finished: in flight, requeued or deferred |
//! | `attempts` | deliveries so far (the next one shows attempts + 1, as nsqd after a restart) |
//! | `due_wall_ns` | for a deferred message, its wall-clock due time; 0 = ready now |
//! | `loc` | where the message's record is now, if it was carried forward (a kind-2 record); absent = `offset` |
//! | `settings` | on a topic or channel: its overridden settings (`/topic/config`, `/channel/config`), key → value (counts as is, durations in ms); absent = none |
//!
//! Version 1 is the same JSON without the `crc32` member (and `"version":1`); it is still read,
//! unverified. [`load`] tells an intact checkpoint from a damaged one ([`Loaded`]); what the
//! broker does with a damaged one is `broker/restore.rs`'s business.
//!
//! The helper thread counts the checkpoints it has written ([`Checkpointer::written`]): the
//! broker deletes a segment only once a checkpoint that no longer needs it is on disk.
//!
//! After a clean shutdown, exactly the unfinished messages come back. After a crash, the last
//! checkpoint is up to `--sync-timeout` old: messages finished since then come back too
//! (at-least-once), and none that were unfinished are lost. In strict mode the broker also
//! checkpoints at the end of a turn in which a client published after FIN/REQs not yet
//! checkpointed, and holds that `OK` until the checkpoint is written ([`Checkpointer::spawn_notified`] wakes it): such a
//! FIN survives a crash.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use log::{info, warn};
use serde::{Deserialize, Serialize};

/// The checkpoint format version this code writes (it also reads version 1).
pub const CHECKPOINT_VERSION: u32 = 2;

/// How every version-2 checkpoint starts; the checksum's 8 hex digits follow.
pub const V2_PREFIX: &[u8] = br#"{"version":2,"crc32":""#;

/// The whole checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version; see [`CHECKPOINT_VERSION`].
    pub version: u32,
    /// Every non-ephemeral topic.
    pub topics: Vec<TopicState>,
}

/// One topic's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Topic name.
    pub name: String,
    /// Paused topics stay paused over a restart.
    #[serde(default)]
    pub paused: bool,
    /// Where a first channel starts.
    #[serde(default)]
    pub distributed: u64,
    /// Every non-ephemeral channel.
    #[serde(default)]
    pub channels: Vec<ChannelState>,
    /// Settings overridden on the topic (`/topic/config`): key → value in the key's unit
    /// (counts as is, durations in ms). Absent = none; older servers never wrote it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, u64>,
}

/// One channel's entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelState {
    /// Channel name.
    pub name: String,
    /// Paused channels stay paused over a restart.
    #[serde(default)]
    pub paused: bool,
    /// The next offset never taken.
    pub cursor: u64,
    /// Unfinished messages below the cursor.
    #[serde(default)]
    pub pending: Vec<PendingState>,
    /// Settings overridden on the channel (`/channel/config`), as [`TopicState::settings`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, u64>,
}

/// One unfinished message below a channel's cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingState {
    /// Log offset the message was published at: its id.
    pub offset: u64,
    /// Deliveries so far.
    #[serde(default)]
    pub attempts: u16,
    /// Wall-clock due time of a deferred message in ns; 0 = ready.
    #[serde(default)]
    pub due_wall_ns: i64,
    /// Offset of the carried record that holds the message now; `None` = at `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loc: Option<u64>,
}

impl PendingState {
    /// Where the message's record is: its carried copy, or where it was published.
    pub fn location(&self) -> u64 {
        self.loc.unwrap_or(self.offset)
    }
}

/// A checkpoint as read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// Its checksum matches (version 2), or it is version 1, which has none.
    Intact(Checkpoint),
    /// It parses, but its checksum does not match (or a version 2 lacks one): any value in it
    /// may be wrong.
    Damaged {
        /// What failed.
        why: String,
        /// What the file says, unverified.
        salvaged: Checkpoint,
    },
}

/// Reads a checkpoint; `Ok(None)` when there is none yet.
///
/// # Errors
/// The I/O error, or a message saying why the bytes are not a checkpoint at all (not JSON of
/// the expected shape, an unknown version).
pub fn load(path: &Path) -> Result<Option<Loaded>, String> {
    match fs::read(path) {
        Ok(b) => decode(&b).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Parses and verifies a checkpoint file's bytes (see the module doc for the layout).
///
/// # Errors
/// As [`load`].
pub fn decode(bytes: &[u8]) -> Result<Loaded, String> {
    let parsed = serde_json::from_slice::<Checkpoint>(bytes).map_err(|e| e.to_string());
    let Some(rest) = bytes.strip_prefix(V2_PREFIX) else {
        // No checksum where version 2 puts it: version 1, or damage to the prefix itself.
        let cp = parsed?;
        return match cp.version {
            1 => Ok(Loaded::Intact(cp)),
            2 => Ok(Loaded::Damaged {
                why: "version 2 without its checksum prefix".into(),
                salvaged: cp,
            }),
            v => Err(format!(
                "version {v} is not supported (expected 1 or {CHECKPOINT_VERSION})"
            )),
        };
    };
    let stored = rest
        .get(..8)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    let body = rest
        .get(10..)
        .filter(|_| rest.get(8..10) == Some(b"\",".as_slice()));
    let actual = body.map(crc32fast::hash);
    match (stored.is_some() && stored == actual, parsed) {
        (true, Ok(cp)) => Ok(Loaded::Intact(cp)),
        (true, Err(e)) => Err(e),
        (false, Ok(cp)) => Ok(Loaded::Damaged {
            why: format!(
                "checksum mismatch (stored {}, computed {})",
                stored.map_or("unreadable".into(), |c| format!("{c:08x}")),
                actual.map_or("nothing".into(), |c| format!("{c:08x}")),
            ),
            salvaged: cp,
        }),
        (false, Err(e)) => Err(format!("checksum mismatch, and not parseable: {e}")),
    }
}

/// The bytes of a version-2 checkpoint file (whatever `cp.version` says).
///
/// # Errors
/// If serialisation fails (it cannot for these types, but the error is passed on).
pub fn encode(cp: &Checkpoint) -> io::Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Rest<'a> {
        topics: &'a [TopicState],
    }
    let json = serde_json::to_vec(&Rest { topics: &cp.topics }).map_err(io::Error::other)?;
    // `{"topics":[...]}` without its opening brace: the checksummed rest.
    let rest = json.get(1..).unwrap_or_default();
    let mut out = Vec::with_capacity(V2_PREFIX.len() + 10 + rest.len());
    out.extend_from_slice(V2_PREFIX);
    write!(out, "{:08x}\",", crc32fast::hash(rest))?;
    out.extend_from_slice(rest);
    Ok(out)
}

/// Writes a checkpoint atomically (tmp file, fsync, rename, fsync of the directory).
///
/// # Errors
/// The first I/O error.
pub fn write(path: &Path, cp: &Checkpoint) -> io::Result<()> {
    let json = encode(cp)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("dat.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// What the checkpoint thread logs about a write: only changes (a checkpoint is attempted every
/// `--sync-timeout`; a warning per attempt would repeat forever on a broken disk).
#[derive(Debug)]
enum Report<'e> {
    /// The first failure after success (or at start).
    Failing(&'e io::Error),
    /// The first success after failures.
    Recovered,
}

fn report<'e>(failing: &mut bool, result: &'e io::Result<()>) -> Option<Report<'e>> {
    match result {
        Ok(()) => std::mem::take(failing).then_some(Report::Recovered),
        Err(e) => (!std::mem::replace(failing, true)).then_some(Report::Failing(e)),
    }
}

/// A helper thread that writes checkpoints, always the newest one submitted.
#[derive(Debug)]
pub struct Checkpointer {
    /// Where checkpoints go.
    path: PathBuf,
    /// To the helper thread, with each checkpoint's generation; dropped to stop it.
    tx: Option<mpsc::Sender<(u64, Checkpoint)>>,
    /// The generation the next [`Checkpointer::submit`] gets (1 for the first).
    next_gen: u64,
    /// The generation of the newest checkpoint written successfully (0 = none yet), stored by
    /// the helper thread after its directory fsync.
    written: Arc<AtomicU64>,
    /// The helper thread, joined on drop.
    thread: Option<thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the helper thread.
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn spawn(path: PathBuf) -> io::Result<Checkpointer> {
        Checkpointer::spawn_notified(path, None)
    }

    /// As [`Checkpointer::spawn`], but calls `notify` after each checkpoint reaches the disk
    /// (durable FIN in strict mode: publishers wait for it, so the thread also keeps its
    /// normal priority then).
    ///
    /// # Errors
    /// If the thread cannot be spawned.
    pub fn spawn_notified(
        path: PathBuf,
        notify: Option<Box<dyn Fn() + Send>>,
    ) -> io::Result<Checkpointer> {
        let (tx, rx) = mpsc::channel::<(u64, Checkpoint)>();
        let thread_path = path.clone();
        let written = Arc::new(AtomicU64::new(0));
        let thread_written = Arc::clone(&written);
        let thread = crate::cpu::spawn_helper("corq-checkpoint", move || {
            if notify.is_none() {
                // Nobody waits for a checkpoint write: idle CPU time only (see `priority`).
                super::priority::enter_background();
            }
            // Logged once per change, not on every attempt (one every --sync-timeout).
            let mut failing = false;
            while let Ok(mut job) = rx.recv() {
                // Several may have queued up while a write ran: only the newest matters.
                while let Ok(newer) = rx.try_recv() {
                    job = newer;
                }
                let result = write(&thread_path, &job.1);
                if result.is_ok() {
                    // Release: whoever sees the generation sees a file that is on disk.
                    thread_written.store(job.0, Ordering::Release);
                    if let Some(n) = &notify {
                        n();
                    }
                }
                match report(&mut failing, &result) {
                        Some(Report::Failing(e)) => warn!(
                            "checkpoint {}: {e} (retried at every checkpoint; logged again once it succeeds)",
                            thread_path.display()
                        ),
                        Some(Report::Recovered) => {
                            info!("checkpoint {}: written again", thread_path.display())
                        }
                        None => {}
                    }
            }
        })?;
        Ok(Checkpointer {
            path,
            tx: Some(tx),
            next_gen: 1,
            written,
            thread: Some(thread),
        })
    }

    /// Queues a checkpoint for the helper thread and returns its generation: once
    /// [`Checkpointer::written`] reaches it, this checkpoint (or a newer one) is on disk.
    pub fn submit(&mut self, cp: Checkpoint) -> u64 {
        let generation = self.next_gen;
        self.next_gen += 1;
        if let Some(tx) = &self.tx {
            // A send fails only if the thread died, which its own warn! has reported.
            let _ = tx.send((generation, cp));
        }
        generation
    }

    /// The generation the next [`Checkpointer::submit`] will return.
    pub fn next_generation(&self) -> u64 {
        self.next_gen
    }

    /// The generation of the newest checkpoint known to be on disk (0 = none written yet).
    /// Checkpoints are written newest-only, so every generation at or below it is superseded.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// Waits for queued checkpoints, then writes this one on the calling thread (shutdown).
    ///
    /// # Errors
    /// The first I/O error of the final write.
    pub fn write_now(&mut self, cp: Checkpoint) -> io::Result<()> {
        self.stop();
        write(&self.path, &cp)
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        let pending = vec![
            PendingState {
                offset: 3,
                attempts: 2,
                due_wall_ns: 99,
                loc: None,
            },
            PendingState {
                offset: 5,
                attempts: 1,
                due_wall_ns: 0,
                loc: Some(11),
            },
        ];
        let ch = ChannelState {
            name: "c".into(),
            paused: true,
            cursor: 10,
            pending,
            settings: BTreeMap::new(),
        };
        let topic = TopicState {
            name: "t".into(),
            paused: false,
            distributed: 4,
            channels: vec![ch],
            settings: BTreeMap::new(),
        };
        Checkpoint {
            version: CHECKPOINT_VERSION,
            topics: vec![topic],
        }
    }

    #[test]
    fn round_trips_through_the_helper_thread() {
        let dir = std::env::temp_dir().join(format!("corq-cp-{}", std::process::id()));
        let path = dir.join("corq.dat");
        let mut cp = Checkpointer::spawn(path.clone()).unwrap();
        let generation = cp.submit(Checkpoint {
            version: CHECKPOINT_VERSION,
            topics: vec![],
        });
        assert_eq!(generation, 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while cp.written() < generation {
            assert!(
                std::time::Instant::now() < deadline,
                "checkpoint never confirmed"
            );
            thread::sleep(std::time::Duration::from_millis(1));
        }
        cp.write_now(sample()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(Loaded::Intact(sample())));
        assert!(fs::read(&path).unwrap().starts_with(V2_PREFIX));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn loc_is_optional_and_defaults_to_the_offset() {
        let old = br#"{"offset":7,"attempts":1,"due_wall_ns":0}"#;
        let p: PendingState = serde_json::from_slice(old).unwrap();
        assert_eq!((p.loc, p.location()), (None, 7));
        let json = serde_json::to_string(&p).unwrap();
        assert!(!json.contains("loc"), "{json}");
        let moved = PendingState { loc: Some(40), ..p };
        let json = serde_json::to_string(&moved).unwrap();
        assert!(json.ends_with(r#""loc":40}"#), "{json}");
        let back: PendingState = serde_json::from_str(&json).unwrap();
        assert_eq!(back.location(), 40);
    }

    #[test]
    fn missing_is_none_and_garbage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("corq-cp2-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("corq.dat");
        assert_eq!(load(&path).unwrap(), None);
        fs::write(&path, b"{\"version\":1,\"topics\":[{").unwrap();
        assert!(load(&path).is_err());
        fs::write(&path, b"{\"version\":9,\"topics\":[]}").unwrap();
        assert!(load(&path).unwrap_err().contains("version 9"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_failures_are_reported_once_per_change() {
        let mut failing = false;
        let err = || Err(io::Error::other("disk gone"));
        assert!(report(&mut failing, &Ok(())).is_none());
        assert!(matches!(
            report(&mut failing, &err()),
            Some(Report::Failing(_))
        ));
        for _ in 0..5 {
            assert!(report(&mut failing, &err()).is_none());
        }
        assert!(matches!(
            report(&mut failing, &Ok(())),
            Some(Report::Recovered)
        ));
        assert!(report(&mut failing, &Ok(())).is_none());
        assert!(matches!(
            report(&mut failing, &err()),
            Some(Report::Failing(_))
        ));
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let empty = Checkpoint::default();
        // zlib.crc32(b'"topics":[]}') == 0x8cf827be (docs/storage-format.md's recipe agrees).
        assert_eq!(
            encode(&empty).unwrap(),
            br#"{"version":2,"crc32":"8cf827be","topics":[]}"#
        );
    }

    #[test]
    fn settings_are_optional_and_round_trip() {
        let mut cp = sample();
        let bytes = encode(&cp).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains("settings"),
            "absent when empty"
        );
        cp.topics[0].settings.insert("dedup_window".into(), 60_000);
        cp.topics[0].channels[0]
            .settings
            .insert("max_attempts".into(), 5);
        let bytes = encode(&cp).unwrap();
        assert_eq!(decode(&bytes).unwrap(), Loaded::Intact(cp));
    }

    #[test]
    fn version_1_still_loads_unverified() {
        let v1 = br#"{"version":1,"topics":[{"name":"t","paused":false,"distributed":4,"channels":[{"name":"c","paused":true,"cursor":10,"pending":[{"offset":3,"attempts":2,"due_wall_ns":99},{"offset":5,"attempts":1,"due_wall_ns":0,"loc":11}]}]}]}"#;
        let want = Checkpoint {
            version: 1,
            ..sample()
        };
        assert_eq!(decode(v1).unwrap(), Loaded::Intact(want));
    }

    #[test]
    fn every_flipped_byte_after_the_prefix_is_caught() {
        let good = encode(&sample()).unwrap();
        assert_eq!(decode(&good).unwrap(), Loaded::Intact(sample()));
        for i in V2_PREFIX.len()..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x01;
            match decode(&bad) {
                Ok(Loaded::Damaged { why, .. }) => assert!(why.contains("checksum"), "{why}"),
                Err(e) => assert!(e.contains("checksum") || e.contains("expected"), "{i}: {e}"),
                Ok(Loaded::Intact(cp)) => panic!("byte {i} flipped, still intact: {cp:?}"),
            }
        }
    }

    #[test]
    fn a_flipped_digit_is_damaged_but_salvaged() {
        let good = encode(&sample()).unwrap();
        let text = String::from_utf8(good).unwrap();
        let bad = text.replace(r#""cursor":10"#, r#""cursor":90"#);
        match decode(bad.as_bytes()).unwrap() {
            Loaded::Damaged { why, salvaged } => {
                assert!(why.starts_with("checksum mismatch (stored "), "{why}");
                assert_eq!(salvaged.topics[0].channels[0].cursor, 90);
            }
            other => panic!("not damaged: {other:?}"),
        }
        // A version 2 file rewritten without its prefix (pretty-printed by hand) is unverified.
        let pretty = serde_json::to_string_pretty(&sample()).unwrap();
        assert!(matches!(
            decode(pretty.as_bytes()).unwrap(),
            Loaded::Damaged { .. }
        ));
    }
}
