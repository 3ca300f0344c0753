//! Server → client frames, appended to a caller's `Vec<u8>` (no other allocation), plus the
//! message-ID helpers.
//!
//! ```text
//! every frame:
//! +----------------+----------------+----------------------------+
//! | size: u32 BE   | type: i32 BE   | data: size - 4 bytes       |
//! | = 4 + len(data)| 0 resp 1 err   |                            |
//! |                | 2 message      |                            |
//! +----------------+----------------+----------------------------+
//!
//! message frame data (size = 4 + 26 + len(body)):
//! +------------------+---------------+--------------------------+--------+
//! | timestamp: i64 BE| attempts: u16 | id: 16 ASCII lowercase   | body   |
//! | ns since epoch   | BE            | hex bytes                |        |
//! +------------------+---------------+--------------------------+--------+
//!  0                  8               10                         26
//! ```
//!
//! Captured heartbeat: `00 00 00 0F 00 00 00 00 "_heartbeat_"`.

use super::{FrameType, MessageId, ProtoError, MESSAGE_ID_LEN};

/// The data of the heartbeat response frame.
pub const HEARTBEAT: &[u8] = b"_heartbeat_";

/// Bytes before a frame's data: size + type.
pub const FRAME_HEADER_LEN: usize = 8;

/// Bytes of a message frame's data before the body: timestamp + attempts + id.
pub const MESSAGE_HEADER_LEN: usize = 8 + 2 + MESSAGE_ID_LEN;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends a frame header for `data_len` bytes of data.
///
/// # Panics
/// If `4 + data_len` does not fit a u32: callers bound bodies by the server's limits, far below.
fn frame_header(out: &mut Vec<u8>, frame_type: FrameType, data_len: usize) {
    // cannot fail because every body is bounded by --max-msg-size / --max-body-size (u32s).
    let size = u32::try_from(data_len + 4).expect("frame data bounded by server limits");
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&(frame_type as u32).to_be_bytes());
}

/// Appends a response frame (`OK`, `CLOSE_WAIT`, `_heartbeat_`, JSON).
pub fn encode_response(out: &mut Vec<u8>, data: &[u8]) {
    frame_header(out, FrameType::Response, data.len());
    out.extend_from_slice(data);
}

/// Appends an error frame with `err`'s data (`code + " " + desc`).
pub fn encode_error(out: &mut Vec<u8>, err: &ProtoError) {
    frame_header(out, FrameType::Error, err.frame_data_len());
    err.write_frame_data(out);
}

/// Appends a whole message frame.
pub fn encode_message(
    out: &mut Vec<u8>,
    timestamp_ns: i64,
    attempts: u16,
    id: &MessageId,
    body: &[u8],
) {
    encode_message_header(out, timestamp_ns, attempts, id, body.len());
    out.extend_from_slice(body);
}

/// Appends a message frame up to (not including) the body, for a caller that writes the
/// `body_len` body bytes itself (e.g. straight from a mapped segment).
pub fn encode_message_header(
    out: &mut Vec<u8>,
    timestamp_ns: i64,
    attempts: u16,
    id: &MessageId,
    body_len: usize,
) {
    frame_header(out, FrameType::Message, MESSAGE_HEADER_LEN + body_len);
    out.extend_from_slice(&timestamp_ns.to_be_bytes());
    out.extend_from_slice(&attempts.to_be_bytes());
    out.extend_from_slice(id);
}

/// The ID of the message at log `offset`: 16 lowercase hex chars, big-endian, like nsqd's
/// `guid.Hex()`, so tools that parse IDs keep working.
pub fn message_id_from_offset(offset: u64) -> MessageId {
    let mut id = [0u8; MESSAGE_ID_LEN];
    for (i, slot) in id.iter_mut().enumerate() {
        let nibble = (offset >> (60 - 4 * i)) & 0xf;
        *slot = HEX[nibble as usize];
    }
    id
}

/// The log offset encoded in `id`, or `None` if it is not 16 hex chars (upper case accepted).
pub fn offset_from_message_id(id: &MessageId) -> Option<u64> {
    let mut acc = 0u64;
    for &c in id {
        let digit = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return None,
        };
        acc = (acc << 4) | u64::from(digit);
    }
    Some(acc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::E_BAD_PROTOCOL;

    #[test]
    fn response_ok_bytes() {
        let mut out = Vec::new();
        encode_response(&mut out, b"OK");
        assert_eq!(out, b"\x00\x00\x00\x06\x00\x00\x00\x00OK");
    }

    #[test]
    fn heartbeat_bytes_match_capture() {
        let mut out = Vec::new();
        encode_response(&mut out, HEARTBEAT);
        assert_eq!(out, b"\x00\x00\x00\x0f\x00\x00\x00\x00_heartbeat_");
    }

    #[test]
    fn bad_protocol_bytes_match_capture() {
        let mut out = Vec::new();
        encode_error(&mut out, &ProtoError::fatal(E_BAD_PROTOCOL, ""));
        let want = [
            0x00, 0x00, 0x00, 0x12, 0x00, 0x00, 0x00, 0x01, 0x45, 0x5F, 0x42, 0x41, 0x44, 0x5F,
            0x50, 0x52, 0x4F, 0x54, 0x4F, 0x43, 0x4F, 0x4C,
        ];
        assert_eq!(out, want);
    }

    #[test]
    fn error_with_desc() {
        let mut out = Vec::new();
        let e = ProtoError::non_fatal(
            "E_FIN_FAILED",
            "FIN 18a7689298807000 failed ID not in flight",
        );
        encode_error(&mut out, &e);
        let data = b"E_FIN_FAILED FIN 18a7689298807000 failed ID not in flight";
        assert_eq!(&out[..4], &((data.len() + 4) as u32).to_be_bytes());
        assert_eq!(&out[4..8], &[0, 0, 0, 1]);
        assert_eq!(&out[8..], data);
    }

    #[test]
    fn message_bytes_match_capture() {
        let mut out = Vec::new();
        let ts = i64::from_be_bytes([0x18, 0xeb, 0x22, 0xf4, 0xcb, 0x28, 0xe3, 0xa7]);
        encode_message(&mut out, ts, 1, b"18a7689298807000", b"msg0");
        let mut want = vec![
            0, 0, 0, 0x22, 0, 0, 0, 2, 0x18, 0xeb, 0x22, 0xf4, 0xcb, 0x28, 0xe3,
        ];
        want.extend_from_slice(&[0xa7, 0, 1]);
        want.extend_from_slice(b"18a7689298807000msg0");
        assert_eq!(out, want);
        let mut hdr = Vec::new();
        encode_message_header(&mut hdr, ts, 1, b"18a7689298807000", 4);
        assert_eq!(hdr, want[..want.len() - 4]);
    }

    #[test]
    fn message_id_round_trip() {
        assert_eq!(&message_id_from_offset(0), b"0000000000000000");
        assert_eq!(
            &message_id_from_offset(0x18a7689298807000),
            b"18a7689298807000"
        );
        assert_eq!(&message_id_from_offset(u64::MAX), b"ffffffffffffffff");
        for off in [0, 1, 255, 0x1234_5678_9abc_def0, u64::MAX] {
            assert_eq!(
                offset_from_message_id(&message_id_from_offset(off)),
                Some(off)
            );
        }
        assert_eq!(offset_from_message_id(b"000000000000000g"), None);
        assert_eq!(
            offset_from_message_id(b"ABCDEF0000000000"),
            Some(0xabcdef << 40)
        );
    }
}
