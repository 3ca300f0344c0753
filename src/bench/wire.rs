//! The generator's side of the wire: pre-built publish frames with stamp slots, the in-place
//! frame scanner, and the few small commands a consumer sends.
//!
//! Every published body starts with an 8-byte big-endian timestamp (ns since the run's shared
//! origin `Instant`): the intended send time in `e2e`, the write time otherwise. With
//! `--unique-bodies` an 8-byte big-endian sequence number follows it, different for every
//! message of the run, so that no two bodies are equal (a server's dedup window sees no
//! duplicate). The rest of the body is padding. The frame bytes are built once; sending a
//! command is one `extend_from_slice` of the template plus one or two 8-byte stores per message.
//!
//! ```text
//! PUB:  "PUB <topic>\n" | len: u32 BE | [stamp: u64 BE | (seq: u64 BE) | padding]
//! MPUB: "MPUB <topic>\n" | body len: u32 BE | count: u32 BE | (len: u32 BE | [stamp | (seq) | padding])*
//! ```
//!
//! A consumer answers each message `FIN <id>\n`, or `REQ <id> 0\n` for the `--req-ratio`
//! share of them.

use crate::client::MAX_FRAME_SIZE;
use crate::protocol::MESSAGE_ID_LEN;

/// Bytes of the timestamp at the front of every published body.
pub const STAMP_LEN: usize = 8;
/// Bytes of the sequence number after the stamp (`--unique-bodies`).
pub const SEQ_LEN: usize = 8;
/// Smallest body that holds a stamp and a sequence number.
pub const UNIQUE_MIN_SIZE: usize = STAMP_LEN + SEQ_LEN;

/// Frame types on the wire (`[u32 size][u32 type][data]`).
pub const FRAME_RESPONSE: u32 = 0;
/// An error frame: `"<CODE> <description>"`.
pub const FRAME_ERROR: u32 = 1;
/// A message frame: `[i64 ts][u16 attempts][16-byte id][body]`.
pub const FRAME_MESSAGE: u32 = 2;

/// Bytes of a message frame's data before its body.
const MESSAGE_HEADER_LEN: usize = 8 + 2 + MESSAGE_ID_LEN;

/// One publish command (PUB, or MPUB when the batch is above 1), built once per connection.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    /// The complete command bytes; stamps are overwritten in the copy in the write buffer.
    bytes: Vec<u8>,
    /// Where each body's stamp starts within `bytes`.
    stamp_offsets: Vec<usize>,
    /// Write a sequence number after each stamp (`--unique-bodies`).
    unique: bool,
}

impl PublishTemplate {
    /// A PUB (batch 1) or MPUB (batch > 1) of `batch` bodies of `size` bytes each; with
    /// `unique`, each body carries a sequence number after its stamp.
    ///
    /// # Panics
    /// If `size < STAMP_LEN` (`UNIQUE_MIN_SIZE` with `unique`) or `batch == 0`:
    /// [`crate::bench::BenchConfig::validate`] rules these out before any template is built.
    pub fn new(topic: &str, size: usize, batch: usize, unique: bool) -> PublishTemplate {
        let min = if unique { UNIQUE_MIN_SIZE } else { STAMP_LEN };
        assert!(size >= min && batch > 0, "size {size} batch {batch}");
        let mut bytes = Vec::with_capacity(32 + batch * (size + 4));
        let mut stamp_offsets = Vec::with_capacity(batch);
        if batch == 1 {
            bytes.extend_from_slice(format!("PUB {topic}\n").as_bytes());
            bytes.extend_from_slice(&be32(size));
            stamp_offsets.push(bytes.len());
            push_body(&mut bytes, size);
        } else {
            bytes.extend_from_slice(format!("MPUB {topic}\n").as_bytes());
            bytes.extend_from_slice(&be32(4 + batch * (4 + size)));
            bytes.extend_from_slice(&be32(batch));
            for _ in 0..batch {
                bytes.extend_from_slice(&be32(size));
                stamp_offsets.push(bytes.len());
                push_body(&mut bytes, size);
            }
        }
        PublishTemplate {
            bytes,
            stamp_offsets,
            unique,
        }
    }

