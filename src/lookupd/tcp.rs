//! The lookup TCP protocol V1 (nsqlookupd `lookup_protocol_v1.go`), as pure functions: decode
//! one command from a connection's buffer, apply it to the [`Registry`], encode the reply.
//!
//! Wire format (reference §4.1):
//!
//! ```text
//! client → lookupd:  "  V1"                          4-byte magic, once
//!                    "PING\n"
//!                    "IDENTIFY\n" [u32 BE size] [JSON body]
//!                    "REGISTER <topic> [<channel>]\n"
//!                    "UNREGISTER <topic> [<channel>]\n"
//! lookupd → client:  [u32 BE size] [data]            no frame type; errors start with "E_"
//! ```
//!
//! A line is trimmed of surrounding whitespace and split on single spaces. Every error is
//! fatal: the reply is sent and the connection closed. Error texts are nsqlookupd's. Where
//! nsqlookupd has no limit (line length, IDENTIFY body size) corq has one, with its own text.

use serde::Serialize;

use super::registry::{PeerInfo, Registry};
use crate::protocol::names::{is_valid_channel_name, is_valid_topic_name};

/// The protocol magic.
pub const MAGIC_V1: &[u8; 4] = b"  V1";
/// The longest command line accepted (nsqlookupd's bufio reader has none; a REGISTER of the
/// longest valid names is under 150 bytes).
pub const MAX_LINE: usize = 4096;
/// The largest IDENTIFY body accepted (nsqlookupd has no limit; nsqd's is ~150 bytes).
pub const MAX_IDENTIFY_BODY: usize = 64 * 1024;

/// A fatal protocol error: `code` then a space and `desc` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupError {
    /// `E_INVALID`, `E_BAD_BODY`, `E_BAD_TOPIC`, `E_BAD_CHANNEL` or `E_BAD_PROTOCOL`.
    pub code: &'static str,
    /// The text after the code (empty for `E_BAD_PROTOCOL`).
    pub desc: String,
}

impl LookupError {
    fn new(code: &'static str, desc: impl Into<String>) -> Self {
        LookupError {
            code,
            desc: desc.into(),
        }
    }

    /// The reply data: `CODE desc`, or just `CODE` without a description.
    pub fn text(&self) -> String {
        if self.desc.is_empty() {
            self.code.to_owned()
        } else {
            format!("{} {}", self.code, self.desc)
        }
    }
}

/// One decoded, validated command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `PING`.
    Ping,
    /// `IDENTIFY` with its decoded body (fields checked present).
    Identify(PeerInfo),
    /// `REGISTER topic [channel]`.
    Register {
        /// Valid topic name.
        topic: String,
        /// Valid channel name, if given.
        channel: Option<String>,
    },
    /// `UNREGISTER topic [channel]`.
    Unregister {
        /// Valid topic name.
        topic: String,
        /// Valid channel name, if given.
        channel: Option<String>,
    },
}

/// Checks the 4-byte magic: `Ok(false)` while fewer than 4 bytes are there.
///
/// # Errors
/// `E_BAD_PROTOCOL` for any other 4 bytes.
pub fn check_magic(buf: &[u8]) -> Result<bool, LookupError> {
    match buf.get(..4) {
        None => Ok(false),
        Some(m) if m == MAGIC_V1 => Ok(true),
        Some(_) => Err(LookupError::new("E_BAD_PROTOCOL", "")),
    }
}

