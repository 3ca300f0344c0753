//! NSQ TCP protocol V2, byte for byte as nsqd v1.3.0 speaks it: the wire vocabulary
//! ([`Command`], [`FrameType`], [`MessageId`], [`ProtoError`]) plus pure codecs.
//!
//! | file | owns |
//! |------|------|
//! | `mod.rs`      | the shared types, error codes and limits |
//! | `decode.rs`   | client → server: magic and command decoding ([`decode()`], [`decode_magic`]) |
//! | `encode.rs`   | server → client: response, error and message frames |
//! | `identify.rs` | IDENTIFY's JSON body and JSON reply |
//! | `names.rs`    | topic/channel name rules and `#ephemeral` |
//! | `quote.rs`    | Go `%q` quoting for names echoed in error texts |
//!
//! Nothing here does I/O, reads a clock or touches broker state: the reactor feeds bytes in and
//! the broker decides what a command means.

pub mod decode;
pub mod encode;
pub mod identify;
pub mod names;
pub mod quote;

pub use decode::{decode, decode_magic, DecodeError, MpubBodies};
pub use encode::{
    encode_error, encode_message, encode_message_header, encode_response, message_id_from_offset,
    offset_from_message_id, HEARTBEAT,
};
pub use identify::{
    identify_response, negotiate, parse_identify, Identify, IdentifyLimits, ServerInfo, TlsInfo,
    Upgrade,
};
pub use names::{is_ephemeral, is_valid_channel_name, is_valid_topic_name};
pub use quote::go_quote;

use std::fmt;

/// The 4 bytes a client sends first to select protocol V2.
pub const MAGIC_V2: &[u8; 4] = b"  V2";

/// nsqd reads command lines with a 16 KiB `bufio.Reader` and `ReadSlice('\n')`: a line of more
/// than this many bytes (the `'\n'` included) fails with "buffer full" and nsqd closes the
/// socket without an error frame.
pub const MAX_LINE: usize = 16384;

/// Length of a message ID on the wire.
pub const MESSAGE_ID_LEN: usize = 16;

/// A message ID: 16 ASCII bytes (lowercase hex in practice). nsqd checks only the length.
pub type MessageId = [u8; MESSAGE_ID_LEN];

/// Frame types of server → client frames (`[u32 size][i32 type][data]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum FrameType {
    /// A response: `OK`, `CLOSE_WAIT`, `_heartbeat_`, IDENTIFY/AUTH JSON.
    Response = 0,
    /// An error: `"<CODE> <description>"`.
    Error = 1,
    /// A message: `[i64 ts][u16 attempts][16-byte id][body]`.
    Message = 2,
}

/// nsqd connection state as seen by the decoder (nsqd: `stateInit=0`, `stateSubscribed=3`,
/// `stateClosing=4`). nsqd's other states never apply to a live V2 connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Not subscribed (producers, and consumers before SUB). /stats shows 0.
    Init,
    /// After a successful SUB. /stats shows 3.
    Subscribed,
    /// After CLS: FIN/REQ/TOUCH still work, RDY is ignored. /stats shows 4.
    Closing,
}

/// What the decoder needs to know about the connection to run nsqd's checks in order.
#[derive(Clone, Copy, Debug)]
pub struct DecodeCtx {
    /// The connection's state, for the per-command state checks (reference §1.6).
    pub state: ConnState,
    /// True after `IDENTIFY {"heartbeat_interval":-1}`: SUB is then refused.
    pub heartbeats_disabled: bool,
    /// Auth is on and the next MPUB's permission is not checked yet: nsqd checks it right
    /// after the line, before the body ([`Command::MpubAuth`]).
    pub mpub_auth: bool,
}

/// Server limits the decoder enforces before any body is read (nsqd's option names).
#[derive(Clone, Debug)]
pub struct Limits {
    /// `--max-msg-size`: PUB/DPUB body and each MPUB message (default 1 MiB).
    pub max_msg_size: u32,
    /// `--max-body-size`: IDENTIFY, AUTH and MPUB bodies (default 5 MiB).
    pub max_body_size: u32,
    /// `--max-rdy-count`: the largest RDY (default 2500).
    pub max_rdy_count: u64,
    /// `--max-req-timeout` in ms: REQ is clamped to it, DPUB beyond it is refused (default 1 h).
    pub max_req_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_msg_size: 1024 * 1024,
            max_body_size: 5 * 1024 * 1024,
            max_rdy_count: 2500,
            max_req_timeout_ms: 3_600_000,
        }
    }
}

