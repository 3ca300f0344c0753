//! Writes the seed corpora under `fuzz/corpus/<target>/` (see `docs/fuzzing.md`):
//!
//! ```text
//! cargo run --manifest-path fuzz/Cargo.toml --example seeds
//! ```
//!
//! Protocol, HTTP and checkpoint seeds are written out literally. The structured storage inputs
//! (`record` modes 2/3, `log_open`) are found by a deterministic search: pseudo-random inputs
//! are decoded the way the targets decode them and the first few that describe valid,
//! record-holding segments are kept. Running it again gives the same files.

use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use corq::fuzzing::{encode_record, scan_segment};
use corq::storage::checkpoint::{ChannelState, Checkpoint, PendingState, TopicState};
use corq::storage::{Log, LogConfig, NewRecord};
use corq_fuzz::{build_segment, log_files, ScratchDir};

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    decode(&root.join("decode"));
    identify(&root.join("identify"));
    http(&root.join("http_request"));
    record(&root.join("record"));
    log_open(&root.join("log_open"));
    checkpoint(&root.join("checkpoint"));
}

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    fs::create_dir_all(dir).expect("create corpus dir");
    let path: PathBuf = dir.join(name);
    fs::write(&path, bytes).expect("write seed");
    println!("{} ({} bytes)", path.display(), bytes.len());
}

