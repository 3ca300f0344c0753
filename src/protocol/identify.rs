//! IDENTIFY: the JSON request body (nsqd `identifyDataV2` + `clientV2.Identify`) and the JSON
//! reply sent when `feature_negotiation` is true.
//!
//! The body is decoded the way Go's `encoding/json` decodes into nsqd's struct: the top level
//! must be an object or `null`; keys match case-insensitively, the last duplicate wins; unknown
//! keys are ignored; a `null` value leaves the field alone; a wrong type (a string or a float
//! for an int, an int for a bool) fails the whole decode. Then the fields are checked in
//! nsqd's order: heartbeat, output buffer timeout, output buffer size, sample rate, msg timeout.
//!
//! TLS, snappy and deflate are negotiated as nsqd does ([`negotiate`]): each is on when the
//! server offers it and the client asks (and sent `feature_negotiation`); snappy and deflate
//! together are refused with nsqd's `E_IDENTIFY_FAILED`.

use super::{ProtoError, E_BAD_BODY, E_IDENTIFY_FAILED};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Serialize;
use std::fmt;

/// Server settings that bound or default IDENTIFY's fields (nsqd option names, in ms).
#[derive(Clone, Debug)]
pub struct IdentifyLimits {
    /// `--max-heartbeat-interval` (60 s).
    pub max_heartbeat_interval_ms: u64,
    /// `--max-output-buffer-size` (64 KiB).
    pub max_output_buffer_size: u64,
    /// `--min-output-buffer-timeout` (25 ms).
    pub min_output_buffer_timeout_ms: u64,
    /// `--max-output-buffer-timeout` (30 s).
    pub max_output_buffer_timeout_ms: u64,
    /// `--max-msg-timeout` (15 min).
    pub max_msg_timeout_ms: u64,
    /// `--msg-timeout` (60 s): a client's msg timeout unless it asks for another.
    pub default_msg_timeout_ms: u64,
    /// `--output-buffer-timeout` (250 ms).
    pub default_output_buffer_timeout_ms: u64,
    /// nsqd's fixed ClientTimeout / 2 (30 s).
    pub default_heartbeat_interval_ms: u64,
    /// nsqd's default bufio size for a client's writes (16 KiB).
    pub default_output_buffer_size: usize,
}

impl Default for IdentifyLimits {
    fn default() -> Self {
        IdentifyLimits {
            max_heartbeat_interval_ms: 60_000,
            max_output_buffer_size: 65_536,
            min_output_buffer_timeout_ms: 25,
            max_output_buffer_timeout_ms: 30_000,
            max_msg_timeout_ms: 900_000,
            default_msg_timeout_ms: 60_000,
            default_output_buffer_timeout_ms: 250,
            default_heartbeat_interval_ms: 30_000,
            default_output_buffer_size: 16_384,
        }
    }
}

/// A client's negotiated settings after IDENTIFY, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identify {
    /// Free text shown in /stats (`""` if absent, as nsqd overwrites it).
    pub client_id: String,
    /// Free text shown in /stats.
    pub hostname: String,
    /// E.g. `go-nsq/1.1.0`.
    pub user_agent: String,
    /// True: reply with JSON (and honour upgrades); false: reply `OK`.
    pub feature_negotiation: bool,
    /// `None` when the client sent -1: no heartbeats, no read deadline, and SUB is refused.
    pub heartbeat_interval_ms: Option<u64>,
    /// Output buffer size in bytes (1 when the client sent -1: unbuffered).
    pub output_buffer_size: usize,
    /// Output buffer flush interval in ms (0: no periodic flush).
    pub output_buffer_timeout_ms: u64,
    /// 0 (no sampling) ..= 99.
    pub sample_rate: u32,
    /// In-flight timeout for messages sent to this client, in ms.
    pub msg_timeout_ms: u64,
    /// Asked for TLS.
    pub tls_v1: bool,
    /// Asked for snappy.
    pub snappy: bool,
    /// Asked for deflate.
    pub deflate: bool,
    /// Requested deflate level (0 if absent).
    pub deflate_level: i64,
}

