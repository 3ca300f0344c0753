//! An incremental decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 §7.1):
//! `size[;ext] CRLF data CRLF ... 0 CRLF *(trailer CRLF) CRLF`.
//!
//! [`ChunkDecoder::feed`] takes encoded bytes as they arrive, appends the chunk data to the
//! body and says how many input bytes it used; the caller drops those from its buffer. The
//! decoder keeps its place between calls (inside a size line, a chunk's data, the trailers),
//! so each byte is looked at once and a read costs time in proportion to its new bytes, however
//! the body is cut into chunks or reads. (Re-walking the whole buffer on every read made a body
//! of one-byte chunks quadratic and wedged the loop: hostile-inputs §4.)
//!
//! Limits, each checked before anything waits or grows:
//! - the decoded body: a chunk whose declared size would pass the route's limit fails on its
//!   size line, before its data is waited for;
//! - the encoded body ([`max_encoded_body`]): framing bytes count too, so chunk overhead cannot
//!   make a legal body cost unbounded bytes and time;
//! - a size line or trailer line: [`MAX_CHUNK_LINE`] bytes; all trailers: [`MAX_TRAILER_BYTES`].
//!
//! Framing follows Go's `net/http/internal/chunked.go` (what nsqd runs behind): at most 16 hex
//! digits, extensions accepted and ignored, lines end in CRLF (a bare LF is an error), trailers
//! are read and discarded. Spaces and tabs around the hex digits are tolerated.

/// The longest size or trailer line accepted, like Go's `maxLineLength`.
pub const MAX_CHUNK_LINE: usize = 4096;

/// The most trailer bytes accepted after the last chunk (the same as a request head).
pub const MAX_TRAILER_BYTES: usize = super::parse::DEFAULT_MAX_HEAD_BYTES;

/// Encoded bytes allowed per decoded byte: one-byte chunks (`1\r\nA\r\n`), the densest framing
/// Go's server accepts as legitimate streaming, cost six.
pub const ENCODED_PER_BODY_BYTE: u64 = 6;

/// The most encoded bytes a chunked body whose decoded limit is `limit` may use: six per body
/// byte plus room for a last size line and the trailers.
pub fn max_encoded_body(limit: u64) -> u64 {
    limit
        .saturating_mul(ENCODED_PER_BODY_BYTE)
        .saturating_add((MAX_CHUNK_LINE + MAX_TRAILER_BYTES) as u64)
}

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Bad framing: Go's server answers 400.
    Malformed,
    /// The decoded body would pass its limit, or the encoding its cap.
    TooBig,
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Before a size's first hex digit (spaces and tabs allowed).
    SizeStart,
    /// In the hex digits.
    SizeHex,
    /// After the digits: spaces and tabs until `;` or CR.
    SizeEnd,
    /// In a `;extension`, until CR.
    Ext,
    /// Saw the CR of a size line; LF must follow.
    SizeLf,
    /// `remaining` data bytes of the current chunk are still to come.
    Data,
    /// After a chunk's data: CR.
    DataCr,
    /// After a chunk's data and CR: LF.
    DataLf,
    /// At the start of a trailer line, or of the empty line that ends the body.
    TrailerStart,
    /// In a trailer line.
    Trailer,
    /// Saw the CR of a trailer line.
    TrailerLf,
    /// Saw the CR of the final empty line.
    EndLf,
    /// The body is complete; later bytes belong to the next request.
    Done,
}

/// The decoding state of one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkDecoder {
    state: State,
    /// The size being read (valid in the size states).
    size: u64,
    /// Hex digits read of `size`: Go refuses a 17th.
    digits: u32,
    /// Data bytes still due in the current chunk.
    remaining: u64,
    /// Bytes of the current size or trailer line, for [`MAX_CHUNK_LINE`].
    line_len: usize,
    /// Whether the current trailer line has its `:` (a trailer must look like a header).
    colon: bool,
    /// Bytes of all trailer lines, for [`MAX_TRAILER_BYTES`].
    trailer_bytes: usize,
    /// Body bytes declared so far (data arrived or announced by a size line).
    decoded: u64,
    /// Encoded bytes used so far.
    encoded: u64,
    /// The route's body limit.
    limit: u64,
    /// The encoded cap.
    max_encoded: u64,
}

