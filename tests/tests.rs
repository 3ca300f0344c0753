//! corq's integration tests: one binary, one module per area.
//!
//! - `protocol`: exact frames for good and hostile input, heartbeats, CLS, limits
//! - `pubsub`: channels, consumers, RDY, FIN/REQ/TOUCH, timeouts, DPUB
//! - `restart`: clean restart, kill -9, DPUB across a restart
//! - `retention`: a long-REQ'd message does not pin old segments (carrying forward)
//! - `client`: the project's own client against the server, and the embedding example
mod util;

mod abuse;
mod client;
mod crash;
mod durability;
mod http;
mod protocol;
mod pubsub;
mod restart;
mod retention;
