//! Raw deflate (RFC 1951, no zlib header) both ways, as nsqd's `compress/flate`: our output is
//! sync-flushed (`00 00 ff ff`) at the end of every write; the client's input is inflated at
//! most [`STEP`] bytes at a time and only while the caller's buffer has room, so a small
//! compressed input that claims gigabytes costs nothing until it is read, and then 64 KiB.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Inflated bytes produced per step.
const STEP: usize = 64 * 1024;

/// Inflates a client's deflate stream.
pub struct DeflateDecoder {
    z: Decompress,
    /// Reused output buffer of one step.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for DeflateDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateDecoder").finish_non_exhaustive()
    }
}

impl Default for DeflateDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl DeflateDecoder {
    /// A raw inflater.
    pub fn new() -> Self {
        DeflateDecoder {
            z: Decompress::new(false),
            scratch: vec![0; STEP],
        }
    }

    /// Inflates `input` into `out` while `out` is shorter than `limit`; returns the input
    /// bytes used.
    ///
    /// # Errors
    /// Corrupt data, or data after the end of the stream: the connection must close.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<usize, &'static str> {
        let mut pos = 0;
        while out.len() < limit {
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let status = self
                .z
                .decompress(&input[pos..], &mut self.scratch, FlushDecompress::None)
                .map_err(|_| "deflate: corrupt input")?;
            // Both deltas are bounded by the slices given, so they fit usize, and `pos` stays
            // within `input`, `made` within `scratch`.
            let used = (self.z.total_in() - in0) as usize;
            let made = (self.z.total_out() - out0) as usize;
            pos += used;
            out.extend_from_slice(&self.scratch[..made]);
            if status == Status::StreamEnd {
                // nsqd reads EOF there and drops the connection.
                return Err("deflate: stream ended");
            }
            if used == 0 && made == 0 {
                break;
            }
        }
        Ok(pos)
    }
}

/// Deflates our output.
pub struct DeflateEncoder {
    z: Compress,
}

impl std::fmt::Debug for DeflateEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflateEncoder").finish_non_exhaustive()
    }
}

impl DeflateEncoder {
    /// A raw deflater at `level` (1..=9; clamped).
    pub fn new(level: i64) -> Self {
        // cannot truncate: clamped to 1..=9.
        let level = level.clamp(1, 9) as u32;
        DeflateEncoder {
            z: Compress::new(Compression::new(level), false),
        }
    }

    /// Appends `input` deflated and sync-flushed to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut pos = 0;
        loop {
            out.reserve(input.len() - pos + 64);
            let in0 = self.z.total_in();
            if self
                .z
                .compress_vec(&input[pos..], out, FlushCompress::Sync)
                .is_err()
            {
                // Only a misuse of the stream fails; nothing is left to do with it.
                return;
            }
            pos += (self.z.total_in() - in0) as usize;
            if pos >= input.len() && out.len() < out.capacity() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflates_nsqds_captured_ok_and_round_trips() {
        let nsqd =
            b"\x62\x60\x60\x60\x63\x60\x60\x60\xf0\xf7\x06\x00\x00\x00\xff\xff\x00\x00\x00\xff\xff";
        let mut out = Vec::new();
        let used = DeflateDecoder::new()
            .decode(nsqd, &mut out, usize::MAX)
            .unwrap();
        assert_eq!(used, nsqd.len());
        assert_eq!(out, b"\0\0\0\x06\0\0\0\0OK");

        let mut enc = DeflateEncoder::new(6);
        let mut dec = DeflateDecoder::new();
        let mut wire = Vec::new();
        enc.encode(b"hello ", &mut wire);
        assert!(wire.ends_with(b"\x00\x00\xff\xff"), "sync-flushed");
        enc.encode(&[b'x'; 100_000], &mut wire);
        let mut out = Vec::new();
        let mut pos = 0;
        for end in 1..=wire.len() {
            pos += dec.decode(&wire[pos..end], &mut out, usize::MAX).unwrap();
        }
        assert_eq!(out.len(), 100_006);
        assert!(out.starts_with(b"hello x"));
    }

    #[test]
    fn every_level_flushes_a_whole_frame() {
        for level in 1..=9 {
            let mut wire = Vec::new();
            DeflateEncoder::new(level).encode(b"\0\0\0\x06\0\0\0\0OK", &mut wire);
            let mut out = Vec::new();
            DeflateDecoder::new()
                .decode(&wire, &mut out, usize::MAX)
                .unwrap();
            assert_eq!(out, b"\0\0\0\x06\0\0\0\0OK", "level {level}: {wire:02x?}");
        }
    }

    #[test]
    fn a_bomb_inflates_only_up_to_the_limit() {
        let mut wire = Vec::new();
        let mut enc = DeflateEncoder::new(9);
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.encode(&zeros, &mut wire); // 64 MiB of zeros
        }
        assert!(wire.len() < 1 << 20);
        let mut out = Vec::new();
        let mut dec = DeflateDecoder::new();
        let used = dec.decode(&wire, &mut out, 100_000).unwrap();
        assert!(out.len() >= 100_000 && out.len() < 100_000 + STEP);
        assert!(used < wire.len(), "the rest waits for room");
        assert!(DeflateDecoder::new()
            .decode(b"\xff\xff\xff\xff", &mut Vec::new(), 10)
            .is_err());
    }
}