/// Decodes the first command in `buf` for a connection that has (or has not) identified.
/// Returns `Ok(None)` until the whole command (with an IDENTIFY body) is there.
///
/// # Errors
/// nsqlookupd's fatal error for the command, checked in its order.
pub fn decode(buf: &[u8], identified: bool) -> Result<Option<(Command, usize)>, LookupError> {
    let window = buf.get(..MAX_LINE).unwrap_or(buf);
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= MAX_LINE {
            return Err(LookupError::new("E_INVALID", "line too long"));
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[..nl]);
    let params: Vec<&str> = line.trim().split(' ').collect();
    let used = nl + 1;
    let verb = params.first().copied().unwrap_or("");
    let cmd = match verb {
        "PING" => Command::Ping,
        "IDENTIFY" => return identify(buf, used, identified),
        "REGISTER" | "UNREGISTER" => {
            if !identified {
                return Err(LookupError::new("E_INVALID", "client must IDENTIFY"));
            }
            // `params` holds at least the verb: splitting never yields nothing.
            let (topic, channel) = topic_channel(verb, params.get(1..).unwrap_or_default())?;
            if verb == "REGISTER" {
                Command::Register { topic, channel }
            } else {
                Command::Unregister { topic, channel }
            }
        }
        other => {
            return Err(LookupError::new(
                "E_INVALID",
                format!("invalid command {other}"),
            ))
        }
    };
    Ok(Some((cmd, used)))
}

/// nsqlookupd `getTopicChan`: the topic is required, the channel optional (an empty one counts
/// as absent), both validated with single-quoted names in the error.
fn topic_channel(verb: &str, params: &[&str]) -> Result<(String, Option<String>), LookupError> {
    let Some(&topic) = params.first() else {
        return Err(LookupError::new(
            "E_INVALID",
            format!("{verb} insufficient number of params"),
        ));
    };
    let channel = params.get(1).copied().filter(|c| !c.is_empty());
    if !is_valid_topic_name(topic) {
        return Err(LookupError::new(
            "E_BAD_TOPIC",
            format!("{verb} topic name '{topic}' is not valid"),
        ));
    }
    if let Some(c) = channel {
        if !is_valid_channel_name(c) {
            return Err(LookupError::new(
                "E_BAD_CHANNEL",
                format!("{verb} channel name '{c}' is not valid"),
            ));
        }
    }
    Ok((topic.to_owned(), channel.map(str::to_owned)))
}

/// `IDENTIFY\n[u32 size][JSON]`; `line_len` is the length of `IDENTIFY\n`.
fn identify(
    buf: &[u8],
    line_len: usize,
    identified: bool,
) -> Result<Option<(Command, usize)>, LookupError> {
    let bad = |desc: String| LookupError::new("E_BAD_BODY", desc);
    if identified {
        return Err(LookupError::new("E_INVALID", "cannot IDENTIFY again"));
    }
    let Some(size) = buf.get(line_len..line_len + 4) else {
        return Ok(None);
    };
    // cannot fail because: the slice is exactly 4 bytes.
    let size = i32::from_be_bytes(size.try_into().unwrap_or([0; 4]));
    let size =
        usize::try_from(size).map_err(|_| bad("IDENTIFY failed to read body size".into()))?;
    if size > MAX_IDENTIFY_BODY {
        return Err(bad(format!(
            "IDENTIFY body too big {size} > {MAX_IDENTIFY_BODY}"
        )));
    }
    let start = line_len + 4;
    let Some(body) = buf.get(start..start + size) else {
        return Ok(None);
    };
    let info: PeerInfo = serde_json::from_slice(body)
        .map_err(|_| bad("IDENTIFY failed to decode JSON body".into()))?;
    if info.broadcast_address.is_empty()
        || info.tcp_port == 0
        || info.http_port == 0
        || info.version.is_empty()
    {
        return Err(bad("IDENTIFY missing fields".into()));
    }
    Ok(Some((Command::Identify(info), start + size)))
}

/// What lookupd says about itself in reply to IDENTIFY (keys in Go's sorted map order).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelfInfo {
    /// `--broadcast-address`.
    pub broadcast_address: String,
    /// The OS hostname.
    pub hostname: String,
    /// The real HTTP port.
    pub http_port: u16,
    /// The real TCP port.
    pub tcp_port: u16,
    /// The nsqlookupd version corq answers as.
    pub version: String,
}

