//! The HTTP API's pure parts: bytes in, values and bytes out, no sockets and no clock.
//!
//! nsqd serves its admin and publish API over HTTP/1.1 on port 4151 (reference §2). corq serves
//! the same API from its single-threaded reactor; this module holds everything that can be
//! decided without I/O, so the reactor only moves bytes and the broker only answers questions.
//!
//! | file          | owns |
//! |---------------|------|
//! | [`parse`]     | request parsing with head, header-count and per-route body caps |
//! | [`reader`]    | a connection's parse kept between reads, so a read costs only its new bytes |
//! | [`chunked`]   | the incremental chunked-body decoder, with the encoded-size cap |
//! | [`query`]     | Go's `url.ParseQuery` and path unescaping |
//! | [`routes`]    | the endpoint table (nsqd `newHTTPServer`), 404/405/redirects, argument checks |
//! | [`mpub`]      | splitting an `/mpub` body, text and binary, with nsqd's error codes |
//! | [`response`]  | response bytes: status line, headers in Go's order, V1 and plain bodies |
//! | [`stats`]     | the `/stats` JSON schema and nsqd's `topic`/`channel`/`include_*` filters |
//! | [`config`]    | corq's `/topic/config`, `/channel/config` and `/topic/dead`: arguments and JSON |
//! | [`info`]      | `/info` and `/config/:opt` values and changes |
//! | [`text`]      | the default `/stats` text format and the Go formatting it needs |
//! | [`metrics`]   | `/metrics` in the Prometheus text exposition format 0.0.4 |
//! | [`peek`]      | `/channel/peek` and `/topic/peek`: arguments and JSON ([`base64`] bodies) |
//! | [`replay`]    | `/channel/rewind` and `/channel/create?from=`: the time syntax and JSON |
//! | [`dashboard`] | the built-in dashboard's files, served at `/` and `/ui` |
//!
//! Limits are checked before anything is buffered: a declared `Content-Length` above the route's
//! limit fails as soon as the head is parsed (reference §2.2, hostile-inputs §2.16).

pub mod base64;
pub mod chunked;
pub mod config;
pub mod dashboard;
pub mod info;
pub mod metrics;
pub mod mpub;
pub mod parse;
pub mod peek;
pub mod query;
pub mod reader;
pub mod replay;
pub mod response;
pub mod routes;
pub mod serve;
pub mod stats;
pub mod text;

pub use parse::{parse_request, HttpError, HttpLimits, HttpVersion, Request};
pub use reader::RequestReader;
pub use response::{ContentType, ReplyCtx};
pub use routes::{route, Route, RouteError};