    /// Messages per command.
    pub fn batch(&self) -> usize {
        self.stamp_offsets.len()
    }

    /// Bytes per command.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a template with no bytes (never: a template holds at least one command).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends one command to `out`, every body stamped with `stamp_ns`; with `unique`,
    /// body `i` gets sequence number `first_seq + i`.
    pub fn append(&self, out: &mut Vec<u8>, stamp_ns: u64, first_seq: u64) {
        self.append_stamped(out, |_| stamp_ns, first_seq);
    }

    /// Appends one command to `out`, body `i` stamped with `stamp(i)` (the paced publisher
    /// gives each message of a batch its own intended time) and, with `unique`, numbered
    /// `first_seq + i`.
    pub fn append_stamped(&self, out: &mut Vec<u8>, stamp: impl Fn(usize) -> u64, first_seq: u64) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        for (i, &at) in self.stamp_offsets.iter().enumerate() {
            let at = base + at;
            // In bounds: `at + STAMP_LEN (+ SEQ_LEN when unique) <= bytes.len()` by
            // construction in `new`.
            out[at..at + STAMP_LEN].copy_from_slice(&stamp(i).to_be_bytes());
            if self.unique {
                let seq = first_seq.wrapping_add(i as u64);
                out[at + STAMP_LEN..at + UNIQUE_MIN_SIZE].copy_from_slice(&seq.to_be_bytes());
            }
        }
    }
}

fn be32(n: usize) -> [u8; 4] {
    // cannot fail because: sizes are bounded by BenchConfig::validate (max 64 MiB).
    u32::try_from(n).expect("validated size").to_be_bytes()
}

/// A zero stamp followed by printable padding (readable in `nsq_tail`, compresses like text).
fn push_body(out: &mut Vec<u8>, size: usize) {
    out.extend_from_slice(&[0u8; STAMP_LEN]);
    out.extend((0..size - STAMP_LEN).map(|i| b'a' + (i % 26) as u8));
}

/// One frame found in place in a read buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrame<'a> {
    /// [`FRAME_RESPONSE`], [`FRAME_ERROR`] or [`FRAME_MESSAGE`].
    pub frame_type: u32,
    /// The frame's data (after size and type).
    pub data: &'a [u8],
}

/// Why a peer's bytes could not be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

/// Finds the frame at the front of `buf` without copying: `Ok(None)` until it is complete,
/// else the frame and the bytes it spans. Sizes are checked before they are trusted.
///
/// # Errors
/// A size below 4 or above [`MAX_FRAME_SIZE`], or a message frame shorter than its header.
pub fn scan_frame(buf: &[u8]) -> Result<Option<(RawFrame<'_>, usize)>, FrameError> {
    let Some(head) = buf.get(..8) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if !(4..=MAX_FRAME_SIZE).contains(&size) {
        return Err(FrameError(format!("bad frame size {size}")));
    }
    let frame_type = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let total = 4 + size as usize;
    let Some(data) = buf.get(8..total) else {
        return Ok(None);
    };
    if frame_type == FRAME_MESSAGE && data.len() < MESSAGE_HEADER_LEN {
        return Err(FrameError(format!("message frame of {} bytes", data.len())));
    }
    Ok(Some((RawFrame { frame_type, data }, total)))
}

/// A message frame's ID and body (the frame was length-checked by [`scan_frame`]).
pub fn message_parts(data: &[u8]) -> (&[u8], &[u8]) {
    let id = data.get(10..MESSAGE_HEADER_LEN).unwrap_or(b"");
    let body = data.get(MESSAGE_HEADER_LEN..).unwrap_or(b"");
    (id, body)
}