/// One decoded client command. Slices borrow from the decoder's input buffer.
#[derive(Debug)]
pub enum Command<'a> {
    /// `IDENTIFY` with its JSON body (parse it with [`parse_identify`]).
    Identify {
        /// The raw JSON body, 1..=max_body_size bytes.
        body: &'a [u8],
    },
    /// `AUTH` with its secret.
    Auth {
        /// The raw secret, 1..=max_body_size bytes.
        secret: &'a [u8],
    },
    /// `SUB <topic> <channel>`; names already validated.
    Sub {
        /// A valid topic name.
        topic: &'a str,
        /// A valid channel name.
        channel: &'a str,
    },
    /// `PUB <topic>` with one body.
    Pub {
        /// A valid topic name.
        topic: &'a str,
        /// The message body, 1..=max_msg_size bytes.
        body: &'a [u8],
    },
    /// `MPUB <topic>`'s line is complete and valid and auth is on: check the permission now,
    /// before the body, as nsqd does. It consumes nothing; once the check passed the decoder
    /// goes on to the body (the session's [`DecodeCtx::mpub_auth`] is then false).
    MpubAuth {
        /// A valid topic name.
        topic: &'a str,
    },
    /// `MPUB <topic>` with validated bodies.
    Mpub {
        /// A valid topic name.
        topic: &'a str,
        /// The message bodies, each 1..=max_msg_size bytes, at least one.
        bodies: MpubBodies<'a>,
    },
    /// `DPUB <topic> <defer_ms>` with one body.
    Dpub {
        /// A valid topic name.
        topic: &'a str,
        /// Deferral in ms, 0..=max_req_timeout_ms.
        defer_ms: u64,
        /// The message body, 1..=max_msg_size bytes.
        body: &'a [u8],
    },
    /// `RDY [count]`: the in-flight cap, 0..=max_rdy_count.
    Rdy {
        /// The new RDY count.
        count: u64,
    },
    /// `FIN <id>`.
    Fin {
        /// The message ID (length-checked only, like nsqd).
        id: MessageId,
    },
    /// `REQ <id> <timeout_ms>`.
    Req {
        /// The message ID (length-checked only).
        id: MessageId,
        /// Requeue delay in ms, already clamped to 0..=max_req_timeout_ms as nsqd does.
        timeout_ms: u64,
        /// True when the requested timeout was above the maximum and was clamped: nsqd logs
        /// this, so the caller should `warn!`.
        clamped: bool,
    },
    /// `TOUCH <id>`.
    Touch {
        /// The message ID (length-checked only).
        id: MessageId,
    },
    /// `NOP`. Also returned for `RDY` after `CLS`, which nsqd silently ignores: both have no
    /// response and no effect beyond counting as a command read.
    Nop,
    /// `CLS`: the caller answers `CLOSE_WAIT`.
    Cls,
}

