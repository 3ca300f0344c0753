//! What corqd sends to a lookupd and how it reads the replies (reference §4.1–4.2), as pure
//! functions.
//!
//! ```text
//! corqd → lookupd:  "  V1"  "IDENTIFY\n" [u32 BE size] [JSON]  "REGISTER t [c]\n"
//!                   "UNREGISTER t [c]\n"  "PING\n"
//! lookupd → corqd:  [u32 BE size] [data]        (no frame type; "OK", JSON, or "E_...")
//! ```

use serde::{Deserialize, Serialize};

/// The protocol magic.
pub const MAGIC_V1: &[u8] = b"  V1";

/// corqd's IDENTIFY body: nsqd's keys, sorted as Go marshals its map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `--broadcast-address` (the hostname by default): what consumers dial.
    pub broadcast_address: String,
    /// The OS hostname.
    pub hostname: String,
    /// `--broadcast-http-port` or the bound HTTP port.
    pub http_port: u16,
    /// `--broadcast-tcp-port` or the bound TCP port.
    pub tcp_port: u16,
    /// The nsqd version corq answers as.
    pub version: String,
}

/// What corqd keeps from lookupd's IDENTIFY reply: where its HTTP API is, for the channel
/// pre-creation query.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LookupdInfo {
    /// lookupd's `--broadcast-address`.
    #[serde(default)]
    pub broadcast_address: String,
    /// lookupd's HTTP port.
    #[serde(default)]
    pub http_port: u16,
}

/// Appends the magic and IDENTIFY.
pub fn encode_hello(out: &mut Vec<u8>, me: &Identity) {
    out.extend_from_slice(MAGIC_V1);
    out.extend_from_slice(b"IDENTIFY\n");
    // Serializing a struct of strings and integers cannot fail.
    let body = serde_json::to_vec(me).unwrap_or_default();
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
}

/// Appends `VERB topic [channel]\n`.
pub fn encode_command(out: &mut Vec<u8>, verb: &str, topic: &str, channel: Option<&str>) {
    out.extend_from_slice(verb.as_bytes());
    out.push(b' ');
    out.extend_from_slice(topic.as_bytes());
    if let Some(c) = channel {
        out.push(b' ');
        out.extend_from_slice(c.as_bytes());
    }
    out.push(b'\n');
}

/// A reply that cannot be a lookupd's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadReply(pub String);

/// Takes the first reply frame from `buf`: `Ok(None)` until it is complete, else its data and
/// the bytes used.
///
/// # Errors
/// A declared size above `max` (nsqd bounds lookupd replies by `--max-body-size`).
pub fn decode_reply(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, BadReply> {
    let Some(size) = buf.get(..4) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if size > max {
        return Err(BadReply(format!("reply of {size} bytes exceeds {max}")));
    }
    Ok(buf.get(4..4 + size).map(|data| (data, 4 + size)))
}

/// Reads lookupd's IDENTIFY reply (nsqd: exactly `E_INVALID`, or anything not JSON, fails).
///
/// # Errors
/// When the reply is an error or not a JSON object.
pub fn parse_identify_reply(data: &[u8]) -> Result<LookupdInfo, BadReply> {
    serde_json::from_slice(data).map_err(|_| {
        let shown = String::from_utf8_lossy(&data[..data.len().min(64)]).into_owned();
        BadReply(format!("IDENTIFY answered {shown:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_nsqds_bytes() {
        let me = Identity {
            broadcast_address: "127.0.0.1".into(),
            hostname: "vm".into(),
            http_port: 14151,
            tcp_port: 14150,
            version: "1.3.0".into(),
        };
        let mut out = Vec::new();
        encode_hello(&mut out, &me);
        let body = br#"{"broadcast_address":"127.0.0.1","hostname":"vm","http_port":14151,"tcp_port":14150,"version":"1.3.0"}"#;
        let mut want = b"  V1IDENTIFY\n".to_vec();
        want.extend_from_slice(&(body.len() as u32).to_be_bytes());
        want.extend_from_slice(body);
        assert_eq!(out, want);
        out.clear();
        encode_command(&mut out, "REGISTER", "t", Some("c"));
        encode_command(&mut out, "UNREGISTER", "t", None);
        assert_eq!(out, b"REGISTER t c\nUNREGISTER t\n");
    }

    #[test]
    fn replies() {
        assert_eq!(decode_reply(b"\0\0\0", 10), Ok(None));
        assert_eq!(decode_reply(b"\0\0\0\x02O", 10), Ok(None));
        assert_eq!(
            decode_reply(b"\0\0\0\x02OKx", 10),
            Ok(Some((&b"OK"[..], 6)))
        );
        assert!(decode_reply(b"\xff\xff\xff\xff", 10).is_err());
        let info = parse_identify_reply(br#"{"broadcast_address":"h","http_port":4161,"tcp_port":4160,"version":"1.3.0","hostname":"x"}"#).unwrap();
        assert_eq!(
            (info.broadcast_address.as_str(), info.http_port),
            ("h", 4161)
        );
        assert!(parse_identify_reply(b"E_INVALID").is_err());
        assert!(parse_identify_reply(b"HTTP/1.1 400").is_err());
    }
}
