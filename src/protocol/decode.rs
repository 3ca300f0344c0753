//! Client → server decoding: the magic, then one command (line + optional body) at a time.
//!
//! [`decode`] is pure: it takes the bytes received so far and returns `Ok(None)` when more are
//! needed, `Ok(Some((command, consumed)))`, or an error. It checks each command in exactly
//! nsqd v1.3.0's order (`nsqd/protocol_v2.go`), with nsqd's texts, and it does so as soon as
//! the bytes a check needs are present: a bad topic errors before its body arrives, and a body
//! size over the limit errors as soon as its 4 size bytes are there. Nothing is allocated from a
//! declared size; bodies are borrowed from the input.
//!
//! ```text
//! <NAME>[ <param>]*[\r]\n          split on every single space; a trailing \r is dropped
//! [size: i32 BE][size bytes]       PUB, DPUB, IDENTIFY, AUTH
//! [size: i32 BE][count: i32 BE]([len: i32 BE][len bytes]){count}     MPUB
//! ```
//!
//! With auth on ([`DecodeCtx::mpub_auth`]), MPUB stops after its line with
//! [`Command::MpubAuth`] (consuming nothing), because nsqd checks MPUB's permission before it
//! reads the body; once the broker has checked it, the same bytes decode to the full MPUB.
//!
//! Deviations from nsqd, all on inputs nsqd handles badly:
//! * MPUB: nsqd reads `4 + Σ(4 + len_i)` bytes whatever the declared body size says. We require
//!   the messages to fill the declared body exactly; any field that would cross its end, or
//!   bytes left over, gives `E_BAD_BODY MPUB invalid body size %d`. So we never read past the
//!   declared body, and never wait for bytes the client did not announce.
//! * Numbers that overflow u64 give the "could not parse" error (nsqd wraps silently). REQ
//!   clamps them to the maximum instead, since nsqd never refuses an all-digit REQ timeout.
//! * Non-UTF-8 bytes echoed with `%s` in an error (`RDY could not parse count %s`, unknown
//!   command names) are replaced with U+FFFD, since [`ProtoError::desc`] is a `String`.

use super::names::{is_valid_channel_name, is_valid_topic_name};
use super::quote::go_quote;
use super::{
    Command, ConnState, DecodeCtx, Limits, MessageId, ProtoError, E_BAD_BODY, E_BAD_CHANNEL,
    E_BAD_MESSAGE, E_BAD_PROTOCOL, E_BAD_TOPIC, E_INVALID, MAGIC_V2, MAX_LINE,
};

/// Why [`decode`] could not produce a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Send this error frame; close the connection if it is fatal (always, from the decoder).
    Proto(ProtoError),
    /// Close the connection without an error frame: a command line longer than [`MAX_LINE`],
    /// which nsqd's `ReadSlice` rejects with "buffer full".
    CloseSilently,
}

impl From<ProtoError> for DecodeError {
    fn from(e: ProtoError) -> Self {
        DecodeError::Proto(e)
    }
}

/// Result of decoding one command: `Ok(None)` means incomplete.
pub type DecodeResult<'a> = Result<Option<(Command<'a>, usize)>, DecodeError>;

/// Checks the 4-byte magic. `Ok(None)`: fewer than 4 bytes so far; `Ok(Some(4))`: consume 4.
///
/// # Errors
/// Any other 4 bytes: `E_BAD_PROTOCOL` (bare, fatal).
pub fn decode_magic(buf: &[u8]) -> Result<Option<usize>, ProtoError> {
    match buf.get(..MAGIC_V2.len()) {
        None => Ok(None),
        Some(m) if m == MAGIC_V2 => Ok(Some(MAGIC_V2.len())),
        Some(_) => Err(ProtoError::fatal(E_BAD_PROTOCOL, "")),
    }
}

/// Decodes one command from the front of `buf`.
///
/// # Errors
/// nsqd's error for the first failing check (every decoder error is fatal), or
/// [`DecodeError::CloseSilently`] for an over-long line.
pub fn decode<'a>(buf: &'a [u8], ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    if let Some(id) = plain_fin(buf) {
        require_state(ctx, &IN_FLIGHT_STATES, "FIN")?;
        return Ok(Some((Command::Fin { id }, PLAIN_FIN_LEN)));
    }
    decode_line(buf, ctx, limits)
}

/// [`decode`] without the plain-FIN shortcut: find the line, split it, dispatch on its name.
fn decode_line<'a>(buf: &'a [u8], ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    // nsqd's bufio buffer holds MAX_LINE bytes, so the '\n' must be among the first MAX_LINE.
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= MAX_LINE {
            Err(DecodeError::CloseSilently)
        } else {
            Ok(None)
        };
    };
    let (mut line, after) = buf.split_at(nl); // nl < buf.len(): found inside buf
    let rest = after.get(1..).unwrap_or(b""); // skip the '\n'
    if let Some(stripped) = line.strip_suffix(b"\r") {
        line = stripped;
    }
    let input = Input {
        params: Params::split(line),
        rest,
        head: nl + 1,
    };
    dispatch(&input, ctx, limits)
}

/// `FIN <16-byte id>\n`: the length of the command a consumer sends most.
const PLAIN_FIN_LEN: usize = 4 + std::mem::size_of::<MessageId>() + 1;

/// The id of a plain FIN at the front of `buf`: exactly `FIN `, 16 bytes above `' '` (so no
/// space, `'\r'` or `'\n'`), then `'\n'`. The general path decodes such a line to the same
/// `Command::Fin` (one `'\n'`, two params, a 16-byte id, nothing to strip); this skips its
/// line scan and split, which a fan-out consumer's FINs paid once per delivery. Anything else
/// (a partial FIN, an id with a control byte) is left to the general path.
fn plain_fin(buf: &[u8]) -> Option<MessageId> {
    let line = buf.get(..PLAIN_FIN_LEN)?;
    let (name, rest) = line.split_at(4);
    let (id, end) = rest.split_at(rest.len() - 1);
    // One minimum over the 16 bytes (vectorised) instead of three comparisons a byte.
    let plain = name == b"FIN " && end == b"\n" && id.iter().min().is_some_and(|&b| b > b' ');
    MessageId::try_from(id).ok().filter(|_| plain)
}