/// `E_BAD_PROTOCOL`: wrong magic (sent bare, without a description).
pub const E_BAD_PROTOCOL: &str = "E_BAD_PROTOCOL";
/// `E_INVALID`: state, params, parse, range, unknown command.
pub const E_INVALID: &str = "E_INVALID";
/// `E_BAD_BODY`: IDENTIFY, AUTH and MPUB body size/count/JSON.
pub const E_BAD_BODY: &str = "E_BAD_BODY";
/// `E_BAD_TOPIC`: invalid topic name.
pub const E_BAD_TOPIC: &str = "E_BAD_TOPIC";
/// `E_BAD_CHANNEL`: invalid channel name.
pub const E_BAD_CHANNEL: &str = "E_BAD_CHANNEL";
/// `E_BAD_MESSAGE`: PUB/DPUB body and MPUB per-message errors.
pub const E_BAD_MESSAGE: &str = "E_BAD_MESSAGE";
/// `E_PUB_FAILED`: topic exiting or write error.
pub const E_PUB_FAILED: &str = "E_PUB_FAILED";
/// `E_MPUB_FAILED`: topic exiting or write error.
pub const E_MPUB_FAILED: &str = "E_MPUB_FAILED";
/// `E_DPUB_FAILED`: topic exiting or write error.
pub const E_DPUB_FAILED: &str = "E_DPUB_FAILED";
/// `E_FIN_FAILED` (non-fatal): ID not in flight / not owned.
pub const E_FIN_FAILED: &str = "E_FIN_FAILED";
/// `E_REQ_FAILED` (non-fatal): ID not in flight / not owned.
pub const E_REQ_FAILED: &str = "E_REQ_FAILED";
/// `E_TOUCH_FAILED` (non-fatal): ID not in flight / not owned.
pub const E_TOUCH_FAILED: &str = "E_TOUCH_FAILED";
/// `E_SUB_FAILED`: channel consumer limit, ephemeral exit race.
pub const E_SUB_FAILED: &str = "E_SUB_FAILED";
/// `E_IDENTIFY_FAILED`: deflate+snappy, upgrade failures.
pub const E_IDENTIFY_FAILED: &str = "E_IDENTIFY_FAILED";
/// `E_AUTH_DISABLED`: AUTH without an auth server configured.
pub const E_AUTH_DISABLED: &str = "E_AUTH_DISABLED";
/// `E_AUTH_FAILED`: auth server error.
pub const E_AUTH_FAILED: &str = "E_AUTH_FAILED";
/// `E_AUTH_FIRST`: a command that needs AUTH came first.
pub const E_AUTH_FIRST: &str = "E_AUTH_FIRST";
/// `E_UNAUTHORIZED`: no or insufficient authorizations.
pub const E_UNAUTHORIZED: &str = "E_UNAUTHORIZED";
/// `E_AUTH_ERROR`: sending the AUTH reply failed.
pub const E_AUTH_ERROR: &str = "E_AUTH_ERROR";

/// nsqd's `ClientErr` (`fatal: false`) / `FatalClientErr` (`fatal: true`). The error frame's
/// data is `code + " " + desc`, or the bare code when `desc` is empty (`E_BAD_PROTOCOL`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtoError {
    /// One of the `E_*` constants.
    pub code: &'static str,
    /// Human-readable description, exactly nsqd's text.
    pub desc: String,
    /// True when nsqd closes the connection after sending the error frame.
    pub fatal: bool,
}

impl ProtoError {
    /// A fatal error: the caller sends the frame, then closes the connection.
    pub fn fatal(code: &'static str, desc: impl Into<String>) -> Self {
        ProtoError {
            code,
            desc: desc.into(),
            fatal: true,
        }
    }

    /// A non-fatal error (only `E_FIN_FAILED`, `E_REQ_FAILED`, `E_TOUCH_FAILED` in nsqd).
    pub fn non_fatal(code: &'static str, desc: impl Into<String>) -> Self {
        ProtoError {
            code,
            desc: desc.into(),
            fatal: false,
        }
    }

    /// Length of [`ProtoError::frame_data`] without building it.
    pub fn frame_data_len(&self) -> usize {
        if self.desc.is_empty() {
            self.code.len()
        } else {
            self.code.len() + 1 + self.desc.len()
        }
    }

    /// Appends the error frame's data (`code + " " + desc`) to `out`.
    pub fn write_frame_data(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.code.as_bytes());
        if !self.desc.is_empty() {
            out.push(b' ');
            out.extend_from_slice(self.desc.as_bytes());
        }
    }

    /// The error frame's data as a string.
    pub fn frame_data(&self) -> String {
        let mut out = Vec::with_capacity(self.frame_data_len());
        self.write_frame_data(&mut out);
        // Both parts are `str`, so the concatenation is valid UTF-8.
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl fmt::Display for ProtoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.desc.is_empty() {
            f.write_str(self.code)
        } else {
            write!(f, "{} {}", self.code, self.desc)
        }
    }
}

impl std::error::Error for ProtoError {}
