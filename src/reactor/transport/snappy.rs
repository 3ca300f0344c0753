//! The snappy framing format (<https://github.com/google/snappy/blob/main/framing_format.txt>),
//! decoded incrementally and encoded one chunk per 64 KiB of output.
//!
//! ```text
//! chunk   = [type: u8][len: u24 LE][len bytes]
//! 0xff    stream identifier, body "sNaPpY" (must come first)
//! 0x00    compressed:   [masked CRC-32C of the uncompressed data: u32 LE][snappy block]
//! 0x01    uncompressed: [masked CRC-32C: u32 LE][data]
//! 0x02-0x7f reserved, unskippable: an error;  0x80-0xfe skippable: ignored
//! ```
//!
//! A data chunk's uncompressed size is at most 65536 bytes, so one chunk never costs more than
//! that; the decoder stops at a caller-given output size and leaves the rest of its input.

/// The stream identifier chunk both sides send first.
pub const STREAM_ID: &[u8] = b"\xff\x06\x00\x00sNaPpY";
/// The largest uncompressed data in one chunk.
const MAX_BLOCK: usize = 65536;
/// The largest data chunk body we accept: a CRC plus the worst-case compressed 64 KiB block.
pub const MAX_CHUNK: usize = 4 + 76_490;

/// Decodes a client's snappy stream.
pub struct SnappyDecoder {
    dec: snap::raw::Decoder,
    /// The stream identifier has been seen.
    started: bool,
    /// Bytes of a skippable chunk still to drop.
    skip: usize,
}

impl std::fmt::Debug for SnappyDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnappyDecoder").finish_non_exhaustive()
    }
}

impl Default for SnappyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnappyDecoder {
    /// A decoder expecting the stream identifier.
    pub fn new() -> Self {
        SnappyDecoder {
            dec: snap::raw::Decoder::new(),
            started: false,
            skip: 0,
        }
    }

    /// Decodes whole chunks of `input` into `out` while `out` is shorter than `limit`;
    /// returns how many input bytes were used (a partial chunk waits for more).
    ///
    /// # Errors
    /// A corrupt stream (bad identifier, reserved chunk type, oversized chunk, bad block or
    /// checksum): the connection must close.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, &'static str> {
        let mut pos = 0;
        while pos < input.len() && out.len() < limit {
            if self.skip > 0 {
                let n = self.skip.min(input.len() - pos);
                self.skip -= n;
                pos += n;
                continue;
            }
            // `head` has exactly 4 bytes, and `len` <= MAX_CHUNK below, so no index or sum
            // here can fail.
            let Some(head) = input.get(pos..pos + 4) else {
                break;
            };
            let kind = head[0];
            let len = usize::from(head[1]) | usize::from(head[2]) << 8 | usize::from(head[3]) << 16;
            if kind >= 0x80 && kind != 0xff {
                // Padding or a skippable chunk; its body may be larger than any buffer.
                self.skip = len;
                pos += 4;
                continue;
            }
            if !self.started && kind != 0xff {
                return Err("snappy: stream does not start with the identifier");
            }
            if len > MAX_CHUNK {
                return Err("snappy: chunk too large");
            }
            let Some(body) = input.get(pos + 4..pos + 4 + len) else {
                break;
            };
            self.chunk(kind, body, out)?;
            pos += 4 + len;
        }
        Ok(pos)
    }

    /// One whole chunk.
    fn chunk(&mut self, kind: u8, body: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
        match kind {
            0xff if body == &STREAM_ID[4..] => {
                self.started = true;
                Ok(())
            }
            0xff => Err("snappy: bad stream identifier"),
            0x00 | 0x01 => {
                let (crc, data) = body.split_at_checked(4).ok_or("snappy: short chunk")?;
                let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
                let old = out.len();
                if kind == 0x01 {
                    if data.len() > MAX_BLOCK {
                        return Err("snappy: chunk too large");
                    }
                    out.extend_from_slice(data);
                } else {
                    let n = snap::raw::decompress_len(data).map_err(|_| "snappy: corrupt input")?;
                    if n > MAX_BLOCK {
                        return Err("snappy: chunk too large");
                    }
                    out.resize(old + n, 0);
                    if self.dec.decompress(data, &mut out[old..]).is_err() {
                        out.truncate(old);
                        return Err("snappy: corrupt input");
                    }
                }
                if masked_crc32c(&out[old..]) != want {
                    out.truncate(old);
                    return Err("snappy: corrupt input (checksum)");
                }
                Ok(())
            }
            _ => Err("snappy: unsupported chunk type"),
        }
    }
}

/// Encodes our output as snappy frames.
pub struct SnappyEncoder {
    enc: snap::raw::Encoder,
    started: bool,
    /// Reused compression buffer.
    block: Vec<u8>,
}