/// The stamp at the front of a body, or `None` for a body too short to carry one.
pub fn read_stamp(body: &[u8]) -> Option<u64> {
    let b: [u8; STAMP_LEN] = body.get(..STAMP_LEN)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// The sequence number after the stamp (`--unique-bodies`), or `None` for a body too short.
pub fn read_seq(body: &[u8]) -> Option<u64> {
    let b: [u8; SEQ_LEN] = body.get(STAMP_LEN..UNIQUE_MIN_SIZE)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Appends `FIN <id>\n`.
pub fn append_fin(out: &mut Vec<u8>, id: &[u8]) {
    out.extend_from_slice(b"FIN ");
    out.extend_from_slice(id);
    out.push(b'\n');
}

/// Appends `REQ <id> 0\n`: requeue at once (the server's own backoff, if any, applies).
pub fn append_req(out: &mut Vec<u8>, id: &[u8]) {
    out.extend_from_slice(b"REQ ");
    out.extend_from_slice(id);
    out.extend_from_slice(b" 0\n");
}

/// Which deliveries a consumer answers REQ instead of FIN: `--req-ratio` as parts per
/// million, applied deterministically (a credit accumulator: with 0.1, exactly every 10th).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReqPicker {
    /// REQs per million deliveries (0 = FIN everything).
    per_million: u32,
    /// Credit accumulated since the last REQ, in millionths.
    credit: u32,
}

impl ReqPicker {
    /// A picker for `ratio` in `0.0..=1.0` (validated by the caller; clamped here).
    pub fn new(ratio: f64) -> ReqPicker {
        ReqPicker {
            per_million: (ratio.clamp(0.0, 1.0) * 1e6).round() as u32,
            credit: 0,
        }
    }

    /// True if this delivery is to be answered REQ.
    #[inline]
    pub fn pick(&mut self) -> bool {
        if self.per_million == 0 {
            return false;
        }
        self.credit += self.per_million;
        if self.credit >= 1_000_000 {
            self.credit -= 1_000_000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_template_bytes() {
        let t = PublishTemplate::new("t", 10, 1, false);
        let mut out = Vec::new();
        t.append(&mut out, 0x0102, 99);
        let mut want = b"PUB t\n\0\0\0\x0a".to_vec();
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        want.extend_from_slice(b"ab");
        assert_eq!(out, want);
        assert_eq!((t.batch(), t.len()), (1, want.len()));
    }

    #[test]
    fn mpub_template_decodes_with_the_server_codec() {
        use crate::protocol::{decode, Command, ConnState, DecodeCtx, Limits};
        let t = PublishTemplate::new("topic", 16, 3, false);
        let mut out = Vec::new();
        t.append(&mut out, 7, 0);
        let ctx = DecodeCtx {
            state: ConnState::Init,
            heartbeats_disabled: false,
            mpub_auth: false,
        };
        let (cmd, used) = decode(&out, &ctx, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, out.len());
        let Command::Mpub { topic, bodies } = cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!(topic, "topic");
        let bodies: Vec<&[u8]> = bodies.collect();
        assert_eq!(bodies.len(), 3);
        assert!(bodies
            .iter()
            .all(|b| b.len() == 16 && read_stamp(b) == Some(7)));
    }

    fn mpub_bodies(out: &[u8]) -> Vec<Vec<u8>> {
        use crate::protocol::{decode, Command, ConnState, DecodeCtx, Limits};
        let ctx = DecodeCtx {
            state: ConnState::Init,
            heartbeats_disabled: false,
            mpub_auth: false,
        };
        let (cmd, used) = decode(out, &ctx, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, out.len());
        let Command::Mpub { bodies, .. } = cmd else {
            panic!("{cmd:?}")
        };
        bodies.map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn unique_bodies_are_all_different_and_keep_their_stamp() {
        let t = PublishTemplate::new("topic", 20, 4, true);
        let mut out = Vec::new();
        t.append(&mut out, 7, 100);
        let first = mpub_bodies(&out);
        out.clear();
        t.append_stamped(&mut out, |i| 50 + i as u64, 104);
        let second = mpub_bodies(&out);
        let all: Vec<&Vec<u8>> = first.iter().chain(&second).collect();
        let distinct: std::collections::HashSet<&Vec<u8>> = all.iter().copied().collect();
        assert_eq!(distinct.len(), 8, "every body differs");
        assert!(first
            .iter()
            .all(|b| b.len() == 20 && read_stamp(b) == Some(7)));
        let seqs: Vec<u64> = all.iter().map(|b| read_seq(b).unwrap()).collect();
        assert_eq!(seqs, (100..108).collect::<Vec<u64>>());
        assert_eq!(read_stamp(&second[3]), Some(53));
        // The padding after the sequence number is unchanged.
        assert_eq!(&first[0][16..], b"ijkl");
    }

    #[test]
    fn without_unique_bodies_a_batch_repeats_one_body() {
        let t = PublishTemplate::new("topic", 20, 3, false);
        let mut out = Vec::new();
        t.append(&mut out, 7, 100);
        let bodies = mpub_bodies(&out);
        assert!(bodies.iter().all(|b| b == &bodies[0]));
    }

    #[test]
    fn req_picker_is_deterministic() {
        let picks = |ratio: f64, n: usize| {
            let mut p = ReqPicker::new(ratio);
            (0..n).filter(|_| p.pick()).count()
        };
        assert_eq!(picks(0.0, 1000), 0);
        assert_eq!(picks(0.1, 1000), 100);
        assert_eq!(picks(0.25, 1000), 250);
        assert_eq!(picks(1.0, 1000), 1000);
        assert_eq!(picks(0.5, 3000), 1500);
        let mut p = ReqPicker::new(0.1);
        let at: Vec<usize> = (1..=30).filter(|_| p.pick()).collect();
        assert_eq!(at.len(), 3);
        let mut p = ReqPicker::new(0.1);
        let every_tenth: Vec<bool> = (0..20).map(|_| p.pick()).collect();
        assert!(every_tenth[9] && every_tenth[19]);
        assert_eq!(every_tenth.iter().filter(|&&b| b).count(), 2);
    }

    #[test]
    fn fin_and_req_commands() {
        let mut out = Vec::new();
        append_fin(&mut out, b"0123456789abcdef");
        append_req(&mut out, b"0123456789abcdef");
        assert_eq!(
            out,
            b"FIN 0123456789abcdef\nREQ 0123456789abcdef 0\n".to_vec()
        );
    }

    #[test]
    fn scan_frame_in_place() {
        let mut buf = Vec::new();
        crate::protocol::encode_message(&mut buf, 5, 1, b"0123456789abcdef", b"body");
        crate::protocol::encode_response(&mut buf, b"OK");
        let (f, used) = scan_frame(&buf).unwrap().unwrap();
        assert_eq!(f.frame_type, FRAME_MESSAGE);
        assert_eq!(
            message_parts(f.data),
            (&b"0123456789abcdef"[..], &b"body"[..])
        );
        let (f, used2) = scan_frame(&buf[used..]).unwrap().unwrap();
        assert_eq!((f.frame_type, f.data), (FRAME_RESPONSE, &b"OK"[..]));
        assert_eq!(used + used2, buf.len());
        assert_eq!(scan_frame(&buf[..used - 1]).unwrap(), None);
    }

    #[test]
    fn scan_frame_rejects_bad_sizes() {
        assert!(scan_frame(&[0, 0, 0, 3, 0, 0, 0, 0]).is_err());
        assert!(scan_frame(&[0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(scan_frame(&[0, 0, 0, 6, 0, 0, 0, 2, 0, 0]).is_err());
    }
}