/// One command line split on spaces, plus the bytes after it.
struct Input<'a> {
    params: Params<'a>,
    /// Everything after the line's `'\n'`: where a body starts.
    rest: &'a [u8],
    /// Bytes of the line, `'\n'` included.
    head: usize,
}

impl<'a> Input<'a> {
    /// `Ok(Some((cmd, consumed)))` with `body_len` body bytes after the line.
    fn done(&self, cmd: Command<'a>, body_len: usize) -> DecodeResult<'a> {
        Ok(Some((cmd, self.head + body_len)))
    }
}

/// The first three space-separated params of a line and the total count, without allocating
/// (no command reads more than three; nsqd ignores extra ones except AUTH's count check).
struct Params<'a> {
    first: [&'a [u8]; 3],
    count: usize,
}

impl<'a> Params<'a> {
    fn split(line: &'a [u8]) -> Self {
        let mut first: [&[u8]; 3] = [b""; 3];
        let mut count = 0;
        for (i, p) in line.split(|&b| b == b' ').enumerate() {
            if let Some(slot) = first.get_mut(i) {
                *slot = p;
            }
            count += 1;
        }
        Params { first, count }
    }

    /// Param `i` (0 = the command name), empty if absent.
    fn get(&self, i: usize) -> &'a [u8] {
        self.first.get(i).copied().unwrap_or(b"")
    }
}

fn dispatch<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    match input.params.get(0) {
        b"IDENTIFY" => identify(input, ctx, limits),
        b"FIN" => fin(input, ctx),
        b"RDY" => rdy(input, ctx, limits),
        b"REQ" => req(input, ctx, limits),
        b"PUB" => publish(input, limits),
        b"MPUB" => mpub(input, ctx, limits),
        b"DPUB" => dpub(input, limits),
        b"NOP" => input.done(Command::Nop, 0),
        b"TOUCH" => touch(input, ctx),
        b"SUB" => sub(input, ctx),
        b"CLS" => cls(input, ctx),
        b"AUTH" => auth(input, ctx, limits),
        name => Err(invalid(format!(
            "invalid command {}",
            String::from_utf8_lossy(name)
        ))),
    }
}

fn invalid(desc: String) -> DecodeError {
    DecodeError::Proto(ProtoError::fatal(E_INVALID, desc))
}

fn fatal(code: &'static str, desc: String) -> DecodeError {
    DecodeError::Proto(ProtoError::fatal(code, desc))
}

fn require_state(ctx: &DecodeCtx, ok: &[ConnState], cmd: &str) -> Result<(), DecodeError> {
    if ok.contains(&ctx.state) {
        Ok(())
    } else {
        Err(invalid(format!("cannot {cmd} in current state")))
    }
}

/// Reads a 4-byte big-endian size as nsqd does (`int32(binary.BigEndian.Uint32(..))`), so a
/// size >= 2^31 comes out negative. `None` until the 4 bytes are there.
fn read_len(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes(b.try_into().ok()?))
}

/// A topic param as `&str`, or `E_BAD_TOPIC <prefix> topic name %q is not valid`.
fn topic_param<'a>(raw: &'a [u8], prefix: &str) -> Result<&'a str, DecodeError> {
    match std::str::from_utf8(raw) {
        Ok(t) if is_valid_topic_name(t) => Ok(t),
        _ => Err(fatal(
            E_BAD_TOPIC,
            format!("{prefix} topic name {} is not valid", go_quote(raw)),
        )),
    }
}

fn channel_param<'a>(raw: &'a [u8], cmd: &str) -> Result<&'a str, DecodeError> {
    match std::str::from_utf8(raw) {
        Ok(c) if is_valid_channel_name(c) => Ok(c),
        _ => Err(fatal(
            E_BAD_CHANNEL,
            format!("{cmd} channel name {} is not valid", go_quote(raw)),
        )),
    }
}

fn message_id(raw: &[u8]) -> Result<MessageId, DecodeError> {
    MessageId::try_from(raw).map_err(|_| invalid("invalid message ID".to_string()))
}

/// Why [`parse_base10`] failed.
enum Base10Error {
    /// A byte other than an ASCII digit.
    NotDigits,
    /// All digits, but more than u64 holds.
    Overflow,
}

/// nsqd's `protocol.ByteToBase10`: ASCII digits only (no sign, no `+`), empty = 0. Leading
/// zeros are fine. Unlike nsqd, overflow is reported instead of wrapping.
fn parse_base10(raw: &[u8]) -> Result<u64, Base10Error> {
    if !raw.iter().all(u8::is_ascii_digit) {
        return Err(Base10Error::NotDigits);
    }
    raw.iter().try_fold(0u64, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
            .ok_or(Base10Error::Overflow)
    })
}

fn lossy(raw: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(raw)
}

/// The body of a single-body command (`[i32 size][size bytes]`) once it is all there.
/// `check` validates the size as soon as its 4 bytes are present, before waiting for the rest.
fn sized_body(
    rest: &[u8],
    check: impl FnOnce(i32) -> Result<usize, DecodeError>,
) -> Result<Option<&[u8]>, DecodeError> {
    let Some(size) = read_len(rest, 0) else {
        return Ok(None);
    };
    let size = check(size)?;
    Ok(size.checked_add(4).and_then(|end| rest.get(4..end)))
}

/// nsqd's PUB/DPUB size checks: `<= 0` first, then `> max-msg-size`.
fn check_msg_size(size: i32, cmd: &str, max: u32) -> Result<usize, DecodeError> {
    if size <= 0 {
        return Err(fatal(
            E_BAD_MESSAGE,
            format!("{cmd} invalid message body size {size}"),
        ));
    }
    if i64::from(size) > i64::from(max) {
        return Err(fatal(
            E_BAD_MESSAGE,
            format!("{cmd} message too big {size} > {max}"),
        ));
    }
    usize::try_from(size).map_err(|_| fatal(E_BAD_MESSAGE, format!("{cmd} message too big")))
}