/// Server facts reported in the IDENTIFY JSON reply.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    /// `--max-rdy-count`.
    pub max_rdy_count: u64,
    /// The version string reported (nsqd reports e.g. `1.3.0`).
    pub version: String,
    /// `--max-msg-timeout` in ms.
    pub max_msg_timeout_ms: u64,
    /// `--max-deflate-level` (6).
    pub max_deflate_level: i64,
    /// True when an auth server is configured.
    pub auth_required: bool,
    /// `--tls-cert` and `--tls-key` are set: TLS can be negotiated.
    pub tls: bool,
    /// `--snappy`.
    pub snappy: bool,
    /// `--deflate`.
    pub deflate: bool,
}

/// What a completed TLS handshake tells the broker (for /stats and the auth server).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The client certificate's subject common name, if it sent one.
    pub common_name: Option<String>,
    /// `TLS1.2` or `TLS1.3`.
    pub version: String,
    /// Go's name of the cipher suite, e.g. `TLS_AES_128_GCM_SHA256`.
    pub cipher_suite: String,
}

/// The stream upgrades one IDENTIFY agreed to, run in nsqd's order: TLS, snappy, deflate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Upgrade {
    /// Switch to TLS.
    pub tls: bool,
    /// Switch both directions to the snappy framing format.
    pub snappy: bool,
    /// Switch both directions to raw deflate at `deflate_level` (reported even when off).
    pub deflate: bool,
    /// The level reported (and used for our output): 6, or the client's if deflate is on and
    /// it asked for one, capped at `--max-deflate-level`.
    pub deflate_level: i64,
}

impl Upgrade {
    /// Whether any layer changes.
    pub fn any(&self) -> bool {
        self.tls || self.snappy || self.deflate
    }
}

/// nsqd's negotiation (`protocolV2.IDENTIFY`): what the reply reports and the upgrades that
/// follow it. Without `feature_negotiation` nothing is upgraded.
///
/// # Errors
/// `E_IDENTIFY_FAILED cannot enable both deflate and snappy compression` (fatal).
pub fn negotiate(id: &Identify, server: &ServerInfo) -> Result<Upgrade, ProtoError> {
    let deflate = id.feature_negotiation && server.deflate && id.deflate;
    let mut deflate_level = 6;
    if deflate && id.deflate_level > 0 {
        deflate_level = id.deflate_level;
    }
    let up = Upgrade {
        tls: id.feature_negotiation && server.tls && id.tls_v1,
        snappy: id.feature_negotiation && server.snappy && id.snappy,
        deflate,
        deflate_level: deflate_level.min(server.max_deflate_level),
    };
    if up.snappy && up.deflate {
        return Err(ProtoError::fatal(
            E_IDENTIFY_FAILED,
            "cannot enable both deflate and snappy compression",
        ));
    }
    Ok(up)
}

/// The raw request fields as Go would decode them (zero values when absent or null).
#[derive(Default)]
struct RawIdentify {
    client_id: String,
    hostname: String,
    user_agent: String,
    heartbeat_interval: i64,
    output_buffer_size: i64,
    output_buffer_timeout: i64,
    feature_negotiation: bool,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    snappy: bool,
    sample_rate: i32,
    msg_timeout: i64,
}

/// Parses and validates an IDENTIFY body.
///
/// # Errors
/// `E_BAD_BODY IDENTIFY failed to decode JSON body`, or the first invalid field's
/// `E_BAD_BODY IDENTIFY <field> (%d) is invalid`; all fatal.
pub fn parse_identify(body: &[u8], limits: &IdentifyLimits) -> Result<Identify, ProtoError> {
    let raw = decode_json(body)?;
    let mut id = Identify {
        client_id: String::new(),
        hostname: String::new(),
        user_agent: String::new(),
        feature_negotiation: raw.feature_negotiation,
        heartbeat_interval_ms: Some(limits.default_heartbeat_interval_ms),
        output_buffer_size: limits.default_output_buffer_size,
        output_buffer_timeout_ms: limits.default_output_buffer_timeout_ms,
        sample_rate: 0,
        msg_timeout_ms: limits.default_msg_timeout_ms,
        tls_v1: raw.tls_v1,
        snappy: raw.snappy,
        deflate: raw.deflate,
        deflate_level: raw.deflate_level,
    };
    set_heartbeat(&mut id, raw.heartbeat_interval, limits)?;
    set_output_buffer(
        &mut id,
        raw.output_buffer_size,
        raw.output_buffer_timeout,
        limits,
    )?;
    if !(0..=99).contains(&raw.sample_rate) {
        return Err(bad_field("sample rate", raw.sample_rate.into()));
    }
    id.sample_rate = raw.sample_rate.unsigned_abs();
    set_msg_timeout(&mut id, raw.msg_timeout, limits)?;
    id.client_id = raw.client_id;
    id.hostname = raw.hostname;
    id.user_agent = raw.user_agent;
    Ok(id)
}

