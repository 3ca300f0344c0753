//! corq: a message queue server that speaks NSQ's protocols, on one thread.
//!
//! # Layout
//!
//! | module     | owns |
//! |------------|------|
//! | [`storage`]  | the memory-mapped segmented log: segments, CRC-checked records, recovery, retention, sync |
//! | [`timer`]    | the hashed timing wheel and the clocks that feed it |
//! | [`protocol`] | NSQ TCP protocol V2: pure command decoding and frame encoding |
//! | [`client`]   | a small blocking NSQ client used by the tools, the tests and the benches |
//! | [`bench`]    | `corq bench`: the load generator with HDR-histogram latencies and its fake server |
//! | [`auth`]     | AUTH against an auth server: grants, permission matching, the `corq-auth` helper threads |
//! | [`broker`]   | topics, channels, client sessions, RDY, in-flight, requeue, deferral |
//! | [`http`]     | the HTTP API's pure parts: request parsing, routes, replies, `/stats`, `/metrics` |
//! | [`lookupd`]  | `corq lookupd`: a wire-compatible nsqlookupd on its own small loop |
//! | [`peers`]    | corqd as a lookupd peer: registration connections on the reactor's poll |
//! | [`reactor`]  | the `mio` event loop: listener, connections, the loop turn |
//! | [`server`]   | the embedding API: `Server::bind`, `Server::run`, `Handle::shutdown` |
//! | [`config`]   | every tunable, with nsqd's flag names and defaults |
//! | [`logging`]  | `--log-format`: text lines or one JSON object per line |
//! | [`stats`]    | end-to-end processing latency windows (hdrhistogram) |
//! | `fuzzing`    | hidden: thin wrappers over storage internals for the `fuzz/` crate only, not a stable API |
//!
//! `docs/architecture.md` describes the loop and the data flow.
#![deny(missing_docs, missing_debug_implementations)]

pub mod auth;
pub mod bench;
pub mod broker;
pub mod client;
pub mod config;
pub mod cpu;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod lookupd;
pub mod peers;
pub mod protocol;
pub mod reactor;
pub mod server;
pub mod stats;
pub mod storage;
pub mod timer;

pub use config::{Config, Options};
pub use server::{Handle, Server};

/// The crate version, as reported by `--version` and in logs.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The nsqd version corq answers as in IDENTIFY, `/info` and `/stats`: the protocol and API it
/// implements. NSQ's tools parse it as semver (nsqadmin shows an older node as out of date), so
/// it names the nsqd release whose behaviour corq reproduces, not corq's own version.
pub const NSQD_VERSION: &str = "1.3.0";