/// nsqd's IDENTIFY/AUTH size checks: `> max-body-size` first, then `<= 0`.
fn check_body_size(size: i32, cmd: &str, max: u32) -> Result<usize, DecodeError> {
    if i64::from(size) > i64::from(max) {
        return Err(fatal(
            E_BAD_BODY,
            format!("{cmd} body too big {size} > {max}"),
        ));
    }
    if size <= 0 {
        return Err(fatal(E_BAD_BODY, format!("{cmd} invalid body size {size}")));
    }
    usize::try_from(size).map_err(|_| fatal(E_BAD_BODY, format!("{cmd} body too big")))
}

fn identify<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    require_state(ctx, &[ConnState::Init], "IDENTIFY")?;
    let check = |s| check_body_size(s, "IDENTIFY", limits.max_body_size);
    match sized_body(input.rest, check)? {
        Some(body) => input.done(Command::Identify { body }, 4 + body.len()),
        None => Ok(None),
    }
}

fn auth<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    require_state(ctx, &[ConnState::Init], "AUTH")?;
    if input.params.count != 1 {
        return Err(invalid("AUTH invalid number of parameters".to_string()));
    }
    let check = |s| check_body_size(s, "AUTH", limits.max_body_size);
    match sized_body(input.rest, check)? {
        Some(secret) => input.done(Command::Auth { secret }, 4 + secret.len()),
        None => Ok(None),
    }
}

fn sub<'a>(input: &Input<'a>, ctx: &DecodeCtx) -> DecodeResult<'a> {
    require_state(ctx, &[ConnState::Init], "SUB")?;
    if ctx.heartbeats_disabled {
        return Err(invalid("cannot SUB with heartbeats disabled".to_string()));
    }
    if input.params.count < 3 {
        return Err(invalid("SUB insufficient number of parameters".to_string()));
    }
    let topic = topic_param(input.params.get(1), "SUB")?;
    let channel = channel_param(input.params.get(2), "SUB")?;
    input.done(Command::Sub { topic, channel }, 0)
}

fn publish<'a>(input: &Input<'a>, limits: &Limits) -> DecodeResult<'a> {
    if input.params.count < 2 {
        return Err(invalid("PUB insufficient number of parameters".to_string()));
    }
    let topic = topic_param(input.params.get(1), "PUB")?;
    let check = |s| check_msg_size(s, "PUB", limits.max_msg_size);
    match sized_body(input.rest, check)? {
        Some(body) => input.done(Command::Pub { topic, body }, 4 + body.len()),
        None => Ok(None),
    }
}

fn dpub<'a>(input: &Input<'a>, limits: &Limits) -> DecodeResult<'a> {
    if input.params.count < 3 {
        return Err(invalid(
            "DPUB insufficient number of parameters".to_string(),
        ));
    }
    let topic = topic_param(input.params.get(1), "DPUB")?;
    let raw = input.params.get(2);
    let defer_ms = parse_base10(raw)
        .map_err(|_| invalid(format!("DPUB could not parse timeout {}", lossy(raw))))?;
    let max = limits.max_req_timeout_ms;
    if defer_ms > max {
        return Err(invalid(format!(
            "DPUB timeout {defer_ms} out of range 0-{max}"
        )));
    }
    let check = |s| check_msg_size(s, "DPUB", limits.max_msg_size);
    match sized_body(input.rest, check)? {
        Some(body) => input.done(
            Command::Dpub {
                topic,
                defer_ms,
                body,
            },
            4 + body.len(),
        ),
        None => Ok(None),
    }
}

fn rdy<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    if ctx.state == ConnState::Closing {
        // nsqd: "ignoring RDY after CLS": no response, no error, no effect.
        return input.done(Command::Nop, 0);
    }
    require_state(ctx, &[ConnState::Subscribed], "RDY")?;
    let mut count = 1;
    if input.params.count > 1 {
        let raw = input.params.get(1);
        count = parse_base10(raw)
            .map_err(|_| invalid(format!("RDY could not parse count {}", lossy(raw))))?;
    }
    let max = limits.max_rdy_count;
    if count > max {
        // nsqd holds the count in an int64, so values >= 2^63 print negative.
        let shown = count as i64;
        return Err(invalid(format!("RDY count {shown} out of range 0-{max}")));
    }
    input.done(Command::Rdy { count }, 0)
}

const IN_FLIGHT_STATES: [ConnState; 2] = [ConnState::Subscribed, ConnState::Closing];

fn fin<'a>(input: &Input<'a>, ctx: &DecodeCtx) -> DecodeResult<'a> {
    require_state(ctx, &IN_FLIGHT_STATES, "FIN")?;
    if input.params.count < 2 {
        return Err(invalid("FIN insufficient number of params".to_string()));
    }
    let id = message_id(input.params.get(1))?;
    input.done(Command::Fin { id }, 0)
}

fn touch<'a>(input: &Input<'a>, ctx: &DecodeCtx) -> DecodeResult<'a> {
    require_state(ctx, &IN_FLIGHT_STATES, "TOUCH")?;
    if input.params.count < 2 {
        return Err(invalid("TOUCH insufficient number of params".to_string()));
    }
    let id = message_id(input.params.get(1))?;
    input.done(Command::Touch { id }, 0)
}

fn req<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    require_state(ctx, &IN_FLIGHT_STATES, "REQ")?;
    if input.params.count < 3 {
        return Err(invalid("REQ insufficient number of params".to_string()));
    }
    let id = message_id(input.params.get(1))?;
    let raw = input.params.get(2);
    let max = limits.max_req_timeout_ms;
    let requested = match parse_base10(raw) {
        Ok(ms) => ms,
        // All digits but huge: nsqd would clamp whatever it wrapped to; we clamp to the max.
        Err(Base10Error::Overflow) => u64::MAX,
        Err(Base10Error::NotDigits) => {
            return Err(invalid(format!(
                "REQ could not parse timeout {}",
                lossy(raw)
            )));
        }
    };
    let timeout_ms = requested.min(max);
    input.done(
        Command::Req {
            id,
            timeout_ms,
            clamped: requested > max,
        },
        0,
    )
}

fn cls<'a>(input: &Input<'a>, ctx: &DecodeCtx) -> DecodeResult<'a> {
    require_state(ctx, &[ConnState::Subscribed], "CLS")?;
    input.done(Command::Cls, 0)
}

