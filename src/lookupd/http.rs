//! nsqlookupd's HTTP API (reference §4.3, nsqlookupd `http.go`): the route table and one
//! handler per endpoint, answering from the [`Registry`]. Pure: a parsed request and `now` in,
//! the response bytes out. Requests are parsed and replies framed by the project's `http`
//! module, so status lines, headers, `X-NSQ-Content-Type` and `{"message":...}` errors are the
//! same bytes nsqd's API sends.
//!
//! | method & path | answer |
//! |---|---|
//! | `GET /ping` | `OK` (plain, no X-NSQ header) |
//! | `GET /info` | `{"version":"1.3.0"}` |
//! | `GET /debug` | `{"category:key:subkey":[peer...]}` for registrations with producers |
//! | `GET /lookup?topic=` | `{"channels":[...],"producers":[...]}` active, untombstoned; 404 `TOPIC_NOT_FOUND` |
//! | `GET /topics` | `{"topics":[...]}` |
//! | `GET /channels?topic=` | `{"channels":[...]}` (`[]` for an unknown topic) |
//! | `GET /nodes` | `{"producers":[node...]}` active peers, with per-topic tombstone flags |
//! | `POST /topic/create?topic=` | empty 200; 400 `INVALID_ARG_TOPIC` |
//! | `POST /topic/delete?topic=` | empty 200 (its channels go too) |
//! | `POST /channel/create?topic=&channel=` | empty 200 (registers the topic too) |
//! | `POST /channel/delete?topic=&channel=` | empty 200; 404 `CHANNEL_NOT_FOUND` |
//! | `POST /topic/tombstone?topic=&node=` | empty 200; 400 `MISSING_ARG_NODE` |
//!
//! Every handler with parameters answers 400 `INVALID_REQUEST` for a query that does not parse
//! and 400 `MISSING_ARG_TOPIC` without `topic`. Unknown paths give 404 `NOT_FOUND`, a known
//! path with the wrong method 405 with `Allow`, and `OPTIONS` 200 with `Allow` (httprouter).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::registry::{Category, PeerInfo, Registration, Registry};
use crate::http::query::Query;
use crate::http::response::{self, ReplyCtx};
use crate::http::routes::{self, ApiError};
use crate::http::Request;
use crate::protocol::names::is_valid_topic_name;

/// The knobs the handlers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filters {
    /// `--inactive-producer-timeout`, ns.
    pub inactive_ns: i64,
    /// `--tombstone-lifetime`, ns.
    pub tombstone_ns: i64,
}

/// One endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Ping,
    Info,
    Debug,
    Lookup,
    Topics,
    Channels,
    Nodes,
    TopicCreate,
    TopicDelete,
    ChannelCreate,
    ChannelDelete,
    TopicTombstone,
}

/// The route table: (method, path, endpoint), as nsqlookupd's `newHTTPServer`.
const ROUTES: &[(&str, &str, Endpoint)] = &[
    ("GET", "/ping", Endpoint::Ping),
    ("GET", "/info", Endpoint::Info),
    ("GET", "/debug", Endpoint::Debug),
    ("GET", "/lookup", Endpoint::Lookup),
    ("GET", "/topics", Endpoint::Topics),
    ("GET", "/channels", Endpoint::Channels),
    ("GET", "/nodes", Endpoint::Nodes),
    ("POST", "/topic/create", Endpoint::TopicCreate),
    ("POST", "/topic/delete", Endpoint::TopicDelete),
    ("POST", "/channel/create", Endpoint::ChannelCreate),
    ("POST", "/channel/delete", Endpoint::ChannelDelete),
    ("POST", "/topic/tombstone", Endpoint::TopicTombstone),
];

/// 404 `TOPIC_NOT_FOUND`.
const TOPIC_NOT_FOUND: ApiError = ApiError::new(404, "TOPIC_NOT_FOUND");
/// 400 `MISSING_ARG_NODE`.
const MISSING_ARG_NODE: ApiError = ApiError::new(400, "MISSING_ARG_NODE");

