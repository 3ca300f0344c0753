//! Splitting an `/mpub` body into messages, as nsqd's `doMPUB` does (reference §2.2).
//!
//! * **Text mode** (the default): the body is split on `\n`; only the `\n` is removed (a `\r`
//!   before it stays in the message, as in nsqd); empty lines are skipped silently; a line above
//!   `--max-msg-size` is 413 `MSG_TOO_BIG`; an empty body is no messages (nsqd answers 200 OK
//!   and publishes nothing).
//! * **Binary mode** (`binary=true`): `[i32 BE count]([i32 BE size][size bytes])*`, read like
//!   TCP MPUB without the outer size (nsqd `readMPUB`), every failure 413 with the TCP code
//!   minus `E_`: `BAD_BODY` for the count, `BAD_MESSAGE` for a message. The lengths are
//!   signed in nsqd, so `>= 2^31` is negative and refused (nsqd #822/#835, hostile-inputs
//!   §2.2, §2.3). Bytes after the last message are ignored, as nsqd never reads them.
//!
//! Messages borrow from the body; nothing is allocated from a declared count beyond a small
//! bound.

use super::routes::{ApiError, BODY_TOO_BIG, MSG_TOO_BIG};

/// 413 `BAD_BODY`: the binary count is missing or out of range.
pub const BAD_BODY: ApiError = ApiError::new(413, "BAD_BODY");
/// 413 `BAD_MESSAGE`: a binary message's size is missing, out of range, or its bytes are short.
pub const BAD_MESSAGE: ApiError = ApiError::new(413, "BAD_MESSAGE");

/// The most message slots reserved up front, whatever count the body declares.
const PREALLOC_CAP: usize = 1024;

/// Splits a text-mode body on `\n`.
///
/// # Errors
/// 413 `BODY_TOO_BIG` if the body is above `max_body_size` (the parser normally refused it
/// already), 413 `MSG_TOO_BIG` for a line above `max_msg_size`.
pub fn split_text(
    body: &[u8],
    max_msg_size: u64,
    max_body_size: u64,
) -> Result<Vec<&[u8]>, ApiError> {
    if body.len() as u64 > max_body_size {
        return Err(BODY_TOO_BIG);
    }
    let mut msgs = Vec::new();
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if line.len() as u64 > max_msg_size {
            return Err(MSG_TOO_BIG);
        }
        msgs.push(line);
    }
    Ok(msgs)
}

/// Splits a binary-mode body.
///
/// # Errors
/// 413 `BAD_BODY` when the count cannot be read, is `<= 0`, or is above
/// `(max_body_size - 4) / 5`; 413 `BAD_MESSAGE` when a size cannot be read, is `<= 0` or above
/// `max_msg_size`, or the body ends inside a message.
pub fn split_binary(
    body: &[u8],
    max_msg_size: u64,
    max_body_size: u64,
) -> Result<Vec<&[u8]>, ApiError> {
    let count = read_i32(body, 0).ok_or(BAD_BODY)?;
    // 4 bytes of count, then at least 4 + 1 per message (nsqd's bound, #835).
    let max_messages = max_body_size.saturating_sub(4) / 5;
    let count = u64::try_from(count)
        .ok()
        .filter(|&c| c > 0 && c <= max_messages);
    let count = count.ok_or(BAD_BODY)?;
    let mut msgs = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(PREALLOC_CAP));
    let mut pos = 4usize;
    for _ in 0..count {
        let size = read_i32(body, pos).ok_or(BAD_MESSAGE)?;
        let size = u64::try_from(size)
            .ok()
            .filter(|&s| s > 0 && s <= max_msg_size);
        let size = size
            .and_then(|s| usize::try_from(s).ok())
            .ok_or(BAD_MESSAGE)?;
        let start = pos.checked_add(4).ok_or(BAD_MESSAGE)?;
        let end = start.checked_add(size).ok_or(BAD_MESSAGE)?;
        msgs.push(body.get(start..end).ok_or(BAD_MESSAGE)?);
        pos = end;
    }
    Ok(msgs)
}