fn mpub<'a>(input: &Input<'a>, ctx: &DecodeCtx, limits: &Limits) -> DecodeResult<'a> {
    if input.params.count < 2 {
        return Err(invalid(
            "MPUB insufficient number of parameters".to_string(),
        ));
    }
    let raw = input.params.get(1);
    let topic = topic_param(raw, "E_BAD_TOPIC MPUB")?; // sic: nsqd doubles the code
    if ctx.mpub_auth {
        // nsqd runs CheckAuth here, before reading the body; nothing is consumed yet.
        return Ok(Some((Command::MpubAuth { topic }, 0)));
    }
    let Some(size) = read_len(input.rest, 0) else {
        return Ok(None);
    };
    if size <= 0 {
        return Err(fatal(E_BAD_BODY, format!("MPUB invalid body size {size}")));
    }
    let max_body = limits.max_body_size;
    if i64::from(size) > i64::from(max_body) {
        return Err(fatal(
            E_BAD_BODY,
            format!("MPUB body too big {size} > {max_body}"),
        ));
    }
    let body_len = usize::try_from(size).map_err(|_| mismatch(size))?;
    let body = input.rest.get(4..).unwrap_or(b"");
    let Some(bodies) = mpub_body(body, body_len, size, limits)? else {
        return Ok(None);
    };
    input.done(Command::Mpub { topic, bodies }, 4 + body_len)
}

/// `E_BAD_BODY MPUB invalid body size %d`: the messages do not fill the declared body exactly
/// (our deviation from nsqd, see the module docs).
fn mismatch(size: i32) -> DecodeError {
    fatal(E_BAD_BODY, format!("MPUB invalid body size {size}"))
}

/// Validates an MPUB body (`[count][len][bytes]...`) of `body_len` declared bytes, of which
/// `avail` holds what has arrived. Each field is checked as soon as it is present.
fn mpub_body<'a>(
    avail: &'a [u8],
    body_len: usize,
    size: i32,
    limits: &Limits,
) -> Result<Option<MpubBodies<'a>>, DecodeError> {
    if body_len < 4 {
        return Err(mismatch(size));
    }
    let Some(count) = read_len(avail, 0) else {
        return Ok(None);
    };
    // nsqd: 4 bytes of count, then at least 4 + 1 bytes per message.
    let max_count = (i64::from(limits.max_body_size) - 4) / 5;
    if count <= 0 || i64::from(count) > max_count {
        return Err(fatal(
            E_BAD_BODY,
            format!("MPUB invalid message count {count}"),
        ));
    }
    let mut pos = 4usize;
    for i in 0..count {
        let len_end = pos
            .checked_add(4)
            .filter(|&e| e <= body_len)
            .ok_or_else(|| mismatch(size))?;
        let Some(msg_size) = read_len(avail, pos) else {
            return Ok(None);
        };
        let msg_len = check_mpub_msg_size(i, msg_size, limits.max_msg_size)?;
        pos = len_end
            .checked_add(msg_len)
            .filter(|&e| e <= body_len)
            .ok_or_else(|| mismatch(size))?;
    }
    if pos != body_len {
        return Err(mismatch(size));
    }
    match avail.get(4..body_len) {
        Some(data) => Ok(Some(MpubBodies {
            data,
            remaining: count.unsigned_abs() as usize,
        })),
        None => Ok(None),
    }
}

fn check_mpub_msg_size(i: i32, size: i32, max: u32) -> Result<usize, DecodeError> {
    if size <= 0 {
        let desc = format!("MPUB invalid message({i}) body size {size}");
        return Err(fatal(E_BAD_MESSAGE, desc));
    }
    if i64::from(size) > i64::from(max) {
        return Err(fatal(
            E_BAD_MESSAGE,
            format!("MPUB message too big {size} > {max}"),
        ));
    }
    usize::try_from(size).map_err(|_| fatal(E_BAD_MESSAGE, "MPUB message too big".to_string()))
}

/// The bodies of a validated MPUB, borrowed from the input: iterate to get each one.
///
/// # Invariants
/// `data` is exactly `remaining` records of `[i32 BE len > 0][len bytes]` (checked by the
/// decoder), so iteration never fails; it still stops safely if the invariant were broken.
#[derive(Clone, Debug)]
pub struct MpubBodies<'a> {
    data: &'a [u8],
    remaining: usize,
}

impl<'a> MpubBodies<'a> {
    /// Number of bodies left to iterate.
    pub fn len(&self) -> usize {
        self.remaining
    }

    /// True when no bodies are left (never the case for a freshly decoded MPUB).
    pub fn is_empty(&self) -> bool {
        self.remaining == 0
    }
}