impl std::fmt::Debug for SnappyEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnappyEncoder").finish_non_exhaustive()
    }
}

impl Default for SnappyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SnappyEncoder {
    /// An encoder that sends the stream identifier before its first chunk.
    pub fn new() -> Self {
        SnappyEncoder {
            enc: snap::raw::Encoder::new(),
            started: false,
            block: Vec::new(),
        }
    }

    /// Appends `input` to `out` as chunks; compressed where that saves at least 1/8, as
    /// golang/snappy's writer does.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        if !self.started {
            out.extend_from_slice(STREAM_ID);
            self.started = true;
        }
        for data in input.chunks(MAX_BLOCK) {
            self.block
                .resize(snap::raw::max_compress_len(data.len()), 0);
            let n = self
                .enc
                .compress(data, &mut self.block)
                .unwrap_or(usize::MAX);
            let (kind, body) = if n < data.len() - data.len() / 8 {
                (0x00, &self.block[..n])
            } else {
                (0x01, data)
            };
            // cannot overflow: body.len() <= max_compress_len(65536) < 2^24 - 4.
            let len = (body.len() + 4) as u32;
            out.push(kind);
            out.extend_from_slice(&len.to_le_bytes()[..3]);
            out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
            out.extend_from_slice(body);
        }
    }
}

/// CRC-32C lookup tables for slicing-by-8: `CRC_TABLES[0]` is the classic byte table, and
/// `CRC_TABLES[k][b]` is the CRC of byte `b` followed by `k` zero bytes, so eight input bytes
/// are folded with eight lookups instead of eight dependent steps (about 5x the byte loop).
const CRC_TABLES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82f6_3b78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = t[0][(prev & 0xff) as usize] ^ (prev >> 8);
            i += 1;
        }
        k += 1;
    }
    t
};

/// CRC-32C (Castagnoli), reflected: eight bytes at a time, then the tail byte by byte.
fn crc32c(data: &[u8]) -> u32 {
    let t = &CRC_TABLES;
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = t[7][(lo & 0xff) as usize]
            ^ t[6][((lo >> 8) & 0xff) as usize]
            ^ t[5][((lo >> 16) & 0xff) as usize]
            ^ t[4][(lo >> 24) as usize]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = t[0][usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

/// The framing format's masked checksum.
fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain bitwise definition, to check the tables against.
    fn crc32c_bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    0x82f6_3b78 ^ (crc >> 1)
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn crc32c_matches_the_check_value_and_the_bitwise_definition_at_every_length() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        let data: Vec<u8> = (0..300u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in 0..data.len() {
            for start in 0..3.min(len + 1) {
                let d = &data[start..len];
                assert_eq!(crc32c(d), crc32c_bitwise(d), "{start}..{len}");
            }
        }
    }

    #[test]
    fn encodes_nsqds_captured_ok_chunk() {
        let mut out = Vec::new();
        SnappyEncoder::new().encode(b"\0\0\0\x06\0\0\0\0OK", &mut out);
        let want = b"\xff\x06\x00\x00\x73\x4e\x61\x50\x70\x59\x01\x0e\x00\x00\x26\x98\x2b\xcf\x00\x00\x00\x06\x00\x00\x00\x00\x4f\x4b";
        assert_eq!(out, want);
    }

    #[test]
    fn round_trips_byte_by_byte_and_refuses_corruption() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 7) as u8).collect();
        let mut wire = Vec::new();
        SnappyEncoder::new().encode(&data, &mut wire);
        assert!(
            wire.len() < data.len() / 4,
            "compressible data was compressed"
        );
        // Fed one byte more each time: partial chunks wait.
        let mut dec = SnappyDecoder::new();
        let (mut out, mut pos) = (Vec::new(), 0);
        for end in 1..=wire.len() {
            pos += dec.decode(&wire[pos..end], &mut out, usize::MAX).unwrap();
        }
        assert_eq!(pos, wire.len());
        assert_eq!(out, data);
        // The output limit stops decoding between chunks.
        let mut out = Vec::new();
        let used = SnappyDecoder::new().decode(&wire, &mut out, 1).unwrap();
        assert_eq!(out.len(), MAX_BLOCK);
        assert!(used < wire.len());

        let mut bad = wire.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        let e = SnappyDecoder::new().decode(&bad, &mut Vec::new(), usize::MAX);
        assert!(e.is_err(), "a flipped byte fails the block or its checksum");
        let e = SnappyDecoder::new().decode(b"\x00\x05\x00\x00abcde", &mut Vec::new(), 9);
        assert!(e.is_err(), "no stream identifier");
        let mut huge = STREAM_ID.to_vec();
        huge.extend_from_slice(b"\x00\xff\xff\xff");
        let e = SnappyDecoder::new().decode(&huge, &mut Vec::new(), 9);
        assert_eq!(e, Err("snappy: chunk too large"));
    }
}