fn bad_field(what: &str, value: i64) -> ProtoError {
    ProtoError::fatal(E_BAD_BODY, format!("IDENTIFY {what} ({value}) is invalid"))
}

/// True if `v` is in `lo..=hi` (limits are u64, values may be negative).
fn within(v: i64, lo: u64, hi: u64) -> bool {
    u64::try_from(v).is_ok_and(|v| (lo..=hi).contains(&v))
}

/// nsqd `SetHeartbeatInterval`: -1 disables, 0 keeps the default, else 1000..=max.
fn set_heartbeat(id: &mut Identify, v: i64, l: &IdentifyLimits) -> Result<(), ProtoError> {
    match v {
        -1 => id.heartbeat_interval_ms = None,
        0 => {}
        v if within(v, 1000, l.max_heartbeat_interval_ms) => {
            id.heartbeat_interval_ms = Some(v.unsigned_abs())
        }
        v => return Err(bad_field("heartbeat interval", v)),
    }
    Ok(())
}

/// nsqd `SetOutputBuffer`: the timeout is checked first; a size of -1 means "unbuffered":
/// size 1 and timeout 0, whatever timeout was asked for.
fn set_output_buffer(
    id: &mut Identify,
    size: i64,
    timeout: i64,
    l: &IdentifyLimits,
) -> Result<(), ProtoError> {
    match timeout {
        -1 => id.output_buffer_timeout_ms = 0,
        0 => {}
        t if within(
            t,
            l.min_output_buffer_timeout_ms,
            l.max_output_buffer_timeout_ms,
        ) =>
        {
            id.output_buffer_timeout_ms = t.unsigned_abs()
        }
        t => return Err(bad_field("output buffer timeout", t)),
    }
    match size {
        -1 => {
            id.output_buffer_size = 1;
            id.output_buffer_timeout_ms = 0;
        }
        0 => {}
        s if within(s, 64, l.max_output_buffer_size) => {
            id.output_buffer_size =
                usize::try_from(s).map_err(|_| bad_field("output buffer size", s))?
        }
        s => return Err(bad_field("output buffer size", s)),
    }
    Ok(())
}

/// nsqd `SetMsgTimeout`: 0 keeps the default, else 1000..=max (-1 is invalid here).
fn set_msg_timeout(id: &mut Identify, v: i64, l: &IdentifyLimits) -> Result<(), ProtoError> {
    match v {
        0 => {}
        v if within(v, 1000, l.max_msg_timeout_ms) => id.msg_timeout_ms = v.unsigned_abs(),
        v => return Err(bad_field("msg timeout", v)),
    }
    Ok(())
}

fn decode_json(body: &[u8]) -> Result<RawIdentify, ProtoError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let raw = de
        .deserialize_any(RawVisitor)
        .and_then(|raw| de.end().map(|()| raw));
    raw.map_err(|_| ProtoError::fatal(E_BAD_BODY, "IDENTIFY failed to decode JSON body"))
}

/// Decodes the top-level value like Go's `json.Unmarshal` into a struct.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawIdentify;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an IDENTIFY object or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<RawIdentify, E> {
        Ok(RawIdentify::default())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawIdentify, A::Error> {
        let mut raw = RawIdentify::default();
        while let Some(key) = map.next_key::<String>()? {
            set_field(&mut raw, &fold_key(&key), &mut map)?;
        }
        Ok(raw)
    }
}

/// Go matches JSON keys to struct tags with `bytes.EqualFold`: ASCII case plus the two
/// non-ASCII folds that reach ASCII letters (U+017F ſ → s, U+212A Kelvin → k).
fn fold_key(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '\u{17f}' => 's',
            '\u{212a}' => 'k',
            c => c.to_ascii_lowercase(),
        })
        .collect()
}

