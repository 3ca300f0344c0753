//! The generator's side of the wire: pre-built publish frames with stamp slots, the in-place
//! frame scanner, and the few small commands a consumer sends.
//!
//! Every published body starts with an 8-byte big-endian timestamp (ns since the run's shared
//! origin `Instant`): the intended send time in `e2e`, the write time otherwise. The rest of the
//! body is padding. The frame bytes are built once; sending a command is one `extend_from_slice`
//! of the template plus one 8-byte store per message.
//!
//! ```text
//! PUB:  "PUB <topic>\n" | len: u32 BE | [stamp: u64 BE | padding]
//! MPUB: "MPUB <topic>\n" | body len: u32 BE | count: u32 BE | (len: u32 BE | [stamp | padding])*
//! ```

use crate::client::MAX_FRAME_SIZE;
use crate::protocol::MESSAGE_ID_LEN;

/// Bytes of the timestamp at the front of every published body.
pub const STAMP_LEN: usize = 8;

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
}

impl PublishTemplate {
    /// A PUB (batch 1) or MPUB (batch > 1) of `batch` bodies of `size` bytes each.
    ///
    /// # Panics
    /// If `size < STAMP_LEN` or `batch == 0`: [`crate::bench::BenchConfig::validate`] rules
    /// both out before any template is built.
    pub fn new(topic: &str, size: usize, batch: usize) -> PublishTemplate {
        assert!(size >= STAMP_LEN && batch > 0, "size {size} batch {batch}");
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

    /// Appends one command to `out`, every body stamped with `stamp_ns`.
    pub fn append(&self, out: &mut Vec<u8>, stamp_ns: u64) {
        self.append_stamped(out, |_| stamp_ns);
    }

    /// Appends one command to `out`, body `i` stamped with `stamp(i)` (the paced publisher
    /// gives each message of a batch its own intended time).
    pub fn append_stamped(&self, out: &mut Vec<u8>, stamp: impl Fn(usize) -> u64) {
        let base = out.len();
        out.extend_from_slice(&self.bytes);
        for (i, &at) in self.stamp_offsets.iter().enumerate() {
            // In bounds: `at + STAMP_LEN <= bytes.len()` by construction in `new`.
            out[base + at..base + at + STAMP_LEN].copy_from_slice(&stamp(i).to_be_bytes());
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

/// Appends `FIN <id>\n`.
pub fn append_fin(out: &mut Vec<u8>, id: &[u8]) {
    out.extend_from_slice(b"FIN ");
    out.extend_from_slice(id);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_template_bytes() {
        let t = PublishTemplate::new("t", 10, 1);
        let mut out = Vec::new();
        t.append(&mut out, 0x0102);
        let mut want = b"PUB t\n\0\0\0\x0a".to_vec();
        want.extend_from_slice(&0x0102u64.to_be_bytes());
        want.extend_from_slice(b"ab");
        assert_eq!(out, want);
        assert_eq!((t.batch(), t.len()), (1, want.len()));
    }

    #[test]
    fn mpub_template_decodes_with_the_server_codec() {
        use crate::protocol::{decode, Command, ConnState, DecodeCtx, Limits};
        let t = PublishTemplate::new("topic", 16, 3);
        let mut out = Vec::new();
        t.append(&mut out, 7);
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
