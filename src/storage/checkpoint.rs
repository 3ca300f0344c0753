//! The checkpoint: which topics and channels exist, and where each channel stands.
//!
//! Written as compact JSON to `<data-path>/corq.dat` (nsqd keeps the same facts in `nsqd.dat`),
//! atomically: write `corq.dat.tmp`, fsync it, rename it over `corq.dat`, fsync the directory.
//! The writing runs on a helper thread ([`Checkpointer`]) so the reactor never waits on a disk;
//! only the final checkpoint of a clean shutdown is written synchronously.
//!
//! Format (version 1):
//!
//! ```json
//! {"version":1,"topics":[{"name":"t","paused":false,"distributed":0,"channels":[
//!   {"name":"c","paused":false,"cursor":120,"pending":[{"offset":97,"attempts":2,"due_wall_ns":0},
//!   {"offset":12,"attempts":9,"due_wall_ns":1764032400000000000,"loc":118}]}]}]}
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `distributed` | offsets below it went to channels that existed then; a first channel starts here |
//! | `cursor` | the next offset the channel has never taken |
//! | `pending` | messages below `cursor` not yet finished: in flight, requeued or deferred |
//! | `attempts` | deliveries so far (the next one shows attempts + 1, as nsqd after a restart) |
//! | `due_wall_ns` | for a deferred message, its wall-clock due time; 0 = ready now |
//! | `loc` | where the message's record is now, if it was carried forward (a kind-2 record); absent = `offset`. Checkpoints written before `loc` existed load unchanged |
//!
//! The helper thread counts the checkpoints it has written ([`Checkpointer::written`]): the
//! broker deletes a segment only once a checkpoint that no longer needs it is on disk.
//!
//! After a clean shutdown, exactly the unfinished messages come back. After a crash, the last
//! checkpoint is up to `--sync-timeout` old: messages finished since then come back too
//! (at-least-once), and none that were unfinished are lost.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use log::warn;
use serde::{Deserialize, Serialize};

/// The checkpoint format version this code writes and reads.
pub const CHECKPOINT_VERSION: u32 = 1;

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

/// Reads a checkpoint; `Ok(None)` when there is none yet.
///
/// # Errors
/// The I/O error, or a message saying why the JSON is not a checkpoint.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let cp: Checkpoint = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if cp.version != CHECKPOINT_VERSION {
        return Err(format!(
            "version {} is not supported (expected {CHECKPOINT_VERSION})",
            cp.version
        ));
    }
    Ok(Some(cp))
}

/// Writes a checkpoint atomically (tmp file, fsync, rename, fsync of the directory).
///
/// # Errors
/// The first I/O error.
pub fn write(path: &Path, cp: &Checkpoint) -> io::Result<()> {
    let json = serde_json::to_vec(cp).map_err(io::Error::other)?;
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
        let (tx, rx) = mpsc::channel::<(u64, Checkpoint)>();
        let thread_path = path.clone();
        let written = Arc::new(AtomicU64::new(0));
        let thread_written = Arc::clone(&written);
        let thread = thread::Builder::new()
            .name("corq-checkpoint".into())
            .spawn(move || {
                // Nobody waits for a checkpoint write: idle CPU time only (see `priority`).
                super::priority::enter_background();
                while let Ok(mut job) = rx.recv() {
                    // Several may have queued up while a write ran: only the newest matters.
                    while let Ok(newer) = rx.try_recv() {
                        job = newer;
                    }
                    match write(&thread_path, &job.1) {
                        // Release: whoever sees the generation sees a file that is on disk.
                        Ok(()) => thread_written.store(job.0, Ordering::Release),
                        Err(e) => warn!("checkpoint {}: {e}", thread_path.display()),
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
        };
        let topic = TopicState {
            name: "t".into(),
            paused: false,
            distributed: 4,
            channels: vec![ch],
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
        assert_eq!(load(&path).unwrap(), Some(sample()));
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
}
