//! Checkpoint loading (`storage::checkpoint::load`) and the broker's restore from it
//! (`Broker::open`) over arbitrary checkpoint bytes, with a small real data directory present.
//!
//! Input: a mode byte, then either the raw `corq.dat` bytes (even mode) or the ingredients of a
//! well-formed checkpoint written with `checkpoint::write` (odd mode: duplicate and invalid
//! topic/channel names, cursors and pending entries near the log's offsets or anywhere, `loc`s).
//! The data directory is a copy of a template made once per process: topic `t` with two
//! segments (one record carried) and topic `u` with one record. Asserts: no panic.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Unstructured;
use corq::broker::{topic_dir, Broker, Now, CHECKPOINT_FILE};
use corq::storage::checkpoint::{self, ChannelState, Checkpoint, PendingState, TopicState};
use corq::storage::{Log, LogConfig, NewRecord};
use corq::{Config, Options};
use corq_fuzz::ScratchDir;
use libfuzzer_sys::fuzz_target;

const SEGMENT: u64 = 64 * 1024;
const MAX_MSG: u32 = 4096;
const TOPICS: [&str; 5] = ["t", "u", "v", "t#ephemeral", "bad name"];
const CHANNELS: [&str; 4] = ["c", "d", "c#ephemeral", "bad/channel"];

fuzz_target!(|data: &[u8]| {
    let template = template();
    let dir = ScratchDir::new("cp");
    copy_dir(&template.path().join("topics"), &dir.path().join("topics"));
    let mut u = Unstructured::new(data);
    let path = dir.path().join(CHECKPOINT_FILE);
    if u.arbitrary::<u8>().unwrap_or(0) & 1 == 0 {
        std::fs::write(&path, u.bytes(u.len()).unwrap_or(&[])).expect("write corq.dat");
    } else {
        let cp = arbitrary_checkpoint(&mut u);
        checkpoint::write(&path, &cp).expect("write corq.dat");
    }
    let _ = checkpoint::load(&path);
    let mut cfg = config().clone();
    cfg.opts.data_path = dir.path().to_path_buf();
    let now = Now {
        mono_ms: 1_000,
        wall_ns: 1_764_032_400_000_000_000,
    };
    drop(Broker::open(cfg, now, Box::new(|| {})));
});

fn arbitrary_checkpoint(u: &mut Unstructured<'_>) -> Checkpoint {
    let mut cp = Checkpoint {
        version: 1,
        topics: Vec::new(),
    };
    for _ in 0..u.int_in_range(0..=4u8).unwrap_or(0) {
        let mut t = TopicState {
            settings: Default::default(),
            name: TOPICS[u.choose_index(TOPICS.len()).unwrap_or(0)].to_owned(),
            paused: u.arbitrary().unwrap_or(false),
            distributed: near_log(u),
            channels: Vec::new(),
        };
        for _ in 0..u.int_in_range(0..=3u8).unwrap_or(0) {
            let mut c = ChannelState {
                settings: Default::default(),
                name: CHANNELS[u.choose_index(CHANNELS.len()).unwrap_or(0)].to_owned(),
                paused: u.arbitrary().unwrap_or(false),
                cursor: near_log(u),
                pending: Vec::new(),
            };
            for _ in 0..u.int_in_range(0..=6u8).unwrap_or(0) {
                c.pending.push(PendingState {
                    offset: near_log(u),
                    attempts: u.arbitrary().unwrap_or(0),
                    due_wall_ns: u.arbitrary().unwrap_or(0),
                    loc: if u.ratio(1, 4).unwrap_or(false) {
                        Some(near_log(u))
                    } else {
                        None
                    },
                });
            }
            t.channels.push(c);
        }
        cp.topics.push(t);
    }
    cp
}

/// An offset: usually one the template's logs hold (0..=40), sometimes anything.
fn near_log(u: &mut Unstructured<'_>) -> u64 {
    if u.ratio(1, 8).unwrap_or(false) {
        u.arbitrary().unwrap_or(0)
    } else {
        u.int_in_range(0..=40u64).unwrap_or(0)
    }
}

/// The validated options, built once per process: building them parses the defaults with
/// clap, whose debug assertions (on under `-a`) dominated an execution.
fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut opts = Options::local("");
        opts.max_bytes_per_file = SEGMENT;
        opts.max_msg_size = MAX_MSG;
        opts.validate().expect("valid options")
    })
}

/// The data directory every execution starts from, made once per process.
fn template() -> &'static ScratchDir {
    static TEMPLATE: OnceLock<ScratchDir> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = ScratchDir::new("cp-template");
        let cfg = LogConfig {
            max_bytes_per_file: SEGMENT,
            max_msg_size: MAX_MSG,
            ..LogConfig::default()
        };
        let mut t = Log::open(&topic_dir(dir.path(), "t"), cfg.clone()).expect("open t");
        let body = [b'x'; 3000];
        for i in 0..30 {
            t.append(&NewRecord::message(i, 0, &body))
                .expect("append to t");
        }
        let carried = NewRecord {
            carried_from: Some(2),
            attempts: 1,
            ..NewRecord::message(2, 0, b"two")
        };
        t.append(&carried).expect("carry in t");
        t.run_jobs_inline(0);
        assert!(t.segment_count() >= 2, "the template spans two segments");
        drop(t);
        let mut u = Log::open(&topic_dir(dir.path(), "u"), cfg).expect("open u");
        u.append(&NewRecord::message(1, 0, b"u0"))
            .expect("append to u");
        drop(u);
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create dir");
    for entry in std::fs::read_dir(from).expect("read template") {
        let entry = entry.expect("template entry");
        let dest: PathBuf = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            copy_file(&entry.path(), &dest);
        }
    }
}

/// `fs::copy` with a retry on EINTR: a fuzzer that is stopped and continued (SIGSTOP/SIGCONT,
/// as a benchmark pausing it does) can see its copy interrupted, and that is no finding.
fn copy_file(from: &Path, to: &Path) {
    loop {
        match std::fs::copy(from, to) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            result => {
                result.expect("copy template file");
                return;
            }
        }
    }
}