impl<'a> Iterator for MpubBodies<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.remaining == 0 {
            return None;
        }
        let len = usize::try_from(read_len(self.data, 0)?).ok()?;
        let body = self.data.get(4..4 + len)?;
        self.data = self.data.get(4 + len..).unwrap_or(b"");
        self.remaining -= 1;
        Some(body)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for MpubBodies<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_fin_decodes_as_the_general_path_does() {
        let id = b"0123456789abcdef";
        let mut cases: Vec<Vec<u8>> = vec![
            [b"FIN ".as_slice(), id, b"\n"].concat(),
            [b"FIN ".as_slice(), id, b"\nNOP\n"].concat(),
            [b"FIN ".as_slice(), id, b"\r\n"].concat(),
            [b"FIN ".as_slice(), &id[..15], b"\r\n"].concat(),
            [b"FIN ".as_slice(), &id[..15], b"\n"].concat(),
            [b"FIN ".as_slice(), id, b"x\n"].concat(),
            [b"FIN ".as_slice(), id, b" x\n"].concat(),
            [b"FIN  ".as_slice(), &id[..15], b"\n"].concat(),
            [b"FIN ".as_slice(), b"01234567 9abcdef", b"\n"].concat(),
            [b"FIN ".as_slice(), b"0123456\n89abcdef", b"\n"].concat(),
            [b"FIN ".as_slice(), b"0123456\r89abcdef", b"\n"].concat(),
            [b"FIN ".as_slice(), b"0123456\t89abcdef", b"\n"].concat(),
            [b"FIN ".as_slice(), b"0123456\x0089abcdef", b"\n"].concat(),
            [b"fin ".as_slice(), id, b"\n"].concat(),
            [b"FIN\t".as_slice(), id, b"\n"].concat(),
            [b"FIN ".as_slice(), &[0xff; 16], b"\n"].concat(),
        ];
        let whole = cases[0].clone();
        cases.extend((0..whole.len()).map(|cut| whole[..cut].to_vec()));
        for state in [ConnState::Init, ConnState::Subscribed, ConnState::Closing] {
            let ctx = DecodeCtx { state, ..INIT };
            for case in &cases {
                // Command has no PartialEq (it borrows bodies); its Debug form shows every field.
                assert_eq!(
                    format!("{:?}", decode(case, &ctx, &Limits::default())),
                    format!("{:?}", decode_line(case, &ctx, &Limits::default())),
                    "{:?} in {state:?}",
                    String::from_utf8_lossy(case)
                );
            }
        }
    }

    const INIT: DecodeCtx = DecodeCtx {
        state: ConnState::Init,
        heartbeats_disabled: false,
        mpub_auth: false,
    };
    const SUBD: DecodeCtx = DecodeCtx {
        state: ConnState::Subscribed,
        heartbeats_disabled: false,
        mpub_auth: false,
    };
    const CLOSING: DecodeCtx = DecodeCtx {
        state: ConnState::Closing,
        heartbeats_disabled: false,
        mpub_auth: false,
    };
    const NO_HB: DecodeCtx = DecodeCtx {
        state: ConnState::Init,
        heartbeats_disabled: true,
        mpub_auth: false,
    };

    fn be(n: u32) -> [u8; 4] {
        n.to_be_bytes()
    }

    /// `line` + optional `[size][body]`.
    fn with_body(line: &[u8], body: &[u8]) -> Vec<u8> {
        let mut v = line.to_vec();
        v.extend_from_slice(&be(body.len() as u32));
        v.extend_from_slice(body);
        v
    }

    fn mpub_body(msgs: &[&[u8]]) -> Vec<u8> {
        let mut b = be(msgs.len() as u32).to_vec();
        for m in msgs {
            b.extend_from_slice(&be(m.len() as u32));
            b.extend_from_slice(m);
        }
        b
    }

    fn err_of(buf: &[u8], ctx: &DecodeCtx) -> String {
        match decode(buf, ctx, &Limits::default()) {
            Err(DecodeError::Proto(e)) => {
                assert!(e.fatal, "decoder errors are fatal: {e:?}");
                e.frame_data()
            }
            other => panic!("expected an error for {buf:?}, got {other:?}"),
        }
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    /// Hostile inputs (hostile-inputs.md §2 items 1–3, 5–10; reference §1.7): exact frame data.
    #[test]
    fn hostile_input_table() {
        let big = 2_097_152u32;
        let mpub = |size: u32, rest: &[u8]| cat(&[b"MPUB t\n", &be(size), rest]);
        let long_topic = format!("PUB {}\n", "a".repeat(65));
        let rows: Vec<(DecodeCtx, Vec<u8>, &str)> = vec![
            // 6. empty line, unknown verbs, case, corrupt bytes
            (INIT, b"\n".to_vec(), "E_INVALID invalid command "),
            (INIT, b"\r\n".to_vec(), "E_INVALID invalid command "),
            (INIT, b"sub t c\n".to_vec(), "E_INVALID invalid command sub"),
            (INIT, b"GET / HTTP/1.1\r\n".to_vec(), "E_INVALID invalid command GET"),
            (INIT, b" PUB t\n".to_vec(), "E_INVALID invalid command "),
            (INIT, b"\xff\xfe\n".to_vec(), "E_INVALID invalid command \u{fffd}\u{fffd}"),
            // 11. names
            (INIT, b"PUB  t1\n".to_vec(), "E_BAD_TOPIC PUB topic name \"\" is not valid"),
            (INIT, b"PUB bad!\n".to_vec(), "E_BAD_TOPIC PUB topic name \"bad!\" is not valid"),
            (INIT, long_topic.into_bytes(), "E_BAD_TOPIC PUB topic name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" is not valid"),
            (INIT, b"PUB a\"\\\x01\x7f\xff\t\n".to_vec(), "E_BAD_TOPIC PUB topic name \"a\\\"\\\\\\x01\\x7f\\xff\\t\" is not valid"),
            (INIT, b"PUB #ephemeral\n".to_vec(), "E_BAD_TOPIC PUB topic name \"#ephemeral\" is not valid"),
            (INIT, b"PUB\n".to_vec(), "E_INVALID PUB insufficient number of parameters"),
            (INIT, b"SUB t\n".to_vec(), "E_INVALID SUB insufficient number of parameters"),
            (INIT, b"SUB t! c\n".to_vec(), "E_BAD_TOPIC SUB topic name \"t!\" is not valid"),
            (INIT, b"SUB t c!\n".to_vec(), "E_BAD_CHANNEL SUB channel name \"c!\" is not valid"),
            (INIT, b"SUB t \xe9\n".to_vec(), "E_BAD_CHANNEL SUB channel name \"\\xe9\" is not valid"),
            (INIT, "SUB t \u{e9}\u{a0}\n".as_bytes().to_vec(), "E_BAD_CHANNEL SUB channel name \"\u{e9}\\u00a0\" is not valid"),
            (NO_HB, b"SUB t c\n".to_vec(), "E_INVALID cannot SUB with heartbeats disabled"),
            (NO_HB, b"SUB\n".to_vec(), "E_INVALID cannot SUB with heartbeats disabled"),
            // 1, 2. body sizes: zero, over the limit, >= 2^31 (negative as int32)
            (INIT, cat(&[b"PUB t\n", &be(0)]), "E_BAD_MESSAGE PUB invalid message body size 0"),
            (INIT, cat(&[b"PUB t\n", &be(big)]), "E_BAD_MESSAGE PUB message too big 2097152 > 1048576"),
            (INIT, cat(&[b"PUB t\n", &be(0x8000_0000)]), "E_BAD_MESSAGE PUB invalid message body size -2147483648"),
            (INIT, cat(&[b"PUB t\n", &be(u32::MAX)]), "E_BAD_MESSAGE PUB invalid message body size -1"),
            (INIT, cat(&[b"DPUB t 0\n", &be(0)]), "E_BAD_MESSAGE DPUB invalid message body size 0"),
            (INIT, cat(&[b"DPUB t 0\n", &be(big)]), "E_BAD_MESSAGE DPUB message too big 2097152 > 1048576"),
            (INIT, cat(&[b"IDENTIFY\n", &be(6_291_456)]), "E_BAD_BODY IDENTIFY body too big 6291456 > 5242880"),
            (INIT, cat(&[b"IDENTIFY\n", &be(0)]), "E_BAD_BODY IDENTIFY invalid body size 0"),
            (INIT, cat(&[b"IDENTIFY\n", &be(0xffff_fffe)]), "E_BAD_BODY IDENTIFY invalid body size -2"),
            (INIT, cat(&[b"AUTH\n", &be(6_291_456)]), "E_BAD_BODY AUTH body too big 6291456 > 5242880"),
            (INIT, cat(&[b"AUTH\n", &be(0)]), "E_BAD_BODY AUTH invalid body size 0"),
            (INIT, b"AUTH x\n".to_vec(), "E_INVALID AUTH invalid number of parameters"),
            // 3. MPUB: topic, sizes, counts, inconsistency
            (INIT, b"MPUB\n".to_vec(), "E_INVALID MPUB insufficient number of parameters"),
            (INIT, b"MPUB bad!\n".to_vec(), "E_BAD_TOPIC E_BAD_TOPIC MPUB topic name \"bad!\" is not valid"),
            (INIT, mpub(0, b""), "E_BAD_BODY MPUB invalid body size 0"),
            (INIT, mpub(0x8000_0000, b""), "E_BAD_BODY MPUB invalid body size -2147483648"),
            (INIT, mpub(5_242_881, b""), "E_BAD_BODY MPUB body too big 5242881 > 5242880"),
            (INIT, mpub(8, &be(0)), "E_BAD_BODY MPUB invalid message count 0"),
            (INIT, mpub(8, &be(u32::MAX)), "E_BAD_BODY MPUB invalid message count -1"),
            (INIT, mpub(8, &be(1_048_576)), "E_BAD_BODY MPUB invalid message count 1048576"),
            (INIT, mpub(12, &cat(&[&be(2), &be(0)])), "E_BAD_MESSAGE MPUB invalid message(0) body size 0"),
            (INIT, mpub(20, &cat(&[&be(2), &be(1), b"a", &be(0xffff_ffff)])), "E_BAD_MESSAGE MPUB invalid message(1) body size -1"),
            (INIT, mpub(12, &cat(&[&be(1), &be(big)])), "E_BAD_MESSAGE MPUB message too big 2097152 > 1048576"),
            (INIT, mpub(2, b""), "E_BAD_BODY MPUB invalid body size 2"),
            (INIT, mpub(8, &cat(&[&be(1), &be(1)])), "E_BAD_BODY MPUB invalid body size 8"),
            (INIT, mpub(10, &cat(&[&be(2), &be(1), b"a"])), "E_BAD_BODY MPUB invalid body size 10"),
            (INIT, mpub(12, &cat(&[&be(1), &be(1), b"a"])), "E_BAD_BODY MPUB invalid body size 12"),
            (INIT, mpub(9, &cat(&[&be(1), &be(5)])), "E_BAD_BODY MPUB invalid body size 9"),
            // 8. wrong state
            (SUBD, b"IDENTIFY\n".to_vec(), "E_INVALID cannot IDENTIFY in current state"),
            (SUBD, b"SUB t c\n".to_vec(), "E_INVALID cannot SUB in current state"),
            (CLOSING, b"SUB t c\n".to_vec(), "E_INVALID cannot SUB in current state"),
            (SUBD, b"AUTH\n".to_vec(), "E_INVALID cannot AUTH in current state"),
            (INIT, b"RDY 1\n".to_vec(), "E_INVALID cannot RDY in current state"),
            (INIT, b"FIN 0000000000000000\n".to_vec(), "E_INVALID cannot FIN in current state"),
            (INIT, b"REQ 0000000000000000 0\n".to_vec(), "E_INVALID cannot REQ in current state"),
            (INIT, b"TOUCH 0000000000000000\n".to_vec(), "E_INVALID cannot TOUCH in current state"),
            (INIT, b"CLS\n".to_vec(), "E_INVALID cannot CLS in current state"),
            (CLOSING, b"CLS\n".to_vec(), "E_INVALID cannot CLS in current state"),
            // 9. numbers
            (SUBD, b"RDY -1\n".to_vec(), "E_INVALID RDY could not parse count -1"),
            (SUBD, b"RDY +1\n".to_vec(), "E_INVALID RDY could not parse count +1"),
            (SUBD, b"RDY x\n".to_vec(), "E_INVALID RDY could not parse count x"),
            (SUBD, b"RDY 99999999999999999999\n".to_vec(), "E_INVALID RDY could not parse count 99999999999999999999"),
            (SUBD, b"RDY 2501\n".to_vec(), "E_INVALID RDY count 2501 out of range 0-2500"),
            (SUBD, b"RDY 18446744073709551615\n".to_vec(), "E_INVALID RDY count -1 out of range 0-2500"),
            (INIT, b"DPUB t\n".to_vec(), "E_INVALID DPUB insufficient number of parameters"),
            (INIT, b"DPUB t! 5\n".to_vec(), "E_BAD_TOPIC DPUB topic name \"t!\" is not valid"),
            (INIT, b"DPUB t x\n".to_vec(), "E_INVALID DPUB could not parse timeout x"),
            (INIT, b"DPUB t -5\n".to_vec(), "E_INVALID DPUB could not parse timeout -5"),
            (INIT, b"DPUB t 3600001\n".to_vec(), "E_INVALID DPUB timeout 3600001 out of range 0-3600000"),
            (SUBD, b"REQ 0000000000000000 -1\n".to_vec(), "E_INVALID REQ could not parse timeout -1"),
            (SUBD, b"REQ 0000000000000000\n".to_vec(), "E_INVALID REQ insufficient number of params"),
            // 10. message IDs
            (SUBD, b"FIN\n".to_vec(), "E_INVALID FIN insufficient number of params"),
            (SUBD, b"FIN 123\n".to_vec(), "E_INVALID invalid message ID"),
            (SUBD, b"FIN 00000000000000000\n".to_vec(), "E_INVALID invalid message ID"),
            (SUBD, b"FIN \n".to_vec(), "E_INVALID invalid message ID"),
            (SUBD, b"REQ 123 0\n".to_vec(), "E_INVALID invalid message ID"),
            (SUBD, b"REQ 123 x\n".to_vec(), "E_INVALID invalid message ID"),
            (SUBD, b"TOUCH\n".to_vec(), "E_INVALID TOUCH insufficient number of params"),
            (SUBD, b"TOUCH 1\n".to_vec(), "E_INVALID invalid message ID"),
        ];
        for (ctx, input, want) in &rows {
            assert_eq!(
                err_of(input, ctx),
                *want,
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn magic() {
        assert_eq!(decode_magic(b""), Ok(None));
        assert_eq!(decode_magic(b"  V"), Ok(None));
        assert_eq!(decode_magic(b"  V2PUB"), Ok(Some(4)));
        for bad in [&b"  V1"[..], b"GET / HTTP/1.1", b"\x16\x03\x01\x02\x00"] {
            let e = decode_magic(bad).unwrap_err();
            assert_eq!(e.frame_data(), "E_BAD_PROTOCOL");
            assert!(e.fatal);
        }
    }

    #[test]
    fn long_line_closes_silently() {
        let lim = Limits::default();
        let mut line = vec![b'a'; MAX_LINE];
        assert!(matches!(
            decode(&line, &INIT, &lim),
            Err(DecodeError::CloseSilently)
        ));
        line.truncate(MAX_LINE - 1);
        assert!(matches!(decode(&line, &INIT, &lim), Ok(None)));
        line.push(b'\n'); // exactly MAX_LINE bytes with the '\n': nsqd reads it
        assert!(matches!(
            decode(&line, &INIT, &lim),
            Err(DecodeError::Proto(_))
        ));
        let mut nop = b"NOP".to_vec();
        nop.resize(MAX_LINE - 1, b' ');
        nop.push(b'\n');
        assert!(matches!(
            decode(&nop, &INIT, &lim),
            Ok(Some((Command::Nop, MAX_LINE)))
        ));
        nop.insert(0, b' ');
        assert!(matches!(
            decode(&nop, &INIT, &lim),
            Err(DecodeError::CloseSilently)
        ));
    }

    #[test]
    fn size_errors_before_body_arrives() {
        let lim = Limits::default();
        // Only the line and the 4 size bytes: no waiting for 2 MiB.
        let buf = cat(&[b"PUB t\n", &be(2_097_152)]);
        assert!(matches!(
            decode(&buf, &INIT, &lim),
            Err(DecodeError::Proto(_))
        ));
        let buf = cat(&[b"MPUB t\n", &be(100), &be(1), &be(2_000_000)]);
        assert!(matches!(
            decode(&buf, &INIT, &lim),
            Err(DecodeError::Proto(_))
        ));
        // A valid but incomplete body is just incomplete.
        let buf = cat(&[b"PUB t\n", &be(1_048_576), b"abc"]);
        assert!(matches!(decode(&buf, &INIT, &lim), Ok(None)));
    }

    #[test]
    fn round_trip_each_command() {
        let lim = Limits::default();
        let id = *b"18a7689298807000";
        let ident = with_body(b"IDENTIFY\n", b"{}");
        match decode(&ident, &INIT, &lim) {
            Ok(Some((Command::Identify { body }, n))) => {
                assert_eq!((body, n), (&b"{}"[..], ident.len()))
            }
            other => panic!("{other:?}"),
        }
        let a = with_body(b"AUTH\n", b"secret");
        assert!(matches!(decode(&a, &INIT, &lim),
            Ok(Some((Command::Auth { secret: b"secret" }, n))) if n == a.len()));
        assert!(matches!(
            decode(b"SUB t c#ephemeral\r\n", &INIT, &lim),
            Ok(Some((
                Command::Sub {
                    topic: "t",
                    channel: "c#ephemeral"
                },
                19
            )))
        ));
        let p = with_body(b"PUB t1 extra\n", b"hello");
        assert!(matches!(decode(&p, &SUBD, &lim),
            Ok(Some((Command::Pub { topic: "t1", body: b"hello" }, n))) if n == p.len()));
        let d = with_body(b"DPUB t1 1000\n", b"x");
        assert!(matches!(decode(&d, &INIT, &lim),
            Ok(Some((Command::Dpub { topic: "t1", defer_ms: 1000, body: b"x" }, n))) if n == d.len()));
        let d0 = with_body(b"DPUB t1 \n", b"x");
        assert!(matches!(
            decode(&d0, &INIT, &lim),
            Ok(Some((Command::Dpub { defer_ms: 0, .. }, _)))
        ));
        let dmax = with_body(b"DPUB t1 3600000\n", b"x");
        assert!(matches!(
            decode(&dmax, &INIT, &lim),
            Ok(Some((
                Command::Dpub {
                    defer_ms: 3_600_000,
                    ..
                },
                _
            )))
        ));
        let m = with_body(b"MPUB t1\n", &mpub_body(&[b"m1", b"m2"]));
        match decode(&m, &INIT, &lim) {
            Ok(Some((Command::Mpub { topic, bodies }, n))) => {
                assert_eq!((topic, n, bodies.len()), ("t1", m.len(), 2));
                assert_eq!(bodies.collect::<Vec<_>>(), vec![&b"m1"[..], b"m2"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(b"RDY\n", &SUBD, &lim),
            Ok(Some((Command::Rdy { count: 1 }, 4)))
        ));
        assert!(matches!(
            decode(b"RDY 0\n", &SUBD, &lim),
            Ok(Some((Command::Rdy { count: 0 }, 6)))
        ));
        assert!(matches!(
            decode(b"RDY 2500\n", &SUBD, &lim),
            Ok(Some((Command::Rdy { count: 2500 }, 9)))
        ));
        assert!(matches!(
            decode(b"RDY 007\n", &SUBD, &lim),
            Ok(Some((Command::Rdy { count: 7 }, 8)))
        ));
        assert!(matches!(
            decode(b"RDY \n", &SUBD, &lim),
            Ok(Some((Command::Rdy { count: 0 }, 5)))
        ));
        assert!(matches!(
            decode(b"RDY 5\n", &CLOSING, &lim),
            Ok(Some((Command::Nop, 6)))
        ));
        assert!(matches!(
            decode(b"RDY -1\n", &CLOSING, &lim),
            Ok(Some((Command::Nop, 7)))
        ));
        for ctx in [SUBD, CLOSING] {
            assert!(matches!(decode(b"FIN 18a7689298807000\n", &ctx, &lim),
                Ok(Some((Command::Fin { id: i }, 21))) if i == id));
            assert!(matches!(decode(b"TOUCH 18a7689298807000\n", &ctx, &lim),
                Ok(Some((Command::Touch { id: i }, 23))) if i == id));
            assert!(matches!(decode(b"REQ 18a7689298807000 500\n", &ctx, &lim),
                Ok(Some((Command::Req { id: i, timeout_ms: 500, clamped: false }, 25))) if i == id));
        }
        assert!(matches!(
            decode(b"REQ zzzzzzzzzzzzzzzz 7200000\n", &SUBD, &lim),
            Ok(Some((
                Command::Req {
                    timeout_ms: 3_600_000,
                    clamped: true,
                    ..
                },
                _
            )))
        ));
        assert!(matches!(
            decode(
                b"REQ zzzzzzzzzzzzzzzz 99999999999999999999999\n",
                &SUBD,
                &lim
            ),
            Ok(Some((
                Command::Req {
                    timeout_ms: 3_600_000,
                    clamped: true,
                    ..
                },
                _
            )))
        ));
        assert!(matches!(
            decode(b"REQ zzzzzzzzzzzzzzzz 3600000\n", &SUBD, &lim),
            Ok(Some((
                Command::Req {
                    timeout_ms: 3_600_000,
                    clamped: false,
                    ..
                },
                _
            )))
        ));
        for ctx in [INIT, SUBD, CLOSING] {
            assert!(matches!(
                decode(b"NOP\n", &ctx, &lim),
                Ok(Some((Command::Nop, 4)))
            ));
        }
        assert!(matches!(
            decode(b"CLS\n", &SUBD, &lim),
            Ok(Some((Command::Cls, 4)))
        ));
    }

    fn pipelined() -> Vec<u8> {
        cat(&[
            &with_body(b"IDENTIFY\n", br#"{"feature_negotiation":true}"#),
            b"NOP\r\n",
            &with_body(b"PUB t\n", b"hello"),
            &with_body(b"MPUB t\n", &mpub_body(&[b"a", b"bc", b"def"])),
            &with_body(b"DPUB t 10\n", b"later"),
            &with_body(b"AUTH\n", b"s"),
            b"SUB t c\n",
        ])
    }

    #[test]
    fn mpub_stops_after_its_line_for_the_auth_check() {
        let ctx = DecodeCtx {
            mpub_auth: true,
            ..INIT
        };
        // The line is enough; the body (here an invalid size) is not looked at yet.
        let buf = b"MPUB t\n\0\0\0\0";
        let (cmd, used) = decode(buf, &ctx, &Limits::default()).unwrap().unwrap();
        assert!(matches!(cmd, Command::MpubAuth { topic: "t" }), "{cmd:?}");
        assert_eq!(
            used, 0,
            "consumes nothing: the MPUB is decoded again after the check"
        );
        // The name is still checked first, and without auth the body is decoded as before.
        let bad = decode(b"MPUB t!\n", &ctx, &Limits::default()).unwrap_err();
        assert!(matches!(bad, DecodeError::Proto(e) if e.code == E_BAD_TOPIC));
        let err = decode(buf, &INIT, &Limits::default()).unwrap_err();
        assert!(matches!(err, DecodeError::Proto(e) if e.code == E_BAD_BODY));
    }

    /// Decodes everything in `buf`; returns the command names and the bytes consumed.
    fn drain(buf: &[u8]) -> (Vec<&'static str>, usize) {
        let lim = Limits::default();
        let mut pos = 0;
        let mut names = Vec::new();
        while let Some((cmd, n)) = decode(&buf[pos..], &INIT, &lim).expect("no error on prefixes") {
            assert!(n > 0);
            names.push(match cmd {
                Command::Identify { .. } => "IDENTIFY",
                Command::Nop => "NOP",
                Command::Pub { .. } => "PUB",
                Command::Mpub { .. } => "MPUB",
                Command::Dpub { .. } => "DPUB",
                Command::Auth { .. } => "AUTH",
                Command::Sub { .. } => "SUB",
                other => panic!("unexpected {other:?}"),
            });
            pos += n;
        }
        (names, pos)
    }

    #[test]
    fn pipelined_commands_in_one_buffer() {
        let buf = pipelined();
        let (names, used) = drain(&buf);
        assert_eq!(
            names,
            ["IDENTIFY", "NOP", "PUB", "MPUB", "DPUB", "AUTH", "SUB"]
        );
        assert_eq!(used, buf.len());
    }

    #[test]
    fn incomplete_at_every_split_point() {
        let buf = pipelined();
        let (all, _) = drain(&buf);
        for cut in 0..=buf.len() {
            let (names, used) = drain(&buf[..cut]);
            assert!(used <= cut);
            assert_eq!(names[..], all[..names.len()], "cut {cut}");
        }
    }

    #[test]
    fn never_panics_on_mutations() {
        // Cheap deterministic fuzz: every single-byte corruption of a pipelined buffer.
        let lim = Limits::default();
        let buf = pipelined();
        for i in 0..buf.len() {
            for b in [0u8, b'\n', b' ', 0x7f, 0xff] {
                let mut m = buf.clone();
                m[i] = b;
                for ctx in [INIT, SUBD, CLOSING, NO_HB] {
                    let mut pos = 0;
                    while let Ok(Some((_, n))) = decode(&m[pos..], &ctx, &lim) {
                        pos += n;
                    }
                }
            }
        }
    }
}