impl ChunkDecoder {
    /// A decoder for a body of at most `limit` bytes, encoded in at most
    /// [`max_encoded_body`]`(limit)` bytes.
    pub fn new(limit: u64) -> Self {
        ChunkDecoder {
            state: State::SizeStart,
            size: 0,
            digits: 0,
            remaining: 0,
            line_len: 0,
            colon: false,
            trailer_bytes: 0,
            decoded: 0,
            encoded: 0,
            limit,
            max_encoded: max_encoded_body(limit),
        }
    }

    /// Whether the whole body (trailers included) has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Encoded bytes used so far.
    pub fn encoded(&self) -> u64 {
        self.encoded
    }

    /// Decodes what it can of `input`, appending chunk data to `body`. Returns the bytes used:
    /// all of `input` unless the body ended inside it (the rest is the next request's).
    ///
    /// # Errors
    /// [`ChunkError`]; the decoder must not be fed again after one.
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        // Never look at more than the encoded cap allows: one byte past it is already too many.
        let room =
            usize::try_from(self.max_encoded.saturating_sub(self.encoded)).unwrap_or(usize::MAX);
        let capped = input.get(..room).unwrap_or(input);
        let used = self.run(capped, body)?;
        self.encoded = self.encoded.saturating_add(used as u64);
        if !self.is_done() && input.len() > capped.len() {
            return Err(ChunkError::TooBig);
        }
        Ok(used)
    }

    fn run(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, ChunkError> {
        let mut i = 0;
        while let Some(rest) = input.get(i..).filter(|r| !r.is_empty()) {
            match self.state {
                State::Done => break,
                State::Data => {
                    // Copy as much of the chunk as is here in one go.
                    let n = usize::try_from(self.remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    body.extend_from_slice(rest.get(..n).unwrap_or_default());
                    self.remaining -= n as u64;
                    if self.remaining == 0 {
                        self.state = State::DataCr;
                    }
                    i += n;
                }
                // Fast paths for the common framing when all of it is here: a plain size line
                // (`1a\r\n`) and the CRLF after data. Anything else (a line cut by the read,
                // whitespace, an extension, an error) goes byte by byte below.
                State::DataCr if rest.starts_with(b"\r\n") => {
                    self.state = State::SizeStart;
                    self.line_len = 0;
                    i += 2;
                }
                state => {
                    let plain = (state == State::SizeStart && self.line_len == 0)
                        .then(|| plain_size_line(rest))
                        .flatten();
                    if let Some((size, used)) = plain {
                        self.size = size;
                        self.end_size_line()?;
                        i += used;
                    } else {
                        // cannot fail because: `rest` is not empty.
                        let b = rest.first().copied().unwrap_or_default();
                        self.step(b)?;
                        i += 1;
                    }
                }
            }
        }
        Ok(i)
    }

    /// One framing byte.
    fn step(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        let bad = Err(ChunkError::Malformed);
        // Counted first: the resets at a line's LF then start the next line at 0.
        self.line_len += 1;
        if self.line_len > MAX_CHUNK_LINE {
            return bad;
        }
        let hex = hex_value(b);
        match (self.state, hex) {
            (SizeStart | SizeHex, Some(v)) => {
                if self.digits == 16 {
                    return bad;
                }
                self.size = self.size << 4 | u64::from(v);
                self.digits += 1;
                self.state = SizeHex;
            }
            _ => self.frame_byte(b)?,
        }
        Ok(())
    }

    /// A framing byte other than a hex digit of a size.
    fn frame_byte(&mut self, b: u8) -> Result<(), ChunkError> {
        use State::*;
        let bad = Err(ChunkError::Malformed);
        match (self.state, b) {
            (SizeStart | SizeEnd, b' ' | b'\t') => {}
            (SizeHex, b' ' | b'\t') => self.state = SizeEnd,
            (SizeHex | SizeEnd, b';') => self.state = Ext,
            (SizeHex | SizeEnd | Ext, b'\r') => self.state = SizeLf,
            (Ext, b) if b != b'\n' => {}
            (SizeLf, b'\n') => return self.end_size_line(),
            (DataCr, b'\r') => self.state = DataLf,
            (DataLf, b'\n') => {
                self.state = SizeStart;
                self.line_len = 0;
            }
            (TrailerStart, b'\r') => self.state = EndLf,
            (TrailerStart | Trailer, b) if b != b'\r' && b != b'\n' => {
                self.colon |= b == b':';
                self.state = Trailer;
                self.trailer_bytes += 1;
                if self.trailer_bytes > MAX_TRAILER_BYTES {
                    return bad;
                }
            }
            (Trailer, b'\r') if self.colon => self.state = TrailerLf,
            (TrailerLf, b'\n') => {
                self.state = TrailerStart;
                self.colon = false;
                self.line_len = 0;
            }
            (EndLf, b'\n') => self.state = Done,
            _ => return bad,
        }
        Ok(())
    }

    /// A size line is complete: the last chunk starts the trailers, any other its data.
    fn end_size_line(&mut self) -> Result<(), ChunkError> {
        let size = std::mem::take(&mut self.size);
        self.digits = 0;
        self.line_len = 0;
        if size == 0 {
            self.state = State::TrailerStart;
            return Ok(());
        }
        let total = self.decoded.checked_add(size).ok_or(ChunkError::TooBig)?;
        if total > self.limit {
            return Err(ChunkError::TooBig);
        }
        self.decoded = total;
        self.remaining = size;
        self.state = State::Data;
        Ok(())
    }
}

/// A complete size line of 1 to 16 hex digits and CRLF at the start of `input`: the size and
/// the line's length. `None` for anything else, which the byte-wise path then handles.
fn plain_size_line(input: &[u8]) -> Option<(u64, usize)> {
    let mut size = 0u64;
    for (i, &b) in input.iter().enumerate().take(17) {
        match hex_value(b) {
            Some(v) => size = size << 4 | u64::from(v),
            None if i > 0 && b == b'\r' => {
                return (input.get(i + 1) == Some(&b'\n')).then_some((size, i + 2));
            }
            None => return None,
        }
    }
    None
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in the given pieces; the body, bytes used, and whether it finished.
    fn decode_pieces(limit: u64, pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ChunkError> {
        let mut d = ChunkDecoder::new(limit);
        let mut body = Vec::new();
        let mut used = 0;
        for p in pieces {
            used += d.feed(p, &mut body)?;
            if d.is_done() {
                break;
            }
        }
        Ok((body, used, d.is_done()))
    }

    const BODY: &[u8] =
        b"5;ext=1\r\nhello\r\n 1 \r\n\n\r\n3;a=b;c\r\nabc\r\n0\r\nTrailer-A: x\r\nB:y\r\n\r\nNEXT";

    #[test]
    fn whole_body_with_extensions_and_trailers() {
        let (body, used, done) = decode_pieces(100, &[BODY]).unwrap();
        assert!(done);
        assert_eq!(body, b"hello\nabc");
        assert_eq!(used, BODY.len() - 4, "NEXT belongs to the next request");
    }

    #[test]
    fn every_split_point_and_byte_by_byte_agree_with_whole() {
        let whole = decode_pieces(100, &[BODY]).unwrap();
        for i in 0..=BODY.len() {
            let (a, b) = BODY.split_at(i);
            assert_eq!(decode_pieces(100, &[a, b]).unwrap(), whole, "split at {i}");
        }
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(decode_pieces(100, &bytes).unwrap(), whole);
        // Every proper prefix is incomplete, never an error.
        for i in 0..BODY.len() - 4 {
            let (_, _, done) = decode_pieces(100, &[&BODY[..i]]).unwrap();
            assert!(!done, "prefix {i}");
        }
    }

    #[test]
    fn bad_framing_is_malformed() {
        for bad in [
            &b"z\r\nx\r\n0\r\n\r\n"[..],
            b"\r\nx\r\n0\r\n\r\n",         // empty size
            b"-1\r\nx\r\n0\r\n\r\n",       // negative
            b"+1\r\nx\r\n0\r\n\r\n",       // sign
            b"0x1\r\nx\r\n0\r\n\r\n",      // prefix
            b"1 1\r\nx\r\n0\r\n\r\n",      // space inside the digits
            b"1\nx\r\n0\r\n\r\n",          // bare LF after the size
            b"1\r\rx\r\n0\r\n\r\n",        // CR not followed by LF
            b"1;a\nb\r\nx\r\n0\r\n\r\n",   // bare LF inside an extension
            b"1\r\nxy\r\n0\r\n\r\n",       // data longer than declared
            b"1\r\nx\n0\r\n\r\n",          // missing CR after data
            b"1\r\nx0\r\n\r\n",            // missing CRLF after data
            b"11111111111111111\r\n",      // 17 hex digits: overflow
            b"0\r\nnot a trailer\r\n\r\n", // trailer without ':'
            b"0\r\nA: b\n\r\n",            // bare LF after a trailer
            b"0\r\n\n",                    // bare LF as the final line
        ] {
            assert_eq!(
                decode_pieces(1 << 20, &[bad]),
                Err(ChunkError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long_line = format!("1;{}", "e".repeat(MAX_CHUNK_LINE));
        assert_eq!(
            decode_pieces(1 << 20, &[long_line.as_bytes()]),
            Err(ChunkError::Malformed)
        );
        let many_trailers = format!("0\r\n{}", "A: b\r\n".repeat(MAX_TRAILER_BYTES / 4 + 1));
        assert_eq!(
            decode_pieces(1 << 20, &[many_trailers.as_bytes()]),
            Err(ChunkError::Malformed)
        );
    }

    #[test]
    fn sixteen_hex_digits_are_a_size_not_an_overflow() {
        // The largest size Go accepts is parsed, then refused by the limit, before any data.
        assert_eq!(
            decode_pieces(1 << 20, &[b"ffffffffffffffff\r\n"]),
            Err(ChunkError::TooBig)
        );
        assert_eq!(
            decode_pieces(16, &[b"0000000000000010\r\n"]).map(|r| r.2),
            Ok(false)
        );
    }

    #[test]
    fn decoded_limit_is_checked_on_the_size_line() {
        assert_eq!(decode_pieces(16, &[b"11\r\n"]), Err(ChunkError::TooBig));
        assert_eq!(
            decode_pieces(16, &[b"8\r\n01234567\r\n9\r\n"]),
            Err(ChunkError::TooBig)
        );
        let exact = decode_pieces(16, &[b"10\r\n0123456789abcdef\r\n0\r\n\r\n"]).unwrap();
        assert_eq!(exact.0.len(), 16);
    }

    /// `n` one-byte chunks and the last chunk: the body that once wedged the loop, scaled.
    fn one_byte_chunks(n: usize) -> Vec<u8> {
        let mut v = b"1\r\nA\r\n".repeat(n);
        v.extend_from_slice(b"0\r\n\r\n");
        v
    }

    #[test]
    fn encoded_size_is_capped_but_one_byte_chunks_up_to_the_limit_pass() {
        // A body at the limit in one-byte chunks is legal (Go accepts it): six bytes per byte.
        let limit = 1000;
        let ok = one_byte_chunks(1000);
        let (body, used, done) = decode_pieces(limit, &[&ok]).unwrap();
        assert!(done && body.len() == 1000 && used == ok.len());
        // Padding every chunk with an extension stays under the decoded limit but passes the
        // encoded cap: refused as too big once the cap is crossed, not after the whole body.
        let padded =
            b"1;pad=xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\nA\r\n".repeat(1000);
        let mut d = ChunkDecoder::new(limit);
        let mut body = Vec::new();
        let mut err = None;
        for piece in padded.chunks(100) {
            if let Err(e) = d.feed(piece, &mut body) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(ChunkError::TooBig));
        assert!(body.len() < 1000);
        assert!(d.encoded() <= max_encoded_body(limit));
        // One feed larger than the cap fails without looking past the cap.
        assert_eq!(decode_pieces(limit, &[&padded]), Err(ChunkError::TooBig));
    }

    #[test]
    fn a_feed_uses_all_its_bytes_until_the_end() {
        // The caller may drop every byte fed: nothing is left for a later call to re-read.
        let body = one_byte_chunks(50);
        let mut d = ChunkDecoder::new(100);
        let mut out = Vec::new();
        for piece in body.chunks(7) {
            let used = d.feed(piece, &mut out).unwrap();
            assert_eq!(used, piece.len());
        }
        assert!(d.is_done());
        assert_eq!(out, vec![b'A'; 50]);
    }
}