/// Applies a command for the peer at `remote` (its id); `peer_id` is set by IDENTIFY. Returns
/// the reply data.
pub fn exec(
    reg: &mut Registry,
    peer_id: &mut Option<String>,
    remote: &str,
    cmd: Command,
    me: &SelfInfo,
    now_ns: i64,
) -> Vec<u8> {
    match cmd {
        Command::Ping => {
            if let Some(id) = peer_id {
                reg.touch(id, now_ns);
            }
        }
        Command::Identify(mut info) => {
            info.remote_address = remote.to_owned();
            log::info!(
                "peer {remote} identified: {}:{} (http {}) version {}",
                info.broadcast_address,
                info.tcp_port,
                info.http_port,
                info.version
            );
            reg.identify(info, now_ns);
            *peer_id = Some(remote.to_owned());
            return serde_json::to_vec(me).unwrap_or_default();
        }
        Command::Register { topic, channel } => {
            let id = peer_id.as_deref().unwrap_or(remote);
            log::debug!("peer {id}: REGISTER {topic} {channel:?}");
            reg.register(id, &topic, channel.as_deref());
        }
        Command::Unregister { topic, channel } => {
            let id = peer_id.as_deref().unwrap_or(remote);
            log::debug!("peer {id}: UNREGISTER {topic} {channel:?}");
            reg.unregister(id, &topic, channel.as_deref());
        }
    }
    b"OK".to_vec()
}