/// The big-endian `int32` at `pos`, as nsqd's `readLen` reads it; `None` if short.
fn read_i32(body: &[u8], pos: usize) -> Option<i32> {
    let bytes = body.get(pos..pos.checked_add(4)?)?;
    let arr: [u8; 4] = bytes.try_into().ok()?;
    Some(i32::from_be_bytes(arr))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: u64 = 10;
    const BODY: u64 = 64;

    fn bin(count: u32, msgs: &[&[u8]]) -> Vec<u8> {
        let mut v = count.to_be_bytes().to_vec();
        for m in msgs {
            v.extend_from_slice(&(m.len() as u32).to_be_bytes());
            v.extend_from_slice(m);
        }
        v
    }

    #[test]
    fn text_splits_and_skips_empty_lines() {
        let got = split_text(b"a\nbb\n\n\nccc\n", MSG, BODY).unwrap();
        assert_eq!(got, [&b"a"[..], b"bb", b"ccc"]);
        let got = split_text(b"no newline", MSG, BODY).unwrap();
        assert_eq!(got, [&b"no newline"[..]]);
        assert_eq!(split_text(b"", MSG, BODY).unwrap(), Vec::<&[u8]>::new());
        assert_eq!(split_text(b"\n\n", MSG, BODY).unwrap(), Vec::<&[u8]>::new());
    }

    #[test]
    fn text_keeps_carriage_returns() {
        let got = split_text(b"a\r\nb\r\n\r\n", MSG, BODY).unwrap();
        assert_eq!(
            got,
            [&b"a\r"[..], b"b\r", b"\r"],
            "nsqd strips only the \\n"
        );
    }

    #[test]
    fn text_limits() {
        assert_eq!(split_text(b"0123456789\n", MSG, BODY).unwrap().len(), 1);
        assert_eq!(split_text(b"ok\n0123456789x", MSG, BODY), Err(MSG_TOO_BIG));
        let big = vec![b'a'; 65];
        assert_eq!(split_text(&big, 100, BODY), Err(BODY_TOO_BIG));
    }

    #[test]
    fn binary_round_trip() {
        let body = bin(3, &[b"a", b"bc", b"0123456789"]);
        let got = split_binary(&body, MSG, BODY).unwrap();
        assert_eq!(got, [&b"a"[..], b"bc", b"0123456789"]);
        let mut trailing = bin(1, &[b"x"]);
        trailing.extend_from_slice(b"ignored");
        assert_eq!(split_binary(&trailing, MSG, BODY).unwrap(), [&b"x"[..]]);
    }

    #[test]
    fn binary_malformed_shapes() {
        let cases: Vec<(Vec<u8>, ApiError)> = vec![
            (vec![], BAD_BODY),
            (vec![0, 0, 1], BAD_BODY),
            (bin(0, &[]), BAD_BODY),
            (0x8000_0000u32.to_be_bytes().to_vec(), BAD_BODY),
            (u32::MAX.to_be_bytes().to_vec(), BAD_BODY),
            // (64 - 4) / 5 = 12 messages at most.
            (bin(13, &[]), BAD_BODY),
            (bin(1, &[]), BAD_MESSAGE),
            (bin(2, &[b"a"]), BAD_MESSAGE),
            ([bin(1, &[]), vec![0, 0]].concat(), BAD_MESSAGE),
            (
                [bin(1, &[]), 0u32.to_be_bytes().to_vec()].concat(),
                BAD_MESSAGE,
            ),
            (
                [bin(1, &[]), 0x8000_0000u32.to_be_bytes().to_vec()].concat(),
                BAD_MESSAGE,
            ),
            (
                [bin(1, &[]), 11u32.to_be_bytes().to_vec(), vec![b'a'; 11]].concat(),
                BAD_MESSAGE,
            ),
            (
                [bin(1, &[]), 5u32.to_be_bytes().to_vec(), b"abc".to_vec()].concat(),
                BAD_MESSAGE,
            ),
            (
                [bin(1, &[]), u32::MAX.to_be_bytes().to_vec()].concat(),
                BAD_MESSAGE,
            ),
        ];
        for (body, want) in cases {
            assert_eq!(split_binary(&body, MSG, BODY), Err(want), "{body:?}");
        }
        assert_eq!(
            split_binary(&bin(12, &[&b"a"[..]; 12]), MSG, BODY)
                .unwrap()
                .len(),
            12
        );
    }

    #[test]
    fn binary_huge_count_does_not_preallocate() {
        // 2^31 - 1 messages declared within a huge limit, but only 4 bytes of body.
        let body = 0x7fff_ffffu32.to_be_bytes();
        assert_eq!(split_binary(&body, MSG, u64::MAX), Err(BAD_MESSAGE));
    }

    #[test]
    fn random_binary_bodies_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 24) as usize;
            let body: Vec<u8> = (0..len).map(|i| (x >> (i % 8 * 8)) as u8 % 6).collect();
            if let Ok(msgs) = split_binary(&body, MSG, BODY) {
                let total: usize = msgs.iter().map(|m| m.len() + 4).sum();
                assert!(total + 4 <= body.len());
            }
        }
    }
}