/// A V2 command with a 4-byte big-endian size and a body.
fn sized(line: &str, body: &[u8]) -> Vec<u8> {
    let mut v = line.as_bytes().to_vec();
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn mpub(topic: &str, bodies: &[&[u8]]) -> Vec<u8> {
    let mut body = (bodies.len() as u32).to_be_bytes().to_vec();
    for b in bodies {
        body.extend_from_slice(&(b.len() as u32).to_be_bytes());
        body.extend_from_slice(b);
    }
    sized(&format!("MPUB {topic}\n"), &body)
}

fn decode(dir: &Path) {
    // First byte: the target's settings (bit 0-1 state: 0 init, 1 subscribed; bit 3 small limits).
    let identify = br#"{"client_id":"c","hostname":"h","feature_negotiation":true,"heartbeat_interval":30000,"user_agent":"go-nsq/1.1.0"}"#;
    let mut producer = vec![0u8];
    producer.extend(sized("IDENTIFY\n", identify));
    producer.extend(sized("PUB events\n", b"hello"));
    producer.extend(mpub("events", &[b"one", b"two"]));
    producer.extend(sized("DPUB events 1500\n", b"later"));
    producer.extend_from_slice(b"NOP\n");
    put(dir, "producer", &producer);

    let mut consumer = vec![0u8];
    consumer.extend(sized("IDENTIFY\n", identify));
    consumer.extend_from_slice(b"SUB events archive#ephemeral\nRDY 10\n");
    put(dir, "consumer-init", &consumer);

    let id = "0000000000000001";
    let subscribed = format!("RDY 2500\r\nFIN {id}\nREQ {id} 1000\nTOUCH {id}\nNOP\nCLS\n");
    put(
        dir,
        "consumer-subscribed",
        &[&[1u8][..], subscribed.as_bytes()].concat(),
    );

    let mut small = vec![8u8];
    small.extend(sized("AUTH\n", b"secret"));
    small.extend(sized("PUB t\n", &[b'x'; 17])); // one byte over the small limit
    put(dir, "small-limits", &small);
}

fn identify(dir: &Path) {
    // First byte: 0 = default limits, 1 = tight limits.
    let with = |limits: u8, body: &[u8]| [&[limits][..], body].concat();
    let go_nsq: &[u8] = br#"{"client_id":"host","hostname":"host.local","feature_negotiation":true,"heartbeat_interval":30000,"output_buffer_size":16384,"output_buffer_timeout":250,"tls_v1":false,"snappy":false,"deflate":false,"deflate_level":6,"sample_rate":0,"user_agent":"go-nsq/1.1.0","msg_timeout":0}"#;
    put(dir, "go-nsq", &with(0, go_nsq));
    let pynsq: &[u8] = br#"{"short_id":"h","long_id":"h.local","client_id":"h","hostname":"h.local","heartbeat_interval":30000,"feature_negotiation":true,"tls_v1":false,"snappy":false,"deflate":false,"deflate_level":6,"output_buffer_size":16384,"output_buffer_timeout":250,"sample_rate":0,"user_agent":"pynsq/0.9.1"}"#;
    put(dir, "pynsq", &with(0, pynsq));
    let special: &[u8] = br#"{"HeartBeat_Interval":-1,"output_buffer_size":-1,"output_buffer_timeout":-1,"msg_timeout":1000,"sample_rate":99,"client_id":null}"#;
    put(dir, "special-values", &with(1, special));
    put(dir, "null", &with(0, b"null"));
}

fn http(dir: &Path) {
    // First byte: 0 = default limits, 1 = tight limits.
    let with = |limits: u8, req: &[u8]| [&[limits][..], req].concat();
    put(
        dir,
        "ping",
        &with(0, b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n"),
    );
    put(dir, "pub-pipelined", &with(0, b"POST /pub?topic=t HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloPOST /pub?topic=t&defer=1000 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nbye"));
    put(dir, "mpub-chunked", &with(0, b"POST /mpub?topic=t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\none\n\r\n3\r\ntwo\r\n0\r\nTrailer: x\r\n\r\n"));
    put(dir, "chunked-small-limits", &with(1, b"POST /pub?topic=t HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n"));
    put(dir, "http10-continue", &with(0, b"POST /topic/create?topic=t HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\nPUT /config/nsqlookupd_tcp_addresses HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n[]"));
}

fn rec(offset: u64, body: &[u8], carried_from: Option<u64>) -> Vec<u8> {
    let r = NewRecord {
        carried_from,
        attempts: 2,
        ..NewRecord::message(1_764_032_400_000_000_000, 0, body)
    };
    encode_record(offset, &r).expect("a small record encodes")
}

fn record(dir: &Path) {
    // Mode 0: [0][expected offset u64 LE][record bytes].
    let mut raw = vec![0u8];
    raw.extend_from_slice(&7u64.to_le_bytes());
    raw.extend(rec(7, b"a message", None));
    put(dir, "decode-message", &raw);
    let mut carried = vec![0u8];
    carried.extend_from_slice(&9u64.to_le_bytes());
    carried.extend(rec(9, b"carried", Some(3)));
    put(dir, "decode-carried", &carried);
    // Mode 1: the fields of a record (see the target's `round_trip`).
    let mut fields = vec![1u8];
    fields.extend_from_slice(&42u64.to_le_bytes());
    fields.extend_from_slice(&[0x11; 16]);
    fields.extend_from_slice(&[3, 0, 1]);
    fields.extend_from_slice(&5u64.to_le_bytes());
    fields.extend_from_slice(b"round trip body");
    put(dir, "round-trip", &fields);
    // Modes 2 and 3: segments whose scan keeps at least two records.
    let mut found = 0;
    for (i, input) in candidates(0x5eed_0001).enumerate() {
        if found == 2 {
            break;
        }
        let mode = 2 + (found as u8 % 2);
        let mut u = Unstructured::new(&input);
        let base = match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => 0,
            1 => continue,
            _ => u.arbitrary().unwrap_or(0),
        };
        let (seg, clean) = build_segment(&mut u, base, 16 * 1024);
        if clean && scan_segment(&seg, base, mode == 3).accepted.len() >= 2 && seg.len() < 1500 {
            put(
                dir,
                &format!(
                    "segment-{}-{i}",
                    if mode == 3 { "sealed" } else { "newest" }
                ),
                &[&[mode][..], &input].concat(),
            );
            found += 1;
        }
    }
}

fn log_open(dir: &Path) {
    // One single-segment log and two with more segments.
    let (mut single, mut multi) = (0, 0);
    for (i, input) in candidates(0x5eed_0002).enumerate() {
        if single == 1 && multi == 2 {
            break;
        }
        let mut u = Unstructured::new(&input);
        let (max_bytes, specs) = log_files(&mut u);
        let scratch = ScratchDir::new("seeds");
        for s in &specs {
            if s.is_dir || !s.name.ends_with(".log") {
                continue;
            }
            fs::write(scratch.path().join(&s.name), &s.bytes).expect("write segment");
        }
        let cfg = LogConfig {
            max_bytes_per_file: max_bytes,
            max_msg_size: 1024,
            ..LogConfig::default()
        };
        let Ok(log) = Log::open(scratch.path(), cfg) else {
            continue;
        };
        let slot = if specs.len() == 1 {
            &mut single
        } else {
            &mut multi
        };
        let room = if specs.len() == 1 { 1 } else { 2 };
        let all_segments = specs.iter().all(|s| !s.is_dir && s.name.ends_with(".log"));
        if *slot < room && all_segments && log.iter_from(0).count() > specs.len() {
            put(dir, &format!("segments-{}-{i}", specs.len()), &input);
            *slot += 1;
        }
    }
}

fn checkpoint(dir: &Path) {
    let cp = Checkpoint {
        version: 1,
        topics: vec![
            TopicState {
                settings: Default::default(),
                name: "t".into(),
                paused: false,
                distributed: 0,
                channels: vec![ChannelState {
                    settings: Default::default(),
                    name: "c".into(),
                    paused: false,
                    cursor: 20,
                    pending: vec![
                        PendingState {
                            offset: 3,
                            attempts: 1,
                            due_wall_ns: 0,
                            loc: None,
                        },
                        PendingState {
                            offset: 2,
                            attempts: 4,
                            due_wall_ns: 0,
                            loc: Some(30),
                        },
                        PendingState {
                            offset: 5,
                            attempts: 0,
                            due_wall_ns: 1_764_032_500_000_000_000,
                            loc: None,
                        },
                    ],
                }],
            },
            TopicState {
                settings: Default::default(),
                name: "u".into(),
                paused: true,
                distributed: 1,
                channels: vec![],
            },
        ],
    };
    // Mode 0: the raw corq.dat bytes.
    let json = serde_json::to_vec(&cp).expect("serialise");
    put(dir, "raw-valid", &[&[0u8][..], &json].concat());
    // Mode 1: ingredients for a checkpoint the target writes itself (any bytes are valid).
    put(
        dir,
        "structured",
        &[
            1, 3, 0, 0, 5, 2, 0, 7, 3, 1, 3, 2, 9, 1, 0, 4, 0, 0, 1, 6, 2, 40, 2, 1, 0, 3, 1, 0, 12,
        ],
    );
}

/// Deterministic pseudo-random inputs of 200..1500 bytes (xorshift64*).
fn candidates(seed: u64) -> impl Iterator<Item = Vec<u8>> {
    let mut x = seed;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    (0..200_000).map(move |_| {
        let len = 200 + (next() % 1300) as usize;
        // Mostly small bytes: lengths and choices come out small, bodies short.
        (0..len).map(|_| (next() % 97) as u8).collect()
    })
}