/// Answers one request into `out`.
pub fn handle(
    reg: &mut Registry,
    req: &Request<'_>,
    ctx: &ReplyCtx,
    filters: Filters,
    now_ns: i64,
    out: &mut Vec<u8>,
) {
    let path: &str = &req.path;
    let found = ROUTES
        .iter()
        .find(|(m, p, _)| *m == req.method && *p == path);
    let Some(&(_, _, endpoint)) = found else {
        return route_miss(req.method, path, ctx, out);
    };
    let result = match endpoint {
        Endpoint::Ping => return response::plain(out, ctx, 200, "OK"),
        Endpoint::Info => Ok(Some(to_json(&json!({ "version": crate::NSQD_VERSION })))),
        Endpoint::Debug => Ok(Some(debug(reg))),
        Endpoint::Topics => Ok(Some(to_json(&json!({ "topics": reg.topics() })))),
        // nsqlookupd's /nodes reads no parameters, so a bad query string is no error there.
        Endpoint::Nodes => Ok(Some(nodes(reg, filters, now_ns))),
        _ => with_query(reg, endpoint, req, filters, now_ns),
    };
    match result {
        Ok(Some(body)) => {
            let ct = response::ContentType::Set(response::JSON_TYPE);
            response::write_response(out, ctx, 200, ct, &body, true, &[]);
        }
        Ok(None) => response::ok_empty(out, ctx),
        Err(e) => response::api_error(out, ctx, e),
    }
}

/// 404, or 405/OPTIONS when the path exists under another method.
fn route_miss(method: &str, path: &str, ctx: &ReplyCtx, out: &mut Vec<u8>) {
    let mut allow: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, p, _)| *p == path)
        .map(|(m, _, _)| *m)
        .collect();
    if allow.is_empty() {
        return response::error_json(out, ctx, 404, "NOT_FOUND");
    }
    allow.push("OPTIONS");
    allow.sort_unstable();
    allow.dedup();
    let allow = allow.join(", ");
    if method == "OPTIONS" {
        response::options(out, ctx, &allow);
    } else {
        response::method_not_allowed(out, ctx, &allow);
    }
}

/// The endpoints that read parameters.
fn with_query(
    reg: &mut Registry,
    endpoint: Endpoint,
    req: &Request<'_>,
    filters: Filters,
    now_ns: i64,
) -> Result<Option<Vec<u8>>, ApiError> {
    let q: &Query = req.query.as_ref().map_err(|_| routes::INVALID_REQUEST)?;
    let topic = || q.get("topic").ok_or(routes::MISSING_ARG_TOPIC);
    match endpoint {
        Endpoint::Lookup => lookup(reg, topic()?, filters, now_ns).map(Some),
        Endpoint::Channels => Ok(Some(to_json(
            &json!({ "channels": reg.channels(topic()?) }),
        ))),
        Endpoint::TopicCreate => {
            let t = topic()?;
            if !is_valid_topic_name(t) {
                return Err(routes::INVALID_ARG_TOPIC);
            }
            reg.add_registration(Registration::topic(t));
            Ok(None)
        }
        Endpoint::TopicDelete => {
            let t = topic()?;
            for r in reg.find(Category::Channel, t, "*") {
                reg.remove_registration(&r);
            }
            for r in reg.find(Category::Topic, t, "") {
                reg.remove_registration(&r);
            }
            Ok(None)
        }
        Endpoint::ChannelCreate => {
            let (t, c) = routes::topic_channel_args(q)?;
            reg.add_registration(Registration::channel(t, c));
            reg.add_registration(Registration::topic(t));
            Ok(None)
        }
        Endpoint::ChannelDelete => {
            let (t, c) = routes::topic_channel_args(q)?;
            let found = reg.find(Category::Channel, t, c);
            if found.is_empty() {
                return Err(routes::CHANNEL_NOT_FOUND);
            }
            for r in found {
                reg.remove_registration(&r);
            }
            Ok(None)
        }
        Endpoint::TopicTombstone => {
            let t = topic()?;
            let node = q.get("node").ok_or(MISSING_ARG_NODE)?;
            log::info!("tombstoning topic {t} on node {node}");
            reg.tombstone(t, node, now_ns);
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// `/lookup`: the topic's channels and its active, untombstoned producers.
fn lookup(reg: &Registry, topic: &str, f: Filters, now_ns: i64) -> Result<Vec<u8>, ApiError> {
    // The key is matched with wildcards, as nsqlookupd's FindRegistrations does.
    if reg.find(Category::Topic, topic, "").is_empty() {
        return Err(TOPIC_NOT_FOUND);
    }
    #[derive(Serialize)]
    struct Reply<'a> {
        channels: Vec<String>,
        producers: Vec<&'a PeerInfo>,
    }
    let producers = reg.active_producers(
        &Registration::topic(topic),
        now_ns,
        f.inactive_ns,
        f.tombstone_ns,
    );
    Ok(to_json(&Reply {
        channels: reg.channels(topic),
        producers,
    }))
}

/// One `/nodes` entry (nsqlookupd `node`, field order kept).
#[derive(Debug, Serialize)]
struct Node<'a> {
    remote_address: &'a str,
    hostname: &'a str,
    broadcast_address: &'a str,
    tcp_port: i64,
    http_port: i64,
    version: &'a str,
    tombstones: Vec<bool>,
    topics: Vec<String>,
}

/// `/nodes`: every active identified peer with its topics (tombstoned ones included, flagged).
fn nodes(reg: &Registry, f: Filters, now_ns: i64) -> Vec<u8> {
    // Tombstone lifetime 0: nodes are filtered by activity only.
    let peers = reg.active_producers(&Registration::client(), now_ns, f.inactive_ns, 0);
    let list: Vec<Node<'_>> = peers
        .into_iter()
        .map(|p| {
            let (topics, tombstones) = reg
                .node_topics(&p.remote_address, now_ns, f.tombstone_ns)
                .into_iter()
                .unzip();
            Node {
                remote_address: &p.remote_address,
                hostname: &p.hostname,
                broadcast_address: &p.broadcast_address,
                tcp_port: p.tcp_port,
                http_port: p.http_port,
                version: &p.version,
                tombstones,
                topics,
            }
        })
        .collect();
    #[derive(Serialize)]
    struct Reply<'a> {
        producers: Vec<Node<'a>>,
    }
    to_json(&Reply { producers: list })
}

