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
//!
//! The reactor, broker and HTTP modules land with their issues; `docs/architecture.md` keeps the
//! map of what exists today.
#![deny(missing_docs, missing_debug_implementations)]

pub mod client;
pub mod protocol;
pub mod storage;
pub mod timer;

/// The crate version, as reported by `--version` and in IDENTIFY replies.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