/// Stores one key's value if it is a known field; `null` leaves the field unchanged.
fn set_field<'de, A: MapAccess<'de>>(
    raw: &mut RawIdentify,
    key: &str,
    map: &mut A,
) -> Result<(), A::Error> {
    fn put<T>(slot: &mut T, v: Option<T>) {
        if let Some(v) = v {
            *slot = v;
        }
    }
    match key {
        "client_id" => put(&mut raw.client_id, map.next_value()?),
        "hostname" => put(&mut raw.hostname, map.next_value()?),
        "user_agent" => put(&mut raw.user_agent, map.next_value()?),
        "heartbeat_interval" => put(&mut raw.heartbeat_interval, map.next_value()?),
        "output_buffer_size" => put(&mut raw.output_buffer_size, map.next_value()?),
        "output_buffer_timeout" => put(&mut raw.output_buffer_timeout, map.next_value()?),
        "feature_negotiation" => put(&mut raw.feature_negotiation, map.next_value()?),
        "tls_v1" => put(&mut raw.tls_v1, map.next_value()?),
        "deflate" => put(&mut raw.deflate, map.next_value()?),
        "deflate_level" => put(&mut raw.deflate_level, map.next_value()?),
        "snappy" => put(&mut raw.snappy, map.next_value()?),
        "sample_rate" => put(&mut raw.sample_rate, map.next_value()?),
        "msg_timeout" => put(&mut raw.msg_timeout, map.next_value()?),
        _ => {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// The reply, field order = nsqd's anonymous struct (serde keeps declaration order).
#[derive(Serialize)]
struct Reply<'a> {
    max_rdy_count: u64,
    version: &'a str,
    max_msg_timeout: u64,
    msg_timeout: u64,
    tls_v1: bool,
    deflate: bool,
    deflate_level: i64,
    max_deflate_level: i64,
    snappy: bool,
    sample_rate: u32,
    auth_required: bool,
    output_buffer_size: usize,
    output_buffer_timeout: u64,
}

/// The JSON response data for a client that sent `feature_negotiation: true`: compact, in
/// nsqd's key order, reporting what [`negotiate`] agreed to.
pub fn identify_response(id: &Identify, server: &ServerInfo, up: &Upgrade) -> Vec<u8> {
    let reply = Reply {
        max_rdy_count: server.max_rdy_count,
        version: &server.version,
        max_msg_timeout: server.max_msg_timeout_ms,
        msg_timeout: id.msg_timeout_ms,
        tls_v1: up.tls,
        deflate: up.deflate,
        deflate_level: up.deflate_level,
        max_deflate_level: server.max_deflate_level,
        snappy: up.snappy,
        sample_rate: id.sample_rate,
        auth_required: server.auth_required,
        output_buffer_size: id.output_buffer_size,
        output_buffer_timeout: id.output_buffer_timeout_ms,
    };
    // Serializing plain numbers, bools and a &str into a Vec cannot fail.
    serde_json::to_vec(&reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Identify, ProtoError> {
        parse_identify(body.as_bytes(), &IdentifyLimits::default())
    }

    fn err(body: &str) -> String {
        let e = parse(body).expect_err(body);
        assert!(e.fatal);
        e.frame_data()
    }

    fn server() -> ServerInfo {
        ServerInfo {
            max_rdy_count: 2500,
            version: "1.3.0".to_string(),
            max_msg_timeout_ms: 900_000,
            max_deflate_level: 6,
            auth_required: false,
            tls: false,
            snappy: true,
            deflate: true,
        }
    }

    fn defaults() -> Identify {
        Identify {
            client_id: String::new(),
            hostname: String::new(),
            user_agent: String::new(),
            feature_negotiation: false,
            heartbeat_interval_ms: Some(30_000),
            output_buffer_size: 16_384,
            output_buffer_timeout_ms: 250,
            sample_rate: 0,
            msg_timeout_ms: 60_000,
            tls_v1: false,
            snappy: false,
            deflate: false,
            deflate_level: 0,
        }
    }

    #[test]
    fn null_and_empty_are_defaults() {
        assert_eq!(parse("null").unwrap(), defaults());
        assert_eq!(parse(" {} ").unwrap(), defaults());
        assert_eq!(
            parse(r#"{"heartbeat_interval":0,"msg_timeout":null,"x":[1,{"y":2}]}"#).unwrap(),
            defaults()
        );
    }

    #[test]
    fn undecodable_bodies() {
        for body in [
            "",
            "[]",
            "\"s\"",
            "5",
            "true",
            "{",
            "{}x",
            r#"{"heartbeat_interval":"1000"}"#,
            r#"{"heartbeat_interval":1.5}"#,
            r#"{"sample_rate":3000000000}"#,
            r#"{"feature_negotiation":1}"#,
            r#"{"client_id":5}"#,
            r#"{"msg_timeout":99999999999999999999}"#,
        ] {
            assert_eq!(
                err(body),
                "E_BAD_BODY IDENTIFY failed to decode JSON body",
                "{body}"
            );
        }
    }

    #[test]
    fn invalid_fields_exact_texts() {
        let rows = [
            (
                r#"{"heartbeat_interval":999}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (999) is invalid",
            ),
            (
                r#"{"heartbeat_interval":60001}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (60001) is invalid",
            ),
            (
                r#"{"heartbeat_interval":-2}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (-2) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":24}"#,
                "E_BAD_BODY IDENTIFY output buffer timeout (24) is invalid",
            ),
            (
                r#"{"output_buffer_timeout":30001}"#,
                "E_BAD_BODY IDENTIFY output buffer timeout (30001) is invalid",
            ),
            (
                r#"{"output_buffer_size":63}"#,
                "E_BAD_BODY IDENTIFY output buffer size (63) is invalid",
            ),
            (
                r#"{"output_buffer_size":65537}"#,
                "E_BAD_BODY IDENTIFY output buffer size (65537) is invalid",
            ),
            (
                r#"{"sample_rate":100}"#,
                "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
            ),
            (
                r#"{"sample_rate":-1}"#,
                "E_BAD_BODY IDENTIFY sample rate (-1) is invalid",
            ),
            (
                r#"{"msg_timeout":999}"#,
                "E_BAD_BODY IDENTIFY msg timeout (999) is invalid",
            ),
            (
                r#"{"msg_timeout":-1}"#,
                "E_BAD_BODY IDENTIFY msg timeout (-1) is invalid",
            ),
            (
                r#"{"msg_timeout":900001}"#,
                "E_BAD_BODY IDENTIFY msg timeout (900001) is invalid",
            ),
            // nsqd's order: heartbeat, buffer timeout, buffer size, sample rate, msg timeout.
            (
                r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,"output_buffer_timeout":1,"heartbeat_interval":1}"#,
                "E_BAD_BODY IDENTIFY heartbeat interval (1) is invalid",
            ),
            (
                r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1,"output_buffer_timeout":1}"#,
                "E_BAD_BODY IDENTIFY output buffer timeout (1) is invalid",
            ),
            (
                r#"{"msg_timeout":1,"sample_rate":100,"output_buffer_size":1}"#,
                "E_BAD_BODY IDENTIFY output buffer size (1) is invalid",
            ),
            (
                r#"{"msg_timeout":1,"sample_rate":100}"#,
                "E_BAD_BODY IDENTIFY sample rate (100) is invalid",
            ),
        ];
        for (body, want) in rows {
            assert_eq!(err(body), want, "{body}");
        }
    }

    #[test]
    fn fields_and_special_values() {
        let id = parse(
            r#"{"CLIENT_ID":"c1","HostName":"h","user_agent":"probe/1","feature_negotiation":true,
                "heartbeat_interval":-1,"output_buffer_size":-1,"output_buffer_timeout":1000,
                "sample_rate":99,"msg_timeout":1000,"tls_v1":true,"snappy":true,"deflate":true,
                "deflate_level":9,"short_id":"x","long_id":"y"}"#,
        )
        .unwrap();
        let want = Identify {
            client_id: "c1".into(),
            hostname: "h".into(),
            user_agent: "probe/1".into(),
            feature_negotiation: true,
            heartbeat_interval_ms: None,
            output_buffer_size: 1,
            output_buffer_timeout_ms: 0,
            sample_rate: 99,
            msg_timeout_ms: 1000,
            tls_v1: true,
            snappy: true,
            deflate: true,
            deflate_level: 9,
        };
        assert_eq!(id, want);
        let id = parse(
            r#"{"heartbeat_interval":1000,"output_buffer_timeout":-1,"output_buffer_size":64}"#,
        )
        .unwrap();
        assert_eq!(
            (
                id.heartbeat_interval_ms,
                id.output_buffer_timeout_ms,
                id.output_buffer_size
            ),
            (Some(1000), 0, 64)
        );
        let id = parse(r#"{"heartbeat_interval":60000,"output_buffer_timeout":30000,"output_buffer_size":65536,"msg_timeout":900000}"#).unwrap();
        assert_eq!(
            (
                id.heartbeat_interval_ms,
                id.output_buffer_timeout_ms,
                id.output_buffer_size,
                id.msg_timeout_ms
            ),
            (Some(60_000), 30_000, 65_536, 900_000)
        );
    }

    #[test]
    fn keys_fold_case_and_last_duplicate_wins() {
        let id = parse(
            r#"{"client_id":"a","CLIENT_ID":"b","ſample_rate":5,"Feature_Negotiation":true}"#,
        )
        .unwrap();
        assert_eq!(
            (
                id.client_id.as_str(),
                id.sample_rate,
                id.feature_negotiation
            ),
            ("b", 5, true)
        );
        let id = parse(r#"{"client_id":"a","client_id":null}"#).unwrap();
        assert_eq!(id.client_id, "a");
    }

    #[test]
    fn response_matches_captured_default() {
        let id = parse(r#"{"client_id":"c1","hostname":"h","feature_negotiation":true,"user_agent":"probe/1"}"#).unwrap();
        let got = identify_response(&id, &server(), &negotiate(&id, &server()).unwrap());
        let want = r#"{"max_rdy_count":2500,"version":"1.3.0","max_msg_timeout":900000,"msg_timeout":60000,"tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":false,"sample_rate":0,"auth_required":false,"output_buffer_size":16384,"output_buffer_timeout":250}"#;
        assert_eq!(String::from_utf8(got).unwrap(), want);
        assert_eq!(want.len(), 264); // the captured frame's size field is 268 = 4 + 264
    }

    #[test]
    fn response_reflects_client_settings() {
        let id = parse(r#"{"output_buffer_size":-1,"sample_rate":7,"msg_timeout":2000,"deflate":true,"deflate_level":9}"#).unwrap();
        let mut s = server();
        s.version = "0.1.0".into();
        s.max_deflate_level = 3;
        s.auth_required = true;
        let up = negotiate(&id, &s).unwrap();
        assert!(!up.any(), "no feature_negotiation: no upgrade");
        let got = String::from_utf8(identify_response(&id, &s, &up)).unwrap();
        assert_eq!(
            got,
            r#"{"max_rdy_count":2500,"version":"0.1.0","max_msg_timeout":900000,"msg_timeout":2000,"tls_v1":false,"deflate":false,"deflate_level":3,"max_deflate_level":3,"snappy":false,"sample_rate":7,"auth_required":true,"output_buffer_size":1,"output_buffer_timeout":0}"#
        );
    }

    #[test]
    fn negotiation_follows_nsqd() {
        let mut s = server();
        let id = parse(r#"{"feature_negotiation":true,"snappy":true,"tls_v1":true}"#).unwrap();
        let up = negotiate(&id, &s).unwrap();
        assert!(
            up.snappy && !up.deflate && !up.tls,
            "no cert: no TLS; snappy on by default"
        );
        let got = String::from_utf8(identify_response(&id, &s, &up)).unwrap();
        assert!(got.contains(r#""tls_v1":false,"deflate":false,"deflate_level":6,"max_deflate_level":6,"snappy":true"#), "{got}");
        s.tls = true;
        assert!(negotiate(&id, &s).unwrap().tls);
        s.snappy = false;
        assert!(
            !negotiate(&id, &s).unwrap().snappy,
            "--snappy=false answers false"
        );

        let id = parse(r#"{"feature_negotiation":true,"deflate":true,"deflate_level":9}"#).unwrap();
        let up = negotiate(&id, &server()).unwrap();
        assert!(up.deflate);
        assert_eq!(up.deflate_level, 6, "capped at --max-deflate-level");
        let id = parse(r#"{"feature_negotiation":true,"deflate":true,"deflate_level":2}"#).unwrap();
        assert_eq!(negotiate(&id, &server()).unwrap().deflate_level, 2);

        let id = parse(r#"{"feature_negotiation":true,"deflate":true,"snappy":true}"#).unwrap();
        let e = negotiate(&id, &server()).unwrap_err();
        assert!(e.fatal);
        assert_eq!(
            e.frame_data(),
            "E_IDENTIFY_FAILED cannot enable both deflate and snappy compression"
        );
        let id = parse(r#"{"deflate":true,"snappy":true}"#).unwrap();
        assert!(
            !negotiate(&id, &server()).unwrap().any(),
            "no feature_negotiation"
        );
    }
}