/// Compact JSON bytes, keys in the struct's field order (as Go marshals structs).
fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs of strings and numbers cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

/// Go's `time.Time{}.UnixNano()`: what nsqlookupd's `/debug` shows for "never tombstoned".
const GO_ZERO_TIME_NANOS: i64 = -6_795_364_578_871_345_152;

/// `/debug`: every registration that has producers, keyed `category:key:subkey`.
fn debug(reg: &Registry) -> Vec<u8> {
    let mut data: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (r, producers) in reg.dump() {
        let key = format!("{}:{}:{}", r.category.name(), r.key, r.subkey);
        let list = producers
            .into_iter()
            .map(|(peer, p)| {
                let i = &peer.info;
                json!({
                    "id": i.remote_address,
                    "hostname": i.hostname,
                    "broadcast_address": i.broadcast_address,
                    "tcp_port": i.tcp_port,
                    "http_port": i.http_port,
                    "version": i.version,
                    "last_update": peer.last_update,
                    "tombstoned": p.tombstoned_at.is_some(),
                    "tombstoned_at": p.tombstoned_at.unwrap_or(GO_ZERO_TIME_NANOS),
                })
            })
            .collect();
        data.insert(key, list);
    }
    to_json(&data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::{parse_request, HttpLimits, MAX_HEADERS};
    use crate::lookupd::registry::PeerInfo;

    const F: Filters = Filters {
        inactive_ns: 300_000_000_000,
        tombstone_ns: 45_000_000_000,
    };

    fn call(reg: &mut Registry, method: &str, target: &str) -> (u16, String) {
        let (status, _, body) = call_raw(reg, method, target);
        (status, body)
    }

    /// (status, head, body).
    fn call_raw(reg: &mut Registry, method: &str, target: &str) -> (u16, String, String) {
        let raw = format!("{method} {target} HTTP/1.1\r\nHost: x\r\n\r\n");
        let limits = HttpLimits {
            max_head_bytes: 16 * 1024,
            max_headers: MAX_HEADERS,
            max_msg_size: 1 << 20,
            max_body_size: 1 << 20,
        };
        let (req, _) = parse_request(raw.as_bytes(), &limits).unwrap().unwrap();
        let mut out = Vec::new();
        handle(reg, &req, &ReplyCtx::for_request(&req), F, 0, &mut out);
        let text = String::from_utf8(out).unwrap();
        let status = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (status, head.to_owned(), body.to_owned())
    }

    #[test]
    fn v1_header_on_api_replies_not_on_ping() {
        let mut reg = registry();
        let (_, head, _) = call_raw(&mut reg, "GET", "/lookup?topic=t");
        assert!(
            head.contains("X-Nsq-Content-Type: nsq; version=1.0"),
            "{head}"
        );
        assert!(
            head.contains("Content-Type: application/json; charset=utf-8"),
            "{head}"
        );
        let (_, head, _) = call_raw(&mut reg, "GET", "/lookup?topic=none");
        assert!(
            head.contains("X-Nsq-Content-Type: nsq; version=1.0"),
            "{head}"
        );
        let (_, head, _) = call_raw(&mut reg, "GET", "/ping");
        assert!(!head.contains("X-Nsq"), "{head}");
    }

    fn registry() -> Registry {
        let mut reg = Registry::new();
        reg.identify(
            PeerInfo {
                remote_address: "127.0.0.1:5000".into(),
                hostname: "vm".into(),
                broadcast_address: "127.0.0.1".into(),
                tcp_port: 4150,
                http_port: 4151,
                version: "1.3.0".into(),
            },
            0,
        );
        reg.register("127.0.0.1:5000", "t", Some("c"));
        reg
    }

    #[test]
    fn lookup_shape_and_errors() {
        let mut reg = registry();
        let (s, b) = call(&mut reg, "GET", "/lookup?topic=t");
        assert_eq!(s, 200);
        assert_eq!(
            b,
            r#"{"channels":["c"],"producers":[{"remote_address":"127.0.0.1:5000","hostname":"vm","broadcast_address":"127.0.0.1","tcp_port":4150,"http_port":4151,"version":"1.3.0"}]}"#
        );
        let (s, b) = call(&mut reg, "GET", "/lookup?topic=nope");
        assert_eq!((s, b.as_str()), (404, r#"{"message":"TOPIC_NOT_FOUND"}"#));
        let (s, b) = call(&mut reg, "GET", "/lookup");
        assert_eq!((s, b.as_str()), (400, r#"{"message":"MISSING_ARG_TOPIC"}"#));
        let (s, b) = call(&mut reg, "GET", "/lookup?topic=%zz");
        assert_eq!((s, b.as_str()), (400, r#"{"message":"INVALID_REQUEST"}"#));
    }

    #[test]
    fn listing_endpoints() {
        let mut reg = registry();
        assert_eq!(call(&mut reg, "GET", "/ping"), (200, "OK".into()));
        assert_eq!(
            call(&mut reg, "GET", "/info"),
            (200, r#"{"version":"1.3.0"}"#.into())
        );
        assert_eq!(
            call(&mut reg, "GET", "/topics"),
            (200, r#"{"topics":["t"]}"#.into())
        );
        assert_eq!(
            call(&mut reg, "GET", "/channels?topic=none"),
            (200, r#"{"channels":[]}"#.into())
        );
        let (s, b) = call(&mut reg, "GET", "/nodes?%zz");
        assert_eq!(s, 200);
        assert!(b.contains(r#""tombstones":[false],"topics":["t"]"#), "{b}");
        let (s, b) = call(&mut reg, "GET", "/debug");
        assert_eq!(s, 200);
        assert!(b.contains(r#""channel:t:c":[{"#), "{b}");
        assert!(b.contains(r#""tombstoned_at":-6795364578871345152"#), "{b}");
    }

    #[test]
    fn admin_endpoints() {
        let mut reg = registry();
        let bad = call(&mut reg, "POST", "/topic/create?topic=bad!");
        assert_eq!(bad, (400, r#"{"message":"INVALID_ARG_TOPIC"}"#.into()));
        assert_eq!(call(&mut reg, "POST", "/topic/create?topic=n").0, 200);
        assert_eq!(
            call(&mut reg, "POST", "/channel/create?topic=n&channel=x").0,
            200
        );
        assert_eq!(reg.channels("n"), vec!["x"]);
        let missing = call(&mut reg, "POST", "/channel/delete?topic=n&channel=y");
        assert_eq!(missing, (404, r#"{"message":"CHANNEL_NOT_FOUND"}"#.into()));
        let no_chan = call(&mut reg, "POST", "/channel/delete?topic=n");
        assert_eq!(
            no_chan,
            (400, r#"{"message":"MISSING_ARG_CHANNEL"}"#.into())
        );
        assert_eq!(
            call(&mut reg, "POST", "/topic/delete?topic=n"),
            (200, String::new())
        );
        assert!(!reg.has_topic("n") && reg.channels("n").is_empty());
        let no_node = call(&mut reg, "POST", "/topic/tombstone?topic=t");
        assert_eq!(no_node, (400, r#"{"message":"MISSING_ARG_NODE"}"#.into()));
        let ok = call(
            &mut reg,
            "POST",
            "/topic/tombstone?topic=t&node=127.0.0.1:4151",
        );
        assert_eq!(ok.0, 200);
        let (_, b) = call(&mut reg, "GET", "/lookup?topic=t");
        assert!(b.ends_with(r#""producers":[]}"#), "{b}");
    }

    #[test]
    fn routing_misses() {
        let mut reg = registry();
        assert_eq!(
            call(&mut reg, "GET", "/nope"),
            (404, r#"{"message":"NOT_FOUND"}"#.into())
        );
        let (s, b) = call(&mut reg, "POST", "/lookup?topic=t");
        assert_eq!(
            (s, b.as_str()),
            (405, r#"{"message":"METHOD_NOT_ALLOWED"}"#)
        );
        assert_eq!(call(&mut reg, "OPTIONS", "/topic/create").0, 200);
    }
}