/// Appends one reply frame: `[u32 BE size][data]`.
pub fn encode_reply(out: &mut Vec<u8>, data: &[u8]) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"broadcast_address":"127.0.0.1","hostname":"vm","http_port":4151,"tcp_port":4150,"version":"1.3.0"}"#;

    fn identify_bytes(body: &[u8]) -> Vec<u8> {
        let mut v = b"IDENTIFY\n".to_vec();
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn err_text(buf: &[u8], identified: bool) -> String {
        decode(buf, identified).unwrap_err().text()
    }

    #[test]
    fn magic() {
        assert_eq!(check_magic(b"  V"), Ok(false));
        assert_eq!(check_magic(b"  V1PING\n"), Ok(true));
        assert_eq!(check_magic(b"  V2").unwrap_err().text(), "E_BAD_PROTOCOL");
    }

    #[test]
    fn good_commands() {
        let (cmd, used) = decode(b"PING\r\nREST", false).unwrap().unwrap();
        assert_eq!((cmd, used), (Command::Ping, 6));
        let (cmd, _) = decode(b"REGISTER t c\n", true).unwrap().unwrap();
        let want = Command::Register {
            topic: "t".into(),
            channel: Some("c".into()),
        };
        assert_eq!(cmd, want);
        let (cmd, _) = decode(b"UNREGISTER t#ephemeral\n", true).unwrap().unwrap();
        let want = Command::Unregister {
            topic: "t#ephemeral".into(),
            channel: None,
        };
        assert_eq!(cmd, want);
        let buf = identify_bytes(GOOD.as_bytes());
        let (cmd, used) = decode(&buf, false).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert!(matches!(cmd, Command::Identify(i) if i.tcp_port == 4150 && i.hostname == "vm"));
        // A null is Go's zero value, not an error (hostname is optional).
        let body = br#"{"broadcast_address":"h","hostname":null,"http_port":1,"tcp_port":2,"version":"v","extra":[1]}"#;
        let (cmd, _) = decode(&identify_bytes(body), false).unwrap().unwrap();
        assert!(matches!(cmd, Command::Identify(i) if i.hostname.is_empty() && i.tcp_port == 2));
    }

    #[test]
    fn incomplete_needs_more() {
        assert_eq!(decode(b"REGIST", true), Ok(None));
        let buf = identify_bytes(GOOD.as_bytes());
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut], false), Ok(None), "cut at {cut}");
        }
    }

    /// The hostile-input table: each row is (input, identified, exact error text).
    #[test]
    fn hostile_table() {
        let long = vec![b'x'; MAX_LINE];
        let mut huge = b"IDENTIFY\n".to_vec();
        huge.extend_from_slice(&((MAX_IDENTIFY_BODY as u32) + 1).to_be_bytes());
        let mut negative = b"IDENTIFY\n".to_vec();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        let rows: Vec<(Vec<u8>, bool, String)> = vec![
            (
                b"FOO\n".to_vec(),
                false,
                "E_INVALID invalid command FOO".into(),
            ),
            (b"\n".to_vec(), true, "E_INVALID invalid command ".into()),
            (
                b"ping\n".to_vec(),
                true,
                "E_INVALID invalid command ping".into(),
            ),
            (
                b"REGISTER t\n".to_vec(),
                false,
                "E_INVALID client must IDENTIFY".into(),
            ),
            (
                b"UNREGISTER t\n".to_vec(),
                false,
                "E_INVALID client must IDENTIFY".into(),
            ),
            (
                b"REGISTER\n".to_vec(),
                true,
                "E_INVALID REGISTER insufficient number of params".into(),
            ),
            (
                b"REGISTER bad!\n".to_vec(),
                true,
                "E_BAD_TOPIC REGISTER topic name 'bad!' is not valid".into(),
            ),
            (
                b"UNREGISTER t bad!\n".to_vec(),
                true,
                "E_BAD_CHANNEL UNREGISTER channel name 'bad!' is not valid".into(),
            ),
            (
                format!("REGISTER {}\n", "a".repeat(65)).into_bytes(),
                true,
                format!(
                    "E_BAD_TOPIC REGISTER topic name '{}' is not valid",
                    "a".repeat(65)
                ),
            ),
            (
                identify_bytes(GOOD.as_bytes()),
                true,
                "E_INVALID cannot IDENTIFY again".into(),
            ),
            (
                identify_bytes(b"{not json"),
                false,
                "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
            ),
            (
                identify_bytes(br#"{"tcp_port":"4150"}"#),
                false,
                "E_BAD_BODY IDENTIFY failed to decode JSON body".into(),
            ),
            (
                identify_bytes(br#"{"broadcast_address":"h","tcp_port":1,"http_port":2}"#),
                false,
                "E_BAD_BODY IDENTIFY missing fields".into(),
            ),
            (
                identify_bytes(
                    br#"{"broadcast_address":"h","tcp_port":0,"http_port":2,"version":"1"}"#,
                ),
                false,
                "E_BAD_BODY IDENTIFY missing fields".into(),
            ),
            (
                huge,
                false,
                format!(
                    "E_BAD_BODY IDENTIFY body too big {} > {MAX_IDENTIFY_BODY}",
                    MAX_IDENTIFY_BODY + 1
                ),
            ),
            (
                negative,
                false,
                "E_BAD_BODY IDENTIFY failed to read body size".into(),
            ),
            (long, true, "E_INVALID line too long".into()),
        ];
        for (input, identified, want) in rows {
            assert_eq!(
                err_text(&input, identified),
                want,
                "input {:?}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    #[test]
    fn exec_identify_register_ping() {
        let mut reg = Registry::new();
        let me = SelfInfo {
            broadcast_address: "127.0.0.1".into(),
            hostname: "vm".into(),
            http_port: 14161,
            tcp_port: 14160,
            version: "1.3.0".into(),
        };
        let mut id = None;
        let (cmd, _) = decode(&identify_bytes(GOOD.as_bytes()), false)
            .unwrap()
            .unwrap();
        let reply = exec(&mut reg, &mut id, "127.0.0.1:5555", cmd, &me, 1);
        assert_eq!(
            String::from_utf8(reply).unwrap(),
            r#"{"broadcast_address":"127.0.0.1","hostname":"vm","http_port":14161,"tcp_port":14160,"version":"1.3.0"}"#
        );
        assert_eq!(id.as_deref(), Some("127.0.0.1:5555"));
        let (cmd, _) = decode(b"REGISTER t c\n", true).unwrap().unwrap();
        assert_eq!(exec(&mut reg, &mut id, "x", cmd, &me, 2), b"OK");
        assert_eq!(reg.channels("t"), vec!["c"]);
        assert_eq!(exec(&mut reg, &mut id, "x", Command::Ping, &me, 9), b"OK");
        assert_eq!(reg.peer("127.0.0.1:5555").unwrap().last_update, 9);
        let mut out = Vec::new();
        encode_reply(&mut out, b"OK");
        assert_eq!(out, b"\0\0\0\x02OK");
    }
}
